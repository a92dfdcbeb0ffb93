//! Sealed documents: one document for one or more recipients, signed by the
//! sender's working credential.
//!
//! A random 256-bit content key encrypts the body and, separately, a small
//! header (title and media type) with AES-256-GCM; the content key is sealed
//! to each recipient's Root Credential with HPKE ([`crate::seal`]), bound to
//! the document id, the sender and that recipient. The server stores the
//! sealed parts, sizes and who sent what to whom; it learns neither content,
//! title nor media type. The sender signs (ECDSA P-256 with the working
//! credential's key) a digest of the document id, the sender, the signing
//! credential, the recipients and both ciphertexts, so any change to a
//! ciphertext, the recipient list or the claimed sender is detected by a
//! recipient who verifies with the sender's CA-certified credential key.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use zeroize::Zeroizing;

use crate::root::{RootCredential, RootPublicKey, SealContext, SealedDocument, seal};
use crate::{CryptoError, sha256};

const KEY_CONTEXT_DOMAIN: &[u8] = b"medvault.document-key.v1\0";
const SIGNATURE_DOMAIN: &[u8] = b"medvault.document-signature.v1\0";
const HEADER_AAD: &[u8] = b"medvault.document-header.v1";
const BODY_AAD: &[u8] = b"medvault.document-body.v1";
/// The longest title.
pub const MAX_TITLE_LEN: usize = 200;
/// The longest media type.
pub const MAX_MEDIA_TYPE_LEN: usize = 100;

/// What a document says about itself (encrypted; the server never sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentHeader {
    /// A title for the recipient's list.
    pub title: String,
    /// The body's media type, e.g. `application/pdf`.
    pub media_type: String,
}

impl DocumentHeader {
    fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        let valid = |text: &str, max: usize| {
            !text.is_empty() && text.len() <= max && !text.chars().any(char::is_control)
        };
        if !valid(&self.title, MAX_TITLE_LEN) || !valid(&self.media_type, MAX_MEDIA_TYPE_LEN) {
            return Err(CryptoError::Malformed);
        }
        let mut bytes = Vec::with_capacity(self.title.len() + self.media_type.len() + 4);
        for field in [&self.media_type, &self.title] {
            let length = u16::try_from(field.len()).map_err(|_| CryptoError::Malformed)?;
            bytes.extend_from_slice(&length.to_be_bytes());
            bytes.extend_from_slice(field.as_bytes());
        }
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut rest = bytes;
        let mut fields = Vec::with_capacity(2);
        for _ in 0..2 {
            let (length, tail) = rest
                .split_first_chunk::<2>()
                .ok_or(CryptoError::Malformed)?;
            let length = usize::from(u16::from_be_bytes(*length));
            if tail.len() < length {
                return Err(CryptoError::Malformed);
            }
            let (field, tail) = tail.split_at(length);
            fields.push(String::from_utf8(field.to_vec()).map_err(|_| CryptoError::Malformed)?);
            rest = tail;
        }
        let (Some(title), Some(media_type), true) = (fields.pop(), fields.pop(), rest.is_empty())
        else {
            return Err(CryptoError::Malformed);
        };
        Ok(Self { title, media_type })
    }
}

/// Whom a document is for, and the key their copy is sealed to.
#[derive(Debug, Clone)]
pub struct Recipient<'a> {
    /// The recipient's UID.
    pub uid: &'a str,
    /// Their Root Credential key, as the CA certified it for that UID.
    pub root_public_key: &'a RootPublicKey,
}

/// A sealed document: what the server stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedParts {
    /// The header, encrypted (nonce || ciphertext || tag).
    pub header: Vec<u8>,
    /// The body, encrypted (nonce || ciphertext || tag).
    pub body: Vec<u8>,
    /// Per recipient UID: the content key sealed to them (HPKE `enc` || ciphertext).
    pub keys: Vec<(String, Vec<u8>)>,
}

fn key_context(document_id: &str, sender_uid: &str, recipient_uid: &str) -> SealContext {
    let mut context = KEY_CONTEXT_DOMAIN.to_vec();
    for field in [document_id, sender_uid, recipient_uid] {
        context.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
        context.extend_from_slice(field.as_bytes());
    }
    SealContext::new(&context)
}

fn encrypt(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Encrypt)?;
    let mut in_out = plaintext.to_vec();
    let nonce = key
        .seal_in_place_append_tag(Aad::from(aad), &mut in_out)
        .map_err(|_| CryptoError::Encrypt)?;
    let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
    out.extend_from_slice(nonce.as_ref());
    out.extend_from_slice(&in_out);
    Ok(out)
}

fn decrypt(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Decrypt)?;
    let (nonce, ciphertext) = sealed
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(CryptoError::Malformed)?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let plaintext = key
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(Zeroizing::new(plaintext.to_vec()))
}

/// Seals `body` with `header` for `recipients`.
pub fn seal_document(
    document_id: &str,
    sender_uid: &str,
    recipients: &[Recipient<'_>],
    header: &DocumentHeader,
    body: &[u8],
) -> Result<SealedParts, CryptoError> {
    let mut content_key = Zeroizing::new([0u8; 32]);
    crate::random_fill(content_key.as_mut_slice())?;
    let header = encrypt(content_key.as_slice(), HEADER_AAD, &header.encode()?)?;
    let body = encrypt(content_key.as_slice(), BODY_AAD, body)?;
    let keys = recipients
        .iter()
        .map(|recipient| {
            let context = key_context(document_id, sender_uid, recipient.uid);
            let sealed = seal(
                recipient.root_public_key,
                &context,
                b"",
                content_key.as_slice(),
            )?;
            let mut bytes = sealed.encapsulated_key;
            bytes.extend_from_slice(&sealed.ciphertext);
            Ok((recipient.uid.to_owned(), bytes))
        })
        .collect::<Result<Vec<_>, CryptoError>>()?;
    Ok(SealedParts { header, body, keys })
}

/// The content key of a document for `recipient_uid`, opened with their Root Credential.
pub fn open_document_key(
    root: &RootCredential,
    document_id: &str,
    sender_uid: &str,
    recipient_uid: &str,
    sealed_key: &[u8],
) -> Result<DocumentKey, CryptoError> {
    // HPKE `enc` of DHKEM(X25519) is 32 bytes.
    let (encapsulated_key, ciphertext) = sealed_key
        .split_at_checked(32)
        .ok_or(CryptoError::Malformed)?;
    let sealed = SealedDocument {
        suite: crate::root::SUITE_ID.to_owned(),
        encapsulated_key: encapsulated_key.to_vec(),
        ciphertext: ciphertext.to_vec(),
    };
    let key = root.open(
        &key_context(document_id, sender_uid, recipient_uid),
        b"",
        &sealed,
    )?;
    if key.len() != 32 {
        return Err(CryptoError::Malformed);
    }
    Ok(DocumentKey(key))
}

/// A document's content key. Zeroized on drop; `Debug` is redacted.
pub struct DocumentKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for DocumentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DocumentKey(<redacted>)")
    }
}

impl DocumentKey {
    /// Decrypts the header.
    pub fn open_header(&self, sealed_header: &[u8]) -> Result<DocumentHeader, CryptoError> {
        DocumentHeader::decode(&decrypt(&self.0, HEADER_AAD, sealed_header)?)
    }

    /// Decrypts the body.
    pub fn open_body(&self, sealed_body: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        decrypt(&self.0, BODY_AAD, sealed_body)
    }
}

/// The bytes the sender's working credential signs. Recipients are sorted, so
/// the order they were given in does not matter.
pub fn document_signature_message(
    document_id: &str,
    sender_uid: &str,
    sender_credential_id: &str,
    recipient_uids: &[&str],
    sealed_header: &[u8],
    sealed_body: &[u8],
) -> Vec<u8> {
    let mut recipients: Vec<&str> = recipient_uids.to_vec();
    recipients.sort_unstable();
    let header_hash = sha256(sealed_header);
    let body_hash = sha256(sealed_body);
    let mut fields: Vec<&[u8]> = vec![
        document_id.as_bytes(),
        sender_uid.as_bytes(),
        sender_credential_id.as_bytes(),
    ];
    fields.extend(recipients.iter().map(|uid| uid.as_bytes()));
    fields.push(&header_hash);
    fields.push(&body_hash);
    let count = u32::try_from(recipients.len()).unwrap_or(u32::MAX);
    let mut message = SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(&count.to_be_bytes());
    for field in fields {
        message.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
        message.extend_from_slice(field);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> DocumentHeader {
        DocumentHeader {
            title: "Befund Labor".into(),
            media_type: "application/pdf".into(),
        }
    }

    #[test]
    fn every_recipient_and_nobody_else_opens_it() {
        let alice = RootCredential::generate().unwrap();
        let bob = RootCredential::generate().unwrap();
        let eve = RootCredential::generate().unwrap();
        let parts = seal_document(
            "doc-1",
            "sender",
            &[
                Recipient {
                    uid: "alice",
                    root_public_key: alice.public_key(),
                },
                Recipient {
                    uid: "bob",
                    root_public_key: bob.public_key(),
                },
            ],
            &header(),
            b"%PDF body",
        )
        .unwrap();
        for (uid, root) in [("alice", &alice), ("bob", &bob)] {
            let sealed_key = &parts.keys.iter().find(|(u, _)| u == uid).unwrap().1;
            let key = open_document_key(root, "doc-1", "sender", uid, sealed_key).unwrap();
            assert_eq!(key.open_header(&parts.header).unwrap(), header());
            assert_eq!(key.open_body(&parts.body).unwrap().as_slice(), b"%PDF body");
        }
        let alices = &parts.keys[0].1;
        assert!(open_document_key(&eve, "doc-1", "sender", "alice", alices).is_err());
        // A key copy moved to another document, sender or recipient does not open.
        assert!(open_document_key(&alice, "doc-2", "sender", "alice", alices).is_err());
        assert!(open_document_key(&alice, "doc-1", "mallory", "alice", alices).is_err());
        assert!(open_document_key(&alice, "doc-1", "sender", "bob", alices).is_err());
        // Header and body cannot be swapped or changed.
        let key = open_document_key(&alice, "doc-1", "sender", "alice", alices).unwrap();
        assert!(key.open_body(&parts.header).is_err());
        let mut changed = parts.body.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(key.open_body(&changed).is_err());
        assert!(key.open_body(&[1, 2, 3]).is_err());
    }

    #[test]
    fn the_signature_message_covers_everything_but_recipient_order() {
        let message = document_signature_message("d", "s", "w", &["a", "b"], b"h", b"b");
        assert_eq!(
            message,
            document_signature_message("d", "s", "w", &["b", "a"], b"h", b"b")
        );
        for other in [
            document_signature_message("e", "s", "w", &["a", "b"], b"h", b"b"),
            document_signature_message("d", "t", "w", &["a", "b"], b"h", b"b"),
            document_signature_message("d", "s", "x", &["a", "b"], b"h", b"b"),
            document_signature_message("d", "s", "w", &["a"], b"h", b"b"),
            document_signature_message("d", "s", "w", &["a", "b"], b"H", b"b"),
            document_signature_message("d", "s", "w", &["a", "b"], b"h", b"B"),
        ] {
            assert_ne!(message, other);
        }
    }

    #[test]
    fn headers_are_bounded_and_round_trip() {
        assert_eq!(
            DocumentHeader::decode(&header().encode().unwrap()).unwrap(),
            header()
        );
        for bad in [
            DocumentHeader {
                title: String::new(),
                media_type: "text/plain".into(),
            },
            DocumentHeader {
                title: "x".repeat(201),
                media_type: "text/plain".into(),
            },
            DocumentHeader {
                title: "a\nb".into(),
                media_type: "text/plain".into(),
            },
        ] {
            assert!(bad.encode().is_err());
        }
        assert!(DocumentHeader::decode(&[0, 5, b'a']).is_err());
    }
}
