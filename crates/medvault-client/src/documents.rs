//! Connections and sealed documents, on a [`Session`].
//!
//! Sending: every recipient's Root Credential key comes from their directory
//! entry and is used only after its certificate verified against the pinned
//! CA for that UID; the sender is always a recipient too (to read what they
//! sent); the session's working credential signs. Opening: the sender's
//! credential certificate must verify against the pinned CA and name the
//! claimed sender and credential, the signature must verify over the
//! ciphertexts and the recipient list, and only then is anything decrypted.

use medvault_core::Uid;
use medvault_crypto::document::{
    DocumentHeader, Recipient, document_signature_message, open_document_key, seal_document,
};
use medvault_crypto::{RootPublicKey, verify_challenge};
use medvault_proto::documents as proto;
use zeroize::Zeroizing;

use crate::session::{CredentialSigner, Session};
use crate::{ClientError, now};

/// A document in the list, its header decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo {
    /// The id.
    pub id: Uid,
    /// Who sent it (as the server says; [`Session::open_document`] verifies it).
    pub sender: Uid,
    /// The title.
    pub title: String,
    /// The media type.
    pub media_type: String,
    /// When it was stored (RFC 3339).
    pub created_at: String,
    /// The sealed body's size.
    pub size: i64,
}

/// An opened, verified document.
pub struct OpenedDocument {
    /// The id.
    pub id: Uid,
    /// The sender, as their certified credential signed it.
    pub sender: Uid,
    /// The sender's working credential that signed it.
    pub signed_by: String,
    /// The title.
    pub title: String,
    /// The media type.
    pub media_type: String,
    /// The content.
    pub body: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for OpenedDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedDocument")
            .field("id", &self.id)
            .field("sender", &self.sender)
            .field("media_type", &self.media_type)
            .field("size", &self.body.len())
            .finish_non_exhaustive()
    }
}

fn parse(text: &str) -> Result<Uid, ClientError> {
    text.parse()
        .map_err(|_| ClientError::Verification("server sent a malformed UID"))
}

impl Session {
    /// Invites `uid` to connect.
    pub async fn invite(&self, uid: Uid) -> Result<(), ClientError> {
        self.client()
            .post_empty(
                "api/v1/connections",
                &proto::ConnectionInvite {
                    uid: uid.to_string(),
                },
                self.token(),
            )
            .await
    }

    /// Accepts `uid`'s invitation.
    pub async fn accept(&self, uid: Uid) -> Result<(), ClientError> {
        self.client()
            .post_empty(
                &format!("api/v1/connections/{uid}/accept"),
                &serde_json::json!({}),
                self.token(),
            )
            .await
    }

    /// Removes the connection (or invitation) with `uid`.
    pub async fn remove_connection(&self, uid: Uid) -> Result<(), ClientError> {
        self.client()
            .delete(&format!("api/v1/connections/{uid}"), self.token())
            .await
    }

    /// Connections and invitations.
    pub async fn connections(&self) -> Result<Vec<proto::ConnectionView>, ClientError> {
        let list: proto::ConnectionList = self
            .client()
            .get("api/v1/connections", self.token())
            .await?;
        Ok(list.connections)
    }

    /// Seals `body` for `recipients` (and the sender) and signs it with this
    /// session's credential; returns the document's id.
    pub async fn send_document(
        &self,
        recipients: &[Uid],
        title: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Uid, ClientError> {
        let key = self.signing_key().ok_or(ClientError::Invalid(
            "this credential signs elsewhere: use send_document_with",
        ))?;
        let signer = crate::SoftwareSigner(key);
        self.send_document_with(&signer, recipients, title, media_type, body)
            .await
    }

    /// Like [`Self::send_document`], signing with `signer` (a smartcard the
    /// session logged in with).
    pub async fn send_document_with(
        &self,
        signer: &dyn CredentialSigner,
        recipients: &[Uid],
        title: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Uid, ClientError> {
        let mut keys: Vec<(String, RootPublicKey)> = vec![(
            self.uid().to_string(),
            self.root_credential().public_key().clone(),
        )];
        for recipient in recipients {
            if *recipient == self.uid() || keys.iter().any(|(uid, _)| *uid == recipient.to_string())
            {
                continue;
            }
            let entry = self.directory_entry(*recipient).await?;
            keys.push((recipient.to_string(), entry.root_public_key));
        }
        let id = Uid::generate();
        let sender = self.uid().to_string();
        let header = DocumentHeader {
            title: title.to_owned(),
            media_type: media_type.to_owned(),
        };
        let sealed_for: Vec<Recipient<'_>> = keys
            .iter()
            .map(|(uid, key)| Recipient {
                uid,
                root_public_key: key,
            })
            .collect();
        let parts = seal_document(&id.to_string(), &sender, &sealed_for, &header, body)
            .map_err(|_| ClientError::Invalid("title or media type"))?;
        let uids: Vec<&str> = keys.iter().map(|(uid, _)| uid.as_str()).collect();
        let message = document_signature_message(
            &id.to_string(),
            &sender,
            self.credential_id(),
            &uids,
            &parts.header,
            &parts.body,
        );
        let signature = signer.sign(&message)?;
        let upload = proto::DocumentUpload {
            id: id.to_string(),
            recipients: parts
                .keys
                .into_iter()
                .map(|(uid, sealed_key)| proto::SealedKey {
                    uid,
                    sealed_key: sealed_key.into(),
                })
                .collect(),
            sealed_header: parts.header.into(),
            sealed_body: parts.body.into(),
            signature: signature.into(),
        };
        self.client()
            .post_empty("api/v1/documents", &upload, self.token())
            .await?;
        Ok(id)
    }

    /// The documents for this participant, newest first, headers decrypted.
    pub async fn documents(&self) -> Result<Vec<DocumentInfo>, ClientError> {
        let list: proto::DocumentList = self.client().get("api/v1/documents", self.token()).await?;
        list.documents
            .into_iter()
            .map(|summary| {
                let key = open_document_key(
                    self.root_credential(),
                    &summary.id,
                    &summary.sender_uid,
                    &self.uid().to_string(),
                    summary.sealed_key.as_slice(),
                )
                .map_err(|_| ClientError::Verification("document key"))?;
                let header = key
                    .open_header(summary.sealed_header.as_slice())
                    .map_err(|_| ClientError::Verification("document header"))?;
                Ok(DocumentInfo {
                    id: parse(&summary.id)?,
                    sender: parse(&summary.sender_uid)?,
                    title: header.title,
                    media_type: header.media_type,
                    created_at: summary.created_at,
                    size: summary.size,
                })
            })
            .collect()
    }

    /// Fetches, verifies and opens one document.
    pub async fn open_document(&self, id: Uid) -> Result<OpenedDocument, ClientError> {
        let view: proto::DocumentView = self
            .client()
            .get(&format!("api/v1/documents/{id}"), self.token())
            .await?;
        self.open_document_view(id, &view)
    }

    /// The checks and decryption of [`Self::open_document`], on a document
    /// view obtained otherwise (an export, a cache).
    pub fn open_document_view(
        &self,
        id: Uid,
        view: &proto::DocumentView,
    ) -> Result<OpenedDocument, ClientError> {
        verify_and_open(self, id, view)
    }
}

fn verify_and_open(
    session: &Session,
    id: Uid,
    view: &proto::DocumentView,
) -> Result<OpenedDocument, ClientError> {
    let summary = &view.summary;
    if summary.id != id.to_string() {
        return Err(ClientError::Verification("document id"));
    }
    let certified = session
        .client()
        .ca()
        .verify_working_credential(view.sender_certificate.as_slice(), now())
        .map_err(|_| ClientError::Verification("sender certificate"))?;
    if certified.subject.uid != summary.sender_uid
        || certified.subject.working_credential_id != summary.sender_credential_id
    {
        return Err(ClientError::Verification("sender certificate"));
    }
    let recipients: Vec<&str> = summary.recipients.iter().map(String::as_str).collect();
    if !recipients.contains(&session.uid().to_string().as_str()) {
        return Err(ClientError::Verification("recipient list"));
    }
    let message = document_signature_message(
        &summary.id,
        &summary.sender_uid,
        &summary.sender_credential_id,
        &recipients,
        summary.sealed_header.as_slice(),
        view.sealed_body.as_slice(),
    );
    verify_challenge(&certified.public_key, &message, view.signature.as_slice())
        .map_err(|_| ClientError::Verification("document signature"))?;
    let key = open_document_key(
        session.root_credential(),
        &summary.id,
        &summary.sender_uid,
        &session.uid().to_string(),
        summary.sealed_key.as_slice(),
    )
    .map_err(|_| ClientError::Verification("document key"))?;
    let header = key
        .open_header(summary.sealed_header.as_slice())
        .map_err(|_| ClientError::Verification("document header"))?;
    let body = key
        .open_body(view.sealed_body.as_slice())
        .map_err(|_| ClientError::Verification("document body"))?;
    Ok(OpenedDocument {
        id,
        sender: parse(&summary.sender_uid)?,
        signed_by: summary.sender_credential_id.clone(),
        title: header.title,
        media_type: header.media_type,
        body,
    })
}
