//! P-256 working credentials (software certificate, smartcard): challenge
//! signatures for login, and an ECDH envelope from which the KEK comes.
//!
//! Enrolment does not need the private key: whoever enrols the credential makes
//! an ephemeral P-256 key, agrees a secret with the credential's public key and
//! stores the ephemeral public key ([`EcdhEnvelope`]) beside the wrapped Root
//! Credential. To unlock, the holder agrees the same secret with its private key
//! (in software here; on the card through PKCS#11 for a smartcard). The shared
//! secret is input key material for [`crate::KeyEncryptionKey::derive`].
//!
//! The same key signs login challenges (ECDSA P-256 SHA-256) and agrees keys,
//! as a smartcard's single key must; the challenge is domain-separated.

use std::fmt;

use aws_lc_rs::agreement::{self, ECDH_P256, EphemeralPrivateKey, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
};
use zeroize::Zeroizing;

use crate::CryptoError;

const CHALLENGE_DOMAIN: &[u8] = b"medvault.login-challenge.v1\0";
const ENROLMENT_DOMAIN: &[u8] = b"medvault.enrolment.v1\0";

/// The ephemeral public key stored with a Root Credential wrapped for a P-256 credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdhEnvelope {
    /// Uncompressed SEC1 point.
    pub ephemeral_public_key: Vec<u8>,
}

/// Enrolment side: an envelope for the credential with public key
/// `credential_public_key` (uncompressed SEC1) and the KEK input it yields.
pub fn seal_ecdh_envelope(
    credential_public_key: &[u8],
) -> Result<(EcdhEnvelope, Zeroizing<Vec<u8>>), CryptoError> {
    let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new())
        .map_err(|_| CryptoError::Encrypt)?;
    let ephemeral_public_key = ephemeral
        .compute_public_key()
        .map_err(|_| CryptoError::Encrypt)?
        .as_ref()
        .to_vec();
    let secret = agreement::agree_ephemeral(
        ephemeral,
        UnparsedPublicKey::new(&ECDH_P256, credential_public_key),
        CryptoError::Malformed,
        |secret| Ok(Zeroizing::new(secret.to_vec())),
    )?;
    Ok((
        EcdhEnvelope {
            ephemeral_public_key,
        },
        secret,
    ))
}

/// The bytes a login challenge signature covers: server nonce, UID and credential id.
pub fn login_challenge(nonce: &[u8], uid: &str, working_credential_id: &str) -> Vec<u8> {
    framed(
        CHALLENGE_DOMAIN,
        &[nonce, uid.as_bytes(), working_credential_id.as_bytes()],
    )
}

/// The bytes a new working credential's key signs to prove its holder has the
/// private key (proof of possession at enrolment): UID, credential id, kind and
/// the public key itself.
pub fn enrolment_message(
    uid: &str,
    working_credential_id: &str,
    kind: &str,
    public_key: &[u8],
) -> Vec<u8> {
    framed(
        ENROLMENT_DOMAIN,
        &[
            uid.as_bytes(),
            working_credential_id.as_bytes(),
            kind.as_bytes(),
            public_key,
        ],
    )
}

/// A domain tag followed by length-prefixed fields: no two field lists share an encoding.
fn framed(domain: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let total: usize = fields.iter().map(|field| field.len() + 4).sum();
    let mut message = Vec::with_capacity(domain.len() + total);
    message.extend_from_slice(domain);
    for field in fields {
        let length = u32::try_from(field.len()).unwrap_or(u32::MAX);
        message.extend_from_slice(&length.to_be_bytes());
        message.extend_from_slice(field);
    }
    message
}

/// Server side: checks a DER ECDSA P-256 SHA-256 signature over `challenge`.
pub fn verify_challenge(
    credential_public_key: &[u8],
    challenge: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, credential_public_key)
        .verify(challenge, signature)
        .map_err(|_| CryptoError::Decrypt)
}

/// Turns a raw `r || s` ECDSA P-256 signature (64 bytes, as PKCS#11's
/// `CKM_ECDSA` returns it) into the DER `ECDSA-Sig-Value` every medvault
/// verifier takes.
pub fn ecdsa_p256_fixed_to_der(signature: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use pkcs8::der::Encode;
    use pkcs8::der::asn1::{SequenceOf, UintRef};
    let (r, s) = signature
        .split_at_checked(32)
        .filter(|(_, s)| s.len() == 32)
        .ok_or(CryptoError::Malformed)?;
    let mut sequence: SequenceOf<UintRef<'_>, 2> = SequenceOf::new();
    for part in [r, s] {
        sequence
            .add(UintRef::new(part).map_err(|_| CryptoError::Malformed)?)
            .map_err(|_| CryptoError::Malformed)?;
    }
    sequence.to_der().map_err(|_| CryptoError::Malformed)
}

/// A P-256 private key held in software (the software-certificate credential).
pub struct SoftwareKey {
    pkcs8: Zeroizing<Vec<u8>>,
    signing: EcdsaKeyPair,
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SoftwareKey(<redacted>)")
    }
}

impl SoftwareKey {
    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .map_err(|_| CryptoError::Encrypt)?;
        Self::from_pkcs8(document.as_ref())
    }

    /// Reads an unencrypted PKCS#8 P-256 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let signing = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8)
            .map_err(|_| CryptoError::Malformed)?;
        Ok(Self {
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            signing,
        })
    }

    /// The PKCS#8 encoding (to store encrypted or on the user's device).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key, uncompressed SEC1.
    pub fn public_key(&self) -> Vec<u8> {
        self.signing.public_key().as_ref().to_vec()
    }

    /// Signs a login challenge (DER ECDSA).
    pub fn sign_challenge(&self, challenge: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.signing
            .sign(&SystemRandom::new(), challenge)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| CryptoError::Encrypt)
    }

    /// Signs `message` for JOSE (ES256): the fixed `r || s` form of RFC 7518.
    pub fn sign_jose(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let fixed =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8)
                .map_err(|_| CryptoError::Malformed)?;
        fixed
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| CryptoError::Encrypt)
    }

    /// Holder side: the KEK input of an envelope made for this key.
    pub fn open_ecdh_envelope(
        &self,
        envelope: &EcdhEnvelope,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let private = PrivateKey::from_private_key_der(&ECDH_P256, &self.pkcs8)
            .map_err(|_| CryptoError::Malformed)?;
        agreement::agree(
            &private,
            UnparsedPublicKey::new(&ECDH_P256, envelope.ephemeral_public_key.as_slice()),
            CryptoError::Malformed,
            |secret| Ok(Zeroizing::new(secret.to_vec())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyEncryptionKey, RootCredential, WrapBinding};

    fn binding() -> WrapBinding {
        WrapBinding {
            uid: "uid".into(),
            working_credential_id: "softcert-1".into(),
        }
    }

    #[test]
    fn a_fixed_signature_converts_to_der_that_verifies() {
        use aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let key = SoftwareKey::generate().unwrap();
        let fixed_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.pkcs8()).unwrap();
        for message in [&b"one"[..], b"two", b"three", b"four"] {
            let fixed = fixed_key.sign(&SystemRandom::new(), message).unwrap();
            let der = ecdsa_p256_fixed_to_der(fixed.as_ref()).unwrap();
            verify_challenge(&key.public_key(), message, &der).unwrap();
        }
        // High bits and leading zeros are encoded as DER integers must be.
        let mut edge = [0u8; 64];
        edge[0] = 0x80;
        edge[33] = 0x01;
        let der = ecdsa_p256_fixed_to_der(&edge).unwrap();
        // r: 0x80.. takes a 0x00 pad (33 bytes); s: 0x00 0x01 .. loses its zero (31 bytes).
        assert_eq!(&der[..5], &[0x30, 68, 0x02, 33, 0x00]);
        assert_eq!(&der[37..40], &[0x02, 31, 0x01]);
        assert_eq!(
            ecdsa_p256_fixed_to_der(&[0; 63]),
            Err(CryptoError::Malformed)
        );
    }

    #[test]
    fn an_envelope_made_from_the_public_key_opens_with_the_private_key() {
        let key = SoftwareKey::generate().unwrap();
        let credential = RootCredential::generate().unwrap();
        let (envelope, enrol_secret) = seal_ecdh_envelope(&key.public_key()).unwrap();
        let wrapped = KeyEncryptionKey::derive(&enrol_secret, &binding())
            .unwrap()
            .wrap(credential.private_key(), &binding())
            .unwrap();
        let reloaded = SoftwareKey::from_pkcs8(key.pkcs8()).unwrap();
        let secret = reloaded.open_ecdh_envelope(&envelope).unwrap();
        assert_eq!(secret.as_slice(), enrol_secret.as_slice());
        KeyEncryptionKey::derive(&secret, &binding())
            .unwrap()
            .unwrap(&wrapped, &binding())
            .unwrap();
        let other = SoftwareKey::generate().unwrap();
        assert_ne!(
            other.open_ecdh_envelope(&envelope).unwrap().as_slice(),
            enrol_secret.as_slice()
        );
    }

    #[test]
    fn challenge_signatures_verify_for_that_challenge_and_key_only() {
        let key = SoftwareKey::generate().unwrap();
        let challenge = login_challenge(b"nonce-1", "uid", "softcert-1");
        let signature = key.sign_challenge(&challenge).unwrap();
        verify_challenge(&key.public_key(), &challenge, &signature).unwrap();
        let replayed = login_challenge(b"nonce-2", "uid", "softcert-1");
        assert_eq!(
            verify_challenge(&key.public_key(), &replayed, &signature),
            Err(CryptoError::Decrypt)
        );
        let other = SoftwareKey::generate().unwrap();
        assert_eq!(
            verify_challenge(&other.public_key(), &challenge, &signature),
            Err(CryptoError::Decrypt)
        );
        // Field boundaries are unambiguous.
        assert_ne!(
            login_challenge(b"ab", "c", "d"),
            login_challenge(b"a", "bc", "d")
        );
    }

    #[test]
    fn bad_keys_and_points_are_refused() {
        assert_eq!(
            SoftwareKey::from_pkcs8(&[0x30, 0x00]).unwrap_err(),
            CryptoError::Malformed
        );
        assert_eq!(
            seal_ecdh_envelope(&[4; 65]).unwrap_err(),
            CryptoError::Malformed
        );
        let key = SoftwareKey::generate().unwrap();
        let bogus = EcdhEnvelope {
            ephemeral_public_key: vec![4; 65],
        };
        assert_eq!(
            key.open_ecdh_envelope(&bogus).unwrap_err(),
            CryptoError::Malformed
        );
        assert_eq!(format!("{key:?}"), "SoftwareKey(<redacted>)");
    }
}
