//! The Patient Credential end to end through HTTP with the SDK, on SQLite and
//! PostgreSQL: proofing -> code -> request -> credential -> IAL2 session;
//! revocation, suspension and the status lists; and each bad input refused
//! with a clear error and no state behind.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use medvault_client::{NewAccount, Password, Registered, Session, credential_request};
use medvault_core::{InstitutionKind, ParticipantKind};
use medvault_credential::{StatusPurpose, status_list_bit};
use medvault_crypto::SoftwareKey;
use medvault_crypto::did::P256PublicKey;
use medvault_crypto::jose::{JwsHeader, sign_es256};
use medvault_testkit::{Backend, TestServer};
use serde_json::{Value, json};

use crate::assert_problem_json;

on_both_backends!(
    proofing_to_an_ial2_session_and_revocation,
    bad_requests_and_presentations_leave_nothing_behind,
    one_request_raced_on_two_nodes_is_issued_once,
);

const EMAIL: &str = "erika.holder@example.org";

async fn setup(server: &TestServer) -> (Registered, Registered, Session, Session) {
    let sdk = server.sdk();
    let patient = sdk
        .register(NewAccount {
            kind: ParticipantKind::Patient,
            display_name: None,
            password: Some((EMAIL.to_owned(), Password::new("a long passphrase"))),
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
    let practice = sdk
        .register(NewAccount {
            kind: ParticipantKind::Institution(InstitutionKind::Practice),
            display_name: Some("Praxis Nord".to_owned()),
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
    let p = sdk
        .login_password(EMAIL, &Password::new("a long passphrase"))
        .await
        .unwrap();
    let i = sdk
        .login_superpin(practice.uid, &practice.superpin)
        .await
        .unwrap();
    p.invite(practice.uid).await.unwrap();
    i.accept(patient.uid).await.unwrap();
    (patient, practice, p, i)
}

/// Two nodes on one database: one credential request (one `jti`, one
/// code) sent to both at the same moment is issued exactly once; the loser
/// gets a problem+json 400, and the one credential is valid on either node.
async fn one_request_raced_on_two_nodes_is_issued_once(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    // Behind one load balancer both nodes have the same public URLs (the
    // issuer's did:web names them).
    let node_b = server
        .second_node_with(|raw| {
            raw.public_base_url = Some(server.patient_url(""));
            raw.oauth_issuer = Some(server.hddt_url(""));
            raw.fhir_base_url = Some(server.hddt_url("/fhir"));
        })
        .await;
    let (patient, _practice, p, i) = setup(&server).await;
    let code = i
        .record_proofing(patient.uid, "in-person", "id-card")
        .await
        .unwrap()
        .code;
    let device = SoftwareKey::generate().unwrap();
    let (request, _) = credential_request(&device, &code, medvault_client::USER_AGENT_ID).unwrap();
    let body = json!({ "request": request });
    let (a, b) = tokio::join!(
        post(
            &server,
            "/api/v1/patient-credentials",
            Some(p.token()),
            body.clone()
        ),
        post(
            &node_b,
            "/api/v1/patient-credentials",
            Some(p.token()),
            body.clone()
        ),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 400]);
    let (winner, loser) = if a.status() == 201 { (a, b) } else { (b, a) };
    assert!(
        loser.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
    let issued: Value = winner.json().await.unwrap();
    let credential = issued["credential"].as_str().unwrap();
    for node in [&server, &node_b] {
        let verified = node
            .sdk()
            .verify_patient_credential(credential)
            .await
            .unwrap();
        assert!(verified.valid, "{verified:?}");
    }
    assert_eq!(i.patient_credentials().await.unwrap().len(), 1);
    node_b.stop().await;
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn post(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = server
        .client(None)
        .post(server.patient_url(path))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn status_bit(
    server: &TestServer,
    practice: &Registered,
    purpose: &str,
    index: usize,
) -> bool {
    let response = server
        .client(None)
        .get(server.patient_url(&format!("/institutions/{}/status/{purpose}", practice.uid)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/vc+jwt");
    let list = claims(&response.text().await.unwrap());
    assert_eq!(list["vc"]["credentialSubject"]["statusPurpose"], purpose);
    status_list_bit(
        list["vc"]["credentialSubject"]["encodedList"]
            .as_str()
            .unwrap(),
        index,
    )
    .unwrap()
}

async fn proofing_to_an_ial2_session_and_revocation(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let (patient, practice, mut p, i) = setup(&server).await;
    let first = i
        .record_proofing(patient.uid, "in-person", "id-card")
        .await
        .unwrap();
    let device = SoftwareKey::generate().unwrap();
    // A new code for the proofing (the first was lost): the first stops working.
    let code = i.reissue_proofing_code(&first.proofing_id).await.unwrap();
    assert_eq!(code.proofing_id, first.proofing_id);
    let stale = p
        .request_patient_credential(&device, &first.code)
        .await
        .unwrap_err();
    assert_eq!(stale.status(), Some(400), "{stale}");
    assert_eq!(
        p.reissue_proofing_code(&first.proofing_id)
            .await
            .unwrap_err()
            .status(),
        Some(403),
        "only institutions"
    );
    // The SDK checks the credential against the institution's did:web document.
    let issued = p
        .request_patient_credential(&device, &code.code)
        .await
        .unwrap();
    assert_eq!(
        i.reissue_proofing_code(&first.proofing_id)
            .await
            .unwrap_err()
            .status(),
        Some(403),
        "no new code once the credential is issued"
    );
    assert_eq!(issued.institution_uid, practice.uid.to_string());
    let vc = claims(&issued.credential);
    let names = medvault_credential::DidWeb::new(&server.state().config.public_base_url).unwrap();
    assert_eq!(vc["iss"], names.institution(practice.uid));
    assert_eq!(vc["aud"], names.server());
    assert_eq!(
        vc["vc"]["type"],
        json!(["VerifiableCredential", "PatientCredential", "IAL2"])
    );
    assert_eq!(
        vc["vc"]["credentialSubject"]["physician"]["name"],
        "Praxis Nord"
    );
    assert_eq!(vc["sub"], medvault_client::device_did(&device).unwrap());
    let text = vc.to_string();
    for personal in [
        patient.uid.to_string(),
        EMAIL.to_owned(),
        "erika".to_owned(),
    ] {
        assert!(
            !text.contains(&personal),
            "the credential names the patient"
        );
    }
    // The kid is published in the JWKS.
    let jwks: Value = server
        .client(None)
        .get(server.patient_url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = issued.credential.split('.').next().map(|header| {
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        header["kid"].as_str().unwrap().to_owned()
    });
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|key| key["kid"].as_str() == kid.as_deref())
    );
    let verdict = server
        .sdk()
        .verify_patient_credential(&issued.credential)
        .await
        .unwrap();
    assert!(verdict.valid, "{verdict:?}");

    // Both see the credential; the practice cannot present it, nor see its text.
    assert_eq!(p.patient_credentials().await.unwrap().len(), 1);
    let issued_by_practice = i.patient_credentials().await.unwrap();
    assert_eq!(issued_by_practice[0].id, issued.id);
    assert_eq!(issued_by_practice[0].status, "active");

    // A holder of a credential needs IAL2 to remove a working credential.
    let credentials = p.credentials().await.unwrap();
    let superpin = credentials
        .iter()
        .find(|credential| credential.kind == "superpin")
        .unwrap()
        .id
        .clone();
    let refused = p.remove_credential(&superpin).await.unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");
    assert_eq!(p.whoami().await.unwrap().assurance, "IAL1");
    let refused = p.export_account().await.unwrap_err();
    assert_eq!(refused.status(), Some(403), "export needs IAL2: {refused}");
    let refused = p.export_device_data().await.unwrap_err();
    assert_eq!(
        refused.status(),
        Some(403),
        "so does the device-data export"
    );
    // An institution (no credential of its own) exports at once.
    let practice_export = i.export_account().await.unwrap();
    assert_eq!(
        practice_export["patient_credentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let old_token = p.token().to_owned();
    let presented = p
        .present_patient_credential(&device, &issued.credential)
        .await
        .unwrap();
    assert_eq!(presented.assurance, "IAL2");
    assert_eq!(p.whoami().await.unwrap().assurance, "IAL2");
    let old = server
        .client(None)
        .get(server.patient_url("/api/v1/session"))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401, "the IAL1 session was replaced");
    assert_eq!(
        p.export_device_data().await.unwrap()["type"],
        "collection",
        "at IAL2 the device data exports"
    );
    let export = p.export_account().await.unwrap();
    assert_eq!(export["format"], "medvault-export/1");
    assert_eq!(export["participant"]["uid"], patient.uid.to_string());
    assert_eq!(export["identity_proofings"][0]["method"], "in-person");
    assert_eq!(export["patient_credentials"][0]["id"], issued.id);
    assert_eq!(export["audit_complete"], true);
    let events: Vec<&str> = export["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event_type"].as_str().unwrap())
        .collect();
    for event in [
        "identity.proofed",
        "patient_credential.issued",
        "session.ial2",
    ] {
        assert!(events.contains(&event), "{event} in {events:?}");
    }
    p.remove_credential(&superpin).await.unwrap();

    // Suspension: verification fails and the IAL2 session ends; reinstating
    // restores both. Revocation is final.
    let index: usize = vc["vc"]["credentialStatus"][0]["statusListIndex"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(!status_bit(&server, &practice, "suspension", index).await);
    i.set_patient_credential_status(&issued.id, "suspended")
        .await
        .unwrap();
    assert!(status_bit(&server, &practice, "suspension", index).await);
    let verdict = server
        .sdk()
        .verify_patient_credential(&issued.credential)
        .await
        .unwrap();
    assert!(!verdict.valid);
    assert_eq!(
        verdict.error.as_deref(),
        Some("the credential is suspended")
    );
    assert_eq!(p.whoami().await.unwrap_err().status(), Some(401));
    i.set_patient_credential_status(&issued.id, "active")
        .await
        .unwrap();
    assert_eq!(
        p.whoami().await.unwrap_err().status(),
        Some(401),
        "reinstating does not revive the ended session"
    );
    let mut p = server
        .sdk()
        .login_password(EMAIL, &Password::new("a long passphrase"))
        .await
        .unwrap();
    p.present_patient_credential(&device, &issued.credential)
        .await
        .unwrap();
    assert_eq!(p.whoami().await.unwrap().assurance, "IAL2");

    // The patient cannot revoke; the institution can, at once.
    assert_eq!(
        p.set_patient_credential_status(&issued.id, "revoked")
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert!(
        !status_bit(
            &server,
            &practice,
            StatusPurpose::Revocation.as_str(),
            index
        )
        .await
    );
    i.set_patient_credential_status(&issued.id, "revoked")
        .await
        .unwrap();
    assert!(status_bit(&server, &practice, "revocation", index).await);
    assert_eq!(p.whoami().await.unwrap_err().status(), Some(401));
    let verdict = server
        .sdk()
        .verify_patient_credential(&issued.credential)
        .await
        .unwrap();
    assert_eq!(verdict.error.as_deref(), Some("the credential is revoked"));
    let again = i
        .set_patient_credential_status(&issued.id, "active")
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(404), "revocation is final");

    // The did:web documents.
    let document: Value = server
        .client(None)
        .get(server.patient_url(&format!("/institutions/{}/did.json", practice.uid)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["id"], names.institution(practice.uid));
    let unknown = server
        .client(None)
        .get(server.patient_url(&format!("/institutions/{}/did.json", patient.uid)))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404, "a patient is no issuer");
    let own: Value = server
        .client(None)
        .get(server.patient_url("/.well-known/did.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["id"], names.server());
}

/// A presentation's claims, as the SDK builds them (signed by a throwaway key:
/// only the claims are reused).
fn by_other_key_template(credential: &str, nonce: &str, audience: &str) -> String {
    let key = SoftwareKey::generate().unwrap();
    let mut claims =
        self::claims(&medvault_client::presentation(&key, credential, nonce, audience).unwrap());
    claims["iss"] = claims["vp"]["verifiableCredential"][0]
        .as_str()
        .map(|vc| self::claims(vc)["sub"].clone())
        .unwrap();
    sign_es256(&JwsHeader::es256("vp+jwt"), &claims, &key).unwrap()
}

fn unsigned(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn request_claims(key: &SoftwareKey, code: &str, jti: &str) -> Value {
    let public = P256PublicKey::from_uncompressed(&key.public_key()).unwrap();
    let now = medvault_testkit::wall_clock_now().unix_timestamp();
    json!({
        "grant_type": "authorization_code",
        "sub": public.did_key(),
        "client_id": medvault_client::USER_AGENT_ID,
        "key_protection": "software",
        "code": code,
        "iat": now,
        "exp": now + 120,
        "jti": jti,
        "jwk": public.to_jwk().unwrap(),
    })
}

async fn bad_requests_and_presentations_leave_nothing_behind(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let (patient, practice, p, i) = setup(&server).await;
    let code = i
        .record_proofing(patient.uid, "eid", "eid")
        .await
        .unwrap()
        .code;
    let device = SoftwareKey::generate().unwrap();
    let other = SoftwareKey::generate().unwrap();
    let issue = |request: String| {
        let token = p.token().to_owned();
        let server = &server;
        async move {
            post(
                server,
                "/api/v1/patient-credentials",
                Some(&token),
                json!({ "request": request }),
            )
            .await
        }
    };
    let header = JwsHeader::es256("JWT");
    let good = request_claims(&device, &code, "jti-0123456789abcdef");

    let mut wrong_sub = good.clone();
    wrong_sub["sub"] = json!(
        P256PublicKey::from_uncompressed(&other.public_key())
            .unwrap()
            .did_key()
    );
    let mut too_long = good.clone();
    too_long["exp"] = json!(good["iat"].as_i64().unwrap() + 365 * 86_400);
    let mut expired = good.clone();
    expired["iat"] = json!(good["iat"].as_i64().unwrap() - 900);
    expired["exp"] = json!(good["iat"].as_i64().unwrap() - 800);
    let mut untrusted = good.clone();
    untrusted["client_id"] = json!("Some Other Agent 1.0");
    let mut wrong_code = good.clone();
    wrong_code["code"] = json!("ABCD-EFGH-JKMN-PQRS");
    let mut stranger = good.clone();
    stranger["unexpected"] = json!(true);
    let mut with_fragment = good.clone();
    with_fragment["sub"] = json!(format!("{}#0", good["sub"].as_str().unwrap()));
    let mut chatty_jwk = good.clone();
    let mut jwk = P256PublicKey::from_uncompressed(&device.public_key())
        .unwrap()
        .to_jwk()
        .unwrap();
    jwk.kid = Some("\u{1b}[31m look at me".to_owned());
    chatty_jwk["sub"] = json!(format!(
        "did:jwk:{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&jwk).unwrap())
    ));
    let cases: Vec<(&str, String)> = vec![
        (
            "signed by another key",
            sign_es256(&header, &good, &other).unwrap(),
        ),
        (
            "sub does not match jwk",
            sign_es256(&header, &wrong_sub, &device).unwrap(),
        ),
        (
            "exp a year ahead",
            sign_es256(&header, &too_long, &device).unwrap(),
        ),
        ("expired", sign_es256(&header, &expired, &device).unwrap()),
        (
            "untrusted user agent",
            sign_es256(&header, &untrusted, &device).unwrap(),
        ),
        (
            "unknown code",
            sign_es256(&header, &wrong_code, &device).unwrap(),
        ),
        (
            "unknown claim",
            sign_es256(&header, &stranger, &device).unwrap(),
        ),
        (
            "alg none",
            unsigned(&json!({"alg": "none", "typ": "JWT"}), &good, b""),
        ),
        (
            "alg HS256",
            unsigned(&json!({"alg": "HS256", "typ": "JWT"}), &good, &[7; 32]),
        ),
        ("not a JWS", "eyJ.eyJ".to_owned()),
        (
            "sub with a fragment",
            sign_es256(&header, &with_fragment, &device).unwrap(),
        ),
        (
            "did:jwk sub carrying extra members",
            sign_es256(&header, &chatty_jwk, &device).unwrap(),
        ),
        (
            "typed as a presentation",
            sign_es256(&JwsHeader::es256("vp+jwt"), &good, &device).unwrap(),
        ),
    ];
    for (case, request) in cases {
        let response = issue(request).await;
        assert_eq!(response.status(), 400, "{case}");
        assert_problem_json(&response);
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].is_string(), "{case}: {problem}");
    }
    // None of them used the code or recorded the jti: the good request works.
    let response = issue(sign_es256(&header, &good, &device).unwrap()).await;
    assert_eq!(response.status(), 201);
    let issued: Value = response.json().await.unwrap();
    let credential = issued["credential"].as_str().unwrap().to_owned();

    // A reused code, and a replayed jti with a fresh code, are refused.
    let response = issue(sign_es256(&header, &good, &device).unwrap()).await;
    assert_eq!(response.status(), 400);
    let second_code = i
        .record_proofing(patient.uid, "in-person", "passport")
        .await
        .unwrap()
        .code;
    let mut replay = good.clone();
    replay["code"] = json!(second_code.as_str());
    let response = issue(sign_es256(&header, &replay, &device).unwrap()).await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:medvault:problem:replayed-request");
    // ...and that code still works with a new jti.
    let (fresh, _) =
        credential_request(&device, &second_code, medvault_client::USER_AGENT_ID).unwrap();
    assert_eq!(issue(fresh).await.status(), 201);

    // A code is bound to its patient: another patient cannot use it.
    let third_code = i
        .record_proofing(patient.uid, "in-person", "passport")
        .await
        .unwrap()
        .code;
    let intruder_account = server
        .sdk()
        .register(NewAccount {
            kind: ParticipantKind::Patient,
            display_name: None,
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
    let intruder = server
        .sdk()
        .login_superpin(intruder_account.uid, &intruder_account.superpin)
        .await
        .unwrap();
    let stolen = intruder
        .request_patient_credential(&other, &third_code)
        .await
        .unwrap_err();
    assert_eq!(stolen.status(), Some(400), "{stolen}");
    // The institution cannot request credentials for itself.
    let institutional = i
        .request_patient_credential(&other, &third_code)
        .await
        .unwrap_err();
    assert_eq!(institutional.status(), Some(403));

    // An expired code: the request itself is timely (made at the server's
    // time, eleven minutes on), the code is not.
    let expiring = i
        .record_proofing(patient.uid, "in-person", "passport")
        .await
        .unwrap();
    server.clock.advance(time::Duration::minutes(11));
    let mut late = request_claims(&device, &expiring.code, "jti-late-0123456789");
    let at = medvault_core::Clock::now(&*server.clock).unix_timestamp();
    late["iat"] = json!(at);
    late["exp"] = json!(at + 120);
    let response = issue(sign_es256(&header, &late, &device).unwrap()).await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:medvault:problem:invalid-code",
        "{problem}"
    );
    server.clock.set(medvault_testkit::wall_clock_now());

    // Presentations: a reused nonce, another key, another holder's
    // credential, an untrusted issuer: all refused, the session unchanged.
    let challenge = |token: String| {
        let server = &server;
        async move {
            let response = post(
                server,
                "/api/v1/session/presentation-challenge",
                Some(&token),
                json!({}),
            )
            .await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let present = |token: String, presentation: String| {
        let server = &server;
        async move {
            post(
                server,
                "/api/v1/session/presentation",
                Some(&token),
                json!({ "presentation": presentation }),
            )
            .await
        }
    };
    let nonce = challenge(p.token().to_owned()).await;
    let audience = nonce["audience"].as_str().unwrap().to_owned();
    let nonce = nonce["nonce"].as_str().unwrap().to_owned();
    let by_other_key =
        medvault_client::presentation(&other, &credential, &nonce, &audience).unwrap();
    let response = present(p.token().to_owned(), by_other_key).await;
    assert_eq!(response.status(), 400);
    let untyped = {
        let mut claims = claims(&by_other_key_template(&credential, &nonce, &audience));
        claims["iat"] = json!(medvault_testkit::wall_clock_now().unix_timestamp());
        sign_es256(&JwsHeader::es256("JWT"), &claims, &device).unwrap()
    };
    assert_eq!(
        present(p.token().to_owned(), untyped).await.status(),
        400,
        "a presentation must be typed vp+jwt"
    );
    let wrong_audience =
        medvault_client::presentation(&device, &credential, &nonce, "did:web:elsewhere.example")
            .unwrap();
    assert_eq!(
        present(p.token().to_owned(), wrong_audience).await.status(),
        400
    );
    // A credential signed by a key that claims to be the practice's.
    let forged = {
        let mut vc = claims(&credential);
        vc["vc"]["type"] = json!(["VerifiableCredential", "PatientCredential", "IAL2"]);
        let mut header = JwsHeader::es256("vc+jwt");
        header.kid = Some("0123456789abcdef01234567".to_owned());
        sign_es256(&header, &vc, &other).unwrap()
    };
    let forged_presentation =
        medvault_client::presentation(&device, &forged, &nonce, &audience).unwrap();
    assert_eq!(
        present(p.token().to_owned(), forged_presentation)
            .await
            .status(),
        400
    );
    let foreign = {
        let mut vc = claims(&credential);
        vc["iss"] = json!(format!(
            "did:web:evil.example:institutions:{}",
            practice.uid
        ));
        let mut header = JwsHeader::es256("vc+jwt");
        header.kid = Some("k".to_owned());
        sign_es256(&header, &vc, &other).unwrap()
    };
    let verdict = server
        .sdk()
        .verify_patient_credential(&foreign)
        .await
        .unwrap();
    assert_eq!(
        verdict.error.as_deref(),
        Some("the issuer is not a trusted institution")
    );
    // The intruder cannot present the patient's credential, even with its key.
    // An account without a credential gets no nonce at all.
    let no_nonce = post(
        &server,
        "/api/v1/session/presentation-challenge",
        Some(intruder.token()),
        json!({}),
    )
    .await;
    assert_eq!(no_nonce.status(), 403);
    let theirs = medvault_client::presentation(&device, &credential, &nonce, &audience).unwrap();
    assert_eq!(
        present(intruder.token().to_owned(), theirs).await.status(),
        403
    );
    assert_eq!(
        p.whoami().await.unwrap().assurance,
        "IAL1",
        "nothing changed"
    );

    // The nonce still works once, then never again.
    let good_presentation =
        medvault_client::presentation(&device, &credential, &nonce, &audience).unwrap();
    let response = present(p.token().to_owned(), good_presentation.clone()).await;
    assert_eq!(response.status(), 200);
    let elevated: Value = response.json().await.unwrap();
    let new_token = elevated["token"].as_str().unwrap().to_owned();
    let response = present(new_token.clone(), good_presentation).await;
    assert_eq!(response.status(), 400, "a reused nonce");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "the nonce is unknown, used or expired");
    // A revoked credential is refused at presentation.
    i.set_patient_credential_status(issued["id"].as_str().unwrap(), "revoked")
        .await
        .unwrap();
    let fresh_login = server
        .sdk()
        .login_password(EMAIL, &Password::new("a long passphrase"))
        .await
        .unwrap();
    let nonce = challenge(fresh_login.token().to_owned()).await;
    let revoked = medvault_client::presentation(
        &device,
        &credential,
        nonce["nonce"].as_str().unwrap(),
        &audience,
    )
    .unwrap();
    let response = present(fresh_login.token().to_owned(), revoked).await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "the credential is revoked");
}

/// The Python interpreter of the black-box tests (scripts/setup-python.sh
/// makes the venv from conformance/requirements.txt); `None`, said as
/// SKIPPED, when it cannot be made.
fn python() -> Option<String> {
    crate::setup_script("setup-python.sh", "jose interop")
}

/// jwcrypto (not our JOSE code) verifies our request, credential, JWKS,
/// did:web document and status list, and makes a request and a presentation
/// that our server accepts (conformance/jose_interop.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jose_library_that_is_not_ours_agrees() {
    let Some(python) = tokio::task::spawn_blocking(python).await.unwrap() else {
        return;
    };
    let server = TestServer::start().await;
    let (patient, _practice, p, i) = setup(&server).await;
    let sdk_code = i
        .record_proofing(patient.uid, "in-person", "id-card")
        .await
        .unwrap()
        .code;
    let code = i
        .record_proofing(patient.uid, "in-person", "id-card")
        .await
        .unwrap()
        .code;
    let device = SoftwareKey::generate().unwrap();
    let (sdk_request, _) =
        credential_request(&device, &sdk_code, medvault_client::USER_AGENT_ID).unwrap();
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, &server.ca_pem).unwrap();
    let input = json!({
        "base_url": server.patient_url("/"),
        "ca_file": ca_file,
        "token": p.token(),
        "code": code.as_str(),
        "sdk_request": sdk_request,
    })
    .to_string();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../conformance/jose_interop.py"
    );
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|line| line.ends_with(" passed, 0 failed")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .filter(|line| line.starts_with("ok "))
            .count()
            >= 12,
        "{stdout}"
    );
}
