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
    quiet_on_broken_pipe();
    let cli = commands::Cli::parse();
    commands::run(cli)
}

/// `medvault ... | head` closes the pipe early, and the next `println!`
/// panics with "failed printing to stdout: Broken pipe". The workspace
/// forbids the `unsafe` that would restore SIGPIPE's default action, so the
/// panic hook ends the process as SIGPIPE would (status 141, no message);
/// every other panic keeps the default report.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
