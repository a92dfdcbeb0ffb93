//! The HDDT resource server under load, with `--patients` patients x
//! `--days` days of 5-minute CGM data loaded (default 1000 x 30):
//!
//! 1. ingestion: every patient's series goes through `ResourceServer::upload`
//!    (validation, chunking, one durable transaction per 10,000 readings);
//!    readings per second;
//! 2. over keep-alive mTLS with `--concurrency` connections for `--seconds`
//!    each: `/health` (the listener's ceiling, same run), a one-patient-day
//!    Observation search (`date=ge..&date=lt..`, 24 chunks), and reads by id;
//!    requests per second with p50 and p99 latency.
//!
//! The server runs on its own Tokio runtime (2 worker threads), the load on
//! another; both share the machine's cores.
//!
//! ```sh
//! cargo run --release -p medvault-server --example fhir_load -- --patients 1000 --days 30
//! # with a sampling profile of the search and read phases (flame graphs in target/profile/):
//! MEDVAULT_PROFILE=target/profile cargo run --release -p medvault-server --features profile \
//!   --example fhir_load -- --patients 100 --days 30
//! MEDVAULT_BENCH_BACKEND=postgres MEDVAULT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run --release -p medvault-server --example fhir_load -- --patients 1000
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "a command-line load generator: it measures with the wall clock and stops on the first setup error"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use medvault_client::{NewAccount, Password};
use medvault_core::{Clock, DigaClientId, Miv, ParticipantKind};
use medvault_fhir::catalogue::{self, GlucoseUnit};
use medvault_oauth::{DigaRegistryEntry, DigaStatus};
use medvault_proto::devices::{NewDevice, UploadBatch};
use medvault_testkit::{Backend, TestCertificate, TestServer, hddt};

const DIGA: &str = "urn:diga:bfarm:12345";
const REDIRECT: &str = "https://diga.example/callback";
const SCOPE: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement patient/Device.rs patient/DeviceMetric.rs";

struct Args {
    patients: usize,
    days: u32,
    seconds: u64,
    concurrency: usize,
    paired: usize,
}

fn args() -> Args {
    let mut values = std::collections::HashMap::new();
    let mut raw = std::env::args().skip(1);
    while let (Some(name), Some(value)) = (raw.next(), raw.next()) {
        values.insert(name.trim_start_matches("--").to_owned(), value);
    }
    let get = |name: &str, default: u64| values.get(name).map_or(default, |v| v.parse().unwrap());
    Args {
        patients: usize::try_from(get("patients", 1000)).unwrap(),
        days: u32::try_from(get("days", 30)).unwrap(),
        seconds: get("seconds", 10),
        concurrency: usize::try_from(get("concurrency", 32)).unwrap(),
        paired: usize::try_from(get("paired", 32)).unwrap(),
    }
}

struct Outcome {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn report(&self, name: &str) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
        println!(
            "{name:<34} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests)",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            at(0.50).as_secs_f64() * 1000.0,
            at(0.99).as_secs_f64() * 1000.0,
            self.requests
        );
    }
}

/// `concurrency` keep-alive loops for `seconds`, each request from `next(i)`.
async fn load(
    client: &reqwest::Client,
    concurrency: usize,
    seconds: u64,
    next: Arc<dyn Fn(usize) -> (String, String) + Send + Sync>,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let stop = stop.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let (url, token) = next(i);
                let began = Instant::now();
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(response.status(), 200, "{url}");
                response.bytes().await.unwrap();
                latencies.push(began.elapsed());
                i += concurrency;
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    Outcome {
        requests: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

/// With `--features profile` and `MEDVAULT_PROFILE=DIR`: a sampling profile
/// (SIGPROF at 499 Hz, pprof) of the whole process during one load phase,
/// written as `DIR/<phase>.svg` (a flame graph) and summarised on stdout:
/// the share of samples per thread group (server workers, load generator,
/// sqlx's SQLite workers) and per component, each sample counted under the
/// innermost frame that names one. perf_event is closed on the benchmark
/// machines (perf_event_paranoid 2), SIGPROF is not.
#[cfg(feature = "profile")]
struct Profile(Option<(pprof::ProfilerGuard<'static>, std::path::PathBuf)>);

#[cfg(feature = "profile")]
impl Profile {
    fn start(phase: &str) -> Self {
        let Ok(dir) = std::env::var("MEDVAULT_PROFILE") else {
            return Self(None);
        };
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(499)
            .build()
            .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        Self(Some((
            guard,
            std::path::Path::new(&dir).join(format!("{phase}.svg")),
        )))
    }

    fn finish(self) {
        const COMPONENTS: [(&str, &[&str]); 10] = [
            ("SQLite engine (C)", &["sqlite3"]),
            ("sqlx (driver, worker hand-off)", &["sqlx"]),
            ("TLS (rustls, aws-lc)", &["rustls", "aws_lc"]),
            ("JSON (serde_json)", &["serde_json", "serde::"]),
            ("FHIR resources and search", &["medvault_fhir"]),
            ("token and grant check", &["medvault_oauth", "jsonwebtoken"]),
            ("HTTP (hyper, h2, reqwest)", &["hyper", "h2::", "reqwest"]),
            ("allocation", &["alloc::", "malloc", "free", "realloc"]),
            (
                "runtime and scheduling",
                &["tokio", "parking_lot", "futex", "epoll", "mio"],
            ),
            ("other medvault", &["medvault"]),
        ];
        let Some((guard, path)) = self.0 else { return };
        let report = guard.report().build().unwrap();
        report
            .flamegraph(std::fs::File::create(&path).unwrap())
            .unwrap();
        let mut threads = std::collections::BTreeMap::<String, isize>::new();
        let mut components = std::collections::BTreeMap::<&str, isize>::new();
        let mut total = 0isize;
        for (frames, count) in &report.data {
            total += count;
            let name = frames.thread_name.clone();
            let group = if name.starts_with("sqlx") {
                "sqlx SQLite worker threads"
            } else if name.starts_with("server") {
                "server workers"
            } else if name.starts_with("load") {
                "load generator"
            } else {
                "other threads"
            };
            *threads.entry(group.to_owned()).or_default() += count;
            let component = frames
                .frames
                .iter()
                .flatten()
                .find_map(|symbol| {
                    let name = symbol.name();
                    COMPONENTS
                        .iter()
                        .find(|(_, needles)| needles.iter().any(|n| name.contains(n)))
                        .map(|(component, _)| *component)
                })
                .unwrap_or("unattributed");
            *components.entry(component).or_default() += count;
        }
        let share = |n: isize| n as f64 * 100.0 / total.max(1) as f64;
        println!(
            "  profile ({total} samples at 499 Hz) -> {}",
            path.display()
        );
        for (group, count) in &threads {
            println!("    {group:<34} {:>5.1} %", share(*count));
        }
        let mut ranked: Vec<_> = components.into_iter().collect();
        ranked.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        for (component, count) in ranked {
            println!("      {component:<32} {:>5.1} %", share(count));
        }
    }
}

/// Without the `profile` feature: nothing.
#[cfg(not(feature = "profile"))]
struct Profile;

#[cfg(not(feature = "profile"))]
impl Profile {
    fn start(_phase: &str) -> Self {
        Self
    }

    fn finish(self) {}
}

fn main() {
    let args = args();
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let load_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
        .unwrap();
    let backend = match std::env::var("MEDVAULT_BENCH_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let diga = TestCertificate::diga("load-diga");
    let server = server_runtime.block_on(async {
        let server = TestServer::start_with(backend, |raw| {
            raw.hddt_rate_per_client = Some(1_000_000);
            raw.login_free_address_failures = Some(100_000);
            raw.max_connections_per_ip = Some(10_000);
        })
        .await
        .expect("PostgreSQL: set MEDVAULT_TEST_POSTGRES_URL");
        hddt::install_registry(
            &server,
            vec![DigaRegistryEntry {
                client_id: DigaClientId::parse(DIGA).unwrap(),
                name: "Load DiGA".to_owned(),
                status: DigaStatus::Active,
                redirect_uri: REDIRECT.to_owned(),
                mivs: vec![Miv::ContinuousGlucose],
                certificates: vec![diga.der.clone()],
            }],
        )
        .await;
        server
    });
    let now = server.clock.now();
    let model = catalogue::model("glukko-cgm-18").unwrap();
    println!(
        "backend {backend:?}: {} patients x {} days of 5-minute CGM data",
        args.patients, args.days
    );

    // Patients, their devices and their data.
    let (tokens, ingest_time, readings) = server_runtime.block_on(async {
        let sdk = server.sdk();
        let mut tokens = Vec::new();
        let mut ingest_time = Duration::ZERO;
        let mut readings = 0;
        for index in 0..args.patients {
            let paired = index < args.paired;
            let email = format!("load-{index}@example.org");
            let registered = sdk
                .register(NewAccount {
                    kind: ParticipantKind::Patient,
                    display_name: None,
                    password: paired.then(|| (email.clone(), Password::new("load pw"))),
                    tans: 0,
                    software_certificate: false,
                })
                .await
                .unwrap();
            let uid = registered.uid.to_string();
            let fhir = &server.state().fhir;
            let device = fhir
                .register_device(
                    &uid,
                    &NewDevice {
                        model: model.id.to_owned(),
                        serial_number: format!("LOAD-{index}"),
                        unit: "mg/dL".to_owned(),
                    },
                )
                .await
                .unwrap();
            let series = medvault_fhir::simulate::cgm_series(
                &device.id,
                model,
                GlucoseUnit::MgPerDl,
                now,
                args.days,
                index as u64,
            );
            readings += series.len();
            let began = Instant::now();
            for (part, chunk) in series.chunks(10_000).enumerate() {
                fhir.upload(
                    &uid,
                    &UploadBatch {
                        batch_id: format!("load-{part}"),
                        readings: chunk.to_vec(),
                    },
                )
                .await
                .unwrap();
            }
            ingest_time += began.elapsed();
            if paired {
                let session = sdk
                    .login_password(&email, &Password::new("load pw"))
                    .await
                    .unwrap();
                let granted = hddt::pair(
                    &server,
                    &diga,
                    DIGA,
                    REDIRECT,
                    &session,
                    SCOPE,
                    &["hddt-miv-continuous-glucose-measurement"],
                )
                .await;
                tokens.push(granted["access_token"].as_str().unwrap().to_owned());
            }
            if (index + 1) % 100 == 0 {
                println!("  {} patients loaded", index + 1);
            }
        }
        (tokens, ingest_time, readings)
    });
    println!(
        "{:<34} {:>9.0} readings/s   ({readings} readings in {:.1} s, batches of 10,000)",
        "ingestion (upload, validated)",
        readings as f64 / ingest_time.as_secs_f64(),
        ingest_time.as_secs_f64()
    );

    // Where a search's time goes, in-process and sequential (no TLS/HTTP).
    server_runtime.block_on(async {
        let state = server.state();
        let rounds = 2000_u32;
        let day = (now - time::Duration::days(1)).date();
        let parameters = vec![
            ("date".to_owned(), format!("ge{day}")),
            ("date".to_owned(), format!("lt{}", day.next_day().unwrap())),
        ];
        let began = Instant::now();
        let mut context = None;
        for _ in 0..rounds {
            context = Some(state.hddt.validate_access(&tokens[0], &diga.der).await.unwrap());
        }
        let validate = began.elapsed() / rounds;
        let context = context.unwrap();
        let reader = medvault_fhir::service::reader_of(&context.patient_uid, &context.scopes);
        let began = Instant::now();
        let mut bundle = serde_json::Value::Null;
        for _ in 0..rounds {
            bundle = state.fhir.search_observations(&reader, &parameters).await.unwrap();
        }
        let search = began.elapsed() / rounds;
        let query = medvault_store::ObservationQuery {
            patient_uid: context.patient_uid.clone(),
            codes: vec!["99504-3".to_owned(), "105272-9".to_owned()],
            ids: None,
            date: vec![medvault_store::RangeFilter {
                op: medvault_store::RangeOp::Ge,
                low: medvault_store::to_unix_micros(now - time::Duration::days(1)),
                high: medvault_store::to_unix_micros(now - time::Duration::days(1)) + 999_999,
            }],
            last_updated: vec![],
            value: vec![],
            not_before: now - time::Duration::days(30),
            descending: false,
            after: None,
            limit: 51,
        };
        let began = Instant::now();
        let mut rows = 0;
        for _ in 0..rounds {
            rows = state.store.search_observations(&query).await.unwrap().len();
        }
        let sql = began.elapsed() / rounds;
        let grant_id = context.claims.jti.split('.').next().unwrap().to_owned();
        let began = Instant::now();
        for _ in 0..rounds {
            state.store.grant(&grant_id).await.unwrap();
        }
        let grant = began.elapsed() / rounds;
        println!(
            "in-process: store search of {rows} rows {:.0} us, grant lookup {:.0} us",
            sql.as_secs_f64() * 1e6,
            grant.as_secs_f64() * 1e6
        );
        let began = Instant::now();
        let mut bytes = 0;
        for _ in 0..rounds {
            bytes = serde_json::to_vec(&bundle).unwrap().len();
        }
        let serialize = began.elapsed() / rounds;
        println!(
            "in-process, per one-day search: validate_access {:.0} us, search (SQL + resources) {:.0} us, JSON serialization {:.0} us ({bytes} bytes)",
            validate.as_secs_f64() * 1e6,
            search.as_secs_f64() * 1e6,
            serialize.as_secs_f64() * 1e6
        );
    });
    let base = server.hddt_url("");
    let client = server.client(Some(&diga));
    let tokens = Arc::new(tokens);
    let days = i64::from(args.days.max(2));
    load_runtime.block_on(async {
        // Warm the connections and caches.
        load(
            &client,
            args.concurrency,
            1,
            Arc::new({
                let (base, tokens) = (base.clone(), tokens.clone());
                move |_| (format!("{base}/health"), tokens[0].clone())
            }),
        )
        .await;
        load(
            &client,
            args.concurrency,
            args.seconds,
            Arc::new({
                let (base, tokens) = (base.clone(), tokens.clone());
                move |_| (format!("{base}/health"), tokens[0].clone())
            }),
        )
        .await
        .report("/health over mTLS (ceiling)");

        let day_search = {
            let (base, tokens) = (base.clone(), tokens.clone());
            move |i: usize| {
                let day = (now - time::Duration::days(1 + (i as i64 % (days - 1)))).date();
                let next = day.next_day().unwrap();
                (
                    format!("{base}/fhir/Observation?date=ge{day}&date=lt{next}&_count=50"),
                    tokens[i % tokens.len()].clone(),
                )
            }
        };
        // Observation ids for the reads, one page per paired patient.
        let mut ids = Vec::new();
        for (index, token) in tokens.iter().enumerate() {
            let (url, _) = day_search(index * tokens.len());
            let bundle: serde_json::Value = client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for entry in bundle["entry"].as_array().unwrap() {
                ids.push((index, entry["resource"]["id"].as_str().unwrap().to_owned()));
            }
        }
        let profile = Profile::start("search");
        load(
            &client,
            args.concurrency,
            args.seconds,
            Arc::new(day_search),
        )
        .await
        .report("Observation search, one day");
        profile.finish();
        let ids = Arc::new(ids);
        let profile = Profile::start("read");
        load(
            &client,
            args.concurrency,
            args.seconds,
            Arc::new({
                let (base, tokens) = (base.clone(), tokens.clone());
                move |i: usize| {
                    let (patient, id) = &ids[i % ids.len()];
                    (
                        format!("{base}/fhir/Observation/{id}"),
                        tokens[*patient].clone(),
                    )
                }
            }),
        )
        .await
        .report("Observation read by id");
        profile.finish();
    });
    server_runtime.block_on(async move { drop(server) });
}
