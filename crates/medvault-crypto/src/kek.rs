//! Key-encryption keys and the wrapped copies of a Root Credential's private key.
//!
//! Each working credential yields input key material (an OPAQUE export key, the
//! ECDH secret of a smartcard, a secret derived from a SuperPIN or TAN ...).
//! HKDF-SHA256 turns it into a [`KeyEncryptionKey`] bound to the participant and
//! the working credential; AES-256-GCM with a random nonce wraps the Root
//! Credential's private key under it. The server stores [`WrappedKey`]s and
//! cannot open one.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;
use crate::ec::SoftwareKey;
use crate::root::RootPrivateKey;

const KEK_LEN: usize = 32;
/// The longest wrapped key accepted (a PKCS#8 P-256 key is under 200 bytes).
const MAX_WRAPPED_LEN: usize = 512;
const KEK_SALT: &[u8] = b"medvault.kek.v1";
const WRAP_DOMAIN: &[u8] = b"medvault.key-wrap.v1\0";
const KEK_PURPOSE: &[u8] = b"kek";
const ROOT_KEY_PURPOSE: &[u8] = b"root-key";
const SIGNING_KEY_PURPOSE: &[u8] = b"signing-key";
const SECRET_PURPOSE: &[u8] = b"server-secret";

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
    /// The binding of slot `slot` of a working credential (TAN number `n` of a
    /// batch is slot `n`; every other credential has the one slot 0).
    pub fn new(uid: &str, working_credential_id: &str, slot: u32) -> Self {
        let working_credential_id = if slot == 0 {
            working_credential_id.to_owned()
        } else {
            format!("{working_credential_id}#{slot}")
        };
        Self {
            uid: uid.to_owned(),
            working_credential_id,
        }
    }

    fn bytes(&self, purpose: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(
            WRAP_DOMAIN.len()
                + 12
                + purpose.len()
                + self.uid.len()
                + self.working_credential_id.len(),
        );
        bytes.extend_from_slice(WRAP_DOMAIN);
        for field in [
            purpose,
            self.uid.as_bytes(),
            self.working_credential_id.as_bytes(),
        ] {
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
        let info = binding.bytes(KEK_PURPOSE);
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
    ) -> Result<WrappedKey, CryptoError> {
        self.seal(root_key.secret_bytes(), &binding.bytes(ROOT_KEY_PURPOSE))
    }

    /// Unwraps a Root Credential's private key; fails for another KEK or binding.
    pub fn unwrap(
        &self,
        wrapped: &WrappedKey,
        binding: &WrapBinding,
    ) -> Result<RootPrivateKey, CryptoError> {
        let plaintext = self.open(wrapped, &binding.bytes(ROOT_KEY_PURPOSE))?;
        RootPrivateKey::from_bytes(plaintext)
    }

    /// Wraps a working credential's signing key (PKCS#8) for the knowledge-based
    /// credentials (password, SuperPIN, TAN), whose signing key has no other home.
    pub fn wrap_signing_key(
        &self,
        signing_key: &SoftwareKey,
        binding: &WrapBinding,
    ) -> Result<WrappedKey, CryptoError> {
        self.seal(signing_key.pkcs8(), &binding.bytes(SIGNING_KEY_PURPOSE))
    }

    /// Unwraps a signing key wrapped by [`Self::wrap_signing_key`].
    pub fn unwrap_signing_key(
        &self,
        wrapped: &WrappedKey,
        binding: &WrapBinding,
    ) -> Result<SoftwareKey, CryptoError> {
        let plaintext = self.open(wrapped, &binding.bytes(SIGNING_KEY_PURPOSE))?;
        SoftwareKey::from_pkcs8(&plaintext)
    }

    /// Wraps a server secret (e.g. the Pairing ID's salt) that is neither a
    /// root key nor a signing key.
    pub fn wrap_secret(
        &self,
        secret: &[u8],
        binding: &WrapBinding,
    ) -> Result<WrappedKey, CryptoError> {
        self.seal(secret, &binding.bytes(SECRET_PURPOSE))
    }

    /// Unwraps a secret wrapped by [`Self::wrap_secret`].
    pub fn unwrap_secret(
        &self,
        wrapped: &WrappedKey,
        binding: &WrapBinding,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.open(wrapped, &binding.bytes(SECRET_PURPOSE))
    }

    fn seal(&self, secret: &[u8], aad: &[u8]) -> Result<WrappedKey, CryptoError> {
        let key =
            RandomizedNonceKey::new(&AES_256_GCM, &self.0).map_err(|_| CryptoError::Encrypt)?;
        let mut in_out = secret.to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(aad), &mut in_out)
            .map_err(|_| {
                in_out.zeroize();
                CryptoError::Encrypt
            })?;
        Ok(WrappedKey {
            nonce: nonce.as_ref().to_vec(),
            ciphertext: in_out,
        })
    }

    fn open(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
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
                Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(Zeroizing::new(plaintext.to_vec()))
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

/// A secret key (a Root Credential's private key, or a working credential's
/// signing key) wrapped under one working credential's KEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The AES-256-GCM nonce (12 bytes, random).
    pub nonce: Vec<u8>,
    /// The wrapped key with its tag.
    pub ciphertext: Vec<u8>,
}

impl WrappedKey {
    /// One byte string for storage and the wire: nonce, then ciphertext and tag.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.nonce.len() + self.ciphertext.len());
        bytes.extend_from_slice(&self.nonce);
        bytes.extend_from_slice(&self.ciphertext);
        bytes
    }

    /// Reads [`Self::to_bytes`]'s form; refuses what cannot hold a nonce and a tag.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() < NONCE_LEN + 16 || bytes.len() > MAX_WRAPPED_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        Ok(Self {
            nonce: nonce.to_vec(),
            ciphertext: ciphertext.to_vec(),
        })
    }
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
        let short_nonce = WrappedKey {
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

    #[test]
    fn a_signing_key_wraps_apart_from_the_root_key() {
        let signing = SoftwareKey::generate().unwrap();
        let binding = WrapBinding::new("uid-7f3a", "wc-1", 0);
        let kek = KeyEncryptionKey::derive(&[9; 32], &binding).unwrap();
        let wrapped = kek.wrap_signing_key(&signing, &binding).unwrap();
        let stored = WrappedKey::from_bytes(&wrapped.to_bytes()).unwrap();
        let restored = kek.unwrap_signing_key(&stored, &binding).unwrap();
        assert_eq!(restored.public_key(), signing.public_key());
        // A wrapped signing key is not accepted as a root key (purpose bound).
        assert_eq!(
            kek.unwrap(&stored, &binding).unwrap_err(),
            CryptoError::Decrypt
        );
        // TAN slots are distinct bindings.
        assert_ne!(
            WrapBinding::new("u", "wc", 1),
            WrapBinding::new("u", "wc", 2)
        );
        assert_eq!(
            WrappedKey::from_bytes(&[0; 20]),
            Err(CryptoError::Malformed)
        );
        assert_eq!(
            WrappedKey::from_bytes(&[0; 600]),
            Err(CryptoError::Malformed)
        );
    }
}
