//! Routes, limits and error format common to both listeners.

use crate::assert_problem_json;
use medvault_testkit::{Backend, TestServer};

#[tokio::test]
async fn health_and_ready_answer_on_both_listeners() {
    let server = TestServer::start().await;
    let client = server.client(None);
    for url in [server.patient_url("/health"), server.hddt_url("/health")] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["status"],
            "ok"
        );
    }
    for url in [server.patient_url("/ready"), server.hddt_url("/ready")] {
        assert_eq!(
            client.get(&url).send().await.unwrap().status(),
            200,
            "{url}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn ready_fails_when_the_database_is_gone() {
    let server = TestServer::start().await;
    let client = server.client(None);
    server.state().store.close().await;
    let response = client
        .get(server.patient_url("/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_problem_json(&response);
    // Liveness does not depend on the database.
    assert_eq!(
        client
            .get(server.patient_url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn unknown_paths_are_problem_json_404() {
    let server = TestServer::start().await;
    let response = server
        .client(None)
        .get(server.patient_url("/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_problem_json(&response);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_with_413() {
    use medvault_client::{NewAccount, Password};
    use medvault_core::{Clock, DigaClientId, Miv, ParticipantKind};
    use medvault_oauth::{DigaRegistryEntry, DigaStatus};
    use medvault_proto::devices::{NewDevice, Reading, UploadBatch};
    use medvault_testkit::{TestCertificate, hddt};

    let server = TestServer::start_with(Backend::Sqlite, |raw| {
        raw.body_limit_bytes = Some(2048);
        raw.max_upload_bytes = Some(65_536);
        raw.max_document_bytes = Some(65_536);
    })
    .await
    .unwrap();
    let response = server
        .client(None)
        .post(server.patient_url("/health"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_problem_json(&response);

    // The HDDT listener has the same limit, for a registered DiGA too.
    let diga = TestCertificate::diga("big-body-diga");
    hddt::install_registry(
        &server,
        vec![DigaRegistryEntry {
            client_id: DigaClientId::parse("urn:diga:bfarm:12345").unwrap(),
            name: "Big Body".to_owned(),
            status: DigaStatus::Active,
            redirect_uri: "https://diga.example/callback".to_owned(),
            mivs: vec![Miv::ContinuousGlucose],
            certificates: vec![diga.der.clone()],
        }],
    )
    .await;
    let response = server
        .client(Some(&diga))
        .post(server.hddt_url("/par"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "client_id=urn%3Adiga%3Abfarm%3A12345&state={}",
            "x".repeat(4096)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Reading batches have their own, larger limit; sealed documents theirs.
    let sdk = server.sdk();
    sdk.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some(("limits@example.org".to_owned(), Password::new("limits pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    let patient = sdk
        .login_password("limits@example.org", &Password::new("limits pw"))
        .await
        .unwrap();
    let meter = patient
        .register_device(&NewDevice {
            model: "glukko-meter-5".into(),
            serial_number: "GM-1".into(),
            unit: "mg/dL".into(),
        })
        .await
        .unwrap();
    let now = server.clock.now();
    let batch = |name: &str, count: i64| UploadBatch {
        batch_id: name.to_owned(),
        readings: (0..count)
            .map(|minute| Reading {
                device: meter.id.clone(),
                time: medvault_fhir::resources::instant(now - time::Duration::minutes(minute + 1)),
                value: Some(100.0),
                unit: "mg/dL".into(),
                limit: None,
            })
            .collect(),
    };
    let fits = batch("fits", 30);
    assert!(serde_json::to_vec(&fits).unwrap().len() > 2048);
    assert!(!patient.upload_readings(&fits).await.unwrap().replayed);
    let too_big = batch("too-big", 1000);
    assert!(serde_json::to_vec(&too_big).unwrap().len() > 65_536);
    let refused = patient.upload_readings(&too_big).await.unwrap_err();
    assert_eq!(refused.status(), Some(413), "{refused}");
    let refused = patient
        .send_document(&[], "too big", "text/plain", &vec![b'x'; 100_000])
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(413), "{refused}");
    assert!(patient.documents().await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn request_ids_are_generated_or_kept_when_well_formed() {
    let server = TestServer::start().await;
    let client = server.client(None);
    let generated = client
        .get(server.patient_url("/health"))
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
    let kept = client
        .get(server.patient_url("/health"))
        .header("x-request-id", "diga-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "diga-trace-42");
    let replaced = client
        .get(server.patient_url("/health"))
        .header("x-request-id", "evil\tlog line")
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "evil\tlog line");
    assert_eq!(generated.headers()["x-content-type-options"], "nosniff");
    assert!(
        generated
            .headers()
            .contains_key("strict-transport-security")
    );
    server.stop().await;
}

#[tokio::test]
async fn runs_on_postgres_too() {
    let Some(server) = TestServer::start_with(Backend::Postgres, |_| {}).await else {
        return;
    };
    let client = server.client(None);
    assert_eq!(
        client
            .get(server.patient_url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.state().store.backend().name(), "postgres");
    server.stop().await;
}

fn slow_routes(delay: std::time::Duration) -> axum::Router<medvault_server::app::AppState> {
    axum::Router::new().route(
        "/slow",
        axum::routing::get(move || async move {
            tokio::time::sleep(delay).await;
            "done"
        }),
    )
}

#[tokio::test]
async fn a_request_over_the_timeout_gets_408_problem_json() {
    let server = TestServer::start_with_routes(
        Backend::Sqlite,
        |raw| raw.request_timeout_secs = Some(1),
        slow_routes(std::time::Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let response = server
        .client(None)
        .get(server.patient_url("/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 408);
    assert_problem_json(&response);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_accepts_no_new_ones() {
    let server = TestServer::start_with_routes(
        Backend::Sqlite,
        |_| {},
        slow_routes(std::time::Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    let client = server.client(None);
    let url = server.patient_url("/slow");
    let health = server.patient_url("/health");
    let ca = reqwest::Certificate::from_pem(&server.ca_pem).unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get(url).send().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A new connection is not accepted while shutting down.
    let fresh_client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let fresh = fresh_client.get(health).send().await;
    assert!(fresh.is_err(), "a new request was served during shutdown");
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    stopping.await.unwrap();
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    use std::sync::Arc;
    let server = TestServer::start_with(Backend::Sqlite, |raw| raw.max_connections = Some(1))
        .await
        .unwrap();
    let config = server
        .rustls_client_config(rustls::crypto::aws_lc_rs::default_provider(), None)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(server.patient_addr())
            .await
            .unwrap();
        connector.connect(name.clone(), tcp).await
    };
    let first = connect().await.unwrap();
    // The second handshake does not complete while the first connection is open.
    let second = tokio::time::timeout(std::time::Duration::from_millis(800), connect()).await;
    assert!(
        second.is_err(),
        "a second connection was served over the limit"
    );
    drop(first);
    let third = tokio::time::timeout(std::time::Duration::from_secs(10), connect()).await;
    assert!(matches!(third, Ok(Ok(_))), "the slot was not released");
    server.stop().await;
}

#[tokio::test]
async fn one_address_gets_at_most_its_share_of_connections() {
    use std::sync::Arc;
    let server =
        TestServer::start_with(Backend::Sqlite, |raw| raw.max_connections_per_ip = Some(2))
            .await
            .unwrap();
    let config = server
        .rustls_client_config(rustls::crypto::aws_lc_rs::default_provider(), None)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(server.patient_addr())
            .await
            .unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            connector.connect(name.clone(), tcp),
        )
        .await
    };
    let first = connect().await.unwrap().unwrap();
    let second = connect().await.unwrap().unwrap();
    // The third from the same address is closed at once (not left waiting).
    let third = connect().await.expect("closed promptly, not queued");
    assert!(
        third.is_err(),
        "a third connection from one address was accepted"
    );
    drop(first);
    // Give the server a moment to notice the close and free the slot.
    let mut accepted = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if matches!(connect().await, Ok(Ok(_))) {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the slot of a closed connection was not released");
    drop(second);
    server.stop().await;
}
