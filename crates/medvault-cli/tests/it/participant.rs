//! A participant's commands (`account`, `credentials`, `documents`,
//! `connections`) run as the real binary against a test server.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use medvault_testkit::TestServer;

use crate::process::command;

/// Runs `medvault ARGS` with `stdin` fed to it, off the async runtime.
async fn medvault(profile: &Path, args: &[&str], stdin: &str) -> Output {
    let mut full: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    full.push("--profile".into());
    full.push(profile.to_str().unwrap().to_owned());
    if !stdin.is_empty() {
        full.push("--password-stdin".into());
    }
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let mut child = command(&refs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn field<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"))
        .trim()
}

/// Registers an institution or professional named `name` in `profile` and
/// logs it in with its SuperPIN; returns the UID.
async fn register_named_and_log_in(
    profile: &Path,
    url: &str,
    ca: &Path,
    kind: &str,
    name: &str,
) -> String {
    let registered = ok(&medvault(
        profile,
        &[
            "account",
            "register",
            "--server",
            url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--kind",
            kind,
            "--name",
            name,
        ],
        "",
    )
    .await);
    let uid = field(&registered, "uid:").to_owned();
    let superpin = field(
        &registered,
        "SuperPIN (write it down; it is shown only now):",
    )
    .to_owned();
    ok(&medvault(
        profile,
        &["account", "login", "--superpin", "--uid", &uid],
        &format!("{superpin}\n"),
    )
    .await);
    uid
}

/// One test at a time on the shared SoftHSM2 token.
static TOKEN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The SoftHSM2 module path (scripts/setup-softhsm.sh makes a fresh token
/// once per test process); `None`, said as SKIPPED, without SoftHSM2.
fn softhsm_module() -> Option<String> {
    static MODULE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    MODULE
        .get_or_init(|| {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/setup-softhsm.sh"
            );
            let setup = std::process::Command::new("bash")
                .arg(script)
                .output()
                .ok()?;
            if !setup.status.success() {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED cli smartcard: SoftHSM2 setup failed"
                );
                return None;
            }
            Some(
                String::from_utf8(setup.stdout)
                    .ok()?
                    .lines()
                    .last()?
                    .trim()
                    .to_owned(),
            )
        })
        .clone()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_and_a_practice_use_every_command() {
    let server = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("tls-ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let url = server.patient_url("/");
    let patient = work.path().join("patient");
    let certificate = work.path().join("patient-cert.pem");

    // Register: password and certificate passphrase from stdin, never argv.
    let registered = ok(&medvault(
        &patient,
        &[
            "account",
            "register",
            "--server",
            &url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--kind",
            "patient",
            "--email",
            "anna@example.org",
            "--tans",
            "2",
            "--software-certificate",
            certificate.to_str().unwrap(),
        ],
        "correct horse\nfile passphrase\n",
    )
    .await);
    let uid = field(&registered, "uid:").to_owned();
    let superpin = field(
        &registered,
        "SuperPIN (write it down; it is shown only now):",
    )
    .to_owned();
    let tan1 = field(&registered, "TAN   1:").to_owned();
    assert_eq!(superpin.len(), 29, "25 symbols in 5 groups");
    #[cfg(unix)]
    {
        assert_eq!(mode(&patient), 0o700);
        assert_eq!(mode(&patient.join("profile.json")), 0o600);
        assert_eq!(mode(&certificate), 0o600);
    }
    assert!(
        std::fs::read_to_string(&certificate)
            .unwrap()
            .contains("ENCRYPTED PRIVATE KEY")
    );

    // A secret on the command line is refused outright.
    let refused = medvault(
        &patient,
        &[
            "account",
            "login",
            "--email",
            "anna@example.org",
            "--password",
            "x",
        ],
        "",
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");

    ok(&medvault(
        &patient,
        &["account", "login", "--email", "Anna@Example.org"],
        "correct horse\n",
    )
    .await);
    #[cfg(unix)]
    assert_eq!(mode(&patient.join("session.json")), 0o600);
    let whoami = ok(&medvault(&patient, &["account", "whoami"], "").await);
    assert_eq!(field(&whoami, "uid:"), uid);
    let list = ok(&medvault(&patient, &["credentials", "list"], "").await);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains("(2 left)"), "{list}");

    // A document for oneself: send, list, open.
    let letter = work.path().join("letter.txt");
    std::fs::write(&letter, "Blutzucker 5.4 mmol/l").unwrap();
    let sent = ok(&medvault(
        &patient,
        &[
            "documents",
            "send",
            "--title",
            "Werte",
            "--media-type",
            "text/plain",
            letter.to_str().unwrap(),
        ],
        "",
    )
    .await);
    let document = sent.trim().to_owned();
    let listed = ok(&medvault(&patient, &["documents", "list"], "").await);
    assert!(
        listed.contains(&document) && listed.contains("Werte"),
        "{listed}"
    );
    let opened = ok(&medvault(&patient, &["documents", "open", &document], "").await);
    assert_eq!(opened, "Blutzucker 5.4 mmol/l");

    // Logout forgets the session; the TAN works once; the certificate and the SuperPIN log in.
    ok(&medvault(&patient, &["account", "logout"], "").await);
    assert!(!patient.join("session.json").exists());
    assert_eq!(
        medvault(&patient, &["account", "whoami"], "")
            .await
            .status
            .code(),
        Some(1)
    );
    ok(&medvault(
        &patient,
        &["account", "login", "--tan", "1", "--uid", &uid],
        &format!("{tan1}\n"),
    )
    .await);
    ok(&medvault(&patient, &["account", "logout"], "").await);
    let reused = medvault(
        &patient,
        &["account", "login", "--tan", "1", "--uid", &uid],
        &format!("{tan1}\n"),
    )
    .await;
    assert_eq!(reused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&reused.stderr).contains("401"),
        "{reused:?}"
    );
    ok(&medvault(
        &patient,
        &[
            "account",
            "login",
            "--certificate",
            certificate.to_str().unwrap(),
        ],
        "file passphrase\n",
    )
    .await);
    ok(&medvault(
        &patient,
        &["account", "login", "--superpin", "--uid", &uid],
        &format!("{}\n", superpin.to_lowercase()),
    )
    .await);

    // A practice connects and receives a document.
    let practice = work.path().join("practice");
    let practice_uid =
        register_named_and_log_in(&practice, &url, &ca, "institution:practice", "Praxis Nord")
            .await;
    ok(&medvault(&patient, &["connections", "invite", &practice_uid], "").await);
    let pending = ok(&medvault(&practice, &["connections", "list"], "").await);
    assert!(
        pending.contains(&uid) && pending.contains("incoming"),
        "{pending}"
    );
    ok(&medvault(&practice, &["connections", "accept", &uid], "").await);
    let sent = ok(&medvault(
        &patient,
        &[
            "documents",
            "send",
            "--to",
            &practice_uid,
            "--title",
            "Für die Praxis",
            letter.to_str().unwrap(),
        ],
        "",
    )
    .await);
    let output = work.path().join("received.txt");
    ok(&medvault(
        &practice,
        &[
            "documents",
            "open",
            sent.trim(),
            "--output",
            output.to_str().unwrap(),
        ],
        "",
    )
    .await);
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "Blutzucker 5.4 mmol/l"
    );
    #[cfg(unix)]
    assert_eq!(mode(&output), 0o600);

    // The practice proofs the connected patient and gets the one-time code.
    let proofed = ok(&medvault(
        &practice,
        &[
            "proofing",
            "record",
            "--patient",
            &uid,
            "--method",
            "in-person",
            "--evidence",
            "id-card",
            "--png",
            work.path().join("code.png").to_str().unwrap(),
        ],
        "",
    )
    .await);
    assert_eq!(field(&proofed, "code:").len(), 19, "{proofed}");
    assert!(
        proofed.contains('█') || proofed.contains('▀'),
        "a QR code is drawn"
    );
    let png = work.path().join("code.png");
    assert_eq!(
        std::fs::read(&png).unwrap()[..8],
        *b"\x89PNG\r\n\x1a\n",
        "a PNG of the QR code"
    );

    // The patient requests the credential with the code (from stdin, never
    // argv), checks it, and lifts the session to IAL2.
    // A new code for the proofing replaces the first.
    let stale = field(&proofed, "code:").to_owned();
    let proofing_id = field(&proofed, "proofing:").to_owned();
    let renewed = ok(&medvault(&practice, &["proofing", "code", &proofing_id], "").await);
    let code = field(&renewed, "code:").to_owned();
    assert_ne!(code, stale);
    let refused = medvault(&patient, &["credential", "request"], &format!("{stale}\n")).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let issued = ok(&medvault(&patient, &["credential", "request"], &format!("{code}\n")).await);
    assert!(issued.contains("Patient Credential"), "{issued}");
    #[cfg(unix)]
    {
        assert_eq!(mode(&patient.join("device-key.p8")), 0o600);
        assert_eq!(mode(&patient.join("patient-credential.jwt")), 0o600);
    }
    let shown = ok(&medvault(&patient, &["credential", "show"], "").await);
    assert!(shown.contains("\"PatientCredential\""), "{shown}");
    assert!(shown.contains("status: valid"), "{shown}");
    assert!(
        !shown.contains("anna@example.org"),
        "no personal datum in it"
    );
    let whoami = ok(&medvault(&patient, &["account", "whoami"], "").await);
    assert_eq!(field(&whoami, "assurance:"), "IAL1");
    ok(&medvault(&patient, &["credential", "present"], "").await);
    let whoami = ok(&medvault(&patient, &["account", "whoami"], "").await);
    assert_eq!(field(&whoami, "assurance:"), "IAL2");
    // A fresh login can present at once.
    ok(&medvault(
        &patient,
        &[
            "account",
            "login",
            "--email",
            "anna@example.org",
            "--patient-credential",
        ],
        "correct horse\n",
    )
    .await);
    let whoami = ok(&medvault(&patient, &["account", "whoami"], "").await);
    assert_eq!(field(&whoami, "assurance:"), "IAL2");
    let issued_list = ok(&medvault(&practice, &["credential", "list"], "").await);
    assert_eq!(issued_list.lines().count(), 1, "{issued_list}");
    let credential_id = issued_list.split_whitespace().next().unwrap().to_owned();
    ok(&medvault(
        &practice,
        &["credential", "revoke", &credential_id, "--suspend"],
        "",
    )
    .await);
    let shown = ok(&medvault(&patient, &["credential", "show"], "").await);
    assert!(
        shown.contains("status: NOT valid: the credential is suspended"),
        "{shown}"
    );
    ok(&medvault(
        &practice,
        &["credential", "revoke", &credential_id, "--reinstate"],
        "",
    )
    .await);
    ok(&medvault(&practice, &["credential", "revoke", &credential_id], "").await);
    let ended = medvault(&patient, &["account", "whoami"], "").await;
    assert_eq!(
        ended.status.code(),
        Some(1),
        "the IAL2 session ended with the credential"
    );
    ok(&medvault(
        &patient,
        &["account", "login", "--email", "anna@example.org"],
        "correct horse\n",
    )
    .await);
    let refused = medvault(
        &patient,
        &[
            "proofing",
            "record",
            "--patient",
            &practice_uid,
            "--method",
            "in-person",
            "--evidence",
            "id-card",
        ],
        "",
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{refused:?}"
    );

    // Credentials: add TANs, remove them.
    let added = ok(&medvault(&practice, &["credentials", "add", "--tans", "3"], "").await);
    assert_eq!(
        added
            .lines()
            .filter(|line| line.starts_with("TAN "))
            .count(),
        3
    );
    let batch = added
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    ok(&medvault(&practice, &["credentials", "remove", &batch], "").await);
    let remaining = ok(&medvault(&practice, &["credentials", "list"], "").await);
    assert_eq!(remaining.lines().count(), 1, "{remaining}");
    let last = remaining.split_whitespace().next().unwrap().to_owned();
    let refused = medvault(&practice, &["credentials", "remove", &last], "").await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("409"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smartcard_is_enrolled_and_logs_in_from_the_command_line() {
    let Some(module) = softhsm_module() else {
        return;
    };
    let _token = TOKEN_LOCK.lock().await;
    let server = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("tls-ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let profile = work.path().join("hcp");
    let uid =
        register_named_and_log_in(&profile, &server.patient_url("/"), &ca, "hcp", "Dr. Karte")
            .await;
    let label = format!("cli-{uid}");
    let added = ok(&medvault(
        &profile,
        &[
            "credentials",
            "add",
            "--smartcard",
            &label,
            "--module",
            &module,
            "--token",
            "medvault-test",
        ],
        "123456\n",
    )
    .await);
    assert!(added.starts_with("added smartcard credential"), "{added}");
    ok(&medvault(&profile, &["account", "logout"], "").await);
    // A wrong PIN is refused by the token; the right one logs in.
    let wrong = medvault(
        &profile,
        &[
            "account",
            "login",
            "--smartcard",
            &label,
            "--module",
            &module,
            "--token",
            "medvault-test",
        ],
        "000000\n",
    )
    .await;
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    ok(&medvault(
        &profile,
        &[
            "account",
            "login",
            "--smartcard",
            &label,
            "--module",
            &module,
            "--token",
            "medvault-test",
        ],
        "123456\n",
    )
    .await);
    let whoami = ok(&medvault(&profile, &["account", "whoami"], "").await);
    assert_eq!(field(&whoami, "uid:"), uid);
    // A card session signs documents on the card (the PIN again, for the card).
    let note = work.path().join("note.txt");
    std::fs::write(&note, "signed on the card").unwrap();
    let unsigned = medvault(
        &profile,
        &[
            "documents",
            "send",
            "--title",
            "Notiz",
            note.to_str().unwrap(),
        ],
        "",
    )
    .await;
    assert_eq!(
        unsigned.status.code(),
        Some(1),
        "no key in the session: {unsigned:?}"
    );
    let sent = ok(&medvault(
        &profile,
        &[
            "documents",
            "send",
            "--title",
            "Notiz",
            "--smartcard",
            &label,
            "--module",
            &module,
            "--token",
            "medvault-test",
            note.to_str().unwrap(),
        ],
        "123456\n",
    )
    .await);
    let opened = ok(&medvault(&profile, &["documents", "open", sent.trim()], "").await);
    assert_eq!(opened, "signed on the card");
}

/// A Patient Credential whose device key is made on a PKCS#11 token from the
/// command line; presenting it asks for the token PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_credential_lives_on_a_token_from_the_command_line() {
    let Some(module) = softhsm_module() else {
        return;
    };
    let _token = TOKEN_LOCK.lock().await;
    let server = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("tls-ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let url = server.patient_url("/");
    let patient = work.path().join("patient");
    let practice = work.path().join("practice");
    let practice_uid =
        register_named_and_log_in(&practice, &url, &ca, "institution:practice", "Praxis Token")
            .await;
    let registered = ok(&medvault(
        &patient,
        &[
            "account",
            "register",
            "--server",
            &url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--kind",
            "patient",
        ],
        "",
    )
    .await);
    let uid = field(&registered, "uid:").to_owned();
    let superpin = field(
        &registered,
        "SuperPIN (write it down; it is shown only now):",
    )
    .to_owned();
    ok(&medvault(
        &patient,
        &["account", "login", "--superpin", "--uid", &uid],
        &format!("{superpin}\n"),
    )
    .await);
    ok(&medvault(&patient, &["connections", "invite", &practice_uid], "").await);
    ok(&medvault(&practice, &["connections", "accept", &uid], "").await);
    let proofed = ok(&medvault(
        &practice,
        &[
            "proofing",
            "record",
            "--patient",
            &uid,
            "--method",
            "in-person",
            "--evidence",
            "passport",
        ],
        "",
    )
    .await);
    let code = field(&proofed, "code:").to_owned();
    let label = format!("device-{uid}");
    let issued = ok(&medvault(
        &patient,
        &[
            "credential",
            "request",
            "--smartcard",
            &label,
            "--module",
            &module,
            "--token",
            "medvault-test",
        ],
        &format!("{code}\n123456\n"),
    )
    .await);
    assert!(issued.contains("device key (pkcs11): did:key:"), "{issued}");
    assert!(
        !patient.join("device-key.p8").exists(),
        "no key in the profile"
    );
    let wrong_pin = medvault(&patient, &["credential", "present"], "000000\n").await;
    assert_eq!(wrong_pin.status.code(), Some(1), "{wrong_pin:?}");
    ok(&medvault(&patient, &["credential", "present"], "123456\n").await);
    let whoami = ok(&medvault(&patient, &["account", "whoami"], "").await);
    assert_eq!(field(&whoami, "assurance:"), "IAL2");
}

/// HDDT from the command line: the patient makes a consent-page ticket,
/// lists and revokes the pairing and reads their own audit entries; the
/// operator names an auditor, checks the request log, and retires HDDT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_pairs_and_an_auditor_reads_the_trail_from_the_command_line() {
    use medvault_core::{DigaClientId, Miv};
    use medvault_oauth::{DigaRegistryEntry, DigaStatus};
    use medvault_testkit::TestCertificate;
    use medvault_testkit::hddt;

    const DIGA: &str = "urn:diga:bfarm:12345";
    const REDIRECT: &str = "https://diga.example/callback";
    const CGM: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement";
    let server = TestServer::start().await;
    let data_dir = server.data_dir.path().to_str().unwrap().to_owned();
    let diga = TestCertificate::diga("cli-diga");
    hddt::install_registry(
        &server,
        vec![DigaRegistryEntry {
            client_id: DigaClientId::parse(DIGA).unwrap(),
            name: "Glukose-Tagebuch".to_owned(),
            status: DigaStatus::Active,
            redirect_uri: REDIRECT.to_owned(),
            mivs: vec![Miv::ContinuousGlucose],
            certificates: vec![diga.der.clone()],
        }],
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("tls-ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let url = server.patient_url("/");
    let patient = work.path().join("patient");
    let registered = ok(&medvault(
        &patient,
        &[
            "account",
            "register",
            "--server",
            &url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--kind",
            "patient",
            "--email",
            "pia@example.org",
        ],
        "pairing passphrase\n",
    )
    .await);
    let uid = field(&registered, "uid:").to_owned();
    ok(&medvault(
        &patient,
        &["account", "login", "--email", "pia@example.org"],
        "pairing passphrase\n",
    )
    .await);

    // The DiGA pushes its request; the patient logs in on the page with a
    // ticket from the CLI and approves.
    let client = server.client(Some(&diga));
    let (status, pushed) = hddt::post_form(
        &server,
        &client,
        "/par",
        &hddt::par_form(DIGA, REDIRECT, CGM),
    )
    .await;
    assert_eq!(status, 201);
    let (_, page) =
        hddt::open_consent(&server, DIGA, pushed["request_uri"].as_str().unwrap()).await;
    let ticket = ok(&medvault(&patient, &["pairing", "ticket"], "").await);
    let ticket = field(&ticket, "login ticket:").to_owned();
    let location = hddt::consent_with_ticket(
        &server,
        &ticket,
        &page,
        &[
            ("miv", "hddt-miv-continuous-glucose-measurement"),
            ("days", "30"),
            ("decision", "approve"),
        ],
    )
    .await;
    let code = hddt::query_value(&location, "code").unwrap();
    let (status, tokens) = hddt::post_form(
        &server,
        &client,
        "/token",
        &hddt::code_form(DIGA, REDIRECT, &code, hddt::VERIFIER),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let pairing_id = tokens["sub"].as_str().unwrap().to_owned();

    let listed = ok(&medvault(&patient, &["pairing", "list"], "").await);
    assert!(
        listed.contains(&pairing_id) && listed.contains("active"),
        "{listed}"
    );
    assert!(listed.contains("Glukose-Tagebuch"), "{listed}");
    let own = ok(&medvault(
        &patient,
        &["audit", "list", "--event-type", "hddt.pairing"],
        "",
    )
    .await);
    assert!(own.contains("hddt.pairing") && own.contains(DIGA), "{own}");
    // Everyone's entries are for auditors only.
    let refused = medvault(&patient, &["audit", "list", "--all"], "").await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Auditors only"));
    let named = crate::process::run(&["admin", "auditor", "--data-dir", &data_dir, "add", &uid]);
    assert!(named.status.success(), "{named:?}");
    let auditors = crate::process::run(&["admin", "auditor", "--data-dir", &data_dir, "list"]);
    assert!(String::from_utf8_lossy(&auditors.stdout).contains(&uid));
    let export = work.path().join("audit.jsonl");
    ok(&medvault(
        &patient,
        &[
            "audit",
            "export",
            "--all",
            "--output",
            export.to_str().unwrap(),
        ],
        "",
    )
    .await);
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(exported.lines().count() > 3);
    assert!(exported.contains("server.started") && exported.contains("hddt.pairing"));

    // 30 days chosen: within the warning window after a renewal for 10.
    let renewed = ok(&medvault(
        &patient,
        &["pairing", "renew", &pairing_id, "--days", "10"],
        "",
    )
    .await);
    assert!(renewed.contains("renewed"), "{renewed}");
    let listed = ok(&medvault(&patient, &["pairing", "list"], "").await);
    assert!(listed.contains("ENDS SOON"), "{listed}");
    ok(&medvault(&patient, &["pairing", "revoke", &pairing_id], "").await);
    let listed = ok(&medvault(&patient, &["pairing", "list"], "").await);
    assert!(listed.contains("revoked (patient)"), "{listed}");
    let (status, _) = hddt::post_form(
        &server,
        &client,
        "/token",
        &hddt::refresh_form(DIGA, tokens["refresh_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 400);

    // The request log verifies and filters by endpoint.
    let verified =
        crate::process::run(&["admin", "request-log", "--data-dir", &data_dir, "verify"]);
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("request log intact"),
        "{verified:?}"
    );
    let shown = crate::process::run(&[
        "admin",
        "request-log",
        "--data-dir",
        &data_dir,
        "show",
        "--endpoint",
        "/token",
        "--status",
        "200",
    ]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&pairing_id));

    let rotated = crate::process::run(&["admin", "token-key", "--data-dir", &data_dir, "rotate"]);
    assert!(
        String::from_utf8_lossy(&rotated.stdout).contains("new token signing key"),
        "{rotated:?}"
    );

    // Retiring needs --yes; then /par answers "no longer supported".
    let unconfirmed = crate::process::run(&["admin", "retire", "--data-dir", &data_dir]);
    assert_eq!(unconfirmed.status.code(), Some(2));
    let retired = crate::process::run(&["admin", "retire", "--yes", "--data-dir", &data_dir]);
    assert!(retired.status.success(), "{retired:?}");
    // Running nodes re-read the switch within five seconds.
    let now = medvault_core::Clock::now(&*server.clock);
    server.clock.set(now + time::Duration::seconds(6));
    let (status, body) = hddt::post_form(
        &server,
        &client,
        "/par",
        &hddt::par_form(DIGA, REDIRECT, CGM),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("hddt_not_supported"))
    );
    server.stop().await;
}

/// `admin hiis show` prints what goes into the HIIS-VZ; `admin diga reload`
/// makes a running server take a changed registry file within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_registers_in_the_hiis_and_reloads_the_registry() {
    use medvault_testkit::TestCertificate;
    use medvault_testkit::hddt;

    let server = TestServer::start().await;
    let data_dir = server.data_dir.path().to_str().unwrap().to_owned();
    let text = crate::process::run(&["admin", "hiis", "--data-dir", &data_dir, "show"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("/.well-known/oauth-authorization-server"),
        "{text}"
    );
    assert!(text.contains("hddt-miv-continuous-glucose-measurement"));
    let json = crate::process::run(&["admin", "hiis", "--data-dir", &data_dir, "show", "--json"]);
    let bundle: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries[0]["resource"]["resourceType"], "DeviceDefinition");
    let codes: Vec<&str> = entries[1..]
        .iter()
        .map(|entry| {
            entry["resource"]["connectionType"]["code"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(codes, ["hl7-fhir-rest", "oauth-authz-server"]);

    // A DiGA added to the file while the server runs works after a reload.
    let diga = TestCertificate::diga("reloaded-diga");
    let cert = server.data_dir.path().join("diga.pem");
    std::fs::write(&cert, &diga.cert_pem).unwrap();
    let added = crate::process::run(&[
        "admin",
        "diga",
        "--data-dir",
        &data_dir,
        "add",
        "--client-id",
        "urn:diga:bfarm:22222",
        "--name",
        "Neu",
        "--redirect-uri",
        "https://neu.example/cb",
        "--miv",
        "hddt-miv-continuous-glucose-measurement",
        "--cert",
        cert.to_str().unwrap(),
    ]);
    assert!(added.status.success(), "{added:?}");
    let reloaded = crate::process::run(&["admin", "diga", "--data-dir", &data_dir, "reload"]);
    assert!(reloaded.status.success(), "{reloaded:?}");
    let client = server.client(Some(&diga));
    let form = hddt::par_form(
        "urn:diga:bfarm:22222",
        "https://neu.example/cb",
        "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let attempt = client
            .post(server.hddt_url("/par"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(hddt::encode(&form))
            .send()
            .await;
        if attempt.is_ok_and(|response| response.status() == 201) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload was not taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    server.stop().await;
}

/// The DiGA reference client against our server: it refuses a server the
/// HIIS-VZ export does not list, pairs (PAR, the patient's consent in a
/// browser, the loopback redirect, PKCE), refreshes and unpairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diga_reference_client_pairs_refreshes_and_unpairs() {
    use std::io::BufRead;

    use medvault_client::{NewAccount, Password};
    use medvault_core::{DigaClientId, Miv, ParticipantKind};
    use medvault_oauth::{DigaRegistryEntry, DigaStatus};
    use medvault_testkit::TestCertificate;
    use medvault_testkit::hddt;

    const DIGA: &str = "urn:diga:bfarm:33333";
    const CGM: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement";
    let server = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let diga = TestCertificate::diga("reference-client");
    hddt::install_registry(
        &server,
        vec![DigaRegistryEntry {
            client_id: DigaClientId::parse(DIGA).unwrap(),
            name: "Referenz-DiGA".to_owned(),
            status: DigaStatus::Active,
            redirect_uri: redirect.clone(),
            mivs: vec![Miv::ContinuousGlucose],
            certificates: vec![diga.der.clone()],
        }],
    )
    .await;
    let cert = work.path().join("diga.pem");
    let key = work.path().join("diga.key");
    let ca = work.path().join("ca.pem");
    std::fs::write(&cert, &diga.cert_pem).unwrap();
    std::fs::write(&key, &diga.key_pem).unwrap();
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let state = work.path().join("pairing.json");
    let issuer = server.hddt_url("");
    let pair_args = |hiis: Option<&str>| {
        let mut args = vec![
            "diga".to_owned(),
            "--state-file".to_owned(),
            state.to_str().unwrap().to_owned(),
            "pair".to_owned(),
            "--server".to_owned(),
            issuer.clone(),
            "--client-id".to_owned(),
            DIGA.to_owned(),
            "--client-cert".to_owned(),
            cert.to_str().unwrap().to_owned(),
            "--client-key".to_owned(),
            key.to_str().unwrap().to_owned(),
            "--redirect-uri".to_owned(),
            redirect.clone(),
            "--scope".to_owned(),
            CGM.to_owned(),
            "--tls-ca".to_owned(),
            ca.to_str().unwrap().to_owned(),
        ];
        if let Some(hiis) = hiis {
            args.push("--hiis".to_owned());
            args.push(hiis.to_owned());
        }
        args
    };

    // A server the HIIS-VZ export does not list is refused before any request.
    let hiis = work.path().join("hiis.json");
    std::fs::write(
        &hiis,
        r#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Endpoint","address":"https://ddr.example/.well-known/oauth-authorization-server"}}]}"#,
    )
    .unwrap();
    let refused_args = pair_args(Some(hiis.to_str().unwrap()));
    let refs: Vec<&str> = refused_args.iter().map(String::as_str).collect();
    let refused = crate::process::run(&refs);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not registered in the HIIS-VZ"));

    // The patient who will consent.
    let sdk = server.sdk();
    sdk.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some(("rita@example.org".to_owned(), Password::new("reference pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    let patient = sdk
        .login_password("rita@example.org", &Password::new("reference pw"))
        .await
        .unwrap();

    let args = pair_args(None);
    let mut child = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::process::command(&refs)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (authorize, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let authorize = lines
            .by_ref()
            .map(Result::unwrap)
            .find_map(|line| {
                line.strip_prefix("open in the patient's browser: ")
                    .map(str::to_owned)
            })
            .unwrap();
        (authorize, lines)
    })
    .await
    .unwrap();
    // The browser: the consent page, the ticket login, approve; then it
    // follows the redirect to the reference client's loopback listener.
    let page = hddt::browser(&server)
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Referenz-DiGA"));
    let location = hddt::consent(
        &server,
        &patient,
        &page,
        &[
            ("miv", "hddt-miv-continuous-glucose-measurement"),
            ("days", "30"),
            ("decision", "approve"),
        ],
    )
    .await;
    assert!(location.starts_with(&redirect));
    let landed = reqwest::Client::new().get(&location).send().await.unwrap();
    assert!(landed.text().await.unwrap().contains("Pairing done"));
    let printed = tokio::task::spawn_blocking(move || {
        let printed: Vec<String> = rest.map(Result::unwrap).collect();
        let status = child.wait().unwrap();
        (printed, status)
    })
    .await
    .unwrap();
    assert!(printed.1.success(), "{:?}", printed.0);
    let paired = printed.0.join("\n");
    let pairing_id = paired
        .lines()
        .find_map(|line| line.strip_prefix("paired: Pairing ID "))
        .unwrap()
        .to_owned();
    assert_eq!(pairing_id.len(), 64);
    assert!(std::fs::metadata(&state).is_ok());

    let state_arg = state.to_str().unwrap();
    let refreshed = crate::process::run(&["diga", "--state-file", state_arg, "-v", "token"]);
    assert!(refreshed.status.success(), "{refreshed:?}");
    assert!(String::from_utf8_lossy(&refreshed.stdout).contains("refreshed: Pairing ID"));
    // -v shows the exchange, never a whole token.
    let verbose = String::from_utf8_lossy(&refreshed.stderr).into_owned();
    assert!(
        verbose.contains("POST") && verbose.contains("chars)"),
        "{verbose}"
    );
    // Data to read: a CGM with two weeks of readings.
    let cgm = patient
        .register_device(&medvault_proto::devices::NewDevice {
            model: "glukko-cgm-18".into(),
            serial_number: "REF-1".into(),
            unit: "mg/dL".into(),
        })
        .await
        .unwrap();
    let series = medvault_fhir::simulate::cgm_series(
        &cgm.id,
        medvault_fhir::catalogue::model("glukko-cgm-18").unwrap(),
        medvault_fhir::catalogue::GlucoseUnit::MgPerDl,
        medvault_core::Clock::now(&*server.clock) - time::Duration::minutes(1),
        14,
        5,
    );
    patient
        .upload_readings(&medvault_proto::devices::UploadBatch {
            batch_id: "reference".into(),
            readings: series,
        })
        .await
        .unwrap();
    let fetched = crate::process::run(&[
        "diga",
        "--state-file",
        state_arg,
        "fetch",
        "Observation?_count=100",
        "--all",
    ]);
    assert!(fetched.status.success(), "{fetched:?}");
    let listing = String::from_utf8_lossy(&fetched.stdout).into_owned();
    assert!(listing.contains("99504-3"), "{listing}");
    let count: usize = listing
        .lines()
        .last()
        .and_then(|line| line.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        (336..=337).contains(&count),
        "every hour of 14 days: {count}"
    );
    let device = crate::process::run(&[
        "diga",
        "--state-file",
        state_arg,
        "fetch",
        &format!("Device/{}", cgm.id),
    ]);
    // Without patient/Device.rs in its scope the DiGA reads no Device.
    assert_eq!(device.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&device.stderr).contains("404"));
    let summary = crate::process::run(&["diga", "--state-file", state_arg, "summary", "--related"]);
    assert!(summary.status.success(), "{summary:?}");
    let report = String::from_utf8_lossy(&summary.stdout).into_owned();
    for code in [
        "97507-8:",
        "106793-3: 104642-4=",
        "97506-0:",
        "104638-2:",
        "104636-6:",
        "104637-4:",
    ] {
        assert!(report.contains(code), "{code} missing: {report}");
    }
    assert!(
        !report.contains("Device/"),
        "related adds Devices only with their scope"
    );
    let unknown = crate::process::run(&["diga", "--state-file", state_arg, "fetch", "Patient"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
    let unpaired = crate::process::run(&["diga", "--state-file", state_arg, "unpair"]);
    assert!(unpaired.status.success(), "{unpaired:?}");
    assert!(std::fs::metadata(&state).is_err());
    let pairings = patient.pairings().await.unwrap();
    assert_eq!(pairings[0].pairing_id, pairing_id);
    assert_eq!(pairings[0].revoke_reason.as_deref(), Some("client"));
    server.stop().await;
}

/// Devices and readings from the command line: the catalogue, a CGM and a
/// meter, a CSV upload (a second run stores nothing twice), two simulated
/// days, calibration, the export; the operator's maintenance switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_uploads_device_data_from_the_command_line() {
    let server = TestServer::start().await;
    let data_dir = server.data_dir.path().to_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("tls-ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let url = server.patient_url("/");
    let patient = work.path().join("patient");
    ok(&medvault(
        &patient,
        &[
            "account",
            "register",
            "--server",
            &url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--kind",
            "patient",
            "--email",
            "dana@example.org",
        ],
        "device passphrase\n",
    )
    .await);
    ok(&medvault(
        &patient,
        &["account", "login", "--email", "dana@example.org"],
        "device passphrase\n",
    )
    .await);
    let models = ok(&medvault(&patient, &["devices", "models"], "").await);
    assert!(
        models.contains("glukko-cgm-18") && models.contains("needs calibration"),
        "{models}"
    );
    let added = ok(&medvault(
        &patient,
        &[
            "devices",
            "add",
            "glukko-meter-5",
            "--serial",
            "M-77",
            "--unit",
            "mmol/L",
        ],
        "",
    )
    .await);
    let meter = added.trim().rsplit(' ').next().unwrap().to_owned();
    let refused = medvault(
        &patient,
        &["devices", "add", "free text model", "--serial", "1"],
        "",
    )
    .await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("catalogue"));

    let csv = work.path().join("meter.csv");
    let at = |minutes: i64| {
        (medvault_core::Clock::now(&*server.clock) - time::Duration::minutes(minutes))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    std::fs::write(
        &csv,
        format!(
            "device,time,value,unit,limit\n{meter},{},5.4,mmol/L,\n{meter},{},,mmol/L,high\n",
            at(120),
            at(60)
        ),
    )
    .unwrap();
    let uploaded =
        ok(&medvault(&patient, &["readings", "upload", csv.to_str().unwrap()], "").await);
    assert!(uploaded.starts_with("2 readings stored"), "{uploaded}");
    let again = ok(&medvault(&patient, &["readings", "upload", csv.to_str().unwrap()], "").await);
    assert!(again.contains("had been stored before"), "{again}");

    let simulated = ok(&medvault(&patient, &["simulate", "cgm", "--days", "2"], "").await);
    assert!(
        simulated.starts_with("576 simulated CGM readings"),
        "{simulated}"
    );
    let listed = ok(&medvault(&patient, &["devices", "list"], "").await);
    let cgm = listed
        .lines()
        .find(|line| line.contains("GlukkoCGM"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let calibrated = ok(&medvault(&patient, &["devices", "calibrate", &cgm], "").await);
    assert!(
        calibrated.contains("calibration calibrated"),
        "{calibrated}"
    );
    let out = work.path().join("export.json");
    ok(&medvault(&patient, &["export", "--out", out.to_str().unwrap()], "").await);
    let export: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let observations: Vec<&serde_json::Value> = export["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Observation")
        .collect();
    // Two meter readings, and the 576 CGM readings exactly once in hourly
    // chunks: 48 or 49 of them (how two days fall on hour boundaries), one
    // more where the calibration closed the open chunk.
    let (cgm, meter): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = observations
        .into_iter()
        .partition(|r| r.get("valueSampledData").is_some());
    assert_eq!(meter.len(), 2);
    assert!((48..=50).contains(&cgm.len()), "{}", cgm.len());
    let samples: usize = cgm
        .iter()
        .map(|r| {
            r["valueSampledData"]["data"]
                .as_str()
                .unwrap()
                .split(' ')
                .filter(|t| *t != "E")
                .count()
        })
        .sum();
    assert_eq!(samples, 576);

    // The operator's maintenance switch and the public status feed.
    let on = crate::process::run(&[
        "admin",
        "maintenance",
        "--data-dir",
        &data_dir,
        "on",
        "--retry-after",
        "300",
    ]);
    assert!(on.status.success(), "{on:?}");
    server.clock.advance(time::Duration::seconds(6));
    let feed: serde_json::Value = server
        .client(None)
        .get(server.patient_url("/status.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(feed["status"], "maintenance");
    assert_eq!(feed["maintenance"]["retry_after_secs"], 300);
    let off = crate::process::run(&["admin", "maintenance", "--data-dir", &data_dir, "off"]);
    assert!(off.status.success(), "{off:?}");
    server.clock.advance(time::Duration::seconds(6));
    let feed: serde_json::Value = server
        .client(None)
        .get(server.patient_url("/status.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(feed["status"], "up");
}
