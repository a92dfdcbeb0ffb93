//! Key-encryption keys and the wrapped copies of a Root Credential's private key.
//!
//! Each working credential yields input key material (an OPAQUE export key, the
//! ECDH secret of a smartcard, a secret derived from a SuperPIN or TAN ...).
//! HKDF-SHA256 turns it into a [`KeyEncryptionKey`] bound to the participant and
//! the working credential; AES-256-GCM with a random nonce wraps the Root
//! Credential's private key under it. The server stores [`WrappedRootKey`]s and
//! cannot open one.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;
use crate::root::RootPrivateKey;

const KEK_LEN: usize = 32;
const KEK_SALT: &[u8] = b"medvault.kek.v1";
const WRAP_DOMAIN: &[u8] = b"medvault.root-key-wrap.v1\0";

/// Which participant and working credential a wrapped key belongs to. Bound into
/// both the key derivation and the AEAD, so a wrapped copy moved to another
/// participant or credential does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapBinding {
    /// The participant's UID.
    pub uid: String,
    /// The working credential's id.
    pub working_credential_id: String,
}

impl WrapBinding {
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(
            WRAP_DOMAIN.len() + 8 + self.uid.len() + self.working_credential_id.len(),
        );
        bytes.extend_from_slice(WRAP_DOMAIN);
        for field in [self.uid.as_bytes(), self.working_credential_id.as_bytes()] {
            let length = u32::try_from(field.len()).unwrap_or(u32::MAX);
            bytes.extend_from_slice(&length.to_be_bytes());
            bytes.extend_from_slice(field);
        }
        bytes
    }
}

/// A 32-byte key-encryption key. Zeroized on drop; `Debug` is redacted.
pub struct KeyEncryptionKey([u8; KEK_LEN]);

struct Length(usize);

impl KeyType for Length {
    fn len(&self) -> usize {
        self.0
    }
}

impl KeyEncryptionKey {
    /// Derives a KEK from a working credential's secret with HKDF-SHA256, bound to `binding`.
    pub fn derive(input_key_material: &[u8], binding: &WrapBinding) -> Result<Self, CryptoError> {
        if input_key_material.len() < 16 {
            return Err(CryptoError::Malformed);
        }
        let info = binding.bytes();
        let info_parts = [info.as_slice()];
        let prk = Salt::new(HKDF_SHA256, KEK_SALT).extract(input_key_material);
        let okm = prk
            .expand(&info_parts, Length(KEK_LEN))
            .map_err(|_| CryptoError::Encrypt)?;
        let mut key = [0u8; KEK_LEN];
        okm.fill(&mut key).map_err(|_| CryptoError::Encrypt)?;
        Ok(Self(key))
    }

    /// Wraps a Root Credential's private key.
    pub fn wrap(
        &self,
        root_key: &RootPrivateKey,
        binding: &WrapBinding,
    ) -> Result<WrappedRootKey, CryptoError> {
        let key =
            RandomizedNonceKey::new(&AES_256_GCM, &self.0).map_err(|_| CryptoError::Encrypt)?;
        let mut in_out = root_key.secret_bytes().to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(binding.bytes()), &mut in_out)
            .map_err(|_| {
                in_out.zeroize();
                CryptoError::Encrypt
            })?;
        Ok(WrappedRootKey {
            nonce: nonce.as_ref().to_vec(),
            ciphertext: in_out,
        })
    }

    /// Unwraps a Root Credential's private key; fails for another KEK or binding.
    pub fn unwrap(
        &self,
        wrapped: &WrappedRootKey,
        binding: &WrapBinding,
    ) -> Result<RootPrivateKey, CryptoError> {
        let key =
            RandomizedNonceKey::new(&AES_256_GCM, &self.0).map_err(|_| CryptoError::Decrypt)?;
        let nonce_bytes: [u8; NONCE_LEN] = wrapped
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        let mut in_out = Zeroizing::new(wrapped.ciphertext.clone());
        let plaintext = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(binding.bytes()),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Decrypt)?;
        RootPrivateKey::from_bytes(Zeroizing::new(plaintext.to_vec()))
    }
}

impl Drop for KeyEncryptionKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

/// A Root Credential private key wrapped under one working credential's KEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedRootKey {
    /// The AES-256-GCM nonce (12 bytes, random).
    pub nonce: Vec<u8>,
    /// The wrapped key with its tag.
    pub ciphertext: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::{RootCredential, SealContext, seal};

    fn binding(wc: &str) -> WrapBinding {
        WrapBinding {
            uid: "uid-7f3a".to_owned(),
            working_credential_id: wc.to_owned(),
        }
    }

    #[test]
    fn a_wrapped_root_key_unwraps_and_still_opens_documents() {
        let credential = RootCredential::generate().unwrap();
        let context = SealContext::new(b"doc");
        let sealed = seal(credential.public_key(), &context, b"", b"findings").unwrap();
        let kek = KeyEncryptionKey::derive(&[7; 64], &binding("password")).unwrap();
        let wrapped = kek
            .wrap(credential.private_key(), &binding("password"))
            .unwrap();
        assert_ne!(
            wrapped.ciphertext.get(..32),
            Some(credential.private_key().secret_bytes())
        );
        let private = kek.unwrap(&wrapped, &binding("password")).unwrap();
        let restored =
            RootCredential::from_parts(credential.public_key().clone(), private).unwrap();
        assert_eq!(
            restored.open(&context, b"", &sealed).unwrap().as_slice(),
            b"findings"
        );
    }

    #[test]
    fn another_secret_or_binding_does_not_unwrap() {
        let credential = RootCredential::generate().unwrap();
        let kek = KeyEncryptionKey::derive(&[7; 64], &binding("password")).unwrap();
        let wrapped = kek
            .wrap(credential.private_key(), &binding("password"))
            .unwrap();
        let other_secret = KeyEncryptionKey::derive(&[8; 64], &binding("password")).unwrap();
        assert_eq!(
            other_secret
                .unwrap(&wrapped, &binding("password"))
                .unwrap_err(),
            CryptoError::Decrypt
        );
        // The same secret under another working credential derives another KEK ...
        let moved = KeyEncryptionKey::derive(&[7; 64], &binding("tan-3")).unwrap();
        assert_eq!(
            moved.unwrap(&wrapped, &binding("tan-3")).unwrap_err(),
            CryptoError::Decrypt
        );
        // ... and the binding is also authenticated as AAD.
        assert_eq!(
            kek.unwrap(&wrapped, &binding("tan-3")).unwrap_err(),
            CryptoError::Decrypt
        );
        let mut tampered = wrapped.clone();
        if let Some(byte) = tampered.ciphertext.last_mut() {
            *byte ^= 1;
        }
        assert_eq!(
            kek.unwrap(&tampered, &binding("password")).unwrap_err(),
            CryptoError::Decrypt
        );
        let short_nonce = WrappedRootKey {
            nonce: vec![0; 8],
            ..wrapped
        };
        assert_eq!(
            kek.unwrap(&short_nonce, &binding("password")).unwrap_err(),
            CryptoError::Malformed
        );
    }

    #[test]
    fn weak_input_and_debug_output_are_refused() {
        assert_eq!(
            KeyEncryptionKey::derive(&[1; 8], &binding("x")).unwrap_err(),
            CryptoError::Malformed
        );
        let kek = KeyEncryptionKey::derive(&[1; 32], &binding("x")).unwrap();
        assert_eq!(format!("{kek:?}"), "KeyEncryptionKey(<redacted>)");
    }

    #[test]
    fn wrapping_twice_gives_different_ciphertexts() {
        let credential = RootCredential::generate().unwrap();
        let kek = KeyEncryptionKey::derive(&[7; 64], &binding("password")).unwrap();
        let first = kek
            .wrap(credential.private_key(), &binding("password"))
            .unwrap();
        let second = kek
            .wrap(credential.private_key(), &binding("password"))
            .unwrap();
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ciphertext, second.ciphertext);
    }
}
