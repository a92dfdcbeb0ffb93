//! The audit trail service: append, query, verify, checkpoint, purge.

use std::collections::BTreeMap;
use std::sync::Arc;

use medvault_core::Clock;
use medvault_store::{
    AuditCheckpointRowV1, AuditEntryRowV1, AuditFilter, AuditStore, StoreError, from_unix_micros,
    to_unix_micros,
};
use time::Duration;

use crate::chain::{GENESIS, checkpoint_hash, checkpoint_message, entry_hash};
use crate::checkpoint::{CheckpointKey, CheckpointVerifier};
use crate::event::{AuditEvent, AuditRecord, DetailError};

/// Checkpoint kind written by a retention purge.
const KIND_RETENTION: &str = "retention";

/// Checkpoint kind written on a schedule and at shutdown.
const KIND_HEAD: &str = "head";

/// The shortest retention the trail accepts: HDDT requires at least 30 days.
pub const MINIMUM_RETENTION: Duration = Duration::days(30);

/// How many times `append` re-reads the head after losing a race to another node.
const APPEND_ATTEMPTS: usize = 64;

/// How many entries `verify` reads per page.
const VERIFY_PAGE: u32 = 1000;

/// The largest page a query returns.
const MAX_QUERY_LIMIT: u32 = 1000;

/// How long entries are kept: never less than [`MINIMUM_RETENTION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(Duration);

impl Retention {
    /// A retention of `period`, raised to [`MINIMUM_RETENTION`] if shorter.
    pub fn new(period: Duration) -> Self {
        Self(period.max(MINIMUM_RETENTION))
    }

    /// The effective period.
    pub fn period(self) -> Duration {
        self.0
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self(MINIMUM_RETENTION)
    }
}

/// What `query` returns: the store's filter (every condition that is set must
/// hold). [`AuditTrail::query`] treats a `limit` of 0 as 100 and caps it at 1000.
pub type AuditQuery = AuditFilter;

/// Where and why the chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// An entry's stored hash is not the hash of its fields: it was changed.
    #[error("entry {seq} was modified (its hash does not match its content)")]
    Modified {
        /// The entry.
        seq: i64,
    },
    /// An entry does not point at its predecessor's hash: rows were removed, inserted or reordered.
    #[error("entry {seq} does not link to the entry before it")]
    Unlinked {
        /// The entry.
        seq: i64,
    },
    /// A sequence number is missing.
    #[error("entries {from} to {to} are missing")]
    Gap {
        /// The first missing seq.
        from: i64,
        /// The last missing seq.
        to: i64,
    },
    /// The chain starts after 1 without a checkpoint for its predecessor.
    #[error("entries before {seq} are missing and no checkpoint covers them")]
    MissingStart {
        /// The first entry present.
        seq: i64,
    },
    /// A checkpoint's signature does not verify with a trusted key.
    #[error("checkpoint {number} has no valid signature")]
    BadCheckpointSignature {
        /// The checkpoint's number.
        number: i64,
    },
    /// A checkpoint disagrees with the entry it commits to.
    #[error("checkpoint {seq} does not match entry {seq}")]
    CheckpointMismatch {
        /// The checkpoint's seq.
        seq: i64,
    },
    /// The checkpoints do not form an unbroken chain: one was removed, inserted or changed.
    #[error("checkpoint {number} does not link to checkpoint {previous}")]
    CheckpointUnlinked {
        /// The checkpoint that does not link.
        number: i64,
        /// The checkpoint it should follow.
        previous: i64,
    },
    /// The checkpoint the operator recorded outside the database is not there (or differs).
    #[error("checkpoint {number} recorded outside the database is missing or different")]
    AnchorMismatch {
        /// The recorded checkpoint.
        number: i64,
    },
    /// A checkpoint commits to an entry beyond the last one present: the tail was removed.
    #[error("entries after {last} are missing: checkpoint {seq} covers them")]
    TruncatedTail {
        /// The last entry present (0 when none).
        last: i64,
        /// The checkpoint that proves more existed.
        seq: i64,
    },
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationReport {
    /// How many entries were checked.
    pub entries: u64,
    /// The first entry present (if any).
    pub first_seq: Option<i64>,
    /// The last entry present (if any).
    pub last_seq: Option<i64>,
    /// How many checkpoints were checked.
    pub checkpoints: u64,
    /// The newest checkpoint: its number and hash (hex). Record it outside the
    /// database and pass it to [`AuditTrail::verify_with_anchor`] later: that
    /// detects removal of the newest checkpoints themselves.
    pub newest_checkpoint: Option<(i64, String)>,
}

/// A checkpoint recorded outside the database: its number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointAnchor {
    /// The checkpoint's number.
    pub number: i64,
    /// Its hash.
    pub hash: [u8; 32],
}

/// A failure of the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The event's detail was refused.
    #[error(transparent)]
    Detail(#[from] DetailError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many nodes appended at once; the entry was not written.
    #[error("could not append the audit entry: the chain head kept moving")]
    Contended,
    /// The chain does not verify.
    #[error("the audit chain does not verify: {0}")]
    Broken(#[from] ChainBreak),
}

/// The audit trail over a store.
#[derive(Debug)]
pub struct AuditTrail {
    store: Arc<dyn AuditStore>,
    clock: Arc<dyn Clock>,
    key: Arc<CheckpointKey>,
    verifier: CheckpointVerifier,
    // Serializes this process's appends so they do not race each other for the
    // head; races with other nodes are settled by the store's unique `seq`.
    append_lock: tokio::sync::Mutex<()>,
}

impl AuditTrail {
    /// A trail that signs checkpoints with `key` and trusts checkpoints made with it.
    pub fn new(store: Arc<dyn AuditStore>, clock: Arc<dyn Clock>, key: Arc<CheckpointKey>) -> Self {
        let verifier = key.verifier();
        Self {
            store,
            clock,
            key,
            verifier,
            append_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Also trusts checkpoints signed by `retired` keys (after a key rotation).
    pub fn trusting(mut self, retired: &CheckpointVerifier) -> Self {
        self.verifier = self.verifier.with(retired);
        self
    }

    /// Appends an event. Returns once the entry is durably stored.
    pub async fn append(&self, event: AuditEvent) -> Result<AuditRecord, AuditError> {
        let detail = event.detail.to_json()?;
        let _guard = self.append_lock.lock().await;
        for _ in 0..APPEND_ATTEMPTS {
            let (prev_seq, prev_hash) = self.head().await?;
            // Stored time has microsecond precision; hash what is stored.
            let recorded_at = from_unix_micros(to_unix_micros(self.clock.now()))?;
            let mut entry = AuditEntryRowV1 {
                seq: prev_seq + 1,
                recorded_at,
                actor: event.actor.clone(),
                subject: event.subject.clone(),
                event_type: event.event_type.clone(),
                outcome: event.outcome.as_str().to_owned(),
                detail: detail.clone(),
                prev_hash: prev_hash.to_vec(),
                entry_hash: Vec::new(),
            };
            entry.entry_hash = entry_hash(&entry).to_vec();
            match self.store.insert_audit_entry(&entry).await {
                Ok(()) => return Ok(record(entry)),
                Err(StoreError::Conflict(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(AuditError::Contended)
    }

    /// The last entry's seq and hash; else the last checkpoint's (everything was
    /// purged); else the genesis.
    async fn head(&self) -> Result<(i64, [u8; 32]), AuditError> {
        if let Some(last) = self.store.last_audit_entry().await? {
            return Ok((
                last.seq,
                to_hash(&last.entry_hash).ok_or(ChainBreak::Modified { seq: last.seq })?,
            ));
        }
        // Everything was purged: continue after the furthest retention checkpoint.
        let checkpoints = self.store.audit_checkpoints().await?;
        let anchor = checkpoints
            .iter()
            .filter(|c| c.kind == KIND_RETENTION)
            .max_by_key(|c| c.seq);
        if let Some(anchor) = anchor {
            let hash = to_hash(&anchor.entry_hash)
                .ok_or(ChainBreak::CheckpointMismatch { seq: anchor.seq })?;
            return Ok((anchor.seq, hash));
        }
        Ok((0, GENESIS))
    }

    /// Entries matching `query`, ascending by seq.
    pub async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let limit = match query.limit {
            0 => 100,
            limit => limit.min(MAX_QUERY_LIMIT),
        };
        let filter = AuditFilter {
            limit,
            ..query.clone()
        };
        Ok(self
            .store
            .audit_entries(&filter)
            .await?
            .into_iter()
            .map(record)
            .collect())
    }

    /// Signs a `head` checkpoint of the newest entry (nothing to do on an empty
    /// trail). Returns the checkpointed seq.
    ///
    /// Made periodically, head checkpoints reveal a removed tail: `verify` fails
    /// when a checkpoint commits to an entry that is no longer there.
    pub async fn checkpoint(&self) -> Result<Option<i64>, AuditError> {
        let Some(last) = self.store.last_audit_entry().await? else {
            return Ok(None);
        };
        // Nothing new since the newest checkpoint: do not grow the checkpoint chain.
        let newest = self.store.audit_checkpoints().await?.pop();
        if newest.is_some_and(|c| c.seq == last.seq && c.entry_hash == last.entry_hash) {
            return Ok(Some(last.seq));
        }
        for _ in 0..APPEND_ATTEMPTS {
            let checkpoint = self.next_checkpoint(KIND_HEAD, &last).await?;
            match self.store.insert_audit_checkpoint(&checkpoint).await {
                Ok(()) => return Ok(Some(last.seq)),
                Err(StoreError::Conflict(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(AuditError::Contended)
    }

    /// The next checkpoint in the checkpoint chain, signed, committing to `entry`.
    async fn next_checkpoint(
        &self,
        kind: &str,
        entry: &AuditEntryRowV1,
    ) -> Result<AuditCheckpointRowV1, AuditError> {
        let previous = self.store.audit_checkpoints().await?.pop();
        let (number, prev_hash) = match &previous {
            Some(previous) => (previous.number + 1, checkpoint_hash(previous)),
            None => (1, GENESIS),
        };
        let mut checkpoint = AuditCheckpointRowV1 {
            number,
            kind: kind.to_owned(),
            seq: entry.seq,
            entry_hash: entry.entry_hash.clone(),
            created_at: from_unix_micros(to_unix_micros(self.clock.now()))?,
            prev_hash: prev_hash.to_vec(),
            key_id: self.key.key_id().to_owned(),
            signature: Vec::new(),
        };
        checkpoint.signature = self.key.sign(&checkpoint_message(&checkpoint));
        Ok(checkpoint)
    }

    /// Removes entries older than `retention` (never less than 30 days), behind a
    /// signed `retention` checkpoint of the last removed entry. Returns how many
    /// were removed.
    ///
    /// Only entries strictly before the first entry young enough to keep are
    /// removed, so clock skew between nodes can never cost a young entry.
    pub async fn purge_expired(&self, retention: Retention) -> Result<u64, AuditError> {
        for _ in 0..APPEND_ATTEMPTS {
            // Recomputed on every attempt: after losing a race to another node's
            // purge, what is left to remove has changed.
            match self.purge_once(retention).await {
                Err(AuditError::Store(StoreError::Conflict(_))) => continue,
                outcome => return outcome,
            }
        }
        Err(AuditError::Contended)
    }

    async fn purge_once(&self, retention: Retention) -> Result<u64, AuditError> {
        let Some(cutoff) = self.clock.now().checked_sub(retention.period()) else {
            return Ok(0);
        };
        let first_kept = self
            .store
            .audit_entries(&AuditFilter {
                from: Some(cutoff),
                limit: 1,
                ..AuditFilter::default()
            })
            .await?;
        let last_removed = match first_kept.first() {
            Some(kept) => self.entry_before(kept.seq).await?,
            None => self.store.last_audit_entry().await?,
        };
        let Some(last_removed) = last_removed else {
            return Ok(0);
        };
        // Entries with seq below the first young one may still be young (clock
        // skew): remove only if the last of them is old.
        if last_removed.recorded_at >= cutoff {
            return Ok(0);
        }
        let checkpoint = self.next_checkpoint(KIND_RETENTION, &last_removed).await?;
        Ok(self.store.purge_audit_entries_through(&checkpoint).await?)
    }

    async fn entry_before(&self, seq: i64) -> Result<Option<AuditEntryRowV1>, AuditError> {
        let found = self
            .store
            .audit_entries(&AuditFilter {
                after_seq: Some(seq - 2),
                limit: 1,
                ..AuditFilter::default()
            })
            .await?;
        Ok(found.into_iter().find(|entry| entry.seq == seq - 1))
    }

    /// Checks the whole chain: every hash, every link, every checkpoint.
    pub async fn verify(&self) -> Result<VerificationReport, AuditError> {
        self.verify_with_anchor(None).await
    }

    /// Like [`verify`](Self::verify), and also requires the checkpoint `anchor`
    /// (recorded outside the database earlier) to be present and unchanged.
    ///
    /// The walk reads page by page, not in one snapshot: when a retention purge
    /// (of this or another node) runs meanwhile, the walk can see a start or gap
    /// that the purge just made. A failed walk is therefore repeated (up to three
    /// times) when the checkpoints changed while it ran; a failure that repeats
    /// over unchanged checkpoints is reported.
    pub async fn verify_with_anchor(
        &self,
        anchor: Option<CheckpointAnchor>,
    ) -> Result<VerificationReport, AuditError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let before = self.store.audit_checkpoints().await?.len();
            let outcome = self.verify_once(anchor).await;
            let changed = self.store.audit_checkpoints().await?.len() != before;
            match outcome {
                Err(AuditError::Broken(_)) if changed && attempts < 3 => continue,
                outcome => return outcome,
            }
        }
    }

    async fn verify_once(
        &self,
        anchor: Option<CheckpointAnchor>,
    ) -> Result<VerificationReport, AuditError> {
        let checkpoints = self.store.audit_checkpoints().await?;
        let mut previous_hash = GENESIS;
        let mut previous_number = 0;
        for checkpoint in &checkpoints {
            if !self.verifier.verify(
                &checkpoint.key_id,
                &checkpoint_message(checkpoint),
                &checkpoint.signature,
            ) {
                return Err(ChainBreak::BadCheckpointSignature {
                    number: checkpoint.number,
                }
                .into());
            }
            if checkpoint.number != previous_number + 1 || checkpoint.prev_hash != previous_hash {
                return Err(ChainBreak::CheckpointUnlinked {
                    number: checkpoint.number,
                    previous: previous_number,
                }
                .into());
            }
            previous_hash = checkpoint_hash(checkpoint);
            previous_number = checkpoint.number;
        }
        if let Some(anchor) = anchor {
            let found = checkpoints.iter().find(|c| c.number == anchor.number);
            if found.is_none_or(|c| checkpoint_hash(c) != anchor.hash) {
                return Err(ChainBreak::AnchorMismatch {
                    number: anchor.number,
                }
                .into());
            }
        }
        // Every checkpoint of each entry seq, for lookups while walking the chain.
        let mut by_seq: BTreeMap<i64, Vec<&AuditCheckpointRowV1>> = BTreeMap::new();
        for checkpoint in &checkpoints {
            by_seq.entry(checkpoint.seq).or_default().push(checkpoint);
        }

        let mut report = VerificationReport {
            entries: 0,
            first_seq: None,
            last_seq: None,
            checkpoints: u64::try_from(checkpoints.len()).unwrap_or(u64::MAX),
            newest_checkpoint: checkpoints
                .last()
                .map(|c| (c.number, hex::encode(checkpoint_hash(c)))),
        };
        let mut previous: Option<(i64, Vec<u8>)> = None;
        let mut after_seq = None;
        loop {
            let page = self
                .store
                .audit_entries(&AuditFilter {
                    after_seq,
                    limit: VERIFY_PAGE,
                    ..AuditFilter::default()
                })
                .await?;
            let Some(last_in_page) = page.last() else {
                break;
            };
            after_seq = Some(last_in_page.seq);
            for entry in &page {
                let expected_prev = match &previous {
                    Some((prev_seq, prev_hash)) => {
                        if entry.seq != prev_seq + 1 {
                            return Err(ChainBreak::Gap {
                                from: prev_seq + 1,
                                to: entry.seq - 1,
                            }
                            .into());
                        }
                        prev_hash.clone()
                    }
                    None if entry.seq == 1 => GENESIS.to_vec(),
                    // Only a retention purge may remove the start of the chain.
                    None => match by_seq
                        .get(&(entry.seq - 1))
                        .and_then(|found| found.iter().find(|c| c.kind == KIND_RETENTION))
                    {
                        Some(anchor) => anchor.entry_hash.clone(),
                        None => return Err(ChainBreak::MissingStart { seq: entry.seq }.into()),
                    },
                };
                if entry.prev_hash != expected_prev {
                    return Err(ChainBreak::Unlinked { seq: entry.seq }.into());
                }
                if entry_hash(entry).as_slice() != entry.entry_hash.as_slice() {
                    return Err(ChainBreak::Modified { seq: entry.seq }.into());
                }
                if let Some(found) = by_seq.get(&entry.seq)
                    && found.iter().any(|c| c.entry_hash != entry.entry_hash)
                {
                    return Err(ChainBreak::CheckpointMismatch { seq: entry.seq }.into());
                }
                report.entries += 1;
                report.first_seq.get_or_insert(entry.seq);
                report.last_seq = Some(entry.seq);
                previous = Some((entry.seq, entry.entry_hash.clone()));
            }
        }
        // With no entries left, the chain ends at the newest retention checkpoint.
        let last = report.last_seq.unwrap_or_else(|| {
            checkpoints
                .iter()
                .filter(|c| c.kind == KIND_RETENTION)
                .map(|c| c.seq)
                .max()
                .unwrap_or(0)
        });
        if let Some((&beyond, _)) = by_seq.range(last + 1..).next() {
            return Err(ChainBreak::TruncatedTail { last, seq: beyond }.into());
        }
        Ok(report)
    }
}

fn to_hash(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

fn record(entry: AuditEntryRowV1) -> AuditRecord {
    AuditRecord {
        seq: entry.seq,
        recorded_at: entry.recorded_at,
        actor: entry.actor,
        subject: entry.subject,
        event_type: entry.event_type,
        outcome: entry.outcome,
        detail: entry.detail,
        entry_hash: hex::encode(entry.entry_hash),
    }
}
