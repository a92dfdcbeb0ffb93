//! Planned maintenance of the FHIR API (digest §5: a machine-readable
//! maintenance indicator distinct from generic 5xx, and a public status
//! feed). The switch lives in the database, so every node sees it; each
//! node re-reads it at most every [`RECHECK`].

use serde::{Deserialize, Serialize};

/// The state row holding the maintenance switch.
pub const MAINTENANCE_STATE: &str = "maintenance";
/// How long a node trusts its last reading of the switch.
pub const RECHECK: time::Duration = time::Duration::seconds(5);
/// The response header that marks a 503 as planned maintenance.
pub const MAINTENANCE_HEADER: &str = "x-hddt-maintenance";

/// A maintenance window, as stored and as `/status.json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// What `Retry-After` says (seconds).
    pub retry_after_secs: u32,
    /// When the window is planned to end (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// When it began (RFC 3339).
    pub since: String,
}

/// The public status feed (`/status.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStatus {
    /// `up`, `maintenance` or `retired`.
    pub status: String,
    /// The current maintenance window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// The FHIR version served.
    pub fhir_version: String,
    /// When this answer was made (RFC 3339).
    pub checked_at: String,
}
