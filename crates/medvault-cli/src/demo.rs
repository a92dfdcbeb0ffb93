//! `medvault demo`: the whole system once, on a fresh machine, as each actor
//! in turn.
//!
//! It starts a development server in-process (embedded SQLite in a new data
//! directory), then acts as a patient, an institution, a health care
//! professional and a DiGA over the same HTTPS and mTLS interfaces their own
//! software uses (the SDK, and plain HTTP for the DiGA and the patient's
//! browser). Each step prints one line with its outcome and checks what it
//! got: a step that does not behave as it must ends the demo with exit
//! status 1. `--keep` leaves the server running with the demo data and writes
//! CLI profiles for exploring it.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;
use medvault_client::diga::DigaClient;
use medvault_client::{Client, ClientError, NewAccount, Password};
use medvault_core::{Clock as _, DigaClientId, InstitutionKind, Miv, ParticipantKind, SystemClock};
use medvault_crypto::SoftwareKey;
use medvault_oauth::{DigaRegistry, DigaRegistryEntry, DigaStatus};
use medvault_proto::devices::{NewDevice, UploadBatch};
use serde_json::{Value, json};

use crate::diga::Pairing;

/// `medvault demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the server running with the demo data (stop with Ctrl-C), and
    /// write CLI profiles for the patient and the DiGA into the data directory.
    #[arg(long)]
    keep: bool,
    /// Data directory (must be new or empty) [default: a new directory under
    /// the system's temporary directory, removed at the end unless --keep].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Days of simulated CGM data (7 to 30: the CGM summary covers 7 days
    /// at least, as the guide says).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(7..=30))]
    days: u32,
    /// Patient listener address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// HDDT (mTLS) listener address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    hddt_listen: String,
}

/// The demo DiGA's client id (a DiGA-VZ id no real DiGA has: 9 is not a
/// BfArM number range in use).
const DIGA_ID: &str = "urn:diga:bfarm:99901";
/// Where the demo DiGA's authorization responses go; the demo reads the code
/// from the consent page's redirect, nothing is sent there.
const DIGA_REDIRECT: &str = "https://diga.example/callback";
/// The CGM MIV scope the DiGA asks for.
const CGM_SCOPE: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement";
/// Readings per upload batch.
const BATCH: usize = 2_000;

/// Runs the demo; exit status 0 only if every step behaved as it must.
pub fn run(args: DemoArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("medvault: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            println!("FAILED: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Numbered outcome lines.
struct Steps {
    done: usize,
}

impl Steps {
    fn ok(&mut self, title: &str, outcome: impl std::fmt::Display) {
        self.done += 1;
        println!("{:>2}. {title}: {outcome}", self.done);
        let _ = std::io::stdout().flush();
    }
}

/// A progress bar on a terminal's stderr; silent otherwise.
struct Progress {
    label: &'static str,
    total: usize,
    shown: bool,
}

impl Progress {
    fn new(label: &'static str, total: usize) -> Self {
        Self {
            label,
            total: total.max(1),
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn set(&self, done: usize) {
        if !self.shown {
            return;
        }
        const WIDTH: usize = 30;
        let filled = done.min(self.total) * WIDTH / self.total;
        eprint!(
            "\r    {} [{}{}] {done}/{}",
            self.label,
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.shown {
            eprint!("\r{}\r", " ".repeat(60 + self.label.len()));
            let _ = std::io::stderr().flush();
        }
    }
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    medvault_crypto::random_fill(&mut buffer).map_err(|_| anyhow!("no randomness"))?;
    Ok(hex::encode(buffer))
}

/// The data directory: a new one, or the given one if it is empty.
fn data_directory(given: Option<PathBuf>) -> anyhow::Result<(PathBuf, bool)> {
    match given {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(&dir)
                    .with_context(|| format!("{}", dir.display()))?
                    .next()
                    .is_some()
            {
                bail!(
                    "{} is not empty: the demo starts from nothing (give a new directory)",
                    dir.display()
                );
            }
            Ok((dir, false))
        }
        None => {
            let dir = std::env::temp_dir().join(format!("medvault-demo-{}", random_hex(6)?));
            Ok((dir, true))
        }
    }
}

/// The value of a hidden form field on a server-rendered page.
fn hidden(html: &str, name: &str) -> anyhow::Result<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .ok_or_else(|| anyhow!("the page has no {name} field"))?;
    html.get(start + marker.len()..)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the page's {name} field is malformed"))
}

fn form_body(form: &[(&str, &str)]) -> String {
    let mut body = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in form {
        body.append_pair(name, value);
    }
    body.finish()
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A self-signed ECDSA P-256 client certificate (PEM) and its PKCS#8 key.
fn diga_certificate(name: &str) -> anyhow::Result<(String, String, Vec<u8>)> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        KeyUsagePurpose,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, name);
    params.distinguished_name = subject;
    let now = SystemClock.now();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let certificate = params.self_signed(&key)?;
    Ok((
        certificate.pem(),
        key.serialize_pem(),
        certificate.der().to_vec(),
    ))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (data_dir, temporary) = data_directory(args.data_dir)?;
    let mut steps = Steps { done: 0 };
    let outcome = act(
        &mut steps,
        &data_dir,
        args.days,
        args.keep,
        &args.listen,
        &args.hddt_listen,
    )
    .await;
    if temporary && !args.keep {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    outcome?;
    println!("demo complete: {} steps behaved as they must", steps.done);
    Ok(())
}

#[allow(
    clippy::too_many_lines,
    reason = "the demo is one story told in order; each step is a few lines"
)]
async fn act(
    steps: &mut Steps,
    data_dir: &Path,
    days: u32,
    keep: bool,
    listen: &str,
    hddt_listen: &str,
) -> anyhow::Result<()> {
    // 1. The server.
    let config = medvault_server::Config::from_raw(medvault_server::RawConfig {
        data_dir: Some(data_dir.to_owned()),
        listen: Some(listen.to_owned()),
        hddt_listen: Some(hddt_listen.to_owned()),
        dev: Some(true),
        ..medvault_server::RawConfig::default()
    })
    .map_err(|error| anyhow!("configuration: {error}"))?;
    let running = medvault_server::start(config, Arc::new(SystemClock))
        .await
        .context("the server did not start")?;
    let ca_path = running
        .dev_ca
        .clone()
        .ok_or_else(|| anyhow!("development mode made no CA"))?;
    let ca_pem = std::fs::read_to_string(&ca_path).context("the development CA")?;
    let patient_base = url::Url::parse(&format!(
        "https://localhost:{}/",
        running.patient_addr.port()
    ))?;
    let hddt_base = format!("https://localhost:{}", running.hddt_addr.port());
    steps.ok(
        "server started",
        format!(
            "patient API {patient_base} , HDDT (mTLS) {hddt_base} , SQLite in {}",
            data_dir.display()
        ),
    );
    let result = story(
        steps,
        &running,
        data_dir,
        &ca_path,
        &ca_pem,
        &patient_base,
        &hddt_base,
        days,
        keep,
    )
    .await;
    if result.is_ok() && keep {
        println!();
        println!("the server keeps running with the demo data (Ctrl-C stops it):");
        println!("  patient API  {patient_base}  (portal: {patient_base}portal)");
        println!("  HDDT (mTLS)  {hddt_base}  (FHIR: {hddt_base}/fhir)");
        println!("  CA           {}", ca_path.display());
        println!(
            "  try: medvault devices list --profile {}",
            data_dir.join("demo/patient").display()
        );
        println!(
            "       medvault diga --state-file {} fetch 'Observation?_count=5'",
            data_dir.join("demo/diga-pairing.json").display()
        );
        println!(
            "       medvault portal ticket --profile {}",
            data_dir.join("demo/patient").display()
        );
        wait_for_ctrl_c().await;
    }
    running.shutdown().await;
    result
}

async fn wait_for_ctrl_c() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut terminate), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Everything after the server start.
#[allow(
    clippy::too_many_arguments,
    clippy::too_many_lines,
    reason = "the demo is one story told in order; each step is a few lines"
)]
async fn story(
    steps: &mut Steps,
    running: &medvault_server::RunningServer,
    data_dir: &Path,
    ca_path: &Path,
    ca_pem: &str,
    patient_base: &url::Url,
    hddt_base: &str,
    days: u32,
    keep: bool,
) -> anyhow::Result<()> {
    let tls = || -> anyhow::Result<reqwest::ClientBuilder> {
        Ok(reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?]))
    };
    let http = tls()?.build()?;
    let ca = Client::fetch_ca(&http, patient_base)
        .await
        .context("the participant CA")?;
    let sdk = Client::new(http, patient_base.clone(), ca.clone());
    let demo_id = random_hex(4)?;

    // 2. The patient: password, SuperPIN, TANs.
    let email = format!("patient-{demo_id}@demo.example.org");
    let password = format!("demo-{}", random_hex(12)?);
    let patient = sdk
        .register(NewAccount {
            kind: ParticipantKind::Patient,
            display_name: None,
            password: Some((email.clone(), Password::new(&password))),
            tans: 5,
            software_certificate: false,
        })
        .await
        .context("patient registration")?;
    ensure!(
        patient.tans.len() == 5,
        "the patient got {} TANs, not 5",
        patient.tans.len()
    );
    let first_tan = patient.tans.first().ok_or_else(|| anyhow!("no TAN"))?;
    sdk.login_tan(patient.uid, 1, first_tan)
        .await
        .context("login with TAN 1")?
        .logout()
        .await?;
    ensure!(
        sdk.login_tan(patient.uid, 1, first_tan).await.is_err(),
        "TAN 1 worked twice"
    );
    sdk.login_superpin(patient.uid, &patient.superpin)
        .await
        .context("login with the SuperPIN")?
        .logout()
        .await?;
    let mut p = sdk
        .login_password(&email, &Password::new(&password))
        .await
        .context("login with the password")?;
    steps.ok(
        "patient registered",
        format!(
            "UID {}; password (OPAQUE), SuperPIN and 5 TANs; TAN 1 logged in once and was refused the second time",
            patient.uid
        ),
    );

    // 3. The institution and the health care professional.
    let practice = sdk
        .register(NewAccount {
            kind: ParticipantKind::Institution(InstitutionKind::Practice),
            display_name: Some("Praxis am Demoplatz".to_owned()),
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .context("institution registration")?;
    let i = sdk
        .login_superpin(practice.uid, &practice.superpin)
        .await
        .context("institution login")?;
    let doctor = sdk
        .register(NewAccount {
            kind: ParticipantKind::HealthCareProfessional,
            display_name: Some("Dr. med. Demo Diabetologin".to_owned()),
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .context("HCP registration")?;
    let h = sdk
        .login_superpin(doctor.uid, &doctor.superpin)
        .await
        .context("HCP login")?;
    let entry = p
        .directory_entry(doctor.uid)
        .await
        .context("the HCP's directory entry")?;
    steps.ok(
        "institution and HCP registered",
        format!(
            "practice {}, HCP {}; the HCP's root key is certified by the pinned CA (checked by the patient's SDK, kind {})",
            practice.uid, doctor.uid, entry.kind
        ),
    );

    // 4. Identity proofing and the Patient Credential.
    p.invite(practice.uid)
        .await
        .context("invite the practice")?;
    i.accept(patient.uid).await.context("accept the patient")?;
    let code = i
        .record_proofing(patient.uid, "in-person", "id-card")
        .await
        .context("record the proofing")?;
    let device_key = SoftwareKey::generate().map_err(|_| anyhow!("device key"))?;
    let issued = p
        .request_patient_credential(&device_key, &code.code)
        .await
        .context("the Patient Credential")?;
    steps.ok(
        "institution proofed the patient; Patient Credential issued",
        "PatientCredential at IAL2, bound to the patient's device key, signature checked against the practice's did:web document",
    );

    // 5. IAL2 login.
    let presented = p
        .present_patient_credential(&device_key, &issued.credential)
        .await
        .context("presenting the credential")?;
    ensure!(
        presented.assurance == "IAL2",
        "the session is at {}, not IAL2",
        presented.assurance
    );
    ensure!(p.whoami().await?.assurance == "IAL2", "whoami is not IAL2");
    steps.ok(
        "patient logged in with the credential",
        "session lifted to IAL2 by a presentation over a fresh server nonce",
    );

    // 6. The DiGA in the DiGA-VZ with a new self-signed certificate.
    let (cert_pem, key_pem, cert_der) = diga_certificate("Demo-DiGA GlukoCoach")?;
    let demo_dir = data_dir.join("demo");
    std::fs::create_dir_all(&demo_dir)?;
    let cert_path = demo_dir.join("diga.pem");
    let key_path = demo_dir.join("diga.key");
    std::fs::write(&cert_path, &cert_pem)?;
    crate::user::write_private(&key_path, key_pem.as_bytes())?;
    let mut registry = DigaRegistry::default();
    registry
        .upsert(
            DigaRegistryEntry {
                client_id: DigaClientId::parse(DIGA_ID).ok_or_else(|| anyhow!("client id"))?,
                name: "GlukoCoach (Demo-DiGA)".to_owned(),
                status: DigaStatus::Active,
                redirect_uri: DIGA_REDIRECT.to_owned(),
                mivs: vec![Miv::ContinuousGlucose],
                certificates: vec![cert_der],
            },
            SystemClock.now().unix_timestamp(),
        )
        .map_err(|error| anyhow!("DiGA-VZ entry: {error}"))?;
    std::fs::write(
        data_dir.join(crate::registry::REGISTRY_FILE),
        registry.to_json(),
    )?;
    medvault_server::hddt::refresh_registry(&running.state)
        .await
        .map_err(|error| anyhow!("loading the DiGA-VZ: {error}"))?;
    steps.ok(
        "DiGA registered",
        format!("{DIGA_ID} in the DiGA-VZ with a new self-signed ECDSA P-256 client certificate, CGM MIV"),
    );

    // 7. 14 days of CGM data.
    let device = p
        .register_device(&NewDevice {
            model: "glukko-cgm-20".to_owned(),
            serial_number: format!("DEMO-{demo_id}"),
            unit: "mg/dL".to_owned(),
        })
        .await
        .context("registering the CGM")?;
    let model = medvault_fhir::catalogue::model(&device.model)
        .ok_or_else(|| anyhow!("the CGM's model is not in the catalogue"))?;
    let end = SystemClock.now() - time::Duration::minutes(1);
    let series = medvault_fhir::simulate::cgm_series(
        &device.id,
        model,
        medvault_fhir::catalogue::GlucoseUnit::MgPerDl,
        end,
        days,
        7,
    );
    let batches = series.len().div_ceil(BATCH);
    let progress = Progress::new("upload", batches);
    let mut stored = 0i64;
    for (index, part) in series.chunks(BATCH).enumerate() {
        let receipt = p
            .upload_readings(&UploadBatch {
                batch_id: format!("demo-{demo_id}-{index}"),
                readings: part.to_vec(),
            })
            .await
            .with_context(|| format!("batch {} of {batches}", index + 1))?;
        ensure!(!receipt.replayed, "a new batch was taken for a replay");
        stored += receipt.readings;
        progress.set(index + 1);
    }
    progress.finish();
    ensure!(
        usize::try_from(stored).ok() == Some(series.len()),
        "{stored} of {} readings stored",
        series.len()
    );
    // A retry of the last batch stores nothing twice.
    if let Some(last) = series.chunks(BATCH).last() {
        let replay = p
            .upload_readings(&UploadBatch {
                batch_id: format!("demo-{demo_id}-{}", batches - 1),
                readings: last.to_vec(),
            })
            .await?;
        ensure!(replay.replayed, "a retried batch was stored again");
    }
    steps.ok(
        "CGM data uploaded",
        format!(
            "{} readings over {days} days ({} model, one per {} s) in {batches} batches; a retried batch was acknowledged, not stored twice",
            series.len(),
            model.name,
            model.period_secs
        ),
    );

    // 8. The DiGA pairs: PAR, consent, PKCE, token (the SDK's DiGA client).
    let diga = crate::diga::client(&cert_path, &key_path, Some(ca_path), false)?;
    let metadata = diga.discover(hddt_base).await.context("metadata")?;
    let pending = diga
        .push_authorization(&metadata, DIGA_ID, DIGA_REDIRECT, CGM_SCOPE, None)
        .await
        .context("PAR")?;
    let request_uri = pending
        .authorize_url
        .query_pairs()
        .find(|(name, _)| name == "request_uri")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| anyhow!("the authorization URL has no request_uri"))?;
    // The patient's browser: consent page, one-time ticket login, approval.
    let browser = tls()?.redirect(reqwest::redirect::Policy::none()).build()?;
    let page = browser.get(pending.authorize_url.clone()).send().await?;
    ensure!(page.status() == 200, "consent page: {}", page.status());
    let page = page.text().await?;
    ensure!(
        page.contains("GlukoCoach"),
        "the consent page does not name the DiGA"
    );
    let csrf = hidden(&page, "csrf")?;
    let ticket = p.pairing_ticket().await.context("a consent ticket")?;
    let login = browser
        .post(patient_base.join("authorize/login")?)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("request_uri", &request_uri),
            ("csrf", &csrf),
            ("ticket", &ticket.ticket.to_lowercase()),
        ]))
        .send()
        .await?;
    ensure!(login.status() == 200, "consent login: {}", login.status());
    let decided = browser
        .post(patient_base.join("authorize/decision")?)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("request_uri", &request_uri),
            ("csrf", &csrf),
            ("miv", Miv::ContinuousGlucose.value_set_id()),
            ("days", "90"),
            ("decision", "approve"),
        ]))
        .send()
        .await?;
    ensure!(
        decided.status() == 303,
        "consent decision: {}",
        decided.status()
    );
    let location = decided
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| anyhow!("the consent sent the browser nowhere"))?;
    let landed = url::Url::parse(location)?;
    let code =
        DigaClient::code_from_redirect(&metadata, &pending, &landed).context("the redirect")?;
    let tokens = diga
        .redeem_code(&metadata, DIGA_ID, DIGA_REDIRECT, &code, &pending.verifier)
        .await
        .context("token")?;
    let access_token = tokens.access_token.clone();
    let pairing_id = tokens.pairing_id.clone();
    ensure!(
        pairing_id.len() == 64,
        "the token response lacks a Pairing ID"
    );
    // The same code a second time is refused.
    let again = diga
        .redeem_code(&metadata, DIGA_ID, DIGA_REDIRECT, &code, &pending.verifier)
        .await;
    ensure!(
        again.as_ref().err().and_then(ClientError::status) == Some(400),
        "a used code was redeemed again ({again:?})"
    );
    steps.ok(
        "DiGA paired",
        format!(
            "PAR over mTLS, consent with a one-time ticket, code + PKCE S256 -> Pairing ID {}…, scope {}",
            pairing_id.get(..12).unwrap_or_default(),
            tokens.scope
        ),
    );

    // 9. The DiGA pages through the Observations.
    let fhir_base = format!("{hddt_base}/fhir");
    let mut next = Some(format!("{fhir_base}/Observation?_count=50&_sort=date"));
    let mut observations = 0usize;
    let mut samples = 0usize;
    let mut pages = 0usize;
    let mut last_start = String::new();
    let mut ids = std::collections::HashSet::new();
    let expected_pages = (usize::try_from(days).unwrap_or(1) * 24).div_ceil(50) + 1;
    let progress = Progress::new("pages", expected_pages);
    while let Some(url) = next.take() {
        let bundle = diga.fhir_get(&url, &access_token).await.context("search")?;
        pages += 1;
        progress.set(pages);
        for entry in bundle
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let resource = entry.get("resource").unwrap_or(&Value::Null);
            if text(resource, "/resourceType") != "Observation" {
                continue;
            }
            observations += 1;
            ensure!(
                ids.insert(text(resource, "/id").to_owned()),
                "an Observation came twice"
            );
            ensure!(
                resource.get("subject").is_none(),
                "an Observation names a subject"
            );
            let start = text(resource, "/effectivePeriod/start").to_owned();
            ensure!(start >= last_start, "the Observations are out of order");
            last_start = start;
            samples += text(resource, "/valueSampledData/data")
                .split(' ')
                .filter(|token| !token.is_empty() && *token != "E")
                .count();
        }
        next = bundle
            .get("link")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|link| text(link, "/relation") == "next")
            .map(|link| text(link, "/url").to_owned());
    }
    progress.finish();
    ensure!(
        samples == series.len(),
        "the DiGA saw {samples} readings of {} uploaded",
        series.len()
    );
    steps.ok(
        "DiGA paged through the Observations",
        format!(
            "{observations} CGM chunks (valueSampledData) on {pages} page(s) of up to 50: all {samples} readings exactly once, in order, no subject"
        ),
    );

    // 10. The CGM summary.
    let period_start = (end - time::Duration::days(i64::from(days)))
        .format(&time::format_description::well_known::Rfc3339)?;
    let period_end = end.format(&time::format_description::well_known::Rfc3339)?;
    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "effectivePeriodStart", "valueDateTime": period_start},
            {"name": "effectivePeriodEnd", "valueDateTime": period_end},
        ]
    });
    let summary = diga
        .cgm_summary(&fhir_base, &access_token, &parameters)
        .await
        .context("summary")?;
    ensure!(
        text(&summary, "/resourceType") == "Bundle",
        "the summary is not a Bundle: {}",
        text(&summary, "/resourceType")
    );
    let metric = |code: &str| -> Option<String> {
        summary
            .get("entry")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(|entry| entry.get("resource"))
            .find(|resource| text(resource, "/code/coding/0/code") == code)
            .and_then(|resource| resource.get("valueQuantity"))
            .map(|quantity| {
                format!(
                    "{} {}",
                    quantity
                        .get("value")
                        .map(Value::to_string)
                        .unwrap_or_default(),
                    text(quantity, "/code")
                )
            })
    };
    let mean = metric("97507-8").ok_or_else(|| anyhow!("the summary has no mean glucose"))?;
    let gmi = metric("97506-0").unwrap_or_else(|| "-".to_owned());
    steps.ok(
        "DiGA asked for the CGM summary",
        format!("$hddt-cgm-summary over {days} days: mean glucose {mean}, GMI {gmi}"),
    );

    // 11. The patient seals the summary to the HCP, who opens it.
    p.invite(doctor.uid).await.context("invite the HCP")?;
    h.accept(patient.uid).await.context("the HCP accepts")?;
    let body = serde_json::to_vec_pretty(&summary)?;
    let document = p
        .send_document(
            &[doctor.uid],
            "CGM summary from my DiGA",
            "application/fhir+json",
            &body,
        )
        .await
        .context("sealing the summary")?;
    let listed = h.documents().await.context("the HCP's documents")?;
    ensure!(
        listed
            .iter()
            .any(|info| info.id == document && info.sender == patient.uid),
        "the HCP does not see the document"
    );
    let opened = h.open_document(document).await.context("opening")?;
    ensure!(
        opened.body.as_slice() == body.as_slice(),
        "the opened document differs"
    );
    steps.ok(
        "patient sealed the summary to the HCP, who opened it",
        format!(
            "{} bytes, HPKE to the HCP's certified root key, signed by the patient; the server stored ciphertext only",
            body.len()
        ),
    );

    // 12. Revocation.
    if keep {
        let profile = data_dir.join("demo/patient");
        crate::user::write_profile(&profile, patient_base, Some(ca_pem), &ca, &p)?;
        let pairing = Pairing {
            server: metadata.issuer.clone(),
            token_endpoint: metadata.token_endpoint.clone(),
            revocation_endpoint: metadata.revocation_endpoint.clone(),
            client_id: DIGA_ID.to_owned(),
            client_cert: cert_path.clone(),
            client_key: key_path.clone(),
            tls_ca: Some(ca_path.to_owned()),
            pairing_id: pairing_id.clone(),
            scope: tokens.scope.clone(),
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
        };
        crate::diga::save(&data_dir.join("demo/diga-pairing.json"), &pairing)?;
        steps.ok(
            "pairing kept for exploring",
            "--keep: the patient does not revoke it; CLI profiles are in the data directory",
        );
    } else {
        p.unpair(&pairing_id)
            .await
            .context("revoking the pairing")?;
        let refused = diga
            .fhir_get(&format!("{fhir_base}/Observation?_count=1"), &access_token)
            .await;
        let Err(ClientError::Api {
            status: 401,
            detail,
            ..
        }) = refused
        else {
            bail!("after the revocation the DiGA got {refused:?}, not 401");
        };
        steps.ok(
            "patient revoked the pairing",
            format!(
                "the DiGA's next request: 401 \"{}\"",
                detail.unwrap_or_default()
            ),
        );
    }

    // 13. The patient's audit trail.
    let mut options = medvault_client::AuditOptions {
        after: None,
        limit: Some(200),
        event_type: None,
        all: false,
        subject: None,
    };
    let mut entries = Vec::new();
    loop {
        let page = p.audit(&options).await.context("the audit trail")?;
        entries.extend(page.entries);
        match page.next_after {
            Some(after) => options.after = Some(after),
            None => break,
        }
    }
    for wanted in ["hddt.pairing", "hddt.unpairing"] {
        if wanted == "hddt.unpairing" && keep {
            continue;
        }
        ensure!(
            entries.iter().any(|entry| entry.event_type == wanted),
            "the audit trail has no {wanted}"
        );
    }
    steps.ok(
        "the patient's audit trail",
        format!("{} entries:", entries.len()),
    );
    for entry in &entries {
        println!(
            "      {:>5}  {}  {:<28} {:<8} {}",
            entry.seq, entry.recorded_at, entry.event_type, entry.outcome, entry.actor
        );
    }
    if keep {
        println!("      (patient login for the portal and CLI: {email} / {password})");
    }
    Ok(())
}
