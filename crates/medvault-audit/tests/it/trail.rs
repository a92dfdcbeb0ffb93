//! The trail's behaviour, run on each backend.

use std::sync::Arc;

use medvault_audit::{
    AuditDetail, AuditError, AuditEvent, AuditQuery, AuditTrail, ChainBreak, CheckpointAnchor,
    CheckpointKey, Outcome, Retention,
};
use time::Duration;

use crate::harness::Harness;
use crate::on_both_backends;

on_both_backends!(
    appended_entries_chain_and_verify,
    queries_filter_by_subject_type_and_time,
    a_modified_row_is_detected,
    a_removed_row_is_detected,
    reordered_rows_are_detected,
    a_rehashed_row_breaks_the_next_link,
    a_removed_tail_is_detected_by_a_checkpoint,
    a_forged_checkpoint_is_detected,
    purge_keeps_thirty_days_whatever_the_config_says,
    purge_leaves_a_chain_that_verifies_and_keeps_growing,
    two_nodes_appending_at_once_keep_one_chain,
    a_head_checkpoint_does_not_excuse_a_removed_start,
    a_removed_checkpoint_is_detected,
    removing_the_newest_checkpoint_is_caught_by_an_anchor,
    a_fully_purged_trail_with_many_checkpoints_verifies,
    a_purge_during_verify_is_not_reported_as_tampering,
);

fn event(n: usize) -> AuditEvent {
    let subject = if n.is_multiple_of(2) {
        "pairing-even"
    } else {
        "pairing-odd"
    };
    let event_type = if n.is_multiple_of(3) {
        "pairing.revoked"
    } else {
        "pairing.created"
    };
    AuditEvent::new(
        "urn:diga:bfarm:00294",
        subject,
        event_type,
        Outcome::Success,
    )
    .with_detail(AuditDetail::new().with("n", n).unwrap())
}

async fn append_minutes_apart(harness: &Harness, trail: &AuditTrail, count: usize) {
    for n in 1..=count {
        trail.append(event(n)).await.unwrap();
        harness.clock.advance(Duration::minutes(1));
    }
}

fn broken(outcome: Result<medvault_audit::VerificationReport, AuditError>) -> ChainBreak {
    match outcome {
        Err(AuditError::Broken(chain_break)) => chain_break,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

async fn appended_entries_chain_and_verify(harness: &Harness) {
    let trail = harness.trail();
    assert_eq!(trail.verify().await.unwrap().entries, 0);
    append_minutes_apart(harness, &trail, 5).await;
    let report = trail.verify().await.unwrap();
    assert_eq!(
        (report.entries, report.first_seq, report.last_seq),
        (5, Some(1), Some(5))
    );
    let records = trail.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(records[0].detail, "{\"n\":1}");
    assert_eq!(records[0].outcome, "success");
}

async fn queries_filter_by_subject_type_and_time(harness: &Harness) {
    let trail = harness.trail();
    let start = medvault_core::Clock::now(&*harness.clock);
    append_minutes_apart(harness, &trail, 6).await;
    let seqs = |records: Vec<medvault_audit::AuditRecord>| {
        records.iter().map(|r| r.seq).collect::<Vec<_>>()
    };
    let by_subject = AuditQuery {
        subject: Some("pairing-even".into()),
        ..AuditQuery::default()
    };
    assert_eq!(seqs(trail.query(&by_subject).await.unwrap()), vec![2, 4, 6]);
    let by_type = AuditQuery {
        event_type: Some("pairing.revoked".into()),
        ..AuditQuery::default()
    };
    assert_eq!(seqs(trail.query(&by_type).await.unwrap()), vec![3, 6]);
    let by_time = AuditQuery {
        from: Some(start + Duration::minutes(1)),
        until: Some(start + Duration::minutes(3)),
        ..AuditQuery::default()
    };
    assert_eq!(seqs(trail.query(&by_time).await.unwrap()), vec![2, 3]);
}

async fn a_modified_row_is_detected(harness: &Harness) {
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 4).await;
    harness
        .raw("UPDATE audit_entries SET outcome = 'denied' WHERE seq = 3")
        .await;
    assert_eq!(
        broken(trail.verify().await),
        ChainBreak::Modified { seq: 3 }
    );
}

async fn a_removed_row_is_detected(harness: &Harness) {
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 4).await;
    harness.raw("DELETE FROM audit_entries WHERE seq = 2").await;
    assert_eq!(
        broken(trail.verify().await),
        ChainBreak::Gap { from: 2, to: 2 }
    );
    harness.raw("DELETE FROM audit_entries WHERE seq = 1").await;
    assert_eq!(
        broken(trail.verify().await),
        ChainBreak::MissingStart { seq: 3 }
    );
}

async fn reordered_rows_are_detected(harness: &Harness) {
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 4).await;
    // Swap the contents of entries 2 and 3 (hashes included), keeping seq in place.
    harness
        .raw("UPDATE audit_entries SET seq = -2 WHERE seq = 2")
        .await;
    harness
        .raw("UPDATE audit_entries SET seq = 2 WHERE seq = 3")
        .await;
    harness
        .raw("UPDATE audit_entries SET seq = 3 WHERE seq = -2")
        .await;
    let chain_break = broken(trail.verify().await);
    assert!(
        matches!(
            chain_break,
            ChainBreak::Unlinked { seq: 2 } | ChainBreak::Modified { seq: 2 }
        ),
        "{chain_break:?}"
    );
}

async fn a_rehashed_row_breaks_the_next_link(harness: &Harness) {
    // An attacker who edits a row and recomputes its hash must also rewrite every
    // later row; leaving them breaks the link after the edit.
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 3).await;
    harness
        .raw("UPDATE audit_entries SET entry_hash = prev_hash WHERE seq = 2")
        .await;
    let chain_break = broken(trail.verify().await);
    assert_eq!(chain_break, ChainBreak::Modified { seq: 2 });
}

async fn a_removed_tail_is_detected_by_a_checkpoint(harness: &Harness) {
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 5).await;
    assert_eq!(trail.checkpoint().await.unwrap(), Some(5));
    trail.verify().await.unwrap();
    harness
        .raw("DELETE FROM audit_entries WHERE seq >= 4")
        .await;
    assert_eq!(
        broken(trail.verify().await),
        ChainBreak::TruncatedTail { last: 3, seq: 5 }
    );
}

async fn a_forged_checkpoint_is_detected(harness: &Harness) {
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 3).await;
    // Checkpoints from a key the trail does not trust fail verification.
    let (stranger, _) = CheckpointKey::generate().unwrap();
    let forger = AuditTrail::new(
        harness.store.clone(),
        harness.clock.clone(),
        Arc::new(stranger),
    );
    forger.checkpoint().await.unwrap();
    assert_eq!(
        broken(trail.verify().await),
        ChainBreak::BadCheckpointSignature { number: 1 }
    );
}

async fn purge_keeps_thirty_days_whatever_the_config_says(harness: &Harness) {
    let trail = harness.trail();
    // Ten entries one day apart.
    for n in 1..=10 {
        trail.append(event(n)).await.unwrap();
        harness.clock.advance(Duration::days(1));
    }
    // Day 10 now; with a configured retention of one day nothing is 30 days old.
    assert_eq!(
        Retention::new(Duration::days(1)).period(),
        Duration::days(30)
    );
    assert_eq!(
        trail
            .purge_expired(Retention::new(Duration::days(1)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(trail.verify().await.unwrap().entries, 10);
    // 35 days after the first entry, entries 1..=5 are older than 30 days.
    harness.clock.advance(Duration::days(25));
    assert_eq!(
        trail
            .purge_expired(Retention::new(Duration::days(1)))
            .await
            .unwrap(),
        5
    );
    let report = trail.verify().await.unwrap();
    assert_eq!(
        (report.entries, report.first_seq, report.checkpoints),
        (5, Some(6), 1)
    );
}

async fn purge_leaves_a_chain_that_verifies_and_keeps_growing(harness: &Harness) {
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 4).await;
    harness.clock.advance(Duration::days(400));
    assert_eq!(
        trail
            .purge_expired(Retention::new(Duration::days(365)))
            .await
            .unwrap(),
        4
    );
    let report = trail.verify().await.unwrap();
    assert_eq!((report.entries, report.checkpoints), (0, 1));
    // The next entry links to the checkpoint of the purged head.
    let record = trail.append(event(5)).await.unwrap();
    assert_eq!(record.seq, 5);
    let report = trail.verify().await.unwrap();
    assert_eq!((report.entries, report.first_seq), (1, Some(5)));
    // Removing the first remaining entry now is detected.
    trail.append(event(6)).await.unwrap();
    harness.raw("DELETE FROM audit_entries WHERE seq = 5").await;
    assert_eq!(
        broken(trail.verify().await),
        ChainBreak::MissingStart { seq: 6 }
    );
}

async fn two_nodes_appending_at_once_keep_one_chain(harness: &Harness) {
    // Two trails over one store act like two server nodes: they do not share the
    // in-process lock, so only the store's unique seq keeps the chain whole.
    let node_a = Arc::new(harness.trail());
    let node_b = Arc::new(harness.trail());
    let mut tasks = Vec::new();
    for node in [node_a.clone(), node_b] {
        tasks.push(tokio::spawn(async move {
            for n in 0..25 {
                node.append(event(n)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = node_a.verify().await.unwrap();
    assert_eq!(
        (report.entries, report.first_seq, report.last_seq),
        (50, Some(1), Some(50))
    );
}

async fn a_head_checkpoint_does_not_excuse_a_removed_start(harness: &Harness) {
    // Regression: verify accepted any checkpoint as the start of the chain, so
    // deleting entries up to an hourly head checkpoint went unnoticed.
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 3).await;
    trail.checkpoint().await.unwrap();
    append_minutes_apart(harness, &trail, 2).await;
    trail.verify().await.unwrap();
    harness
        .raw("DELETE FROM audit_entries WHERE seq <= 3")
        .await;
    assert_eq!(
        broken(trail.verify().await),
        ChainBreak::MissingStart { seq: 4 }
    );
}

async fn a_removed_checkpoint_is_detected(harness: &Harness) {
    let trail = harness.trail();
    for _ in 0..3 {
        append_minutes_apart(harness, &trail, 2).await;
        trail.checkpoint().await.unwrap();
    }
    assert_eq!(trail.verify().await.unwrap().checkpoints, 3);
    harness
        .raw("DELETE FROM audit_checkpoints WHERE number = 2")
        .await;
    assert_eq!(
        broken(trail.verify().await),
        ChainBreak::CheckpointUnlinked {
            number: 3,
            previous: 1
        }
    );
}

async fn removing_the_newest_checkpoint_is_caught_by_an_anchor(harness: &Harness) {
    let trail = harness.trail();
    append_minutes_apart(harness, &trail, 2).await;
    trail.checkpoint().await.unwrap();
    append_minutes_apart(harness, &trail, 2).await;
    trail.checkpoint().await.unwrap();
    let report = trail.verify().await.unwrap();
    let (number, hash_hex) = report.newest_checkpoint.clone().unwrap();
    assert_eq!(number, 2);
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&hash_hex, &mut hash).unwrap();
    let anchor = CheckpointAnchor { number, hash };
    trail.verify_with_anchor(Some(anchor)).await.unwrap();
    // Remove the newest checkpoint and the entries it covered: the database
    // alone cannot tell, the anchor recorded outside it can.
    harness
        .raw("DELETE FROM audit_checkpoints WHERE number = 2")
        .await;
    harness
        .raw("DELETE FROM audit_entries WHERE seq >= 3")
        .await;
    trail.verify().await.unwrap();
    assert_eq!(
        broken(trail.verify_with_anchor(Some(anchor)).await),
        ChainBreak::AnchorMismatch { number: 2 }
    );
}

async fn a_fully_purged_trail_with_many_checkpoints_verifies(harness: &Harness) {
    // Regression: with every entry purged and several checkpoints, verify
    // reported a truncated tail that was not there.
    let trail = harness.trail();
    for _ in 0..3 {
        append_minutes_apart(harness, &trail, 2).await;
        trail.checkpoint().await.unwrap();
    }
    harness.clock.advance(Duration::days(31));
    assert_eq!(trail.purge_expired(Retention::default()).await.unwrap(), 6);
    let report = trail.verify().await.unwrap();
    assert_eq!((report.entries, report.checkpoints), (0, 4));
    trail.append(event(7)).await.unwrap();
    assert_eq!(trail.verify().await.unwrap().first_seq, Some(7));
}

/// A store that runs a retention purge the first time the entries are read, as
/// another node would while `verify` is walking the chain.
#[derive(Debug)]
struct PurgeDuringVerify {
    inner: Arc<dyn medvault_store::AuditStore>,
    trail: std::sync::OnceLock<Arc<AuditTrail>>,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl medvault_store::AuditStore for PurgeDuringVerify {
    async fn last_audit_entry(
        &self,
    ) -> Result<Option<medvault_store::AuditEntryRowV1>, medvault_store::StoreError> {
        self.inner.last_audit_entry().await
    }
    async fn insert_audit_entry(
        &self,
        entry: &medvault_store::AuditEntryRowV1,
    ) -> Result<(), medvault_store::StoreError> {
        self.inner.insert_audit_entry(entry).await
    }
    async fn audit_entries(
        &self,
        filter: &medvault_store::AuditFilter,
    ) -> Result<Vec<medvault_store::AuditEntryRowV1>, medvault_store::StoreError> {
        // The verify walk pages with no time bounds; the purge itself queries with `from`.
        if filter.from.is_none()
            && filter.limit > 1
            && let Some(trail) = self.trail.get()
            && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            trail.purge_expired(Retention::default()).await.unwrap();
        }
        self.inner.audit_entries(filter).await
    }
    async fn insert_audit_checkpoint(
        &self,
        checkpoint: &medvault_store::AuditCheckpointRowV1,
    ) -> Result<(), medvault_store::StoreError> {
        self.inner.insert_audit_checkpoint(checkpoint).await
    }
    async fn audit_checkpoints(
        &self,
    ) -> Result<Vec<medvault_store::AuditCheckpointRowV1>, medvault_store::StoreError> {
        self.inner.audit_checkpoints().await
    }
    async fn purge_audit_entries_through(
        &self,
        checkpoint: &medvault_store::AuditCheckpointRowV1,
    ) -> Result<u64, medvault_store::StoreError> {
        self.inner.purge_audit_entries_through(checkpoint).await
    }
}

async fn a_purge_during_verify_is_not_reported_as_tampering(harness: &Harness) {
    let wrapped = Arc::new(PurgeDuringVerify {
        inner: harness.store.clone(),
        trail: std::sync::OnceLock::new(),
        fired: std::sync::atomic::AtomicBool::new(false),
    });
    let trail = Arc::new(AuditTrail::new(
        wrapped.clone(),
        harness.clock.clone(),
        harness.key.clone(),
    ));
    wrapped.trail.set(trail.clone()).unwrap();
    append_minutes_apart(harness, &trail, 4).await;
    harness.clock.advance(Duration::days(31));
    trail.append(event(5)).await.unwrap();
    // The walk reads the checkpoints (none), then the entries: at that moment the
    // purge removes 1..=4 behind a retention checkpoint the walk has not seen.
    let report = trail.verify().await.unwrap();
    assert_eq!(
        (report.entries, report.first_seq, report.checkpoints),
        (1, Some(5), 1)
    );
}
