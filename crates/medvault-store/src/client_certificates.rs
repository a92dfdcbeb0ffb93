//! Storage of registered client certificates (the mTLS allow-list).
//!
//! A certificate is registered by its exact DER bytes; its SHA-256 fingerprint is
//! the key. Whoever owns it (a DiGA's `client_id`, an operator label) is recorded
//! with it. The allow-list every server node enforces is loaded from here.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// One registered client certificate (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificateRowV1 {
    /// SHA-256 of `der` (32 bytes).
    pub fingerprint: Vec<u8>,
    /// The certificate, exactly as registered.
    pub der: Vec<u8>,
    /// Who the certificate authenticates (e.g. `urn:diga:bfarm:12345`).
    pub owner: String,
    /// When it was registered.
    pub registered_at: OffsetDateTime,
}

/// The registered client certificates.
#[async_trait]
pub trait ClientCertificateStore: Send + Sync {
    /// Registers a certificate. [`StoreError::Conflict`] if the fingerprint is
    /// registered already.
    async fn insert_client_certificate(
        &self,
        certificate: &ClientCertificateRowV1,
    ) -> Result<(), StoreError>;

    /// Removes a certificate; `true` if it was registered.
    async fn remove_client_certificate(&self, fingerprint: &[u8]) -> Result<bool, StoreError>;

    /// The certificate with this fingerprint, if registered.
    async fn client_certificate(
        &self,
        fingerprint: &[u8],
    ) -> Result<Option<ClientCertificateRowV1>, StoreError>;

    /// All registered certificates, ordered by fingerprint.
    async fn client_certificates(&self) -> Result<Vec<ClientCertificateRowV1>, StoreError>;
}
