//! The client's side of enrolling a working credential and unlocking with it.
//!
//! A credential slot is what the server stores for one way in: the Root
//! Credential's private key wrapped under the slot's KEK, plus either the
//! credential's signing key wrapped the same way (password, SuperPIN, TAN: the
//! signing key has no other home) or the ECDH envelope's ephemeral key
//! (software certificate, smartcard: the KEK comes from an agreement with the
//! credential's own key). These functions make slots and open them; they run
//! on the client only, and the server never sees a KEK or its input.

use crate::ec::{EcdhEnvelope, SoftwareKey, seal_ecdh_envelope};
use crate::kek::{KeyEncryptionKey, WrapBinding, WrappedKey};
use crate::root::{RootCredential, RootPrivateKey};
use crate::{CryptoError, RootPublicKey};

/// One slot of a credential, as enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentSlot {
    /// 0, or the TAN's number (1..=n).
    pub slot: u32,
    /// SuperPIN and TAN: the login proof the code yields (`RecoveryCode::verifier`).
    pub proof: Option<Vec<u8>>,
    /// The Root Credential's private key wrapped under this slot's KEK.
    pub wrapped_root_key: Vec<u8>,
    /// Password, SuperPIN, TAN: the credential's signing key wrapped under this slot's KEK.
    pub wrapped_signing_key: Option<Vec<u8>>,
    /// Software certificate and smartcard: the ephemeral public key of the ECDH envelope.
    pub ecdh_public_key: Option<Vec<u8>>,
}

/// A slot for a knowledge credential (password, SuperPIN, TAN): `key_material`
/// is the export key or the code's key material; `proof` the code's login proof.
pub fn knowledge_slot(
    root: &RootCredential,
    signing_key: &SoftwareKey,
    uid: &str,
    credential_id: &str,
    slot: u32,
    key_material: &[u8],
    proof: Option<Vec<u8>>,
) -> Result<EnrolmentSlot, CryptoError> {
    let binding = WrapBinding::new(uid, credential_id, slot);
    let kek = KeyEncryptionKey::derive(key_material, &binding)?;
    Ok(EnrolmentSlot {
        slot,
        proof,
        wrapped_root_key: kek.wrap(root.private_key(), &binding)?.to_bytes(),
        wrapped_signing_key: Some(kek.wrap_signing_key(signing_key, &binding)?.to_bytes()),
        ecdh_public_key: None,
    })
}

/// A slot for a key-holding credential (software certificate, smartcard),
/// made from its public key alone (the card need not be present).
pub fn key_agreement_slot(
    root: &RootCredential,
    credential_public_key: &[u8],
    uid: &str,
    credential_id: &str,
) -> Result<EnrolmentSlot, CryptoError> {
    let (envelope, secret) = seal_ecdh_envelope(credential_public_key)?;
    let binding = WrapBinding::new(uid, credential_id, 0);
    let kek = KeyEncryptionKey::derive(&secret, &binding)?;
    Ok(EnrolmentSlot {
        slot: 0,
        proof: None,
        wrapped_root_key: kek.wrap(root.private_key(), &binding)?.to_bytes(),
        wrapped_signing_key: None,
        ecdh_public_key: Some(envelope.ephemeral_public_key),
    })
}

/// What a login hands back to open: the wrapped keys of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotKeys<'a> {
    /// The participant's UID.
    pub uid: &'a str,
    /// The credential's id.
    pub credential_id: &'a str,
    /// The slot.
    pub slot: u32,
    /// The wrapped Root Credential private key.
    pub wrapped_root_key: &'a [u8],
    /// The wrapped signing key, for knowledge credentials.
    pub wrapped_signing_key: Option<&'a [u8]>,
}

/// Opens a knowledge credential's slot: the Root Credential (whose public key
/// the client checked against the CA's certificate) and the signing key.
pub fn open_knowledge_slot(
    keys: &SlotKeys<'_>,
    root_public_key: &RootPublicKey,
    key_material: &[u8],
) -> Result<(RootCredential, SoftwareKey), CryptoError> {
    let binding = WrapBinding::new(keys.uid, keys.credential_id, keys.slot);
    let kek = KeyEncryptionKey::derive(key_material, &binding)?;
    let root = open_root(&kek, &binding, keys.wrapped_root_key, root_public_key)?;
    let wrapped = WrappedKey::from_bytes(keys.wrapped_signing_key.ok_or(CryptoError::Malformed)?)?;
    Ok((root, kek.unwrap_signing_key(&wrapped, &binding)?))
}

/// Opens a key-holding credential's slot with the ECDH secret the credential's
/// key agreed with the envelope (in software, or on the card).
pub fn open_key_agreement_slot(
    keys: &SlotKeys<'_>,
    root_public_key: &RootPublicKey,
    shared_secret: &[u8],
) -> Result<RootCredential, CryptoError> {
    let binding = WrapBinding::new(keys.uid, keys.credential_id, 0);
    let kek = KeyEncryptionKey::derive(shared_secret, &binding)?;
    open_root(&kek, &binding, keys.wrapped_root_key, root_public_key)
}

/// The envelope of a key-agreement slot, from its stored ephemeral key.
pub fn envelope(ecdh_public_key: &[u8]) -> EcdhEnvelope {
    EcdhEnvelope {
        ephemeral_public_key: ecdh_public_key.to_vec(),
    }
}

fn open_root(
    kek: &KeyEncryptionKey,
    binding: &WrapBinding,
    wrapped_root_key: &[u8],
    root_public_key: &RootPublicKey,
) -> Result<RootCredential, CryptoError> {
    let wrapped = WrappedKey::from_bytes(wrapped_root_key)?;
    let private: RootPrivateKey = kek.unwrap(&wrapped, binding)?;
    RootCredential::from_parts(root_public_key.clone(), private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{CodeKind, RecoveryCode, code_salt};

    #[test]
    fn a_code_slot_and_a_key_slot_open_to_the_same_root_credential() {
        let root = RootCredential::generate().unwrap();
        let signing = SoftwareKey::generate().unwrap();
        let code = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
        let salt = code_salt("uid", CodeKind::SuperPin, 0);
        let material = code.key_material(&salt).unwrap();
        let slot = knowledge_slot(&root, &signing, "uid", "wc-1", 0, &material, None).unwrap();
        let keys = SlotKeys {
            uid: "uid",
            credential_id: "wc-1",
            slot: 0,
            wrapped_root_key: &slot.wrapped_root_key,
            wrapped_signing_key: slot.wrapped_signing_key.as_deref(),
        };
        let (opened, opened_signing) =
            open_knowledge_slot(&keys, root.public_key(), &material).unwrap();
        assert_eq!(
            opened.private_key().secret_bytes(),
            root.private_key().secret_bytes()
        );
        assert_eq!(opened_signing.public_key(), signing.public_key());
        let wrong = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
        assert!(
            open_knowledge_slot(
                &keys,
                root.public_key(),
                &wrong.key_material(&salt).unwrap()
            )
            .is_err()
        );

        let device = SoftwareKey::generate().unwrap();
        let slot = key_agreement_slot(&root, &device.public_key(), "uid", "wc-2").unwrap();
        let secret = device
            .open_ecdh_envelope(&envelope(slot.ecdh_public_key.as_deref().unwrap()))
            .unwrap();
        let keys = SlotKeys {
            uid: "uid",
            credential_id: "wc-2",
            slot: 0,
            wrapped_root_key: &slot.wrapped_root_key,
            wrapped_signing_key: None,
        };
        let opened = open_key_agreement_slot(&keys, root.public_key(), &secret).unwrap();
        assert_eq!(
            opened.private_key().secret_bytes(),
            root.private_key().secret_bytes()
        );
        let other = SoftwareKey::generate().unwrap();
        let other_secret = other
            .open_ecdh_envelope(&envelope(slot.ecdh_public_key.as_deref().unwrap()))
            .unwrap();
        assert!(open_key_agreement_slot(&keys, root.public_key(), &other_secret).is_err());
    }
}
