//! Registration and lookup of participants.

use std::sync::Arc;

use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{Clock, DisplayName, ParticipantKind, Uid};
use medvault_crypto::{ParticipantCa, RootPublicKey};
use medvault_store::{ParticipantRowV1, Store, StoreError};

/// What a new participant brings: their kind, a name if they are an institution
/// or a professional, and the public key of the Root Credential their client made.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The kind of participant.
    pub kind: ParticipantKind,
    /// Required for institutions and professionals, refused for patients.
    pub display_name: Option<DisplayName>,
    /// The Root Credential's public key.
    pub root_public_key: RootPublicKey,
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

/// How many fresh UIDs registration tries before giving up (a collision of
/// 122 random bits does not happen; a broken random source might).
const UID_ATTEMPTS: usize = 3;

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

    /// Registers a participant and returns their new UID.
    pub async fn register(&self, registration: Registration) -> Result<Uid, RegistrationError> {
        match (
            registration.kind.has_display_name(),
            &registration.display_name,
        ) {
            (true, None) => return Err(RegistrationError::NameRequired),
            (false, Some(_)) => return Err(RegistrationError::NameForbidden),
            _ => {}
        }
        for _ in 0..UID_ATTEMPTS {
            let uid = Uid::generate();
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
            match self.store.insert_participant(&row).await {
                Ok(()) => {
                    let detail = AuditDetail::new()
                        .with("kind", registration.kind.as_str())
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
                    return Ok(uid);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(RegistrationError::Store(StoreError::Conflict(
            "participant",
        )))
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
        Ok(Some(DirectoryEntry {
            uid,
            kind,
            display_name,
            root_public_key,
            root_key_certificate: row.root_key_certificate,
        }))
    }
}
