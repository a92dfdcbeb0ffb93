//! Wire types of the Patient Credential API (spec 003): issuance, listing,
//! status changes, verification and the IAL2 presentation login.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/patient-credentials`: a device's credential request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The compact JWS (ES256) of the request, signed by the device key.
    pub request: String,
}

/// The issued credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedCredential {
    /// The server's id of it.
    pub id: String,
    /// The JWT VC.
    pub credential: String,
    /// The issuing institution.
    pub institution_uid: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

/// One credential, as its holder or issuer sees it (never its text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialView {
    /// The server's id.
    pub id: String,
    /// The issuing institution.
    pub institution_uid: String,
    /// The holder.
    pub patient_uid: String,
    /// The device key's DID.
    pub subject: String,
    /// `active`, `suspended` or `revoked`.
    pub status: String,
    /// Where the device key lives.
    pub key_protection: String,
    /// The user agent that asked for it.
    pub client_id: String,
    /// When it was issued (RFC 3339).
    pub issued_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

/// `GET /api/v1/patient-credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialList {
    /// Newest first.
    pub credentials: Vec<CredentialView>,
}

/// `POST /api/v1/patient-credentials/{id}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// `revoked` (final), `suspended` or `active` (reinstate).
    pub status: String,
}

/// `POST /api/v1/patient-credentials/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The JWT VC.
    pub credential: String,
}

/// The verifier's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyResult {
    /// Whether every check passed.
    pub valid: bool,
    /// Which check failed (when not valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The issuer's DID (when valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The holder's device key DID (when valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When it expires, RFC 3339 (when valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `POST /api/v1/session/presentation-challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentationChallenge {
    /// The nonce the presentation must carry.
    pub nonce: String,
    /// The `aud` it must name.
    pub audience: String,
    /// When the nonce stops working (RFC 3339).
    pub expires_at: String,
}

/// `POST /api/v1/session/presentation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presentation {
    /// The compact JWS of the presentation, signed by the device key.
    pub presentation: String,
}

/// The IAL2 session that replaces the presenting one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentedSession {
    /// The new bearer token (the old one no longer works).
    pub token: String,
    /// `IAL2`.
    pub assurance: String,
    /// The credential presented.
    pub patient_credential_id: String,
    /// Until when (RFC 3339).
    pub expires_at: String,
}
