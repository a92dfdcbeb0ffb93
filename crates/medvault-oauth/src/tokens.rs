//! The authorization server's keys and tokens. One ES256 signing key signs
//! access tokens (`typ` `at+jwt`, RFC 9068's claims: `iss`, `sub` = Pairing
//! ID, `aud`, `exp`, `nbf`, `iat`, `jti`, `client_id`, `scope`) and refresh
//! tokens (`typ` `medvault-rt+jwt`: the grant and its rotation number in
//! `jti`). The key and the Pairing ID secret live in the database, wrapped
//! under the server's key-encryption secret, so every node signs and
//! verifies with the same ones; each node caches them. A retired signing key
//! keeps verifying for the refresh-token lifetime plus a day.
//!
//! Invariant: a token names no patient. `sub` is the Pairing ID; the `jti`
//! holds the grant's random id, which only this server can map to anything.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use medvault_core::Clock;
use medvault_crypto::did::{P256PublicKey, PublicJwk};
use medvault_crypto::jose::{JwsHeader, UnverifiedJws, sign_es256};
use medvault_crypto::{KeyEncryptionKey, SoftwareKey, WrapBinding, WrappedKey, random_fill};
use medvault_store::{ServerKeyRowV1, Store, StoreError};
use serde::{Deserialize, Serialize};
use time::Duration;
use zeroize::Zeroizing;

use crate::pairing::PairingIdKey;

/// The JOSE type of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The JOSE type of refresh tokens (never accepted as an access token).
pub const REFRESH_TOKEN_TYPE: &str = "medvault-rt+jwt";
const SIGNING: &str = "oauth-signing";
const PAIRING: &str = "pairing-secret";

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key could not be made, wrapped or unwrapped (a wrong secret).
    #[error("authorization server key: {0}")]
    Crypto(&'static str),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// The issuer (the authorization server's base URL).
    pub iss: String,
    /// The Pairing ID.
    pub sub: String,
    /// The resource server's base URL.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Not before.
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// `<grant id>.<random>`.
    pub jti: String,
    /// The DiGA.
    pub client_id: String,
    /// The granted scopes, space-separated.
    pub scope: String,
}

impl AccessClaims {
    /// The grant the token was issued under.
    pub fn grant_id(&self) -> Option<&str> {
        self.jti.split_once('.').map(|(grant, _)| grant)
    }
}

/// The claims of a refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshClaims {
    /// The issuer.
    pub iss: String,
    /// The Pairing ID.
    pub sub: String,
    /// The token endpoint.
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// `<grant id>.<generation>`.
    pub jti: String,
    /// The DiGA.
    pub client_id: String,
}

impl RefreshClaims {
    /// The grant and the rotation number.
    pub fn grant_and_generation(&self) -> Option<(&str, i64)> {
        let (grant, generation) = self.jti.rsplit_once('.')?;
        Some((grant, generation.parse().ok().filter(|g: &i64| *g > 0)?))
    }
}

/// The current signing key and its `kid`.
type CurrentKey = (String, Arc<SoftwareKey>);

/// The signing key and the verification keys, shared by all nodes through
/// the database and cached here.
#[derive(Clone)]
pub struct TokenKeys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    secret: Arc<Zeroizing<Vec<u8>>>,
    verify_window: Duration,
    current: Arc<RwLock<Option<CurrentKey>>>,
    public: Arc<RwLock<HashMap<String, P256PublicKey>>>,
    reloaded_at: Arc<RwLock<Option<time::OffsetDateTime>>>,
}

/// An unknown `kid` re-reads the keys at most this often, so tokens with
/// made-up key ids cannot turn into a database query each.
const UNKNOWN_KID_RELOAD: Duration = Duration::seconds(5);

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<secret redacted>)")
    }
}

fn binding(purpose: &str, kid: &str) -> WrapBinding {
    WrapBinding::new("hddt-authorization-server", &format!("{purpose}:{kid}"), 0)
}

fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let mut buffer = vec![0u8; bytes];
    random_fill(&mut buffer).map_err(|_| KeyError::Crypto("random"))?;
    Ok(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}

impl TokenKeys {
    /// Keys wrapped under `secret` (at least 32 bytes); a retired signing
    /// key verifies for `verify_window` after it retired.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        secret: Zeroizing<Vec<u8>>,
        verify_window: Duration,
    ) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::Crypto("the key-encryption secret is too short"));
        }
        Ok(Self {
            store,
            clock,
            secret: Arc::new(secret),
            verify_window,
            current: Arc::default(),
            public: Arc::default(),
            reloaded_at: Arc::default(),
        })
    }

    fn kek(&self, purpose: &str, kid: &str) -> Result<(KeyEncryptionKey, WrapBinding), KeyError> {
        let binding = binding(purpose, kid);
        let kek = KeyEncryptionKey::derive(&self.secret, &binding)
            .map_err(|_| KeyError::Crypto("derive"))?;
        Ok((kek, binding))
    }

    /// Makes a new signing key and retires the current one (which keeps
    /// verifying for the window). Returns the new `kid`.
    pub async fn rotate_signing_key(&self) -> Result<String, KeyError> {
        let (row, public) = self.new_signing_key()?;
        let now = self.clock.now();
        self.store
            .rotate_server_key(&row, now, now + self.verify_window)
            .await?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        self.public
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(row.kid.clone(), public);
        Ok(row.kid)
    }

    /// A new signing key, wrapped for the store, and its public key.
    fn new_signing_key(&self) -> Result<(ServerKeyRowV1, P256PublicKey), KeyError> {
        let key = SoftwareKey::generate().map_err(|_| KeyError::Crypto("generate"))?;
        let public = P256PublicKey::from_uncompressed(&key.public_key())
            .map_err(|_| KeyError::Crypto("public key"))?;
        let kid = random_hex(12)?;
        let (kek, binding) = self.kek(SIGNING, &kid)?;
        let wrapped = kek
            .wrap_signing_key(&key, &binding)
            .map_err(|_| KeyError::Crypto("wrap"))?;
        let mut jwk = public.to_jwk().ok_or(KeyError::Crypto("public key"))?;
        jwk.kid = Some(kid.clone());
        jwk.alg = Some("ES256".into());
        jwk.use_ = Some("sig".into());
        let now = self.clock.now();
        Ok((
            ServerKeyRowV1 {
                kid,
                purpose: SIGNING.to_owned(),
                public_jwk: Some(serde_json::to_string(&jwk).map_err(|_| KeyError::Crypto("jwk"))?),
                wrapped_secret: wrapped.to_bytes(),
                created_at: now,
                retired_at: None,
                publish_until: now,
            },
            public,
        ))
    }

    /// The current signing key (made on first use) and its `kid`.
    pub async fn signing_key(&self) -> Result<(String, Arc<SoftwareKey>), KeyError> {
        if let Some(found) = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
        {
            return Ok(found);
        }
        let row = match self.store.current_server_key(SIGNING).await? {
            Some(row) => row,
            None => {
                let (row, _) = self.new_signing_key()?;
                match self.store.create_server_key(&row).await {
                    // Another node made the first key at the same moment.
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                self.store
                    .current_server_key(SIGNING)
                    .await?
                    .ok_or(KeyError::Crypto("no current key"))?
            }
        };
        let (kek, binding) = self.kek(SIGNING, &row.kid)?;
        let wrapped = WrappedKey::from_bytes(&row.wrapped_secret)
            .map_err(|_| KeyError::Crypto("stored key"))?;
        let key = kek
            .unwrap_signing_key(&wrapped, &binding)
            .map_err(|_| KeyError::Crypto("unwrap (wrong key-encryption secret?)"))?;
        // The key this node signs with always verifies here too.
        if let Ok(public) = P256PublicKey::from_uncompressed(&key.public_key()) {
            self.public
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(row.kid.clone(), public);
        }
        let found = (row.kid, Arc::new(key));
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(found.clone());
        Ok(found)
    }

    /// Forgets the cached signing key (another node may have rotated).
    pub fn forget_cached(&self) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// The public key of `kid`, if it still verifies (the database is read
    /// when the cache does not know it).
    pub async fn verification_key(&self, kid: &str) -> Result<Option<P256PublicKey>, KeyError> {
        if let Some(key) = self
            .public
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(kid)
        {
            return Ok(Some(key.clone()));
        }
        // Our kids are 24 lower-case hex digits; anything else is not ours.
        if kid.len() != 24
            || !kid
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Ok(None);
        }
        let now = self.clock.now();
        let recent = self
            .reloaded_at
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| now >= at && now - at < UNKNOWN_KID_RELOAD);
        if recent {
            return Ok(None);
        }
        self.reload_public().await?;
        Ok(self
            .public
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(kid)
            .cloned())
    }

    /// Re-reads the verification keys (drops those past their window).
    pub async fn reload_public(&self) -> Result<(), KeyError> {
        let rows = self.store.server_keys(SIGNING, self.clock.now()).await?;
        let mut keys = HashMap::new();
        for row in rows {
            let jwk: PublicJwk = row
                .public_jwk
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok())
                .ok_or(KeyError::Crypto("stored public key"))?;
            let key =
                P256PublicKey::from_jwk(&jwk).map_err(|_| KeyError::Crypto("stored public key"))?;
            keys.insert(row.kid, key);
        }
        *self
            .public
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        *self
            .reloaded_at
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(self.clock.now());
        Ok(())
    }

    /// The Pairing ID key (made on first use; never rotated, since the
    /// Pairing ID must stay stable).
    pub async fn pairing_key(&self) -> Result<PairingIdKey, KeyError> {
        let row = match self.store.current_server_key(PAIRING).await? {
            Some(row) => row,
            None => {
                let kid = random_hex(12)?;
                let mut secret = Zeroizing::new(vec![0u8; 32]);
                random_fill(&mut secret).map_err(|_| KeyError::Crypto("random"))?;
                let (kek, binding) = self.kek(PAIRING, &kid)?;
                let wrapped = kek
                    .wrap_secret(&secret, &binding)
                    .map_err(|_| KeyError::Crypto("wrap"))?;
                let now = self.clock.now();
                // Never a rotation: a second secret would change every
                // Pairing ID made under the first.
                let made = self
                    .store
                    .create_server_key(&ServerKeyRowV1 {
                        kid,
                        purpose: PAIRING.to_owned(),
                        public_jwk: None,
                        wrapped_secret: wrapped.to_bytes(),
                        created_at: now,
                        retired_at: None,
                        publish_until: now,
                    })
                    .await;
                match made {
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                self.store
                    .current_server_key(PAIRING)
                    .await?
                    .ok_or(KeyError::Crypto("no pairing secret"))?
            }
        };
        let (kek, binding) = self.kek(PAIRING, &row.kid)?;
        let wrapped = WrappedKey::from_bytes(&row.wrapped_secret)
            .map_err(|_| KeyError::Crypto("stored secret"))?;
        let secret = kek
            .unwrap_secret(&wrapped, &binding)
            .map_err(|_| KeyError::Crypto("unwrap (wrong key-encryption secret?)"))?;
        PairingIdKey::new(secret).map_err(|_| KeyError::Crypto("pairing secret"))
    }

    /// Signs `claims` as a JWT of type `typ` with the current key.
    pub async fn sign<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, KeyError> {
        let (kid, key) = self.signing_key().await?;
        let mut header = JwsHeader::es256(typ);
        header.kid = Some(kid);
        sign_es256(&header, claims, &key).map_err(|_| KeyError::Crypto("sign"))
    }

    /// Verifies a JWT of type `typ` signed by a key of this server; `None`
    /// when it is malformed, of another type, or its signature or key is not ours.
    pub async fn verify<C: for<'de> Deserialize<'de>>(
        &self,
        typ: &str,
        token: &str,
    ) -> Result<Option<C>, KeyError> {
        let Ok(jws) = UnverifiedJws::parse(token) else {
            return Ok(None);
        };
        if jws.header().typ.as_deref() != Some(typ) || jws.header().jwk.is_some() {
            return Ok(None);
        }
        let Some(kid) = jws.header().kid.clone() else {
            return Ok(None);
        };
        let Some(key) = self.verification_key(&kid).await? else {
            return Ok(None);
        };
        Ok(jws.verify::<C>(&key).ok().map(|verified| verified.claims))
    }
}

/// A fresh random value of `bytes` bytes as lower-case hex (token ids, codes).
pub fn random_id(bytes: usize) -> Result<String, KeyError> {
    random_hex(bytes)
}
