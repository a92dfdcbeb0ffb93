//! medvault's key hierarchy (accounts and PKI, DESIGN.md §3).
//!
//! This crate owns the cryptographic objects of a participant's keys, built only
//! from well-kept primitives (aws-lc-rs, and rustls's RFC 9180 HPKE on top of it):
//!
//! - [`RootCredential`]: the X25519 HPKE key pair every document for a participant
//!   is sealed to. Generated on the client; its private half leaves the client
//!   only wrapped ([`WrappedKey`]).
//! - [`seal`] / [`RootCredential::open`]: HPKE base mode,
//!   DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, with the document's
//!   context bound into HPKE's `info` and its metadata into the AEAD's AAD.
//! - [`KeyEncryptionKey`]: 32 bytes derived (HKDF-SHA256) from what a working
//!   credential yields (an OPAQUE export key, an ECDH secret of a smartcard, ...);
//!   it wraps the Root Credential's private key with AES-256-GCM, bound to the
//!   participant and the working credential so a wrapped copy cannot be moved.
//!
//! - [`password`]: the password working credential, OPAQUE (RFC 9807) with
//!   ristretto255 and Argon2id; its export key feeds [`KeyEncryptionKey::derive`].
//! - [`RecoveryCode`]: SuperPIN (125 bits) and TAN (80 bits) codes, shown once in
//!   groups; a verifier for the server and, independently, KEK input for the client.
//! - [`SoftwareKey`], [`seal_ecdh_envelope`], [`verify_challenge`]: P-256
//!   credentials (software certificate; the smartcard does the same on the card):
//!   challenge-signature login and an ECDH envelope as KEK input.
//! - [`ParticipantCa`] / [`PinnedCa`]: ES256-signed certificates binding a Root
//!   Credential public key to a UID, and X.509 certificates binding a working
//!   credential's P-256 signing key to the UID and credential id
//!   ([`CertifiedCredential`]), checked by clients against a pinned CA key.
//!
//! - [`did`] and [`jose`] (Patient Credential): `did:key` / `did:jwk` of P-256
//!   keys, and compact ES256 JWS with a typestate (`UnverifiedJws` ->
//!   `VerifiedJws<C>`) that refuses every other algorithm at parse time.
//!
//! Invariants: secret keys are zeroized on drop and their `Debug` prints no key
//! material; no secret type implements `Clone` without need, `Serialize` never.

mod certificate;
mod codes;
mod credential_certificate;
pub mod did;
pub mod document;
mod ec;
pub mod enrol;
pub mod jose;
mod kek;
pub mod password;
mod root;
mod software_file;

pub use certificate::{CertifiedRootKey, ParticipantCa, PinnedCa, ROOT_KEY_CERTIFICATE_TYPE};
pub use codes::{
    CodeKind, RecoveryCode, code_salt, proof_matches, proof_matches_hash, stored_proof,
};
pub use credential_certificate::{CertifiedCredential, CredentialSubject, check_p256_public_key};
pub use ec::{
    EcdhEnvelope, SoftwareKey, ecdsa_p256_fixed_to_der, enrolment_message, login_challenge,
    seal_ecdh_envelope, verify_challenge,
};
pub use enrol::EnrolmentSlot;
pub use kek::{KeyEncryptionKey, WrapBinding, WrappedKey};
pub use root::{RootCredential, RootPrivateKey, RootPublicKey, SealContext, SealedDocument, seal};
pub use software_file::{MAX_SOFTWARE_FILE_LEN, SoftwareCredentialFile};

/// A cryptographic operation failed. Deliberately uninformative: which check
/// failed (wrong key, changed ciphertext, wrong context) is not told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Decryption or authentication failed.
    #[error("decryption failed")]
    Decrypt,
    /// Encryption or key generation failed (the crypto library refused).
    #[error("encryption failed")]
    Encrypt,
    /// A key or encapsulation has the wrong length or form.
    #[error("malformed key material")]
    Malformed,
}

/// Fills `bytes` from the system's cryptographic random source.
pub fn random_fill(bytes: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(bytes).map_err(|_| CryptoError::Encrypt)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key` (aws-lc-rs): a keyed hash,
/// for identifiers derived from a secret (the HDDT Pairing ID).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}
