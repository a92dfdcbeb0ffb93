//! Storage of participants and their directory entries (accounts and PKI).
//!
//! A participant row is never deleted, so a UID can never be handed out twice
//! (the primary key would refuse it). The database also enforces that a
//! patient's row holds no display name.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// One participant and its directory entry (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRowV1 {
    /// The global UID (canonical text form).
    pub uid: String,
    /// The kind, as `medvault_core::ParticipantKind::as_str` spells it.
    pub kind: String,
    /// The public name (institutions and professionals only; `None` for patients).
    pub display_name: Option<String>,
    /// The Root Credential's public key (raw X25519, 32 bytes).
    pub root_public_key: Vec<u8>,
    /// The participant CA's certificate binding that key to the UID.
    pub root_key_certificate: String,
    /// When the participant registered.
    pub registered_at: OffsetDateTime,
}

/// The participants.
#[async_trait]
pub trait ParticipantStore: Send + Sync {
    /// Stores a new participant. [`StoreError::Conflict`] if the UID exists.
    async fn insert_participant(&self, participant: &ParticipantRowV1) -> Result<(), StoreError>;

    /// The participant with this UID, if any.
    async fn participant(&self, uid: &str) -> Result<Option<ParticipantRowV1>, StoreError>;
}
