//! The `medvault` binary.
//!
//! `medvault serve` runs the server; `medvault admin client-cert ...` manages the
//! mTLS allow-list in the database (running servers pick changes up within
//! `allowlist_refresh_secs`); `medvault audit verify|checkpoint` checks and
//! anchors the audit chain. `medvault account|credentials|documents|connections`
//! are a participant's commands over the SDK, with state in a profile directory. Exit codes: 0 success, 1 runtime failure, 2 bad
//! configuration or usage.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks on stdout and stderr"
)]

mod commands;
mod demo;
mod devices;
mod diga;
mod patient;
mod registry;
mod user;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    commands::run(cli)
}
