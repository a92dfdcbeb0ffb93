//! Storage of institutions' credential issuer keys (Patient Credential). The
//! private key is stored wrapped under a server key-encryption key; the public
//! JWK is published. Rotated keys stay (published) until `publish_until`, so
//! credentials they signed stay verifiable until they expire.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// An issuer key (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerKeyRowV1 {
    /// The key id (`kid`).
    pub kid: String,
    /// The institution it signs for.
    pub institution_uid: String,
    /// The public JWK (JSON text).
    pub public_jwk: String,
    /// The private key (PKCS#8), wrapped under the server's issuer KEK.
    pub wrapped_private_key: Vec<u8>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it stopped signing (rotated), if it did.
    pub retired_at: Option<OffsetDateTime>,
    /// Until when it is published (the last credential it signed expires).
    pub publish_until: OffsetDateTime,
}

/// Issuer keys.
#[async_trait]
pub trait IssuerKeyStore: Send + Sync {
    /// Stores a new key and retires the institution's previous signing key
    /// at `at`, in one transaction.
    async fn rotate_issuer_key(
        &self,
        key: &IssuerKeyRowV1,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The institution's current (unretired) signing key.
    async fn current_issuer_key(
        &self,
        institution_uid: &str,
    ) -> Result<Option<IssuerKeyRowV1>, StoreError>;

    /// Extends how long a key stays published (never shortens it).
    async fn extend_issuer_key(
        &self,
        kid: &str,
        publish_until: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Every key still published at `now`, oldest first (optionally of one institution).
    async fn published_issuer_keys(
        &self,
        institution_uid: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<IssuerKeyRowV1>, StoreError>;
}
