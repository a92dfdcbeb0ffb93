//! Connections between participants and the exchange of sealed documents.
//!
//! Participants connect before they exchange anything: one invites, the other
//! accepts, either removes. A patient connects with institutions and health
//! care professionals; institutions and professionals also connect among
//! themselves; two patients do not (the document names no patient-to-patient
//! communication). A sealed document goes only to the sender and to
//! participants actively connected with the sender, and only if the sender's
//! signature verifies with the working credential of the session that sends
//! it: what the server stores is attributable to a certified key.

use std::sync::Arc;

use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{Clock, ParticipantKind, Uid};
use medvault_crypto::document::document_signature_message;
use medvault_crypto::verify_challenge;
use medvault_store::{
    ConnectionChange, ConnectionRowV1, DocumentInsert, DocumentRowV1, ReceivedDocumentV1, Store,
    StoreError,
};
use time::OffsetDateTime;

use crate::login::Session;

/// The most recipients of one document.
pub const MAX_RECIPIENTS: usize = 32;
/// The largest sealed header (title and media type, encrypted).
pub const MAX_SEALED_HEADER: usize = 1024;
/// The largest sealed content key of one recipient.
pub const MAX_SEALED_KEY: usize = 256;
/// The largest signature (DER ECDSA P-256).
pub const MAX_SIGNATURE: usize = 80;
/// The most documents one list returns.
pub const MAX_LIST: i64 = 200;

/// Where a connection stands, seen from one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The other participant.
    pub other: Uid,
    /// `pending` or `active`.
    pub state: String,
    /// Whether the viewer invited.
    pub invited_by_me: bool,
    /// When the invitation was made.
    pub created_at: OffsetDateTime,
}

/// A document as its sender uploads it.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// A UUID the sender drew (it is bound into every sealed key).
    pub id: Uid,
    /// Per recipient: the content key sealed to them.
    pub keys: Vec<(Uid, Vec<u8>)>,
    /// The encrypted header.
    pub sealed_header: Vec<u8>,
    /// The encrypted body.
    pub sealed_body: Vec<u8>,
    /// The signature of the session's working credential over
    /// [`document_signature_message`].
    pub signature: Vec<u8>,
}

/// Why a connection or document request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The other participant does not exist.
    #[error("no such participant")]
    UnknownParticipant,
    /// These two kinds do not connect (two patients), or one tried to connect to itself.
    #[error("these participants cannot connect")]
    NotConnectable,
    /// There is a connection or invitation already.
    #[error("a connection or invitation exists already")]
    Exists,
    /// No such (pending) connection.
    #[error("no such connection")]
    NotFound,
    /// A recipient is not connected with the sender.
    #[error("a recipient is not connected with the sender")]
    NotConnected,
    /// A field is malformed or out of bounds.
    #[error("invalid document: {0}")]
    Invalid(&'static str),
    /// The sealed body is larger than the configured maximum (bytes).
    #[error("the sealed document is larger than {0} bytes")]
    TooLarge(usize),
    /// The signature does not verify with the session's working credential.
    #[error("the signature does not verify with the sending credential")]
    Signature,
    /// The document id is taken.
    #[error("the document id is taken")]
    Taken,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit trail could not be written.
    #[error("could not audit: {0}")]
    Audit(String),
}

/// Connections and documents.
#[derive(Debug, Clone)]
pub struct Exchange {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditTrail>,
    max_document: usize,
}

fn pair(a: Uid, b: Uid) -> (String, String) {
    let (a, b) = (a.to_string(), b.to_string());
    if a < b { (a, b) } else { (b, a) }
}

impl Exchange {
    /// The service; documents' sealed bodies may be up to `max_document` bytes.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditTrail>,
        max_document: usize,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            max_document,
        }
    }

    async fn kind(&self, uid: Uid) -> Result<ParticipantKind, ExchangeError> {
        let row = self
            .store
            .participant(&uid.to_string())
            .await?
            .ok_or(ExchangeError::UnknownParticipant)?;
        ParticipantKind::parse(&row.kind).ok_or(ExchangeError::UnknownParticipant)
    }

    async fn record(
        &self,
        session: &Session,
        event_type: &str,
        subject: String,
        detail: Result<AuditDetail, medvault_audit::DetailError>,
    ) -> Result<(), ExchangeError> {
        let detail = detail.map_err(|error| ExchangeError::Audit(error.to_string()))?;
        self.audit
            .append(
                AuditEvent::new(
                    session.uid.to_string(),
                    subject,
                    event_type,
                    Outcome::Success,
                )
                .with_detail(detail),
            )
            .await
            .map(|_| ())
            .map_err(|error| ExchangeError::Audit(error.to_string()))
    }

    /// The session's owner invites `other`.
    pub async fn invite(&self, session: &Session, other: Uid) -> Result<(), ExchangeError> {
        if other == session.uid {
            return Err(ExchangeError::NotConnectable);
        }
        let (mine, theirs) = (self.kind(session.uid).await?, self.kind(other).await?);
        if mine == ParticipantKind::Patient && theirs == ParticipantKind::Patient {
            return Err(ExchangeError::NotConnectable);
        }
        let (uid_low, uid_high) = pair(session.uid, other);
        self.store
            .insert_connection(&ConnectionRowV1 {
                uid_low,
                uid_high,
                inviter: session.uid.to_string(),
                state: "pending".to_owned(),
                created_at: self.clock.now(),
                accepted_at: None,
            })
            .await
            .map_err(|error| match error {
                StoreError::Conflict(_) => ExchangeError::Exists,
                other => other.into(),
            })?;
        self.record(
            session,
            "connection.invited",
            other.to_string(),
            AuditDetail::new().with("other_kind", theirs.as_str()),
        )
        .await
    }

    /// The session's owner accepts `other`'s invitation.
    pub async fn accept(&self, session: &Session, other: Uid) -> Result<(), ExchangeError> {
        let (uid_low, uid_high) = pair(session.uid, other);
        let change = self
            .store
            .accept_connection(
                &uid_low,
                &uid_high,
                &session.uid.to_string(),
                self.clock.now(),
            )
            .await?;
        if change == ConnectionChange::NotFound {
            return Err(ExchangeError::NotFound);
        }
        self.record(
            session,
            "connection.accepted",
            other.to_string(),
            Ok(AuditDetail::new()),
        )
        .await
    }

    /// Removes a connection or invitation (either side may).
    pub async fn remove(&self, session: &Session, other: Uid) -> Result<(), ExchangeError> {
        let (uid_low, uid_high) = pair(session.uid, other);
        if self.store.delete_connection(&uid_low, &uid_high).await? == ConnectionChange::NotFound {
            return Err(ExchangeError::NotFound);
        }
        self.record(
            session,
            "connection.removed",
            other.to_string(),
            Ok(AuditDetail::new()),
        )
        .await
    }

    /// The session owner's connections and invitations.
    pub async fn connections(&self, session: &Session) -> Result<Vec<Connection>, ExchangeError> {
        let me = session.uid.to_string();
        self.store
            .connections(&me)
            .await?
            .into_iter()
            .map(|row| {
                let other = if row.uid_low == me {
                    &row.uid_high
                } else {
                    &row.uid_low
                };
                Ok(Connection {
                    other: other
                        .parse()
                        .map_err(|_| ExchangeError::Invalid("stored connection"))?,
                    state: row.state,
                    invited_by_me: row.inviter == me,
                    created_at: row.created_at,
                })
            })
            .collect()
    }

    /// Stores a document the session's owner sealed and signed.
    pub async fn send(
        &self,
        session: &Session,
        document: NewDocument,
    ) -> Result<(), ExchangeError> {
        if document.keys.is_empty() || document.keys.len() > MAX_RECIPIENTS {
            return Err(ExchangeError::Invalid("recipients"));
        }
        if document.sealed_header.len() > MAX_SEALED_HEADER || document.sealed_header.len() < 28 {
            return Err(ExchangeError::Invalid("sealed_header"));
        }
        if document.sealed_body.len() > self.max_document {
            return Err(ExchangeError::TooLarge(self.max_document));
        }
        if document.sealed_body.len() < 28 {
            return Err(ExchangeError::Invalid("sealed_body"));
        }
        if document.signature.len() > MAX_SIGNATURE {
            return Err(ExchangeError::Invalid("signature"));
        }
        let mut recipients: Vec<Uid> = document.keys.iter().map(|(uid, _)| *uid).collect();
        recipients.sort_unstable();
        recipients.dedup();
        if recipients.len() != document.keys.len() {
            return Err(ExchangeError::Invalid("recipients repeat"));
        }
        if document
            .keys
            .iter()
            .any(|(_, key)| key.len() > MAX_SEALED_KEY || key.len() < 48)
        {
            return Err(ExchangeError::Invalid("sealed key"));
        }
        let credential = self
            .store
            .working_credential(&session.credential_id)
            .await?
            .filter(|credential| credential.removed_at.is_none())
            .ok_or(ExchangeError::Signature)?;
        let sender = session.uid.to_string();
        let id = document.id.to_string();
        let recipient_texts: Vec<String> = recipients.iter().map(Uid::to_string).collect();
        let recipient_refs: Vec<&str> = recipient_texts.iter().map(String::as_str).collect();
        let message = document_signature_message(
            &id,
            &sender,
            &credential.id,
            &recipient_refs,
            &document.sealed_header,
            &document.sealed_body,
        );
        verify_challenge(&credential.public_key, &message, &document.signature)
            .map_err(|_| ExchangeError::Signature)?;
        let size = i64::try_from(document.sealed_body.len()).unwrap_or(i64::MAX);
        let row = DocumentRowV1 {
            id: id.clone(),
            sender_uid: sender,
            sender_credential_id: credential.id,
            sender_certificate: credential.certificate,
            signature: document.signature,
            sealed_header: document.sealed_header,
            sealed_body: document.sealed_body,
            size,
            created_at: self.clock.now(),
        };
        let keys: Vec<(String, Vec<u8>)> = document
            .keys
            .into_iter()
            .map(|(uid, key)| (uid.to_string(), key))
            .collect();
        let stored =
            self.store
                .insert_document(&row, &keys)
                .await
                .map_err(|error| match error {
                    StoreError::Conflict(_) => ExchangeError::Taken,
                    other => other.into(),
                })?;
        if stored == DocumentInsert::NotConnected {
            return Err(ExchangeError::NotConnected);
        }
        self.record(
            session,
            "document.sent",
            session.uid.to_string(),
            AuditDetail::new()
                .with("document_id", id)
                .and_then(|detail| detail.with("recipients", recipient_texts.join(",")))
                .and_then(|detail| detail.with("size", size)),
        )
        .await
    }

    /// The documents for the session's owner, newest first, without bodies.
    pub async fn received(
        &self,
        session: &Session,
        limit: i64,
    ) -> Result<Vec<ReceivedDocumentV1>, ExchangeError> {
        Ok(self
            .store
            .received_documents(&session.uid.to_string(), limit.clamp(1, MAX_LIST))
            .await?)
    }

    /// One document for the session's owner, with its body.
    pub async fn fetch(
        &self,
        session: &Session,
        id: Uid,
    ) -> Result<ReceivedDocumentV1, ExchangeError> {
        let document = self
            .store
            .received_document(&session.uid.to_string(), &id.to_string())
            .await?
            .ok_or(ExchangeError::NotFound)?;
        self.record(
            session,
            "document.fetched",
            session.uid.to_string(),
            AuditDetail::new().with("document_id", id.to_string()),
        )
        .await?;
        Ok(document)
    }
}
