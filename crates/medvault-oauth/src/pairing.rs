//! The Pairing ID (guide §Pairing ID): "Hash(DiGA-ID, internal User-ID at the
//! DDR, Salt)" with a secret salt of about 128 bits, as a keyed hash:
//! HMAC-SHA256 under the secret over a domain-separated, length-prefixed
//! encoding of the DiGA's `client_id` and the patient's UID. 64 hex characters.

use medvault_core::{DigaClientId, PairingId, Uid};
use zeroize::Zeroizing;

/// Why a Pairing ID key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Pairing ID key must hold at least 16 random bytes")]
pub struct PairingKeyError;

/// The secret of Pairing ID derivation (the guide's salt), shared by all nodes.
pub struct PairingIdKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for PairingIdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingIdKey(<redacted>)")
    }
}

const DOMAIN: &[u8] = b"medvault hddt pairing-id v1";

impl PairingIdKey {
    /// The key from its bytes (at least 16).
    pub fn new(secret: Zeroizing<Vec<u8>>) -> Result<Self, PairingKeyError> {
        if secret.len() < 16 {
            return Err(PairingKeyError);
        }
        Ok(Self(secret))
    }

    /// The Pairing ID of `patient` for `diga`.
    pub fn derive(&self, diga: &DigaClientId, patient: Uid) -> PairingId {
        let diga = diga.as_str().as_bytes();
        let patient = patient.to_string();
        let mut message = Vec::with_capacity(DOMAIN.len() + diga.len() + patient.len() + 16);
        message.extend_from_slice(DOMAIN);
        for part in [diga, patient.as_bytes()] {
            message.extend_from_slice(&(part.len() as u64).to_be_bytes());
            message.extend_from_slice(part);
        }
        PairingId::from_bytes(medvault_crypto::hmac_sha256(&self.0, &message))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn stable_per_diga_and_patient_distinct_otherwise() {
        let key = PairingIdKey::new(Zeroizing::new(vec![1; 16])).unwrap();
        let other_key = PairingIdKey::new(Zeroizing::new(vec![2; 16])).unwrap();
        let diga = DigaClientId::parse("urn:diga:bfarm:00294").unwrap();
        let other_diga = DigaClientId::parse("urn:diga:bfarm:00295").unwrap();
        let patient: Uid = "0b6e2c34-8f5d-4c1e-9a3b-2d7f6e5c4b3a".parse().unwrap();
        let other_patient: Uid = "1b6e2c34-8f5d-4c1e-9a3b-2d7f6e5c4b3a".parse().unwrap();
        let id = key.derive(&diga, patient);
        assert_eq!(id, key.derive(&diga, patient), "stable");
        assert_eq!(id.as_str().len(), 64);
        assert!(!id.as_str().contains(&patient.to_string()[..8]));
        assert_ne!(id, key.derive(&other_diga, patient), "distinct per DiGA");
        assert_ne!(id, key.derive(&diga, other_patient));
        assert_ne!(id, other_key.derive(&diga, patient), "keyed");
        // Known answer: HMAC-SHA256 as RFC 2104 defines it (checked with
        // Python's hmac module over the same encoding).
        assert_eq!(
            id.as_str(),
            "330e587265536a108136fc71f4cc27b27e05dcbbf9f5e616d5417a72078c334d"
        );
        assert!(PairingIdKey::new(Zeroizing::new(vec![1; 15])).is_err());
    }
}
