//! Issuance of Patient Credentials, their status (revoke, suspend,
//! reinstate) and the institutions' signed status lists.
//!
//! A credential is issued to the logged-in patient for a request that
//! [`verify_credential_request`] accepted and whose code the patient got
//! from a proofing institution: the credential is signed first, then the
//! code is used, the request's `jti` recorded and the credential stored in
//! one transaction, so a refusal leaves no trace and a failure leaves the
//! code usable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use medvault_accounts::Session;
use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{Clock, ParticipantKind, Uid};
use medvault_crypto::jose::{JwsHeader, sign_es256};
use medvault_crypto::{CodeKind, RecoveryCode, random_fill, sha256};
use medvault_store::{CredentialIssue, PatientCredentialRowV1, Store, StoreError};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::did_web::DidWeb;
use crate::issuer::{IssuerKeyError, IssuerKeys};
use crate::request::{RequestError, RequestPolicy, verify_credential_request};
use crate::status_list::{STATUS_LIST_BITS, StatusPurpose, encode_status_list};
use crate::vc::{
    CREDENTIAL_CONTEXT, CREDENTIAL_TYPES, CredentialBody, CredentialSubject,
    PatientCredentialClaims, Physician, StatusEntry,
};

/// The `typ` of credentials and status lists (JOSE-secured VCs): a
/// device-key JWS (`JWT` requests, `vp+jwt` presentations) never passes as one.
pub const CREDENTIAL_TYP: &str = "vc+jwt";

/// What issuance may do.
#[derive(Debug, Clone)]
pub struct IssuancePolicy {
    /// The checks on requests.
    pub request: RequestPolicy,
    /// The credentials' `aud`: the relying party (data controller).
    pub audience: String,
    /// How long a credential is valid.
    pub lifetime: Duration,
    /// How long a signed status list may be cached.
    pub status_list_lifetime: Duration,
}

/// A freshly issued credential.
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    /// The server's id of it (for status changes).
    pub id: String,
    /// The JWT, for the holder.
    pub jwt: String,
    /// The issuing institution.
    pub institution: Uid,
    /// When it expires.
    pub expires_at: OffsetDateTime,
}

/// Why issuance or a status change was refused.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request itself is bad.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Only patients hold Patient Credentials.
    #[error("only a patient can request a Patient Credential")]
    NotAPatient,
    /// The code is unknown, used, expired or not this patient's.
    #[error("the code is unknown, used or expired")]
    Code,
    /// The request's `jti` was used already.
    #[error("the request's jti was used already (replay)")]
    Replay,
    /// No such credential of this institution, or it is revoked.
    #[error("no such credential, or it is revoked for good")]
    NotFound,
    /// Only the issuing institution changes a credential's status.
    #[error("only an institution manages Patient Credentials")]
    NotAnInstitution,
    /// The issuer key could not be used.
    #[error(transparent)]
    Key(#[from] IssuerKeyError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing, randomness or encoding failed.
    #[error("issuance failed: {0}")]
    Internal(&'static str),
    /// The audit trail could not be written.
    #[error("could not audit: {0}")]
    Audit(String),
}

/// The status an institution sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialStatus {
    /// Valid.
    Active,
    /// Temporarily invalid.
    Suspended,
    /// Invalid for good.
    Revoked,
}

impl CredentialStatus {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
        }
    }

    /// Reads [`Self::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Suspended, Self::Revoked]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// Issues Patient Credentials for institutions.
#[derive(Debug, Clone)]
pub struct CredentialIssuer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditTrail>,
    keys: IssuerKeys,
    names: DidWeb,
    policy: IssuancePolicy,
    lists: Arc<Mutex<HashMap<(Uid, StatusPurpose), SignedList>>>,
}

/// A signed status list, reused while its content and key are unchanged.
#[derive(Debug, Clone)]
struct SignedList {
    set: Vec<i64>,
    kid: String,
    jwt: String,
    signed_at: OffsetDateTime,
}

/// How long a signed status list is handed out again unchanged: the list
/// endpoint is public, and signing (plus compressing 16 KiB) on every GET
/// would let anyone spend the server's CPU. A change of the list's content
/// is signed at once.
const LIST_REUSE: Duration = Duration::seconds(60);

fn random_hex(bytes: usize) -> Result<String, IssueError> {
    let mut buffer = vec![0u8; bytes];
    random_fill(&mut buffer).map_err(|_| IssueError::Internal("random"))?;
    Ok(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn random_index() -> Result<i64, IssueError> {
    let mut buffer = [0u8; 8];
    random_fill(&mut buffer).map_err(|_| IssueError::Internal("random"))?;
    let bits = u64::try_from(STATUS_LIST_BITS).map_err(|_| IssueError::Internal("size"))?;
    i64::try_from(u64::from_le_bytes(buffer) % bits).map_err(|_| IssueError::Internal("index"))
}

impl CredentialIssuer {
    /// The issuer; `names` gives the institutions' DIDs and list URLs.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditTrail>,
        keys: IssuerKeys,
        names: DidWeb,
        policy: IssuancePolicy,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            keys,
            names,
            policy,
            lists: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The did:web names in use.
    pub fn names(&self) -> &DidWeb {
        &self.names
    }

    /// The policy in force.
    pub fn policy(&self) -> &IssuancePolicy {
        &self.policy
    }

    async fn kind(&self, uid: &str) -> Result<Option<ParticipantKind>, StoreError> {
        Ok(self
            .store
            .participant(uid)
            .await?
            .and_then(|row| ParticipantKind::parse(&row.kind)))
    }

    /// Issues a credential to the session's patient for `request` (a compact
    /// JWS of spec 003's request).
    pub async fn issue(
        &self,
        session: &Session,
        request: &str,
    ) -> Result<IssuedCredential, IssueError> {
        let now = self.clock.now();
        let request = verify_credential_request(request, now, &self.policy.request)?;
        let patient = session.uid.to_string();
        if self.kind(&patient).await? != Some(ParticipantKind::Patient) {
            return Err(IssueError::NotAPatient);
        }
        let code =
            RecoveryCode::parse(CodeKind::Tan, &request.code).map_err(|_| IssueError::Code)?;
        let code_hash = sha256(code.display().as_bytes());
        let proofing = self
            .store
            .peek_credential_code(&code_hash, &patient, now)
            .await?
            .ok_or(IssueError::Code)?;
        let institution: Uid = proofing
            .institution_uid
            .parse()
            .map_err(|_| IssueError::Internal("stored institution uid"))?;
        let institution_row = self
            .store
            .participant(&proofing.institution_uid)
            .await?
            .ok_or(IssueError::Internal("proofing institution is gone"))?;
        let (kid, key) = self.keys.signing_key(institution).await?;
        let expires_at = now + self.policy.lifetime;
        // Publish the key at least as long as the credential lives, before
        // the credential exists: extending a publication is harmless.
        self.keys.signed_until(&kid, expires_at).await?;
        let id = random_hex(16)?;
        let did = self.names.institution(institution);
        let mut header = JwsHeader::es256(CREDENTIAL_TYP);
        header.kid = Some(kid.clone());
        for _ in 0..4 {
            let index = random_index()?;
            let status = |purpose: StatusPurpose| {
                let list = self.names.status_list(institution, purpose.as_str());
                StatusEntry {
                    id: format!("{list}#{index}"),
                    kind: "BitstringStatusListEntry".to_owned(),
                    status_purpose: purpose.as_str().to_owned(),
                    status_list_index: index.to_string(),
                    status_list_credential: list,
                }
            };
            let claims = PatientCredentialClaims {
                iss: did.clone(),
                sub: request.sub.clone(),
                aud: json!(self.policy.audience),
                iat: now.unix_timestamp(),
                nbf: Some(now.unix_timestamp()),
                exp: expires_at.unix_timestamp(),
                jti: request.jti.clone(),
                vc: CredentialBody {
                    context: CREDENTIAL_CONTEXT.iter().map(|c| (*c).to_owned()).collect(),
                    types: CREDENTIAL_TYPES.iter().map(|t| (*t).to_owned()).collect(),
                    credential_subject: CredentialSubject {
                        id: Some(request.sub.clone()),
                        physician: Physician {
                            kind: "primary".to_owned(),
                            name: institution_row.display_name.clone().unwrap_or_default(),
                            address: json!({
                                "id": did,
                                "url": self.names.url(&format!("api/v1/participants/{institution}")),
                            }),
                        },
                    },
                    credential_status: vec![
                        status(StatusPurpose::Revocation),
                        status(StatusPurpose::Suspension),
                    ],
                },
            };
            let jwt =
                sign_es256(&header, &claims, &key).map_err(|_| IssueError::Internal("sign"))?;
            let row = PatientCredentialRowV1 {
                id: id.clone(),
                institution_uid: proofing.institution_uid.clone(),
                patient_uid: patient.clone(),
                proofing_id: proofing.id.clone(),
                subject: request.sub.clone(),
                jti: request.jti.clone(),
                kid: kid.clone(),
                status_index: index,
                key_protection: request.key_protection.as_str().to_owned(),
                client_id: request.client_id.clone(),
                issued_at: now,
                expires_at,
                status: CredentialStatus::Active.as_str().to_owned(),
                status_changed_at: None,
            };
            match self
                .store
                .issue_patient_credential(&code_hash, &row, request.valid_until, now)
                .await?
            {
                CredentialIssue::Issued => {
                    // The credential is stored: the holder must get it even if
                    // the audit trail cannot be written now (a lost credential
                    // would strand them: the code is used). The failure is
                    // reported in the operational log.
                    if let Err(error) = self
                        .audit(
                            &patient,
                            &patient,
                            "patient_credential.issued",
                            &[
                                ("pc_id", id.as_str()),
                                ("issuer_uid", proofing.institution_uid.as_str()),
                                ("key_protection", request.key_protection.as_str()),
                            ],
                        )
                        .await
                    {
                        tracing::error!(%error, "patient credential issued but not audited");
                    }
                    return Ok(IssuedCredential {
                        id,
                        jwt,
                        institution,
                        expires_at,
                    });
                }
                CredentialIssue::CodeRefused => return Err(IssueError::Code),
                CredentialIssue::Replay => return Err(IssueError::Replay),
                CredentialIssue::IndexTaken => {}
            }
        }
        Err(IssueError::Internal("no free status index"))
    }

    /// The credentials the session's participant holds (a patient) or has
    /// issued (an institution).
    pub async fn list(&self, session: &Session) -> Result<Vec<PatientCredentialRowV1>, IssueError> {
        let uid = session.uid.to_string();
        Ok(match self.kind(&uid).await? {
            Some(ParticipantKind::Institution(_)) => {
                self.store.patient_credentials(None, Some(&uid)).await?
            }
            _ => self.store.patient_credentials(Some(&uid), None).await?,
        })
    }

    /// The session's institution sets the status of a credential it issued;
    /// effective at once (IAL2 sessions resting on it end, the verifier and
    /// the status lists see it). Revocation is final.
    pub async fn set_status(
        &self,
        session: &Session,
        credential_id: &str,
        status: CredentialStatus,
    ) -> Result<(), IssueError> {
        let institution = session.uid.to_string();
        if !matches!(
            self.kind(&institution).await?,
            Some(ParticipantKind::Institution(_))
        ) {
            return Err(IssueError::NotAnInstitution);
        }
        let credential = self
            .store
            .patient_credential(credential_id)
            .await?
            .filter(|row| row.institution_uid == institution)
            .ok_or(IssueError::NotFound)?;
        if !self
            .store
            .set_patient_credential_status(
                credential_id,
                &institution,
                status.as_str(),
                self.clock.now(),
            )
            .await?
        {
            return Err(IssueError::NotFound);
        }
        self.audit(
            &institution,
            &credential.patient_uid,
            match status {
                CredentialStatus::Active => "patient_credential.reinstated",
                CredentialStatus::Suspended => "patient_credential.suspended",
                CredentialStatus::Revoked => "patient_credential.revoked",
            },
            &[("pc_id", credential_id)],
        )
        .await
    }

    /// The institution's signed status list for `purpose`: a JWT (VC 1.1
    /// JWT encoding) of a `BitstringStatusListCredential`, valid for
    /// [`IssuancePolicy::status_list_lifetime`].
    pub async fn status_list(
        &self,
        institution: Uid,
        purpose: StatusPurpose,
    ) -> Result<Option<String>, IssueError> {
        if !matches!(
            self.kind(&institution.to_string()).await?,
            Some(ParticipantKind::Institution(_))
        ) {
            return Ok(None);
        }
        let now = self.clock.now();
        let set = self
            .store
            .patient_credential_indexes(&institution.to_string(), purpose.marks(), now)
            .await?;
        // An institution that never issued has no list (and a read makes no key).
        let Some((kid, key)) = self.keys.existing_signing_key(institution).await? else {
            return Ok(None);
        };
        let cached = self
            .lists
            .lock()
            .ok()
            .and_then(|lists| lists.get(&(institution, purpose)).cloned());
        if let Some(cached) = cached
            && cached.set == set
            && cached.kid == kid
            && now >= cached.signed_at
            && now < cached.signed_at + LIST_REUSE
        {
            return Ok(Some(cached.jwt));
        }
        let encoded = encode_status_list(&set).map_err(|_| IssueError::Internal("status list"))?;
        let list = self.names.status_list(institution, purpose.as_str());
        let expires_at = now + self.policy.status_list_lifetime;
        self.keys.signed_until(&kid, expires_at).await?;
        let mut header = JwsHeader::es256(CREDENTIAL_TYP);
        header.kid = Some(kid);
        let claims = json!({
            "iss": self.names.institution(institution),
            "sub": list,
            "iat": now.unix_timestamp(),
            "nbf": now.unix_timestamp(),
            "exp": expires_at.unix_timestamp(),
            "vc": {
                "@context": ["https://www.w3.org/2018/credentials/v1", "https://www.w3.org/ns/credentials/status/v1"],
                "type": ["VerifiableCredential", "BitstringStatusListCredential"],
                "credentialSubject": {
                    "id": format!("{list}#list"),
                    "type": "BitstringStatusList",
                    "statusPurpose": purpose.as_str(),
                    "encodedList": encoded,
                },
            },
        });
        let jwt = sign_es256(&header, &claims, &key).map_err(|_| IssueError::Internal("sign"))?;
        if let Ok(mut lists) = self.lists.lock() {
            lists.insert(
                (institution, purpose),
                SignedList {
                    set,
                    kid: header.kid.clone().unwrap_or_default(),
                    jwt: jwt.clone(),
                    signed_at: now,
                },
            );
        }
        Ok(Some(jwt))
    }

    async fn audit(
        &self,
        actor: &str,
        subject: &str,
        action: &'static str,
        fields: &[(&'static str, &str)],
    ) -> Result<(), IssueError> {
        let mut detail = AuditDetail::new();
        for (name, value) in fields {
            detail = detail
                .with(name, *value)
                .map_err(|error| IssueError::Audit(error.to_string()))?;
        }
        self.audit
            .append(
                AuditEvent::new(
                    actor.to_owned(),
                    subject.to_owned(),
                    action,
                    Outcome::Success,
                )
                .with_detail(detail),
            )
            .await
            .map(|_| ())
            .map_err(|error| IssueError::Audit(error.to_string()))
    }
}
