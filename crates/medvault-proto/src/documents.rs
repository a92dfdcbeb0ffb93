//! Connections between participants and sealed documents.

use serde::{Deserialize, Serialize};

use crate::Bytes;

/// `POST /api/v1/connections`: invite a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInvite {
    /// Whom to invite.
    pub uid: String,
}

/// A connection as one side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionView {
    /// The other participant.
    pub uid: String,
    /// `pending` or `active`.
    pub state: String,
    /// `outgoing` (I invited) or `incoming`.
    pub direction: String,
    /// When the invitation was made (RFC 3339).
    pub created_at: String,
}

/// `GET /api/v1/connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionList {
    /// Connections and invitations, oldest first.
    pub connections: Vec<ConnectionView>,
}

/// One recipient's sealed content key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedKey {
    /// The recipient.
    pub uid: String,
    /// The content key sealed to their Root Credential (HPKE `enc` || ciphertext).
    pub sealed_key: Bytes,
}

/// `POST /api/v1/documents`: a document sealed and signed by the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentUpload {
    /// A UUID v4 the sender drew.
    pub id: String,
    /// One sealed key per recipient (the sender may be one of them).
    pub recipients: Vec<SealedKey>,
    /// The encrypted header (title, media type).
    pub sealed_header: Bytes,
    /// The encrypted body.
    pub sealed_body: Bytes,
    /// DER ECDSA signature of the session's working credential.
    pub signature: Bytes,
}

/// A received document without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentSummary {
    /// The id.
    pub id: String,
    /// Who sent it.
    pub sender_uid: String,
    /// The working credential that signed it.
    pub sender_credential_id: String,
    /// When it was stored (RFC 3339).
    pub created_at: String,
    /// The sealed body's size in bytes.
    pub size: i64,
    /// Every recipient (the signature covers the list).
    pub recipients: Vec<String>,
    /// The encrypted header.
    pub sealed_header: Bytes,
    /// The content key sealed to the caller.
    pub sealed_key: Bytes,
}

/// `GET /api/v1/documents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentList {
    /// Newest first.
    pub documents: Vec<DocumentSummary>,
}

/// `GET /api/v1/documents/{id}`: everything to verify and open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentView {
    /// The summary (as listed).
    pub summary: DocumentSummary,
    /// The signing credential's certificate (DER) at sending time.
    pub sender_certificate: Bytes,
    /// The sender's signature.
    pub signature: Bytes,
    /// The encrypted body.
    pub sealed_body: Bytes,
}
