//! Tests of the `medvault` binary as an operator runs it: start-up errors,
//! signals, crash safety of the audit trail, and the admin commands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "integration tests: a failed expectation must fail the test, and deadlines use the wall clock"
)]

mod demo;
mod participant;
mod process;
mod serve;
