//! The canonical bytes and hashes of the chain.

use aws_lc_rs::digest;
use medvault_store::{AuditCheckpointRowV1, AuditEntryRowV1, to_unix_micros};

/// The `prev_hash` of the first entry ever written.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

const ENTRY_DOMAIN: &[u8] = b"medvault.audit.entry.v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"medvault.audit.checkpoint.v1\0";

fn push_field(buffer: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded far below 4 GiB (detail <= a few KiB, names short).
    let length = u32::try_from(field.len()).unwrap_or(u32::MAX);
    buffer.extend_from_slice(&length.to_be_bytes());
    buffer.extend_from_slice(field);
}

/// The hash an entry must carry, computed from its other fields.
pub(crate) fn entry_hash(entry: &AuditEntryRowV1) -> [u8; 32] {
    let mut buffer = Vec::with_capacity(256 + entry.detail.len());
    buffer.extend_from_slice(ENTRY_DOMAIN);
    buffer.extend_from_slice(&entry.seq.to_be_bytes());
    buffer.extend_from_slice(&to_unix_micros(entry.recorded_at).to_be_bytes());
    push_field(&mut buffer, entry.actor.as_bytes());
    push_field(&mut buffer, entry.subject.as_bytes());
    push_field(&mut buffer, entry.event_type.as_bytes());
    push_field(&mut buffer, entry.outcome.as_bytes());
    push_field(&mut buffer, entry.detail.as_bytes());
    push_field(&mut buffer, &entry.prev_hash);
    sha256(&buffer)
}

/// The bytes a checkpoint signature covers: everything in the row but the key id
/// and the signature itself.
pub(crate) fn checkpoint_message(checkpoint: &AuditCheckpointRowV1) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(160);
    buffer.extend_from_slice(CHECKPOINT_DOMAIN);
    buffer.extend_from_slice(&checkpoint.number.to_be_bytes());
    push_field(&mut buffer, checkpoint.kind.as_bytes());
    buffer.extend_from_slice(&checkpoint.seq.to_be_bytes());
    push_field(&mut buffer, &checkpoint.entry_hash);
    buffer.extend_from_slice(&to_unix_micros(checkpoint.created_at).to_be_bytes());
    push_field(&mut buffer, &checkpoint.prev_hash);
    buffer
}

/// The hash the next checkpoint's `prev_hash` must carry: over the signed bytes
/// and the signature.
pub(crate) fn checkpoint_hash(checkpoint: &AuditCheckpointRowV1) -> [u8; 32] {
    let mut buffer = checkpoint_message(checkpoint);
    push_field(&mut buffer, checkpoint.key_id.as_bytes());
    push_field(&mut buffer, &checkpoint.signature);
    sha256(&buffer)
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn entry() -> AuditEntryRowV1 {
        AuditEntryRowV1 {
            seq: 7,
            recorded_at: datetime!(2026-05-01 10:00:00.000001 UTC),
            actor: "a".into(),
            subject: "s".into(),
            event_type: "e".into(),
            outcome: "success".into(),
            detail: "{}".into(),
            prev_hash: vec![1; 32],
            entry_hash: vec![],
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = entry_hash(&entry());
        let edits: Vec<fn(&mut AuditEntryRowV1)> = vec![
            |e| e.seq += 1,
            |e| e.recorded_at += time::Duration::microseconds(1),
            |e| e.actor.push('x'),
            |e| e.subject.push('x'),
            |e| e.event_type.push('x'),
            |e| e.outcome = "failure".into(),
            |e| e.detail = "{\"a\":1}".into(),
            |e| e.prev_hash = vec![2; 32],
        ];
        for (index, edit) in edits.into_iter().enumerate() {
            let mut changed = entry();
            edit(&mut changed);
            assert_ne!(
                entry_hash(&changed),
                base,
                "edit {index} did not change the hash"
            );
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // "ab" + "c" and "a" + "bc" must not hash alike.
        let mut left = entry();
        left.actor = "ab".into();
        left.subject = "c".into();
        let mut right = entry();
        right.actor = "a".into();
        right.subject = "bc".into();
        assert_ne!(entry_hash(&left), entry_hash(&right));
    }
}
