//! Decentralized identifiers of P-256 keys (Patient Credential, spec 003):
//! `did:key` (multicodec `p256-pub`, compressed point, base58btc) and
//! `did:jwk` (the public JWK, base64url). Both resolve to a [`P256PublicKey`];
//! two identifiers name the same key exactly when their keys are equal, so a
//! request's `sub` and `jwk` can be compared.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::CryptoError;

/// The multicodec prefix of a P-256 public key (`p256-pub`, 0x1200, as a varint).
const P256_MULTICODEC: [u8; 2] = [0x80, 0x24];
/// The longest identifier accepted.
const MAX_DID_LEN: usize = 512;

/// A P-256 public key, held in compressed SEC1 form (33 bytes): one spelling
/// per key, so equality (of the compressed form) is key equality.
#[derive(Debug, Clone)]
pub struct P256PublicKey {
    compressed: [u8; 33],
    x: [u8; 32],
    y: Option<[u8; 32]>,
}

impl PartialEq for P256PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.compressed == other.compressed
    }
}

impl Eq for P256PublicKey {}

/// A public EC JWK (RFC 7517/7518) of a P-256 key. Private members are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicJwk {
    /// `EC`.
    pub kty: String,
    /// `P-256`.
    pub crv: String,
    /// The x coordinate, base64url.
    pub x: String,
    /// The y coordinate, base64url.
    pub y: String,
    /// Optional key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Optional use (`sig`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Optional algorithm (`ES256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

fn coordinate(text: &str) -> Result<[u8; 32], CryptoError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| CryptoError::Malformed)?;
    bytes.try_into().map_err(|_| CryptoError::Malformed)
}

impl P256PublicKey {
    /// From an uncompressed SEC1 point (65 bytes), checked to be on the curve.
    pub fn from_uncompressed(point: &[u8]) -> Result<Self, CryptoError> {
        crate::check_p256_public_key(point)?;
        let (x, y) = point
            .get(1..33)
            .zip(point.get(33..65))
            .ok_or(CryptoError::Malformed)?;
        let x: [u8; 32] = x.try_into().map_err(|_| CryptoError::Malformed)?;
        let y: [u8; 32] = y.try_into().map_err(|_| CryptoError::Malformed)?;
        let mut compressed = [0u8; 33];
        compressed[0] = 0x02 | (y[31] & 1);
        compressed[1..].copy_from_slice(&x);
        Ok(Self {
            compressed,
            x,
            y: Some(y),
        })
    }

    /// From a compressed SEC1 point (33 bytes), checked to decompress onto the curve.
    pub fn from_compressed(point: &[u8]) -> Result<Self, CryptoError> {
        let compressed: [u8; 33] = point.try_into().map_err(|_| CryptoError::Malformed)?;
        if !matches!(compressed[0], 0x02 | 0x03) {
            return Err(CryptoError::Malformed);
        }
        // aws-lc decompresses the point (and checks it is on the curve) when
        // it agrees a secret with it.
        crate::ec::seal_ecdh_envelope(&compressed).map_err(|_| CryptoError::Malformed)?;
        let mut x = [0u8; 32];
        x.copy_from_slice(&compressed[1..]);
        Ok(Self {
            compressed,
            x,
            y: None,
        })
    }

    /// From a public JWK.
    pub fn from_jwk(jwk: &PublicJwk) -> Result<Self, CryptoError> {
        if jwk.kty != "EC" || jwk.crv != "P-256" {
            return Err(CryptoError::Malformed);
        }
        if jwk.alg.as_deref().is_some_and(|alg| alg != "ES256") {
            return Err(CryptoError::Malformed);
        }
        let mut point = vec![0x04];
        point.extend_from_slice(&coordinate(&jwk.x)?);
        point.extend_from_slice(&coordinate(&jwk.y)?);
        Self::from_uncompressed(&point)
    }

    /// The compressed SEC1 form: what signatures verify against.
    pub fn compressed(&self) -> &[u8; 33] {
        &self.compressed
    }

    /// The JWK, when the key came with both coordinates.
    pub fn to_jwk(&self) -> Option<PublicJwk> {
        let y = self.y?;
        Some(PublicJwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: URL_SAFE_NO_PAD.encode(self.x),
            y: URL_SAFE_NO_PAD.encode(y),
            kid: None,
            use_: None,
            alg: None,
        })
    }

    /// Verifies a JOSE ES256 signature (`r || s`, 64 bytes) over `message`.
    pub fn verify_es256(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.compressed)
            .verify(message, signature)
            .map_err(|_| CryptoError::Decrypt)
    }

    /// `did:key:z…` of this key.
    pub fn did_key(&self) -> String {
        let mut bytes = P256_MULTICODEC.to_vec();
        bytes.extend_from_slice(&self.compressed);
        format!("did:key:z{}", bs58::encode(bytes).into_string())
    }

    /// `did:jwk:…` of this key (needs both coordinates).
    pub fn did_jwk(&self) -> Option<String> {
        let jwk = self.to_jwk()?;
        let json = serde_json::to_vec(&jwk).ok()?;
        Some(format!("did:jwk:{}", URL_SAFE_NO_PAD.encode(json)))
    }
}

/// Resolves a `did:key` or `did:jwk` of a P-256 key (a fragment such as
/// `#0` is ignored). Other methods and curves are refused.
pub fn resolve_did(did: &str) -> Result<P256PublicKey, CryptoError> {
    if did.len() > MAX_DID_LEN {
        return Err(CryptoError::Malformed);
    }
    let did = did.split_once('#').map_or(did, |(base, _)| base);
    if let Some(encoded) = did.strip_prefix("did:key:z") {
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|_| CryptoError::Malformed)?;
        let point = bytes
            .strip_prefix(&P256_MULTICODEC[..])
            .ok_or(CryptoError::Malformed)?;
        return P256PublicKey::from_compressed(point);
    }
    if let Some(encoded) = did.strip_prefix("did:jwk:") {
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| CryptoError::Malformed)?;
        let jwk: PublicJwk = serde_json::from_slice(&json).map_err(|_| CryptoError::Malformed)?;
        return P256PublicKey::from_jwk(&jwk);
    }
    Err(CryptoError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SoftwareKey;

    #[test]
    fn both_methods_resolve_to_the_same_key() {
        let key = SoftwareKey::generate().unwrap();
        let public = P256PublicKey::from_uncompressed(&key.public_key()).unwrap();
        let by_key = resolve_did(&public.did_key()).unwrap();
        let by_jwk = resolve_did(&public.did_jwk().unwrap()).unwrap();
        assert_eq!(by_key, public);
        assert!(by_key.to_jwk().is_none(), "a did:key carries no y");
        assert_eq!(by_jwk, public);
        assert_eq!(by_key.compressed(), by_jwk.compressed());
        assert!(
            public.did_key().starts_with("did:key:zDn"),
            "{}",
            public.did_key()
        );
        assert_eq!(
            resolve_did(&format!("{}#0", public.did_key())).unwrap(),
            by_key
        );
    }

    #[test]
    fn a_known_did_key_resolves() {
        // did:key test vector for P-256 (W3C CCG did-method-key).
        let did = "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169";
        let key = resolve_did(did).unwrap();
        assert_eq!(key.did_key(), did);
    }

    #[test]
    fn other_methods_curves_and_garbage_are_refused() {
        for bad in [
            "",
            "did:web:example.org",
            "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", // Ed25519
            "did:key:zzzz",
            "did:jwk:e30",
            "did:jwk:!!",
        ] {
            assert_eq!(resolve_did(bad), Err(CryptoError::Malformed), "{bad}");
        }
        let jwk = PublicJwk {
            kty: "EC".into(),
            crv: "P-384".into(),
            x: "AA".into(),
            y: "AA".into(),
            kid: None,
            use_: None,
            alg: None,
        };
        assert!(P256PublicKey::from_jwk(&jwk).is_err());
        let private = serde_json::json!({"kty":"EC","crv":"P-256","x":"a","y":"b","d":"secret"});
        assert!(serde_json::from_value::<PublicJwk>(private).is_err());
    }

    #[test]
    fn an_es256_signature_verifies_with_the_resolved_key() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let key = SoftwareKey::generate().unwrap();
        let fixed =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.pkcs8()).unwrap();
        let signature = fixed.sign(&SystemRandom::new(), b"payload").unwrap();
        let public = P256PublicKey::from_uncompressed(&key.public_key()).unwrap();
        let resolved = resolve_did(&public.did_key()).unwrap();
        resolved
            .verify_es256(b"payload", signature.as_ref())
            .unwrap();
        assert!(resolved.verify_es256(b"other", signature.as_ref()).is_err());
    }
}
