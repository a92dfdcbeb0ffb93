//! Tests of the `medvault` binary as an operator runs it: start-up errors,
//! signals, crash safety of the audit trail, and the admin commands.

mod process;
mod serve;
