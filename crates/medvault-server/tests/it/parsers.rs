//! Property tests of what parses network input: arbitrary or mutated bytes
//! never panic, and what parses is what was given. (cargo-fuzz needs a nightly
//! toolchain this project does not have; these run on stable in every CI run.)

use medvault_server::client_auth::ClientCertificate;
use medvault_testkit::TestCertificate;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_certificate_parser(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ClientCertificate::parse(&bytes);
    }

    #[test]
    fn mutated_certificates_never_panic_and_never_keep_the_fingerprint(
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        truncate in any::<bool>(),
    ) {
        let certificate = sample();
        let mut bytes = certificate.der.clone();
        let index = position.index(bytes.len());
        if truncate {
            bytes.truncate(index);
        } else {
            bytes[index] ^= flip;
        }
        if let Ok(parsed) = ClientCertificate::parse(&bytes) {
            // Whatever still parses is identified by its own bytes, never the original's.
            prop_assert_ne!(parsed.fingerprint, ClientCertificate::parse(&certificate.der).unwrap().fingerprint);
        }
    }
}

fn sample() -> &'static TestCertificate {
    static SAMPLE: std::sync::OnceLock<TestCertificate> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| TestCertificate::diga("property test"))
}

#[test]
fn trailing_bytes_after_a_certificate_are_refused() {
    let mut bytes = sample().der.clone();
    bytes.push(0);
    assert!(ClientCertificate::parse(&bytes).is_err());
}

/// Hostile JSON for the API: any shape, with the API's own field names mixed
/// in so that bodies get past the outer layers.
fn hostile_json() -> impl Strategy<Value = serde_json::Value> {
    let names = prop::sample::select(vec![
        "uid",
        "kind",
        "code",
        "proof",
        "number",
        "challenge_id",
        "ke1",
        "ke3",
        "email",
        "signature",
        "credential_id",
        "id",
        "slots",
        "recipients",
        "sealed_body",
        "patient_uid",
        "method",
        "evidence_type",
        "return_to",
        "display_name",
        "root_public_key",
        "credentials",
        "registration_request",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        "[A-Za-z0-9_-]{0,120}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 40, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::vec((names.clone(), inner), 0..8).prop_map(|pairs| {
                serde_json::Value::Object(
                    pairs
                        .into_iter()
                        .map(|(name, value)| (name.to_owned(), value))
                        .collect(),
                )
            }),
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_a_4xx_problem_and_never_a_5xx() {
    use medvault_testkit::TestServer;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let server = TestServer::start().await;
    let sdk = server.sdk();
    let registered = sdk
        .register(medvault_client::NewAccount {
            kind: medvault_core::ParticipantKind::Patient,
            display_name: None,
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
    let session = sdk
        .login_superpin(registered.uid, &registered.superpin)
        .await
        .unwrap();
    let client = server.client(None);
    let endpoints = [
        "/api/v1/participants",
        "/api/v1/password/registration",
        "/api/v1/login/password/start",
        "/api/v1/login/password/finish",
        "/api/v1/login/code",
        "/api/v1/login/signature/start",
        "/api/v1/login/signature/finish",
        "/api/v1/credentials",
        "/api/v1/connections",
        "/api/v1/documents",
        "/api/v1/proofings",
        "/api/v1/account-requests/inspect",
        "/api/v1/account-requests/approve",
        "/api/v1/account-requests/result",
    ];
    let mut runner = TestRunner::deterministic();
    let strategy = hostile_json();
    let mut seen = 0;
    for round in 0..24 {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        for endpoint in endpoints {
            let mut request = client.post(server.patient_url(endpoint)).json(&body);
            if round % 2 == 0 {
                request = request.bearer_auth(session.token());
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            assert!(
                (400..500).contains(&status),
                "{endpoint} answered {status} to {body}"
            );
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "{endpoint}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 24 * endpoints.len());
    // Raw garbage with a JSON content type too.
    for endpoint in endpoints {
        let response = client
            .post(server.patient_url(endpoint))
            .header("content-type", "application/json")
            .bearer_auth(session.token())
            .body(vec![0xff, 0xfe, b'{', 0x00])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{endpoint}");
    }
    server.state().audit.verify().await.unwrap();
}
