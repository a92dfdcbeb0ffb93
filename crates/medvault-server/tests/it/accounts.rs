//! Accounts and PKI end to end: the SDK against a real server over TLS, on
//! SQLite and on PostgreSQL.

use medvault_client::{ClientError, NewAccount, Password, Session};
use medvault_core::{ParticipantKind, Uid};
use medvault_crypto::{SealContext, SoftwareCredentialFile, seal};
use medvault_testkit::{Backend, TestServer};
use serde_json::json;

use crate::assert_problem_json;

/// Runs `$scenario(backend)` once per storage backend.
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario(medvault_testkit::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario(medvault_testkit::Backend::Postgres).await;
                }
            }
        )+
    };
}

on_both_backends!(
    every_working_credential_end_to_end,
    replays_and_malformed_requests_change_nothing,
    recovery_and_the_last_credential,
    a_tan_raced_on_two_nodes_works_once,
    registration_conflicts_leave_nothing_behind,
);

const EMAIL: &str = "Anna.Muster@example.org";

fn patient(password: &str, tans: u32, software_certificate: bool) -> NewAccount {
    NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some((EMAIL.to_owned(), Password::new(password))),
        tans,
        software_certificate,
    }
}

/// Seals a document to `uid`'s directory key from `sender` and checks that
/// `recipient` opens it.
async fn assert_can_open(sender: &Session, uid: Uid, recipient: &Session) {
    let entry = sender.directory_entry(uid).await.unwrap();
    let context = SealContext::new(b"medvault-test");
    let sealed = seal(&entry.root_public_key, &context, b"", b"lab results").unwrap();
    assert_eq!(
        recipient
            .root_credential()
            .open(&context, b"", &sealed)
            .unwrap()
            .as_slice(),
        b"lab results"
    );
}

async fn every_working_credential_end_to_end(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let sdk = server.sdk();
    let registered = sdk
        .register(patient("correct horse", 3, true))
        .await
        .unwrap();
    let uid = registered.uid;
    let file = registered.software_certificate.unwrap();
    // The key file round-trips through encrypted PEM.
    let pem = file.to_pem(Some(b"file passphrase")).unwrap();
    let file = SoftwareCredentialFile::from_pem(&pem, Some(b"file passphrase")).unwrap();

    let by_password = sdk
        .login_password("anna.muster@EXAMPLE.org", &Password::new("correct horse"))
        .await
        .unwrap();
    let by_superpin = sdk.login_superpin(uid, &registered.superpin).await.unwrap();
    let by_tan = sdk.login_tan(uid, 2, &registered.tans[1]).await.unwrap();
    let by_certificate = sdk.login_software(&file).await.unwrap();

    let sessions = [&by_password, &by_superpin, &by_tan, &by_certificate];
    let mut credential_ids: Vec<&str> = sessions.iter().map(|s| s.credential_id()).collect();
    credential_ids.sort_unstable();
    credential_ids.dedup();
    assert_eq!(
        credential_ids.len(),
        4,
        "each login used its own credential"
    );
    for session in sessions {
        assert_eq!(session.uid(), uid);
        let whoami = session.whoami().await.unwrap();
        assert_eq!(whoami.uid, uid.to_string());
        assert_eq!(whoami.credential_id, session.credential_id());
        // Every credential unlocks the same Root Credential.
        assert_can_open(&by_password, uid, session).await;
    }
    assert!(by_password.signing_key().is_some());
    assert!(by_certificate.signing_key().is_some());

    let credentials = by_superpin.credentials().await.unwrap();
    let kinds: Vec<&str> = credentials.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(credentials.len(), 4, "{kinds:?}");
    let tan = credentials.iter().find(|c| c.kind == "tan").unwrap();
    assert_eq!(tan.remaining, Some(2), "one TAN is used");

    // An institution registers with its name and sees the patient's entry.
    let practice = sdk
        .register(NewAccount {
            kind: ParticipantKind::Institution(medvault_core::InstitutionKind::Practice),
            display_name: Some("Praxis Dr. Weiß".into()),
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
    let practice_session = sdk
        .login_superpin(practice.uid, &practice.superpin)
        .await
        .unwrap();
    let entry = by_tan.directory_entry(practice.uid).await.unwrap();
    assert_eq!(entry.display_name.as_deref(), Some("Praxis Dr. Weiß"));
    assert_eq!(entry.working_credentials, 1);
    let patient_entry = practice_session.directory_entry(uid).await.unwrap();
    assert_eq!(patient_entry.display_name, None);
    assert_eq!(patient_entry.working_credentials, 4);
    assert_can_open(&practice_session, uid, &by_certificate).await;

    by_tan.logout().await.unwrap();
    server.state().audit.verify().await.unwrap();
}

async fn replays_and_malformed_requests_change_nothing(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let sdk = server.sdk();
    let registered = sdk.register(patient("pw", 2, true)).await.unwrap();
    let uid = registered.uid;
    let session = sdk.login_superpin(uid, &registered.superpin).await.unwrap();
    let before = session.credentials().await.unwrap();

    // A TAN works once.
    sdk.login_tan(uid, 1, &registered.tans[0]).await.unwrap();
    let reused = sdk
        .login_tan(uid, 1, &registered.tans[0])
        .await
        .unwrap_err();
    assert_eq!(reused.status(), Some(401), "{reused}");
    // A wrong password is refused.
    let wrong = sdk
        .login_password(EMAIL, &Password::new("not it"))
        .await
        .unwrap_err();
    assert_eq!(wrong.status(), Some(401), "{wrong}");

    // A signature challenge is answered once.
    let http = server.client(None);
    let file = registered.software_certificate.unwrap();
    let certified = sdk
        .ca()
        .verify_working_credential(
            &file.certificate,
            medvault_testkit::wall_clock_now().unix_timestamp(),
        )
        .unwrap();
    let start: serde_json::Value = http
        .post(server.patient_url("/api/v1/login/signature/start"))
        .json(&json!({"uid": uid.to_string(), "credential_id": certified.subject.working_credential_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nonce = base64_decode(start["nonce"].as_str().unwrap());
    let message = medvault_crypto::login_challenge(
        &nonce,
        &uid.to_string(),
        &certified.subject.working_credential_id,
    );
    let signature = base64_encode(&file.key.sign_challenge(&message).unwrap());
    let finish = json!({"challenge_id": start["challenge_id"], "signature": signature});
    let first = http
        .post(server.patient_url("/api/v1/login/signature/finish"))
        .json(&finish)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let replay = http
        .post(server.patient_url("/api/v1/login/signature/finish"))
        .json(&finish)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    assert_problem_json(&replay);

    // Malformed, oversized, mistyped and unauthenticated requests: 4xx problem+json.
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "not JSON",
            http.post(server.patient_url("/api/v1/login/code"))
                .header("content-type", "application/json")
                .body("{"),
            400,
        ),
        (
            "unknown field",
            http.post(server.patient_url("/api/v1/login/code")).json(
                &json!({"uid": uid.to_string(), "kind": "tan", "number": 2, "proof": "AA", "extra": 1}),
            ),
            400,
        ),
        (
            "bad base64",
            http.post(server.patient_url("/api/v1/login/code")).json(
                &json!({"uid": uid.to_string(), "kind": "tan", "number": 2, "proof": "+/=="}),
            ),
            400,
        ),
        (
            "bad uid",
            http.post(server.patient_url("/api/v1/login/code")).json(
                &json!({"uid": "not-a-uid", "kind": "tan", "number": 2, "proof": "AA"}),
            ),
            400,
        ),
        (
            "bad kind",
            http.post(server.patient_url("/api/v1/login/code")).json(
                &json!({"uid": uid.to_string(), "kind": "password", "number": 0, "proof": "AA"}),
            ),
            400,
        ),
        (
            "wrong content type",
            http.post(server.patient_url("/api/v1/login/code"))
                .body("uid=x"),
            415,
        ),
        (
            "oversized",
            http.post(server.patient_url("/api/v1/participants"))
                .header("content-type", "application/json")
                .body(vec![b' '; 2 * 1024 * 1024]),
            413,
        ),
        (
            "no session",
            http.get(server.patient_url("/api/v1/credentials")),
            401,
        ),
        (
            "forged session",
            http.get(server.patient_url("/api/v1/credentials"))
                .bearer_auth("mvs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            401,
        ),
    ];
    for (case, request, status) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{case}");
        assert_problem_json(&response);
    }

    // A session after logout is refused.
    let token = session.token().to_owned();
    let other = sdk.login_superpin(uid, &registered.superpin).await.unwrap();
    session.logout().await.unwrap();
    let after = http
        .get(server.patient_url("/api/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    assert_problem_json(&after);
    assert!(after.headers().contains_key("www-authenticate"));

    // Nothing changed but the used TAN.
    let now = other.credentials().await.unwrap();
    assert_eq!(now.len(), before.len());
    let tan_before = before.iter().find(|c| c.kind == "tan").unwrap();
    let tan_now = now.iter().find(|c| c.kind == "tan").unwrap();
    assert_eq!(
        (tan_before.remaining, tan_now.remaining),
        (Some(2), Some(1))
    );
}

async fn recovery_and_the_last_credential(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let sdk = server.sdk();
    let registered = sdk.register(patient("forgotten", 0, false)).await.unwrap();
    let uid = registered.uid;
    // The password is forgotten: SuperPIN login, then a new password.
    let session = sdk.login_superpin(uid, &registered.superpin).await.unwrap();
    let old = session
        .credentials()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.kind == "password")
        .unwrap();
    session.remove_credential(&old.id).await.unwrap();
    session
        .add_password(EMAIL, &Password::new("remembered now"))
        .await
        .unwrap();
    let by_password = sdk
        .login_password(EMAIL, &Password::new("remembered now"))
        .await
        .unwrap();
    assert_can_open(&session, uid, &by_password).await;
    assert_eq!(
        sdk.login_password(EMAIL, &Password::new("forgotten"))
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );

    // Throttling: wrong SuperPINs lock the account with Retry-After.
    let wrong =
        medvault_crypto::RecoveryCode::generate(medvault_crypto::CodeKind::SuperPin).unwrap();
    let mut throttled = None;
    for _ in 0..7 {
        match sdk.login_superpin(uid, &wrong).await {
            Err(ClientError::Api {
                status: 429,
                retry_after,
                ..
            }) => {
                throttled = retry_after;
                break;
            }
            Err(error) => assert_eq!(error.status(), Some(401), "{error}"),
            Ok(_) => panic!("a wrong SuperPIN logged in"),
        }
    }
    assert_eq!(throttled, Some(1));
    server.clock.advance(time::Duration::seconds(2));

    // Remove all but one credential: the last is refused.
    let session = sdk
        .login_password(EMAIL, &Password::new("remembered now"))
        .await
        .unwrap();
    let credentials = session.credentials().await.unwrap();
    let superpin = credentials.iter().find(|c| c.kind == "superpin").unwrap();
    session.remove_credential(&superpin.id).await.unwrap();
    let last = session
        .remove_credential(session.credential_id())
        .await
        .unwrap_err();
    assert_eq!(last.status(), Some(409), "{last}");
    // The SuperPIN no longer logs in.
    assert_eq!(
        sdk.login_superpin(uid, &registered.superpin)
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
}

async fn a_tan_raced_on_two_nodes_works_once(backend: Backend) {
    let Some(first) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let second = first.second_node().await;
    let (first_sdk, second_sdk) = (first.sdk(), second.sdk());
    let registered = first_sdk.register(patient("pw", 4, false)).await.unwrap();
    let uid = registered.uid;
    for (index, code) in registered.tans.iter().enumerate() {
        let number = u32::try_from(index + 1).unwrap();
        let (one, two) = tokio::join!(
            first_sdk.login_tan(uid, number, code),
            second_sdk.login_tan(uid, number, code),
        );
        let winners = [one.is_ok(), two.is_ok()];
        assert_eq!(
            winners.iter().filter(|ok| **ok).count(),
            1,
            "TAN {number}: {winners:?}"
        );
    }
    // A session opened on one node is valid on the other, and ends on both.
    let session = first_sdk
        .login_superpin(uid, &registered.superpin)
        .await
        .unwrap();
    let http = second.client(None);
    let seen = http
        .get(second.patient_url("/api/v1/session"))
        .bearer_auth(session.token())
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 200);
    let token = session.token().to_owned();
    session.logout().await.unwrap();
    let after = http
        .get(second.patient_url("/api/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

async fn registration_conflicts_leave_nothing_behind(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let sdk = server.sdk();
    let first = sdk.register(patient("pw", 0, false)).await.unwrap();
    let taken = sdk.register(patient("pw2", 5, true)).await.unwrap_err();
    assert_eq!(taken.status(), Some(409), "{taken}");
    // Named patients and nameless practices are refused.
    for (kind, name) in [
        (ParticipantKind::Patient, Some("Erika Mustermann")),
        (
            ParticipantKind::Institution(medvault_core::InstitutionKind::Pharmacy),
            None,
        ),
    ] {
        let refused = sdk
            .register(NewAccount {
                kind,
                display_name: name.map(str::to_owned),
                password: None,
                tans: 0,
                software_certificate: false,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(400), "{refused}");
    }
    // Only the first registration is in the store.
    let session = sdk
        .login_superpin(first.uid, &first.superpin)
        .await
        .unwrap();
    assert_eq!(session.credentials().await.unwrap().len(), 2);
    let records = server
        .state()
        .audit
        .query(&medvault_audit::AuditQuery {
            event_type: Some("participant.registered".into()),
            ..medvault_audit::AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
}

#[tokio::test]
async fn the_issuer_jwks_publishes_each_institution_signing_key() {
    let server = TestServer::start().await;
    let jwks = |server: &TestServer| {
        let client = server.client(None);
        let url = server.patient_url("/.well-known/jwks.json");
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(jwks(&server).await, json!({ "keys": [] }));
    let practice = server
        .sdk()
        .register(NewAccount {
            kind: ParticipantKind::Institution(medvault_core::InstitutionKind::Practice),
            display_name: Some("Praxis".into()),
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
    let (kid, _) = server
        .state()
        .issuer_keys
        .signing_key(practice.uid)
        .await
        .unwrap();
    let published = jwks(&server).await;
    assert_eq!(published["keys"][0]["kid"], kid);
    assert_eq!(published["keys"][0]["crv"], "P-256");
    assert!(published["keys"][0].get("d").is_none(), "no private member");
    // The secret that wraps the keys is a 0600 file in the keys directory.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.data_dir.path().join("keys/issuer-kek.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let server = TestServer::start().await;
    let document: serde_json::Value = server
        .client(None)
        .get(server.patient_url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/api/v1/ca",
        "/api/v1/participants",
        "/api/v1/participants/{uid}",
        "/api/v1/password/registration",
        "/api/v1/login/password/start",
        "/api/v1/login/password/finish",
        "/api/v1/login/code",
        "/api/v1/login/signature/start",
        "/api/v1/login/signature/finish",
        "/api/v1/session",
        "/api/v1/credentials",
        "/api/v1/credentials/{id}",
        "/api/v1/connections",
        "/api/v1/connections/{uid}",
        "/api/v1/connections/{uid}/accept",
        "/api/v1/documents",
        "/api/v1/documents/{id}",
        "/api/v1/account-requests/inspect",
        "/api/v1/account-requests/approve",
        "/api/v1/account-requests/result",
        "/api/v1/proofings",
        "/.well-known/jwks.json",
        "/api/v1/patient-credentials",
        "/api/v1/patient-credentials/{id}/status",
        "/api/v1/patient-credentials/verify",
        "/api/v1/hddt/tickets",
        "/api/v1/hddt/pairings",
        "/api/v1/hddt/pairings/{pairing_id}",
        "/api/v1/audit",
        "/api/v1/hddt/pairings/{pairing_id}/renew",
        "/api/v1/session/presentation-challenge",
        "/api/v1/session/presentation",
        "/.well-known/did.json",
        "/institutions/{uid}/did.json",
        "/institutions/{uid}/status/{purpose}",
        "/api/v1/proofings/{id}/code",
        "/api/v1/export",
        "/api/v1/device-models",
        "/api/v1/devices",
        "/api/v1/devices/{id}",
        "/api/v1/readings/batches",
        "/api/v1/export/fhir",
        "/api/v1/portal/tickets",
    ] {
        assert!(document["paths"][path].is_object(), "{path} undocumented");
    }
    // Every schema reference resolves.
    let text = document.to_string();
    for reference in text.split("#/components/schemas/").skip(1) {
        let name: String = reference
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        assert!(
            document["components"]["schemas"][&name].is_object(),
            "{name} missing"
        );
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Behind a configured reverse proxy the throttle counts the address in
/// `X-Forwarded-For`; the limits are settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_address_the_throttle_counts() {
    let server = TestServer::start_with(Backend::Sqlite, |raw| {
        raw.trusted_proxies = Some(vec!["127.0.0.1".into(), "::1/128".into()]);
        raw.login_free_address_failures = Some(2);
        raw.login_free_account_failures = Some(100);
    })
    .await
    .unwrap();
    let http = server.client(None);
    let attempt = |from: &'static str| {
        let request = http
            .post(server.patient_url("/api/v1/login/code"))
            .header("x-forwarded-for", format!("203.0.113.250, {from}"))
            .json(&json!({
                "uid": Uid::generate().to_string(),
                "kind": "superpin",
                "number": 0,
                "proof": base64_encode(&[0; 32]),
            }));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Two free failures, then locks: the address is refused within four tries
    // (the default of 20 free failures would need more than twenty).
    let mut tries = 0;
    while attempt("198.51.100.1").await != 429 {
        tries += 1;
        assert!(tries < 4, "the address limit of 2 did not apply");
    }
    assert!(tries >= 2, "two failures are free");
    assert_eq!(
        attempt("198.51.100.2").await,
        401,
        "another client behind the proxy"
    );
}
