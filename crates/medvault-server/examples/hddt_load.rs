//! A load generator for the HDDT token endpoint, run against a separately
//! started `medvault serve` (so client and server do not share a process):
//! it pairs `--grants` patients with one DiGA (registration, PAR, consent
//! page with a ticket, code, PKCE token), then refreshes every grant's token
//! chain as fast as it can over keep-alive mTLS for `--seconds`, and prints
//! token responses per second with latency percentiles.
//!
//! ```sh
//! cargo run --release -p medvault-server --example hddt_load -- \
//!   --patient-url https://localhost:8443/ --hddt-url https://localhost:9443/ \
//!   --ca data/tls/dev-ca.pem --cert diga.pem --key diga.key \
//!   --client-id urn:diga:bfarm:12345 --redirect-uri https://diga.example/cb
//! ```
//!
//! The server needs `hddt_rate_per_client` and `login_free_address_failures`
//! above what the run sends (every patient logs in from one address).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::disallowed_methods,
    missing_docs,
    reason = "a command-line load generator: it measures with the wall clock and stops on the first setup error"
)]

use std::time::{Duration, Instant};

use medvault_client::{Client, NewAccount, Password};
use medvault_core::ParticipantKind;

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const SCOPE: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement";

struct Args {
    patient_url: url::Url,
    hddt_url: url::Url,
    ca: Vec<u8>,
    identity: Vec<u8>,
    client_id: String,
    redirect_uri: String,
    grants: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut values = std::collections::HashMap::new();
    let mut raw = std::env::args().skip(1);
    while let (Some(name), Some(value)) = (raw.next(), raw.next()) {
        values.insert(name.trim_start_matches("--").to_owned(), value);
    }
    let get = |name: &str| {
        values
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("--{name} is required"))
    };
    let cert = std::fs::read(get("cert")).unwrap();
    let key = std::fs::read(get("key")).unwrap();
    Args {
        patient_url: url::Url::parse(&get("patient-url")).unwrap(),
        hddt_url: url::Url::parse(&get("hddt-url")).unwrap(),
        ca: std::fs::read(get("ca")).unwrap(),
        identity: [cert, key].concat(),
        client_id: get("client-id"),
        redirect_uri: get("redirect-uri"),
        grants: values.get("grants").map_or(32, |v| v.parse().unwrap()),
        seconds: values.get("seconds").map_or(20, |v| v.parse().unwrap()),
    }
}

fn encode(form: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in form {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

async fn post(client: &reqwest::Client, url: url::Url, form: &[(&str, &str)]) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(form))
        .send()
        .await
        .unwrap()
}

async fn pair(
    args: &Args,
    sdk: &Client,
    browser: &reqwest::Client,
    diga: &reqwest::Client,
    index: usize,
) -> String {
    let email = format!("load-{index}-{}@example.org", std::process::id());
    sdk.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some((email.clone(), Password::new("load test pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    let patient = sdk
        .login_password(&email, &Password::new("load test pw"))
        .await
        .unwrap();
    let pushed: serde_json::Value = post(
        diga,
        args.hddt_url.join("par").unwrap(),
        &[
            ("client_id", &args.client_id),
            ("response_type", "code"),
            ("code_challenge_method", "S256"),
            ("code_challenge", CHALLENGE),
            ("redirect_uri", &args.redirect_uri),
            ("scope", SCOPE),
            ("state", "load"),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let mut authorize = args.patient_url.join("authorize").unwrap();
    authorize.set_query(Some(&encode(&[
        ("client_id", &args.client_id),
        ("request_uri", pushed["request_uri"].as_str().unwrap()),
    ])));
    let page = browser
        .get(authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (request_uri, csrf) = (hidden(&page, "request_uri"), hidden(&page, "csrf"));
    let ticket = patient.pairing_ticket().await.unwrap();
    post(
        browser,
        args.patient_url.join("authorize/login").unwrap(),
        &[
            ("request_uri", &request_uri),
            ("csrf", &csrf),
            ("ticket", &ticket.ticket),
        ],
    )
    .await;
    let decided = post(
        browser,
        args.patient_url.join("authorize/decision").unwrap(),
        &[
            ("request_uri", &request_uri),
            ("csrf", &csrf),
            ("miv", "hddt-miv-continuous-glucose-measurement"),
            ("days", "90"),
            ("decision", "approve"),
        ],
    )
    .await;
    let location = url::Url::parse(decided.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(name, _)| name == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: serde_json::Value = post(
        diga,
        args.hddt_url.join("token").unwrap(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", &args.redirect_uri),
            ("client_id", &args.client_id),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::main]
async fn main() {
    let args = args();
    let roots = reqwest::Certificate::from_pem_bundle(&args.ca).unwrap();
    let browser = reqwest::Client::builder()
        .tls_certs_only(roots.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let diga = reqwest::Client::builder()
        .tls_certs_only(roots)
        .identity(reqwest::Identity::from_pem(&args.identity).unwrap())
        .pool_max_idle_per_host(args.grants)
        .build()
        .unwrap();
    let pinned = Client::fetch_ca(&browser, &args.patient_url).await.unwrap();
    let sdk = Client::new(browser.clone(), args.patient_url.clone(), pinned);
    let mut chains = Vec::new();
    for index in 0..args.grants {
        chains.push(pair(&args, &sdk, &browser, &diga, index).await);
    }
    println!(
        "paired {} grants; refreshing for {} s",
        chains.len(),
        args.seconds
    );
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let token_url = args.hddt_url.join("token").unwrap();
    let started = Instant::now();
    let workers: Vec<_> = chains
        .into_iter()
        .map(|mut token| {
            let diga = diga.clone();
            let url = token_url.clone();
            let client_id = args.client_id.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let response = post(
                        &diga,
                        url.clone(),
                        &[
                            ("grant_type", "refresh_token"),
                            ("refresh_token", &token),
                            ("client_id", &client_id),
                        ],
                    )
                    .await;
                    if response.status().is_success() {
                        let body: serde_json::Value = response.json().await.unwrap();
                        token = body["refresh_token"].as_str().unwrap().to_owned();
                        latencies.push(sent.elapsed());
                    } else {
                        failures += 1;
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (mut own, failed) = worker.await.unwrap();
        latencies.append(&mut own);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{} token responses in {elapsed:.1} s: {:.0}/s; {failures} failures; latency p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(0.5),
        percentile(0.99)
    );
}
