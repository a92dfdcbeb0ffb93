//! Institutions' credential issuer keys: ES256 (P-256) keys the server holds
//! for each institution, wrapped at rest under the server's issuer key-
//! encryption secret (`<data_dir>/keys/issuer-kek.bin`), published as a JWKS.
//! Rotation makes a new signing key; the old one stays published until the
//! credentials it signed have expired ([`IssuerKeys::signed_until`]).

use std::sync::Arc;

use medvault_core::{Clock, Uid};
use medvault_crypto::did::{P256PublicKey, PublicJwk};
use medvault_crypto::{KeyEncryptionKey, SoftwareKey, WrapBinding, WrappedKey, random_fill};
use medvault_store::{IssuerKeyRowV1, Store, StoreError};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Why an issuer key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IssuerKeyError {
    /// A key could not be made, wrapped or unwrapped (a wrong issuer secret).
    #[error("issuer key: {0}")]
    Crypto(&'static str),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The issuer keys of all institutions.
#[derive(Clone)]
pub struct IssuerKeys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    secret: Arc<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuerKeys(<secret redacted>)")
    }
}

fn binding(institution: &str, kid: &str) -> WrapBinding {
    WrapBinding::new(institution, &format!("issuer-key:{kid}"), 0)
}

impl IssuerKeys {
    /// Keys wrapped under `secret` (at least 32 random bytes).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        secret: Zeroizing<Vec<u8>>,
    ) -> Result<Self, IssuerKeyError> {
        if secret.len() < 32 {
            return Err(IssuerKeyError::Crypto("the issuer secret is too short"));
        }
        Ok(Self {
            store,
            clock,
            secret: Arc::new(secret),
        })
    }

    /// Makes a new signing key for `institution`, retiring the current one.
    pub async fn rotate(&self, institution: Uid) -> Result<String, IssuerKeyError> {
        let key = SoftwareKey::generate().map_err(|_| IssuerKeyError::Crypto("generate"))?;
        let public = P256PublicKey::from_uncompressed(&key.public_key())
            .map_err(|_| IssuerKeyError::Crypto("public key"))?;
        let mut kid = [0u8; 12];
        random_fill(&mut kid).map_err(|_| IssuerKeyError::Crypto("random"))?;
        let kid: String = kid.iter().map(|byte| format!("{byte:02x}")).collect();
        let institution_text = institution.to_string();
        let binding = binding(&institution_text, &kid);
        let kek = KeyEncryptionKey::derive(&self.secret, &binding)
            .map_err(|_| IssuerKeyError::Crypto("derive"))?;
        let wrapped = kek
            .wrap_signing_key(&key, &binding)
            .map_err(|_| IssuerKeyError::Crypto("wrap"))?;
        let mut jwk = public
            .to_jwk()
            .ok_or(IssuerKeyError::Crypto("public key"))?;
        jwk.kid = Some(kid.clone());
        jwk.alg = Some("ES256".into());
        jwk.use_ = Some("sig".into());
        let now = self.clock.now();
        self.store
            .rotate_issuer_key(
                &IssuerKeyRowV1 {
                    kid: kid.clone(),
                    institution_uid: institution_text,
                    public_jwk: serde_json::to_string(&jwk)
                        .map_err(|_| IssuerKeyError::Crypto("jwk"))?,
                    wrapped_private_key: wrapped.to_bytes(),
                    created_at: now,
                    retired_at: None,
                    publish_until: now,
                },
                now,
            )
            .await?;
        Ok(kid)
    }

    /// The institution's current signing key (made on first use) and its `kid`.
    pub async fn signing_key(
        &self,
        institution: Uid,
    ) -> Result<(String, SoftwareKey), IssuerKeyError> {
        if let Some(found) = self.existing_signing_key(institution).await? {
            return Ok(found);
        }
        match self.rotate(institution).await {
            // Another node made the first key at the same moment: use theirs.
            Ok(_) | Err(IssuerKeyError::Store(StoreError::Conflict(_))) => {}
            Err(error) => return Err(error),
        }
        self.existing_signing_key(institution)
            .await?
            .ok_or(IssuerKeyError::Crypto("no current key"))
    }

    /// The institution's current signing key, if it has one (never makes one).
    pub async fn existing_signing_key(
        &self,
        institution: Uid,
    ) -> Result<Option<(String, SoftwareKey)>, IssuerKeyError> {
        let Some(row) = self
            .store
            .current_issuer_key(&institution.to_string())
            .await?
        else {
            return Ok(None);
        };
        let binding = binding(&row.institution_uid, &row.kid);
        let kek = KeyEncryptionKey::derive(&self.secret, &binding)
            .map_err(|_| IssuerKeyError::Crypto("derive"))?;
        let wrapped = WrappedKey::from_bytes(&row.wrapped_private_key)
            .map_err(|_| IssuerKeyError::Crypto("stored key"))?;
        let key = kek
            .unwrap_signing_key(&wrapped, &binding)
            .map_err(|_| IssuerKeyError::Crypto("unwrap (wrong issuer secret?)"))?;
        Ok(Some((row.kid, key)))
    }

    /// Keeps `kid` published until `until` (the expiry of a credential it signed).
    pub async fn signed_until(
        &self,
        kid: &str,
        until: OffsetDateTime,
    ) -> Result<(), IssuerKeyError> {
        Ok(self.store.extend_issuer_key(kid, until).await?)
    }

    /// The published keys (all institutions, or one), as JWKs with `kid`.
    pub async fn jwks(&self, institution: Option<Uid>) -> Result<Vec<PublicJwk>, IssuerKeyError> {
        let institution = institution.map(|uid| uid.to_string());
        self.store
            .published_issuer_keys(institution.as_deref(), self.clock.now())
            .await?
            .into_iter()
            .map(|row| {
                serde_json::from_str(&row.public_jwk)
                    .map_err(|_| IssuerKeyError::Crypto("stored jwk"))
            })
            .collect()
    }
}
