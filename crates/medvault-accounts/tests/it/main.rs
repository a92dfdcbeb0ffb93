//! Integration tests of the participant directory on a real (SQLite) store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "integration tests: a failed expectation must fail the test"
)]

use std::sync::Arc;

use medvault_accounts::{Directory, Registration, RegistrationError};
use medvault_audit::{AuditQuery, AuditTrail, CheckpointKey};
use medvault_core::{DisplayName, InstitutionKind, ManualClock, ParticipantKind};
use medvault_crypto::RootCredential;
use medvault_store::Store;
use medvault_store_sqlite::SqliteStore;
use time::macros::datetime;

struct Fixture {
    directory: Directory,
    audit: Arc<AuditTrail>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("medvault.db"))
            .await
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-23 09:00 UTC)));
    let (key, _) = CheckpointKey::generate().unwrap();
    let audit = Arc::new(AuditTrail::new(store.clone(), clock.clone(), Arc::new(key)));
    Fixture {
        directory: Directory::new(store, clock, audit.clone()),
        audit,
        _dir: dir,
    }
}

fn registration(kind: ParticipantKind, name: Option<&str>) -> (Registration, RootCredential) {
    let credential = RootCredential::generate().unwrap();
    let registration = Registration {
        kind,
        display_name: name.map(|name| DisplayName::parse(name).unwrap()),
        root_public_key: credential.public_key().clone(),
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
