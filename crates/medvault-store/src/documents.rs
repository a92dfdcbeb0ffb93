//! Storage of connections between participants and of sealed documents.
//!
//! A connection is one row per pair of participants (the smaller UID first),
//! pending until the invited side accepts. A sealed document is stored with
//! one sealed content key per recipient, all in one transaction; the server
//! holds ciphertexts, sizes and who sent what to whom, never content.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// A connection between two participants (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRowV1 {
    /// The smaller of the two UIDs.
    pub uid_low: String,
    /// The larger of the two UIDs.
    pub uid_high: String,
    /// Who invited.
    pub inviter: String,
    /// `pending` or `active`.
    pub state: String,
    /// When the invitation was made.
    pub created_at: OffsetDateTime,
    /// When it was accepted.
    pub accepted_at: Option<OffsetDateTime>,
}

/// A sealed document (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRowV1 {
    /// Its id (a UUID the sender drew).
    pub id: String,
    /// Who sent it.
    pub sender_uid: String,
    /// The working credential that signed it.
    pub sender_credential_id: String,
    /// That credential's certificate at sending time (DER).
    pub sender_certificate: Vec<u8>,
    /// The sender's signature (DER ECDSA).
    pub signature: Vec<u8>,
    /// The encrypted header (title, media type).
    pub sealed_header: Vec<u8>,
    /// The encrypted body; empty in list results.
    pub sealed_body: Vec<u8>,
    /// The body's encrypted size in bytes.
    pub size: i64,
    /// When it was stored.
    pub created_at: OffsetDateTime,
}

/// A document as one recipient sees it: the document and their sealed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedDocumentV1 {
    /// The document.
    pub document: DocumentRowV1,
    /// Every recipient's UID (the signature covers the list).
    pub recipients: Vec<String>,
    /// The content key sealed to this recipient.
    pub sealed_key: Vec<u8>,
}

/// How a connection change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionChange {
    /// Done.
    Done,
    /// No such (pending) connection for this participant.
    NotFound,
}

/// How storing a document went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentInsert {
    /// Stored.
    Stored,
    /// A recipient is not actively connected with the sender; nothing stored.
    NotConnected,
}

/// The two UIDs of a pair in the order connections are stored (smaller first).
pub fn connection_pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a < b { (a, b) } else { (b, a) }
}

/// Connections and sealed documents.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Stores a pending connection. [`StoreError::Conflict`] if the pair has one.
    async fn insert_connection(&self, connection: &ConnectionRowV1) -> Result<(), StoreError>;

    /// Accepts a pending connection of `uid_low`/`uid_high` that `accepter` did
    /// not make.
    async fn accept_connection(
        &self,
        uid_low: &str,
        uid_high: &str,
        accepter: &str,
        at: OffsetDateTime,
    ) -> Result<ConnectionChange, StoreError>;

    /// Deletes the connection of a pair (pending or active).
    async fn delete_connection(
        &self,
        uid_low: &str,
        uid_high: &str,
    ) -> Result<ConnectionChange, StoreError>;

    /// The connection of a pair, if any.
    async fn connection(
        &self,
        uid_low: &str,
        uid_high: &str,
    ) -> Result<Option<ConnectionRowV1>, StoreError>;

    /// Every connection `uid` is part of.
    async fn connections(&self, uid: &str) -> Result<Vec<ConnectionRowV1>, StoreError>;

    /// Stores a document and its sealed keys (recipient UID, sealed key), all
    /// or nothing, if every recipient other than the sender has an active
    /// connection with the sender; the check and the insert are one
    /// transaction, so a connection removed meanwhile stops the document.
    async fn insert_document(
        &self,
        document: &DocumentRowV1,
        keys: &[(String, Vec<u8>)],
    ) -> Result<DocumentInsert, StoreError>;

    /// The documents for `recipient`, newest first, without bodies, at most `limit`.
    async fn received_documents(
        &self,
        recipient: &str,
        limit: i64,
    ) -> Result<Vec<ReceivedDocumentV1>, StoreError>;

    /// One document for `recipient`, with its body.
    async fn received_document(
        &self,
        recipient: &str,
        id: &str,
    ) -> Result<Option<ReceivedDocumentV1>, StoreError>;
}
