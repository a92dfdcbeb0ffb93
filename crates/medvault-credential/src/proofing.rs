//! Identity proofing and the one-time authorization code.

use std::sync::Arc;

use medvault_accounts::Session;
use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{Clock, ParticipantKind, Uid};
use medvault_crypto::{CodeKind, RecoveryCode, random_fill, sha256};
use medvault_store::{CredentialCodeRowV1, ProofingRowV1, Store, StoreError, connection_pair};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// How the patient's identity was proofed (IAL2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofingMethod {
    /// Face to face, with the document in hand.
    InPerson,
    /// Remote, supervised by a trained person over video.
    SupervisedRemote,
    /// The online function of the German eID (nPA).
    Eid,
}

impl ProofingMethod {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InPerson => "in-person",
            Self::SupervisedRemote => "supervised-remote",
            Self::Eid => "eid",
        }
    }

    /// Reads [`Self::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::InPerson, Self::SupervisedRemote, Self::Eid]
            .into_iter()
            .find(|method| method.as_str() == text)
    }
}

/// Which evidence was inspected (its type only; no copy, no number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceType {
    /// A national identity card.
    IdCard,
    /// A passport.
    Passport,
    /// A residence permit.
    ResidencePermit,
    /// The eID of an identity card, read electronically.
    Eid,
}

impl EvidenceType {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IdCard => "id-card",
            Self::Passport => "passport",
            Self::ResidencePermit => "residence-permit",
            Self::Eid => "eid",
        }
    }

    /// Reads [`Self::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::IdCard,
            Self::Passport,
            Self::ResidencePermit,
            Self::Eid,
        ]
        .into_iter()
        .find(|evidence| evidence.as_str() == text)
    }
}

/// The code an institution hands the patient (text; a QR code of the same text).
#[derive(Debug)]
pub struct IssuedCode {
    /// The code, grouped for reading. Shown once.
    pub code: Zeroizing<String>,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// The proofing it stands for.
    pub proofing_id: String,
}

/// Why a proofing step was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProofingError {
    /// Only institutions proof identities.
    #[error("only an institution can record an identity proofing")]
    NotAnInstitution,
    /// The subject is not a patient, or not actively connected with the
    /// institution (or, for a new code: the proofing is unknown, not this
    /// institution's, or a credential was issued for it).
    #[error(
        "the patient is unknown or not connected with this institution, or the proofing is used"
    )]
    NotConnectedPatient,
    /// The code is unknown, used, expired or bound to someone else.
    #[error("the code is unknown, used or expired")]
    Code,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit trail could not be written.
    #[error("could not audit: {0}")]
    Audit(String),
}

/// Identity proofing by institutions.
#[derive(Debug, Clone)]
pub struct IdentityProofing {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditTrail>,
    code_lifetime: Duration,
}

fn code_hash(code: &RecoveryCode) -> Vec<u8> {
    sha256(code.display().as_bytes()).to_vec()
}

impl IdentityProofing {
    /// The service; codes live `code_lifetime` (the document suggests 10 minutes).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditTrail>,
        code_lifetime: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            code_lifetime,
        }
    }

    async fn kind(&self, uid: &str) -> Result<Option<ParticipantKind>, StoreError> {
        Ok(self
            .store
            .participant(uid)
            .await?
            .and_then(|row| ParticipantKind::parse(&row.kind)))
    }

    /// The session's institution records that it proofed `patient` at IAL2
    /// and gets the one-time code for the patient's credential request.
    pub async fn record(
        &self,
        session: &Session,
        patient: Uid,
        method: ProofingMethod,
        evidence: EvidenceType,
    ) -> Result<IssuedCode, ProofingError> {
        let institution = session.uid.to_string();
        let patient_text = patient.to_string();
        if !matches!(
            self.kind(&institution).await?,
            Some(ParticipantKind::Institution(_))
        ) {
            return Err(ProofingError::NotAnInstitution);
        }
        if self.kind(&patient_text).await? != Some(ParticipantKind::Patient) {
            return Err(ProofingError::NotConnectedPatient);
        }
        let (low, high) = connection_pair(&institution, &patient_text);
        let connected = self
            .store
            .connection(low, high)
            .await?
            .is_some_and(|connection| connection.state == "active");
        if !connected {
            return Err(ProofingError::NotConnectedPatient);
        }
        let code = RecoveryCode::generate(CodeKind::Tan).map_err(|_| ProofingError::Code)?;
        let mut id = [0u8; 16];
        random_fill(&mut id).map_err(|_| ProofingError::Code)?;
        let id: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
        let now = self.clock.now();
        let expires_at = now + self.code_lifetime;
        self.store
            .insert_proofing(
                &ProofingRowV1 {
                    id: id.clone(),
                    institution_uid: institution.clone(),
                    patient_uid: patient_text.clone(),
                    assurance: "IAL2".to_owned(),
                    method: method.as_str().to_owned(),
                    evidence_type: evidence.as_str().to_owned(),
                    proofed_by: institution.clone(),
                    proofed_at: now,
                },
                &CredentialCodeRowV1 {
                    code_hash: code_hash(&code),
                    proofing_id: id.clone(),
                    patient_uid: patient_text.clone(),
                    expires_at,
                },
            )
            .await?;
        let detail = AuditDetail::new()
            .with("method", method.as_str())
            .and_then(|detail| detail.with("evidence_type", evidence.as_str()))
            .and_then(|detail| detail.with("proofing_id", id.as_str()))
            .map_err(|error| ProofingError::Audit(error.to_string()))?;
        self.audit
            .append(
                AuditEvent::new(
                    institution,
                    patient_text,
                    "identity.proofed",
                    Outcome::Success,
                )
                .with_detail(detail),
            )
            .await
            .map_err(|error| ProofingError::Audit(error.to_string()))?;
        Ok(IssuedCode {
            code: code.display(),
            expires_at,
            proofing_id: id,
        })
    }

    /// A new one-time code for the session's institution's proofing
    /// `proofing_id` (the first was lost or expired): the proofing's unused
    /// codes stop working. Refused once a credential was issued for it or
    /// when the patient is no longer connected.
    pub async fn reissue(
        &self,
        session: &Session,
        proofing_id: &str,
    ) -> Result<IssuedCode, ProofingError> {
        let institution = session.uid.to_string();
        if !matches!(
            self.kind(&institution).await?,
            Some(ParticipantKind::Institution(_))
        ) {
            return Err(ProofingError::NotAnInstitution);
        }
        let code = RecoveryCode::generate(CodeKind::Tan).map_err(|_| ProofingError::Code)?;
        let now = self.clock.now();
        let expires_at = now + self.code_lifetime;
        let patient = self
            .store
            .reissue_credential_code(
                &institution,
                proofing_id,
                &code_hash(&code),
                expires_at,
                now,
            )
            .await?
            .ok_or(ProofingError::NotConnectedPatient)?;
        let detail = AuditDetail::new()
            .with("proofing_id", proofing_id)
            .map_err(|error| ProofingError::Audit(error.to_string()))?;
        self.audit
            .append(
                AuditEvent::new(
                    institution,
                    patient,
                    "identity.code_reissued",
                    Outcome::Success,
                )
                .with_detail(detail),
            )
            .await
            .map_err(|error| ProofingError::Audit(error.to_string()))?;
        Ok(IssuedCode {
            code: code.display(),
            expires_at,
            proofing_id: proofing_id.to_owned(),
        })
    }

    /// Uses `code` once for `patient` (the logged-in patient of the request).
    pub async fn redeem(&self, patient: Uid, code: &str) -> Result<ProofingRowV1, ProofingError> {
        let code = RecoveryCode::parse(CodeKind::Tan, code).map_err(|_| ProofingError::Code)?;
        self.store
            .consume_credential_code(&code_hash(&code), &patient.to_string(), self.clock.now())
            .await?
            .ok_or(ProofingError::Code)
    }
}
