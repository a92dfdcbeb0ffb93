//! The audit trail: append-only, hash-chained, verifiable, with bounded retention.
//!
//! This crate owns what an audit entry means and how the chain is built and
//! checked; `medvault-store` only keeps the rows. Every entry commits to the one
//! before it: `entry_hash = SHA-256(domain tag ‖ seq ‖ time ‖ actor ‖ subject ‖
//! event type ‖ outcome ‖ detail ‖ prev_hash)`, each field length-prefixed. A changed,
//! removed or reordered row therefore breaks the chain at that row, and
//! [`AuditTrail::verify`] reports where.
//!
//! Retention removes old entries only behind a **signed checkpoint** (Ed25519)
//! that commits to the hash of the last removed entry, so what remains still
//! verifies; checkpoints of the head, made on demand, also reveal a removed tail.
//! The retention period is never below [`MINIMUM_RETENTION`] (30 days), whatever
//! the configuration says.
//!
//! Invariants:
//! - an entry's detail is a JSON object of at most [`MAX_DETAIL_BYTES`] whose keys
//!   name no secret or personal datum (see [`AuditDetail`]);
//! - `append` returns `Ok` only after the entry is durably stored;
//! - two nodes never write two entries with the same `seq` (the store's unique
//!   key decides, the loser retries on the new head).

mod chain;
mod checkpoint;
mod event;
mod trail;

pub use checkpoint::{CheckpointKey, CheckpointVerifier};
pub use event::{AuditDetail, AuditEvent, AuditRecord, DetailError, MAX_DETAIL_BYTES, Outcome};
pub use trail::{
    AuditError, AuditQuery, AuditTrail, ChainBreak, CheckpointAnchor, MINIMUM_RETENTION, Retention,
    VerificationReport,
};
