//! Every login path end to end on the domain service, sessions, throttling and
//! credential management.

use std::net::{IpAddr, Ipv4Addr};

use medvault_accounts::{CredentialError, LoginError, LoginGrant, Registration};
use medvault_core::{Clock, Email, ParticipantKind, Uid, WorkingCredentialKind};
use medvault_crypto::enrol::{SlotKeys, envelope, open_key_agreement_slot, open_knowledge_slot};
use medvault_crypto::password;
use medvault_crypto::{CodeKind, RecoveryCode, RootCredential, SoftwareKey, login_challenge};
use time::Duration;

use crate::client::{self, code_secrets};
use crate::{Fixture, fixture};

const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const EMAIL: &str = "Anna.Muster@Example.org";
const PASSWORD: &str = "correct horse battery staple";

struct Patient {
    uid: Uid,
    root: RootCredential,
    superpin: RecoveryCode,
    tans: Vec<RecoveryCode>,
    key: SoftwareKey,
    key_id: Uid,
}

async fn register_patient(fixture: &Fixture) -> Patient {
    let root = RootCredential::generate().unwrap();
    let uid = Uid::generate();
    let (superpin_enrolment, superpin) = client::superpin(uid, &root);
    let (tan_enrolment, tans) = client::tans(uid, &root, 3);
    let (software_enrolment, key) = client::software(uid, &root);
    let key_id = software_enrolment.id;
    let password_enrolment = client::password(&fixture.accounts, uid, &root, EMAIL, PASSWORD).await;
    fixture
        .directory
        .register(Registration {
            uid,
            kind: ParticipantKind::Patient,
            display_name: None,
            root_public_key: root.public_key().clone(),
            credentials: vec![
                superpin_enrolment,
                password_enrolment,
                tan_enrolment,
                software_enrolment,
            ],
        })
        .await
        .unwrap();
    Patient {
        uid,
        root,
        superpin,
        tans,
        key,
        key_id,
    }
}

fn slot_keys(grant: &LoginGrant) -> SlotKeys<'_> {
    SlotKeys {
        uid: &grant.credential.uid,
        credential_id: &grant.credential.id,
        slot: u32::try_from(grant.key.slot).unwrap(),
        wrapped_root_key: &grant.key.wrapped_root_key,
        wrapped_signing_key: grant.key.wrapped_signing_key.as_deref(),
    }
}

/// Checks that the grant unlocks the patient's Root Credential and that the
/// credential's certificate verifies offline for this UID and credential.
fn assert_unlocks(fixture: &Fixture, patient: &Patient, grant: &LoginGrant, material: &[u8]) {
    let now = fixture.clock.now().unix_timestamp();
    let certified = fixture
        .pinned
        .verify_working_credential(&grant.credential.certificate, now)
        .unwrap();
    assert_eq!(certified.subject.uid, patient.uid.to_string());
    assert_eq!(certified.subject.working_credential_id, grant.credential.id);
    let root_key = fixture
        .pinned
        .verify_root_key(&grant.root_key_certificate, &patient.uid.to_string(), now)
        .unwrap();
    let (root, signing_public_key) = if grant.key.ecdh_public_key.is_some() {
        let root = open_key_agreement_slot(&slot_keys(grant), &root_key.root_public_key, material)
            .unwrap();
        (root, patient.key.public_key())
    } else {
        let (root, signing) =
            open_knowledge_slot(&slot_keys(grant), &root_key.root_public_key, material).unwrap();
        (root, signing.public_key())
    };
    assert_eq!(root.public_key(), patient.root.public_key());
    assert_eq!(certified.public_key, signing_public_key);
    // The unlocked Root Credential opens what was sealed to the patient.
    let context = medvault_crypto::SealContext::new(b"test");
    let sealed = medvault_crypto::seal(patient.root.public_key(), &context, b"", b"lab").unwrap();
    assert_eq!(
        root.open(&context, b"", &sealed).unwrap().as_slice(),
        b"lab"
    );
}

async fn password_login(
    fixture: &Fixture,
    email: &str,
    password_text: &str,
) -> Result<(LoginGrant, Vec<u8>), LoginError> {
    let email = Email::parse(email).unwrap();
    let (state, ke1) = password::client_login_start(password_text.as_bytes()).unwrap();
    let (challenge, ke2) = fixture
        .accounts
        .password_login_start(&email, &ke1, HOME)
        .await?;
    let Ok((ke3, export_key)) =
        password::client_login_finish(state, password_text.as_bytes(), &ke2)
    else {
        // The client notices a wrong password itself; the server counts it
        // when the client sends garbage (as a real client would not finish).
        return fixture
            .accounts
            .password_login_finish(&challenge, &[0; 64], HOME)
            .await
            .map(|grant| (grant, Vec::new()));
    };
    let grant = fixture
        .accounts
        .password_login_finish(&challenge, &ke3, HOME)
        .await?;
    Ok((grant, export_key.as_bytes().to_vec()))
}

async fn code_login(
    fixture: &Fixture,
    uid: Uid,
    code: &RecoveryCode,
    kind: CodeKind,
    number: u32,
) -> Result<(LoginGrant, Vec<u8>), LoginError> {
    let (material, proof) = code_secrets(uid, code, kind, number);
    let credential_kind = match kind {
        CodeKind::SuperPin => WorkingCredentialKind::SuperPin,
        CodeKind::Tan => WorkingCredentialKind::Tan,
    };
    let grant = fixture
        .accounts
        .code_login(uid, credential_kind, number, &proof, HOME)
        .await?;
    Ok((grant, material))
}

/// Logs the patient in with their SuperPIN.
async fn superpin_login(
    fixture: &Fixture,
    patient: &Patient,
) -> Result<(LoginGrant, Vec<u8>), LoginError> {
    code_login(
        fixture,
        patient.uid,
        &patient.superpin,
        CodeKind::SuperPin,
        0,
    )
    .await
}

async fn signature_login(
    fixture: &Fixture,
    patient: &Patient,
    key: &SoftwareKey,
) -> Result<LoginGrant, LoginError> {
    let (challenge, nonce) = fixture
        .accounts
        .signature_login_start(patient.uid, patient.key_id, HOME)
        .await?;
    let message = login_challenge(
        &nonce,
        &patient.uid.to_string(),
        &patient.key_id.to_string(),
    );
    let signature = key.sign_challenge(&message).unwrap();
    fixture
        .accounts
        .signature_login_finish(&challenge, &signature, HOME)
        .await
}

#[tokio::test]
async fn every_working_credential_logs_in_and_unlocks_the_root_credential() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;

    let (grant, export_key) = password_login(&fixture, "anna.muster@example.org", PASSWORD)
        .await
        .unwrap();
    assert_eq!(grant.credential.kind, "password");
    assert_unlocks(&fixture, &patient, &grant, &export_key);

    let (grant, material) = superpin_login(&fixture, &patient).await.unwrap();
    assert_eq!(grant.credential.kind, "superpin");
    assert_unlocks(&fixture, &patient, &grant, &material);

    let (grant, material) = code_login(&fixture, patient.uid, &patient.tans[1], CodeKind::Tan, 2)
        .await
        .unwrap();
    assert_eq!(grant.credential.kind, "tan");
    assert_unlocks(&fixture, &patient, &grant, &material);

    let grant = signature_login(&fixture, &patient, &patient.key)
        .await
        .unwrap();
    assert_eq!(grant.credential.kind, "software-certificate");
    let secret = patient
        .key
        .open_ecdh_envelope(&envelope(grant.key.ecdh_public_key.as_deref().unwrap()))
        .unwrap();
    assert_unlocks(&fixture, &patient, &grant, &secret);

    // Each session authenticates as the patient, with the credential used.
    let session = fixture
        .accounts
        .authenticate(grant.token.expose())
        .await
        .unwrap();
    assert_eq!(session.uid, patient.uid);
    assert_eq!(session.credential_id, patient.key_id.to_string());
    assert!(!format!("{:?}", grant.token).contains(grant.token.expose()));
    // The directory lists the four credentials' certificates.
    let entry = fixture.directory.entry(patient.uid).await.unwrap().unwrap();
    assert_eq!(entry.working_credential_certificates.len(), 4);
    fixture.audit.verify().await.unwrap();
}

#[tokio::test]
async fn wrong_secrets_fail_alike_and_unknown_accounts_look_known() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;
    assert!(matches!(
        password_login(&fixture, EMAIL, "wrong password").await,
        Err(LoginError::Failed)
    ));
    assert!(matches!(
        password_login(&fixture, "nobody@example.org", PASSWORD).await,
        Err(LoginError::Failed)
    ));
    // KE2 for an unknown email has the size of a real one.
    let (_, ke1) = password::client_login_start(b"x").unwrap();
    let (_, known) = fixture
        .accounts
        .password_login_start(&Email::parse(EMAIL).unwrap(), &ke1, HOME)
        .await
        .unwrap();
    let (_, unknown) = fixture
        .accounts
        .password_login_start(&Email::parse("nobody@example.org").unwrap(), &ke1, HOME)
        .await
        .unwrap();
    assert_eq!(known.len(), unknown.len());

    let other = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
    assert!(matches!(
        code_login(&fixture, patient.uid, &other, CodeKind::SuperPin, 0).await,
        Err(LoginError::Failed)
    ));
    // A TAN under another number does not work.
    assert!(matches!(
        code_login(&fixture, patient.uid, &patient.tans[0], CodeKind::Tan, 2).await,
        Err(LoginError::Failed)
    ));
    let stranger = SoftwareKey::generate().unwrap();
    assert!(matches!(
        signature_login(&fixture, &patient, &stranger).await,
        Err(LoginError::Failed)
    ));
    // A signature challenge for an unknown credential is handed out all the same.
    assert!(
        fixture
            .accounts
            .signature_login_start(patient.uid, Uid::generate(), HOME)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_tan_works_once_even_when_two_logins_race() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;
    let (first, second) = tokio::join!(
        code_login(&fixture, patient.uid, &patient.tans[0], CodeKind::Tan, 1),
        code_login(&fixture, patient.uid, &patient.tans[0], CodeKind::Tan, 1),
    );
    let outcomes = [first.is_ok(), second.is_ok()];
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
    assert!(matches!(
        code_login(&fixture, patient.uid, &patient.tans[0], CodeKind::Tan, 1).await,
        Err(LoginError::Failed)
    ));
    let (grant, _) = superpin_login(&fixture, &patient).await.unwrap();
    let list = fixture.accounts.credentials(&grant.session).await.unwrap();
    let tan = list
        .iter()
        .find(|info| info.credential.kind == "tan")
        .unwrap();
    assert_eq!(tan.remaining, Some(2));
}

#[tokio::test]
async fn a_challenge_is_answered_once_and_not_after_it_expires() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;
    let (challenge, nonce) = fixture
        .accounts
        .signature_login_start(patient.uid, patient.key_id, HOME)
        .await
        .unwrap();
    let message = login_challenge(
        &nonce,
        &patient.uid.to_string(),
        &patient.key_id.to_string(),
    );
    let signature = patient.key.sign_challenge(&message).unwrap();
    fixture
        .accounts
        .signature_login_finish(&challenge, &signature, HOME)
        .await
        .unwrap();
    assert!(matches!(
        fixture
            .accounts
            .signature_login_finish(&challenge, &signature, HOME)
            .await,
        Err(LoginError::Challenge)
    ));
    let (challenge, nonce) = fixture
        .accounts
        .signature_login_start(patient.uid, patient.key_id, HOME)
        .await
        .unwrap();
    fixture.clock.advance(Duration::minutes(3));
    let message = login_challenge(
        &nonce,
        &patient.uid.to_string(),
        &patient.key_id.to_string(),
    );
    let signature = patient.key.sign_challenge(&message).unwrap();
    assert!(matches!(
        fixture
            .accounts
            .signature_login_finish(&challenge, &signature, HOME)
            .await,
        Err(LoginError::Challenge)
    ));
}

#[tokio::test]
async fn failures_lock_the_account_with_growing_back_off() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;
    let wrong = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
    for _ in 0..5 {
        assert!(matches!(
            code_login(&fixture, patient.uid, &wrong, CodeKind::SuperPin, 0).await,
            Err(LoginError::Failed)
        ));
    }
    // The sixth failure locks for 1 s, the seventh for 2 s, ...
    let mut expected = 1;
    for _ in 0..4 {
        assert!(matches!(
            code_login(&fixture, patient.uid, &wrong, CodeKind::SuperPin, 0).await,
            Err(LoginError::Failed)
        ));
        // Even the right SuperPIN is refused while the lock holds.
        match superpin_login(&fixture, &patient).await {
            Err(LoginError::Throttled { retry_after }) => assert_eq!(retry_after, expected),
            other => panic!("expected a lock, got {other:?}"),
        }
        fixture
            .clock
            .advance(Duration::seconds(i64::try_from(expected).unwrap()));
        expected *= 2;
    }
    // After the lock, the right code works and clears the account's count.
    superpin_login(&fixture, &patient).await.unwrap();
    assert!(matches!(
        code_login(&fixture, patient.uid, &wrong, CodeKind::SuperPin, 0).await,
        Err(LoginError::Failed)
    ));
    superpin_login(&fixture, &patient).await.unwrap();
}

#[tokio::test]
async fn one_address_guessing_at_many_accounts_is_locked() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;
    for _ in 0..20 {
        let stranger = Uid::generate();
        let wrong = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
        assert!(matches!(
            code_login(&fixture, stranger, &wrong, CodeKind::SuperPin, 0).await,
            Err(LoginError::Failed)
        ));
    }
    let wrong = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
    assert!(matches!(
        code_login(&fixture, Uid::generate(), &wrong, CodeKind::SuperPin, 0).await,
        Err(LoginError::Failed)
    ));
    // The address is now locked, for every account, on every path.
    assert!(matches!(
        superpin_login(&fixture, &patient).await,
        Err(LoginError::Throttled { .. })
    ));
    assert!(matches!(
        password_login(&fixture, EMAIL, PASSWORD).await,
        Err(LoginError::Throttled { .. })
    ));
}

#[tokio::test]
async fn sessions_end_at_logout_and_expiry() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;
    let (grant, _) = superpin_login(&fixture, &patient).await.unwrap();
    let token = grant.token.expose().to_owned();
    fixture.accounts.authenticate(&token).await.unwrap();
    fixture.accounts.logout(&token).await.unwrap();
    assert!(matches!(
        fixture.accounts.authenticate(&token).await,
        Err(LoginError::Unauthenticated)
    ));
    assert!(matches!(
        fixture.accounts.logout(&token).await,
        Err(LoginError::Unauthenticated)
    ));
    let (grant, _) = superpin_login(&fixture, &patient).await.unwrap();
    fixture.clock.advance(Duration::minutes(30));
    assert!(matches!(
        fixture.accounts.authenticate(grant.token.expose()).await,
        Err(LoginError::Unauthenticated)
    ));
    // Expired rows are cleaned up (the session just expired; nothing else is due).
    assert_eq!(fixture.accounts.purge_expired().await.unwrap(), 1);
    assert_eq!(fixture.accounts.purge_expired().await.unwrap(), 0);
    for forged in ["", "mvs_", "Bearer x", &"mvs_a".repeat(40)] {
        assert!(matches!(
            fixture.accounts.authenticate(forged).await,
            Err(LoginError::Unauthenticated)
        ));
    }
}

#[tokio::test]
async fn recovery_superpin_then_a_new_password_and_the_last_credential_stays() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;
    // The patient forgot the password: SuperPIN login, remove the old password,
    // enrol a new one.
    let (grant, _) = superpin_login(&fixture, &patient).await.unwrap();
    let session = grant.session.clone();
    let list = fixture.accounts.credentials(&session).await.unwrap();
    assert_eq!(list.len(), 4);
    let old = list
        .iter()
        .find(|info| info.credential.kind == "password")
        .unwrap();
    let again = client::password(&fixture.accounts, patient.uid, &patient.root, EMAIL, "new").await;
    assert!(matches!(
        fixture.accounts.add_credential(&session, again).await,
        Err(CredentialError::Exists("password"))
    ));
    fixture
        .accounts
        .remove_credential(&session, &old.credential.id)
        .await
        .unwrap();
    assert!(matches!(
        password_login(&fixture, EMAIL, PASSWORD).await,
        Err(LoginError::Failed)
    ));
    let new = client::password(
        &fixture.accounts,
        patient.uid,
        &patient.root,
        EMAIL,
        "a new passphrase",
    )
    .await;
    fixture
        .accounts
        .add_credential(&session, new)
        .await
        .unwrap();
    let (grant, export_key) = password_login(&fixture, EMAIL, "a new passphrase")
        .await
        .unwrap();
    assert_unlocks(&fixture, &patient, &grant, &export_key);

    // Remove all but one; the last is refused.
    let list = fixture.accounts.credentials(&session).await.unwrap();
    let (last, others) = list.split_last().unwrap();
    for info in others {
        fixture
            .accounts
            .remove_credential(&session, &info.credential.id)
            .await
            .unwrap();
    }
    assert!(matches!(
        fixture
            .accounts
            .remove_credential(&session, &last.credential.id)
            .await,
        Err(CredentialError::LastCredential)
    ));
    assert!(matches!(
        fixture
            .accounts
            .remove_credential(&session, "no-such-id")
            .await,
        Err(CredentialError::NotFound)
    ));
    // Removing a credential ended the sessions it opened.
    let password_removed = others
        .iter()
        .any(|info| info.credential.id == grant.credential.id);
    let outcome = fixture.accounts.authenticate(grant.token.expose()).await;
    assert_eq!(outcome.is_ok(), !password_removed, "{outcome:?}");
}

#[tokio::test]
async fn whoever_lost_every_credential_can_neither_log_in_nor_decrypt() {
    let fixture = fixture().await;
    let patient = register_patient(&fixture).await;
    let uid = patient.uid;
    drop(patient);
    // Without the codes, the password, or the key file, every path fails ...
    let guess = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
    assert!(
        code_login(&fixture, uid, &guess, CodeKind::SuperPin, 0)
            .await
            .is_err()
    );
    assert!(password_login(&fixture, EMAIL, "a guess").await.is_err());
    // ... and everything the server holds opens with nothing the server has:
    // every stored slot refuses every key the server could derive from its data.
    for credential in fixture
        .store
        .working_credentials(&uid.to_string())
        .await
        .unwrap()
    {
        let slots = if credential.kind == "tan" {
            1..=3
        } else {
            0..=0
        };
        for slot in slots {
            let key = fixture
                .store
                .credential_key(&credential.id, slot)
                .await
                .unwrap()
                .unwrap();
            let keys = SlotKeys {
                uid: &credential.uid,
                credential_id: &credential.id,
                slot: u32::try_from(slot).unwrap(),
                wrapped_root_key: &key.wrapped_root_key,
                wrapped_signing_key: key.wrapped_signing_key.as_deref(),
            };
            let entry = fixture.directory.entry(uid).await.unwrap().unwrap();
            for candidate in [
                key.proof_hash.clone().unwrap_or_else(|| vec![0; 32]),
                credential.public_key.clone(),
                credential.certificate.clone(),
            ] {
                assert!(open_knowledge_slot(&keys, &entry.root_public_key, &candidate).is_err());
                assert!(
                    open_key_agreement_slot(&keys, &entry.root_public_key, &candidate).is_err()
                );
            }
        }
    }
}
