//! The device's credential request: an ES256 JWS whose payload carries the
//! fields of spec 003 (`grant_type`, `sub`, `client_id`, `key_protection`,
//! `code`, `iat`, `exp`, `jti`, `jwk`), checked here without I/O; the caller
//! then redeems the code and records the `jti` in the database.
//!
//! The time window departs from the document's example, whose `exp` is a year
//! after `iat`: a request is a one-shot message, so it may live at most
//! [`RequestPolicy::max_lifetime`] (5 minutes by default), with
//! [`RequestPolicy::clock_skew`] (60 s) allowed either way.

use medvault_crypto::did::{P256PublicKey, PublicJwk, resolve_did};
use medvault_crypto::jose::UnverifiedJws;
use serde::Deserialize;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// The claims of a credential request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestClaims {
    /// `authorization_code`.
    pub grant_type: String,
    /// The device key's DID (`did:key` or `did:jwk`).
    pub sub: String,
    /// The user agent; must be trusted.
    pub client_id: String,
    /// Where the device key lives.
    pub key_protection: String,
    /// The one-time code from the proofing institution.
    pub code: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Unique id (replay protection).
    pub jti: String,
    /// The device key as a JWK (must be the key `sub` names).
    #[serde(default)]
    pub jwk: Option<PublicJwk>,
}

/// Where the device key lives, as the user agent declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProtection {
    /// In software on the device.
    Software,
    /// On a PKCS#11 token.
    Pkcs11,
    /// In a secure element / TEE of the device.
    SecureElement,
}

impl KeyProtection {
    /// Reads the wire spelling (`software`, `pkcs11`, `secure-element`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "software" => Some(Self::Software),
            "pkcs11" => Some(Self::Pkcs11),
            "secure-element" => Some(Self::SecureElement),
            _ => None,
        }
    }

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::Pkcs11 => "pkcs11",
            Self::SecureElement => "secure-element",
        }
    }
}

/// What a request may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPolicy {
    /// The `client_id`s of trusted user agents.
    pub trusted_clients: Vec<String>,
    /// The longest `exp - iat`.
    pub max_lifetime: Duration,
    /// Clock difference allowed either way.
    pub clock_skew: Duration,
}

impl RequestPolicy {
    /// The defaults (5 minutes, 60 s skew) for `trusted_clients`.
    pub fn new(trusted_clients: Vec<String>) -> Self {
        Self {
            trusted_clients,
            max_lifetime: Duration::minutes(5),
            clock_skew: Duration::seconds(60),
        }
    }
}

/// A request whose signature, key binding, client and times checked out.
#[derive(Debug)]
pub struct CredentialRequest {
    /// The device key the credential will be bound to.
    pub device_key: P256PublicKey,
    /// Its DID (the credential's `sub`).
    pub sub: String,
    /// The trusted user agent.
    pub client_id: String,
    /// Where the key lives.
    pub key_protection: KeyProtection,
    /// The code to redeem.
    pub code: Zeroizing<String>,
    /// The request's id (record it in the replay cache).
    pub jti: String,
    /// Until when the request could be valid (keep the `jti` that long).
    pub valid_until: OffsetDateTime,
}

/// Why a request was refused; each says what, never echoing a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a compact ES256 JWS, or a claim is missing or malformed.
    #[error("malformed credential request: {0}")]
    Malformed(&'static str),
    /// `sub` is not a `did:key` or `did:jwk` of a P-256 key in its one
    /// spelling (no fragment; a `did:jwk` with `kty`, `crv`, `x`, `y` only).
    #[error(
        "sub must be a did:key or did:jwk (kty, crv, x, y only) of a P-256 key, without a fragment"
    )]
    Subject,
    /// `jwk` (claim or header) is not the key `sub` names.
    #[error("jwk is not the key that sub names")]
    KeyMismatch,
    /// The signature does not verify with that key.
    #[error("the signature does not verify with the key of sub")]
    Signature,
    /// `grant_type` is not `authorization_code`.
    #[error("grant_type must be authorization_code")]
    GrantType,
    /// `client_id` is not a trusted user agent.
    #[error("client_id is not a trusted user agent")]
    UntrustedClient,
    /// `key_protection` is unknown.
    #[error("key_protection must be software, pkcs11 or secure-element")]
    KeyProtection,
    /// `iat`/`exp` outside the allowed window.
    #[error("iat/exp outside the allowed window: {0}")]
    Time(&'static str),
}

/// Whether `sub` is the one spelling of its key: the `did:key`, or a
/// `did:jwk` whose JWK holds `kty`, `crv`, `x` and `y` only; no fragment. A
/// holder can then put no chosen text into the credential, and one key has
/// one subject.
fn canonical_subject(sub: &str, key: &P256PublicKey) -> bool {
    use base64::Engine as _;
    if sub.contains('#') {
        return false;
    }
    if sub.starts_with("did:key:") {
        return sub == key.did_key();
    }
    let Some(encoded) = sub.strip_prefix("did:jwk:") else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).is_ok_and(
        |object| {
            object.len() == 4
                && ["kty", "crv", "x", "y"]
                    .iter()
                    .all(|name| object.get(*name).is_some_and(serde_json::Value::is_string))
        },
    )
}

/// Checks a credential request at `now` under `policy`.
pub fn verify_credential_request(
    compact: &str,
    now: OffsetDateTime,
    policy: &RequestPolicy,
) -> Result<CredentialRequest, RequestError> {
    let jws = UnverifiedJws::parse(compact).map_err(|_| RequestError::Malformed("jws"))?;
    // The key comes from `sub`; the unverified claims are read only to find it.
    let unverified: RequestClaims = jws
        .claims_unverified()
        .map_err(|_| RequestError::Malformed("claims"))?;
    // Only a device-key JWS typed as a plain JWT (or untyped) is a request: a
    // presentation (`vp+jwt`) or a credential (`vc+jwt`) never passes as one.
    if !matches!(jws.header().typ.as_deref(), None | Some("JWT")) {
        return Err(RequestError::Malformed("typ"));
    }
    let device_key = resolve_did(&unverified.sub).map_err(|_| RequestError::Subject)?;
    if !canonical_subject(&unverified.sub, &device_key) {
        return Err(RequestError::Subject);
    }
    for jwk in [jws.header().jwk.as_ref(), unverified.jwk.as_ref()]
        .into_iter()
        .flatten()
    {
        let named = P256PublicKey::from_jwk(jwk).map_err(|_| RequestError::KeyMismatch)?;
        if named != device_key {
            return Err(RequestError::KeyMismatch);
        }
    }
    let claims: RequestClaims = jws
        .verify(&device_key)
        .map_err(|_| RequestError::Signature)?
        .claims;
    if claims.grant_type != "authorization_code" {
        return Err(RequestError::GrantType);
    }
    if !policy.trusted_clients.contains(&claims.client_id) {
        return Err(RequestError::UntrustedClient);
    }
    let key_protection =
        KeyProtection::parse(&claims.key_protection).ok_or(RequestError::KeyProtection)?;
    let bounded = |text: &str, max: usize| {
        !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_graphic())
    };
    if !bounded(&claims.jti, 128) || claims.jti.len() < 16 {
        return Err(RequestError::Malformed("jti"));
    }
    if !bounded(&claims.code, 64) {
        return Err(RequestError::Malformed("code"));
    }
    let now_s = now.unix_timestamp();
    let skew = policy.clock_skew.whole_seconds();
    if claims.iat > now_s.saturating_add(skew) {
        return Err(RequestError::Time("iat is in the future"));
    }
    if claims.exp <= now_s.saturating_sub(skew) {
        return Err(RequestError::Time("expired"));
    }
    if claims.exp <= claims.iat
        || claims.exp.saturating_sub(claims.iat) > policy.max_lifetime.whole_seconds()
    {
        return Err(RequestError::Time("exp too far after iat"));
    }
    let valid_until = OffsetDateTime::from_unix_timestamp(claims.exp.saturating_add(skew))
        .map_err(|_| RequestError::Time("exp out of range"))?;
    Ok(CredentialRequest {
        device_key,
        sub: claims.sub,
        client_id: claims.client_id,
        key_protection,
        code: Zeroizing::new(claims.code),
        jti: claims.jti,
        valid_until,
    })
}
