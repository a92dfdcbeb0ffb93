//! HDDT pairing end to end, as a DiGA and a patient meet it: mTLS PAR, the
//! consent page in a browser (plain form posts: the page has no script), the
//! patient's ticket from their own app, the code, PKCE, refresh, revoke; and
//! each refusal of the issue with the guide's error and an audit entry.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use medvault_audit::AuditQuery;
use medvault_client::{NewAccount, Password, Session};
use medvault_core::{Clock, DigaClientId, Miv, ParticipantKind};
use medvault_oauth::{AccessError, DigaRegistryEntry, DigaStatus};
use medvault_testkit::hddt::{self, VERIFIER, encode, query_value};
use medvault_testkit::{Backend, TestCertificate, TestServer};
use serde_json::Value;

on_both_backends!(
    a_diga_pairs_refreshes_and_is_revoked,
    every_refusal_is_the_guides_error,
    two_nodes_share_codes_tokens_and_revocation,
    another_patient_can_neither_end_nor_renew_a_pairing,
);

const DIGA: &str = "urn:diga:bfarm:12345";
const OTHER: &str = "urn:diga:bfarm:54321";
const REDIRECT: &str = "https://diga.example/callback";
const CGM: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement";
const BG: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-blood-glucose-measurement";
const BP: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-blood-pressure-value";

struct Setup {
    server: TestServer,
    diga: TestCertificate,
    other: TestCertificate,
    patient: Session,
}

fn entry(id: &str, certificate: &TestCertificate, status: DigaStatus) -> DigaRegistryEntry {
    DigaRegistryEntry {
        client_id: DigaClientId::parse(id).unwrap(),
        name: "Glukose-Tagebuch".to_owned(),
        status,
        redirect_uri: REDIRECT.to_owned(),
        mivs: vec![Miv::BloodGlucose, Miv::ContinuousGlucose],
        certificates: vec![certificate.der.clone()],
    }
}

fn par_form(scope: &str) -> Vec<(&'static str, String)> {
    hddt::par_form(DIGA, REDIRECT, scope)
}

fn code_form(code: &str, verifier: &str) -> Vec<(&'static str, String)> {
    hddt::code_form(DIGA, REDIRECT, code, verifier)
}

fn refresh_form(token: &str) -> Vec<(&'static str, String)> {
    hddt::refresh_form(DIGA, token)
}

async fn post(
    setup: &Setup,
    identity: Option<&TestCertificate>,
    path: &str,
    form: &[(&str, String)],
) -> (u16, Value) {
    hddt::post_form(&setup.server, &setup.server.client(identity), path, form).await
}

async fn open(setup: &Setup, request_uri: &str) -> (u16, String) {
    hddt::open_consent(&setup.server, DIGA, request_uri).await
}

async fn consent(setup: &Setup, page: &str, decision: &[(&str, &str)]) -> String {
    hddt::consent(&setup.server, &setup.patient, page, decision).await
}

async fn setup(backend: Backend) -> Option<Setup> {
    let server = TestServer::start_with(backend, |raw| {
        raw.registry_max_age_secs = Some(3600);
    })
    .await?;
    let diga = TestCertificate::diga("diga-backend");
    let other = TestCertificate::diga("other-diga-backend");
    hddt::install_registry(
        &server,
        vec![
            entry(DIGA, &diga, DigaStatus::Active),
            entry(OTHER, &other, DigaStatus::Active),
        ],
    )
    .await;
    let sdk = server.sdk();
    sdk.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some(("erika@example.org".to_owned(), Password::new("pairing pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    let patient = sdk
        .login_password("erika@example.org", &Password::new("pairing pw"))
        .await
        .unwrap();
    Some(Setup {
        server,
        diga,
        other,
        patient,
    })
}

async fn push(setup: &Setup, scope: &str) -> String {
    let (status, body) = post(setup, Some(&setup.diga), "/par", &par_form(scope)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_in"], 90);
    let uri = body["request_uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("urn:uuid:"));
    uri
}

const APPROVE_CGM: &[(&str, &str)] = &[
    ("miv", "hddt-miv-continuous-glucose-measurement"),
    ("days", "90"),
    ("decision", "approve"),
];

/// PAR → page → ticket login → approve → the code.
async fn authorize(setup: &Setup) -> String {
    let uri = push(
        setup,
        &format!("{CGM} {BG} patient/Device.rs patient/DeviceMetric.rs"),
    )
    .await;
    let (status, page) = open(setup, &uri).await;
    assert_eq!(status, 200);
    assert!(page.contains("Glukose-Tagebuch"));
    assert!(page.contains("will not learn who you are"));
    let location = consent(setup, &page, APPROVE_CGM).await;
    assert!(location.starts_with(REDIRECT));
    assert_eq!(
        query_value(&location, "state").as_deref(),
        Some("xyz-state")
    );
    query_value(&location, "code").unwrap()
}

/// Redeems `code` with the right verifier; the token response.
async fn redeem(setup: &Setup, code: &str) -> Value {
    let (status, tokens) = post(
        setup,
        Some(&setup.diga),
        "/token",
        &code_form(code, VERIFIER),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn audited(server: &TestServer, event_type: &str) -> Vec<medvault_audit::AuditRecord> {
    server
        .state()
        .audit
        .query(&AuditQuery {
            event_type: Some(event_type.to_owned()),
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

async fn a_diga_pairs_refreshes_and_is_revoked(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    // Metadata is public and complete.
    let metadata: Value = setup
        .server
        .client(None)
        .get(
            setup
                .server
                .hddt_url("/.well-known/oauth-authorization-server"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["require_pushed_authorization_requests"], true);
    assert_eq!(
        metadata["tls_client_certificate_bound_access_tokens"],
        false
    );
    assert_eq!(
        metadata["authorization_endpoint"],
        setup.server.patient_url("/authorize")
    );
    // The service documentation it names is there.
    let guide = setup
        .server
        .client(None)
        .get(metadata["service_documentation"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(guide.status(), 200);
    assert!(guide.text().await.unwrap().contains("Pairing ID"));

    let code = authorize(&setup).await;
    let (status, tokens) = post(
        &setup,
        Some(&setup.diga),
        "/token",
        &code_form(&code, VERIFIER),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 600);
    let pairing_id = tokens["sub"].as_str().unwrap().to_owned();
    assert_eq!(pairing_id.len(), 64);
    // Only what the patient chose: CGM, not blood glucose.
    assert_eq!(
        tokens["scope"],
        format!("{CGM} patient/Device.rs patient/DeviceMetric.rs")
    );
    let access = claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], pairing_id.as_str());
    assert_eq!(access["client_id"], DIGA);
    assert_eq!(access["iss"], setup.server.hddt_url(""));
    assert_eq!(access["aud"], setup.server.hddt_url("/fhir"));
    for claim in ["exp", "nbf", "iat", "jti", "scope"] {
        assert!(access.get(claim).is_some(), "{claim}");
    }
    // Nothing in what the DiGA sees names the patient.
    let uid = setup.patient.uid().to_string();
    let seen = format!(
        "{tokens}{}{}",
        access,
        claims(tokens["refresh_token"].as_str().unwrap())
    );
    assert!(!seen.contains(&uid) && !seen.contains("erika"));
    let context = setup
        .server
        .state()
        .hddt
        .validate_access(tokens["access_token"].as_str().unwrap(), &setup.diga.der)
        .await
        .unwrap();
    assert_eq!(context.patient_uid, uid);
    assert_eq!(
        setup
            .server
            .state()
            .hddt
            .validate_access(tokens["access_token"].as_str().unwrap(), &setup.other.der)
            .await,
        Err(AccessError::WrongClient)
    );

    // Refresh rotates; the old token within the grace period is refused
    // without ending the grant, and the new one works.
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, rotated) = post(
        &setup,
        Some(&setup.diga),
        "/token",
        &refresh_form(&first_refresh),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["sub"], pairing_id.as_str());
    let second_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh);
    let (status, body) = post(
        &setup,
        Some(&setup.diga),
        "/token",
        &refresh_form(&first_refresh),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Another DiGA cannot use it.
    let mut foreign = refresh_form(&second_refresh);
    foreign[2].1 = OTHER.to_owned();
    let (status, _) = post(&setup, Some(&setup.other), "/token", &foreign).await;
    assert_eq!(status, 400);
    let (status, rotated) = post(
        &setup,
        Some(&setup.diga),
        "/token",
        &refresh_form(&second_refresh),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");

    // A rotated signing key: tokens it signed still verify, new ones use
    // the new key.
    let old_kid = setup
        .server
        .state()
        .hddt
        .keys()
        .signing_key()
        .await
        .unwrap()
        .0;
    let new_kid = setup
        .server
        .state()
        .hddt
        .keys()
        .rotate_signing_key()
        .await
        .unwrap();
    assert_ne!(old_kid, new_kid);
    assert!(
        setup
            .server
            .state()
            .hddt
            .validate_access(rotated["access_token"].as_str().unwrap(), &setup.diga.der)
            .await
            .is_ok()
    );
    let (status, rotated) = post(
        &setup,
        Some(&setup.diga),
        "/token",
        &refresh_form(rotated["refresh_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(
                rotated["access_token"]
                    .as_str()
                    .unwrap()
                    .split('.')
                    .next()
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    assert_eq!(header["typ"], "at+jwt");
    let current = rotated["refresh_token"].as_str().unwrap().to_owned();

    // The patient sees the pairing.
    let pairings = setup.patient.pairings().await.unwrap();
    assert_eq!(pairings.len(), 1);
    assert_eq!(pairings[0].pairing_id, pairing_id);
    assert_eq!(pairings[0].status, "active");
    assert_eq!(pairings[0].diga_name.as_deref(), Some("Glukose-Tagebuch"));

    // Revoking another DiGA's token is refused and audited; unknown tokens are fine.
    let (status, body) = post(
        &setup,
        Some(&setup.other),
        "/revoke",
        &[("client_id", OTHER.to_owned()), ("token", current.clone())],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(
        audited(&setup.server, "hddt.unpairing_failed").await.len(),
        1
    );
    let (status, _) = post(
        &setup,
        Some(&setup.diga),
        "/revoke",
        &[
            ("client_id", DIGA.to_owned()),
            ("token", "not-a-token".to_owned()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    // The DiGA revokes: refresh and access tokens end at once.
    let (status, _) = post(
        &setup,
        Some(&setup.diga),
        "/revoke",
        &[
            ("client_id", DIGA.to_owned()),
            ("token", current.clone()),
            ("token_type_hint", "refresh_token".to_owned()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(&setup, Some(&setup.diga), "/token", &refresh_form(&current)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        setup
            .server
            .state()
            .hddt
            .validate_access(rotated["access_token"].as_str().unwrap(), &setup.diga.der)
            .await,
        Err(AccessError::Revoked)
    );
    let pairings = setup.patient.pairings().await.unwrap();
    assert_eq!(pairings[0].status, "revoked");
    assert_eq!(pairings[0].revoke_reason.as_deref(), Some("client"));
    assert_eq!(audited(&setup.server, "hddt.pairing").await.len(), 1);
    assert_eq!(audited(&setup.server, "hddt.unpairing").await.len(), 1);

    // Pairing again keeps the Pairing ID; the patient unpairs in their app.
    let code = authorize(&setup).await;
    let tokens = redeem(&setup, &code).await;
    assert_eq!(tokens["sub"], pairing_id.as_str());
    // The patient sees when a consent ends soon and renews it (same Pairing ID).
    let live = |pairings: Vec<medvault_proto::hddt::PairingView>| {
        pairings
            .into_iter()
            .find(|pairing| pairing.status == "active")
            .unwrap()
    };
    assert!(!live(setup.patient.pairings().await.unwrap()).expires_soon);
    setup.patient.renew_pairing(&pairing_id, 10).await.unwrap();
    let soon = live(setup.patient.pairings().await.unwrap());
    assert!(soon.expires_soon);
    assert_eq!(soon.pairing_id, pairing_id);
    let renewed = setup.patient.renew_pairing(&pairing_id, 365).await.unwrap();
    assert!(!live(setup.patient.pairings().await.unwrap()).expires_soon);
    assert!(renewed.consent_until > soon.consent_until);
    assert_eq!(
        audited(&setup.server, "hddt.consent_renewed").await.len(),
        2
    );
    setup.patient.unpair(&pairing_id).await.unwrap();
    assert!(setup.patient.renew_pairing(&pairing_id, 30).await.is_err());
    let (status, _) = post(
        &setup,
        Some(&setup.diga),
        "/token",
        &refresh_form(tokens["refresh_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 400);

    // The operational request log has every exchange, with the Pairing ID
    // and the guide's error codes, and nothing that names the patient.
    let dir = setup.server.data_dir.path().join("request-log");
    let tokens_logged = medvault_server::request_log::read(
        &dir,
        &medvault_server::request_log::LogFilter {
            endpoint: Some("/token".to_owned()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(tokens_logged.len() >= 6);
    assert!(tokens_logged.iter().any(|line| line["status"] == 200
        && line["pairing_id"] == pairing_id.as_str()
        && line["partner_id"] == DIGA
        && line["event_type"] == "oauth.token"));
    assert!(
        tokens_logged
            .iter()
            .any(|line| line["status"] == 400 && line["error_code"] == "invalid_grant")
    );
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert!(medvault_server::request_log::verify_file(&path).unwrap() > 0);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&uid) && !text.contains("erika"));
    }
    setup.server.stop().await;
}

async fn every_refusal_is_the_guides_error(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let refused = |expected_status: u16, expected_error: &'static str| {
        move |(status, body): (u16, Value)| {
            assert_eq!(status, expected_status, "{body}");
            assert_eq!(body["error"], expected_error, "{body}");
            body
        }
    };
    // Certificate of another DiGA than client_id.
    let body = refused(401, "invalid_client")(
        post(&setup, Some(&setup.other), "/par", &par_form(CGM)).await,
    );
    assert_eq!(
        body["error_description"],
        "The client certificate is not registered for this client_id"
    );
    // No certificate at all.
    refused(401, "invalid_client")(post(&setup, None, "/par", &par_form(CGM)).await);
    // An unregistered certificate is refused at the handshake, and audited.
    let stranger = TestCertificate::diga("not-registered");
    let attempt = setup
        .server
        .client(Some(&stranger))
        .post(setup.server.hddt_url("/par"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&par_form(CGM)))
        .send()
        .await;
    assert!(attempt.is_err());
    let fingerprint = format!(
        "cert:{}",
        medvault_server::client_auth::fingerprint(&stranger.der).to_hex()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let denied = audited(&setup.server, "mtls.access_denied").await;
        if denied
            .iter()
            .any(|entry| entry.actor == fingerprint && entry.detail.contains("handshake"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refused handshake was not audited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // redirect_uri outside the registry.
    let mut form = par_form(CGM);
    form[4].1 = "https://evil.example/callback".to_owned();
    refused(400, "invalid_request")(post(&setup, Some(&setup.diga), "/par", &form).await);
    // A scope outside the DiGA's MIVs, a wildcard scope.
    let body =
        refused(400, "invalid_scope")(post(&setup, Some(&setup.diga), "/par", &par_form(BP)).await);
    assert_eq!(
        body["error_description"],
        "The requested scope exceeds the scope granted to the client"
    );
    refused(400, "invalid_scope")(
        post(&setup, Some(&setup.diga), "/par", &par_form("patient/*.rs")).await,
    );
    // PKCE plain or missing.
    let mut form = par_form(CGM);
    form[2].1 = "plain".to_owned();
    refused(400, "invalid_request")(post(&setup, Some(&setup.diga), "/par", &form).await);
    let mut form = par_form(CGM);
    form.remove(3);
    refused(400, "invalid_request")(post(&setup, Some(&setup.diga), "/par", &form).await);
    // A request object.
    let mut form = par_form(CGM);
    form.push(("request", "eyJ.x.y".to_owned()));
    refused(400, "invalid_request")(post(&setup, Some(&setup.diga), "/par", &form).await);
    assert!(audited(&setup.server, "hddt.pairing_failed").await.len() >= 7);

    // request_uri: once, and not after it expired.
    let uri = push(&setup, CGM).await;
    assert_eq!(open(&setup, &uri).await.0, 200);
    assert_eq!(open(&setup, &uri).await.0, 400);
    let uri = push(&setup, CGM).await;
    let now = setup.server.clock.now();
    setup.server.clock.set(now + time::Duration::seconds(91));
    assert_eq!(open(&setup, &uri).await.0, 400);

    // PKCE wrong at the token endpoint: refused, the code stays usable once.
    let code = authorize(&setup).await;
    let wrong = "x".repeat(43);
    let body = refused(400, "invalid_grant")(
        post(
            &setup,
            Some(&setup.diga),
            "/token",
            &code_form(&code, &wrong),
        )
        .await,
    );
    assert_eq!(body["error_description"], "PKCE verification failed");
    let mut missing = code_form(&code, VERIFIER);
    missing.remove(2);
    refused(400, "invalid_request")(post(&setup, Some(&setup.diga), "/token", &missing).await);
    let tokens = redeem(&setup, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    // A reused code, after the grace period, revokes what it issued.
    let now = setup.server.clock.now();
    setup.server.clock.set(now + time::Duration::seconds(31));
    refused(400, "invalid_grant")(
        post(
            &setup,
            Some(&setup.diga),
            "/token",
            &code_form(&code, VERIFIER),
        )
        .await,
    );
    assert_eq!(
        setup
            .server
            .state()
            .hddt
            .validate_access(&access, &setup.diga.der)
            .await,
        Err(AccessError::Revoked)
    );

    // A rotated-out refresh token after the grace period revokes the grant.
    let code = authorize(&setup).await;
    let (_, tokens) = post(
        &setup,
        Some(&setup.diga),
        "/token",
        &code_form(&code, VERIFIER),
    )
    .await;
    let old = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, rotated) = post(&setup, Some(&setup.diga), "/token", &refresh_form(&old)).await;
    assert_eq!(status, 200);
    let now = setup.server.clock.now();
    setup.server.clock.set(now + time::Duration::seconds(31));
    refused(400, "invalid_grant")(
        post(&setup, Some(&setup.diga), "/token", &refresh_form(&old)).await,
    );
    refused(400, "invalid_grant")(
        post(
            &setup,
            Some(&setup.diga),
            "/token",
            &refresh_form(rotated["refresh_token"].as_str().unwrap()),
        )
        .await,
    );
    let reasons: Vec<String> = setup
        .patient
        .pairings()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|pairing| pairing.revoke_reason)
        .collect();
    assert!(reasons.contains(&"code_reuse".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"refresh_reuse".to_owned()), "{reasons:?}");

    // A consent asked for longer than a year is capped at one year.
    let uri = push(&setup, CGM).await;
    let (_, page) = open(&setup, &uri).await;
    let location = consent(
        &setup,
        &page,
        &[
            ("miv", "hddt-miv-continuous-glucose-measurement"),
            ("days", "1000"),
            ("decision", "approve"),
        ],
    )
    .await;
    assert!(query_value(&location, "code").is_some());
    let newest = &setup.patient.pairings().await.unwrap()[0];
    let until = time::OffsetDateTime::parse(
        &newest.consent_until,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let now = setup.server.clock.now();
    assert!(until <= now + time::Duration::days(365) && until > now + time::Duration::days(364));

    // A mistyped ticket: the login form again (401), and the right ticket
    // still works on the same page.
    let uri = push(&setup, CGM).await;
    let (_, page) = open(&setup, &uri).await;
    let retry = hddt::browser(&setup.server)
        .post(setup.server.patient_url("/authorize/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[
            ("request_uri", hddt::hidden(&page, "request_uri")),
            ("csrf", hddt::hidden(&page, "csrf")),
            ("ticket", "AAAAA-BBBBB-CCCCC-DDDDD".to_owned()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 401);
    let again = retry.text().await.unwrap();
    assert!(again.contains("name=\"ticket\"") && again.contains("not accepted"));
    let location = consent(&setup, &again, APPROVE_CGM).await;
    assert!(query_value(&location, "code").is_some());

    // Deny: the DiGA gets access_denied.
    let uri = push(&setup, CGM).await;
    let (_, page) = open(&setup, &uri).await;
    let location = consent(&setup, &page, &[("decision", "deny")]).await;
    assert_eq!(
        query_value(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(audited(&setup.server, "hddt.pairing_denied").await.len(), 1);

    // An inactive DiGA gets no tokens.
    let code = authorize(&setup).await;
    hddt::install_registry(
        &setup.server,
        vec![
            entry(DIGA, &setup.diga, DigaStatus::Inactive),
            entry(OTHER, &setup.other, DigaStatus::Active),
        ],
    )
    .await;
    let body = refused(401, "invalid_client")(
        post(
            &setup,
            Some(&setup.diga),
            "/token",
            &code_form(&code, VERIFIER),
        )
        .await,
    );
    assert_eq!(
        body["error_description"],
        "The authenticated client is not registered or not active in the DiGA directory"
    );

    // Registry stale past its maximum age: refused (fail closed) and audited.
    let now = setup.server.clock.now();
    setup.server.clock.set(now + time::Duration::seconds(3601));
    let mut form = par_form(CGM);
    form[0].1 = OTHER.to_owned();
    let body = refused(503, "temporarily_unavailable")(
        post(&setup, Some(&setup.other), "/par", &form).await,
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("DiGA directory")
    );
    assert_eq!(audited(&setup.server, "hddt.registry_stale").await.len(), 1);

    // Retired: every grant ends, /par and /token answer "no longer supported".
    medvault_server::hddt::refresh_registry(setup.server.state())
        .await
        .unwrap();
    setup
        .server
        .state()
        .hddt
        .retire("operator:test")
        .await
        .unwrap();
    let body =
        refused(410, "hddt_not_supported")(post(&setup, Some(&setup.other), "/par", &form).await);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("no longer supported")
    );
    setup.server.stop().await;
}

/// ChromeDriver (scripts/setup-chromium.sh installs Debian's chromium and
/// chromium-driver); `None`, said as SKIPPED, when it cannot be installed.
pub(crate) fn chromedriver() -> Option<String> {
    crate::setup_script("setup-chromium.sh", "consent page in Chromium")
}

/// A W3C WebDriver session over ChromeDriver's HTTP API.
pub(crate) struct WebDriver {
    http: reqwest::Client,
    base: String,
    session: String,
    process: std::process::Child,
}

impl WebDriver {
    pub(crate) async fn start(chromedriver: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&serde_json::json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                // The development CA is not in Chromium's store.
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"]
                }
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        let driver = Self {
            http,
            base,
            session,
            process,
        };
        // Element lookups wait for the page a click started to load.
        driver
            .call(
                reqwest::Method::POST,
                "/timeouts",
                serde_json::json!({"implicit": 10_000}),
            )
            .await;
        driver
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method, url);
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    pub(crate) async fn go(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({ "url": url }),
        )
        .await;
    }

    pub(crate) async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            )
            .await;
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    pub(crate) async fn click(&self, css: &str) {
        let element = self.find(css).await;
        let _ = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{element}/click"),
                serde_json::json!({}),
            )
            .await;
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            serde_json::json!({ "text": text }),
        )
        .await;
    }

    pub(crate) async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) async fn page_source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) async fn stop(mut self) {
        self.call(reqwest::Method::DELETE, "", Value::Null).await;
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The consent page as a patient meets it, in headless Chromium: the DiGA's
/// request, a ticket typed in, one of two MIVs unticked, approve; the browser
/// lands on the DiGA's (loopback) redirect URI with a code that redeems for
/// exactly the MIV left ticked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_page_works_in_headless_chromium() {
    let Some(chromedriver) = tokio::task::spawn_blocking(chromedriver).await.unwrap() else {
        return;
    };
    // The DiGA's redirect target: a loopback listener that answers "ok".
    let callback = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        callback.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = callback.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    let setup = setup(Backend::Sqlite).await.unwrap();
    let mut registered = entry(DIGA, &setup.diga, DigaStatus::Active);
    registered.redirect_uri = redirect.clone();
    hddt::install_registry(&setup.server, vec![registered]).await;
    let mut form = par_form(&format!("{CGM} {BG} patient/Device.rs"));
    form[4].1 = redirect.clone();
    let (status, pushed) = post(&setup, Some(&setup.diga), "/par", &form).await;
    assert_eq!(status, 201, "{pushed}");
    let request_uri = pushed["request_uri"].as_str().unwrap();
    let ticket = setup.patient.pairing_ticket().await.unwrap();

    let browser = WebDriver::start(&chromedriver).await;
    browser
        .go(&format!(
            "{}?{}",
            setup.server.patient_url("/authorize"),
            encode(&[
                ("client_id", DIGA.to_owned()),
                ("request_uri", request_uri.to_owned())
            ])
        ))
        .await;
    let source = browser.page_source().await;
    assert!(source.contains("Glukose-Tagebuch"), "{source}");
    assert!(source.contains("Die DiGA erfährt nicht, wer Sie sind"));
    browser
        .type_into("input[name=ticket]", &ticket.ticket)
        .await;
    browser.click("button[type=submit]").await;
    // Each MIV is its own choice: untick blood glucose, keep CGM.
    browser
        .click("input[value=hddt-miv-blood-glucose-measurement]")
        .await;
    browser.click("button[value=approve]").await;
    // The click returns before the navigation it starts has ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut landed = browser.current_url().await;
    while !landed.starts_with(&redirect) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        landed = browser.current_url().await;
    }
    let source = browser.page_source().await;
    browser.stop().await;
    assert!(landed.starts_with(&redirect), "{landed}: {source}");
    let code = query_value(&landed, "code").unwrap();
    assert_eq!(query_value(&landed, "state").as_deref(), Some("xyz-state"));
    let mut exchange = code_form(&code, VERIFIER);
    exchange[3].1 = redirect;
    let (status, tokens) = post(&setup, Some(&setup.diga), "/token", &exchange).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], format!("{CGM} patient/Device.rs"));
    setup.server.stop().await;
}

/// One DiGA's request rate is bounded: past the burst it gets 429 with
/// `Retry-After` (the OAuth error format on the OAuth endpoints, an
/// OperationOutcome on the FHIR API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diga_over_its_rate_gets_429_with_retry_after() {
    let server = TestServer::start_with(Backend::Sqlite, |raw| raw.hddt_rate_per_client = Some(1))
        .await
        .unwrap();
    let diga = TestCertificate::diga("busy-diga");
    hddt::install_registry(&server, vec![entry(DIGA, &diga, DigaStatus::Active)]).await;
    let client = server.client(Some(&diga));
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let response = client
            .post(server.hddt_url("/par"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(&hddt::par_form(DIGA, REDIRECT, CGM)))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    // The clock does not move: a burst of two, then refused.
    assert_eq!(statuses, [201, 201, 429, 429]);
    let last = last.unwrap();
    assert_eq!(last.headers()["retry-after"], "1");
    let body: Value = last.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // The FHIR API shares the DiGA's bucket and answers in FHIR's format.
    let fhir = client
        .get(server.hddt_url("/fhir/Observation?_count=1"))
        .bearer_auth("any")
        .send()
        .await
        .unwrap();
    assert_eq!(fhir.status(), 429);
    assert_eq!(fhir.headers()["retry-after"], "1");
    let body: Value = fhir.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], "throttled");
    server.stop().await;
}

/// What the mock BfArM registry answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Registry {
    /// Both DiGAs, over two pages.
    Both,
    /// Only the other DiGA: ours left the registry.
    OnlyOther,
    /// 500.
    Down,
}

/// A mock of BfArM's DiGA-VZ FHIR API over HTTPS (its own self-signed CA).
async fn mock_bfarm(
    pages: impl FnOnce(u16) -> [serde_json::Value; 3],
    mode: std::sync::Arc<std::sync::Mutex<Registry>>,
) -> (u16, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls_pki_types::pem::PemObject;

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca_pem = certified.cert.pem();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![certified.cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::from_pem_slice(
            certified.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pages = std::sync::Arc::new(pages(port));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let pages = pages.clone();
            let mode = mode.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let pages = pages.clone();
                        let mode = *mode.lock().unwrap();
                        async move {
                            let second = request
                                .uri()
                                .query()
                                .is_some_and(|query| query.contains("page=2"));
                            let (status, body) = match (mode, second) {
                                (Registry::Down, _) => (500, serde_json::json!({})),
                                (Registry::Both, false) => (200, pages[0].clone()),
                                (Registry::Both, true) => (200, pages[1].clone()),
                                (Registry::OnlyOther, _) => (200, pages[2].clone()),
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/fhir+json")
                                    .body(axum::body::Body::from(body.to_string()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, ca_pem)
}

/// The DiGA-VZ from BfArM's FHIR API (HealthApp DeviceDefinitions, paged):
/// loaded at start, the source of the mTLS allow-list, fail closed once
/// stale, and a DiGA that leaves the list is refused at the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_comes_from_bfarms_fhir_api() {
    let diga = TestCertificate::diga("bfarm-diga");
    let other = TestCertificate::diga("bfarm-other");
    let base = medvault_core::hddt::DEFAULT_VALUE_SET_BASE;
    let ours = medvault_oauth::health_app_resource(&entry(DIGA, &diga, DigaStatus::Active), base);
    let theirs =
        medvault_oauth::health_app_resource(&entry(OTHER, &other, DigaStatus::Active), base);
    let mode = std::sync::Arc::new(std::sync::Mutex::new(Registry::Both));
    let bundle = |resources: Vec<Value>, next: Option<String>| {
        serde_json::json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "link": next.map(|url| vec![serde_json::json!({"relation": "next", "url": url})]).unwrap_or_default(),
            "entry": resources.into_iter().map(|resource| serde_json::json!({"resource": resource})).collect::<Vec<_>>()
        })
    };
    // Page 1 links to page 2 on the mock's own port.
    let (port, ca_pem) = mock_bfarm(
        |port| {
            let next = format!("https://localhost:{port}/fhir/DeviceDefinition?page=2");
            [
                bundle(vec![ours], Some(next)),
                bundle(vec![theirs.clone()], None),
                bundle(vec![theirs], None),
            ]
        },
        mode.clone(),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("bfarm-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let server = TestServer::start_with(Backend::Sqlite, |raw| {
        raw.diga_registry_url = Some(format!("https://localhost:{port}/fhir/"));
        raw.diga_registry_ca_file = Some(ca_file.clone());
        raw.registry_max_age_secs = Some(3600);
    })
    .await
    .unwrap();
    let par = |identity: &TestCertificate, client_id: &str| {
        let client = server.client(Some(identity));
        let form = hddt::par_form(client_id, REDIRECT, CGM);
        let url = server.hddt_url("/par");
        async move {
            client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&form))
                .send()
                .await
                .map(|response| response.status().as_u16())
        }
    };
    // Both pages were read at start.
    assert_eq!(par(&diga, DIGA).await.unwrap(), 201);
    assert_eq!(par(&other, OTHER).await.unwrap(), 201);

    // The registry is down: the cached copy serves until its maximum age,
    // then every request relying on it is refused.
    *mode.lock().unwrap() = Registry::Down;
    assert!(
        medvault_server::hddt::refresh_registry(server.state())
            .await
            .is_err()
    );
    assert_eq!(par(&diga, DIGA).await.unwrap(), 201);
    let now = server.clock.now();
    server.clock.set(now + time::Duration::seconds(3601));
    assert_eq!(par(&diga, DIGA).await.unwrap(), 503);

    // Back, without our DiGA: its certificate leaves the allow-list.
    *mode.lock().unwrap() = Registry::OnlyOther;
    medvault_server::hddt::refresh_registry(server.state())
        .await
        .unwrap();
    assert!(par(&diga, DIGA).await.is_err());
    assert_eq!(par(&other, OTHER).await.unwrap(), 201);
    server.stop().await;
}

/// A DiGA that leaves the registry keeps its grants through the grace
/// period (one broken edit cannot unpair everyone) and loses them after it;
/// an MIV removed from a DiGA's permissions leaves its consents at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_reach_the_grants() {
    let setup = setup(Backend::Sqlite).await.unwrap();
    // Consent to both MIVs.
    let uri = push(&setup, &format!("{CGM} {BG} patient/Device.rs")).await;
    let (_, page) = open(&setup, &uri).await;
    let location = consent(
        &setup,
        &page,
        &[
            ("miv", "hddt-miv-continuous-glucose-measurement"),
            ("miv", "hddt-miv-blood-glucose-measurement"),
            ("days", "90"),
            ("decision", "approve"),
        ],
    )
    .await;
    let code = query_value(&location, "code").unwrap();
    let tokens = redeem(&setup, &code).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Blood glucose leaves the DiGA's permissions: the consent narrows.
    let mut narrowed = entry(DIGA, &setup.diga, DigaStatus::Active);
    narrowed.mivs = vec![Miv::ContinuousGlucose];
    hddt::install_registry(
        &setup.server,
        vec![
            narrowed.clone(),
            entry(OTHER, &setup.other, DigaStatus::Active),
        ],
    )
    .await;
    // Tokens leave it out at once; the stored consent narrows after the grace period.
    let (status, tokens) = post(&setup, Some(&setup.diga), "/token", &refresh_form(&refresh)).await;
    assert_eq!(status, 200);
    assert_eq!(tokens["scope"], format!("{CGM} patient/Device.rs"));
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    // (The patient's session ends with the clock moves: grants are read from the store.)
    let uid = setup.patient.uid().to_string();
    let store = setup.server.state().store.clone();
    assert!(
        store.grants_of_patient(&uid, 10).await.unwrap()[0]
            .scope
            .contains(BG)
    );
    assert!(
        audited(&setup.server, "hddt.consent_narrowed")
            .await
            .is_empty()
    );
    let now = setup.server.clock.now();
    setup.server.clock.set(now + time::Duration::hours(25));
    setup.server.state().allow_list.reload().await.unwrap();
    hddt::install_registry(
        &setup.server,
        vec![narrowed, entry(OTHER, &setup.other, DigaStatus::Active)],
    )
    .await;
    assert_eq!(
        store.grants_of_patient(&uid, 10).await.unwrap()[0].scope,
        format!("{CGM} patient/Device.rs")
    );
    assert_eq!(
        audited(&setup.server, "hddt.consent_narrowed").await.len(),
        1
    );

    // The DiGA leaves the registry: refused at once, grants kept for the grace period.
    hddt::install_registry(
        &setup.server,
        vec![entry(OTHER, &setup.other, DigaStatus::Active)],
    )
    .await;
    let live = |grants: Vec<medvault_store::GrantRowV1>| grants[0].revoked_at.is_none();
    assert!(live(store.grants_of_patient(&uid, 10).await.unwrap()));
    let now = setup.server.clock.now();
    setup.server.clock.set(now + time::Duration::hours(23));
    // (The allow-list re-reads on its own schedule; the test does not wait.)
    setup.server.state().allow_list.reload().await.unwrap();
    hddt::install_registry(
        &setup.server,
        vec![entry(OTHER, &setup.other, DigaStatus::Active)],
    )
    .await;
    assert!(live(store.grants_of_patient(&uid, 10).await.unwrap()));
    // Back within the grace period: nothing was lost.
    hddt::install_registry(
        &setup.server,
        vec![
            entry(DIGA, &setup.diga, DigaStatus::Active),
            entry(OTHER, &setup.other, DigaStatus::Active),
        ],
    )
    .await;
    let (status, tokens) = post(&setup, Some(&setup.diga), "/token", &refresh_form(&refresh)).await;
    assert_eq!(status, 200, "{tokens}");
    // Inactive for longer than the grace period: the grants end.
    hddt::install_registry(
        &setup.server,
        vec![
            entry(DIGA, &setup.diga, DigaStatus::Inactive),
            entry(OTHER, &setup.other, DigaStatus::Active),
        ],
    )
    .await;
    let now = setup.server.clock.now();
    setup.server.clock.set(now + time::Duration::hours(25));
    setup.server.state().allow_list.reload().await.unwrap();
    hddt::install_registry(
        &setup.server,
        vec![
            entry(DIGA, &setup.diga, DigaStatus::Inactive),
            entry(OTHER, &setup.other, DigaStatus::Active),
        ],
    )
    .await;
    let grants = store.grants_of_patient(&uid, 10).await.unwrap();
    assert_eq!(grants[0].revoke_reason.as_deref(), Some("registry"));
    setup.server.stop().await;
}

/// Two nodes on one database: a code and a refresh token, each raced on both
/// nodes at once, win exactly once (the loser gets invalid_grant, the pairing
/// survives), and
/// a revocation on A is refused on B at the next request.
async fn two_nodes_share_codes_tokens_and_revocation(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    // Behind one load balancer both nodes have the same public URLs.
    let node_b = setup
        .server
        .second_node_with(|raw| {
            raw.public_base_url = Some(setup.server.patient_url(""));
            raw.oauth_issuer = Some(setup.server.hddt_url(""));
            raw.fhir_base_url = Some(setup.server.hddt_url("/fhir"));
        })
        .await;
    hddt::install_registry(
        &node_b,
        vec![
            entry(DIGA, &setup.diga, DigaStatus::Active),
            entry(OTHER, &setup.other, DigaStatus::Active),
        ],
    )
    .await;
    // One code issued on A, redeemed on both nodes at the same moment:
    // exactly one wins, the other gets invalid_grant and the pairing lives.
    let code = authorize(&setup).await;
    let on_a = setup.server.client(Some(&setup.diga));
    let on_b = node_b.client(Some(&setup.diga));
    let redemption = code_form(&code, VERIFIER);
    let (a, b) = tokio::join!(
        hddt::post_form(&setup.server, &on_a, "/token", &redemption),
        hddt::post_form(&node_b, &on_b, "/token", &redemption)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{a:?} {b:?}");
    let (tokens, loser) = if a.0 == 200 { (a.1, b.1) } else { (b.1, a.1) };
    assert_eq!(loser["error"], "invalid_grant", "{loser}");
    assert!(
        setup
            .server
            .state()
            .hddt
            .validate_access(tokens["access_token"].as_str().unwrap(), &setup.diga.der)
            .await
            .is_ok(),
        "the code race ended the pairing"
    );
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // The same refresh token on both nodes at the same moment.
    let form = refresh_form(&refresh);
    let (a, b) = tokio::join!(
        hddt::post_form(&setup.server, &on_a, "/token", &form),
        hddt::post_form(&node_b, &on_b, "/token", &form)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{a:?} {b:?}");
    let loser = if a.0 == 400 { &a.1 } else { &b.1 };
    assert_eq!(loser["error"], "invalid_grant");
    let winner = if a.0 == 200 { &a.1 } else { &b.1 };
    // The pairing survives: the winner's tokens go on working on either node.
    let (status, next) = hddt::post_form(
        &node_b,
        &on_b,
        "/token",
        &refresh_form(winner["refresh_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    let access = next["access_token"].as_str().unwrap().to_owned();
    assert!(
        node_b
            .state()
            .hddt
            .validate_access(&access, &setup.diga.der)
            .await
            .is_ok()
    );

    // The patient revokes on A; B refuses the next request.
    let pairing_id = next["sub"].as_str().unwrap().to_owned();
    setup.patient.unpair(&pairing_id).await.unwrap();
    assert_eq!(
        node_b
            .state()
            .hddt
            .validate_access(&access, &setup.diga.der)
            .await,
        Err(AccessError::Revoked)
    );
    let (status, body) = hddt::post_form(
        &node_b,
        &on_b,
        "/token",
        &refresh_form(next["refresh_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    node_b.stop().await;
    setup.server.stop().await;
}

/// Patient B presents patient A's Pairing ID: revoking and renewing it are
/// refused as "no such pairing" (the same answer as for an unknown one, so
/// nothing tells B that it exists), and A's pairing and tokens are untouched.
async fn another_patient_can_neither_end_nor_renew_a_pairing(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let code = authorize(&setup).await;
    let client = setup.server.client(Some(&setup.diga));
    let (status, tokens) = hddt::post_form(
        &setup.server,
        &client,
        "/token",
        &code_form(&code, VERIFIER),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let pairing_id = tokens["sub"].as_str().unwrap().to_owned();
    let sdk = setup.server.sdk();
    sdk.register(NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: Some(("mallory@example.org".to_owned(), Password::new("other pw"))),
        tans: 0,
        software_certificate: false,
    })
    .await
    .unwrap();
    let mallory = sdk
        .login_password("mallory@example.org", &Password::new("other pw"))
        .await
        .unwrap();
    let unknown = "0".repeat(64);
    for target in [pairing_id.as_str(), unknown.as_str()] {
        let revoke = mallory.unpair(target).await.unwrap_err();
        assert_eq!(revoke.status(), Some(404), "{revoke}");
        let renew = mallory.renew_pairing(target, 30).await.unwrap_err();
        assert_eq!(renew.status(), Some(404), "{renew}");
    }
    assert!(mallory.pairings().await.unwrap().is_empty());
    let pairings = setup.patient.pairings().await.unwrap();
    assert_eq!(pairings.len(), 1);
    assert_eq!(pairings[0].status, "active");
    assert!(pairings[0].revoked_at.is_none());
    assert!(
        setup
            .server
            .state()
            .hddt
            .validate_access(tokens["access_token"].as_str().unwrap(), &setup.diga.der)
            .await
            .is_ok()
    );
    setup.server.stop().await;
}

/// The consent decision needs the interaction's CSRF token: without it or
/// with a wrong one it is refused and spends nothing, so the patient's own
/// decision with the right token still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_decision_without_its_csrf_token_is_refused() {
    let setup = setup(Backend::Sqlite).await.unwrap();
    let server = &setup.server;
    let request_uri = push(&setup, CGM).await;
    let (status, page) = hddt::open_consent(server, DIGA, &request_uri).await;
    assert_eq!(status, 200);
    let csrf = hddt::hidden(&page, "csrf");
    let browser = hddt::browser(server);
    let ticket = setup.patient.pairing_ticket().await.unwrap();
    let logged_in = browser
        .post(server.patient_url("/authorize/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(hddt::encode(&[
            ("request_uri", request_uri.clone()),
            ("csrf", csrf.clone()),
            ("ticket", ticket.ticket.to_lowercase()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(logged_in.status(), 200);
    let decide = |csrf: Option<String>| {
        let mut form = vec![("request_uri", request_uri.clone())];
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf));
        }
        for (name, value) in APPROVE_CGM {
            form.push((name, (*value).to_owned()));
        }
        browser
            .post(server.patient_url("/authorize/decision"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(hddt::encode(&form))
            .send()
    };
    for forged in [None, Some("A".repeat(csrf.len()))] {
        let response = decide(forged).await.unwrap();
        assert_eq!(response.status(), 400);
        assert!(response.headers().get("location").is_none());
    }
    assert!(setup.patient.pairings().await.unwrap().is_empty());
    let response = decide(Some(csrf.clone())).await.unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(hddt::query_value(location, "code").is_some(), "{location}");
}
