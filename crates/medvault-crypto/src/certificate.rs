//! The server's participant CA: certificates that bind a Root Credential public
//! key to a participant's UID, verifiable offline against a pinned CA key.
//!
//! A certificate is a JWT (RFC 7519) signed ES256 (ECDSA P-256, SHA-256; BSI
//! TR-02102-1), `typ` `medvault-root-key+jwt`, with `iss` (the CA's key id),
//! `sub` (the UID), `kind` (the participant kind), `rck` (the X25519 public key,
//! base64url), `iat` and `exp`. X.509 cannot be used here with our certificate
//! library: it signs only keys of signature algorithms, and X25519 is not one.
//!
//! The SDK pins the CA's public key ([`PinnedCa`]) and checks a recipient's
//! certificate before sealing to the key in it, so a server cannot silently
//! swap a recipient's key.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::root::RootPublicKey;

/// The JOSE `typ` of a Root Credential certificate.
pub const ROOT_KEY_CERTIFICATE_TYPE: &str = "medvault-root-key+jwt";

#[derive(Debug, Serialize, Deserialize)]
struct RootKeyClaims {
    iss: String,
    sub: String,
    kind: String,
    rck: String,
    iat: i64,
    exp: i64,
}

/// The participant CA's signing key (a long-lived server secret).
pub struct ParticipantCa {
    pub(crate) pkcs8: Zeroizing<Vec<u8>>,
    pub(crate) public_key: Vec<u8>,
    pub(crate) key_id: String,
}

impl fmt::Debug for ParticipantCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParticipantCa")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ParticipantCa {
    /// A new CA key and its PKCS#8 encoding (to be stored by the caller).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| CryptoError::Encrypt)?;
        let pkcs8 = Zeroizing::new(document.as_ref().to_vec());
        Ok((Self::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// Reads a CA key from PKCS#8 (ECDSA P-256).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| CryptoError::Malformed)?;
        let public_key = key_pair.public_key().as_ref().to_vec();
        Ok(Self {
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            key_id: key_id(&public_key),
            public_key,
        })
    }

    /// What clients pin: the CA's public key.
    pub fn pinned(&self) -> PinnedCa {
        PinnedCa {
            public_key: self.public_key.clone(),
            key_id: self.key_id.clone(),
        }
    }

    /// Certifies that `root_public_key` is the Root Credential of participant `uid`
    /// (of `kind`), valid from `issued_at` to `expires_at` (Unix seconds).
    pub fn certify_root_key(
        &self,
        uid: &str,
        kind: &str,
        root_public_key: &RootPublicKey,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<String, CryptoError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(ROOT_KEY_CERTIFICATE_TYPE.to_owned());
        header.kid = Some(self.key_id.clone());
        let claims = RootKeyClaims {
            iss: self.key_id.clone(),
            sub: uid.to_owned(),
            kind: kind.to_owned(),
            rck: URL_SAFE_NO_PAD.encode(root_public_key.as_bytes()),
            iat: issued_at,
            exp: expires_at,
        };
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&self.pkcs8))
            .map_err(|_| CryptoError::Encrypt)
    }
}

/// A CA public key a client trusts (pinned at enrolment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedCa {
    /// Uncompressed SEC1 P-256 point.
    pub(crate) public_key: Vec<u8>,
    pub(crate) key_id: String,
}

/// What a verified Root Credential certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedRootKey {
    /// The participant's UID.
    pub uid: String,
    /// The participant's kind.
    pub kind: String,
    /// Their Root Credential public key: safe to seal to.
    pub root_public_key: RootPublicKey,
}

impl PinnedCa {
    /// A pinned CA from its uncompressed SEC1 P-256 public key (65 bytes).
    pub fn from_public_key(public_key: &[u8]) -> Result<Self, CryptoError> {
        if public_key.len() != 65 || public_key.first() != Some(&0x04) {
            return Err(CryptoError::Malformed);
        }
        Ok(Self {
            public_key: public_key.to_vec(),
            key_id: key_id(public_key),
        })
    }

    /// The CA's public key bytes.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The CA key's id (the `kid` of its certificates).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Verifies a Root Credential certificate for `expected_uid` at `now` (Unix
    /// seconds): signed by this CA, of the right type, not expired, for that UID.
    pub fn verify_root_key(
        &self,
        certificate: &str,
        expected_uid: &str,
        now: i64,
    ) -> Result<CertifiedRootKey, CryptoError> {
        let header =
            jsonwebtoken::decode_header(certificate).map_err(|_| CryptoError::Malformed)?;
        if header.typ.as_deref() != Some(ROOT_KEY_CERTIFICATE_TYPE)
            || header.kid.as_deref() != Some(self.key_id.as_str())
        {
            return Err(CryptoError::Decrypt);
        }
        let mut validation = Validation::new(Algorithm::ES256);
        // Time is checked below against the caller's clock, not the system's.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "sub", "iss"]
            .iter()
            .map(|claim| (*claim).to_owned())
            .collect();
        validation.set_issuer(&[self.key_id.as_str()]);
        let data = jsonwebtoken::decode::<RootKeyClaims>(
            certificate,
            &DecodingKey::from_ec_der(&self.public_key),
            &validation,
        )
        .map_err(|_| CryptoError::Decrypt)?;
        let claims = data.claims;
        if claims.sub != expected_uid || now < claims.iat || now >= claims.exp {
            return Err(CryptoError::Decrypt);
        }
        let key_bytes = URL_SAFE_NO_PAD
            .decode(claims.rck)
            .map_err(|_| CryptoError::Malformed)?;
        Ok(CertifiedRootKey {
            uid: claims.sub,
            kind: claims.kind,
            root_public_key: RootPublicKey::from_bytes(&key_bytes)?,
        })
    }
}

pub(crate) fn key_id(public_key: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key);
    URL_SAFE_NO_PAD.encode(digest.as_ref().get(..16).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::RootCredential;

    const UID: &str = "3f2c1d9e-1b7a-4c55-9a0e-2f6d8b1c4e70";
    const NOW: i64 = 1_795_000_000;

    fn issued() -> (ParticipantCa, RootCredential, String) {
        let (ca, _) = ParticipantCa::generate().unwrap();
        let credential = RootCredential::generate().unwrap();
        let certificate = ca
            .certify_root_key(
                UID,
                "patient",
                credential.public_key(),
                NOW - 10,
                NOW + 86_400,
            )
            .unwrap();
        (ca, credential, certificate)
    }

    #[test]
    fn a_certificate_verifies_against_the_pinned_ca() {
        let (ca, credential, certificate) = issued();
        let pinned = PinnedCa::from_public_key(ca.pinned().public_key()).unwrap();
        let certified = pinned.verify_root_key(&certificate, UID, NOW).unwrap();
        assert_eq!(&certified.root_public_key, credential.public_key());
        assert_eq!(certified.kind, "patient");
    }

    #[test]
    fn another_ca_uid_or_time_is_refused() {
        let (_, _, certificate) = issued();
        let (other_ca, _) = ParticipantCa::generate().unwrap();
        assert_eq!(
            other_ca.pinned().verify_root_key(&certificate, UID, NOW),
            Err(CryptoError::Decrypt)
        );
        let (ca, _, certificate) = issued();
        let pinned = ca.pinned();
        assert_eq!(
            pinned.verify_root_key(&certificate, "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", NOW),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            pinned.verify_root_key(&certificate, UID, NOW + 86_400),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            pinned.verify_root_key(&certificate, UID, NOW - 60),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn a_swapped_key_or_changed_claim_is_refused() {
        let (ca, _, certificate) = issued();
        let pinned = ca.pinned();
        let mut parts: Vec<String> = certificate.split('.').map(str::to_owned).collect();
        let payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let mut claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let attacker = RootCredential::generate().unwrap();
        claims["rck"] = URL_SAFE_NO_PAD
            .encode(attacker.public_key().as_bytes())
            .into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let forged = parts.join(".");
        assert_eq!(
            pinned.verify_root_key(&forged, UID, NOW),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            pinned.verify_root_key("not.a.jwt", UID, NOW),
            Err(CryptoError::Malformed)
        );
    }

    #[test]
    fn pinned_keys_must_be_uncompressed_p256_points() {
        assert_eq!(
            PinnedCa::from_public_key(&[4; 33]),
            Err(CryptoError::Malformed)
        );
        assert_eq!(
            PinnedCa::from_public_key(&[2; 65]),
            Err(CryptoError::Malformed)
        );
        let (ca, _) = ParticipantCa::generate().unwrap();
        assert!(!format!("{ca:?}").contains(&format!("{:?}", ca.pkcs8.as_slice())));
    }
}
