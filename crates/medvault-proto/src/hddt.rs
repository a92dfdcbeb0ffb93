//! HDDT pairing, the patient's side: login tickets for the consent page and
//! the list of pairings.

use serde::{Deserialize, Serialize};

/// A one-time login ticket for the consent page (`POST /api/v1/hddt/tickets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairingTicket {
    /// The ticket, in groups of five characters.
    pub ticket: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// One pairing (a consent and its tokens) as the patient sees it
/// (`GET /api/v1/hddt/pairings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairingView {
    /// The Pairing ID (the only identifier the DiGA has).
    pub pairing_id: String,
    /// The DiGA.
    pub client_id: String,
    /// The DiGA's registered name, if the registry knows it.
    pub diga_name: Option<String>,
    /// The consented scopes.
    pub scope: String,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// Active and ending within 14 days: renew it (`POST .../renew`).
    pub expires_soon: bool,
    /// When the patient consented.
    pub consented_at: String,
    /// When the consent ends.
    pub consent_until: String,
    /// `prescription` or `patient`.
    pub consent_basis: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Why (`patient`, `client`, `code_reuse`, `refresh_reuse`, `superseded`,
    /// `registry`, `retired`).
    pub revoke_reason: Option<String>,
}

/// `POST /api/v1/hddt/pairings/{pairing_id}/renew`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Days from now (at most 365).
    pub days: u32,
}

/// The renewed consent's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewResponse {
    /// When the consent now ends (RFC 3339).
    pub consent_until: String,
}
