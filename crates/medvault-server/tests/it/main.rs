//! Integration tests of the server through real TLS connections, each against an
//! in-process server from medvault-testkit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "integration tests: a failed expectation must fail the test, and deadlines use the wall clock"
)]

#[macro_use]
mod accounts;
mod account_app;
mod documents;
mod fhir;
mod http;
mod mtls;
mod pairing;
mod parsers;
mod patient_credential;
mod privacy;
mod smartcard;
mod tls_policy;

/// Asserts that a response carries an RFC 9457 problem document.
fn assert_problem_json(response: &reqwest::Response) {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

/// Runs `scripts/<script>` (which installs what a test needs) and returns the
/// last line it printed (the tool's path); `None`, said as SKIPPED (which
/// fails CI), when it fails.
fn setup_script(script: &str, test: &str) -> Option<String> {
    let path = format!("{}/../../scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new("bash").arg(path).output().ok()?;
    if !output.status.success() {
        eprintln!(
            "SKIPPED {test}: {script} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()?
            .trim()
            .to_owned(),
    )
}
