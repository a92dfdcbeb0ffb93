//! Storage of the hash-chained audit trail.
//!
//! The store keeps rows and enforces one invariant of its own: `seq` is unique,
//! so two writers (two server nodes) can never both append entry *n*; the loser
//! gets [`StoreError::Conflict`] and retries on the new head. Hashing, signing and
//! verification belong to `medvault-audit`.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// One audit entry as stored (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntryRowV1 {
    /// Position in the chain, starting at 1, without gaps until purged.
    pub seq: i64,
    /// When the event was recorded (microsecond precision).
    pub recorded_at: OffsetDateTime,
    /// Who acted (a participant UID, a DiGA client_id, `system`, ...).
    pub actor: String,
    /// Whose data the event concerns (a UID, a Pairing ID, ...).
    pub subject: String,
    /// What happened (`pairing.created`, `server.started`, ...).
    pub event_type: String,
    /// How it ended (`success`, `failure`, `denied`).
    pub outcome: String,
    /// A small JSON object; never secrets, never personal data.
    pub detail: String,
    /// The previous entry's `entry_hash` (32 zero bytes for the first entry).
    pub prev_hash: Vec<u8>,
    /// The hash of this entry, committing to `prev_hash`.
    pub entry_hash: Vec<u8>,
}

/// A signed statement that the chain had a given hash at a given position.
///
/// Checkpoints form a chain of their own: checkpoint `number` n commits to the
/// hash of checkpoint n - 1, so one removed from the middle is detected. Kind
/// `retention` is written by a retention purge (the remaining chain may start
/// right after it); kind `head` is written on a schedule and at shutdown (a
/// removed tail of entries is detected back to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpointRowV1 {
    /// Position in the checkpoint chain, starting at 1, without gaps.
    pub number: i64,
    /// `head` or `retention`.
    pub kind: String,
    /// The `seq` of the entry the checkpoint commits to.
    pub seq: i64,
    /// That entry's `entry_hash`.
    pub entry_hash: Vec<u8>,
    /// When the checkpoint was made.
    pub created_at: OffsetDateTime,
    /// The hash of checkpoint `number - 1` (32 zero bytes for the first).
    pub prev_hash: Vec<u8>,
    /// Identifies the signing key (hex of a digest of its public key).
    pub key_id: String,
    /// The signature over the checkpoint's canonical bytes.
    pub signature: Vec<u8>,
}

/// Which entries a query returns. Every condition that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries about this subject.
    pub subject: Option<String>,
    /// Only entries of this event type.
    pub event_type: Option<String>,
    /// Only entries recorded at or after this instant.
    pub from: Option<OffsetDateTime>,
    /// Only entries recorded before this instant.
    pub until: Option<OffsetDateTime>,
    /// Only entries with `seq` greater than this (for paging).
    pub after_seq: Option<i64>,
    /// At most this many entries, in ascending `seq` order.
    pub limit: u32,
}

/// Append-only storage of audit entries and checkpoints.
#[async_trait]
pub trait AuditStore: Send + Sync + std::fmt::Debug {
    /// The entry with the highest `seq`, if any.
    async fn last_audit_entry(&self) -> Result<Option<AuditEntryRowV1>, StoreError>;

    /// Stores a new entry. Returns [`StoreError::Conflict`] when `seq` is taken.
    /// Durable once it returns `Ok`.
    async fn insert_audit_entry(&self, entry: &AuditEntryRowV1) -> Result<(), StoreError>;

    /// Entries matching `filter`, ascending by `seq`.
    async fn audit_entries(&self, filter: &AuditFilter)
    -> Result<Vec<AuditEntryRowV1>, StoreError>;

    /// Stores a checkpoint. Returns [`StoreError::Conflict`] when its `number` is
    /// taken (another node checkpointed first: re-read and retry).
    async fn insert_audit_checkpoint(
        &self,
        checkpoint: &AuditCheckpointRowV1,
    ) -> Result<(), StoreError>;

    /// All checkpoints, ascending by `number`.
    async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpointRowV1>, StoreError>;

    /// In one transaction: stores `checkpoint` (which must commit to entry
    /// `checkpoint.seq`) and deletes every entry with `seq <= checkpoint.seq`.
    /// Returns how many entries were deleted. Either both happen or neither: when
    /// the checkpoint's `number` is taken the purge fails with
    /// [`StoreError::Conflict`] and deletes nothing.
    async fn purge_audit_entries_through(
        &self,
        checkpoint: &AuditCheckpointRowV1,
    ) -> Result<u64, StoreError>;
}
