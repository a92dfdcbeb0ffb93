//! Integration tests of the participant directory on a real (SQLite) store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "integration tests: a failed expectation must fail the test"
)]

use std::sync::Arc;

mod client;
mod login;

use medvault_accounts::{Accounts, Directory, LoginPolicy, Registration, RegistrationError};
use medvault_audit::{AuditQuery, AuditTrail, CheckpointKey};
use medvault_core::{DisplayName, InstitutionKind, ManualClock, ParticipantKind, Uid};
use medvault_crypto::password::OpaqueServerSetup;
use medvault_crypto::{ParticipantCa, PinnedCa, RootCredential, SealContext, seal};
use medvault_store::Store;
use medvault_store_sqlite::SqliteStore;
use time::macros::datetime;

/// A directory and accounts service over a temporary SQLite store.
pub struct Fixture {
    pub directory: Directory,
    pub accounts: Accounts,
    pub audit: Arc<AuditTrail>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<ManualClock>,
    pub pinned: PinnedCa,
    _dir: tempfile::TempDir,
}

/// A fresh fixture.
pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("medvault.db"))
            .await
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-23 09:00 UTC)));
    let (key, _) = CheckpointKey::generate().unwrap();
    let audit = Arc::new(AuditTrail::new(store.clone(), clock.clone(), Arc::new(key)));
    let (ca, _) = ParticipantCa::generate().unwrap();
    let ca = Arc::new(ca);
    let accounts = Accounts::new(
        store.clone(),
        clock.clone(),
        audit.clone(),
        ca.clone(),
        Arc::new(OpaqueServerSetup::generate()),
        LoginPolicy::default(),
    );
    Fixture {
        pinned: ca.pinned(),
        directory: Directory::new(store.clone(), clock.clone(), audit.clone(), ca),
        accounts,
        audit,
        store,
        clock,
        _dir: dir,
    }
}

/// A registration with a fresh UID, Root Credential and SuperPIN.
pub fn registration(kind: ParticipantKind, name: Option<&str>) -> (Registration, RootCredential) {
    let credential = RootCredential::generate().unwrap();
    let uid = Uid::generate();
    let (superpin, _) = client::superpin(uid, &credential);
    let registration = Registration {
        uid,
        kind,
        display_name: name.map(|name| DisplayName::parse(name).unwrap()),
        root_public_key: credential.public_key().clone(),
        credentials: vec![superpin],
    };
    (registration, credential)
}

#[tokio::test]
async fn every_kind_registers_and_appears_in_the_directory() {
    let fixture = fixture().await;
    let cases = [
        (ParticipantKind::Patient, None),
        (
            ParticipantKind::Institution(InstitutionKind::Practice),
            Some("Praxis Dr. Weiß"),
        ),
        (
            ParticipantKind::Institution(InstitutionKind::Hospital),
            Some("Klinikum Nord"),
        ),
        (
            ParticipantKind::Institution(InstitutionKind::Pharmacy),
            Some("Adler-Apotheke"),
        ),
        (
            ParticipantKind::HealthCareProfessional,
            Some("Dr. med. A. Beispiel"),
        ),
    ];
    let mut uids = Vec::new();
    for (kind, name) in cases {
        let (registration, credential) = registration(kind, name);
        let uid = fixture.directory.register(registration).await.unwrap();
        let entry = fixture.directory.entry(uid).await.unwrap().unwrap();
        assert_eq!(entry.kind, kind);
        assert_eq!(entry.display_name.as_ref().map(DisplayName::as_str), name);
        assert_eq!(&entry.root_public_key, credential.public_key());
        uids.push(uid);
    }
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 5, "UIDs must differ");
}

#[tokio::test]
async fn names_are_required_for_institutions_and_refused_for_patients() {
    let fixture = fixture().await;
    let (nameless_practice, _) = registration(
        ParticipantKind::Institution(InstitutionKind::Practice),
        None,
    );
    assert!(matches!(
        fixture.directory.register(nameless_practice).await,
        Err(RegistrationError::NameRequired)
    ));
    let (named_patient, _) = registration(ParticipantKind::Patient, Some("Erika Mustermann"));
    assert!(matches!(
        fixture.directory.register(named_patient).await,
        Err(RegistrationError::NameForbidden)
    ));
    // Nothing was registered or audited by the refusals.
    let records = fixture.audit.query(&AuditQuery::default()).await.unwrap();
    assert!(records.is_empty(), "{records:?}");
}

#[tokio::test]
async fn registration_is_audited_without_naming_anyone() {
    let fixture = fixture().await;
    let (registration, _) = registration(
        ParticipantKind::HealthCareProfessional,
        Some("Dr. Vertraulich"),
    );
    let uid = fixture.directory.register(registration).await.unwrap();
    let records = fixture
        .audit
        .query(&AuditQuery {
            subject: Some(uid.to_string()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].event_type, "participant.registered");
    assert!(
        !records[0].detail.contains("Vertraulich"),
        "{}",
        records[0].detail
    );
    fixture.audit.verify().await.unwrap();
}

#[tokio::test]
async fn unknown_uids_have_no_entry() {
    let fixture = fixture().await;
    assert_eq!(
        fixture
            .directory
            .entry(medvault_core::Uid::generate())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_client_seals_only_to_a_key_the_pinned_ca_certified_for_that_uid() {
    let fixture = fixture().await;
    let (practice, recipient) = registration(
        ParticipantKind::Institution(InstitutionKind::Practice),
        Some("Praxis Nord"),
    );
    let uid = fixture.directory.register(practice).await.unwrap();
    let entry = fixture.directory.entry(uid).await.unwrap().unwrap();
    let now = datetime!(2026-11-23 10:00 UTC).unix_timestamp();

    // The sender's SDK checks the certificate against its pinned CA ...
    let certified = fixture
        .pinned
        .verify_root_key(&entry.root_key_certificate, &uid.to_string(), now)
        .unwrap();
    assert_eq!(&certified.root_public_key, recipient.public_key());
    let context = SealContext::new(uid.to_string().as_bytes());
    let sealed = seal(&certified.root_public_key, &context, b"", b"referral").unwrap();
    assert_eq!(
        recipient.open(&context, b"", &sealed).unwrap().as_slice(),
        b"referral"
    );

    // ... so a server that hands out another participant's certificate, or its own
    // key with a certificate from another CA, is caught before anything is sealed.
    let (other, _) = registration(ParticipantKind::Patient, None);
    let other_uid = fixture.directory.register(other).await.unwrap();
    let other_entry = fixture.directory.entry(other_uid).await.unwrap().unwrap();
    assert!(
        fixture
            .pinned
            .verify_root_key(&other_entry.root_key_certificate, &uid.to_string(), now)
            .is_err()
    );
    let (rogue_ca, _) = ParticipantCa::generate().unwrap();
    let attacker = RootCredential::generate().unwrap();
    let rogue = rogue_ca
        .certify_root_key(
            &uid.to_string(),
            "institution:practice",
            attacker.public_key(),
            now - 1,
            now + 3600,
        )
        .unwrap();
    assert!(
        fixture
            .pinned
            .verify_root_key(&rogue, &uid.to_string(), now)
            .is_err()
    );
}
