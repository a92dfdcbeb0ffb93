//! The software-certificate credential's file: the X.509 certificate the
//! participant CA issued and the P-256 private key, in one PEM file; the key as
//! PKCS#8, optionally encrypted with a passphrase (PKCS#5 PBES2: scrypt and
//! AES-256-CBC, as the `pkcs8` crate makes it).

use pkcs8::der::Decode;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::ec::SoftwareKey;

const CERTIFICATE_TAG: &str = "CERTIFICATE";
const KEY_TAG: &str = "PRIVATE KEY";
const ENCRYPTED_KEY_TAG: &str = "ENCRYPTED PRIVATE KEY";
/// The largest credential file read.
pub const MAX_SOFTWARE_FILE_LEN: usize = 16 * 1024;

/// A software-certificate credential: certificate and key.
#[derive(Debug)]
pub struct SoftwareCredentialFile {
    /// The CA's X.509 certificate (DER) of the key.
    pub certificate: Vec<u8>,
    /// The key.
    pub key: SoftwareKey,
}

impl SoftwareCredentialFile {
    /// The PEM text: the certificate, then the key (encrypted if `passphrase` is given).
    pub fn to_pem(&self, passphrase: Option<&[u8]>) -> Result<Zeroizing<String>, CryptoError> {
        let key = match passphrase {
            Some(passphrase) => {
                let info = PrivateKeyInfo::from_der(self.key.pkcs8())
                    .map_err(|_| CryptoError::Malformed)?;
                let encrypted = info
                    .encrypt(rand_core_06::OsRng, passphrase)
                    .map_err(|_| CryptoError::Encrypt)?;
                pem::Pem::new(ENCRYPTED_KEY_TAG, encrypted.as_bytes().to_vec())
            }
            None => pem::Pem::new(KEY_TAG, self.key.pkcs8().to_vec()),
        };
        let certificate = pem::Pem::new(CERTIFICATE_TAG, self.certificate.clone());
        Ok(Zeroizing::new(pem::encode_many(&[certificate, key])))
    }

    /// Reads a file made by [`Self::to_pem`] (or by hand from the same parts).
    /// An encrypted key needs `passphrase`; the key must be the certificate's.
    pub fn from_pem(text: &str, passphrase: Option<&[u8]>) -> Result<Self, CryptoError> {
        if text.len() > MAX_SOFTWARE_FILE_LEN {
            return Err(CryptoError::Malformed);
        }
        let sections = pem::parse_many(text).map_err(|_| CryptoError::Malformed)?;
        let mut certificate = None;
        let mut key = None;
        for section in &sections {
            match section.tag() {
                CERTIFICATE_TAG if certificate.is_none() => {
                    certificate = Some(section.contents().to_vec());
                }
                KEY_TAG if key.is_none() => {
                    key = Some(SoftwareKey::from_pkcs8(section.contents())?);
                }
                ENCRYPTED_KEY_TAG if key.is_none() => {
                    let passphrase = passphrase.ok_or(CryptoError::Decrypt)?;
                    let info = EncryptedPrivateKeyInfo::from_der(section.contents())
                        .map_err(|_| CryptoError::Malformed)?;
                    let document = info.decrypt(passphrase).map_err(|_| CryptoError::Decrypt)?;
                    key = Some(SoftwareKey::from_pkcs8(document.as_bytes())?);
                }
                _ => return Err(CryptoError::Malformed),
            }
        }
        let (Some(certificate), Some(key)) = (certificate, key) else {
            return Err(CryptoError::Malformed);
        };
        let (_, parsed) =
            X509Certificate::from_der(&certificate).map_err(|_| CryptoError::Malformed)?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key().as_slice() {
            return Err(CryptoError::Malformed);
        }
        Ok(Self { certificate, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CredentialSubject, ParticipantCa};

    fn file() -> SoftwareCredentialFile {
        let (ca, _) = ParticipantCa::generate().unwrap();
        let key = SoftwareKey::generate().unwrap();
        let subject = CredentialSubject {
            uid: "3f2c1d9e-1b7a-4c55-9a0e-2f6d8b1c4e70".into(),
            working_credential_id: "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
            kind: "software-certificate".into(),
        };
        let certificate = ca
            .certify_working_credential(&subject, &key.public_key(), 0, 4_000_000_000)
            .unwrap();
        SoftwareCredentialFile { certificate, key }
    }

    #[test]
    fn a_file_round_trips_plain_and_encrypted() {
        let original = file();
        let plain = original.to_pem(None).unwrap();
        assert!(plain.contains("-----BEGIN PRIVATE KEY-----"));
        let read = SoftwareCredentialFile::from_pem(&plain, None).unwrap();
        assert_eq!(read.key.public_key(), original.key.public_key());
        assert_eq!(read.certificate, original.certificate);

        let encrypted = original.to_pem(Some(b"passphrase")).unwrap();
        assert!(encrypted.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert!(!encrypted.contains("-----BEGIN PRIVATE KEY-----"));
        let read = SoftwareCredentialFile::from_pem(&encrypted, Some(b"passphrase")).unwrap();
        assert_eq!(read.key.public_key(), original.key.public_key());
        assert_eq!(
            SoftwareCredentialFile::from_pem(&encrypted, Some(b"wrong")).unwrap_err(),
            CryptoError::Decrypt
        );
        assert_eq!(
            SoftwareCredentialFile::from_pem(&encrypted, None).unwrap_err(),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let one = file();
        let other = file();
        let mixed = SoftwareCredentialFile {
            certificate: one.certificate,
            key: other.key,
        };
        let text = mixed.to_pem(None).unwrap();
        assert_eq!(
            SoftwareCredentialFile::from_pem(&text, None).unwrap_err(),
            CryptoError::Malformed
        );
        assert!(SoftwareCredentialFile::from_pem("garbage", None).is_err());
        assert!(SoftwareCredentialFile::from_pem(&"A".repeat(20_000), None).is_err());
    }
}
