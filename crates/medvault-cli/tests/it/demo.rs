//! `medvault demo` as a new user runs it: every step behaves, the temporary
//! data goes away, `--keep` serves the demo data to the other commands until
//! stopped, and a step that cannot work ends the demo with exit status 1.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::process::{command, run};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_demo_runs_every_step_and_removes_its_data() {
    let output = run(&["demo", "--days", "7"]);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // One numbered line per step, in order, then the verdict.
    let numbered: Vec<usize> = text
        .lines()
        .filter_map(|line| line.split_once(". ").map(|(n, _)| n.trim()))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbered, (1..=13).collect::<Vec<_>>(), "{text}");
    assert!(
        text.contains("demo complete: 13 steps behaved as they must"),
        "{text}"
    );
    for expected in [
        "IAL2",
        "TAN 1 logged in once and was refused the second time",
        "all 10080 readings exactly once, in order, no subject",
        "mean glucose",
        "the DiGA's next request: 401",
        "hddt.pairing ",
        "hddt.unpairing ",
        "document.sent ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // Nothing of the patient's password reaches the output without --keep.
    assert!(!text.contains("patient login for the portal"), "{text}");
    let data_dir = text
        .lines()
        .next()
        .and_then(|line| line.split("SQLite in ").nth(1))
        .expect("the first line names the data directory")
        .trim()
        .to_owned();
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "{data_dir} is left behind"
    );
}

#[test]
fn the_demo_refuses_a_used_directory_and_a_busy_port() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), b"x").unwrap();
    let output = run(&["demo", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("is not empty"), "{output:?}");
    assert!(dir.path().join("something").exists());

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let output = run(&["demo", "--listen", &address]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stdout(&output);
    assert!(
        text.starts_with("FAILED: the server did not start"),
        "{text}"
    );
    assert!(!text.contains("demo complete"), "{text}");
}

#[test]
fn a_kept_demo_serves_its_data_to_the_cli_until_stopped() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("demo-data");
    let mut child = command(&[
        "demo",
        "--keep",
        "--days",
        "7",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.starts_with("the server keeps running");
        seen.push(line);
        if ready {
            break;
        }
        assert!(
            !seen.last().unwrap().starts_with("FAILED"),
            "{}",
            seen.join("\n")
        );
    }
    let text = seen.join("\n");
    assert!(text.contains("pairing kept for exploring"), "{text}");
    assert!(!text.contains("patient revoked the pairing"), "{text}");

    let profile = data_dir.join("demo/patient");
    let devices = run(&["devices", "list", "--profile", profile.to_str().unwrap()]);
    assert!(devices.status.success(), "{devices:?}");
    assert!(stdout(&devices).contains("GlukkoCGM 20"), "{devices:?}");
    let pairings = run(&["pairing", "list", "--profile", profile.to_str().unwrap()]);
    assert!(stdout(&pairings).contains("active"), "{pairings:?}");
    let state = data_dir.join("demo/diga-pairing.json");
    let fetched = run(&[
        "diga",
        "--state-file",
        state.to_str().unwrap(),
        "fetch",
        "Observation?_count=2",
    ]);
    assert!(fetched.status.success(), "{fetched:?}");
    assert!(stdout(&fetched).contains("99504-3"), "{fetched:?}");

    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    // The data stays for the next look.
    assert!(data_dir.join("medvault.db").exists());
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    // `medvault demo | head -1`: the pipe closes after the first line.
    let mut child = command(&["demo", "--days", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with(" 1. server started"), "{first}");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(141), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
