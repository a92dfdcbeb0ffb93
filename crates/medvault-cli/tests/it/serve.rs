//! `medvault serve` from the outside.

use std::time::Duration;

use crate::process::{Server, https_client, one_line_failure, run};

#[test]
fn a_bad_setting_exits_2_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "serve",
                "--dev",
                "--data-dir",
                data_dir,
                "--listen",
                "not-an-address",
            ],
            "listen:",
        ),
        (&["serve", "--data-dir", data_dir], "tls_cert:"),
        (
            &[
                "serve",
                "--dev",
                "--data-dir",
                data_dir,
                "--database",
                "mysql://x",
            ],
            "database:",
        ),
        (
            &[
                "serve",
                "--dev",
                "--data-dir",
                data_dir,
                "--oauth-issuer",
                "http://plain",
            ],
            "oauth_issuer:",
        ),
    ];
    for (args, setting) in cases {
        let output = run(args);
        let line = one_line_failure(&output, 2);
        assert!(line.contains(setting), "{line}");
    }
    // The same through a TOML file and an environment variable.
    let file = dir.path().join("medvault.toml");
    std::fs::write(
        &file,
        "dev = true\nlisten = \"127.0.0.1:8443\"\nhddt_listen = \"127.0.0.1:8443\"\n",
    )
    .unwrap();
    let output = run(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir,
    ]);
    let line = one_line_failure(&output, 2);
    assert!(line.contains("hddt_listen:"), "{line}");
    let output = crate::process::command(&["serve", "--dev", "--data-dir", data_dir])
        .env("MEDVAULT_BODY_LIMIT_BYTES", "1")
        .output()
        .unwrap();
    let line = one_line_failure(&output, 2);
    assert!(line.contains("body_limit_bytes:"), "{line}");
}

#[test]
fn an_unreachable_database_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&[
        "serve",
        "--dev",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--hddt-listen",
        "127.0.0.1:0",
        "--database",
        "postgres://medvault:hunter2@127.0.0.1:1/medvault",
    ]);
    let line = one_line_failure(&output, 1);
    assert!(line.contains("database"), "{line}");
    assert!(!line.contains("hunter2"), "the password leaked: {line}");
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = run(&[
        "serve",
        "--dev",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        &port,
        "--hddt-listen",
        "127.0.0.1:0",
    ]);
    let line = one_line_failure(&output, 1);
    assert!(line.contains(&format!("listen {port}")), "{line}");
    assert!(line.to_lowercase().contains("in use"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_over_https_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert!(dir.path().join("tls/dev-ca.pem").exists());
    let client = https_client(dir.path());
    let health = client
        .get(format!(
            "https://localhost:{}/health",
            server.patient.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let ready = client
        .get(format!("https://localhost:{}/ready", server.hddt.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    server.signal("TERM");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");

    // The second start reuses the development CA and the audit chain continues.
    let server = Server::start(dir.path(), &[]);
    server.signal("INT");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let verify = run(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The newest checkpoint printed can be passed back as an anchor.
    let stdout = String::from_utf8_lossy(&verify.stdout).to_string();
    let anchor = stdout
        .lines()
        .find_map(|line| line.strip_prefix("newest checkpoint (record it outside the database): "))
        .expect("verify prints the newest checkpoint")
        .to_owned();
    let anchored = run(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--anchor",
        &anchor,
    ]);
    assert!(
        anchored.status.success(),
        "{}",
        String::from_utf8_lossy(&anchored.stderr)
    );
    let wrong = format!("{}:{}", anchor.split(':').next().unwrap(), "0".repeat(64));
    let refused = run(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--anchor",
        &wrong,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    // started, stopped, started, stopped
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("4 entries"),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_audit_burst_loses_no_acknowledged_entry() {
    // Each request without a client certificate to a protected HDDT route is
    // refused only after its audit entry ("mtls.access_denied") is stored, so a
    // 401 response acknowledges one durable append.
    let dir = tempfile::tempdir().unwrap();
    // Audit every refusal one by one (the default bounds them to 20/s).
    let server = Server::start(dir.path(), &["--audit-denied-per-second", "100000"]);
    let client = https_client(dir.path());
    let url = format!(
        "https://localhost:{}/client-certificate",
        server.hddt.port()
    );
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let url = url.clone();
        let acknowledged = acknowledged.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..400 {
                match client.get(&url).send().await {
                    Ok(response) if response.status() == 401 => {
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(response) => panic!("unexpected status {}", response.status()),
                    Err(_) => break, // the server died
                }
            }
        }));
    }
    // Kill once the burst is well under way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < 150 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the burst did not get going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("KILL");
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(10))).await;

    // After a restart, the chain verifies and holds every acknowledged entry.
    let server = Server::start(dir.path(), &[]);
    server.signal("TERM");
    let _ = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30))).await;
    let verify = run(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&verify.stdout).to_string();
    assert!(
        verify.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Entries: 1 start + the denied requests (>= acknowledged) + 1 start + 1 stop.
    let entries: usize = stdout
        .split("verifies: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        entries >= acknowledged + 3,
        "{entries} entries, {acknowledged} acknowledged"
    );
}

#[test]
fn admin_client_cert_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let certificate = medvault_testkit::TestCertificate::diga("DiGA admin test");
    let file = dir.path().join("diga.pem");
    std::fs::write(&file, &certificate.cert_pem).unwrap();
    // Before the server ever ran there is no audit key: changes are refused, not made unaudited.
    let early = run(&[
        "admin",
        "client-cert",
        "add",
        "--data-dir",
        data_dir,
        file.to_str().unwrap(),
        "--owner",
        "x",
    ]);
    assert_eq!(early.status.code(), Some(1));
    assert!(!dir.path().join("audit-checkpoint.key").exists());
    let server = Server::start(dir.path(), &[]);
    server.signal("TERM");
    server.wait(Duration::from_secs(30));
    let added = run(&[
        "admin",
        "client-cert",
        "add",
        "--data-dir",
        data_dir,
        file.to_str().unwrap(),
        "--owner",
        "urn:diga:bfarm:00294",
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let stdout = String::from_utf8_lossy(&added.stdout).to_string();
    let fingerprint = stdout.split_whitespace().nth(1).unwrap().to_owned();
    let listed = run(&["admin", "client-cert", "list", "--data-dir", data_dir]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&fingerprint));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("urn:diga:bfarm:00294"));
    let again = run(&[
        "admin",
        "client-cert",
        "add",
        "--data-dir",
        data_dir,
        file.to_str().unwrap(),
        "--owner",
        "x",
    ]);
    assert_eq!(again.status.code(), Some(1));
    let removed = run(&[
        "admin",
        "client-cert",
        "remove",
        "--data-dir",
        data_dir,
        &fingerprint,
    ]);
    assert!(removed.status.success());
    let removed_again = run(&[
        "admin",
        "client-cert",
        "remove",
        "--data-dir",
        data_dir,
        &fingerprint,
    ]);
    assert_eq!(removed_again.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_request_ids_but_no_query_strings_or_database_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server =
        Server::start_with_stderr(dir.path(), &["--log-format", "json"], log.into(), "debug");
    let client = https_client(dir.path());
    let response = client
        .get(format!(
            "https://localhost:{}/health?code=SplxlOBeZQQYbYS6WxSbIA&token=s3cr3t",
            server.patient.port()
        ))
        .header("x-request-id", "trace-me-123")
        .header("authorization", "Bearer s3cr3t-bearer")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.signal("TERM");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("trace-me-123"),
        "the request id is not in the log"
    );
    for secret in ["SplxlOBeZQQYbYS6WxSbIA", "s3cr3t", "s3cr3t-bearer"] {
        assert!(!text.contains(secret), "{secret} leaked into the log");
    }
    // Every line is JSON.
    for line in text.lines() {
        assert!(line.starts_with('{'), "not JSON: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_on_a_schema_newer_than_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.signal("TERM");
    let _ = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30))).await;
    let database = dir.path().join("medvault.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    sqlx::query("INSERT INTO medvault_schema (version, description, applied_at_us) VALUES (4242, 'from a newer medvault', 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let output = run(&[
        "serve",
        "--dev",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--hddt-listen",
        "127.0.0.1:0",
    ]);
    let line = one_line_failure(&output, 1);
    assert!(line.contains("schema version 4242 is newer"), "{line}");
}

#[test]
fn production_mode_refuses_a_self_signed_or_misnamed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let write_pair = |name: &str, cert: &str, key: &str| {
        let cert_path = dir.path().join(format!("{name}.pem"));
        let key_path = dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (
            cert_path.to_str().unwrap().to_owned(),
            key_path.to_str().unwrap().to_owned(),
        )
    };
    // Self-signed, naming the right host.
    let key = rcgen::KeyPair::generate().unwrap();
    let self_signed = rcgen::CertificateParams::new(vec!["ddr.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (self_signed_cert, self_signed_key) =
        write_pair("self-signed", &self_signed.pem(), &key.serialize_pem());
    // CA-issued, naming another host.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let misnamed = rcgen::CertificateParams::new(vec!["other.example.com".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let (misnamed_cert, misnamed_key) =
        write_pair("misnamed", &misnamed.pem(), &leaf_key.serialize_pem());

    for (cert, key, expected) in [
        (&self_signed_cert, &self_signed_key, "self-signed"),
        (
            &misnamed_cert,
            &misnamed_key,
            "do not include ddr.example.com",
        ),
    ] {
        let output = run(&[
            "serve",
            "--data-dir",
            data_dir,
            "--listen",
            "127.0.0.1:0",
            "--hddt-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--fqdn",
            "ddr.example.com",
            "--public-base-url",
            "https://ddr.example.com",
            "--oauth-issuer",
            "https://ddr.example.com:9443",
            "--fhir-base-url",
            "https://ddr.example.com:9443/fhir",
        ]);
        let line = one_line_failure(&output, 1);
        assert!(line.contains(expected), "{line}");
    }
}

#[test]
fn admin_diga_registers_checks_lists_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let good = dir.path().join("good.pem");
    std::fs::write(
        &good,
        medvault_testkit::TestCertificate::diga("DiGA 00294").cert_pem,
    )
    .unwrap();
    let mut spec = medvault_testkit::CertificateSpec::diga("too long");
    spec.not_after = spec.not_before + time::Duration::days(400);
    let long = dir.path().join("long.pem");
    std::fs::write(
        &long,
        medvault_testkit::TestCertificate::self_signed(&spec).cert_pem,
    )
    .unwrap();
    let add = |cert: &std::path::Path, client_id: &str| {
        run(&[
            "admin",
            "diga",
            "--data-dir",
            data_dir,
            "add",
            "--client-id",
            client_id,
            "--name",
            "Glukose-Tagebuch",
            "--redirect-uri",
            "https://diga.example/callback",
            "--miv",
            "hddt-miv-continuous-glucose-measurement",
            "--cert",
            cert.to_str().unwrap(),
        ])
    };
    let added = add(&good, "urn:diga:bfarm:00294");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // A certificate valid for 400 days is refused, and nothing is written.
    let refused = add(&long, "urn:diga:bfarm:00295");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("365 to 398 days"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let bad_id = add(&good, "urn:diga:bfarm:294");
    assert_eq!(bad_id.status.code(), Some(1));
    let listed = run(&["admin", "diga", "--data-dir", data_dir, "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("urn:diga:bfarm:00294  active"), "{listed}");
    assert!(
        listed.contains("hddt-miv-continuous-glucose-measurement"),
        "{listed}"
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("diga-vz.json")).unwrap()).unwrap();
    assert_eq!(file["format"], 1);
    let removed = run(&[
        "admin",
        "diga",
        "--data-dir",
        data_dir,
        "remove",
        "urn:diga:bfarm:00294",
    ]);
    assert!(removed.status.success());
    let again = run(&[
        "admin",
        "diga",
        "--data-dir",
        data_dir,
        "remove",
        "urn:diga:bfarm:00294",
    ]);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn admin_valuesets_load_the_guides_mivs_and_refuse_a_bad_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/../../hddt-ig");
    let loaded = run(&["admin", "valuesets", "--data-dir", data_dir, "load", guide]);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let stdout = String::from_utf8_lossy(&loaded.stdout).to_string();
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stdout.contains("hddt-miv-continuous-glucose-measurement  version 1.0.1  2 codes"),
        "{stdout}"
    );
    let shown = run(&["admin", "valuesets", "--data-dir", data_dir, "show"]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.contains("hddt-miv-continuous-glucose-measurement (served)"),
        "{shown}"
    );
    assert!(shown.contains("http://loinc.org|99504-3"), "{shown}");
    assert!(
        shown.contains("hddt-miv-blood-pressure-value (not served)"),
        "{shown}"
    );
    // A directory without the ValueSets changes nothing.
    let empty = tempfile::tempdir().unwrap();
    let refused = run(&[
        "admin",
        "valuesets",
        "--data-dir",
        data_dir,
        "load",
        empty.path().to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let still = run(&["admin", "valuesets", "--data-dir", data_dir, "show"]);
    assert!(still.status.success());
}

/// SIGKILL in the middle of reading uploads: after a restart every
/// acknowledged batch is there in full, no batch is there in part, and the
/// audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_uploads_keeps_every_acknowledged_batch_whole() {
    use medvault_client::{Client, NewAccount, Password};
    use medvault_core::ParticipantKind;
    use medvault_proto::devices::{NewDevice, Reading, UploadBatch};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = https_client(dir.path());
    let base = url::Url::parse(&format!("https://localhost:{}/", server.patient.port())).unwrap();
    let connect = |http: reqwest::Client, base: url::Url| async move {
        let ca = Client::fetch_ca(&http, &base).await.unwrap();
        Client::new(http, base, ca)
    };
    let sdk = connect(http.clone(), base.clone()).await;
    sdk.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some(("crash@example.org".to_owned(), Password::new("crash pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    let session = std::sync::Arc::new(
        sdk.login_password("crash@example.org", &Password::new("crash pw"))
            .await
            .unwrap(),
    );
    let cgm = session
        .register_device(&NewDevice {
            model: "glukko-cgm-18".into(),
            serial_number: "CRASH-1".into(),
            unit: "mg/dL".into(),
        })
        .await
        .unwrap();
    // Batch k holds the 288 readings of day k before today (UTC).
    let today = medvault_core::Clock::now(&medvault_core::SystemClock)
        .date()
        .midnight()
        .assume_utc();
    let batch = move |k: i64, device: &str| UploadBatch {
        batch_id: format!("day-{k}"),
        readings: (0..288)
            .map(|slot| Reading {
                device: device.to_owned(),
                time: (today - time::Duration::days(k + 1) + time::Duration::minutes(5 * slot))
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
                value: Some(f64::from(u32::try_from(90 + (slot + k) % 80).unwrap())),
                unit: "mg/dL".into(),
                limit: None,
            })
            .collect(),
    };
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for worker in 0..4_i64 {
        let session = session.clone();
        let acknowledged = acknowledged.clone();
        let device = cgm.id.clone();
        workers.push(tokio::spawn(async move {
            for round in 0..50_i64 {
                let k = round * 4 + worker;
                match session.upload_readings(&batch(k, &device)).await {
                    Ok(_) => acknowledged.lock().unwrap().push(k),
                    Err(_) => break, // the server died
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().unwrap().len() < 12 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the uploads did not get going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("KILL");
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let _ = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(10))).await;

    let server = Server::start(dir.path(), &[]);
    let base = url::Url::parse(&format!("https://localhost:{}/", server.patient.port())).unwrap();
    let sdk = connect(https_client(dir.path()), base).await;
    let session = sdk
        .login_password("crash@example.org", &Password::new("crash pw"))
        .await
        .unwrap();
    let export = session.export_device_data().await.unwrap();
    // Samples per day (of each chunk's start).
    let mut per_day = std::collections::BTreeMap::<i64, usize>::new();
    for entry in export["entry"].as_array().unwrap() {
        let resource = &entry["resource"];
        let Some(data) = resource["valueSampledData"]["data"].as_str() else {
            continue;
        };
        let start = time::OffsetDateTime::parse(
            resource["effectivePeriod"]["start"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        // Day k covers [today - (k + 1) days, today - k days).
        let seconds = (today - start).whole_seconds();
        let day = (seconds + 86_399) / 86_400 - 1;
        *per_day.entry(day).or_default() += data.split(' ').filter(|t| *t != "E").count();
    }
    assert!(acknowledged.len() >= 12 && per_day.len() >= acknowledged.len());
    for k in &acknowledged {
        assert_eq!(
            per_day.get(k),
            Some(&288),
            "acknowledged day {k} is not whole: {per_day:?}"
        );
    }
    for (day, samples) in &per_day {
        assert_eq!(*samples, 288, "day {day} is there in part");
    }
    server.signal("TERM");
    let _ = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30))).await;
    let verify = run(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(verify.status.success(), "{verify:?}");
}

/// Where a pairing round was when the server died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Par,
    Page,
    Login,
    Decision,
    Token,
}

/// What one worker saw: codes it got (round, code) and token responses.
#[derive(Debug, Default)]
struct Rounds {
    approved: Vec<(u32, String)>,
    redeemed: Vec<(u32, serde_json::Value)>,
    failed_at: Option<Stage>,
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut body = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        body.append_pair(name, value);
    }
    body.finish()
}

const CRASH_DIGA: &str = "urn:diga:bfarm:44444";
const CRASH_REDIRECT: &str = "https://diga.example/callback";
const CRASH_VERIFIER: &str = "crash-test-verifier-crash-test-verifier-0123456789";

/// One whole pairing of `session`'s patient; `stage` is set before each
/// request, so a failure says where the server died.
#[allow(clippy::too_many_arguments, reason = "a test helper with one caller")]
async fn pair_once(
    browser: &reqwest::Client,
    diga: &reqwest::Client,
    patient_base: &str,
    hddt_base: &str,
    session: &medvault_client::Session,
    stage: &mut Stage,
    rounds: &std::sync::Mutex<Rounds>,
    round: u32,
) -> Result<(), ()> {
    use base64::Engine as _;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(medvault_crypto::sha256(CRASH_VERIFIER.as_bytes()));
    *stage = Stage::Par;
    let pushed: serde_json::Value = diga
        .post(format!("{hddt_base}/par"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("client_id", CRASH_DIGA),
            ("response_type", "code"),
            ("code_challenge_method", "S256"),
            ("code_challenge", &challenge),
            ("redirect_uri", CRASH_REDIRECT),
            ("scope", "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement"),
        ]))
        .send()
        .await
        .map_err(|_| ())?
        .json()
        .await
        .map_err(|_| ())?;
    let request_uri = pushed["request_uri"].as_str().unwrap().to_owned();
    *stage = Stage::Page;
    let page = browser
        .get(format!(
            "{patient_base}/authorize?{}",
            form(&[("client_id", CRASH_DIGA), ("request_uri", &request_uri)])
        ))
        .send()
        .await
        .map_err(|_| ())?
        .text()
        .await
        .map_err(|_| ())?;
    let csrf = hidden_field(&page, "csrf");
    let ticket = session.pairing_ticket().await.map_err(|_| ())?;
    *stage = Stage::Login;
    let login = browser
        .post(format!("{patient_base}/authorize/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("request_uri", &request_uri),
            ("csrf", &csrf),
            ("ticket", &ticket.ticket.to_lowercase()),
        ]))
        .send()
        .await
        .map_err(|_| ())?;
    assert_eq!(login.status(), 200);
    *stage = Stage::Decision;
    let decided = browser
        .post(format!("{patient_base}/authorize/decision"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("request_uri", &request_uri),
            ("csrf", &csrf),
            ("miv", "hddt-miv-continuous-glucose-measurement"),
            ("days", "90"),
            ("decision", "approve"),
        ]))
        .send()
        .await
        .map_err(|_| ())?;
    assert_eq!(decided.status(), 303);
    let location = url::Url::parse(decided.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .unwrap();
    rounds.lock().unwrap().approved.push((round, code.clone()));
    *stage = Stage::Token;
    let response = redeem(diga, hddt_base, &code).await.map_err(|_| ())?;
    assert_eq!(response.0, 200, "{}", response.1);
    rounds.lock().unwrap().redeemed.push((round, response.1));
    Ok(())
}

async fn redeem(
    diga: &reqwest::Client,
    hddt_base: &str,
    code: &str,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let response = diga
        .post(format!("{hddt_base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", CRASH_VERIFIER),
            ("redirect_uri", CRASH_REDIRECT),
            ("client_id", CRASH_DIGA),
        ]))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// The status of a FHIR search with `token`.
async fn fhir_status(diga: &reqwest::Client, hddt_base: &str, token: &serde_json::Value) -> u16 {
    let response = diga
        .get(format!("{hddt_base}/fhir/Observation?_count=1"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        // Only ever refused as revoked: never for an issuer, key or format.
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["issue"][0]["diagnostics"], "The access token was revoked or its consent ended",
            "{body}"
        );
    }
    status
}

/// Registers the test DiGA (certificate written to `cert_dir`) in the
/// DiGA-VZ file of `data_dir`, before a server starts on it.
fn add_crash_diga(
    data_dir: &std::path::Path,
    certificate: &medvault_testkit::TestCertificate,
    cert_dir: &std::path::Path,
) {
    let cert_path = cert_dir.join("diga.pem");
    std::fs::write(&cert_path, &certificate.cert_pem).unwrap();
    let added = run(&[
        "admin",
        "diga",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "add",
        "--client-id",
        CRASH_DIGA,
        "--name",
        "Test-DiGA",
        "--redirect-uri",
        CRASH_REDIRECT,
        "--miv",
        "hddt-miv-continuous-glucose-measurement",
        "--cert",
        cert_path.to_str().unwrap(),
    ]);
    assert!(added.status.success(), "{added:?}");
}

/// The DiGA's mTLS client and a browser (no redirects followed), both
/// trusting the development CA of `data_dir`.
fn diga_clients(
    data_dir: &std::path::Path,
    certificate: &medvault_testkit::TestCertificate,
) -> (reqwest::Client, reqwest::Client) {
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(data_dir.join("tls/dev-ca.pem")).unwrap())
            .unwrap();
    let mut identity = certificate.cert_pem.clone().into_bytes();
    identity.extend(certificate.key_pem.as_bytes());
    let diga = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let browser = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (diga, browser)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_pairings_leaves_no_half_made_pairing() {
    use medvault_client::{Client, NewAccount, Password};
    use medvault_core::ParticipantKind;

    let dir = tempfile::tempdir().unwrap();
    let certificate = medvault_testkit::TestCertificate::diga("crash-diga");
    add_crash_diga(dir.path(), &certificate, dir.path());
    let clients = |dir: &std::path::Path| diga_clients(dir, &certificate);

    let server = Server::start(dir.path(), &[]);
    let patient_base = format!("https://localhost:{}", server.patient.port());
    let hddt_base = format!("https://localhost:{}", server.hddt.port());
    let base = url::Url::parse(&format!("{patient_base}/")).unwrap();
    let http = https_client(dir.path());
    let sdk = Client::new(
        http.clone(),
        base.clone(),
        Client::fetch_ca(&http, &base).await.unwrap(),
    );
    // One patient per worker: a new consent supersedes the patient's earlier one.
    let mut sessions = Vec::new();
    for worker in 0..4 {
        let email = format!("pairing-crash-{worker}@example.org");
        sdk.register(NewAccount {
            kind: ParticipantKind::Patient,
            display_name: None,
            password: Some((email.clone(), Password::new("crash pw"))),
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
        sessions.push(std::sync::Arc::new(
            sdk.login_password(&email, &Password::new("crash pw"))
                .await
                .unwrap(),
        ));
    }
    let (diga, browser) = clients(dir.path());
    let mut workers = Vec::new();
    let mut all_rounds = Vec::new();
    for session in &sessions {
        let rounds = std::sync::Arc::new(std::sync::Mutex::new(Rounds::default()));
        all_rounds.push(rounds.clone());
        let (diga, browser, session) = (diga.clone(), browser.clone(), session.clone());
        let (patient_base, hddt_base) = (patient_base.clone(), hddt_base.clone());
        workers.push(tokio::spawn(async move {
            let mut stage = Stage::Par;
            for round in 0..200 {
                if pair_once(
                    &browser,
                    &diga,
                    &patient_base,
                    &hddt_base,
                    &session,
                    &mut stage,
                    &rounds,
                    round,
                )
                .await
                .is_err()
                {
                    rounds.lock().unwrap().failed_at = Some(stage);
                    return;
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while all_rounds
        .iter()
        .map(|r| r.lock().unwrap().redeemed.len())
        .sum::<usize>()
        < 12
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pairings did not get going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("KILL");
    for worker in workers {
        worker.await.unwrap();
    }
    let _ = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(10))).await;

    // The same public URLs as before (a restarted node keeps its name; the
    // ports here are new): the tokens' issuer and audience stay valid.
    let (old_patient, old_hddt) = (patient_base.clone(), hddt_base.clone());
    let server = Server::start(
        dir.path(),
        &[
            "--public-base-url",
            &old_patient,
            "--oauth-issuer",
            &old_hddt,
            "--fhir-base-url",
            &format!("{old_hddt}/fhir"),
        ],
    );
    let hddt_base = format!("https://localhost:{}", server.hddt.port());
    let (diga, _) = clients(dir.path());
    for rounds in &all_rounds {
        let rounds = std::mem::take(&mut *rounds.lock().unwrap());
        let failed_at = rounds.failed_at.expect("every worker stopped at the kill");
        let last_redeemed = rounds.redeemed.last().map(|(round, _)| *round);
        let last_approved = rounds.approved.last().map(|(round, _)| *round);
        // Earlier consents were superseded: their tokens are refused.
        for (round, tokens) in rounds.redeemed.iter().rev().skip(1) {
            assert_eq!(
                fhir_status(&diga, &hddt_base, tokens).await,
                401,
                "round {round}"
            );
        }
        match (last_approved, last_redeemed) {
            // Approved, then died while redeeming: the approval is durable,
            // so the code works now, unless the redemption got through before
            // the kill (then it is used: invalid_grant, and nothing else).
            (Some(approved), redeemed) if redeemed != Some(approved) => {
                assert_eq!(failed_at, Stage::Token);
                let (_, code) = rounds.approved.last().unwrap();
                let (status, tokens) = redeem(&diga, &hddt_base, code).await.unwrap();
                match status {
                    200 => assert_eq!(fhir_status(&diga, &hddt_base, &tokens).await, 200),
                    400 => assert_eq!(tokens["error"], "invalid_grant", "{tokens}"),
                    other => panic!("redeeming after the restart: {other} {tokens}"),
                }
            }
            // The last round finished: its tokens work, unless the next
            // consent got through before the kill and superseded them.
            (_, Some(_)) => {
                let (_, tokens) = rounds.redeemed.last().unwrap();
                let status = fhir_status(&diga, &hddt_base, tokens).await;
                if failed_at == Stage::Decision {
                    assert!(status == 200 || status == 401, "{status}");
                } else {
                    assert_eq!(status, 200, "died at {failed_at:?}");
                }
            }
            (_, None) => assert!(matches!(
                failed_at,
                Stage::Par | Stage::Page | Stage::Login | Stage::Decision
            )),
        }
    }
    server.signal("TERM");
    let _ = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30))).await;

    // No half-made pairing in the database: every grant has its pairing and
    // its code (one transaction), and a pairing has one live grant at most.
    let database = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("medvault.db").display()
    ))
    .await
    .unwrap();
    for (what, sql) in [
        (
            "grants without a pairing",
            "SELECT COUNT(*) FROM hddt_grants g WHERE NOT EXISTS
               (SELECT 1 FROM hddt_pairings p WHERE p.pairing_id = g.pairing_id)",
        ),
        (
            "grants without a code",
            "SELECT COUNT(*) FROM hddt_grants g WHERE NOT EXISTS
               (SELECT 1 FROM hddt_codes c WHERE c.grant_id = g.id)",
        ),
        (
            "codes without a grant",
            "SELECT COUNT(*) FROM hddt_codes c WHERE NOT EXISTS
               (SELECT 1 FROM hddt_grants g WHERE g.id = c.grant_id)",
        ),
        (
            "pairings with two live grants",
            "SELECT COUNT(*) FROM (SELECT pairing_id FROM hddt_grants
               WHERE revoked_at_us IS NULL GROUP BY pairing_id HAVING COUNT(*) > 1)",
        ),
    ] {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&database).await.unwrap();
        assert_eq!(count, 0, "{what}");
    }
    let grants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hddt_grants")
        .fetch_one(&database)
        .await
        .unwrap();
    assert!(grants >= 12, "{grants} grants");
    database.close().await;
    let verify = run(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(verify.status.success(), "{verify:?}");
}

/// Two `medvault serve` processes on one PostgreSQL database (a fresh
/// schema), sharing the keys and public URLs as OPERATIONS.md says: a DiGA
/// pairs on node A, reads on node B; the patient revokes on B and A refuses
/// the DiGA's next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_share_one_postgresql_database() {
    use medvault_client::{Client, NewAccount, Password};
    use medvault_core::ParticipantKind;
    use medvault_store_postgres::test_schema::TestSchema;

    let Some(url) = TestSchema::url_from_env() else {
        eprintln!("SKIPPED two_server_processes_share_one_postgresql_database: no PostgreSQL");
        return;
    };
    let schema = TestSchema::create(&url).await.unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let database = format!("{url}{separator}options=-csearch_path%3D{}", schema.name());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let certificate = medvault_testkit::TestCertificate::diga("two-process-diga");
    for dir in [&dir_a, &dir_b] {
        add_crash_diga(dir.path(), &certificate, dir_a.path());
    }
    let node_a = Server::start(dir_a.path(), &["--database", &database]);
    // Node B gets A's keys, TLS identity and public URLs before its first start.
    for file in [
        "audit-checkpoint.key",
        "keys/participant-ca.p8",
        "keys/opaque-server-setup.bin",
        "keys/issuer-kek.bin",
        "tls/dev-ca.pem",
        "tls/dev-ca.key",
        "tls/server.pem",
        "tls/server.key",
    ] {
        let from = dir_a.path().join(file);
        if from.exists() {
            let to = dir_b.path().join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let patient_a = format!("https://localhost:{}", node_a.patient.port());
    let hddt_a = format!("https://localhost:{}", node_a.hddt.port());
    let node_b = Server::start(
        dir_b.path(),
        &[
            "--database",
            &database,
            "--public-base-url",
            &patient_a,
            "--oauth-issuer",
            &hddt_a,
            "--fhir-base-url",
            &format!("{hddt_a}/fhir"),
        ],
    );
    let patient_b = format!("https://localhost:{}", node_b.patient.port());
    let hddt_b = format!("https://localhost:{}", node_b.hddt.port());

    let (diga, browser) = diga_clients(dir_a.path(), &certificate);
    let sdk = |base: &str| {
        let http = https_client(dir_a.path());
        let base = url::Url::parse(&format!("{base}/")).unwrap();
        async move {
            let ca = Client::fetch_ca(&http, &base).await.unwrap();
            Client::new(http, base, ca)
        }
    };
    let on_a = sdk(&patient_a).await;
    on_a.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some(("two-nodes@example.org".into(), Password::new("two pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    let session_a = on_a
        .login_password("two-nodes@example.org", &Password::new("two pw"))
        .await
        .unwrap();
    // Pairing on A.
    let rounds = std::sync::Mutex::new(Rounds::default());
    let mut stage = Stage::Par;
    pair_once(
        &browser, &diga, &patient_a, &hddt_a, &session_a, &mut stage, &rounds, 0,
    )
    .await
    .expect("pairing on node A");
    let tokens = rounds.lock().unwrap().redeemed.pop().unwrap().1;
    // Data on B, with A's token.
    assert_eq!(fhir_status(&diga, &hddt_b, &tokens).await, 200);
    assert_eq!(fhir_status(&diga, &hddt_a, &tokens).await, 200);
    // The patient, logged in on B, revokes; A refuses the next request.
    let session_b = sdk(&patient_b)
        .await
        .login_password("two-nodes@example.org", &Password::new("two pw"))
        .await
        .unwrap();
    session_b
        .unpair(tokens["sub"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(fhir_status(&diga, &hddt_a, &tokens).await, 401);
    assert_eq!(fhir_status(&diga, &hddt_b, &tokens).await, 401);
    for node in [node_a, node_b] {
        node.signal("TERM");
        let status = tokio::task::spawn_blocking(move || node.wait(Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
    drop(schema);
}
