//! The audit trail as participants and auditors read it (`GET /api/v1/audit`).

use serde::{Deserialize, Serialize};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntryView {
    /// Position in the chain.
    pub seq: i64,
    /// When (RFC 3339).
    pub recorded_at: String,
    /// Who acted (a UID, `diga:<client_id>`, `cert:<fingerprint>`, `system`, ...).
    pub actor: String,
    /// Whose data it concerns (a UID or `-`).
    pub subject: String,
    /// What happened (e.g. `hddt.pairing`, `hddt.unpairing`).
    pub event_type: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// The detail (a JSON object).
    pub detail: serde_json::Value,
    /// The entry's chain hash (hex).
    pub entry_hash: String,
}

/// A page of entries, oldest first; `next_after` continues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntryView>,
    /// The `after` of the next page, when this one was full.
    pub next_after: Option<i64>,
}
