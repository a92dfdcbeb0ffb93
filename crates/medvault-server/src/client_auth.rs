//! Mutual TLS client authentication for the HDDT listener.
//!
//! A client certificate is accepted when its exact DER bytes (by SHA-256
//! fingerprint) are on the live [`AllowList`], it is valid now, and it carries key
//! usage `digitalSignature` and extended key usage `clientAuth`. Self-signed
//! certificates are fine: there is no chain building, the registration is the
//! trust (HDDT digest §6).
//!
//! The check runs twice: in the TLS handshake ([`AllowListVerifier`], so an
//! unknown certificate never gets a connection) and again on every request
//! ([`AllowList::authenticate`]), because a resumed TLS session skips the
//! handshake check and a long-lived HTTP/2 connection outlives a removal.
//! A client without a certificate is let through the handshake (public metadata
//! lives on the same listener) and refused by every route that is not public.
//!
//! Handlers never see TLS types: the peer certificate becomes a plain
//! [`ClientCertificate`] once per connection.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest;
use std::time::Duration;

use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{CertificateFingerprint, Clock};
use medvault_store::{ClientCertificateRowV1, Store, StoreError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

/// A client certificate as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The DER bytes, exactly as presented.
    pub der: Vec<u8>,
    /// SHA-256 of `der`.
    pub fingerprint: CertificateFingerprint,
    /// The subject distinguished name, RFC 4514 text.
    pub subject: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    key_usage_ok: bool,
}

/// Why a client certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientCertError {
    /// Not X.509 DER.
    #[error("the client certificate cannot be parsed")]
    Malformed,
    /// Not registered (or no longer).
    #[error("the client certificate is not registered")]
    NotRegistered,
    /// Outside its validity period.
    #[error("the client certificate is not valid at this time")]
    NotValidNow,
    /// Missing digitalSignature or clientAuth.
    #[error(
        "the client certificate lacks key usage digitalSignature or extended key usage clientAuth"
    )]
    WrongKeyUsage,
    /// The request came without a certificate.
    #[error("a client certificate is required")]
    Missing,
    /// The allow-list could not be refreshed from the database for longer than
    /// its maximum age: nobody is let in until it can (fail closed).
    #[error("the client-certificate allow-list is stale")]
    StaleAllowList,
}

impl ClientCertificate {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, ClientCertError> {
        let (rest, certificate) =
            x509_parser::parse_x509_certificate(der).map_err(|_| ClientCertError::Malformed)?;
        if !rest.is_empty() {
            return Err(ClientCertError::Malformed);
        }
        let digital_signature =
            matches!(certificate.key_usage(), Ok(Some(usage)) if usage.value.digital_signature());
        let client_auth =
            matches!(certificate.extended_key_usage(), Ok(Some(usage)) if usage.value.client_auth);
        let instant = |time: x509_parser::time::ASN1Time| {
            OffsetDateTime::from_unix_timestamp(time.timestamp())
                .map_err(|_| ClientCertError::Malformed)
        };
        Ok(Self {
            der: der.to_vec(),
            fingerprint: fingerprint(der),
            subject: certificate.subject().to_string(),
            not_before: instant(certificate.validity().not_before)?,
            not_after: instant(certificate.validity().not_after)?,
            key_usage_ok: digital_signature && client_auth,
        })
    }

    /// The certificate's own rules: valid at `now`, right key usages.
    pub fn check_usable(&self, now: OffsetDateTime) -> Result<(), ClientCertError> {
        if now < self.not_before || now > self.not_after {
            return Err(ClientCertError::NotValidNow);
        }
        if !self.key_usage_ok {
            return Err(ClientCertError::WrongKeyUsage);
        }
        Ok(())
    }
}

/// SHA-256 of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> CertificateFingerprint {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
    CertificateFingerprint::from_digest(bytes)
}

/// A client that passed the per-request check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedClient {
    /// Its certificate.
    pub certificate: Arc<ClientCertificate>,
    /// Who it was registered for.
    pub owner: String,
}

/// The live set of registered client certificates, shared by the TLS verifier
/// and the per-request check, reloaded from the store on a schedule and updated
/// at once by changes made through it.
#[derive(Debug, Clone)]
pub struct AllowList {
    entries: Arc<RwLock<Snapshot>>,
    max_age: time::Duration,
    audit: Arc<AuditTrail>,
    // Serializes reloads with local changes: without it a reload that read the
    // table just before a registration committed would overwrite the cache with
    // the stale rows and drop the new certificate until the next reload.
    writers: Arc<tokio::sync::Mutex<()>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl AllowList {
    /// An allow-list backed by `store`, empty until [`reload`](Self::reload).
    /// Changes made through it are audited in `audit`. When it has not been
    /// reloaded successfully for `max_age`, it refuses every certificate.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditTrail>,
        max_age: Duration,
    ) -> Self {
        Self {
            entries: Arc::default(),
            max_age: time::Duration::try_from(max_age).unwrap_or(time::Duration::MAX),
            audit,
            writers: Arc::default(),
            store,
            clock,
        }
    }

    /// Re-reads every registered certificate from the store.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let _writer = self.writers.lock().await;
        let rows = self.store.client_certificates().await?;
        let fresh: HashMap<_, _> = rows
            .into_iter()
            .filter_map(|row| {
                let digest: [u8; 32] = row.fingerprint.as_slice().try_into().ok()?;
                Some((CertificateFingerprint::from_digest(digest), row.owner))
            })
            .collect();
        let count = fresh.len();
        let refreshed_at = Some(self.clock.now());
        *self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Snapshot {
            owners: fresh,
            refreshed_at,
        };
        Ok(count)
    }

    /// Registers a certificate for `owner` (durably, then in this process at once).
    pub async fn register(
        &self,
        der: &[u8],
        owner: &str,
        actor: &str,
    ) -> Result<CertificateFingerprint, RegisterError> {
        let certificate = ClientCertificate::parse(der)?;
        certificate.check_usable(self.clock.now())?;
        let _writer = self.writers.lock().await;
        self.store
            .insert_client_certificate(&ClientCertificateRowV1 {
                fingerprint: certificate.fingerprint.as_bytes().to_vec(),
                der: der.to_vec(),
                owner: owner.to_owned(),
                registered_at: self.clock.now(),
            })
            .await?;
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .owners
            .insert(certificate.fingerprint, owner.to_owned());
        // A change that cannot be audited is undone: no unaudited access grant.
        if let Err(error) = self
            .audit_change(
                actor,
                "mtls.certificate_registered",
                &certificate.fingerprint,
                owner,
            )
            .await
        {
            let _ = self
                .store
                .remove_client_certificate(certificate.fingerprint.as_bytes())
                .await;
            self.entries
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .owners
                .remove(&certificate.fingerprint);
            return Err(error);
        }
        Ok(certificate.fingerprint)
    }

    /// Removes a certificate (durably, then in this process at once): it stops
    /// working on the next request, also on open connections; other nodes drop it
    /// at their next reload.
    pub async fn remove(
        &self,
        fingerprint: &CertificateFingerprint,
        actor: &str,
    ) -> Result<bool, RegisterError> {
        let _writer = self.writers.lock().await;
        let previous = self
            .store
            .client_certificate(fingerprint.as_bytes())
            .await?;
        let removed = self
            .store
            .remove_client_certificate(fingerprint.as_bytes())
            .await?;
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .owners
            .remove(fingerprint);
        if let (true, Some(row)) = (removed, previous) {
            // A removal that cannot be audited is undone, like a registration.
            if let Err(error) = self
                .audit_change(actor, "mtls.certificate_removed", fingerprint, &row.owner)
                .await
            {
                if self.store.insert_client_certificate(&row).await.is_ok() {
                    self.entries
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .owners
                        .insert(*fingerprint, row.owner.clone());
                }
                return Err(error);
            }
        }
        Ok(removed)
    }

    async fn audit_change(
        &self,
        actor: &str,
        event_type: &str,
        fingerprint: &CertificateFingerprint,
        owner: &str,
    ) -> Result<(), RegisterError> {
        let detail = AuditDetail::new()
            .with("fingerprint", fingerprint.to_hex())
            .map_err(|error| RegisterError::Audit(error.to_string()))?;
        let event = AuditEvent::new(actor, owner, event_type, Outcome::Success).with_detail(detail);
        self.audit
            .append(event)
            .await
            .map_err(|error| RegisterError::Audit(error.to_string()))?;
        Ok(())
    }

    /// The per-request check.
    pub fn authenticate(
        &self,
        certificate: Option<&Arc<ClientCertificate>>,
    ) -> Result<AuthenticatedClient, ClientCertError> {
        let certificate = certificate.ok_or(ClientCertError::Missing)?;
        let now = self.clock.now();
        certificate.check_usable(now)?;
        let snapshot = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let fresh = snapshot
            .refreshed_at
            // A clock that went backwards counts as stale too: fail closed until
            // the next reload.
            .is_some_and(|refreshed_at| now >= refreshed_at && now - refreshed_at <= self.max_age);
        if !fresh {
            return Err(ClientCertError::StaleAllowList);
        }
        let owner = snapshot
            .owners
            .get(&certificate.fingerprint)
            .cloned()
            .ok_or(ClientCertError::NotRegistered)?;
        Ok(AuthenticatedClient {
            certificate: certificate.clone(),
            owner,
        })
    }
}

/// The cached allow-list and when it was last read from the store.
#[derive(Debug, Default)]
struct Snapshot {
    owners: HashMap<CertificateFingerprint, String>,
    refreshed_at: Option<OffsetDateTime>,
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The certificate itself is unusable.
    #[error(transparent)]
    Certificate(#[from] ClientCertError),
    /// The store refused (e.g. registered already).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change was made but could not be audited.
    #[error("the change could not be audited: {0}")]
    Audit(String),
}

/// A client certificate refused during a handshake (sent to be audited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRefusal {
    /// SHA-256 of the certificate, or `-` when it did not parse.
    pub fingerprint: String,
    /// Why.
    pub reason: String,
}

/// The rustls verifier that consults the [`AllowList`] during the handshake.
#[derive(Debug)]
pub struct AllowListVerifier {
    allow_list: AllowList,
    algorithms: WebPkiSupportedAlgorithms,
    refusals: Option<tokio::sync::mpsc::Sender<HandshakeRefusal>>,
}

impl AllowListVerifier {
    /// A verifier over `allow_list`, checking handshake signatures with `algorithms`.
    pub fn new(allow_list: AllowList, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self {
            allow_list,
            algorithms,
            refusals: None,
        }
    }

    /// Also reports each refused certificate to `refusals` (never blocking:
    /// when the channel is full the refusal is only logged).
    pub fn reporting_to(mut self, refusals: tokio::sync::mpsc::Sender<HandshakeRefusal>) -> Self {
        self.refusals = Some(refusals);
        self
    }
}

impl ClientCertVerifier for AllowListVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Public metadata shares the listener; routes refuse certificate-less requests.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients send whichever certificate they hold.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let refused = |error: ClientCertError| {
            tracing::info!(reason = %error, "client certificate refused at handshake");
            if let Some(refusals) = &self.refusals {
                let _ = refusals.try_send(HandshakeRefusal {
                    fingerprint: fingerprint(end_entity.as_ref()).to_hex(),
                    reason: error.to_string(),
                });
            }
            rustls::Error::InvalidCertificate(match error {
                ClientCertError::NotValidNow => CertificateError::Expired,
                _ => CertificateError::ApplicationVerificationFailure,
            })
        };
        let certificate = ClientCertificate::parse(end_entity).map_err(refused)?;
        self.allow_list
            .authenticate(Some(&Arc::new(certificate)))
            .map_err(refused)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
