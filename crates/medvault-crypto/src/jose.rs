//! Compact JWS (RFC 7515) with ES256 only, in two states: an
//! [`UnverifiedJws`] has been parsed and bounded but its claims are not
//! available; only [`UnverifiedJws::verify`] with a P-256 key turns it into a
//! [`VerifiedJws`] whose claims can be read. `alg` other than `ES256` (`none`,
//! `HS256`, RSA, ...) and any `crit` header are refused at parse time, so no
//! algorithm confusion is possible.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::CryptoError;
use crate::did::{P256PublicKey, PublicJwk};
use crate::ec::SoftwareKey;

/// The longest compact JWS accepted.
pub const MAX_JWS_LEN: usize = 16 * 1024;

/// The protected header of a JWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwsHeader {
    /// Always `ES256`.
    pub alg: String,
    /// The media type of the whole JWS, e.g. `JWT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// The signing key's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The signing key itself (a request signed by a device key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<PublicJwk>,
    /// Critical extensions: any is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<serde_json::Value>,
}

impl JwsHeader {
    /// An `ES256` header of type `typ`.
    pub fn es256(typ: &str) -> Self {
        Self {
            alg: "ES256".into(),
            typ: Some(typ.to_owned()),
            kid: None,
            jwk: None,
            crit: None,
        }
    }
}

/// A parsed JWS whose signature has not been checked.
#[derive(Debug, Clone)]
pub struct UnverifiedJws {
    header: JwsHeader,
    signing_input: String,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// A JWS whose ES256 signature verified; its claims are `C`.
#[derive(Debug, Clone)]
pub struct VerifiedJws<C> {
    /// The protected header.
    pub header: JwsHeader,
    /// The claims.
    pub claims: C,
}

fn decode(part: &str) -> Result<Vec<u8>, CryptoError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| CryptoError::Malformed)
}

impl UnverifiedJws {
    /// Parses a compact JWS: three unpadded base64url parts, a JSON header
    /// with `alg` `ES256` and no `crit`, a 64-byte signature.
    pub fn parse(compact: &str) -> Result<Self, CryptoError> {
        if compact.len() > MAX_JWS_LEN {
            return Err(CryptoError::Malformed);
        }
        let mut parts = compact.split('.');
        let (Some(header_part), Some(payload_part), Some(signature_part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Malformed);
        };
        let header: JwsHeader =
            serde_json::from_slice(&decode(header_part)?).map_err(|_| CryptoError::Malformed)?;
        if header.alg != "ES256" || header.crit.is_some() {
            return Err(CryptoError::Malformed);
        }
        let signature = decode(signature_part)?;
        if signature.len() != 64 {
            return Err(CryptoError::Malformed);
        }
        Ok(Self {
            header,
            signing_input: format!("{header_part}.{payload_part}"),
            payload: decode(payload_part)?,
            signature,
        })
    }

    /// The header (to find the key: `kid`, `jwk`).
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The claims before verification, only to find the key that must have
    /// signed them (e.g. a request's `sub`); never to act on.
    pub fn claims_unverified<C: DeserializeOwned>(&self) -> Result<C, CryptoError> {
        serde_json::from_slice(&self.payload).map_err(|_| CryptoError::Malformed)
    }

    /// Checks the signature with `key` and reads the claims.
    pub fn verify<C: DeserializeOwned>(
        self,
        key: &P256PublicKey,
    ) -> Result<VerifiedJws<C>, CryptoError> {
        key.verify_es256(self.signing_input.as_bytes(), &self.signature)?;
        let claims = serde_json::from_slice(&self.payload).map_err(|_| CryptoError::Malformed)?;
        Ok(VerifiedJws {
            header: self.header,
            claims,
        })
    }
}

/// Signs `claims` under `header` (whose `alg` must be `ES256`) with a key
/// held elsewhere (a token): `sign` gets the JWS signing input and returns
/// the ES256 signature in its fixed `r || s` form (64 bytes).
pub fn sign_es256_with<C: Serialize, E>(
    header: &JwsHeader,
    claims: &C,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Result<String, E>, CryptoError> {
    if header.alg != "ES256" {
        return Err(CryptoError::Malformed);
    }
    let header_part =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).map_err(|_| CryptoError::Malformed)?);
    let payload_part =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| CryptoError::Malformed)?);
    let signing_input = format!("{header_part}.{payload_part}");
    let signature = match sign(signing_input.as_bytes()) {
        Ok(signature) => signature,
        Err(error) => return Ok(Err(error)),
    };
    if signature.len() != 64 {
        return Err(CryptoError::Malformed);
    }
    Ok(Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    )))
}

/// Signs `claims` under `header` (whose `alg` must be `ES256`) with `key`.
pub fn sign_es256<C: Serialize>(
    header: &JwsHeader,
    claims: &C,
    key: &SoftwareKey,
) -> Result<String, CryptoError> {
    if header.alg != "ES256" {
        return Err(CryptoError::Malformed);
    }
    let header_part =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).map_err(|_| CryptoError::Malformed)?);
    let payload_part =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| CryptoError::Malformed)?);
    let signing_input = format!("{header_part}.{payload_part}");
    let signature = key.sign_jose(signing_input.as_bytes())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Claims {
        sub: String,
        jti: String,
    }

    fn claims() -> Claims {
        Claims {
            sub: "did:key:zDn".into(),
            jti: "1".into(),
        }
    }

    fn signed() -> (SoftwareKey, P256PublicKey, String) {
        let key = SoftwareKey::generate().unwrap();
        let public = P256PublicKey::from_uncompressed(&key.public_key()).unwrap();
        let jws = sign_es256(&JwsHeader::es256("JWT"), &claims(), &key).unwrap();
        (key, public, jws)
    }

    fn part(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
    }

    #[test]
    fn a_signed_jws_verifies_and_yields_its_claims() {
        let (_, public, jws) = signed();
        let verified: VerifiedJws<Claims> =
            UnverifiedJws::parse(&jws).unwrap().verify(&public).unwrap();
        assert_eq!(verified.claims, claims());
        assert_eq!(verified.header.typ.as_deref(), Some("JWT"));
    }

    #[test]
    fn another_key_or_a_changed_part_is_refused() {
        let (_, _, jws) = signed();
        let other = SoftwareKey::generate().unwrap();
        let other = P256PublicKey::from_uncompressed(&other.public_key()).unwrap();
        assert!(
            UnverifiedJws::parse(&jws)
                .unwrap()
                .verify::<Claims>(&other)
                .is_err()
        );
        let (_, public, jws) = signed();
        let pieces: Vec<&str> = jws.split('.').collect();
        let forged_payload = part(&serde_json::json!({"sub": "did:key:zDnX", "jti": "1"}));
        let forged = format!("{}.{}.{}", pieces[0], forged_payload, pieces[2]);
        assert!(
            UnverifiedJws::parse(&forged)
                .unwrap()
                .verify::<Claims>(&public)
                .is_err()
        );
    }

    #[test]
    fn none_hmac_rsa_crit_and_malformed_are_refused_at_parse() {
        let (_, _, jws) = signed();
        let pieces: Vec<&str> = jws.split('.').collect();
        for header in [
            serde_json::json!({"alg": "none"}),
            serde_json::json!({"alg": "HS256"}),
            serde_json::json!({"alg": "RS256"}),
            serde_json::json!({"alg": "ES384"}),
            serde_json::json!({"alg": "ES256", "crit": ["exp"]}),
            serde_json::json!({"typ": "JWT"}),
        ] {
            let compact = format!("{}.{}.{}", part(&header), pieces[1], pieces[2]);
            assert_eq!(
                UnverifiedJws::parse(&compact).unwrap_err(),
                CryptoError::Malformed,
                "{header}"
            );
        }
        let unsigned = format!(
            "{}.{}.",
            part(&serde_json::json!({"alg": "none"})),
            pieces[1]
        );
        assert!(UnverifiedJws::parse(&unsigned).is_err());
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            &format!("{jws}="),
            &"A".repeat(MAX_JWS_LEN + 1),
        ] {
            assert!(UnverifiedJws::parse(bad).is_err(), "{bad:.20}");
        }
    }
}
