//! Integration tests of the audit trail on real stores: the chain, its
//! verification against a database edited behind its back, retention and
//! concurrent writers. Each test runs on SQLite, and on PostgreSQL when
//! `MEDVAULT_TEST_POSTGRES_URL` is set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "integration tests: a failed expectation must fail the test, and deadlines use the wall clock"
)]

mod harness;
mod trail;
