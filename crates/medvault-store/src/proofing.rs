//! Storage of identity proofing (Patient Credential, spec 003): the record an
//! institution makes when it proofed a connected patient at IAL2 (method,
//! evidence type, who, when; never a copy of the document), the one-time
//! authorization code bound to that patient, and the replay cache of
//! credential requests' `jti`s.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// An identity proofing (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofingRowV1 {
    /// Random id.
    pub id: String,
    /// The institution that proofed (the Credential Service Provider).
    pub institution_uid: String,
    /// The patient proofed.
    pub patient_uid: String,
    /// The assurance level reached (`IAL2`).
    pub assurance: String,
    /// How: `in-person`, `supervised-remote` or `eid`.
    pub method: String,
    /// Which evidence was inspected: `id-card`, `passport`, `residence-permit`, `eid`.
    pub evidence_type: String,
    /// The participant (the institution, or its professional) who did it.
    pub proofed_by: String,
    /// When.
    pub proofed_at: OffsetDateTime,
}

/// The one-time authorization code of a proofing (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialCodeRowV1 {
    /// SHA-256 of the code.
    pub code_hash: Vec<u8>,
    /// The proofing it stands for.
    pub proofing_id: String,
    /// The patient it is bound to.
    pub patient_uid: String,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// Identity proofings, their codes and the request replay cache.
#[async_trait]
pub trait ProofingStore: Send + Sync {
    /// Stores a proofing and its code, all or nothing.
    async fn insert_proofing(
        &self,
        proofing: &ProofingRowV1,
        code: &CredentialCodeRowV1,
    ) -> Result<(), StoreError>;

    /// Uses the code that hashes to `code_hash` once, if it is bound to
    /// `patient_uid`, unused and unexpired at `now`; returns its proofing.
    async fn consume_credential_code(
        &self,
        code_hash: &[u8],
        patient_uid: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ProofingRowV1>, StoreError>;

    /// A new code (by its hash) for the proofing `proofing_id` made by
    /// `institution_uid`, in one transaction: the proofing's unused codes stop
    /// working and the new one is stored, bound to the proofing's patient,
    /// whose UID is returned. `None` (nothing changed) if the proofing is not
    /// that institution's, a credential was issued for it, or the patient is
    /// no longer actively connected with the institution.
    async fn reissue_credential_code(
        &self,
        institution_uid: &str,
        proofing_id: &str,
        code_hash: &[u8],
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError>;

    /// The identity proofings of a patient, newest first.
    async fn proofings_of_patient(
        &self,
        patient_uid: &str,
    ) -> Result<Vec<ProofingRowV1>, StoreError>;

    /// Records a request's `jti` until `expires_at`; `false` if it was seen
    /// and has not expired at `now` (a replay).
    async fn record_jti(
        &self,
        jti: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}
