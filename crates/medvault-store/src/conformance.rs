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
    AccountRequestRowV1, AuditCheckpointRowV1, AuditEntryRowV1, AuditFilter,
    ClientCertificateRowV1, ConnectionChange, ConnectionRowV1, CredentialKeyRowV1, DocumentRowV1,
    LoginChallengeRowV1, NewWorkingCredential, ParticipantRowV1, PasswordRowV1,
    RemoveCredentialOutcome, SessionRowV1, Store, StoreError, ThrottlePolicy,
    WorkingCredentialRowV1,
};
use crate::{
    Approval, AuthorizationCodeRowV1, AuthorizationRowV1, GrantRowV1, GrantSelector,
    LoginTicketRowV1, PairingRowV1, ServerKeyRowV1,
};
use crate::{
    CredentialCodeRowV1, CredentialIssue, DocumentInsert, IssuerKeyRowV1, PatientCredentialRowV1,
    ProofingRowV1,
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
            registration_is_all_or_nothing,
            the_last_credential_cannot_be_removed,
            a_one_time_key_is_consumed_once,
            sessions_and_challenges_end,
            login_attempts_are_reserved_and_lock,
            login_attempts_are_reserved_together,
            connections_are_invited_accepted_and_deleted,
            documents_are_stored_whole_and_seen_by_their_recipients,
            account_requests_advance_once,
            proofing_codes_and_jtis_are_single_use,
            issuer_keys_rotate_and_stay_published,
            patient_credentials_issue_once_and_revoke_for_good,
            hddt_requests_codes_and_refresh_tokens_are_used_once,
            hddt_grants_are_revoked_by_selector,
            device_data_batches_are_atomic_and_idempotent,
            device_data_searches_page_and_hide,
            hddt_access_counts_add_up_and_tickets_are_taken_once,
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

const PATIENT_UID: &str = "3f2c1d9e-1b7a-4c55-9a0e-2f6d8b1c4e70";

/// A credential of `kind` with `slots` key slots (a password credential gets `email`).
pub fn sample_credential(
    id: &str,
    uid: &str,
    kind: &str,
    slots: std::ops::RangeInclusive<i64>,
    email: Option<&str>,
) -> NewWorkingCredential {
    NewWorkingCredential {
        credential: WorkingCredentialRowV1 {
            id: id.to_owned(),
            uid: uid.to_owned(),
            kind: kind.to_owned(),
            public_key: vec![4; 65],
            certificate: vec![0x30, 1, 2],
            created_at: T0,
            removed_at: None,
        },
        keys: slots
            .map(|slot| CredentialKeyRowV1 {
                credential_id: id.to_owned(),
                slot,
                proof_hash: Some(vec![u8::try_from(slot % 251).unwrap(); 32]),
                wrapped_root_key: vec![7; 60],
                wrapped_signing_key: Some(vec![8; 150]),
                ecdh_public_key: None,
                used_at: None,
            })
            .collect(),
        password: email.map(|email| PasswordRowV1 {
            email: email.to_owned(),
            credential_id: id.to_owned(),
            suite: 1,
            password_file: vec![5; 192],
        }),
    }
}

/// Registration stores a participant with its credentials in one transaction:
/// a taken email leaves nothing of the second registration behind.
pub async fn registration_is_all_or_nothing(store: &dyn Store) {
    let patient = sample_participant(PATIENT_UID, "patient", None);
    let password = sample_credential(
        "wc-1",
        PATIENT_UID,
        "password",
        0..=0,
        Some("a@example.org"),
    );
    let superpin = sample_credential("wc-2", PATIENT_UID, "superpin", 0..=0, None);
    store
        .register_participant(&patient, &[password.clone(), superpin.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.working_credentials(PATIENT_UID).await.unwrap(),
        vec![password.credential.clone(), superpin.credential.clone()]
    );
    assert_eq!(
        store.password_by_email("a@example.org").await.unwrap(),
        password.password
    );
    assert_eq!(
        store.credential_key("wc-2", 0).await.unwrap().as_ref(),
        superpin.keys.first()
    );

    let second_uid = "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let second = sample_participant(second_uid, "patient", None);
    let tans = sample_credential("wc-3", second_uid, "tan", 1..=5, None);
    let same_email =
        sample_credential("wc-4", second_uid, "password", 0..=0, Some("a@example.org"));
    let outcome = store
        .register_participant(&second, &[tans, same_email])
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict("email"))),
        "{outcome:?}"
    );
    assert_eq!(store.participant(second_uid).await.unwrap(), None);
    assert_eq!(store.working_credential("wc-3").await.unwrap(), None);
    assert_eq!(store.credential_key("wc-3", 1).await.unwrap(), None);

    // A credential for an unknown participant is refused.
    let orphan = sample_credential("wc-5", second_uid, "superpin", 0..=0, None);
    assert!(store.add_working_credential(&orphan).await.is_err());
    // Adding to a registered one works, and an id is never taken twice.
    let tans = sample_credential("wc-6", PATIENT_UID, "tan", 1..=3, None);
    store.add_working_credential(&tans).await.unwrap();
    assert_eq!(store.unused_credential_keys("wc-6").await.unwrap(), 3);
    let again = sample_credential("wc-6", PATIENT_UID, "superpin", 0..=0, None);
    assert!(matches!(
        store.add_working_credential(&again).await,
        Err(StoreError::Conflict(_))
    ));
    // At most one active SuperPIN (password, TAN batch), also when enrolments race.
    let second_tans = sample_credential("wc-7", PATIENT_UID, "tan", 1..=1, None);
    let second_superpin = sample_credential("wc-8", PATIENT_UID, "superpin", 0..=0, None);
    let (one, two) = futures::join!(
        store.add_working_credential(&second_tans),
        store.add_working_credential(&second_superpin),
    );
    assert!(
        matches!(one, Err(StoreError::Conflict(_))),
        "a TAN batch exists: {one:?}"
    );
    assert!(
        matches!(two, Err(StoreError::Conflict(_))),
        "a SuperPIN exists: {two:?}"
    );
    // Key-holding kinds may be many.
    for id in ["wc-9", "wc-10"] {
        store
            .add_working_credential(&sample_credential(
                id,
                PATIENT_UID,
                "smartcard",
                0..=0,
                None,
            ))
            .await
            .unwrap();
    }
}

/// The last credential stays; two racing removals of the last two leave one.
pub async fn the_last_credential_cannot_be_removed(store: &dyn Store) {
    let patient = sample_participant(PATIENT_UID, "patient", None);
    let password = sample_credential(
        "wc-1",
        PATIENT_UID,
        "password",
        0..=0,
        Some("a@example.org"),
    );
    let superpin = sample_credential("wc-2", PATIENT_UID, "superpin", 0..=0, None);
    store
        .register_participant(&patient, &[password, superpin])
        .await
        .unwrap();
    let session = SessionRowV1 {
        token_hash: vec![1; 32],
        uid: PATIENT_UID.to_owned(),
        credential_id: "wc-1".to_owned(),
        created_at: T0,
        expires_at: T0 + Duration::minutes(30),
        assurance: "IAL1".to_owned(),
        patient_credential_id: None,
    };
    store.insert_session(&session).await.unwrap();

    let at = T0 + Duration::minutes(1);
    let (first, second) = futures::join!(
        store.remove_working_credential(PATIENT_UID, "wc-1", at),
        store.remove_working_credential(PATIENT_UID, "wc-2", at),
    );
    let mut outcomes = [first.unwrap(), second.unwrap()];
    outcomes.sort_by_key(|outcome| *outcome == RemoveCredentialOutcome::Removed);
    assert_eq!(
        outcomes,
        [
            RemoveCredentialOutcome::LastCredential,
            RemoveCredentialOutcome::Removed
        ]
    );
    let remaining = store.working_credentials(PATIENT_UID).await.unwrap();
    assert_eq!(remaining.len(), 1);
    let removed_id = if remaining[0].id == "wc-1" {
        "wc-2"
    } else {
        "wc-1"
    };
    let removed = store.working_credential(removed_id).await.unwrap().unwrap();
    assert_eq!(removed.removed_at, Some(at));
    assert_eq!(store.credential_key(removed_id, 0).await.unwrap(), None);
    if removed_id == "wc-1" {
        assert_eq!(
            store.password_by_email("a@example.org").await.unwrap(),
            None
        );
        assert_eq!(store.session(&[1; 32], T0).await.unwrap(), None);
    }
    assert_eq!(
        store
            .remove_working_credential(PATIENT_UID, removed_id, at)
            .await
            .unwrap(),
        RemoveCredentialOutcome::NotFound
    );
    assert_eq!(
        store
            .remove_working_credential("00000000-0000-4000-8000-000000000000", "wc-1", at)
            .await
            .unwrap(),
        RemoveCredentialOutcome::NotFound
    );
}

/// A one-time slot is consumed by exactly one of many racing callers.
pub async fn a_one_time_key_is_consumed_once(store: &dyn Store) {
    let patient = sample_participant(PATIENT_UID, "patient", None);
    let tans = sample_credential("wc-tan", PATIENT_UID, "tan", 1..=2, None);
    store.register_participant(&patient, &[tans]).await.unwrap();
    let attempts = (0..8).map(|_| store.consume_credential_key("wc-tan", 1, T0));
    let results = futures::future::join_all(attempts).await;
    let winners = results
        .into_iter()
        .map(Result::unwrap)
        .filter(|won| *won)
        .count();
    assert_eq!(winners, 1);
    assert_eq!(store.unused_credential_keys("wc-tan").await.unwrap(), 1);
    let used = store.credential_key("wc-tan", 1).await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(T0));
    assert!(!store.consume_credential_key("wc-tan", 9, T0).await.unwrap());
}

/// Sessions are found by hash until they expire or are deleted; challenges are
/// taken once and not after they expire.
pub async fn sessions_and_challenges_end(store: &dyn Store) {
    let patient = sample_participant(PATIENT_UID, "patient", None);
    let superpin = sample_credential("wc-2", PATIENT_UID, "superpin", 0..=0, None);
    store
        .register_participant(&patient, &[superpin])
        .await
        .unwrap();
    let session = SessionRowV1 {
        token_hash: vec![2; 32],
        uid: PATIENT_UID.to_owned(),
        credential_id: "wc-2".to_owned(),
        created_at: T0,
        expires_at: T0 + Duration::minutes(30),
        assurance: "IAL1".to_owned(),
        patient_credential_id: None,
    };
    store.insert_session(&session).await.unwrap();
    assert_eq!(
        store.session(&[2; 32], T0).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.session(&[3; 32], T0).await.unwrap(), None);
    assert_eq!(
        store
            .session(&[2; 32], T0 + Duration::minutes(30))
            .await
            .unwrap(),
        None
    );
    assert!(store.delete_session(&[2; 32]).await.unwrap());
    assert!(!store.delete_session(&[2; 32]).await.unwrap());
    assert_eq!(store.session(&[2; 32], T0).await.unwrap(), None);

    let challenge = LoginChallengeRowV1 {
        id: "challenge-1".to_owned(),
        credential_id: Some("wc-2".to_owned()),
        purpose: "signature".to_owned(),
        throttle_key: "account:x".to_owned(),
        state: vec![6; 32],
        expires_at: T0 + Duration::minutes(1),
    };
    store.insert_login_challenge(&challenge).await.unwrap();
    let unknown = LoginChallengeRowV1 {
        id: "challenge-2".to_owned(),
        credential_id: None,
        purpose: "opaque".to_owned(),
        ..challenge.clone()
    };
    store.insert_login_challenge(&unknown).await.unwrap();
    let (first, second) = futures::join!(
        store.take_login_challenge("challenge-1", T0),
        store.take_login_challenge("challenge-1", T0),
    );
    let taken: Vec<_> = [first.unwrap(), second.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(taken, vec![challenge.clone()]);
    assert_eq!(
        store
            .take_login_challenge("challenge-2", T0 + Duration::minutes(1))
            .await
            .unwrap(),
        None,
        "an expired challenge is not accepted"
    );
    assert_eq!(
        store.take_login_challenge("challenge-2", T0).await.unwrap(),
        None
    );

    store.insert_session(&session).await.unwrap();
    store.insert_login_challenge(&challenge).await.unwrap();
    let purged = store
        .purge_expired_logins(T0 + Duration::hours(1), T0)
        .await
        .unwrap();
    assert_eq!(purged, 2);
}

/// Attempts count per key and go stale; beyond the free ones each attempt
/// locks for a doubling time, and of racing attempts at most one passes per lock.
pub async fn login_attempts_are_reserved_and_lock(store: &dyn Store) {
    let key = "address:192.0.2.1".to_owned();
    let policy = ThrottlePolicy {
        free: 3,
        max_lock: Duration::seconds(5),
    };
    let stale = T0 - Duration::hours(1);
    for expected in 1..=3 {
        assert_eq!(
            store
                .reserve_login_attempt(&key, T0, stale, policy)
                .await
                .unwrap(),
            Some(expected)
        );
    }
    let keys = vec![key.clone(), "account:nobody".to_owned()];
    assert_eq!(store.login_locked_until(&keys, T0).await.unwrap(), None);
    // Racing attempts beyond the free ones: exactly one passes (and locks for 1 s).
    let racing = (0..6).map(|_| store.reserve_login_attempt(&key, T0, stale, policy));
    let passed: Vec<i64> = futures::future::join_all(racing)
        .await
        .into_iter()
        .filter_map(Result::unwrap)
        .collect();
    assert_eq!(passed, vec![4]);
    assert_eq!(
        store.login_locked_until(&keys, T0).await.unwrap(),
        Some(T0 + Duration::seconds(1))
    );
    // After each lock, one more attempt passes and the next lock doubles, up to the cap.
    let mut at = T0 + Duration::seconds(1);
    for (count, lock) in [(5, 2), (6, 4), (7, 5), (8, 5)] {
        assert_eq!(
            store
                .reserve_login_attempt(&key, at, at - Duration::hours(1), policy)
                .await
                .unwrap(),
            Some(count)
        );
        assert_eq!(
            store
                .reserve_login_attempt(&key, at, at - Duration::hours(1), policy)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.login_locked_until(&keys, at).await.unwrap(),
            Some(at + Duration::seconds(lock))
        );
        at += Duration::seconds(lock);
    }
    // A refund gives one back; clearing forgets all; staleness starts over.
    store
        .settle_login_attempt("account:unrelated", &key)
        .await
        .unwrap();
    assert_eq!(
        store
            .reserve_login_attempt(&key, at, at - Duration::hours(1), policy)
            .await
            .unwrap(),
        Some(8)
    );
    store.clear_login_failures(&key).await.unwrap();
    let later = at + Duration::hours(3);
    assert_eq!(
        store
            .reserve_login_attempt(&key, later, later - Duration::hours(1), policy)
            .await
            .unwrap(),
        Some(1)
    );
    let much_later = later + Duration::hours(2);
    assert_eq!(
        store
            .reserve_login_attempt(&key, much_later, much_later - Duration::hours(1), policy)
            .await
            .unwrap(),
        Some(1),
        "a count whose last attempt is stale starts again"
    );
}

/// Registers three patients with one credential each; returns their UIDs, sorted.
async fn three_participants(store: &dyn Store) -> [String; 3] {
    let mut uids = [
        "11111111-1111-4111-8111-111111111111".to_owned(),
        "22222222-2222-4222-8222-222222222222".to_owned(),
        "33333333-3333-4333-8333-333333333333".to_owned(),
    ];
    uids.sort();
    for (index, uid) in uids.iter().enumerate() {
        let participant = sample_participant(uid, "patient", None);
        let credential = sample_credential(&format!("wc-{index}"), uid, "superpin", 0..=0, None);
        store
            .register_participant(&participant, &[credential])
            .await
            .unwrap();
    }
    uids
}

/// A pair has one connection; only the invited side accepts; either deletes.
pub async fn connections_are_invited_accepted_and_deleted(store: &dyn Store) {
    let [a, b, c] = three_participants(store).await;
    let pending = ConnectionRowV1 {
        uid_low: a.clone(),
        uid_high: b.clone(),
        inviter: a.clone(),
        state: "pending".to_owned(),
        created_at: T0,
        accepted_at: None,
    };
    store.insert_connection(&pending).await.unwrap();
    let again = ConnectionRowV1 {
        inviter: b.clone(),
        ..pending.clone()
    };
    assert!(matches!(
        store.insert_connection(&again).await,
        Err(StoreError::Conflict("connection"))
    ));
    let reversed = ConnectionRowV1 {
        uid_low: b.clone(),
        uid_high: a.clone(),
        ..pending.clone()
    };
    assert!(
        store.insert_connection(&reversed).await.is_err(),
        "low < high is enforced"
    );
    let at = T0 + Duration::minutes(1);
    assert_eq!(
        store.accept_connection(&a, &b, &a, at).await.unwrap(),
        ConnectionChange::NotFound,
        "the inviter cannot accept"
    );
    assert_eq!(
        store.accept_connection(&a, &b, &b, at).await.unwrap(),
        ConnectionChange::Done
    );
    assert_eq!(
        store.accept_connection(&a, &b, &b, at).await.unwrap(),
        ConnectionChange::NotFound,
        "an active connection is not accepted twice"
    );
    let active = store.connection(&a, &b).await.unwrap().unwrap();
    assert_eq!(
        (active.state.as_str(), active.accepted_at),
        ("active", Some(at))
    );
    let other = ConnectionRowV1 {
        uid_low: b.clone(),
        uid_high: c.clone(),
        inviter: c.clone(),
        ..pending.clone()
    };
    store.insert_connection(&other).await.unwrap();
    assert_eq!(store.connections(&b).await.unwrap().len(), 2);
    assert_eq!(store.connections(&a).await.unwrap(), vec![active]);
    assert_eq!(
        store.delete_connection(&a, &b).await.unwrap(),
        ConnectionChange::Done
    );
    assert_eq!(
        store.delete_connection(&a, &b).await.unwrap(),
        ConnectionChange::NotFound
    );
    assert_eq!(store.connection(&a, &b).await.unwrap(), None);
}

/// A document is stored with all its keys or not at all, and each recipient
/// sees it with their own key only.
pub async fn documents_are_stored_whole_and_seen_by_their_recipients(store: &dyn Store) {
    let [a, b, c] = three_participants(store).await;
    for (low, high) in [(&a, &b), (&a, &c)] {
        store
            .insert_connection(&ConnectionRowV1 {
                uid_low: low.clone(),
                uid_high: high.clone(),
                inviter: low.clone(),
                state: "pending".to_owned(),
                created_at: T0,
                accepted_at: None,
            })
            .await
            .unwrap();
    }
    store.accept_connection(&a, &b, &b, T0).await.unwrap();
    let document = DocumentRowV1 {
        id: "doc-1".to_owned(),
        sender_uid: a.clone(),
        sender_credential_id: "wc-0".to_owned(),
        sender_certificate: vec![0x30, 3],
        signature: vec![0x30, 4],
        sealed_header: vec![1; 40],
        sealed_body: vec![2; 4096],
        size: 4096,
        created_at: T0,
    };
    let keys = vec![(a.clone(), vec![10; 80]), (b.clone(), vec![11; 80])];
    assert_eq!(
        store.insert_document(&document, &keys).await.unwrap(),
        DocumentInsert::Stored
    );
    let for_b = store.received_document(&b, "doc-1").await.unwrap().unwrap();
    assert_eq!(for_b.document, document);
    assert_eq!(for_b.sealed_key, vec![11; 80]);
    assert_eq!(for_b.recipients, vec![a.clone(), b.clone()]);
    assert_eq!(store.received_document(&c, "doc-1").await.unwrap(), None);
    let listed = store.received_documents(&a, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].document.sealed_body.is_empty(),
        "lists carry no bodies"
    );
    assert_eq!(listed[0].sealed_key, vec![10; 80]);

    // A recipient without an active connection (a and c: pending) stops it.
    let unconnected = DocumentRowV1 {
        id: "doc-4".to_owned(),
        ..document.clone()
    };
    assert_eq!(
        store
            .insert_document(
                &unconnected,
                &[(b.clone(), vec![1; 80]), (c.clone(), vec![1; 80])]
            )
            .await
            .unwrap(),
        DocumentInsert::NotConnected
    );
    assert_eq!(store.received_document(&b, "doc-4").await.unwrap(), None);
    store.accept_connection(&a, &c, &c, T0).await.unwrap();
    // A key for an unknown participant fails the whole document.
    let broken = DocumentRowV1 {
        id: "doc-2".to_owned(),
        created_at: T0 + Duration::minutes(1),
        ..document.clone()
    };
    let bad_keys = vec![
        (c.clone(), vec![12; 80]),
        (
            "00000000-0000-4000-8000-000000000000".to_owned(),
            vec![13; 80],
        ),
    ];
    let outcome = store.insert_document(&broken, &bad_keys).await;
    assert!(
        !matches!(outcome, Ok(DocumentInsert::Stored)),
        "{outcome:?}"
    );
    assert_eq!(store.received_document(&c, "doc-2").await.unwrap(), None);
    assert!(store.received_documents(&c, 10).await.unwrap().is_empty());
    // The id is never taken twice.
    assert!(matches!(
        store
            .insert_document(&document, &[(c.clone(), vec![1; 80])])
            .await,
        Err(StoreError::Conflict("document"))
    ));
    // Newest first, bounded.
    let newer = DocumentRowV1 {
        id: "doc-3".to_owned(),
        created_at: T0 + Duration::minutes(2),
        ..document
    };
    store
        .insert_document(&newer, &[(a.clone(), vec![14; 80])])
        .await
        .unwrap();
    let ids: Vec<String> = store
        .received_documents(&a, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|received| received.document.id)
        .collect();
    assert_eq!(ids, vec!["doc-3".to_owned(), "doc-1".to_owned()]);
    assert_eq!(store.received_documents(&a, 1).await.unwrap().len(), 1);
}

/// An Account App request is approved, redirected and its result taken, each once.
pub async fn account_requests_advance_once(store: &dyn Store) {
    let patient = sample_participant(PATIENT_UID, "patient", None);
    let superpin = sample_credential("wc-2", PATIENT_UID, "superpin", 0..=0, None);
    store
        .register_participant(&patient, &[superpin])
        .await
        .unwrap();
    let request = AccountRequestRowV1 {
        id: "request-1".to_owned(),
        purpose: "login".to_owned(),
        code_hash: vec![1; 32],
        return_to: "https://app.example/back".to_owned(),
        state: "xyz".to_owned(),
        status: "pending".to_owned(),
        uid: None,
        credential_id: None,
        result_hash: None,
        created_at: T0,
        expires_at: T0 + Duration::minutes(10),
    };
    store.insert_account_request(&request).await.unwrap();
    assert_eq!(
        store.account_request("request-1", T0).await.unwrap(),
        Some(request.clone())
    );
    assert_eq!(
        store
            .account_request("request-1", T0 + Duration::minutes(10))
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .redirect_account_request("request-1", &[2; 32], T0)
            .await
            .unwrap(),
        "a pending request cannot be redirected"
    );
    assert_eq!(
        store
            .approve_account_request(&[9; 32], PATIENT_UID, "wc-2", T0)
            .await
            .unwrap(),
        None
    );
    let (first, second) = futures::join!(
        store.approve_account_request(&[1; 32], PATIENT_UID, "wc-2", T0),
        store.approve_account_request(&[1; 32], PATIENT_UID, "wc-2", T0),
    );
    let approved: Vec<_> = [first.unwrap(), second.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].uid.as_deref(), Some(PATIENT_UID));
    assert!(
        store
            .redirect_account_request("request-1", &[2; 32], T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .redirect_account_request("request-1", &[3; 32], T0)
            .await
            .unwrap()
    );
    assert_eq!(store.take_account_result(&[3; 32], T0).await.unwrap(), None);
    let taken = store
        .take_account_result(&[2; 32], T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (taken.status.as_str(), taken.state.as_str()),
        ("done", "xyz")
    );
    assert_eq!(store.take_account_result(&[2; 32], T0).await.unwrap(), None);
}

/// A proofing is stored with its code; the code works once, for its patient
/// only, until it expires; a request `jti` is accepted once while it lives.
pub async fn proofing_codes_and_jtis_are_single_use(store: &dyn Store) {
    let [institution, patient, other] = three_participants(store).await;
    let proofing = ProofingRowV1 {
        id: "proofing-1".to_owned(),
        institution_uid: institution.clone(),
        patient_uid: patient.clone(),
        assurance: "IAL2".to_owned(),
        method: "in-person".to_owned(),
        evidence_type: "id-card".to_owned(),
        proofed_by: institution.clone(),
        proofed_at: T0,
    };
    let code = CredentialCodeRowV1 {
        code_hash: vec![5; 32],
        proofing_id: "proofing-1".to_owned(),
        patient_uid: patient.clone(),
        expires_at: T0 + Duration::minutes(10),
    };
    store.insert_proofing(&proofing, &code).await.unwrap();
    assert_eq!(
        store.proofings_of_patient(&patient).await.unwrap(),
        vec![proofing.clone()]
    );
    assert!(store.proofings_of_patient(&other).await.unwrap().is_empty());
    // An unknown method (or a second code with the same hash) stores nothing.
    let bad = ProofingRowV1 {
        id: "proofing-2".to_owned(),
        method: "telephone".to_owned(),
        ..proofing.clone()
    };
    assert!(store.insert_proofing(&bad, &code).await.is_err());
    assert_eq!(
        store
            .consume_credential_code(&[5; 32], &other, T0)
            .await
            .unwrap(),
        None,
        "bound to its patient"
    );
    assert_eq!(
        store
            .consume_credential_code(&[5; 32], &patient, T0 + Duration::minutes(10))
            .await
            .unwrap(),
        None,
        "expired"
    );
    let (first, second) = futures::join!(
        store.consume_credential_code(&[5; 32], &patient, T0),
        store.consume_credential_code(&[5; 32], &patient, T0),
    );
    let used: Vec<_> = [first.unwrap(), second.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(used, vec![proofing]);

    let expires = T0 + Duration::minutes(5);
    assert!(store.record_jti("jti-1", expires, T0).await.unwrap());
    assert!(
        !store
            .record_jti("jti-1", expires, T0 + Duration::minutes(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_jti(
                "jti-1",
                T0 + Duration::minutes(20),
                T0 + Duration::minutes(6)
            )
            .await
            .unwrap(),
        "an expired entry can be taken again"
    );
}

/// Rotation retires the current key in the same transaction; retired keys stay
/// published until their time; there is one current key per institution.
pub async fn issuer_keys_rotate_and_stay_published(store: &dyn Store) {
    let [institution, other, _] = three_participants(store).await;
    let key = |kid: &str, uid: &str, publish_until| IssuerKeyRowV1 {
        kid: kid.to_owned(),
        institution_uid: uid.to_owned(),
        public_jwk: format!("{{\"kid\":\"{kid}\"}}"),
        wrapped_private_key: vec![7; 150],
        created_at: T0,
        retired_at: None,
        publish_until,
    };
    assert_eq!(store.current_issuer_key(&institution).await.unwrap(), None);
    let first = key("k1", &institution, T0 + Duration::days(1));
    store.rotate_issuer_key(&first, T0).await.unwrap();
    store
        .rotate_issuer_key(&key("o1", &other, T0 + Duration::days(1)), T0)
        .await
        .unwrap();
    assert_eq!(
        store.current_issuer_key(&institution).await.unwrap(),
        Some(first.clone())
    );
    store
        .extend_issuer_key("k1", T0 + Duration::days(30))
        .await
        .unwrap();
    store
        .extend_issuer_key("k1", T0 + Duration::days(2))
        .await
        .unwrap();
    let at = T0 + Duration::hours(1);
    let second = IssuerKeyRowV1 {
        created_at: at,
        ..key("k2", &institution, at + Duration::days(1))
    };
    store.rotate_issuer_key(&second, at).await.unwrap();
    assert_eq!(
        store.current_issuer_key(&institution).await.unwrap(),
        Some(second)
    );
    let kids = |keys: Vec<IssuerKeyRowV1>| keys.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    assert_eq!(
        kids(
            store
                .published_issuer_keys(Some(&institution), at)
                .await
                .unwrap()
        ),
        vec!["k1".to_owned(), "k2".to_owned()]
    );
    assert_eq!(
        kids(store.published_issuer_keys(None, at).await.unwrap()).len(),
        3
    );
    // The retired key is published until its (extended) time, then no more.
    let later = T0 + Duration::days(31);
    assert_eq!(
        kids(
            store
                .published_issuer_keys(Some(&institution), later)
                .await
                .unwrap()
        ),
        vec!["k2".to_owned()],
        "the current key is always published"
    );
    // The kid is unique.
    assert!(
        store
            .rotate_issuer_key(&key("k2", &other, later), later)
            .await
            .is_err()
    );
    assert_eq!(
        store
            .current_issuer_key(&other)
            .await
            .unwrap()
            .map(|k| k.kid),
        Some("o1".to_owned()),
        "a failed rotation retires nothing"
    );
}

/// Several keys are reserved together or not at all; settling clears one and
/// refunds the other in one step.
pub async fn login_attempts_are_reserved_together(store: &dyn Store) {
    let policy = ThrottlePolicy {
        free: 1,
        max_lock: Duration::seconds(5),
    };
    let stale = T0 - Duration::hours(1);
    let keys = vec![
        ("account:a".to_owned(), policy),
        ("address:192.0.2.9".to_owned(), policy),
    ];
    assert_eq!(
        store
            .reserve_login_attempts(&keys, T0, stale)
            .await
            .unwrap(),
        None
    );
    // The second attempt passes and locks both for 1 s.
    assert_eq!(
        store
            .reserve_login_attempts(&keys, T0, stale)
            .await
            .unwrap(),
        None
    );
    // Locked: refused, naming the key, and nothing else is counted.
    let other = vec![
        ("address:198.51.100.1".to_owned(), policy),
        ("account:a".to_owned(), policy),
    ];
    assert_eq!(
        store
            .reserve_login_attempts(&other, T0, stale)
            .await
            .unwrap(),
        Some("account:a".to_owned())
    );
    assert_eq!(
        store
            .reserve_login_attempt("address:198.51.100.1", T0, stale, policy)
            .await
            .unwrap(),
        Some(1),
        "the refused batch counted nothing"
    );
    // Settle: the account is forgotten, the address gets its attempt back.
    store
        .settle_login_attempt("account:a", "address:192.0.2.9")
        .await
        .unwrap();
    let later = T0 + Duration::seconds(2);
    assert_eq!(
        store
            .reserve_login_attempt("account:a", later, stale, policy)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store
            .reserve_login_attempt("address:192.0.2.9", later, stale, policy)
            .await
            .unwrap(),
        Some(2)
    );
}

/// Issuance uses the code, records the `jti` and stores the credential all
/// together or not at all; status indexes are unique per institution;
/// revocation is final and ends the IAL2 sessions of the credential; a
/// presentation nonce opens one session, once.
pub async fn patient_credentials_issue_once_and_revoke_for_good(store: &dyn Store) {
    let [institution, patient, other] = three_participants(store).await;
    let proofing = |id: &str| ProofingRowV1 {
        id: id.to_owned(),
        institution_uid: institution.clone(),
        patient_uid: patient.clone(),
        assurance: "IAL2".to_owned(),
        method: "in-person".to_owned(),
        evidence_type: "id-card".to_owned(),
        proofed_by: institution.clone(),
        proofed_at: T0,
    };
    let code = |hash: u8, proofing_id: &str| CredentialCodeRowV1 {
        code_hash: vec![hash; 32],
        proofing_id: proofing_id.to_owned(),
        patient_uid: patient.clone(),
        expires_at: T0 + Duration::minutes(10),
    };
    for (hash, id) in [(1, "p-1"), (2, "p-2"), (3, "p-3")] {
        store
            .insert_proofing(&proofing(id), &code(hash, id))
            .await
            .unwrap();
    }
    store
        .rotate_issuer_key(
            &IssuerKeyRowV1 {
                kid: "k1".to_owned(),
                institution_uid: institution.clone(),
                public_jwk: "{}".to_owned(),
                wrapped_private_key: vec![7; 150],
                created_at: T0,
                retired_at: None,
                publish_until: T0,
            },
            T0,
        )
        .await
        .unwrap();
    let credential = |id: &str, proofing_id: &str, jti: &str, index: i64| PatientCredentialRowV1 {
        id: id.to_owned(),
        institution_uid: institution.clone(),
        patient_uid: patient.clone(),
        proofing_id: proofing_id.to_owned(),
        subject: "did:key:zDn".to_owned(),
        jti: jti.to_owned(),
        kid: "k1".to_owned(),
        status_index: index,
        key_protection: "software".to_owned(),
        client_id: "ua".to_owned(),
        issued_at: T0,
        expires_at: T0 + Duration::days(365),
        status: "active".to_owned(),
        status_changed_at: None,
    };
    let jti_until = T0 + Duration::minutes(6);

    assert_eq!(
        store
            .peek_credential_code(&[1; 32], &patient, T0)
            .await
            .unwrap(),
        Some(proofing("p-1"))
    );
    assert_eq!(
        store
            .peek_credential_code(&[1; 32], &other, T0)
            .await
            .unwrap(),
        None
    );
    // A code of another proofing, or of another patient, issues nothing.
    let wrong_proofing = credential("c-x", "p-2", "jti-x", 5);
    assert_eq!(
        store
            .issue_patient_credential(&[1; 32], &wrong_proofing, jti_until, T0)
            .await
            .unwrap(),
        CredentialIssue::CodeRefused
    );
    assert!(
        store.record_jti("jti-x", jti_until, T0).await.unwrap(),
        "no jti recorded"
    );

    // Two racing issuances of one code: one wins.
    let first = credential("c-1", "p-1", "jti-1", 7);
    let twin = credential("c-1b", "p-1", "jti-1b", 8);
    let (a, b) = futures::join!(
        store.issue_patient_credential(&[1; 32], &first, jti_until, T0),
        store.issue_patient_credential(&[1; 32], &twin, jti_until, T0),
    );
    let mut outcomes = vec![a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
    assert_eq!(
        outcomes,
        vec![CredentialIssue::CodeRefused, CredentialIssue::Issued]
    );
    let winner = store
        .patient_credential_at(&institution, 7)
        .await
        .unwrap()
        .or(store.patient_credential_at(&institution, 8).await.unwrap())
        .unwrap();
    assert!(winner == first || winner == twin);

    // A replayed jti, or a taken index, leaves the code unused.
    let replay = credential("c-2", "p-2", &winner.jti, 9);
    assert_eq!(
        store
            .issue_patient_credential(&[2; 32], &replay, jti_until, T0)
            .await
            .unwrap(),
        CredentialIssue::Replay
    );
    let clash = credential("c-2", "p-2", "jti-2", winner.status_index);
    assert_eq!(
        store
            .issue_patient_credential(&[2; 32], &clash, jti_until, T0)
            .await
            .unwrap(),
        CredentialIssue::IndexTaken
    );
    assert!(
        store.record_jti("jti-2", jti_until, T0).await.unwrap(),
        "rolled back"
    );
    let second = credential("c-2", "p-2", "jti-2b", 10);
    assert_eq!(
        store
            .issue_patient_credential(&[2; 32], &second, jti_until, T0)
            .await
            .unwrap(),
        CredentialIssue::Issued
    );
    assert_eq!(
        store
            .patient_credentials(Some(&patient), None)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .patient_credentials(None, Some(&institution))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        store
            .patient_credentials(Some(&other), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.holds_patient_credential(&patient, T0).await.unwrap());
    assert!(!store.holds_patient_credential(&other, T0).await.unwrap());

    // A new code for a proofing: only its institution's, only before issuance,
    // only while the patient is connected; the old unused code stops working.
    let until = T0 + Duration::minutes(20);
    assert_eq!(
        store
            .reissue_credential_code(&institution, &winner.proofing_id, &[20; 32], until, T0)
            .await
            .unwrap(),
        None,
        "a credential was issued for it"
    );
    assert_eq!(
        store
            .reissue_credential_code(&other, "p-3", &[21; 32], until, T0)
            .await
            .unwrap(),
        None,
        "not that institution's"
    );
    assert_eq!(
        store
            .reissue_credential_code(&institution, "p-3", &[22; 32], until, T0)
            .await
            .unwrap(),
        None,
        "not connected"
    );
    let (low, high) = crate::connection_pair(&institution, &patient);
    store
        .insert_connection(&ConnectionRowV1 {
            uid_low: low.to_owned(),
            uid_high: high.to_owned(),
            inviter: institution.clone(),
            state: "pending".to_owned(),
            created_at: T0,
            accepted_at: None,
        })
        .await
        .unwrap();
    store
        .accept_connection(low, high, &patient, T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .reissue_credential_code(&institution, "p-3", &[22; 32], until, T0)
            .await
            .unwrap(),
        Some(patient.clone())
    );
    assert_eq!(
        store
            .peek_credential_code(&[3; 32], &patient, T0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .peek_credential_code(&[22; 32], &patient, T0)
            .await
            .unwrap(),
        Some(proofing("p-3"))
    );

    // An IAL2 session: the nonce is bound to its account and taken once.
    let session = SessionRowV1 {
        token_hash: vec![9; 32],
        uid: patient.clone(),
        credential_id: "wc-1".to_owned(),
        created_at: T0,
        expires_at: T0 + Duration::minutes(30),
        assurance: "IAL1".to_owned(),
        patient_credential_id: None,
    };
    store.insert_session(&session).await.unwrap();
    let elevated = SessionRowV1 {
        token_hash: vec![10; 32],
        assurance: "IAL2".to_owned(),
        patient_credential_id: Some("c-2".to_owned()),
        ..session.clone()
    };
    store
        .insert_presentation_nonce(&[4; 32], &other, T0 + Duration::minutes(2))
        .await
        .unwrap();
    assert!(
        !store
            .open_presented_session(&[4; 32], &[9; 32], &elevated, T0)
            .await
            .unwrap(),
        "someone else's nonce"
    );
    store
        .insert_presentation_nonce(&[5; 32], &patient, T0 + Duration::minutes(2))
        .await
        .unwrap();
    assert!(
        !store
            .open_presented_session(&[5; 32], &[9; 32], &elevated, T0 + Duration::minutes(2))
            .await
            .unwrap(),
        "expired nonce"
    );
    store
        .insert_presentation_nonce(&[6; 32], &patient, T0 + Duration::minutes(2))
        .await
        .unwrap();
    assert!(
        store
            .open_presented_session(&[6; 32], &[9; 32], &elevated, T0)
            .await
            .unwrap()
    );
    assert_eq!(store.session(&[9; 32], T0).await.unwrap(), None, "replaced");
    assert_eq!(
        store.session(&[10; 32], T0).await.unwrap(),
        Some(elevated.clone())
    );
    assert!(
        !store
            .open_presented_session(&[6; 32], &[10; 32], &elevated, T0)
            .await
            .unwrap(),
        "a nonce works once"
    );

    // Suspension is reversible, revocation final; either ends the IAL2 session.
    let later = T0 + Duration::minutes(1);
    assert!(
        store
            .set_patient_credential_status("c-2", &institution, "suspended", later)
            .await
            .unwrap()
    );
    assert_eq!(store.session(&[10; 32], later).await.unwrap(), None);
    assert_eq!(
        store
            .patient_credential_indexes(&institution, "suspended", later)
            .await
            .unwrap(),
        vec![10]
    );
    assert!(
        !store
            .set_patient_credential_status("c-2", &other, "active", later)
            .await
            .unwrap(),
        "only its issuer"
    );
    assert!(
        store
            .holds_patient_credential(&patient, later)
            .await
            .unwrap(),
        "a suspended credential still counts (IAL2 stays required)"
    );
    assert!(
        store
            .set_patient_credential_status("c-2", &institution, "active", later)
            .await
            .unwrap()
    );
    assert_eq!(
        store.session(&[10; 32], later).await.unwrap(),
        None,
        "suspension ended the IAL2 session; reinstating does not revive it"
    );
    assert!(
        store
            .set_patient_credential_status("c-2", &institution, "revoked", later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_patient_credential_status("c-2", &institution, "active", later)
            .await
            .unwrap(),
        "revocation is final"
    );
    assert_eq!(
        store
            .patient_credential_indexes(&institution, "revoked", later)
            .await
            .unwrap(),
        vec![10]
    );
    assert_eq!(
        store
            .patient_credential("c-2")
            .await
            .unwrap()
            .unwrap()
            .status,
        "revoked"
    );
    assert_eq!(store.session(&[10; 32], later).await.unwrap(), None);
    // The other credential still counts.
    assert!(
        store
            .holds_patient_credential(&patient, later)
            .await
            .unwrap()
    );
    assert!(
        store
            .purge_expired_presentation_state(T0 + Duration::minutes(10))
            .await
            .unwrap()
            >= 2
    );
}

fn hddt_request(uri: &str) -> AuthorizationRowV1 {
    AuthorizationRowV1 {
        request_uri: uri.to_owned(),
        client_id: "urn:diga:bfarm:12345".to_owned(),
        request: "{}".to_owned(),
        created_at: T0,
        expires_at: T0 + Duration::seconds(90),
        opened_at: None,
        csrf_hash: None,
        interaction_expires_at: None,
        patient_uid: None,
        finished_at: None,
        outcome: None,
    }
}

fn hddt_approval(patient: &str, pairing: &str, grant: &str, code: u8) -> Approval {
    Approval {
        pairing: PairingRowV1 {
            pairing_id: pairing.to_owned(),
            client_id: "urn:diga:bfarm:12345".to_owned(),
            patient_uid: patient.to_owned(),
            created_at: T0,
        },
        grant: GrantRowV1 {
            id: grant.to_owned(),
            pairing_id: pairing.to_owned(),
            client_id: "urn:diga:bfarm:12345".to_owned(),
            patient_uid: patient.to_owned(),
            scope: "patient/Device.rs".to_owned(),
            consent_until: T0 + Duration::days(90),
            consent_basis: "patient".to_owned(),
            created_at: T0,
            refresh_generation: 0,
            rotated_at: None,
            revoked_at: None,
            revoke_reason: None,
        },
        code: AuthorizationCodeRowV1 {
            code_hash: vec![code; 32],
            grant_id: grant.to_owned(),
            client_id: "urn:diga:bfarm:12345".to_owned(),
            redirect_uri: "https://diga.example/cb".to_owned(),
            code_challenge: "c".repeat(43),
            expires_at: T0 + Duration::seconds(60),
            used_at: None,
        },
    }
}

/// Pairs `patient` through a full interaction and returns the grant id.
async fn hddt_pair(store: &dyn Store, patient: &str, uri: &str, ticket: u8, code: u8) -> String {
    let grant = format!("grant-{uri}");
    store
        .insert_authorization(&hddt_request(uri))
        .await
        .unwrap();
    assert!(
        store
            .open_authorization(
                uri,
                "urn:diga:bfarm:12345",
                &[9; 32],
                T0 + Duration::minutes(10),
                T0
            )
            .await
            .unwrap()
    );
    store
        .insert_login_ticket(&LoginTicketRowV1 {
            ticket_hash: vec![ticket; 32],
            patient_uid: patient.to_owned(),
            created_at: T0,
            expires_at: T0 + Duration::minutes(5),
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .authenticate_authorization(uri, &[9; 32], &[ticket; 32], T0)
            .await
            .unwrap()
            .as_deref(),
        Some(patient)
    );
    let approval = hddt_approval(patient, &"a".repeat(64), &grant, code);
    assert!(
        store
            .finish_authorization(uri, &[9; 32], Some(&approval), T0)
            .await
            .unwrap()
    );
    grant
}

/// A `request_uri` opens once, a ticket logs in once, a code redeems once, and a
/// refresh generation rotates once, also under concurrent use.
pub async fn hddt_requests_codes_and_refresh_tokens_are_used_once(store: &dyn Store) {
    let [patient, other, _] = three_participants(store).await;
    let uri = "urn:uuid:1";
    store
        .insert_authorization(&hddt_request(uri))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_authorization(&hddt_request(uri)).await,
        Err(StoreError::Conflict(_))
    ));
    let until = T0 + Duration::minutes(10);
    // Another DiGA's id, or after expiry: not opened.
    assert!(
        !store
            .open_authorization(uri, "urn:diga:bfarm:99999", &[9; 32], until, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .open_authorization(
                uri,
                "urn:diga:bfarm:12345",
                &[9; 32],
                until,
                T0 + Duration::seconds(90)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .open_authorization(uri, "urn:diga:bfarm:12345", &[9; 32], until, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .open_authorization(uri, "urn:diga:bfarm:12345", &[8; 32], until, T0)
            .await
            .unwrap()
    );
    let ticket = |hash: u8, who: &str| LoginTicketRowV1 {
        ticket_hash: vec![hash; 32],
        patient_uid: who.to_owned(),
        created_at: T0,
        expires_at: T0 + Duration::minutes(5),
    };
    store.insert_login_ticket(&ticket(1, &other)).await.unwrap();
    // A new ticket replaces the patient's earlier one.
    store
        .insert_login_ticket(&ticket(2, &patient))
        .await
        .unwrap();
    store
        .insert_login_ticket(&ticket(3, &patient))
        .await
        .unwrap();
    assert_eq!(
        store
            .authenticate_authorization(uri, &[9; 32], &[2; 32], T0)
            .await
            .unwrap(),
        None
    );
    // A wrong CSRF hash spends nothing.
    assert_eq!(
        store
            .authenticate_authorization(uri, &[8; 32], &[3; 32], T0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .authenticate_authorization(uri, &[9; 32], &[3; 32], T0)
            .await
            .unwrap(),
        Some(patient.clone())
    );
    // Bound once: the other patient's ticket cannot take the interaction over.
    assert_eq!(
        store
            .authenticate_authorization(uri, &[9; 32], &[1; 32], T0)
            .await
            .unwrap(),
        None
    );
    let approval = hddt_approval(&patient, &"a".repeat(64), "g1", 7);
    assert!(
        !store
            .finish_authorization(uri, &[8; 32], Some(&approval), T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_authorization(uri, &[9; 32], Some(&approval), until)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_authorization(uri, &[9; 32], Some(&approval), T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_authorization(uri, &[9; 32], None, T0)
            .await
            .unwrap()
    );
    let stored = store.authorization(uri).await.unwrap().unwrap();
    assert_eq!(stored.outcome.as_deref(), Some("approved"));
    assert_eq!(stored.patient_uid.as_deref(), Some(patient.as_str()));
    assert_eq!(
        store
            .pairing(&"a".repeat(64))
            .await
            .unwrap()
            .unwrap()
            .patient_uid,
        patient
    );

    // The code: not after expiry, then exactly once among racing redemptions.
    let code = store.authorization_code(&[7; 32]).await.unwrap().unwrap();
    assert_eq!(code.grant_id, "g1");
    assert_eq!(
        store
            .redeem_authorization_code(&[7; 32], T0 + Duration::seconds(60))
            .await
            .unwrap(),
        None
    );
    let (a, b) = tokio::join!(
        store.redeem_authorization_code(&[7; 32], T0),
        store.redeem_authorization_code(&[7; 32], T0)
    );
    let winners: Vec<GrantRowV1> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].refresh_generation, 1);
    assert_eq!(winners[0].patient_uid, patient);
    assert!(
        store
            .authorization_code(&[7; 32])
            .await
            .unwrap()
            .unwrap()
            .used_at
            .is_some()
    );

    // Refresh: one winner per generation; an old generation never rotates.
    let (a, b) = tokio::join!(
        store.rotate_refresh_token("g1", 1, T0),
        store.rotate_refresh_token("g1", 1, T0)
    );
    let winners: Vec<GrantRowV1> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].refresh_generation, 2);
    assert_eq!(store.rotate_refresh_token("g1", 1, T0).await.unwrap(), None);
    // Not after the consent ended.
    assert_eq!(
        store
            .rotate_refresh_token("g1", 2, T0 + Duration::days(90))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .live_grants(Some("urn:diga:bfarm:12345"), T0)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .live_grants(None, T0 + Duration::days(90))
            .await
            .unwrap()
            .is_empty()
    );

    // Server keys: one current per purpose, the retired one still listed while published.
    let key = |kid: &str, publish_until| ServerKeyRowV1 {
        kid: kid.to_owned(),
        purpose: "oauth-signing".to_owned(),
        public_jwk: Some("{}".to_owned()),
        wrapped_secret: vec![1; 80],
        created_at: T0,
        retired_at: None,
        publish_until,
    };
    store
        .rotate_server_key(&key("k1", T0), T0, T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .current_server_key("oauth-signing")
            .await
            .unwrap()
            .unwrap()
            .kid,
        "k1"
    );
    assert_eq!(
        store.current_server_key("pairing-secret").await.unwrap(),
        None
    );
    // A first key is made once: a second "first" key is a conflict and
    // changes nothing (the pairing secret must never change under a race).
    let secret = |kid: &str| ServerKeyRowV1 {
        kid: kid.to_owned(),
        purpose: "pairing-secret".to_owned(),
        public_jwk: None,
        wrapped_secret: vec![2; 80],
        created_at: T0,
        retired_at: None,
        publish_until: T0,
    };
    store.create_server_key(&secret("p1")).await.unwrap();
    assert!(matches!(
        store.create_server_key(&secret("p2")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .current_server_key("pairing-secret")
            .await
            .unwrap()
            .unwrap()
            .kid,
        "p1"
    );
    assert!(matches!(
        store.create_server_key(&key("k9", T0)).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .rotate_server_key(&key("k2", T0), T0, T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .current_server_key("oauth-signing")
            .await
            .unwrap()
            .unwrap()
            .kid,
        "k2"
    );
    let kids = |rows: Vec<ServerKeyRowV1>| rows.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    assert_eq!(
        kids(
            store
                .server_keys("oauth-signing", T0 - Duration::seconds(1))
                .await
                .unwrap()
        ),
        ["k1", "k2"]
    );
    assert_eq!(
        kids(store.server_keys("oauth-signing", T0).await.unwrap()),
        ["k2"]
    );

    // State values.
    store
        .set_hddt_state("retired", Some("1"), T0)
        .await
        .unwrap();
    store
        .set_hddt_state("absent:urn:diga:bfarm:1", Some("x"), T0)
        .await
        .unwrap();
    store
        .set_hddt_state("absent:urn:diga:bfarm:1", Some("y"), T0)
        .await
        .unwrap();
    assert_eq!(
        store.hddt_state("retired").await.unwrap(),
        Some(("1".to_owned(), T0))
    );
    assert_eq!(store.hddt_states("absent:").await.unwrap().len(), 1);
    store.set_hddt_state("retired", None, T0).await.unwrap();
    assert_eq!(store.hddt_state("retired").await.unwrap(), None);

    // Purge: expired requests, tickets and codes go.
    assert!(
        store
            .purge_expired_hddt(T0 + Duration::days(1))
            .await
            .unwrap()
            >= 2
    );
    assert_eq!(store.authorization(uri).await.unwrap(), None);
    assert!(store.grant("g1").await.unwrap().is_some());
}

/// Revocation by grant, pairing, DiGA or all ends only live grants, and a new
/// approval supersedes the pairing's earlier grant.
pub async fn hddt_grants_are_revoked_by_selector(store: &dyn Store) {
    let [patient, _, _] = three_participants(store).await;
    let first = hddt_pair(store, &patient, "urn:uuid:a", 1, 11).await;
    let second = hddt_pair(store, &patient, "urn:uuid:b", 2, 12).await;
    let old = store.grant(&first).await.unwrap().unwrap();
    assert_eq!(old.revoke_reason.as_deref(), Some("superseded"));
    // A superseded grant's code redeems nothing.
    assert_eq!(
        store
            .redeem_authorization_code(&[11; 32], T0)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .redeem_authorization_code(&[12; 32], T0)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.grants_of_patient(&patient, 10).await.unwrap().len(),
        2
    );
    // Renewal: only the patient's own live grant of a patient-chosen period.
    let later = T0 + Duration::days(200);
    assert!(
        !store
            .renew_grant(&second, "someone-else", later, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .renew_grant(&first, &patient, later, T0)
            .await
            .unwrap()
    );
    assert!(
        store
            .renew_grant(&second, &patient, later, T0)
            .await
            .unwrap()
    );
    assert_eq!(
        store.grant(&second).await.unwrap().unwrap().consent_until,
        later
    );
    assert!(
        !store
            .renew_grant(&second, &patient, later, later)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_grant_scope(&second, "patient/DeviceMetric.rs")
            .await
            .unwrap()
    );
    assert_eq!(
        store.grant(&second).await.unwrap().unwrap().scope,
        "patient/DeviceMetric.rs"
    );
    assert!(
        store
            .revoke_grants(
                GrantSelector::Client("urn:diga:bfarm:99999"),
                "registry",
                T0
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .revoke_grants(GrantSelector::Pairing(&"a".repeat(64)), "patient", T0)
            .await
            .unwrap(),
        std::slice::from_ref(&second)
    );
    assert!(
        store
            .revoke_grants(GrantSelector::Grant(&second), "client", T0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .grant(&second)
            .await
            .unwrap()
            .unwrap()
            .revoke_reason
            .as_deref(),
        Some("patient")
    );
    assert!(!store.set_grant_scope(&second, "x").await.unwrap());
    assert_eq!(
        store.rotate_refresh_token(&second, 1, T0).await.unwrap(),
        None
    );
    let third = hddt_pair(store, &patient, "urn:uuid:c", 3, 13).await;
    assert_eq!(
        store
            .revoke_grants(GrantSelector::All, "retired", T0)
            .await
            .unwrap(),
        [third]
    );
}

fn device_row(id: &str, patient: &str, metric: Option<&str>) -> crate::DeviceRowV1 {
    crate::DeviceRowV1 {
        id: id.to_owned(),
        patient_uid: patient.to_owned(),
        model: "glukko-cgm-18".to_owned(),
        serial_number: format!("SN-{id}"),
        unit: "mg/dL".to_owned(),
        status: "active".to_owned(),
        version: 1,
        created_at: T0,
        updated_at: T0,
        last_sync_at: None,
        metric_id: metric.map(str::to_owned),
        metric_version: 1,
        calibration_state: "not-calibrated".to_owned(),
        calibration_time: None,
        calibration_epoch: 0,
    }
}

fn chunk_row(id: &str, patient: &str, device: &str, hour: i64) -> crate::ObservationRowV1 {
    crate::ObservationRowV1 {
        id: id.to_owned(),
        patient_uid: patient.to_owned(),
        device_id: device.to_owned(),
        metric_id: None,
        kind: crate::ObservationKind::Chunk,
        code: "99504-3".to_owned(),
        effective_start: T0 + Duration::hours(hour),
        effective_end: T0 + Duration::hours(hour + 1),
        value: None,
        comparator: None,
        unit: "mg/dL".to_owned(),
        period_ms: Some(300_000),
        samples: None,
        status: "preliminary".to_owned(),
        version: 1,
        last_updated: T0,
        epoch: 0,
    }
}

fn single_row(
    id: &str,
    patient: &str,
    device: &str,
    minute: i64,
    value: f64,
) -> crate::ObservationRowV1 {
    crate::ObservationRowV1 {
        id: id.to_owned(),
        kind: crate::ObservationKind::Single,
        code: "41653-7".to_owned(),
        effective_start: T0 + Duration::minutes(minute),
        effective_end: T0 + Duration::minutes(minute),
        value: Some(value),
        period_ms: None,
        status: "final".to_owned(),
        ..chunk_row(id, patient, device, 0)
    }
}

fn batch(
    patient: &str,
    id: &str,
    singles: Vec<crate::ObservationRowV1>,
    chunks: Vec<crate::ChunkSamples>,
) -> crate::IngestBatch {
    crate::IngestBatch {
        patient_uid: patient.to_owned(),
        batch_id: id.to_owned(),
        digest: crate::devicedata::EMPTY_SLOT.repeat(32).into_bytes(),
        received_at: T0 + Duration::days(1),
        reading_count: i64::try_from(
            singles.len() + chunks.iter().map(|c| c.samples.len()).sum::<usize>(),
        )
        .unwrap(),
        singles,
        chunks,
        syncs: Vec::new(),
    }
}

/// A batch is stored whole or not at all, a replay changes nothing, chunk
/// samples merge, and a conflicting reading rolls the whole batch back.
pub async fn device_data_batches_are_atomic_and_idempotent(store: &dyn Store) {
    let [patient, _, _] = three_participants(store).await;
    store
        .insert_device(&device_row("dev1", &patient, None))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_device(&device_row("dev1", &patient, None))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let samples = |list: &[(usize, &str)]| {
        list.iter()
            .map(|(s, t)| (*s, (*t).to_owned()))
            .collect::<Vec<_>>()
    };
    let first = batch(
        &patient,
        "b1",
        vec![single_row("s1", &patient, "dev1", 5, 100.0)],
        vec![crate::ChunkSamples {
            chunk: chunk_row("c1", &patient, "dev1", 0),
            samples: samples(&[(0, "100"), (2, "L")]),
        }],
    );
    assert_eq!(
        store.ingest(&first).await.unwrap(),
        crate::IngestOutcome::Stored { readings: 3 }
    );
    assert!(matches!(
        store.ingest(&first).await.unwrap(),
        crate::IngestOutcome::Replayed { readings: 3, .. }
    ));
    let mut other = first.clone();
    other.digest = vec![1; 32];
    assert_eq!(
        store.ingest(&other).await.unwrap(),
        crate::IngestOutcome::BatchConflict
    );
    // More samples into the same chunk (another id proposed: the stored one stays).
    let second = batch(
        &patient,
        "b2",
        vec![single_row("s2", &patient, "dev1", 10, 101.0)],
        vec![crate::ChunkSamples {
            chunk: chunk_row("c-other", &patient, "dev1", 0),
            samples: samples(&[(1, "101")]),
        }],
    );
    assert_eq!(
        store.ingest(&second).await.unwrap(),
        crate::IngestOutcome::Stored { readings: 2 }
    );
    let chunk = store.observation("c1").await.unwrap().unwrap();
    assert_eq!(chunk.samples.as_deref(), Some("100 101 L"));
    assert_eq!(chunk.version, 2);
    assert!(store.observation("c-other").await.unwrap().is_none());
    // A conflicting sample rolls back the new single reading of the same batch.
    let bad = batch(
        &patient,
        "b3",
        vec![single_row("s3", &patient, "dev1", 20, 102.0)],
        vec![crate::ChunkSamples {
            chunk: chunk_row("c1", &patient, "dev1", 0),
            samples: samples(&[(1, "99")]),
        }],
    );
    assert!(matches!(
        store.ingest(&bad).await.unwrap(),
        crate::IngestOutcome::ReadingConflict { .. }
    ));
    assert!(store.observation("s3").await.unwrap().is_none());
    // The same single reading again is fine; another value at that time is not.
    let same = batch(
        &patient,
        "b4",
        vec![single_row("s1-again", &patient, "dev1", 5, 100.0)],
        vec![],
    );
    assert_eq!(
        store.ingest(&same).await.unwrap(),
        crate::IngestOutcome::Stored { readings: 1 }
    );
    let changed = batch(
        &patient,
        "b5",
        vec![single_row("s1-changed", &patient, "dev1", 5, 120.0)],
        vec![],
    );
    assert!(matches!(
        store.ingest(&changed).await.unwrap(),
        crate::IngestOutcome::ReadingConflict { .. }
    ));
    // A later reading of the device finalizes the chunk.
    let mut later = batch(
        &patient,
        "b6",
        vec![single_row("s4", &patient, "dev1", 90, 103.0)],
        vec![],
    );
    later.syncs = vec![crate::DeviceSync {
        device_id: "dev1".into(),
        latest_reading: T0 + Duration::minutes(90),
    }];
    store.ingest(&later).await.unwrap();
    let chunk = store.observation("c1").await.unwrap().unwrap();
    assert_eq!((chunk.status.as_str(), chunk.version), ("final", 3));
    assert!(
        store
            .device("dev1", false)
            .await
            .unwrap()
            .unwrap()
            .last_sync_at
            .is_some()
    );
}

/// Searches: only the patient's rows of the asked codes, in order, paged
/// by keyset; devices only through a visible Observation; versions kept.
pub async fn device_data_searches_page_and_hide(store: &dyn Store) {
    let [patient, other, _] = three_participants(store).await;
    store
        .insert_device(&device_row("dev1", &patient, Some("met1")))
        .await
        .unwrap();
    store
        .insert_device(&device_row("dev2", &other, None))
        .await
        .unwrap();
    store
        .insert_device(&device_row("dev3", &patient, None))
        .await
        .unwrap();
    let mut chunks = Vec::new();
    for hour in 0..5 {
        let mut row = chunk_row(&format!("c{hour}"), &patient, "dev1", hour);
        row.metric_id = Some("met1".into());
        chunks.push(crate::ChunkSamples {
            chunk: row,
            samples: vec![(0, "100".into())],
        });
    }
    store
        .ingest(&batch(
            &patient,
            "p",
            vec![single_row("s1", &patient, "dev3", 30, 99.0)],
            chunks,
        ))
        .await
        .unwrap();
    store
        .ingest(&batch(
            &other,
            "o",
            vec![],
            vec![crate::ChunkSamples {
                chunk: chunk_row("x0", &other, "dev2", 0),
                samples: vec![(0, "90".into())],
            }],
        ))
        .await
        .unwrap();
    let query =
        |codes: &[&str], after: Option<(i64, String)>, descending: bool| crate::ObservationQuery {
            patient_uid: patient.clone(),
            codes: codes.iter().map(|c| (*c).to_owned()).collect(),
            ids: None,
            date: vec![],
            last_updated: vec![],
            value: vec![],
            not_before: T0 - Duration::days(30),
            descending,
            after,
            limit: 2,
        };
    let ids =
        |rows: Vec<crate::ObservationRowV1>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .search_observations(&query(&["99504-3", "41653-7"], after.clone(), false))
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((crate::to_unix_micros(last.effective_start), last.id.clone()));
        seen.extend(ids(page));
    }
    assert_eq!(seen, ["c0", "s1", "c1", "c2", "c3", "c4"]);
    let newest = store
        .search_observations(&query(&["99504-3"], None, true))
        .await
        .unwrap();
    assert_eq!(ids(newest), ["c4", "c3"]);
    // A date filter on the period (ge 02:30 to 02:59:59.999999 overlaps c2).
    let mut dated = query(&["99504-3"], None, false);
    dated.limit = 10;
    dated.date = vec![crate::RangeFilter {
        op: crate::RangeOp::Ge,
        low: crate::to_unix_micros(T0 + Duration::minutes(150)),
        high: crate::to_unix_micros(T0 + Duration::minutes(180)) - 1,
    }];
    assert_eq!(
        ids(store.search_observations(&dated).await.unwrap()),
        ["c2", "c3", "c4"]
    );
    // Devices: dev1 through its chunks, its metric only through them; dev3
    // only while blood-glucose codes are visible; never another patient's.
    let devices = |codes: &[&str], metrics_only: bool| crate::DeviceQuery {
        patient_uid: patient.clone(),
        visible_codes: codes.iter().map(|c| (*c).to_owned()).collect(),
        not_before: T0 - Duration::days(30),
        device_ids: None,
        metric_ids: None,
        models: None,
        metrics_only,
        after: None,
        limit: 10,
    };
    let device_ids =
        |rows: Vec<crate::DeviceRowV1>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        device_ids(
            store
                .search_devices(&devices(&["99504-3"], false))
                .await
                .unwrap()
        ),
        ["dev1"]
    );
    assert_eq!(
        device_ids(
            store
                .search_devices(&devices(&["99504-3", "41653-7"], false))
                .await
                .unwrap()
        ),
        ["dev1", "dev3"]
    );
    assert_eq!(
        device_ids(
            store
                .search_devices(&devices(&["41653-7"], true))
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        device_ids(
            store
                .search_devices(&devices(&["99504-3"], true))
                .await
                .unwrap()
        ),
        ["dev1"]
    );
    // A calibration versions the metric, finalizes open chunks, keeps history.
    let mut calibrated = store.device("met1", true).await.unwrap().unwrap();
    calibrated.metric_version = 2;
    calibrated.calibration_state = "calibrated".into();
    calibrated.calibration_epoch = 1;
    assert!(store.update_device(&calibrated, (1, 1)).await.unwrap());
    assert!(
        !store.update_device(&calibrated, (1, 1)).await.unwrap(),
        "a stale version loses"
    );
    assert_eq!(
        store.observation("c4").await.unwrap().unwrap().status,
        "final"
    );
    let old = store
        .device_version("met1", true, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.calibration_state, "not-calibrated");
    assert_eq!(
        store
            .device_version("dev1", false, 1)
            .await
            .unwrap()
            .unwrap()
            .metric_version,
        2
    );
    assert!(
        store
            .device_version("met1", true, 3)
            .await
            .unwrap()
            .is_none()
    );
    let all = store
        .observations_of_patient(
            &patient,
            T0 - Duration::days(1),
            T0 + Duration::days(1),
            100,
        )
        .await
        .unwrap();
    assert_eq!(ids(all), ["c0", "s1", "c1", "c2", "c3", "c4"]);
}

/// Access counts add up per pairing, day and interaction, are seen only by
/// the pairing's patient, and are purged by day; a login ticket is taken once.
pub async fn hddt_access_counts_add_up_and_tickets_are_taken_once(store: &dyn Store) {
    let [patient, other, _] = three_participants(store).await;
    hddt_pair(store, &patient, "urn:uuid:acc", 1, 11).await;
    let pairing = "a".repeat(64);
    let count = |day: &str, n: i64, minute: i64| crate::AccessCountV1 {
        pairing_id: pairing.clone(),
        day: day.to_owned(),
        interaction: "GET /fhir/Observation".to_owned(),
        count: n,
        last_at: T0 + Duration::minutes(minute),
    };
    store
        .record_accesses(&[count("2026-03-01", 2, 1)])
        .await
        .unwrap();
    store
        .record_accesses(&[count("2026-03-01", 3, 5), count("2026-02-01", 1, 0)])
        .await
        .unwrap();
    let seen = store
        .accesses_of_patient(&patient, "2026-01-01", 10)
        .await
        .unwrap();
    assert_eq!(seen.len(), 2);
    let (client, newest) = &seen[0];
    assert_eq!(client, "urn:diga:bfarm:12345");
    assert_eq!((newest.day.as_str(), newest.count), ("2026-03-01", 5));
    assert_eq!(newest.last_at, T0 + Duration::minutes(5));
    assert!(
        store
            .accesses_of_patient(&other, "2026-01-01", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.purge_accesses("2026-02-15").await.unwrap(), 1);
    assert_eq!(
        store
            .accesses_of_patient(&patient, "2026-01-01", 10)
            .await
            .unwrap()
            .len(),
        1
    );

    store
        .insert_login_ticket(&LoginTicketRowV1 {
            ticket_hash: vec![42; 32],
            patient_uid: other.clone(),
            created_at: T0,
            expires_at: T0 + Duration::minutes(5),
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .take_login_ticket(&[42; 32], T0 + Duration::minutes(6))
            .await
            .unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store
            .take_login_ticket(&[42; 32], T0)
            .await
            .unwrap()
            .as_deref(),
        Some(other.as_str())
    );
    assert_eq!(
        store.take_login_ticket(&[42; 32], T0).await.unwrap(),
        None,
        "taken once"
    );
}
