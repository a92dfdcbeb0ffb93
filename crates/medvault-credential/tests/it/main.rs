//! The Patient Credential's first steps on a real (SQLite) store: identity
//! proofing, the one-time code, and the checks on a device's request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "integration tests: a failed expectation must fail the test"
)]

use std::sync::Arc;

use medvault_accounts::Session;
use medvault_audit::{AuditQuery, AuditTrail, CheckpointKey};
use medvault_core::{Clock, ManualClock, Uid};
use medvault_credential::{
    EvidenceType, IdentityProofing, ProofingError, ProofingMethod, RequestError, RequestPolicy,
    verify_credential_request,
};
use medvault_crypto::SoftwareKey;
use medvault_crypto::did::P256PublicKey;
use medvault_crypto::jose::{JwsHeader, sign_es256};
use medvault_store::{ConnectionRowV1, ParticipantRowV1, Store};
use medvault_store_sqlite::SqliteStore;
use serde_json::json;
use time::Duration;
use time::macros::datetime;

struct Fixture {
    proofing: IdentityProofing,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    audit: Arc<AuditTrail>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("m.db")).await.unwrap());
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-23 09:00 UTC)));
    let (key, _) = CheckpointKey::generate().unwrap();
    let audit = Arc::new(AuditTrail::new(store.clone(), clock.clone(), Arc::new(key)));
    Fixture {
        proofing: IdentityProofing::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            Duration::minutes(10),
        ),
        store,
        clock,
        audit,
        _dir: dir,
    }
}

async fn participant(fixture: &Fixture, kind: &str, name: Option<&str>) -> Uid {
    let uid = Uid::generate();
    fixture
        .store
        .insert_participant(&ParticipantRowV1 {
            uid: uid.to_string(),
            kind: kind.to_owned(),
            display_name: name.map(str::to_owned),
            root_public_key: vec![9; 32],
            root_key_certificate: "c".into(),
            registered_at: fixture.clock.now(),
        })
        .await
        .unwrap();
    uid
}

async fn connect(fixture: &Fixture, a: Uid, b: Uid) {
    let (a, b) = (a.to_string(), b.to_string());
    let (low, high) = medvault_store::connection_pair(&a, &b);
    fixture
        .store
        .insert_connection(&ConnectionRowV1 {
            uid_low: low.to_owned(),
            uid_high: high.to_owned(),
            inviter: a.clone(),
            state: "pending".into(),
            created_at: fixture.clock.now(),
            accepted_at: None,
        })
        .await
        .unwrap();
    fixture
        .store
        .accept_connection(low, high, &b, fixture.clock.now())
        .await
        .unwrap();
}

fn session(uid: Uid) -> Session {
    Session {
        uid,
        credential_id: "wc".into(),
        expires_at: datetime!(2030-01-01 00:00 UTC),
        assurance: medvault_core::Assurance::Ial1,
        patient_credential_id: None,
    }
}

#[tokio::test]
async fn a_connected_patient_is_proofed_and_the_code_works_once() {
    let fixture = fixture().await;
    let practice = participant(&fixture, "institution:practice", Some("Praxis Nord")).await;
    let patient = participant(&fixture, "patient", None).await;
    let stranger = participant(&fixture, "patient", None).await;
    let doctor = participant(&fixture, "hcp", Some("Dr. A")).await;
    connect(&fixture, practice, patient).await;

    // Only institutions proof, and only connected patients.
    assert!(matches!(
        fixture
            .proofing
            .record(
                &session(doctor),
                patient,
                ProofingMethod::InPerson,
                EvidenceType::IdCard
            )
            .await,
        Err(ProofingError::NotAnInstitution)
    ));
    assert!(matches!(
        fixture
            .proofing
            .record(
                &session(practice),
                stranger,
                ProofingMethod::InPerson,
                EvidenceType::IdCard
            )
            .await,
        Err(ProofingError::NotConnectedPatient)
    ));
    assert!(matches!(
        fixture
            .proofing
            .record(
                &session(practice),
                doctor,
                ProofingMethod::InPerson,
                EvidenceType::IdCard
            )
            .await,
        Err(ProofingError::NotConnectedPatient)
    ));

    let issued = fixture
        .proofing
        .record(
            &session(practice),
            patient,
            ProofingMethod::InPerson,
            EvidenceType::IdCard,
        )
        .await
        .unwrap();
    assert_eq!(
        issued.expires_at,
        fixture.clock.now() + Duration::minutes(10)
    );
    // Bound to the patient: another patient cannot use it (and does not use it up).
    assert!(matches!(
        fixture.proofing.redeem(stranger, &issued.code).await,
        Err(ProofingError::Code)
    ));
    let proofing = fixture
        .proofing
        .redeem(patient, &issued.code)
        .await
        .unwrap();
    assert_eq!(proofing.institution_uid, practice.to_string());
    assert_eq!(
        (proofing.method.as_str(), proofing.evidence_type.as_str()),
        ("in-person", "id-card")
    );
    assert!(matches!(
        fixture.proofing.redeem(patient, &issued.code).await,
        Err(ProofingError::Code)
    ));
    // A second code expires unused.
    let late = fixture
        .proofing
        .record(
            &session(practice),
            patient,
            ProofingMethod::Eid,
            EvidenceType::Eid,
        )
        .await
        .unwrap();
    fixture.clock.advance(Duration::minutes(11));
    assert!(matches!(
        fixture.proofing.redeem(patient, &late.code).await,
        Err(ProofingError::Code)
    ));
    // Audited with method and evidence type, no document data.
    let records = fixture
        .audit
        .query(&AuditQuery {
            event_type: Some("identity.proofed".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].subject, patient.to_string());
}

const CLIENT: &str = "urn:medvault:app:patient-app";

/// The practice records an in-person proofing of the patient: its code.
async fn proof(fixture: &Fixture, practice: Uid, patient: Uid) -> medvault_credential::IssuedCode {
    fixture
        .proofing
        .record(
            &session(practice),
            patient,
            ProofingMethod::InPerson,
            EvidenceType::IdCard,
        )
        .await
        .unwrap()
}

fn device_did(key: &SoftwareKey) -> String {
    P256PublicKey::from_uncompressed(&key.public_key())
        .unwrap()
        .did_key()
}

fn request(key: &SoftwareKey, overrides: serde_json::Value) -> String {
    let public = P256PublicKey::from_uncompressed(&key.public_key()).unwrap();
    let now = datetime!(2026-11-23 09:00 UTC).unix_timestamp();
    let mut claims = json!({
        "grant_type": "authorization_code",
        "sub": public.did_key(),
        "client_id": CLIENT,
        "key_protection": "software",
        "code": "ABCD-EFGH-JKMN-PQRS",
        "iat": now,
        "exp": now + 120,
        "jti": "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    });
    for (name, value) in overrides.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    sign_es256(&JwsHeader::es256("JWT"), &claims, key).unwrap()
}

#[test]
fn a_well_formed_request_passes_and_each_bad_one_is_named() {
    let key = SoftwareKey::generate().unwrap();
    let public = P256PublicKey::from_uncompressed(&key.public_key()).unwrap();
    let policy = RequestPolicy::new(vec![CLIENT.to_owned()]);
    let now = datetime!(2026-11-23 09:00 UTC);
    let accepted = verify_credential_request(&request(&key, json!({})), now, &policy).unwrap();
    assert_eq!(accepted.device_key, public);
    assert_eq!(accepted.code.as_str(), "ABCD-EFGH-JKMN-PQRS");
    // did:jwk with a matching jwk claim passes too.
    let with_jwk = request(
        &key,
        json!({"sub": public.did_jwk().unwrap(), "jwk": public.to_jwk().unwrap()}),
    );
    verify_credential_request(&with_jwk, now, &policy).unwrap();

    let other = SoftwareKey::generate().unwrap();
    let other_public = P256PublicKey::from_uncompressed(&other.public_key()).unwrap();
    let cases: Vec<(String, RequestError)> = vec![
        (
            request(&key, json!({"sub": other_public.did_key()})),
            RequestError::Signature,
        ),
        (
            request(&key, json!({"jwk": other_public.to_jwk().unwrap()})),
            RequestError::KeyMismatch,
        ),
        (
            request(&key, json!({"sub": "did:web:example.org"})),
            RequestError::Subject,
        ),
        (
            request(&key, json!({"grant_type": "password"})),
            RequestError::GrantType,
        ),
        (
            request(&key, json!({"client_id": "urn:evil"})),
            RequestError::UntrustedClient,
        ),
        (
            request(&key, json!({"key_protection": "cloud"})),
            RequestError::KeyProtection,
        ),
        (
            request(&key, json!({"exp": now.unix_timestamp() + 365 * 86_400})),
            RequestError::Time("exp too far after iat"),
        ),
        (
            request(
                &key,
                json!({"iat": now.unix_timestamp() - 600, "exp": now.unix_timestamp() - 500}),
            ),
            RequestError::Time("expired"),
        ),
        (
            request(
                &key,
                json!({"iat": now.unix_timestamp() + 600, "exp": now.unix_timestamp() + 700}),
            ),
            RequestError::Time("iat is in the future"),
        ),
        (
            request(&key, json!({"jti": "short"})),
            RequestError::Malformed("jti"),
        ),
        (
            request(&key, json!({"code": null})),
            RequestError::Malformed("claims"),
        ),
        (
            request(&key, json!({"extra": 1})),
            RequestError::Malformed("claims"),
        ),
    ];
    for (compact, expected) in cases {
        assert_eq!(
            verify_credential_request(&compact, now, &policy).unwrap_err(),
            expected
        );
    }
    // alg none and HS256 never get as far as the claims.
    let pieces: Vec<String> = request(&key, json!({}))
        .split('.')
        .map(str::to_owned)
        .collect();
    for alg in ["none", "HS256"] {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&json!({"alg": alg})).unwrap());
        let forged = format!("{header}.{}.{}", pieces[1], pieces[2]);
        assert_eq!(
            verify_credential_request(&forged, now, &policy).unwrap_err(),
            RequestError::Malformed("jws")
        );
    }
}

#[tokio::test]
async fn issuer_keys_sign_rotate_and_stay_published_while_needed() {
    use medvault_credential::IssuerKeys;
    use medvault_crypto::jose::UnverifiedJws;
    let fixture = fixture().await;
    let practice = participant(&fixture, "institution:practice", Some("Praxis Nord")).await;
    let secret = zeroize::Zeroizing::new(vec![42u8; 32]);
    let keys = IssuerKeys::new(fixture.store.clone(), fixture.clock.clone(), secret).unwrap();
    let (kid, key) = keys.signing_key(practice).await.unwrap();
    let (again, _) = keys.signing_key(practice).await.unwrap();
    assert_eq!(kid, again, "one current key");
    let mut header = JwsHeader::es256("JWT");
    header.kid = Some(kid.clone());
    let jws = sign_es256(&header, &json!({"iss": "x"}), &key).unwrap();
    // A verifier finds the key by kid in the published JWKS.
    let jwks = keys.jwks(Some(practice)).await.unwrap();
    assert_eq!(jwks.len(), 1);
    assert_eq!(jwks[0].kid.as_deref(), Some(kid.as_str()));
    assert_eq!(jwks[0].alg.as_deref(), Some("ES256"));
    let public = P256PublicKey::from_jwk(&jwks[0]).unwrap();
    UnverifiedJws::parse(&jws)
        .unwrap()
        .verify::<serde_json::Value>(&public)
        .unwrap();

    // Rotation: the old key stays published while a credential it signed lives.
    keys.signed_until(&kid, fixture.clock.now() + Duration::days(365))
        .await
        .unwrap();
    let rotated = keys.rotate(practice).await.unwrap();
    assert_ne!(rotated, kid);
    assert_eq!(keys.signing_key(practice).await.unwrap().0, rotated);
    assert_eq!(keys.jwks(Some(practice)).await.unwrap().len(), 2);
    fixture.clock.advance(Duration::days(366));
    let published: Vec<_> = keys
        .jwks(Some(practice))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|jwk| jwk.kid)
        .collect();
    assert_eq!(published, vec![rotated]);

    // Without the right issuer secret the stored key does not unwrap.
    let wrong = IssuerKeys::new(
        fixture.store.clone(),
        fixture.clock.clone(),
        zeroize::Zeroizing::new(vec![7u8; 32]),
    )
    .unwrap();
    assert!(wrong.signing_key(practice).await.is_err());
    assert!(
        IssuerKeys::new(
            fixture.store.clone(),
            fixture.clock.clone(),
            zeroize::Zeroizing::new(vec![1; 8])
        )
        .is_err()
    );
}

/// With a manual clock: an expired code issues nothing; a credential stays
/// verifiable across a key rotation until it expires (the old key stays
/// published that long); an expired or not-yet-valid credential fails.
#[tokio::test]
async fn credentials_outlive_a_key_rotation_and_then_expire() {
    let fixture = fixture().await;
    let practice = participant(&fixture, "institution:practice", Some("Praxis Nord")).await;
    let patient = participant(&fixture, "patient", None).await;
    connect(&fixture, practice, patient).await;
    let keys = medvault_credential::IssuerKeys::new(
        fixture.store.clone(),
        fixture.clock.clone(),
        zeroize::Zeroizing::new(vec![7; 32]),
    )
    .unwrap();
    let names =
        medvault_credential::DidWeb::new(&"https://ddr.example:8443/".parse().unwrap()).unwrap();
    let audience = names.server().to_owned();
    let issuer = medvault_credential::CredentialIssuer::new(
        fixture.store.clone(),
        fixture.clock.clone(),
        fixture.audit.clone(),
        keys.clone(),
        names.clone(),
        medvault_credential::IssuancePolicy {
            request: RequestPolicy::new(vec![CLIENT.to_owned()]),
            audience: audience.clone(),
            lifetime: Duration::days(30),
            status_list_lifetime: Duration::minutes(5),
        },
    );
    let verifier = medvault_credential::CredentialVerifier::new(
        fixture.store.clone(),
        fixture.clock.clone(),
        names,
        audience,
        Duration::seconds(60),
    );
    let device = SoftwareKey::generate().unwrap();
    let now = || fixture.clock.now().unix_timestamp();
    let request_for = |code: &str, jti: &str, iat: i64| {
        request(
            &device,
            json!({ "code": code, "jti": jti, "iat": iat, "exp": iat + 120 }),
        )
    };

    // An expired code issues nothing.
    let late = proof(&fixture, practice, patient).await;
    fixture.clock.advance(Duration::minutes(11));
    let refused = issuer
        .issue(
            &session(patient),
            &request_for(&late.code, "jti-expired-code-0001", now()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, medvault_credential::IssueError::Code),
        "{refused}"
    );

    let code = proof(&fixture, practice, patient).await;
    let issued = issuer
        .issue(
            &session(patient),
            &request_for(&code.code, "jti-rotation-000001", now()),
        )
        .await
        .unwrap();
    let verified = verifier.verify(&issued.jwt).await.unwrap();
    assert_eq!(verified.patient, patient);
    assert_eq!(verified.institution, practice);
    assert_eq!(verified.claims.sub, device_did(&device));

    // The public status list is signed once and handed out again while its
    // content is unchanged (for at most a minute); a change is signed at once.
    use medvault_credential::{CredentialStatus, StatusPurpose};
    let list = |purpose| issuer.status_list(practice, purpose);
    let first = list(StatusPurpose::Suspension).await.unwrap().unwrap();
    assert_eq!(
        list(StatusPurpose::Suspension).await.unwrap().unwrap(),
        first
    );
    issuer
        .set_status(&session(practice), &issued.id, CredentialStatus::Suspended)
        .await
        .unwrap();
    let suspended = list(StatusPurpose::Suspension).await.unwrap().unwrap();
    assert_ne!(suspended, first, "a change is signed at once");
    issuer
        .set_status(&session(practice), &issued.id, CredentialStatus::Active)
        .await
        .unwrap();
    let reinstated = list(StatusPurpose::Suspension).await.unwrap().unwrap();
    assert_ne!(reinstated, suspended);
    fixture.clock.advance(Duration::seconds(61));
    assert_ne!(
        list(StatusPurpose::Suspension).await.unwrap().unwrap(),
        reinstated,
        "re-signed after a minute"
    );
    assert!(
        issuer
            .status_list(patient, StatusPurpose::Revocation)
            .await
            .unwrap()
            .is_none(),
        "a patient has no list"
    );

    // Rotation: new credentials use the new key, the old one stays published.
    let new_kid = keys.rotate(practice).await.unwrap();
    fixture.clock.advance(Duration::days(10));
    assert!(
        verifier.verify(&issued.jwt).await.is_ok(),
        "old key still published"
    );
    let published = keys.jwks(Some(practice)).await.unwrap();
    assert_eq!(published.len(), 2);
    let second_code = proof(&fixture, practice, patient).await;
    let second = issuer
        .issue(
            &session(patient),
            &request_for(&second_code.code, "jti-rotation-000002", now()),
        )
        .await
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            second.jwt.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid);

    // After the first credential's expiry it fails, and its key is gone.
    fixture.clock.advance(Duration::days(21));
    assert!(matches!(
        verifier.verify(&issued.jwt).await,
        Err(medvault_credential::VerifyError::UnknownKey
            | medvault_credential::VerifyError::Time(_))
    ));
    assert_eq!(keys.jwks(Some(practice)).await.unwrap().len(), 1);
    assert!(verifier.verify(&second.jwt).await.is_ok());
    fixture.clock.advance(Duration::days(10));
    assert!(matches!(
        verifier.verify(&second.jwt).await,
        Err(medvault_credential::VerifyError::UnknownKey
            | medvault_credential::VerifyError::Time(_))
    ));
}
