//! Mutual TLS on the HDDT listener: the live allow-list, checked at the
//! handshake and on every request.

use crate::assert_problem_json;
use std::sync::Arc;

use medvault_audit::AuditQuery;
use medvault_server::client_auth::{ClientCertError, RegisterError};
use medvault_testkit::{CertificateSpec, TestCertificate, TestServer, wall_clock_now};
use time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OWNER: &str = "urn:diga:bfarm:00294";

/// The status of `GET /client-certificate` on the HDDT listener, or `None` when
/// the connection itself was refused (the TLS handshake failed).
async fn whoami(server: &TestServer, client: &reqwest::Client) -> Option<u16> {
    match client
        .get(server.hddt_url("/client-certificate"))
        .send()
        .await
    {
        Ok(response) => Some(response.status().as_u16()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn public_routes_need_no_certificate_and_others_refuse_without_one() {
    let server = TestServer::start().await;
    let client = server.client(None);
    assert_eq!(
        client
            .get(server.hddt_url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in ["/client-certificate", "/anything-else"] {
        let response = client.get(server.hddt_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_problem_json(&response);
    }
    // The refusals are in the audit trail as unauthorized access attempts.
    let denied = server
        .state()
        .audit
        .query(&AuditQuery {
            event_type: Some("mtls.access_denied".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[0].outcome, "denied");
    let detail: serde_json::Value = serde_json::from_str(&denied[0].detail).unwrap();
    assert_eq!(detail["path"], "/client-certificate");
    assert_eq!(detail["reason"], "a client certificate is required");
    assert_eq!(detail["request_id"].as_str().unwrap().len(), 36);
    server.stop().await;
}

#[tokio::test]
async fn a_registered_self_signed_certificate_authenticates() {
    let server = TestServer::start().await;
    let certificate = TestCertificate::diga("DiGA Backend");
    let fingerprint = server.register(&certificate, OWNER).await;
    let response = server
        .client(Some(&certificate))
        .get(server.hddt_url("/client-certificate"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["fingerprint_sha256"], fingerprint.to_hex());
    assert_eq!(body["registered_for"], OWNER);
    assert!(body["subject"].as_str().unwrap().contains("DiGA Backend"));
    server.stop().await;
}

#[tokio::test]
async fn an_unregistered_certificate_gets_nothing() {
    let server = TestServer::start().await;
    server
        .register(&TestCertificate::diga("registered"), OWNER)
        .await;
    let stranger = TestCertificate::diga("stranger");
    // Refused in the handshake; the client-side error text varies with timing,
    // so only the absence of a 200 is asserted.
    let outcome = whoami(&server, &server.client(Some(&stranger))).await;
    assert!(matches!(outcome, None | Some(403)), "{outcome:?}");
    // The patient listener does not ask for certificates at all.
    assert_eq!(
        server
            .client(Some(&stranger))
            .get(server.patient_url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn registration_refuses_unusable_certificates() {
    let server = TestServer::start().await;
    let now = wall_clock_now();
    let cases = [
        (
            CertificateSpec {
                client_auth: false,
                ..CertificateSpec::diga("no clientAuth")
            },
            ClientCertError::WrongKeyUsage,
        ),
        (
            CertificateSpec {
                digital_signature: false,
                ..CertificateSpec::diga("no digitalSignature")
            },
            ClientCertError::WrongKeyUsage,
        ),
        (
            CertificateSpec {
                not_before: now - Duration::days(400),
                not_after: now - Duration::days(1),
                ..CertificateSpec::diga("expired")
            },
            ClientCertError::NotValidNow,
        ),
        (
            CertificateSpec {
                not_before: now + Duration::days(1),
                not_after: now + Duration::days(300),
                ..CertificateSpec::diga("future")
            },
            ClientCertError::NotValidNow,
        ),
    ];
    for (spec, expected) in cases {
        let certificate = TestCertificate::self_signed(&spec);
        match server
            .state()
            .allow_list
            .register(&certificate.der, OWNER, "operator:test")
            .await
        {
            Err(RegisterError::Certificate(error)) => {
                assert_eq!(error, expected, "{}", spec.common_name)
            }
            other => panic!("{}: {other:?}", spec.common_name),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_stops_working_when_the_clock_passes_its_end() {
    let server = TestServer::start().await;
    let certificate = TestCertificate::diga("soon expired");
    server.register(&certificate, OWNER).await;
    let client = server.client(Some(&certificate));
    assert_eq!(
        whoami(&server, &client).await.expect("connection refused"),
        200
    );
    server.clock.advance(Duration::days(400));
    // Same (kept-alive) connection: the per-request check refuses it.
    assert_eq!(
        whoami(&server, &client).await.expect("connection refused"),
        403
    );
    // A new connection is refused at the handshake (or with 403).
    let fresh = whoami(&server, &server.client(Some(&certificate))).await;
    assert!(matches!(fresh, None | Some(403)), "{fresh:?}");
    server.stop().await;
}

#[tokio::test]
async fn removal_takes_effect_on_open_connections_at_once() {
    let server = TestServer::start().await;
    let certificate = TestCertificate::diga("to be removed");
    let fingerprint = server.register(&certificate, OWNER).await;
    let client = server.client(Some(&certificate));
    assert_eq!(
        whoami(&server, &client).await.expect("connection refused"),
        200
    );
    assert!(
        server
            .state()
            .allow_list
            .remove(&fingerprint, "operator:test")
            .await
            .unwrap()
    );
    assert_eq!(
        whoami(&server, &client).await.expect("connection refused"),
        403
    );
    // Registering again at run time works without a restart.
    server.register(&certificate, OWNER).await;
    assert_eq!(
        whoami(&server, &client).await.expect("connection refused"),
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn removal_by_another_node_arrives_with_the_refresh() {
    let server =
        medvault_testkit::TestServer::start_with(medvault_testkit::Backend::Sqlite, |raw| {
            raw.allowlist_refresh_secs = Some(1);
        })
        .await
        .unwrap();
    let certificate = TestCertificate::diga("removed elsewhere");
    let fingerprint = server.register(&certificate, OWNER).await;
    let client = server.client(Some(&certificate));
    assert_eq!(
        whoami(&server, &client).await.expect("connection refused"),
        200
    );
    // Another node (or `medvault admin client-cert remove`) deletes the row directly.
    server
        .state()
        .store
        .remove_client_certificate(fingerprint.as_bytes())
        .await
        .unwrap();
    // Within the refresh interval the certificate stops working: with 403 on a
    // kept-alive connection, or at the handshake of a new one.
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        match client
            .get(server.hddt_url("/client-certificate"))
            .send()
            .await
        {
            Ok(response) if response.status() == 200 => continue,
            Ok(response) => {
                assert_eq!(response.status(), 403);
                refused = true;
                break;
            }
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the removed certificate still works after 5 s");
    server.stop().await;
}

/// Sends one HTTP/1.1 request on a TLS connection and returns the status code.
async fn status_over(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_resumed_tls_session_is_checked_per_request() {
    let server = TestServer::start().await;
    let certificate = TestCertificate::diga("resumer");
    let fingerprint = server.register(&certificate, OWNER).await;
    let mut config = server
        .rustls_client_config(
            rustls::crypto::aws_lc_rs::default_provider(),
            Some(&certificate),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    let tcp = tokio::net::TcpStream::connect(server.hddt_addr())
        .await
        .unwrap();
    let mut first = connector.connect(name.clone(), tcp).await.unwrap();
    assert_eq!(status_over(&mut first, "/client-certificate").await, 200);
    drop(first);

    server
        .state()
        .allow_list
        .remove(&fingerprint, "operator:test")
        .await
        .unwrap();
    // The client resumes its session: the handshake skips the certificate
    // verifier, so only the per-request check can refuse it.
    let tcp = tokio::net::TcpStream::connect(server.hddt_addr())
        .await
        .unwrap();
    let mut second = connector.connect(name, tcp).await.unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(status_over(&mut second, "/client-certificate").await, 403);
    server.stop().await;
}

#[tokio::test]
async fn matching_is_by_exact_certificate_not_by_issuer_or_subject() {
    let server = TestServer::start().await;
    let ca = medvault_testkit::TestCa::new("DiGA maker CA");
    let spec = CertificateSpec::diga("DiGA Backend");
    let registered = TestCertificate::issued_by(&spec, &ca);
    server.register(&registered, OWNER).await;
    let ok = server
        .client(Some(&registered))
        .get(server.hddt_url("/client-certificate"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Same CA, same subject, another key: not registered, so not accepted.
    let sibling = TestCertificate::issued_by(&spec, &ca);
    let outcome = whoami(&server, &server.client(Some(&sibling))).await;
    assert!(matches!(outcome, None | Some(403)), "{outcome:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_racing_reloads_are_never_lost() {
    // Regression: a reload that read the table just before a registration
    // committed used to overwrite the cache and drop the new certificate.
    let server = TestServer::start().await;
    let allow_list = server.state().allow_list.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reloader = tokio::spawn({
        let allow_list = allow_list.clone();
        let stop = stop.clone();
        async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                allow_list.reload().await.unwrap();
            }
        }
    });
    for n in 0..30 {
        let certificate = TestCertificate::diga(&format!("racer {n}"));
        server.register(&certificate, OWNER).await;
        let parsed = Arc::new(
            medvault_server::client_auth::ClientCertificate::parse(&certificate.der).unwrap(),
        );
        assert!(
            allow_list.authenticate(Some(&parsed)).is_ok(),
            "registration {n} was lost"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reloader.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_flood_of_refused_requests_is_counted_not_written_one_by_one() {
    let server =
        medvault_testkit::TestServer::start_with(medvault_testkit::Backend::Sqlite, |raw| {
            raw.audit_denied_per_second = Some(3);
        })
        .await
        .unwrap();
    let client = server.client(None);
    // The clock stands still: the bucket holds 3 tokens and does not refill.
    for _ in 0..10 {
        assert_eq!(
            client
                .get(server.hddt_url("/fhir/Observation"))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    let query = AuditQuery {
        event_type: Some("mtls.access_denied".into()),
        ..AuditQuery::default()
    };
    assert_eq!(server.state().audit.query(&query).await.unwrap().len(), 3);
    // A second later the next refusal is audited with the count of those only counted.
    server.clock.advance(Duration::seconds(1));
    assert_eq!(
        client
            .get(server.hddt_url("/fhir/Observation"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let denied = server.state().audit.query(&query).await.unwrap();
    assert_eq!(denied.len(), 4);
    let detail: serde_json::Value = serde_json::from_str(&denied[3].detail).unwrap();
    assert_eq!(detail["suppressed_before"], 7);
    server.stop().await;
}

#[tokio::test]
async fn allow_list_changes_are_audited() {
    let server = TestServer::start().await;
    let certificate = TestCertificate::diga("audited");
    let fingerprint = server.register(&certificate, OWNER).await;
    server
        .state()
        .allow_list
        .remove(&fingerprint, "operator:test")
        .await
        .unwrap();
    let changes: Vec<_> = server
        .state()
        .audit
        .query(&AuditQuery {
            subject: Some(OWNER.into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.actor, record.event_type))
        .collect();
    assert_eq!(
        changes,
        vec![
            (
                "operator:test".to_owned(),
                "mtls.certificate_registered".to_owned()
            ),
            (
                "operator:test".to_owned(),
                "mtls.certificate_removed".to_owned()
            ),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stale_allow_list_refuses_everyone() {
    let server = TestServer::start().await;
    let certificate = TestCertificate::diga("stale");
    server.register(&certificate, OWNER).await;
    let client = server.client(Some(&certificate));
    assert_eq!(
        whoami(&server, &client).await.expect("connection refused"),
        200
    );
    // The database goes away; once the last good reload is older than the
    // maximum age (4 h by default), nothing is let in.
    server.state().store.close().await;
    server
        .clock
        .advance(Duration::hours(4) + Duration::seconds(1));
    let response = whoami(&server, &client).await;
    assert!(matches!(response, None | Some(403)), "{response:?}");
}

#[tokio::test]
async fn refusals_of_a_presented_certificate_are_audited_even_during_a_flood() {
    let server =
        medvault_testkit::TestServer::start_with(medvault_testkit::Backend::Sqlite, |raw| {
            raw.audit_denied_per_second = Some(1);
        })
        .await
        .unwrap();
    let certificate = TestCertificate::diga("removed during a flood");
    let fingerprint = server.register(&certificate, OWNER).await;
    let with_certificate = server.client(Some(&certificate));
    assert_eq!(
        whoami(&server, &with_certificate)
            .await
            .expect("connection refused"),
        200
    );
    // Certificate-less requests use up the bucket.
    let anonymous = server.client(None);
    for _ in 0..5 {
        assert_eq!(
            anonymous
                .get(server.hddt_url("/x"))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    server
        .state()
        .allow_list
        .remove(&fingerprint, "operator:test")
        .await
        .unwrap();
    assert_eq!(
        whoami(&server, &with_certificate)
            .await
            .expect("connection refused"),
        403
    );
    let denied = server
        .state()
        .audit
        .query(&AuditQuery {
            event_type: Some("mtls.access_denied".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(
        denied
            .iter()
            .any(|record| record.actor == format!("cert:{}", fingerprint.to_hex())),
        "the refused certificate is not in the trail: {denied:?}"
    );
    server.stop().await;
}
