//! Registration and lookup of participants.

use std::sync::Arc;

use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{Clock, DisplayName, ParticipantKind, Uid, WorkingCredentialKind};
use medvault_crypto::{ParticipantCa, RootPublicKey};
use medvault_store::{ParticipantRowV1, Store, StoreError};

use crate::enrolment::{Enrolment, EnrolmentError};

/// What a new participant brings: the UID their client drew, their kind, a name
/// if they are an institution or a professional, the public key of the Root
/// Credential their client made, and their first working credentials.
///
/// The client draws the UID (a random UUID v4) because it binds the UID into
/// every wrapped copy of the Root Credential before the server sees any; the
/// server refuses a UID that exists, so none is ever handed out twice.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The UID the client drew.
    pub uid: Uid,
    /// The kind of participant.
    pub kind: ParticipantKind,
    /// Required for institutions and professionals, refused for patients.
    pub display_name: Option<DisplayName>,
    /// The Root Credential's public key.
    pub root_public_key: RootPublicKey,
    /// The first working credentials: exactly one SuperPIN, at most one
    /// password and at most one TAN batch, any number of key-holding ones.
    pub credentials: Vec<Enrolment>,
}

/// A participant as the directory shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The global UID.
    pub uid: Uid,
    /// The kind.
    pub kind: ParticipantKind,
    /// The public name (never for patients).
    pub display_name: Option<DisplayName>,
    /// The key documents for this participant are sealed to.
    pub root_public_key: RootPublicKey,
    /// The participant CA's certificate binding that key to the UID: a client
    /// checks it against its pinned CA before sealing anything to the key.
    pub root_key_certificate: String,
    /// The X.509 certificates (DER) of the participant's active working
    /// credentials: what their signatures verify against.
    pub working_credential_certificates: Vec<Vec<u8>>,
}

/// Why a registration or lookup failed, named for what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// An institution or professional came without a display name.
    #[error("institutions and health care professionals need a display name")]
    NameRequired,
    /// A patient came with a display name: their directory entry must name nothing.
    #[error("a patient's directory entry holds no name")]
    NameForbidden,
    /// The certificate for the Root Credential could not be made; nothing was registered.
    #[error("the root key certificate could not be issued")]
    Certificate,
    /// The set of first credentials breaks a rule (no SuperPIN, two passwords, ...).
    #[error("invalid first credentials: {0}")]
    Credentials(&'static str),
    /// A working credential was refused.
    #[error(transparent)]
    Enrolment(#[from] EnrolmentError),
    /// The UID, a credential id or the email is taken; nothing was registered.
    #[error("{0} is taken")]
    Taken(&'static str),
    /// The database failed; nothing was registered.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The participant was stored but the audit entry could not be written.
    #[error("registration could not be audited: {0}")]
    Audit(String),
    /// A stored row does not have the shape the directory requires.
    #[error("stored participant is malformed: {0}")]
    Corrupt(&'static str),
}

/// How long a Root Credential certificate is valid (five years; the root key
/// itself lives as long as the account).
const ROOT_KEY_CERTIFICATE_LIFETIME_SECONDS: i64 = 5 * 365 * 86_400;

/// The participant directory.
#[derive(Debug, Clone)]
pub struct Directory {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditTrail>,
    ca: Arc<ParticipantCa>,
}

impl Directory {
    /// A directory over `store`, auditing into `audit`, certifying Root
    /// Credentials with `ca`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditTrail>,
        ca: Arc<ParticipantCa>,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            ca,
        }
    }

    /// Registers a participant with their first working credentials, all or nothing.
    pub async fn register(&self, registration: Registration) -> Result<Uid, RegistrationError> {
        match (
            registration.kind.has_display_name(),
            &registration.display_name,
        ) {
            (true, None) => return Err(RegistrationError::NameRequired),
            (false, Some(_)) => return Err(RegistrationError::NameForbidden),
            _ => {}
        }
        check_first_credentials(&registration.credentials)?;
        let uid = registration.uid;
        let now = self.clock.now();
        let issued_at = now.unix_timestamp();
        let root_key_certificate = self
            .ca
            .certify_root_key(
                &uid.to_string(),
                registration.kind.as_str(),
                &registration.root_public_key,
                issued_at,
                issued_at.saturating_add(ROOT_KEY_CERTIFICATE_LIFETIME_SECONDS),
            )
            .map_err(|_| RegistrationError::Certificate)?;
        let credentials = registration
            .credentials
            .into_iter()
            .map(|enrolment| enrolment.into_rows(uid, &self.ca, now))
            .collect::<Result<Vec<_>, _>>()?;
        let row = ParticipantRowV1 {
            uid: uid.to_string(),
            kind: registration.kind.as_str().to_owned(),
            display_name: registration
                .display_name
                .as_ref()
                .map(|name| name.as_str().to_owned()),
            root_public_key: registration.root_public_key.as_bytes().to_vec(),
            root_key_certificate,
            registered_at: now,
        };
        self.store
            .register_participant(&row, &credentials)
            .await
            .map_err(|error| match error {
                StoreError::Conflict(what) => RegistrationError::Taken(what),
                other => RegistrationError::Store(other),
            })?;
        let kinds: Vec<&str> = credentials
            .iter()
            .map(|credential| credential.credential.kind.as_str())
            .collect();
        let ids: Vec<&str> = credentials
            .iter()
            .map(|credential| credential.credential.id.as_str())
            .collect();
        let detail = AuditDetail::new()
            .with("kind", registration.kind.as_str())
            .and_then(|detail| detail.with("wc_kinds", kinds.join(",")))
            .and_then(|detail| detail.with("wc_ids", ids.join(",")))
            .map_err(|error| RegistrationError::Audit(error.to_string()))?;
        let event = AuditEvent::new(
            uid.to_string(),
            uid.to_string(),
            "participant.registered",
            Outcome::Success,
        )
        .with_detail(detail);
        self.audit
            .append(event)
            .await
            .map_err(|error| RegistrationError::Audit(error.to_string()))?;
        Ok(uid)
    }

    /// The directory entry of `uid`, if registered.
    pub async fn entry(&self, uid: Uid) -> Result<Option<DirectoryEntry>, RegistrationError> {
        let Some(row) = self.store.participant(&uid.to_string()).await? else {
            return Ok(None);
        };
        let kind = ParticipantKind::parse(&row.kind).ok_or(RegistrationError::Corrupt("kind"))?;
        let display_name = row
            .display_name
            .as_deref()
            .map(DisplayName::parse)
            .transpose()
            .map_err(|_| RegistrationError::Corrupt("display name"))?;
        let root_public_key = RootPublicKey::from_bytes(&row.root_public_key)
            .map_err(|_| RegistrationError::Corrupt("root public key"))?;
        let working_credential_certificates = self
            .store
            .working_credentials(&uid.to_string())
            .await?
            .into_iter()
            .map(|credential| credential.certificate)
            .collect();
        Ok(Some(DirectoryEntry {
            uid,
            kind,
            display_name,
            root_public_key,
            root_key_certificate: row.root_key_certificate,
            working_credential_certificates,
        }))
    }
}

/// Exactly one SuperPIN (the recovery path), at most one password and one TAN
/// batch, and no credential id twice.
fn check_first_credentials(credentials: &[Enrolment]) -> Result<(), RegistrationError> {
    let count = |kind: WorkingCredentialKind| {
        credentials
            .iter()
            .filter(|credential| credential.kind == kind)
            .count()
    };
    if count(WorkingCredentialKind::SuperPin) != 1 {
        return Err(RegistrationError::Credentials(
            "exactly one SuperPIN is generated at registration",
        ));
    }
    if count(WorkingCredentialKind::Password) > 1 || count(WorkingCredentialKind::Tan) > 1 {
        return Err(RegistrationError::Credentials(
            "at most one password and one TAN batch",
        ));
    }
    if credentials.len() > MAX_FIRST_CREDENTIALS {
        return Err(RegistrationError::Credentials("too many credentials"));
    }
    let mut ids: Vec<Uid> = credentials.iter().map(|credential| credential.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != credentials.len() {
        return Err(RegistrationError::Credentials("credential ids repeat"));
    }
    Ok(())
}

/// The most working credentials one registration may bring.
const MAX_FIRST_CREDENTIALS: usize = 8;
