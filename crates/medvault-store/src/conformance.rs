//! The conformance suite every storage backend must pass.
//!
//! A backend's integration tests call [`store_conformance_tests!`] with an async
//! function that returns a fresh, empty store ([`Fixture`]) — or `None` when the
//! backend is not available here (PostgreSQL without `MEDVAULT_TEST_POSTGRES_URL`),
//! in which case each test says it was skipped. The macro expands to one
//! `#[tokio::test]` per case below, so the cases run in parallel, each on its
//! own database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "this module is a test suite: a failed expectation must fail the test"
)]

use std::any::Any;
use std::sync::Arc;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::{
    AuditCheckpointRowV1, AuditEntryRowV1, AuditFilter, ClientCertificateRowV1, ParticipantRowV1,
    Store, StoreError,
};

/// A fresh, empty store plus whatever keeps its database alive (a temporary
/// directory, a schema that is dropped at the end).
pub struct Fixture {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Dropped after the test.
    pub guard: Box<dyn Any + Send>,
}

/// Expands to one `#[tokio::test]` per conformance case.
///
/// `$fresh` is a path to `async fn() -> Option<Fixture>`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:path) => {
        $crate::store_conformance_tests!(@cases $fresh;
            empty_store_answers,
            audit_entry_round_trips_exactly,
            duplicate_audit_seq_is_a_conflict,
            concurrent_appends_of_one_seq_have_one_winner,
            audit_filters_combine,
            audit_checkpoints_are_unique_per_number,
            purge_deletes_through_checkpoint_atomically,
            client_certificates_register_and_remove,
            participants_are_stored_once_and_patients_stay_nameless,
        );
    };
    (@cases $fresh:path; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                match $fresh().await {
                    Some(fixture) => {
                        $crate::conformance::$case(&*fixture.store).await;
                        fixture.store.close().await;
                        drop(fixture.guard);
                    }
                    None => $crate::conformance::report_skipped(concat!("conformance::", stringify!($case))),
                }
            }
        )+
    };
}

/// Says on the terminal that a test was skipped because its backend is not
/// configured. Writes to stderr directly: the test harness captures `eprintln!`
/// of passing tests, and a skip must be visible (CI fails on it).
pub fn report_skipped(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: PostgreSQL not configured (set MEDVAULT_TEST_POSTGRES_URL)"
    );
}

const T0: OffsetDateTime = datetime!(2026-03-01 08:00:00.123456 UTC);

/// A well-formed entry at `seq`, recorded `seq` minutes after a fixed start.
pub fn sample_entry(seq: i64) -> AuditEntryRowV1 {
    AuditEntryRowV1 {
        seq,
        recorded_at: T0 + Duration::minutes(seq),
        actor: format!("actor-{}", seq % 3),
        subject: format!("subject-{}", seq % 2),
        event_type: if seq % 2 == 0 {
            "pairing.created"
        } else {
            "server.started"
        }
        .to_owned(),
        outcome: "success".to_owned(),
        detail: format!("{{\"n\":{seq}}}"),
        prev_hash: vec![u8::try_from(seq % 251).unwrap(); 32],
        entry_hash: vec![u8::try_from((seq + 1) % 251).unwrap(); 32],
    }
}

async fn insert_range(store: &dyn Store, seqs: std::ops::RangeInclusive<i64>) {
    for seq in seqs {
        store.insert_audit_entry(&sample_entry(seq)).await.unwrap();
    }
}

fn filter() -> AuditFilter {
    AuditFilter {
        limit: 1000,
        ..AuditFilter::default()
    }
}

fn seqs(entries: &[AuditEntryRowV1]) -> Vec<i64> {
    entries.iter().map(|e| e.seq).collect()
}

/// A new store pings, knows its schema and holds nothing.
pub async fn empty_store_answers(store: &dyn Store) {
    store.ping().await.unwrap();
    assert!(store.schema_version().await.unwrap() >= 1);
    assert_eq!(store.last_audit_entry().await.unwrap(), None);
    assert!(store.audit_entries(&filter()).await.unwrap().is_empty());
    assert!(store.audit_checkpoints().await.unwrap().is_empty());
    assert!(store.client_certificates().await.unwrap().is_empty());
}

/// Every field of an entry comes back exactly as written.
pub async fn audit_entry_round_trips_exactly(store: &dyn Store) {
    let mut entry = sample_entry(1);
    entry.actor = "Ärztin «Müller» 🩺".to_owned();
    entry.detail = format!("{{\"blob\":\"{}\"}}", "x".repeat(8 * 1024));
    store.insert_audit_entry(&entry).await.unwrap();
    assert_eq!(store.last_audit_entry().await.unwrap(), Some(entry.clone()));
    assert_eq!(store.audit_entries(&filter()).await.unwrap(), vec![entry]);
}

/// A second entry with a taken `seq` is refused and changes nothing.
pub async fn duplicate_audit_seq_is_a_conflict(store: &dyn Store) {
    let first = sample_entry(1);
    store.insert_audit_entry(&first).await.unwrap();
    let mut rival = sample_entry(1);
    rival.actor = "someone else".to_owned();
    let outcome = store.insert_audit_entry(&rival).await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict(_))),
        "{outcome:?}"
    );
    assert_eq!(store.last_audit_entry().await.unwrap(), Some(first));
}

/// Many writers racing for one `seq`: exactly one succeeds, the others conflict.
pub async fn concurrent_appends_of_one_seq_have_one_winner(store: &dyn Store) {
    let attempts = (0..8).map(|writer| {
        let mut entry = sample_entry(1);
        entry.actor = format!("writer-{writer}");
        async move { store.insert_audit_entry(&entry).await }
    });
    let results = futures::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!((winners, conflicts), (1, 7), "{results:?}");
}

/// Subject, event type, time range, paging and limit each narrow the result.
pub async fn audit_filters_combine(store: &dyn Store) {
    insert_range(store, 1..=10).await;
    let by_subject = AuditFilter {
        subject: Some("subject-0".to_owned()),
        ..filter()
    };
    assert_eq!(
        seqs(&store.audit_entries(&by_subject).await.unwrap()),
        vec![2, 4, 6, 8, 10]
    );
    let by_type = AuditFilter {
        event_type: Some("server.started".to_owned()),
        ..filter()
    };
    assert_eq!(
        seqs(&store.audit_entries(&by_type).await.unwrap()),
        vec![1, 3, 5, 7, 9]
    );
    let by_time = AuditFilter {
        from: Some(T0 + Duration::minutes(3)),
        until: Some(T0 + Duration::minutes(6)),
        ..filter()
    };
    assert_eq!(
        seqs(&store.audit_entries(&by_time).await.unwrap()),
        vec![3, 4, 5]
    );
    let paged = AuditFilter {
        after_seq: Some(7),
        limit: 2,
        ..filter()
    };
    assert_eq!(
        seqs(&store.audit_entries(&paged).await.unwrap()),
        vec![8, 9]
    );
    let combined = AuditFilter {
        subject: Some("subject-1".to_owned()),
        from: Some(T0 + Duration::minutes(4)),
        ..filter()
    };
    assert_eq!(
        seqs(&store.audit_entries(&combined).await.unwrap()),
        vec![5, 7, 9]
    );
    assert_eq!(
        store.last_audit_entry().await.unwrap().map(|e| e.seq),
        Some(10)
    );
}

fn sample_checkpoint(number: i64, seq: i64) -> AuditCheckpointRowV1 {
    AuditCheckpointRowV1 {
        number,
        kind: if number % 2 == 0 { "head" } else { "retention" }.to_owned(),
        seq,
        entry_hash: sample_entry(seq).entry_hash,
        created_at: T0 + Duration::days(40),
        prev_hash: vec![u8::try_from(number % 251).unwrap(); 32],
        key_id: "0123456789abcdef".to_owned(),
        signature: vec![7; 64],
    }
}

/// Checkpoints are kept in `number` order, one per number; several may name one entry.
pub async fn audit_checkpoints_are_unique_per_number(store: &dyn Store) {
    store
        .insert_audit_checkpoint(&sample_checkpoint(2, 5))
        .await
        .unwrap();
    store
        .insert_audit_checkpoint(&sample_checkpoint(1, 5))
        .await
        .unwrap();
    let outcome = store
        .insert_audit_checkpoint(&sample_checkpoint(2, 9))
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict(_))),
        "{outcome:?}"
    );
    assert_eq!(
        store.audit_checkpoints().await.unwrap(),
        vec![sample_checkpoint(1, 5), sample_checkpoint(2, 5)]
    );
}

/// A purge stores its checkpoint and deletes the entries it covers, or does neither.
pub async fn purge_deletes_through_checkpoint_atomically(store: &dyn Store) {
    insert_range(store, 1..=6).await;
    let deleted = store
        .purge_audit_entries_through(&sample_checkpoint(1, 3))
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    assert_eq!(
        seqs(&store.audit_entries(&filter()).await.unwrap()),
        vec![4, 5, 6]
    );
    assert_eq!(
        store.audit_checkpoints().await.unwrap(),
        vec![sample_checkpoint(1, 3)]
    );

    // A purge whose checkpoint number is taken (another node purged first) must
    // fail whole and delete nothing.
    let outcome = store
        .purge_audit_entries_through(&sample_checkpoint(1, 5))
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict(_))),
        "{outcome:?}"
    );
    assert_eq!(
        seqs(&store.audit_entries(&filter()).await.unwrap()),
        vec![4, 5, 6]
    );
    assert_eq!(
        store.audit_checkpoints().await.unwrap(),
        vec![sample_checkpoint(1, 3)]
    );
}

fn sample_certificate(byte: u8) -> ClientCertificateRowV1 {
    ClientCertificateRowV1 {
        fingerprint: vec![byte; 32],
        der: vec![0x30, byte, 1, 2, 3],
        owner: format!("urn:diga:bfarm:{byte:05}"),
        registered_at: T0,
    }
}

/// Certificates are registered once, listed in fingerprint order and removable.
pub async fn client_certificates_register_and_remove(store: &dyn Store) {
    store
        .insert_client_certificate(&sample_certificate(9))
        .await
        .unwrap();
    store
        .insert_client_certificate(&sample_certificate(3))
        .await
        .unwrap();
    let outcome = store
        .insert_client_certificate(&sample_certificate(9))
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict(_))),
        "{outcome:?}"
    );
    assert_eq!(
        store.client_certificates().await.unwrap(),
        vec![sample_certificate(3), sample_certificate(9)]
    );
    assert_eq!(
        store.client_certificate(&[9; 32]).await.unwrap(),
        Some(sample_certificate(9))
    );
    assert!(store.remove_client_certificate(&[9; 32]).await.unwrap());
    assert!(!store.remove_client_certificate(&[9; 32]).await.unwrap());
    assert_eq!(store.client_certificate(&[9; 32]).await.unwrap(), None);
    assert_eq!(
        store.client_certificates().await.unwrap(),
        vec![sample_certificate(3)]
    );
}

fn sample_participant(uid: &str, kind: &str, display_name: Option<&str>) -> ParticipantRowV1 {
    ParticipantRowV1 {
        uid: uid.to_owned(),
        kind: kind.to_owned(),
        display_name: display_name.map(str::to_owned),
        root_public_key: vec![9; 32],
        root_key_certificate: format!("header.{uid}.signature"),
        registered_at: T0,
    }
}

/// A UID is stored once; the database itself refuses a named patient or a nameless practice.
pub async fn participants_are_stored_once_and_patients_stay_nameless(store: &dyn Store) {
    let patient = sample_participant("3f2c1d9e-1b7a-4c55-9a0e-2f6d8b1c4e70", "patient", None);
    let practice = sample_participant(
        "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "institution:practice",
        Some("Praxis Dr. Weiß"),
    );
    store.insert_participant(&patient).await.unwrap();
    store.insert_participant(&practice).await.unwrap();
    assert_eq!(
        store.participant(&patient.uid).await.unwrap(),
        Some(patient.clone())
    );
    assert_eq!(
        store.participant(&practice.uid).await.unwrap(),
        Some(practice)
    );
    assert_eq!(
        store
            .participant("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap(),
        None
    );

    let reuse = sample_participant(&patient.uid, "hcp", Some("Dr. Other"));
    let outcome = store.insert_participant(&reuse).await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict(_))),
        "{outcome:?}"
    );

    let named_patient = sample_participant(
        "11111111-2222-4333-8444-555555555555",
        "patient",
        Some("Erika M."),
    );
    assert!(store.insert_participant(&named_patient).await.is_err());
    let nameless_practice = sample_participant(
        "66666666-7777-4888-9999-000000000000",
        "institution:practice",
        None,
    );
    assert!(store.insert_participant(&nameless_practice).await.is_err());
    let unknown_kind =
        sample_participant("66666666-7777-4888-9999-111111111111", "admin", Some("x"));
    assert!(store.insert_participant(&unknown_kind).await.is_err());
    assert_eq!(store.participant(&named_patient.uid).await.unwrap(), None);
}
