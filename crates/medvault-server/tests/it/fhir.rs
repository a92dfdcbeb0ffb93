//! The HDDT data half end to end: a patient registers a CGM and a meter and
//! uploads two weeks of readings; paired DiGAs read them through the FHIR
//! resource server over mTLS, each seeing exactly what its grant allows.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use medvault_client::{NewAccount, Password, Session};
use medvault_core::{Clock, DigaClientId, Miv, ParticipantKind};
use medvault_fhir::catalogue::{self, GlucoseUnit};
use medvault_fhir::simulate;
use medvault_oauth::{DigaRegistryEntry, DigaStatus};
use medvault_proto::devices::{DeviceUpdate, NewDevice, UploadBatch};
use medvault_testkit::hddt;
use medvault_testkit::{Backend, TestCertificate, TestServer};
use serde_json::Value;

on_both_backends!(
    a_diga_pages_through_two_weeks_of_readings,
    requests_outside_the_rules_get_the_guides_answers,
    two_nodes_serve_one_database,
);

const DIGA: &str = "urn:diga:bfarm:12345";
const BG_ONLY: &str = "urn:diga:bfarm:22222";
const REDIRECT: &str = "https://diga.example/callback";
const CGM_SCOPE: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement";
const BG_SCOPE: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-blood-glucose-measurement";
const DEVICE_SCOPES: &str = "patient/Device.rs patient/DeviceMetric.rs";
const CGM_MIV: &str = "hddt-miv-continuous-glucose-measurement";
const BG_MIV: &str = "hddt-miv-blood-glucose-measurement";

fn entry(id: &str, certificate: &TestCertificate, mivs: Vec<Miv>) -> DigaRegistryEntry {
    DigaRegistryEntry {
        client_id: DigaClientId::parse(id).unwrap(),
        name: "Glukose-Tagebuch".to_owned(),
        status: DigaStatus::Active,
        redirect_uri: REDIRECT.to_owned(),
        mivs,
        certificates: vec![certificate.der.clone()],
    }
}

struct Setup {
    server: TestServer,
    diga: TestCertificate,
    bg_only: TestCertificate,
}

async fn setup(backend: Backend) -> Option<Setup> {
    let server = TestServer::start_with(backend, |raw| {
        raw.registry_max_age_secs = Some(3600);
    })
    .await?;
    let diga = TestCertificate::diga("diga-backend");
    let bg_only = TestCertificate::diga("bg-diga-backend");
    hddt::install_registry(
        &server,
        vec![
            entry(DIGA, &diga, vec![Miv::BloodGlucose, Miv::ContinuousGlucose]),
            entry(BG_ONLY, &bg_only, vec![Miv::BloodGlucose]),
        ],
    )
    .await;
    Some(Setup {
        server,
        diga,
        bg_only,
    })
}

async fn patient(server: &TestServer, email: &str) -> Session {
    let sdk = server.sdk();
    sdk.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some((email.to_owned(), Password::new("device pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    sdk.login_password(email, &Password::new("device pw"))
        .await
        .unwrap()
}

/// A CGM and a meter with 14 days of data; the uploaded readings' count.
async fn fill(server: &TestServer, patient: &Session, seed: u64) -> (String, String, usize, usize) {
    let cgm = patient
        .register_device(&NewDevice {
            model: "glukko-cgm-18".into(),
            serial_number: format!("CGM-{seed}"),
            unit: "mg/dL".into(),
        })
        .await
        .unwrap();
    let meter = patient
        .register_device(&NewDevice {
            model: "glukko-meter-5".into(),
            serial_number: format!("M-{seed}"),
            unit: "mmol/L".into(),
        })
        .await
        .unwrap();
    let now = server.clock.now();
    let series = simulate::cgm_series(
        &cgm.id,
        catalogue::model("glukko-cgm-18").unwrap(),
        GlucoseUnit::MgPerDl,
        now,
        14,
        seed,
    );
    let meter_readings = simulate::meter_readings(
        &meter.id,
        catalogue::model("glukko-meter-5").unwrap(),
        GlucoseUnit::MmolPerL,
        now,
        14,
        4,
        seed,
    );
    let (cgm_count, meter_count) = (series.len(), meter_readings.len());
    for (index, chunk) in series.chunks(2016).enumerate() {
        let receipt = patient
            .upload_readings(&UploadBatch {
                batch_id: format!("cgm-{seed}-{index}"),
                readings: chunk.to_vec(),
            })
            .await
            .unwrap();
        assert!(!receipt.replayed);
    }
    patient
        .upload_readings(&UploadBatch {
            batch_id: format!("meter-{seed}"),
            readings: meter_readings,
        })
        .await
        .unwrap();
    (cgm.id, meter.id, cgm_count, meter_count)
}

/// Every FHIR resource the tests received, per server (by its base URL),
/// for the independent validator.
static CAPTURED: LazyLock<Mutex<HashMap<String, Vec<Value>>>> = LazyLock::new(Mutex::default);

fn capture(server: &TestServer, body: &Value) {
    if body.get("resourceType").is_some() {
        CAPTURED
            .lock()
            .unwrap()
            .entry(server.hddt_url(""))
            .or_default()
            .push(body.clone());
    }
}

/// Runs the independent validator (R4 JSON schema, FHIRPath invariants,
/// HDDT profile rules; `conformance/fhir-validate`) over every resource
/// `server` returned, and over the guide's examples.
fn validate_captured(server: &TestServer, test: &str) {
    let resources = CAPTURED
        .lock()
        .unwrap()
        .remove(&server.hddt_url(""))
        .unwrap_or_default();
    assert!(resources.len() > 5, "too few resources captured");
    let Some(node) = crate::setup_script("setup-fhir-validator.sh", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (index, resource) in resources.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!(
                "{index:04}-{}.json",
                resource["resourceType"].as_str().unwrap()
            )),
            serde_json::to_vec(resource).unwrap(),
        )
        .unwrap();
    }
    let root = format!("{}/../..", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(node)
        .arg(format!("{root}/conformance/fhir-validate/validate.mjs"))
        .arg("--ig")
        .arg(format!("{root}/conformance/hddt-ig"))
        .arg("--examples")
        .arg(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains(&format!("{} resources of medvault", resources.len())),
        "{report}"
    );
}

async fn fhir_get(
    server: &TestServer,
    identity: &TestCertificate,
    token: &str,
    url: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = if url.starts_with("https://") {
        url.to_owned()
    } else {
        server.hddt_url(url)
    };
    let response = server
        .client(Some(identity))
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    capture(server, &body);
    (status, headers, body)
}

async fn post_json(
    server: &TestServer,
    identity: &TestCertificate,
    token: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let response = server
        .client(Some(identity))
        .post(server.hddt_url(path))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    capture(server, &body);
    (status, body)
}

/// Every page of a search from `first`; the matched resources in order.
async fn all_pages(
    server: &TestServer,
    identity: &TestCertificate,
    token: &str,
    first: &str,
    between_pages: impl AsyncFn(usize),
) -> Vec<Value> {
    let mut url = first.to_owned();
    let mut found = Vec::new();
    for page in 0.. {
        let (status, _, bundle) = fhir_get(server, identity, token, &url).await;
        assert_eq!(status, 200, "{bundle}");
        assert_eq!(bundle["type"], "searchset");
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            if entry["search"]["mode"] == "match" {
                found.push(entry["resource"].clone());
            }
        }
        between_pages(page).await;
        let next = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|link| link["relation"] == "next");
        match next {
            Some(link) => url = link["url"].as_str().unwrap().to_owned(),
            None => break,
        }
    }
    found
}

fn start_of(observation: &Value) -> String {
    observation["effectiveDateTime"]
        .as_str()
        .or_else(|| observation["effectivePeriod"]["start"].as_str())
        .unwrap()
        .to_owned()
}

async fn a_diga_pages_through_two_weeks_of_readings(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let server = &setup.server;
    let erika = patient(server, "erika@example.org").await;
    let max = patient(server, "max@example.org").await;
    let (cgm_id, meter_id, cgm_count, meter_count) = fill(server, &erika, 1).await;
    fill(server, &max, 2).await;
    let now = server.clock.now();
    let tokens = hddt::pair(
        server,
        &setup.diga,
        DIGA,
        REDIRECT,
        &erika,
        &format!("{CGM_SCOPE} {BG_SCOPE} {DEVICE_SCOPES}"),
        &[CGM_MIV, BG_MIV],
    )
    .await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();

    // Page through everything with _count=50 while new readings arrive.
    let found = all_pages(
        server,
        &setup.diga,
        &token,
        "/fhir/Observation?_count=50",
        async |page: usize| {
            if page == 2 {
                // A meter reading taken now arrives mid-paging: it sorts last,
                // so it shows up on a later page, and nothing repeats.
                erika
                    .upload_readings(&UploadBatch {
                        batch_id: "late-meter".into(),
                        readings: vec![medvault_proto::devices::Reading {
                            device: meter_id.clone(),
                            time: medvault_fhir::resources::instant(now),
                            value: Some(6.1),
                            unit: "mmol/L".into(),
                            limit: None,
                        }],
                    })
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    let ids: HashSet<&str> = found.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), found.len(), "an Observation repeated");
    let starts: Vec<String> = found.iter().map(start_of).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "not in date order");
    let singles: Vec<&Value> = found
        .iter()
        .filter(|o| o.get("valueQuantity").is_some())
        .collect();
    let chunks: Vec<&Value> = found
        .iter()
        .filter(|o| o.get("effectivePeriod").is_some())
        .collect();
    assert_eq!(
        singles.len(),
        meter_count + 1,
        "every meter reading exactly once"
    );
    let samples: usize = chunks
        .iter()
        .map(|c| {
            c["valueSampledData"]["data"]
                .as_str()
                .unwrap_or("")
                .split(' ')
                .filter(|t| !t.is_empty() && *t != "E")
                .count()
        })
        .sum();
    assert_eq!(samples, cgm_count, "every CGM reading exactly once");
    for chunk in &chunks {
        assert_eq!(chunk["code"]["coding"][0]["code"], "99504-3");
        assert_eq!(
            chunk["device"]["reference"]
                .as_str()
                .unwrap()
                .split('/')
                .next(),
            Some("DeviceMetric")
        );
        assert_eq!(chunk["valueSampledData"]["period"], 300_000);
        assert!(chunk.get("subject").is_none());
    }
    // Only the newest chunk is still open.
    let preliminary: Vec<_> = chunks
        .iter()
        .filter(|c| c["status"] == "preliminary")
        .collect();
    assert_eq!(preliminary.len(), 1, "{preliminary:?}");
    assert_eq!(singles[0]["code"]["coding"][0]["code"], "14743-9");
    assert_eq!(singles[0]["valueQuantity"]["code"], "mmol/L");

    // Read by id, and the device through the include.
    let chunk_id = preliminary[0]["id"].as_str().unwrap();
    let (status, _, read) = fhir_get(
        server,
        &setup.diga,
        &token,
        &format!("/fhir/Observation/{chunk_id}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        read["meta"]["versionId"],
        preliminary[0]["meta"]["versionId"]
    );
    let (_, _, day) = fhir_get(
        server,
        &setup.diga,
        &token,
        &format!(
            "/fhir/Observation?code=http://loinc.org|99504-3&date=ge{}&_include=Observation:device&_include:iterate=DeviceMetric:source&_sort=-date",
            (now - time::Duration::days(1)).date()
        ),
    )
    .await;
    let kinds: Vec<&str> = day["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["DeviceMetric", "Device"]);
    let (status, _, device) = fhir_get(
        server,
        &setup.diga,
        &token,
        &format!("/fhir/Device/{cgm_id}"),
    )
    .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["deviceName"][0]["name"], "GlukkoCGM 18");
    assert_eq!(device["status"], "active");

    // A calibration closes the open chunk and versions the DeviceMetric.
    let metric_id = device_metric_id(&erika, &cgm_id).await;
    erika
        .update_device(
            &cgm_id,
            &DeviceUpdate {
                calibration_state: Some("calibrated".into()),
                calibration_time: None,
                retire: false,
            },
        )
        .await
        .unwrap();
    let (_, _, closed) = fhir_get(
        server,
        &setup.diga,
        &token,
        &format!("/fhir/Observation/{chunk_id}"),
    )
    .await;
    assert_eq!(closed["status"], "final");
    assert_ne!(closed["meta"]["versionId"], read["meta"]["versionId"]);
    let (status, _, metric) = fhir_get(
        server,
        &setup.diga,
        &token,
        &format!("/fhir/DeviceMetric/{metric_id}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(metric["meta"]["versionId"], "2");
    assert_eq!(metric["calibration"][0]["state"], "calibrated");
    let (status, _, old) = fhir_get(
        server,
        &setup.diga,
        &token,
        &format!("/fhir/DeviceMetric/{metric_id}/_history/1"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(old["calibration"][0]["state"], "not-calibrated");
    let (status, _, missing) = fhir_get(
        server,
        &setup.diga,
        &token,
        &format!("/fhir/DeviceMetric/{metric_id}/_history/7"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        missing["issue"][0]["diagnostics"],
        format!("Version 7 is not valid for resource DeviceMetric/{metric_id}.")
    );

    // The CGM summary over the default 14 days, with the devices.
    let (status, bundle) = post_json(
        server,
        &setup.diga,
        &token,
        "/fhir/Observation/$hddt-cgm-summary",
        r#"{"resourceType":"Parameters","parameter":[{"name":"related","valueBoolean":true}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(bundle["type"], "collection");
    assert_eq!(
        bundle["meta"]["profile"][0],
        "https://gematik.de/fhir/hddt/StructureDefinition/hddt-cgm-summary"
    );
    let codes: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Observation")
        .map(|e| e["resource"]["code"]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec![
            "107931-8", "97507-8", "105273-7", "106793-3", "97506-0", "104638-2", "104636-6",
            "104637-4"
        ]
    );
    let summary = &bundle["entry"][0]["resource"];
    assert_eq!(summary["subject"]["identifier"]["value"], tokens["sub"]);
    assert_eq!(summary["hasMember"].as_array().unwrap().len(), 7);
    let ranges = &bundle["entry"][3]["resource"]["component"];
    let total: f64 = ranges
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["valueQuantity"]["value"].as_f64().unwrap())
        .sum();
    assert!((total - 100.0).abs() < 0.5, "{total}");
    let mean = bundle["entry"][1]["resource"]["valueQuantity"]["value"]
        .as_f64()
        .unwrap();
    assert!((90.0..180.0).contains(&mean), "{mean}");
    let days = bundle["entry"][6]["resource"]["valueQuantity"]["value"]
        .as_f64()
        .unwrap();
    assert!((14.0..=15.0).contains(&days), "{days}");
    let kinds: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"Device") && !kinds.contains(&"DeviceMetric"),
        "{kinds:?}"
    );
    for (body, message) in [
        (
            r#"{"resourceType":"Parameters","parameter":[{"name":"effectivePeriodStart","valueDateTime":"2026-12-30"}]}"#,
            "MSG_PARAM_INVALID",
        ),
        (
            r#"{"resourceType":"Parameters","parameter":[{"name":"patient","valueString":"x"}]}"#,
            "MSG_PARAM_UNKNOWN",
        ),
        (r#"{"resourceType":"Patient"}"#, "MSG_BAD_SYNTAX"),
        ("not json", "MSG_BAD_SYNTAX"),
    ] {
        let (status, outcome) = post_json(
            server,
            &setup.diga,
            &token,
            "/fhir/Observation/$hddt-cgm-summary",
            body,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            outcome["issue"][0]["details"]["coding"][0]["code"], message,
            "{body}"
        );
    }

    // A DiGA paired with Max sees none of Erika's data, not even by id.
    let max_tokens = hddt::pair(
        server,
        &setup.diga,
        DIGA,
        REDIRECT,
        &max,
        &format!("{CGM_SCOPE} {BG_SCOPE} {DEVICE_SCOPES}"),
        &[CGM_MIV, BG_MIV],
    )
    .await;
    let max_token = max_tokens["access_token"].as_str().unwrap();
    let theirs = all_pages(
        server,
        &setup.diga,
        max_token,
        "/fhir/Observation?_count=500",
        async |_| {},
    )
    .await;
    assert!(
        theirs
            .iter()
            .all(|o| !ids.contains(o["id"].as_str().unwrap()))
    );
    assert!(!theirs.is_empty());
    for path in [
        format!("/fhir/Observation/{chunk_id}"),
        format!("/fhir/Device/{cgm_id}"),
    ] {
        let (status, _, body) = fhir_get(server, &setup.diga, max_token, &path).await;
        assert_eq!(status, 404, "{path}: never 403");
        assert!(
            body["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .ends_with("is not known")
        );
    }

    // A DiGA without the CGM MIV sees Erika's meter readings only.
    let bg_tokens = hddt::pair(
        server,
        &setup.bg_only,
        BG_ONLY,
        REDIRECT,
        &erika,
        &format!("{BG_SCOPE} {DEVICE_SCOPES}"),
        &[BG_MIV],
    )
    .await;
    let bg_token = bg_tokens["access_token"].as_str().unwrap();
    let bg_seen = all_pages(
        server,
        &setup.bg_only,
        bg_token,
        "/fhir/Observation?_count=500",
        async |_| {},
    )
    .await;
    assert_eq!(bg_seen.len(), meter_count + 1);
    assert!(bg_seen.iter().all(|o| o.get("valueQuantity").is_some()));
    let (status, _, _) = fhir_get(
        server,
        &setup.bg_only,
        bg_token,
        &format!("/fhir/Device/{cgm_id}"),
    )
    .await;
    assert_eq!(
        status, 404,
        "the CGM is referenced by no Observation this DiGA may see"
    );
    let (status, _, _) = fhir_get(
        server,
        &setup.bg_only,
        bg_token,
        &format!("/fhir/Observation/{chunk_id}"),
    )
    .await;
    assert_eq!(status, 404);

    let (status, _) = post_json(
        server,
        &setup.bg_only,
        bg_token,
        "/fhir/Observation/$hddt-cgm-summary",
        "",
    )
    .await;
    assert_eq!(status, 404, "the summary needs the CGM MIV");

    // The patient revokes; the next request is refused with 401.
    erika.unpair(tokens["sub"].as_str().unwrap()).await.unwrap();
    let (status, headers, outcome) =
        fhir_get(server, &setup.diga, &token, "/fhir/Observation?_count=1").await;
    assert_eq!(status, 401, "{outcome}");
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let denied = server
        .state()
        .audit
        .query(&medvault_audit::AuditQuery {
            event_type: Some("hddt.access_denied".to_owned()),
            limit: 10,
            ..medvault_audit::AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    // The export gives the patient everything, device data included.
    let export = erika.export_device_data().await.unwrap();
    assert_eq!(export["type"], "collection");
    let exported = export["entry"].as_array().unwrap();
    let exported_observations = exported
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Observation")
        .count();
    assert_eq!(exported_observations, found.len(), "every Observation once");
    capture(server, &export);
    validate_captured(server, "fhir pages");
}

async fn device_metric_id(patient: &Session, device_id: &str) -> String {
    patient
        .devices()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == device_id)
        .and_then(|d| d.metric_id)
        .unwrap()
}

async fn requests_outside_the_rules_get_the_guides_answers(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let server = &setup.server;
    let erika = patient(server, "erika@example.org").await;
    let (_, meter_id, _, _) = fill(server, &erika, 3).await;
    // Uploads: a replay is acknowledged, other content under the same id is
    // a conflict, a bad reading refuses the whole batch.
    let reading = |time: &str, value: f64| medvault_proto::devices::Reading {
        device: meter_id.clone(),
        time: time.to_owned(),
        value: Some(value),
        unit: "mmol/L".into(),
        limit: None,
    };
    let at = medvault_fhir::resources::instant(server.clock.now() - time::Duration::hours(1));
    let batch = UploadBatch {
        batch_id: "one".into(),
        readings: vec![reading(&at, 5.5)],
    };
    assert!(!erika.upload_readings(&batch).await.unwrap().replayed);
    assert!(erika.upload_readings(&batch).await.unwrap().replayed);
    let other = UploadBatch {
        batch_id: "one".into(),
        readings: vec![reading(&at, 5.6)],
    };
    assert!(erika.upload_readings(&other).await.is_err());
    let half_bad = UploadBatch {
        batch_id: "two".into(),
        readings: vec![
            reading(
                &medvault_fhir::resources::instant(server.clock.now() - time::Duration::minutes(5)),
                5.0,
            ),
            reading(&at, 9.9),
        ],
    };
    assert!(
        erika.upload_readings(&half_bad).await.is_err(),
        "conflicts with a stored reading"
    );
    let before = erika.export_device_data().await.unwrap()["entry"]
        .as_array()
        .unwrap()
        .len();
    assert!(erika.upload_readings(&half_bad).await.is_err());
    assert_eq!(
        erika.export_device_data().await.unwrap()["entry"]
            .as_array()
            .unwrap()
            .len(),
        before,
        "nothing of a refused batch is stored"
    );

    let tokens = hddt::pair(
        server,
        &setup.diga,
        DIGA,
        REDIRECT,
        &erika,
        &format!("{CGM_SCOPE} {BG_SCOPE} {DEVICE_SCOPES}"),
        &[CGM_MIV, BG_MIV],
    )
    .await;
    let token = tokens["access_token"].as_str().unwrap();
    // Readings older than the summary's period: no match, as an
    // OperationOutcome, never an empty Bundle.
    let (status, none) = post_json(
        server,
        &setup.diga,
        token,
        "/fhir/Observation$hddt-cgm-summary",
        r#"{"resourceType":"Parameters","parameter":[{"name":"effectivePeriodStart","valueDateTime":"2020-01-01T00:00:00Z"},{"name":"effectivePeriodEnd","valueDateTime":"2020-01-10T00:00:00Z"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(none["resourceType"], "OperationOutcome");
    assert_eq!(
        none["issue"][0]["details"]["coding"][0]["code"],
        "MSG_NO_MATCH"
    );
    // Public metadata, no certificate needed, JSON and XML.
    let metadata: Value = server
        .client(None)
        .get(server.hddt_url("/fhir/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    capture(server, &metadata);
    assert_eq!(metadata["fhirVersion"], "4.0.1");
    let types: Vec<&str> = metadata["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["Observation", "Device", "DeviceMetric"]);
    let xml = server
        .client(None)
        .get(server.hddt_url("/fhir/metadata"))
        .header("accept", "application/fhir+xml")
        .send()
        .await
        .unwrap();
    assert!(
        xml.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/fhir+xml")
    );
    assert!(xml.text().await.unwrap().contains(
        "<CapabilityStatement xmlns=\"http://hl7.org/fhir\"><id value=\"medvault-hddt\"/>"
    ));

    // Writes and requests without a registered certificate get
    // OperationOutcomes: 405 and 401, never 403 nor problem+json (digest §4).
    let diga_client = server.client(Some(&setup.diga));
    for (method, path) in [
        ("PUT", "/fhir/Observation/x"),
        ("DELETE", "/fhir/Observation/x"),
        ("PATCH", "/fhir/Device/x"),
        ("POST", "/fhir/Observation"),
        ("POST", "/fhir/Observation/x"),
    ] {
        let response = diga_client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                server.hddt_url(path),
            )
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], "GET, POST", "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome", "{method} {path}");
        assert_eq!(body["issue"][0]["code"], "not-supported");
        capture(server, &body);
    }
    // No certificate: 401 (an unregistered one is refused in the handshake).
    let stranger = TestCertificate::diga("stranger");
    assert!(
        server
            .client(Some(&stranger))
            .get(server.hddt_url("/fhir/Observation?_count=1"))
            .send()
            .await
            .is_err()
    );
    {
        let response = server
            .client(None)
            .get(server.hddt_url("/fhir/Observation?_count=1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/fhir+json")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert_eq!(body["issue"][0]["code"], "login");
        capture(server, &body);
    }

    // Signed by this server but wrong in one claim, or a refresh token
    // presented as an access token: 401 with the guide's texts.
    let claims: Value = {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let keys = server.state().hddt.keys();
    let now = server.clock.now().unix_timestamp();
    let mut forged = Vec::new();
    for (field, value, description) in [
        (
            "iss",
            serde_json::json!("https://other-ddr.example"),
            "Invalid token issuer",
        ),
        (
            "aud",
            serde_json::json!("https://other-ddr.example/fhir"),
            "Invalid token audience",
        ),
        (
            "nbf",
            serde_json::json!(now + 3600),
            "Token cannot be used yet",
        ),
        (
            "exp",
            serde_json::json!(now - 1),
            "The access token expired",
        ),
    ] {
        let mut changed = claims.clone();
        changed[field] = value;
        forged.push((
            keys.sign(medvault_oauth::ACCESS_TOKEN_TYPE, &changed)
                .await
                .unwrap(),
            description,
        ));
    }
    forged.push((
        keys.sign(medvault_oauth::REFRESH_TOKEN_TYPE, &claims)
            .await
            .unwrap(),
        "Token is not a signed JWT",
    ));
    for (candidate, description) in &forged {
        let (status, headers, body) =
            fhir_get(server, &setup.diga, candidate, "/fhir/Observation?_count=1").await;
        assert_eq!(status, 401, "{description}");
        assert_eq!(body["issue"][0]["diagnostics"], *description);
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains(description),
            "{description}"
        );
    }

    let client = server.client(Some(&setup.diga));
    let get = |path: &str, accept: Option<&str>| {
        let mut request = client.get(server.hddt_url(path)).bearer_auth(token);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send()
    };
    for (path, status, diagnostics) in [
        (
            "/fhir/Patient",
            404,
            "Resource type Patient is not supported",
        ),
        ("/fhir/Observation?subject=Patient/1", 400, "not allowed"),
        (
            "/fhir/Observation?foo=bar",
            400,
            "Unknown search parameter foo",
        ),
        (
            "/fhir/Observation?date=gt20250912",
            400,
            "Invalid date/time format or date range: gt20250912",
        ),
        (
            "/fhir/Observation?_include=Observation:subject",
            400,
            "Invalid _include parameter value: Observation:subject",
        ),
        (
            "/fhir/Observation/unknown-id",
            404,
            "Resource Observation/unknown-id is not known",
        ),
    ] {
        let response = get(path, None).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        capture(server, &body);
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert!(
            body["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(diagnostics),
            "{path}: {body}"
        );
    }
    // Content negotiation: 406 for what is not FHIR 4.0 JSON or XML.
    for accept in ["text/html", "application/fhir+json; fhirVersion=5.0"] {
        let response = get("/fhir/Observation", Some(accept)).await.unwrap();
        assert_eq!(response.status().as_u16(), 406, "{accept}");
    }
    let xml = get("/fhir/Observation?_count=2", Some("application/fhir+xml"))
        .await
        .unwrap();
    assert_eq!(xml.status().as_u16(), 200);
    let text = xml.text().await.unwrap();
    assert!(
        text.starts_with("<?xml") && text.contains("<Bundle xmlns=\"http://hl7.org/fhir\">"),
        "{text}"
    );
    // POST _search takes a form, 415 otherwise; it answers as GET does.
    let json_post = client
        .post(server.hddt_url("/fhir/Observation/_search"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(json_post.status().as_u16(), 415);
    let form_post: Value = client
        .post(server.hddt_url("/fhir/Observation/_search"))
        .bearer_auth(token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=http://loinc.org|14743-9&_count=5&_sort=-date")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(form_post["entry"].as_array().unwrap().len(), 5);
    // A code outside the granted ValueSets: empty Bundle with a warning.
    let (status, _, outside) =
        fhir_get(server, &setup.diga, token, "/fhir/Observation?code=85354-9").await;
    assert_eq!(status, 200);
    let entries = outside["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["search"]["mode"], "outcome");
    assert!(
        entries[0]["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("Code 85354-9 not in ValueSet")
    );
    // Beyond the historic period: empty, with the guide's warning.
    let (status, _, old) = fhir_get(
        server,
        &setup.diga,
        token,
        "/fhir/Observation?date=lt2020-01-01",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        old.to_string()
            .contains("outside the historical time range")
    );
    // No token, a forged token, another DiGA's certificate: 401 with the
    // guide's descriptions.
    let bare = client
        .get(server.hddt_url("/fhir/Observation"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    assert!(
        bare.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("Token is not a signed JWT")
    );
    let (status, headers, _) = fhir_get(
        server,
        &setup.diga,
        "eyJhbGciOiJub25lIn0.e30.",
        "/fhir/Observation",
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("Token is not a signed JWT")
    );
    let (status, _, _) = fhir_get(server, &setup.bg_only, token, "/fhir/Observation").await;
    assert_eq!(status, 401, "a token of another DiGA");
    // Planned maintenance: 503 transient, Retry-After, the maintenance
    // header; the public status feed says so; then back.
    let status_feed = |server: &TestServer| {
        let client = server.client(None);
        let url = server.hddt_url("/status.json");
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(status_feed(server).await["status"], "up");
    server
        .state()
        .fhir
        .set_maintenance(Some(&medvault_fhir::status::Maintenance {
            retry_after_secs: 120,
            until: None,
            since: medvault_fhir::resources::instant(server.clock.now()),
        }))
        .await
        .unwrap();
    let (status, headers, body) = fhir_get(server, &setup.diga, token, "/fhir/Observation").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "120");
    assert_eq!(headers["x-hddt-maintenance"], "planned");
    assert_eq!(body["issue"][0]["code"], "transient");
    let feed = status_feed(server).await;
    assert_eq!(feed["status"], "maintenance");
    assert_eq!(feed["maintenance"]["retry_after_secs"], 120);
    server.state().fhir.set_maintenance(None).await.unwrap();
    let (status, _, _) = fhir_get(server, &setup.diga, token, "/fhir/Observation?_count=1").await;
    assert_eq!(status, 200);
    // Expired.
    server.clock.advance(time::Duration::minutes(11));
    server.state().allow_list.reload().await.unwrap();
    let (status, headers, _) = fhir_get(server, &setup.diga, token, "/fhir/Observation").await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("The access token expired")
    );
    // A DiGA removed from the DiGA-VZ, on a connection it opened before:
    // 401 with an OperationOutcome (not 403, not problem+json).
    let removed = server.client(Some(&setup.bg_only));
    let opened = removed
        .get(server.hddt_url("/fhir/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    hddt::install_registry(
        server,
        vec![entry(
            DIGA,
            &setup.diga,
            vec![Miv::BloodGlucose, Miv::ContinuousGlucose],
        )],
    )
    .await;
    server.state().allow_list.reload().await.unwrap();
    let response = removed
        .get(server.hddt_url("/fhir/Observation?_count=1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    capture(server, &body);
    validate_captured(server, "fhir refusals");
}

/// The page source once it contains `needle` (the page a click started has
/// loaded), within ten seconds.
async fn wait_for(browser: &crate::pairing::WebDriver, needle: &str) -> String {
    for _ in 0..100 {
        let source = browser.page_source().await;
        if source.contains(needle) {
            return source;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the page never showed {needle:?}: {}",
        browser.page_source().await
    );
}

/// The patient portal as a patient and an auditor meet it, in headless
/// Chromium (no script on the page): a portal ticket from the app, devices,
/// the two glucose charts with the target range, the pairing revoked with a
/// click (the DiGA's next request is refused), the audit trail; the auditor
/// sees everyone's trail and no revoke button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_portal_works_in_headless_chromium() {
    let Some(chromedriver) = tokio::task::spawn_blocking(crate::pairing::chromedriver)
        .await
        .unwrap()
    else {
        return;
    };
    let setup = setup(Backend::Sqlite).await.unwrap();
    let server = &setup.server;
    let erika = patient(server, "erika@example.org").await;
    fill(server, &erika, 4).await;
    let tokens = hddt::pair(
        server,
        &setup.diga,
        DIGA,
        REDIRECT,
        &erika,
        &format!("{CGM_SCOPE} {DEVICE_SCOPES}"),
        &[CGM_MIV],
    )
    .await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let (status, _, _) = fhir_get(server, &setup.diga, &token, "/fhir/Observation?_count=1").await;
    assert_eq!(status, 200);
    // The read counts reach the database (every 5 s; here at once).
    server
        .state()
        .accesses
        .flush(&*server.state().store)
        .await
        .unwrap();
    // A consent ticket does not open the portal (and the other way round).
    let consent_ticket = erika.pairing_ticket().await.unwrap();
    let browser = crate::pairing::WebDriver::start(&chromedriver).await;
    browser.go(&server.patient_url("/portal")).await;
    browser
        .type_into("input[name=ticket]", &consent_ticket.ticket)
        .await;
    browser.click("button[type=submit]").await;
    wait_for(&browser, "unknown, used or expired").await;

    let ticket = erika.portal_ticket().await.unwrap();
    browser
        .type_into("input[name=ticket]", &ticket.ticket)
        .await;
    browser.click("button[type=submit]").await;
    let source = wait_for(&browser, "Devices").await;
    assert!(
        source.contains("GlukkoCGM 18") && source.contains("Glukko Meter 5"),
        "{source}"
    );
    assert!(source.contains("Last 24 hours") && source.contains("Last 14 days"));
    assert!(source.contains("class=\"target\""), "target range shaded");
    let lines = source.matches("class=\"cgm\"").count();
    assert!(lines >= 2, "one CGM line per chart at least: {lines}");
    assert!(
        source.matches("class=\"meter\"").count() >= 4,
        "meter readings as dots"
    );
    assert!(source.contains("Glukose-Tagebuch") && source.contains("active"));
    assert!(
        source.contains("hddt.pairing"),
        "the audit trail shows the pairing"
    );
    assert!(
        source.contains("GET /fhir/Observation</code></td><td>1</td>"),
        "who read what, when: {source}"
    );
    assert!(!source.contains("erika@example.org"));
    // The used ticket does not work twice.
    assert!(
        server
            .state()
            .hddt
            .redeem_portal_ticket(&ticket.ticket)
            .await
            .unwrap()
            .is_none()
    );

    browser
        .click("form[action='/portal/pairings/revoke'] button")
        .await;
    let source = wait_for(&browser, "hddt.unpairing").await;
    assert!(source.contains("revoked"), "{source}");
    assert!(source.contains("hddt.unpairing"));
    let (status, _, _) = fhir_get(server, &setup.diga, &token, "/fhir/Observation?_count=1").await;
    assert_eq!(status, 401, "revoked in the portal: the DiGA is refused");
    browser.click("form[action='/portal/logout'] button").await;
    wait_for(&browser, "input name=\"ticket\"").await;

    // An auditor: everyone's trail, read-only.
    let auditor = patient(server, "dpo@example.org").await;
    server
        .state()
        .store
        .set_hddt_state(
            &format!("auditor:{}", auditor.uid()),
            Some("test"),
            medvault_core::Clock::now(&*server.clock),
        )
        .await
        .unwrap();
    let ticket = auditor.portal_ticket().await.unwrap();
    browser
        .type_into("input[name=ticket]", &ticket.ticket)
        .await;
    browser.click("button[type=submit]").await;
    let source = wait_for(&browser, "Auditor view").await;
    assert!(
        source.contains(&erika.uid().to_string()),
        "other subjects are listed"
    );
    assert!(!source.contains("/portal/pairings/revoke"));
    browser.stop().await;
}

/// Two nodes on one database: pairing on A, data uploaded on B is read on A
/// and B alike, and a revocation made on B is refused on A at the next request.
async fn two_nodes_serve_one_database(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let node_a = &setup.server;
    // Behind one load balancer both nodes have the same public URLs.
    let node_b = node_a
        .second_node_with(|raw| {
            raw.oauth_issuer = Some(node_a.hddt_url(""));
            raw.fhir_base_url = Some(node_a.hddt_url("/fhir"));
        })
        .await;
    hddt::install_registry(
        &node_b,
        vec![
            entry(
                DIGA,
                &setup.diga,
                vec![Miv::BloodGlucose, Miv::ContinuousGlucose],
            ),
            entry(BG_ONLY, &setup.bg_only, vec![Miv::BloodGlucose]),
        ],
    )
    .await;
    let erika_a = patient(node_a, "erika@example.org").await;
    let tokens = hddt::pair(
        node_a,
        &setup.diga,
        DIGA,
        REDIRECT,
        &erika_a,
        &format!("{CGM_SCOPE} {BG_SCOPE} {DEVICE_SCOPES}"),
        &[CGM_MIV, BG_MIV],
    )
    .await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    // The patient's app talks to node B: devices and readings land there.
    let erika_b = node_b
        .sdk()
        .login_password("erika@example.org", &Password::new("device pw"))
        .await
        .unwrap();
    let (_, _, cgm_count, meter_count) = fill(&node_b, &erika_b, 6).await;
    for node in [node_a, &node_b] {
        let seen = all_pages(
            node,
            &setup.diga,
            &token,
            "/fhir/Observation?_count=500",
            async |_| {},
        )
        .await;
        let singles = seen
            .iter()
            .filter(|o| o.get("valueQuantity").is_some())
            .count();
        assert_eq!(singles, meter_count);
        assert!(seen.len() > singles && cgm_count > 0);
    }
    // Revoked on B; A refuses the very next request.
    erika_b
        .unpair(tokens["sub"].as_str().unwrap())
        .await
        .unwrap();
    let (status, headers, _) =
        fhir_get(node_a, &setup.diga, &token, "/fhir/Observation?_count=1").await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let (status, _, _) = fhir_get(&node_b, &setup.diga, &token, "/fhir/Observation?_count=1").await;
    assert_eq!(status, 401);
}

/// The portal over plain HTTP: the session cookie's attributes, the
/// security headers of its pages, and refused revocations: without or with
/// a wrong CSRF token, and another patient's Pairing ID (nothing changes);
/// the patient's own, with the token, ends the pairing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_refuses_forged_and_foreign_revocations() {
    let setup = setup(Backend::Sqlite).await.unwrap();
    let server = &setup.server;
    let erika = patient(server, "erika@example.org").await;
    let mallory = patient(server, "mallory@example.org").await;
    let tokens = hddt::pair(
        server,
        &setup.diga,
        DIGA,
        REDIRECT,
        &erika,
        &format!("{CGM_SCOPE} {DEVICE_SCOPES}"),
        &[CGM_MIV],
    )
    .await;
    let pairing_id = tokens["sub"].as_str().unwrap().to_owned();
    let browser = hddt::browser(server);
    let (erika_cookie, erika_csrf) = portal_login(server, &browser, &erika).await;
    let (mallory_cookie, mallory_csrf) = portal_login(server, &browser, &mallory).await;
    let revoke = |cookie: &str, form: Vec<(&'static str, String)>| {
        browser
            .post(server.patient_url("/portal/pairings/revoke"))
            .header("cookie", cookie.to_owned())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(hddt::encode(&form))
            .send()
    };
    let active = || async { erika.pairings().await.unwrap()[0].status == "active" };
    // No token, a wrong token, the other session's token: 403.
    for form in [
        vec![("pairing_id", pairing_id.clone())],
        vec![
            ("pairing_id", pairing_id.clone()),
            ("csrf", "0".repeat(erika_csrf.len())),
        ],
        vec![
            ("pairing_id", pairing_id.clone()),
            ("csrf", mallory_csrf.clone()),
        ],
    ] {
        let response = revoke(&erika_cookie, form).await.unwrap();
        assert_eq!(response.status(), 403);
        assert!(active().await);
    }
    // Another patient's Pairing ID with a valid session and token: nothing.
    let response = revoke(
        &mallory_cookie,
        vec![
            ("pairing_id", pairing_id.clone()),
            ("csrf", mallory_csrf.clone()),
        ],
    )
    .await
    .unwrap();
    assert!(
        response.status().is_redirection() || response.status() == 404,
        "{}",
        response.status()
    );
    assert!(active().await);
    // The patient's own, with the token: ended.
    let response = revoke(
        &erika_cookie,
        vec![
            ("pairing_id", pairing_id.clone()),
            ("csrf", erika_csrf.clone()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 303);
    assert!(!active().await);
}

/// A portal session of `who` over plain HTTP: `(cookie, csrf)`; checks the
/// cookie's attributes and the page's security headers on the way.
async fn portal_login(
    server: &TestServer,
    browser: &reqwest::Client,
    who: &Session,
) -> (String, String) {
    let ticket = who.portal_ticket().await.unwrap();
    let response = browser
        .post(server.patient_url("/portal/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(hddt::encode(&[("ticket", ticket.ticket.to_lowercase())]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(cookie.starts_with("__Host-medvault-portal="), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = browser
        .get(server.patient_url("/portal"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = page.text().await.unwrap();
    (cookie, hddt::hidden(&html, "csrf"))
}
