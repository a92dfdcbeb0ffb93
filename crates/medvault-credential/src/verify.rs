//! Verification of a presented Patient Credential.
//!
//! The checks, in order: a compact JWS with `alg` ES256 and a `kid`; `iss` a
//! `did:web` of an institution registered here (the trust list: this
//! server's institutions); `kid` one of that institution's published issuer
//! keys; the signature; `aud` the configured relying party; `exp`, `nbf` and
//! `iat` (with the configured clock skew); `vc.type` naming
//! `VerifiableCredential`, `PatientCredential` and `IAL2`; `sub` a DID of a
//! P-256 key; and the status: the credential must be one this server issued
//! (same issuer, index, `jti`, subject and key) and be active now. The status
//! is read from the database, so a revocation is effective at once.

use std::sync::Arc;

use medvault_core::{Clock, ParticipantKind, Uid};
use medvault_crypto::did::{P256PublicKey, resolve_did};
use medvault_crypto::jose::UnverifiedJws;
use medvault_store::{Store, StoreError};
use time::{Duration, OffsetDateTime};

use crate::did_web::DidWeb;
use crate::status_list::StatusPurpose;
use crate::vc::{CREDENTIAL_TYPES, PatientCredentialClaims, audience_contains};

/// Why a credential was refused; each names the failed check, never a value.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not a compact ES256 JWS with a `kid`, or a claim is malformed.
    #[error("malformed credential: {0}")]
    Malformed(&'static str),
    /// `iss` is not an institution of this server's trust list.
    #[error("the issuer is not a trusted institution")]
    UntrustedIssuer,
    /// `kid` is not a published key of the issuer.
    #[error("the signing key is not a published key of the issuer")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Signature,
    /// `aud` does not name this relying party.
    #[error("the credential is for another audience")]
    Audience,
    /// `exp`/`nbf`/`iat` say it is not valid now.
    #[error("the credential is not valid now: {0}")]
    Time(&'static str),
    /// `vc.type` is not a Patient Credential at IAL2.
    #[error("not a PatientCredential at IAL2")]
    Type,
    /// The credential is revoked.
    #[error("the credential is revoked")]
    Revoked,
    /// The credential is suspended.
    #[error("the credential is suspended")]
    Suspended,
    /// No credential of the issuer matches (not issued here, or altered).
    #[error("the credential is unknown to its issuer")]
    Unknown,
    /// Stored data does not have the expected shape.
    #[error("stored credential data is malformed: {0}")]
    Corrupt(&'static str),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A credential that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedCredential {
    /// The server's id of it.
    pub id: String,
    /// The issuing institution.
    pub institution: Uid,
    /// The patient it was issued to.
    pub patient: Uid,
    /// The holder's device key DID (`sub`).
    pub subject: String,
    /// The device key.
    pub device_key: P256PublicKey,
    /// Its `jti`.
    pub jti: String,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// Its claims.
    pub claims: PatientCredentialClaims,
}

/// Verifies Patient Credentials issued by this server's institutions.
#[derive(Debug, Clone)]
pub struct CredentialVerifier {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    names: DidWeb,
    audience: String,
    clock_skew: Duration,
}

/// The largest credential accepted (a credential is about 1.5 KiB).
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;

impl CredentialVerifier {
    /// A verifier for credentials addressed to `audience`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        names: DidWeb,
        audience: String,
        clock_skew: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            names,
            audience,
            clock_skew,
        }
    }

    /// The audience credentials (and presentations) must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The allowed clock difference.
    pub fn clock_skew(&self) -> Duration {
        self.clock_skew
    }

    /// Checks `compact` now.
    pub async fn verify(&self, compact: &str) -> Result<VerifiedCredential, VerifyError> {
        if compact.len() > MAX_CREDENTIAL_LEN {
            return Err(VerifyError::Malformed("too long"));
        }
        let jws = UnverifiedJws::parse(compact).map_err(|_| VerifyError::Malformed("jws"))?;
        if jws.header().typ.as_deref() != Some(crate::issuance::CREDENTIAL_TYP) {
            return Err(VerifyError::Malformed("typ must be vc+jwt"));
        }
        let kid = jws
            .header()
            .kid
            .clone()
            .ok_or(VerifyError::Malformed("kid"))?;
        let unverified: PatientCredentialClaims = jws
            .claims_unverified()
            .map_err(|_| VerifyError::Malformed("claims"))?;
        let institution = self
            .names
            .institution_uid(&unverified.iss)
            .ok_or(VerifyError::UntrustedIssuer)?;
        let institution_text = institution.to_string();
        let trusted = self
            .store
            .participant(&institution_text)
            .await?
            .and_then(|row| ParticipantKind::parse(&row.kind))
            .is_some_and(|kind| matches!(kind, ParticipantKind::Institution(_)));
        if !trusted {
            return Err(VerifyError::UntrustedIssuer);
        }
        let now = self.clock.now();
        let key = self
            .store
            .published_issuer_keys(Some(&institution_text), now)
            .await?
            .into_iter()
            .find(|row| row.kid == kid)
            .ok_or(VerifyError::UnknownKey)?;
        let jwk = serde_json::from_str(&key.public_jwk)
            .map_err(|_| VerifyError::Corrupt("issuer key"))?;
        let issuer_key =
            P256PublicKey::from_jwk(&jwk).map_err(|_| VerifyError::Corrupt("issuer key"))?;
        let claims: PatientCredentialClaims = jws
            .verify(&issuer_key)
            .map_err(|_| VerifyError::Signature)?
            .claims;
        if !audience_contains(&claims.aud, &self.audience) {
            return Err(VerifyError::Audience);
        }
        let now_s = now.unix_timestamp();
        let skew = self.clock_skew.whole_seconds();
        if claims.exp <= now_s.saturating_sub(skew) {
            return Err(VerifyError::Time("expired"));
        }
        if claims.nbf.unwrap_or(claims.iat) > now_s.saturating_add(skew)
            || claims.iat > now_s.saturating_add(skew)
        {
            return Err(VerifyError::Time("not yet valid"));
        }
        if !CREDENTIAL_TYPES
            .iter()
            .all(|wanted| claims.vc.types.iter().any(|kind| kind == wanted))
        {
            return Err(VerifyError::Type);
        }
        let device_key = resolve_did(&claims.sub).map_err(|_| VerifyError::Malformed("sub"))?;
        let entry = claims
            .vc
            .credential_status
            .iter()
            .find(|entry| {
                entry.status_purpose == StatusPurpose::Revocation.as_str()
                    && entry.status_list_credential
                        == self
                            .names
                            .status_list(institution, StatusPurpose::Revocation.as_str())
            })
            .ok_or(VerifyError::Malformed("credentialStatus"))?;
        let index: i64 = entry
            .status_list_index
            .parse()
            .map_err(|_| VerifyError::Malformed("statusListIndex"))?;
        let row = self
            .store
            .patient_credential_at(&institution_text, index)
            .await?
            .filter(|row| row.jti == claims.jti && row.subject == claims.sub && row.kid == kid)
            .ok_or(VerifyError::Unknown)?;
        match row.status.as_str() {
            "active" => {}
            "suspended" => return Err(VerifyError::Suspended),
            _ => return Err(VerifyError::Revoked),
        }
        if row.expires_at <= now {
            return Err(VerifyError::Time("expired"));
        }
        Ok(VerifiedCredential {
            id: row.id,
            institution,
            patient: row
                .patient_uid
                .parse()
                .map_err(|_| VerifyError::Corrupt("patient uid"))?,
            subject: claims.sub.clone(),
            device_key,
            jti: claims.jti.clone(),
            expires_at: row.expires_at,
            claims,
        })
    }
}
