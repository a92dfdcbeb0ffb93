//! The holder's IAL2 login: the server hands out a fresh nonce; the device
//! signs a presentation (a JWS, ES256, with the device key) over the nonce,
//! the audience and its Patient Credential; the server verifies the
//! credential, that the credential's `sub` key signed the presentation, that
//! the credential was issued to the logged-in patient and that the nonce is
//! fresh, unused and theirs, and then replaces the session by one marked
//! IAL2.
//!
//! The presentation is presented within a session opened by a working
//! credential: the device key proves possession and the credential proves
//! the identity proofing, while the working credential unlocks the root key
//! (a session without one could read no document). The IAL2 session ends
//! when the credential is revoked, suspended or expires.
//!
//! Presentation: header `typ` `vp+jwt`; payload `iss` (the holder's DID = the credential's `sub`),
//! `aud` (the server's audience), `nonce`, `iat`, `exp` (at most 5 minutes
//! after `iat`), `vp` {`type` ["VerifiablePresentation"],
//! `verifiableCredential` [the credential JWT]}.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use medvault_accounts::{Accounts, LoginError, Session, SessionToken};
use medvault_core::Clock;
use medvault_crypto::jose::UnverifiedJws;
use medvault_crypto::{random_fill, sha256};
use medvault_store::{Store, StoreError};
use serde::Deserialize;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::vc::audience_contains;
use crate::verify::{CredentialVerifier, MAX_CREDENTIAL_LEN, VerifiedCredential, VerifyError};

/// The `typ` of a presentation's JWS header.
pub const PRESENTATION_TYP: &str = "vp+jwt";

/// The longest `exp - iat` of a presentation.
pub const MAX_PRESENTATION_LIFETIME: Duration = Duration::minutes(5);

/// A fresh nonce for one presentation.
#[derive(Debug, Clone)]
pub struct PresentationChallenge {
    /// The nonce to sign (base64url of 32 random bytes).
    pub nonce: String,
    /// The `aud` the presentation must name.
    pub audience: String,
    /// When the nonce stops working.
    pub expires_at: OffsetDateTime,
}

/// Why a presentation was refused.
#[derive(Debug, thiserror::Error)]
pub enum PresentError {
    /// Not a compact ES256 JWS of the expected shape.
    #[error("malformed presentation: {0}")]
    Malformed(&'static str),
    /// The credential inside failed verification.
    #[error(transparent)]
    Credential(VerifyError),
    /// The account holds no active Patient Credential.
    #[error("this account holds no active Patient Credential")]
    NoCredential,
    /// The credential was issued to someone else.
    #[error("the credential was not issued to this account")]
    NotYours,
    /// The presentation is not signed by the credential's `sub` key.
    #[error("the presentation is not signed by the credential's key")]
    Signature,
    /// `aud` does not name this server.
    #[error("the presentation is for another audience")]
    Audience,
    /// `iat`/`exp` outside the allowed window.
    #[error("the presentation is not valid now: {0}")]
    Time(&'static str),
    /// The nonce is unknown, used, expired or someone else's.
    #[error("the nonce is unknown, used or expired")]
    Nonce,
    /// The session failed.
    #[error(transparent)]
    Login(LoginError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The random source failed.
    #[error("internal: {0}")]
    Internal(&'static str),
}

#[derive(Debug, Deserialize)]
struct PresentationClaims {
    iss: String,
    aud: Value,
    nonce: String,
    iat: i64,
    exp: i64,
    vp: PresentationBody,
}

#[derive(Debug, Deserialize)]
struct PresentationBody {
    #[serde(rename = "type")]
    types: Vec<String>,
    #[serde(rename = "verifiableCredential")]
    verifiable_credential: Vec<String>,
}

/// IAL2 logins by presentation.
#[derive(Debug, Clone)]
pub struct PresentationLogin {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    accounts: Accounts,
    verifier: CredentialVerifier,
    nonce_lifetime: Duration,
}

impl PresentationLogin {
    /// The service; nonces live `nonce_lifetime`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        accounts: Accounts,
        verifier: CredentialVerifier,
        nonce_lifetime: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            accounts,
            verifier,
            nonce_lifetime,
        }
    }

    /// A fresh nonce for the session's account, which must hold an active
    /// Patient Credential; it replaces the account's earlier nonces (so an
    /// account has one live nonce, and nonces cannot pile up).
    pub async fn challenge(
        &self,
        session: &Session,
    ) -> Result<PresentationChallenge, PresentError> {
        if !self
            .store
            .holds_patient_credential(&session.uid.to_string(), self.clock.now())
            .await?
        {
            return Err(PresentError::NoCredential);
        }
        let mut bytes = [0u8; 32];
        random_fill(&mut bytes).map_err(|_| PresentError::Internal("random source"))?;
        let nonce = URL_SAFE_NO_PAD.encode(bytes);
        let expires_at = self.clock.now() + self.nonce_lifetime;
        self.store
            .insert_presentation_nonce(
                &sha256(nonce.as_bytes()),
                &session.uid.to_string(),
                expires_at,
            )
            .await?;
        Ok(PresentationChallenge {
            nonce,
            audience: self.verifier.audience().to_owned(),
            expires_at,
        })
    }

    /// Checks `presentation` for the session of `token` and replaces that
    /// session by an IAL2 one; returns the new token and session.
    pub async fn present(
        &self,
        token: &str,
        presentation: &str,
    ) -> Result<(SessionToken, Session, VerifiedCredential), PresentError> {
        let session = self
            .accounts
            .authenticate(token)
            .await
            .map_err(PresentError::Login)?;
        if presentation.len() > MAX_CREDENTIAL_LEN * 2 {
            return Err(PresentError::Malformed("too long"));
        }
        let jws = UnverifiedJws::parse(presentation).map_err(|_| PresentError::Malformed("jws"))?;
        if jws.header().typ.as_deref() != Some(PRESENTATION_TYP) {
            return Err(PresentError::Malformed("typ must be vp+jwt"));
        }
        let unverified: PresentationClaims = jws
            .claims_unverified()
            .map_err(|_| PresentError::Malformed("claims"))?;
        if !unverified
            .vp
            .types
            .iter()
            .any(|kind| kind == "VerifiablePresentation")
        {
            return Err(PresentError::Malformed("vp.type"));
        }
        let [credential] = unverified.vp.verifiable_credential.as_slice() else {
            return Err(PresentError::Malformed(
                "vp.verifiableCredential must hold one credential",
            ));
        };
        let verified = self
            .verifier
            .verify(credential)
            .await
            .map_err(PresentError::Credential)?;
        if verified.patient != session.uid {
            return Err(PresentError::NotYours);
        }
        let claims: PresentationClaims = jws
            .verify(&verified.device_key)
            .map_err(|_| PresentError::Signature)?
            .claims;
        if claims.iss != verified.subject {
            return Err(PresentError::Malformed("iss must be the credential's sub"));
        }
        if !audience_contains(&claims.aud, self.verifier.audience()) {
            return Err(PresentError::Audience);
        }
        let now = self.clock.now().unix_timestamp();
        let skew = self.verifier.clock_skew().whole_seconds();
        if claims.iat > now.saturating_add(skew) {
            return Err(PresentError::Time("iat is in the future"));
        }
        if claims.exp <= now.saturating_sub(skew) {
            return Err(PresentError::Time("expired"));
        }
        if claims.exp <= claims.iat
            || claims.exp.saturating_sub(claims.iat) > MAX_PRESENTATION_LIFETIME.whole_seconds()
        {
            return Err(PresentError::Time("exp too far after iat"));
        }
        if claims.nonce.is_empty() || claims.nonce.len() > 128 {
            return Err(PresentError::Nonce);
        }
        let (new_token, session) = self
            .accounts
            .open_ial2_session(token, &sha256(claims.nonce.as_bytes()), &verified.id)
            .await
            .map_err(|error| match error {
                LoginError::Challenge => PresentError::Nonce,
                other => PresentError::Login(other),
            })?;
        Ok((new_token, session, verified))
    }
}
