//! Storage of issued Patient Credentials (spec 003): one row per credential
//! (never its text: the holder keeps the JWT), its place in the issuing
//! institution's status lists, and the one-time nonces of IAL2 presentations.
//!
//! Invariants: issuance uses the one-time code, records the request's `jti`
//! and stores the credential in one transaction, so a refused or failed
//! issuance changes nothing; a status index is unique per institution; a
//! revoked credential stays revoked; a presentation nonce is bound to one
//! account and taken once, in the same transaction that opens the IAL2
//! session.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{ProofingRowV1, SessionRowV1, StoreError};

/// An issued Patient Credential (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientCredentialRowV1 {
    /// Random id (server side; the credential's `jti` is the request's).
    pub id: String,
    /// The issuing institution.
    pub institution_uid: String,
    /// The patient it was issued to.
    pub patient_uid: String,
    /// The identity proofing it rests on.
    pub proofing_id: String,
    /// The device key's DID (the credential's `sub`).
    pub subject: String,
    /// The credential's `jti`.
    pub jti: String,
    /// The issuer key that signed it.
    pub kid: String,
    /// Its index in the institution's status lists.
    pub status_index: i64,
    /// Where the device key lives (`software`, `pkcs11`, `secure-element`).
    pub key_protection: String,
    /// The user agent that asked for it.
    pub client_id: String,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// `active`, `suspended` or `revoked`.
    pub status: String,
    /// When the status last changed.
    pub status_changed_at: Option<OffsetDateTime>,
}

/// The outcome of [`PatientCredentialStore::issue_patient_credential`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialIssue {
    /// Code used, `jti` recorded, credential stored.
    Issued,
    /// The code is unknown, used, expired, bound to another patient or to
    /// another proofing; nothing changed.
    CodeRefused,
    /// The request's `jti` was seen and is still live; nothing changed.
    Replay,
    /// The status index is taken (draw another); nothing changed.
    IndexTaken,
}

/// Issued credentials, their status and presentation nonces.
#[async_trait]
pub trait PatientCredentialStore: Send + Sync {
    /// The proofing of an unused, unexpired code bound to `patient_uid`,
    /// without using it.
    async fn peek_credential_code(
        &self,
        code_hash: &[u8],
        patient_uid: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ProofingRowV1>, StoreError>;

    /// In one transaction: uses the code (which must stand for
    /// `credential.proofing_id` and be bound to `credential.patient_uid`),
    /// records the request's `jti` until `jti_expires_at`, stores the credential.
    async fn issue_patient_credential(
        &self,
        code_hash: &[u8],
        credential: &PatientCredentialRowV1,
        jti_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<CredentialIssue, StoreError>;

    /// The credential at `status_index` of `institution_uid`'s lists.
    async fn patient_credential_at(
        &self,
        institution_uid: &str,
        status_index: i64,
    ) -> Result<Option<PatientCredentialRowV1>, StoreError>;

    /// The credential with this id.
    async fn patient_credential(
        &self,
        id: &str,
    ) -> Result<Option<PatientCredentialRowV1>, StoreError>;

    /// Credentials issued to a patient (`patient_uid`) or by an institution
    /// (`institution_uid`), newest first.
    async fn patient_credentials(
        &self,
        patient_uid: Option<&str>,
        institution_uid: Option<&str>,
    ) -> Result<Vec<PatientCredentialRowV1>, StoreError>;

    /// Sets the status of the credential `id` issued by `institution_uid`;
    /// `false` if there is none, or it is revoked (revocation is final).
    async fn set_patient_credential_status(
        &self,
        id: &str,
        institution_uid: &str,
        status: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// The status indexes of `institution_uid`'s credentials that are in
    /// `status` (`revoked` or `suspended`) and unexpired at `now`.
    async fn patient_credential_indexes(
        &self,
        institution_uid: &str,
        status: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<i64>, StoreError>;

    /// Whether `patient_uid` holds an active, unexpired credential at `now`.
    async fn holds_patient_credential(
        &self,
        patient_uid: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Stores a presentation nonce for `uid` (by its hash).
    async fn insert_presentation_nonce(
        &self,
        nonce_hash: &[u8],
        uid: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// In one transaction: takes the nonce (bound to `session.uid`,
    /// unexpired at `now`), ends the session `replaces` and stores `session`.
    /// `false` (and nothing changed) if the nonce is unknown, used, expired
    /// or someone else's, or `replaces` no longer exists.
    async fn open_presented_session(
        &self,
        nonce_hash: &[u8],
        replaces: &[u8],
        session: &SessionRowV1,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Deletes expired nonces, used or expired codes' replay entries.
    async fn purge_expired_presentation_state(
        &self,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;
}
