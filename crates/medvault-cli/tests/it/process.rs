//! Running the real `medvault` binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BINARY: &str = env!("CARGO_BIN_EXE_medvault");

/// Runs `medvault ARGS` to completion with a clean MEDVAULT_* environment.
pub fn run(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("MEDVAULT_") {
            command.env_remove(key);
        }
    }
    command.env("MEDVAULT_LOG", "warn");
    command
}

/// Asserts that `output` exited with `code` after saying exactly one line on
/// stderr, and returns that line.
pub fn one_line_failure(output: &Output, code: i32) -> String {
    assert_eq!(output.status.code(), Some(code), "{output:?}");
    let lines = stderr_lines(output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap_or_default()
}

pub fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A `medvault serve --dev` process on ephemeral ports.
pub struct Server {
    pub child: Child,
    pub patient: SocketAddr,
    pub hddt: SocketAddr,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_stderr(data_dir, extra, Stdio::inherit(), "warn")
    }

    /// Starts with the log (stderr) going to `stderr` at `level`.
    pub fn start_with_stderr(data_dir: &Path, extra: &[&str], stderr: Stdio, level: &str) -> Self {
        let data_dir = data_dir.to_str().unwrap();
        let mut args = vec![
            "serve",
            "--dev",
            "--data-dir",
            data_dir,
            "--listen",
            "127.0.0.1:0",
            "--hddt-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut child = command(&args)
            .env("MEDVAULT_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("medvault serving: patient https://") {
                    let (patient, hddt) = rest.split_once(" , HDDT (mTLS) https://").unwrap();
                    let _ = sender.send((patient.parse().unwrap(), hddt.trim().parse().unwrap()));
                }
            }
        });
        let (patient, hddt) = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the server did not report its addresses");
        Self {
            child,
            patient,
            hddt,
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that trusts the data directory's development CA.
pub fn https_client(data_dir: &Path) -> reqwest::Client {
    let ca = std::fs::read(data_dir.join("tls/dev-ca.pem")).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}
