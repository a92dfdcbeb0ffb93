//! The Root Credential and documents sealed to it (RFC 9180 HPKE, base mode).

use std::fmt;

use rustls::crypto::aws_lc_rs::hpke::DH_KEM_X25519_HKDF_SHA256_AES_256;
use rustls::crypto::hpke::{EncapsulatedSecret, Hpke, HpkePrivateKey, HpkePublicKey};
use zeroize::Zeroizing;

use crate::CryptoError;

/// The HPKE suite of every Root Credential: DHKEM(X25519, HKDF-SHA256),
/// HKDF-SHA256, AES-256-GCM (RFC 9180 §7).
fn suite() -> &'static dyn Hpke {
    DH_KEM_X25519_HKDF_SHA256_AES_256
}

/// Identifies the suite inside a [`SealedDocument`] (KEM 0x0020, KDF 0x0001, AEAD 0x0002).
pub const SUITE_ID: &str = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM";

const X25519_KEY_LEN: usize = 32;
const INFO_DOMAIN: &[u8] = b"medvault.document.v1\0";

/// The public half of a Root Credential: what the directory publishes and
/// senders seal to.
#[derive(Clone, PartialEq, Eq)]
pub struct RootPublicKey([u8; X25519_KEY_LEN]);

impl RootPublicKey {
    /// Reads a raw 32-byte X25519 public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key: [u8; X25519_KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::Malformed)?;
        Ok(Self(key))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; X25519_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for RootPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootPublicKey(")?;
        for byte in self.0.get(..4).unwrap_or_default() {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The private half of a Root Credential. Zeroized on drop; `Debug` is redacted.
pub struct RootPrivateKey(Zeroizing<Vec<u8>>);

impl RootPrivateKey {
    /// Reads a raw 32-byte X25519 private key (e.g. just unwrapped).
    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Result<Self, CryptoError> {
        if bytes.len() != X25519_KEY_LEN {
            return Err(CryptoError::Malformed);
        }
        Ok(Self(bytes))
    }

    /// The raw bytes, for wrapping under a key-encryption key only.
    pub(crate) fn secret_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A copy of the raw bytes, for a client that keeps an unlocked session
    /// across processes (the CLI's session file, mode 0600, deleted at logout).
    /// Never for the server.
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        self.0.clone()
    }
}

impl fmt::Debug for RootPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootPrivateKey(<redacted>)")
    }
}

/// A participant's Root Credential: the key pair all documents for them are sealed to.
#[derive(Debug)]
pub struct RootCredential {
    public: RootPublicKey,
    private: RootPrivateKey,
}

impl RootCredential {
    /// A fresh key pair from the system's random source.
    pub fn generate() -> Result<Self, CryptoError> {
        let (public, private) = suite()
            .generate_key_pair()
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(Self {
            public: RootPublicKey::from_bytes(&public.0)?,
            private: RootPrivateKey::from_bytes(Zeroizing::new(private.secret_bytes().to_vec()))?,
        })
    }

    /// Re-assembles a Root Credential from its halves (after unwrapping the private key).
    ///
    /// The halves are checked to belong together by sealing and opening a probe.
    pub fn from_parts(public: RootPublicKey, private: RootPrivateKey) -> Result<Self, CryptoError> {
        let credential = Self { public, private };
        let context = SealContext::new(b"medvault.root-credential.self-test");
        let probe = seal(&credential.public, &context, b"", b"probe")?;
        credential
            .open(&context, b"", &probe)
            .map_err(|_| CryptoError::Malformed)?;
        Ok(credential)
    }

    /// The public half.
    pub fn public_key(&self) -> &RootPublicKey {
        &self.public
    }

    /// The private half (to wrap it under a key-encryption key).
    pub fn private_key(&self) -> &RootPrivateKey {
        &self.private
    }

    /// Opens a document sealed to this credential with the same `context` and `aad`.
    pub fn open(
        &self,
        context: &SealContext,
        aad: &[u8],
        sealed: &SealedDocument,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.suite != SUITE_ID {
            return Err(CryptoError::Malformed);
        }
        let private = HpkePrivateKey::from(self.private.secret_bytes().to_vec());
        let plaintext = suite()
            .open(
                &EncapsulatedSecret(sealed.encapsulated_key.clone()),
                &context.info(),
                aad,
                &sealed.ciphertext,
                &private,
            )
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(Zeroizing::new(plaintext))
    }
}

/// What a sealed document is bound to (HPKE `info`): e.g. the document id, the
/// sender's and the recipient's UIDs. Opening with another context fails, so a
/// ciphertext cannot be replayed as another document or to another recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext(Vec<u8>);

impl SealContext {
    /// A context from application bytes (length-prefix separate fields).
    pub fn new(context: &[u8]) -> Self {
        Self(context.to_vec())
    }

    fn info(&self) -> Vec<u8> {
        let mut info = Vec::with_capacity(INFO_DOMAIN.len() + self.0.len());
        info.extend_from_slice(INFO_DOMAIN);
        info.extend_from_slice(&self.0);
        info
    }
}

/// A document sealed to one recipient's Root Credential: what the server stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedDocument {
    /// The HPKE suite ([`SUITE_ID`]).
    pub suite: String,
    /// HPKE `enc`: the sender's ephemeral public key.
    pub encapsulated_key: Vec<u8>,
    /// AES-256-GCM ciphertext with its tag.
    pub ciphertext: Vec<u8>,
}

/// Seals `plaintext` to `recipient`, bound to `context` (HPKE `info`) and `aad`.
pub fn seal(
    recipient: &RootPublicKey,
    context: &SealContext,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<SealedDocument, CryptoError> {
    let (encapsulated, ciphertext) = suite()
        .seal(
            &context.info(),
            aad,
            plaintext,
            &HpkePublicKey(recipient.0.to_vec()),
        )
        .map_err(|_| CryptoError::Encrypt)?;
    Ok(SealedDocument {
        suite: SUITE_ID.to_owned(),
        encapsulated_key: encapsulated.0,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> SealContext {
        SealContext::new(b"doc-1|sender-uid|recipient-uid")
    }

    #[test]
    fn a_sealed_document_opens_with_the_recipients_key_only() {
        let recipient = RootCredential::generate().unwrap();
        let stranger = RootCredential::generate().unwrap();
        let sealed = seal(recipient.public_key(), &context(), b"meta", b"lab report").unwrap();
        assert_eq!(
            recipient
                .open(&context(), b"meta", &sealed)
                .unwrap()
                .as_slice(),
            b"lab report"
        );
        assert_eq!(
            stranger.open(&context(), b"meta", &sealed),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn context_aad_and_ciphertext_are_all_bound() {
        let recipient = RootCredential::generate().unwrap();
        let sealed = seal(recipient.public_key(), &context(), b"meta", b"lab report").unwrap();
        let other_context = SealContext::new(b"doc-2|sender-uid|recipient-uid");
        assert_eq!(
            recipient.open(&other_context, b"meta", &sealed),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            recipient.open(&context(), b"other", &sealed),
            Err(CryptoError::Decrypt)
        );
        let mut tampered = sealed.clone();
        if let Some(byte) = tampered.ciphertext.first_mut() {
            *byte ^= 1;
        }
        assert_eq!(
            recipient.open(&context(), b"meta", &tampered),
            Err(CryptoError::Decrypt)
        );
        let mut wrong_suite = sealed;
        wrong_suite.suite = "something else".into();
        assert_eq!(
            recipient.open(&context(), b"meta", &wrong_suite),
            Err(CryptoError::Malformed)
        );
    }

    #[test]
    fn each_seal_uses_a_fresh_ephemeral_key() {
        let recipient = RootCredential::generate().unwrap();
        let first = seal(recipient.public_key(), &context(), b"", b"same").unwrap();
        let second = seal(recipient.public_key(), &context(), b"", b"same").unwrap();
        assert_ne!(first.encapsulated_key, second.encapsulated_key);
        assert_ne!(first.ciphertext, second.ciphertext);
    }

    #[test]
    fn halves_that_do_not_belong_together_are_refused() {
        let one = RootCredential::generate().unwrap();
        let two = RootCredential::generate().unwrap();
        let private =
            RootPrivateKey::from_bytes(Zeroizing::new(two.private_key().secret_bytes().to_vec()))
                .unwrap();
        assert_eq!(
            RootCredential::from_parts(one.public_key().clone(), private).unwrap_err(),
            CryptoError::Malformed
        );
        let private =
            RootPrivateKey::from_bytes(Zeroizing::new(one.private_key().secret_bytes().to_vec()))
                .unwrap();
        RootCredential::from_parts(one.public_key().clone(), private).unwrap();
    }

    #[test]
    fn debug_never_prints_the_private_key() {
        let credential = RootCredential::generate().unwrap();
        let printed = format!("{credential:?}");
        assert!(printed.contains("<redacted>"), "{printed}");
        let secret_hex: String = credential
            .private_key()
            .secret_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!printed.contains(&secret_hex));
        assert!(!printed.contains(&format!("{:?}", credential.private_key().secret_bytes())));
    }

    #[test]
    fn public_keys_must_be_32_bytes() {
        assert_eq!(
            RootPublicKey::from_bytes(&[0; 31]),
            Err(CryptoError::Malformed)
        );
        assert!(RootPublicKey::from_bytes(&[0; 32]).is_ok());
    }
}
