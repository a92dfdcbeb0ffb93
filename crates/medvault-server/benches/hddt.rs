//! HDDT authorization server cost, next to the same run's ceilings:
//!
//! * `/health over mTLS`: the plain-HTTPS "hello" of the HDDT listener
//!   (keep-alive, client certificate), sequential and 32 concurrent;
//! * `/par`: a pushed request checked against the registry and stored;
//! * `/token` (code): code lookup, PKCE, one redemption transaction, two
//!   ES256 signatures;
//! * `/token` (refresh): refresh-token verification, the rotation
//!   transaction, two signatures; sequential and 32 grants concurrently
//!   (token responses per second = 1 / reported time);
//! * access-token validation in-process (signature, claims, registry, the
//!   grant from the database), next to a raw ES256 verify.
//!
//! On SQLite every code redemption and rotation is a durable transaction
//! (`synchronous = FULL`). `MEDVAULT_BENCH_BACKEND=postgres` (with
//! `MEDVAULT_TEST_POSTGRES_URL`) runs the same against PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    missing_docs,
    reason = "benchmark harness: iter_custom times with the wall clock"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use medvault_client::{NewAccount, Password, Session};
use medvault_core::{DigaClientId, Miv, ParticipantKind};
use medvault_crypto::SoftwareKey;
use medvault_crypto::did::P256PublicKey;
use medvault_oauth::{DigaRegistryEntry, DigaStatus};
use medvault_testkit::hddt::{self, VERIFIER};
use medvault_testkit::{TestCertificate, TestServer};

const DIGA: &str = "urn:diga:bfarm:12345";
const REDIRECT: &str = "https://diga.example/callback";
const SCOPE: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement patient/Device.rs patient/DeviceMetric.rs";
const CONCURRENCY: usize = 32;

struct Bench {
    server: TestServer,
    diga: TestCertificate,
    client: reqwest::Client,
    patient: Session,
}

async fn setup() -> Bench {
    // The test clock stands still, so no bucket refills: a limit no run reaches.
    // MEDVAULT_BENCH_BACKEND=postgres (with MEDVAULT_TEST_POSTGRES_URL) runs
    // the same on PostgreSQL.
    let backend = match std::env::var("MEDVAULT_BENCH_BACKEND").as_deref() {
        Ok("postgres") => medvault_testkit::Backend::Postgres,
        _ => medvault_testkit::Backend::Sqlite,
    };
    let server = TestServer::start_with(backend, |raw| {
        raw.hddt_rate_per_client = Some(1_000_000);
        // 33 patients log in from 127.0.0.1.
        raw.login_free_address_failures = Some(100_000);
    })
    .await
    .unwrap();
    let diga = TestCertificate::diga("bench-diga");
    hddt::install_registry(
        &server,
        vec![DigaRegistryEntry {
            client_id: DigaClientId::parse(DIGA).unwrap(),
            name: "Bench DiGA".to_owned(),
            status: DigaStatus::Active,
            redirect_uri: REDIRECT.to_owned(),
            mivs: vec![Miv::ContinuousGlucose],
            certificates: vec![diga.der.clone()],
        }],
    )
    .await;
    let sdk = server.sdk();
    sdk.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some(("bench@example.org".to_owned(), Password::new("bench pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    let patient = sdk
        .login_password("bench@example.org", &Password::new("bench pw"))
        .await
        .unwrap();
    let client = server.client(Some(&diga));
    Bench {
        server,
        diga,
        client,
        patient,
    }
}

async fn code(bench: &Bench) -> String {
    code_for(bench, &bench.patient).await
}

async fn code_for(bench: &Bench, patient: &Session) -> String {
    let (status, pushed) = hddt::post_form(
        &bench.server,
        &bench.client,
        "/par",
        &hddt::par_form(DIGA, REDIRECT, SCOPE),
    )
    .await;
    assert_eq!(status, 201);
    let (_, page) =
        hddt::open_consent(&bench.server, DIGA, pushed["request_uri"].as_str().unwrap()).await;
    let location = hddt::consent(
        &bench.server,
        patient,
        &page,
        &[
            ("miv", "hddt-miv-continuous-glucose-measurement"),
            ("days", "90"),
            ("decision", "approve"),
        ],
    )
    .await;
    hddt::query_value(&location, "code").unwrap()
}

async fn redeem(bench: &Bench, code: &str) -> serde_json::Value {
    let (status, tokens) = hddt::post_form(
        &bench.server,
        &bench.client,
        "/token",
        &hddt::code_form(DIGA, REDIRECT, code, VERIFIER),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

async fn refresh(bench: &Bench, client: &reqwest::Client, token: &str) -> String {
    let (status, tokens) = hddt::post_form(
        &bench.server,
        client,
        "/token",
        &hddt::refresh_form(DIGA, token),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

fn hddt_benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bench = Arc::new(runtime.block_on(setup()));
    let mut group = c.benchmark_group("hddt");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));

    let health = bench.server.hddt_url("/health");
    group.bench_function("health over mTLS (baseline)", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = bench.client.get(&health).send().await.unwrap();
            assert!(response.status().is_success());
            response.bytes().await.unwrap()
        });
    });
    group.bench_function("health over mTLS, 32 concurrent (baseline)", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let bench = bench.clone();
            let health = health.clone();
            async move {
                let started = Instant::now();
                let tasks: Vec<_> = (0..CONCURRENCY)
                    .map(|worker| {
                        let bench = bench.clone();
                        let health = health.clone();
                        let share = iters / CONCURRENCY as u64
                            + u64::from((worker as u64) < iters % CONCURRENCY as u64);
                        tokio::spawn(async move {
                            for _ in 0..share {
                                let response = bench.client.get(&health).send().await.unwrap();
                                response.bytes().await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                started.elapsed()
            }
        });
    });

    group.bench_function("/par", |b| {
        b.to_async(&runtime).iter(|| async {
            let (status, _) = hddt::post_form(
                &bench.server,
                &bench.client,
                "/par",
                &hddt::par_form(DIGA, REDIRECT, SCOPE),
            )
            .await;
            assert_eq!(status, 201);
        });
    });

    group.bench_function("/token authorization_code", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                // Each code is redeemed right after its consent (a new consent
                // of the same pairing supersedes the grant of an older code);
                // only the redemption is timed.
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let code = code(&bench).await;
                    let started = Instant::now();
                    redeem(&bench, &code).await;
                    total += started.elapsed();
                }
                total
            }
        });
    });

    let first = runtime.block_on(async {
        let code = code(&bench).await;
        redeem(&bench, &code).await["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    let current = Arc::new(tokio::sync::Mutex::new(first));
    group.bench_function("/token refresh_token", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut token = current.lock().await;
            *token = refresh(&bench, &bench.client, &token).await;
        });
    });

    // One grant per worker (a pairing each: one patient pairs one DiGA once,
    // so the workers are distinct patients).
    let chains: Vec<Arc<tokio::sync::Mutex<String>>> = runtime.block_on(async {
        let mut chains = Vec::new();
        for index in 0..CONCURRENCY {
            let sdk = bench.server.sdk();
            let email = format!("bench{index}@example.org");
            sdk.register(NewAccount {
                kind: ParticipantKind::Patient,
                display_name: None,
                password: Some((email.clone(), Password::new("bench pw"))),
                tans: 0,
                software_certificate: false,
            })
            .await
            .unwrap();
            let patient = sdk
                .login_password(&email, &Password::new("bench pw"))
                .await
                .unwrap();
            let code = code_for(&bench, &patient).await;
            let token = redeem(&bench, &code).await["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned();
            chains.push(Arc::new(tokio::sync::Mutex::new(token)));
        }
        chains
    });
    group.bench_function("/token refresh_token, 32 grants concurrently", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let bench = bench.clone();
            let chains = chains.clone();
            async move {
                let started = Instant::now();
                let tasks: Vec<_> = chains
                    .iter()
                    .enumerate()
                    .map(|(worker, chain)| {
                        let bench = bench.clone();
                        let chain = chain.clone();
                        let share = iters / CONCURRENCY as u64
                            + u64::from((worker as u64) < iters % CONCURRENCY as u64);
                        tokio::spawn(async move {
                            let mut token = chain.lock().await;
                            for _ in 0..share {
                                *token = refresh(&bench, &bench.client, &token).await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                started.elapsed()
            }
        });
    });

    let access = runtime.block_on(async {
        let code = code(&bench).await;
        redeem(&bench, &code).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    let hddt = bench.server.state().hddt.clone();
    group.bench_function("access-token validation (in-process)", |b| {
        b.to_async(&runtime).iter(|| async {
            hddt.validate_access(&access, &bench.diga.der)
                .await
                .unwrap();
        });
    });
    let key = SoftwareKey::generate().unwrap();
    let public = P256PublicKey::from_uncompressed(&key.public_key()).unwrap();
    let signature = key.sign_jose(access.as_bytes()).unwrap();
    group.bench_function("raw ES256 verify (baseline)", |b| {
        b.iter(|| public.verify_es256(access.as_bytes(), &signature).unwrap());
    });
    group.finish();
    if let Ok(bench) = Arc::try_unwrap(bench) {
        runtime.block_on(bench.server.stop());
    }
}

criterion_group!(benches, hddt_benches);
criterion_main!(benches);
