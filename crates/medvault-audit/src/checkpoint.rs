//! The Ed25519 key that signs checkpoints, and the verifier that checks them.
//!
//! The signing key is a long-lived secret of the server (a PKCS#8 file in the data
//! directory, shared by all nodes of one deployment). The verifier holds public
//! keys only and is what an auditor needs.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::chain::sha256;

/// The checkpoint signing key.
pub struct CheckpointKey {
    key_pair: Ed25519KeyPair,
    key_id: String,
}

/// Why a checkpoint key could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("the audit checkpoint key is not a valid Ed25519 PKCS#8 document")]
pub struct InvalidCheckpointKey;

impl CheckpointKey {
    /// A new random key and its PKCS#8 encoding (to be stored by the caller).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), InvalidCheckpointKey> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| InvalidCheckpointKey)?;
        let pkcs8 = Zeroizing::new(document.as_ref().to_vec());
        Ok((Self::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// Reads a key from its PKCS#8 encoding.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, InvalidCheckpointKey> {
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| InvalidCheckpointKey)?;
        let key_id = key_id(key_pair.public_key().as_ref());
        Ok(Self { key_pair, key_id })
    }

    /// The identifier recorded with each checkpoint (hex of 8 bytes of SHA-256 of the public key).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half, for verification.
    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier::from_public_key(self.key_pair.public_key().as_ref())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key_pair.sign(message).as_ref().to_vec()
    }
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Public keys that checkpoints may be signed with (old keys stay after a rotation).
#[derive(Debug, Clone, Default)]
pub struct CheckpointVerifier {
    keys: Vec<(String, Vec<u8>)>,
}

impl CheckpointVerifier {
    /// A verifier for one raw 32-byte Ed25519 public key.
    pub fn from_public_key(public_key: &[u8]) -> Self {
        Self {
            keys: vec![(key_id(public_key), public_key.to_vec())],
        }
    }

    /// Also trusts `other`'s keys (e.g. a retired key).
    pub fn with(mut self, other: &CheckpointVerifier) -> Self {
        self.keys.extend(other.keys.iter().cloned());
        self
    }

    /// Whether `signature` over `message` was made by the key `key_id`.
    pub(crate) fn verify(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
        self.keys
            .iter()
            .filter(|(id, _)| id == key_id)
            .any(|(_, public_key)| {
                UnparsedPublicKey::new(&ED25519, public_key)
                    .verify(message, signature)
                    .is_ok()
            })
    }
}

fn key_id(public_key: &[u8]) -> String {
    hex::encode(sha256(public_key).get(..8).unwrap_or_default())
}
