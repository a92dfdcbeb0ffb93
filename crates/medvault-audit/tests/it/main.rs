//! Integration tests of the audit trail on real stores: the chain, its
//! verification against a database edited behind its back, retention and
//! concurrent writers. Each test runs on SQLite, and on PostgreSQL when
//! `MEDVAULT_TEST_POSTGRES_URL` is set.

mod harness;
mod trail;
