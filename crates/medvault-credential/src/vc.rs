//! The Patient Credential's JWT claims (W3C VC Data Model 1.1, JWT encoding,
//! as spec 003's example): the wire shape shared by issuance and verification.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `vc.type` of a Patient Credential.
pub const CREDENTIAL_TYPES: [&str; 3] = ["VerifiableCredential", "PatientCredential", "IAL2"];

/// `vc.@context`: the VC data model's, then the one spec 003 names.
pub const CREDENTIAL_CONTEXT: [&str; 2] = [
    "https://www.w3.org/2018/credentials/v1",
    "https://trustregistry.us/2018/health/v1",
];

/// The JWT payload of a Patient Credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientCredentialClaims {
    /// The issuing institution's `did:web`.
    pub iss: String,
    /// The holder's device key (`did:jwk` / `did:key`).
    pub sub: String,
    /// The relying party (data controller).
    pub aud: Value,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expires (Unix seconds).
    pub exp: i64,
    /// The credential request's `jti`.
    pub jti: String,
    /// The credential.
    pub vc: CredentialBody,
}

/// The `vc` claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialBody {
    /// JSON-LD contexts.
    #[serde(rename = "@context")]
    pub context: Vec<String>,
    /// Credential types.
    #[serde(rename = "type")]
    pub types: Vec<String>,
    /// What is claimed: the relationship to a physician or practice, nothing
    /// that names the patient.
    #[serde(rename = "credentialSubject")]
    pub credential_subject: CredentialSubject,
    /// Where to look up revocation and suspension.
    #[serde(rename = "credentialStatus", default)]
    pub credential_status: Vec<StatusEntry>,
}

/// `vc.credentialSubject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialSubject {
    /// The holder (the same DID as `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Who proofed the patient and can be reached about them.
    pub physician: Physician,
}

/// `credentialSubject.physician` (spec 003).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Physician {
    /// The relationship: `primary` or a specialty.
    #[serde(rename = "type")]
    pub kind: String,
    /// The practice's (institution's) display name.
    pub name: String,
    /// How a responder reaches it.
    pub address: Value,
}

/// A `BitstringStatusListEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// `<list URL>#<index>`.
    pub id: String,
    /// `BitstringStatusListEntry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `revocation` or `suspension`.
    #[serde(rename = "statusPurpose")]
    pub status_purpose: String,
    /// The index, as a decimal string.
    #[serde(rename = "statusListIndex")]
    pub status_list_index: String,
    /// The URL of the status list credential.
    #[serde(rename = "statusListCredential")]
    pub status_list_credential: String,
}

/// Whether `aud` (a string or an array of strings) names `audience`.
pub fn audience_contains(aud: &Value, audience: &str) -> bool {
    match aud {
        Value::String(one) => one == audience,
        Value::Array(many) => many.iter().any(|one| one.as_str() == Some(audience)),
        _ => false,
    }
}
