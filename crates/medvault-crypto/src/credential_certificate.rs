//! X.509 certificates for working credentials' signing keys.
//!
//! The participant CA (the same P-256 key that certifies Root Credentials)
//! issues each working credential an X.509 v3 certificate for its P-256 signing
//! key. The certificate names the participant and the credential in two URI
//! subject alternative names, `urn:medvault:uid:<uid>` and
//! `urn:medvault:wc:<kind>:<id>`, so a signature made with the key verifies
//! offline to "participant U, credential W" against the pinned CA key. The
//! software-certificate credential hands this certificate to its holder in a
//! PEM file next to the key.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::CryptoError;
use crate::certificate::{ParticipantCa, PinnedCa};

const UID_URI_PREFIX: &str = "urn:medvault:uid:";
const WC_URI_PREFIX: &str = "urn:medvault:wc:";
/// The DER prefix of a SubjectPublicKeyInfo for a P-256 key (RFC 5480): the
/// algorithm `id-ecPublicKey` with `prime256v1`, then the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// The largest certificate accepted for parsing.
const MAX_CERTIFICATE_LEN: usize = 4096;

/// What a working-credential certificate binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSubject {
    /// The participant's UID.
    pub uid: String,
    /// The working credential's id.
    pub working_credential_id: String,
    /// The working credential's kind (`password`, `superpin`, `tan`,
    /// `software-certificate`, `smartcard`).
    pub kind: String,
}

/// A verified working-credential certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedCredential {
    /// Whom and which credential the key belongs to.
    pub subject: CredentialSubject,
    /// The certified P-256 public key (uncompressed SEC1).
    pub public_key: Vec<u8>,
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
}

/// Checks that `public_key` is an uncompressed P-256 point (65 bytes, on the curve).
pub fn check_p256_public_key(public_key: &[u8]) -> Result<(), CryptoError> {
    if public_key.len() != 65 || public_key.first() != Some(&0x04) {
        return Err(CryptoError::Malformed);
    }
    // aws-lc parses (and checks the point is on the curve) when it verifies;
    // an ECDH agreement with a throw-away key makes it parse now.
    crate::ec::seal_ecdh_envelope(public_key).map(|_| ())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "medvault");
    name.push(DnType::CommonName, "medvault participant CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn unix(seconds: i64) -> Result<OffsetDateTime, CryptoError> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| CryptoError::Malformed)
}

impl ParticipantCa {
    fn key_pair(&self) -> Result<KeyPair, CryptoError> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.as_slice()));
        KeyPair::from_der_and_sign_algo(&der, &PKCS_ECDSA_P256_SHA256)
            .map_err(|_| CryptoError::Malformed)
    }

    /// The CA's own self-signed X.509 certificate (DER), valid from
    /// `not_before` to `not_after` (Unix seconds), for publication: clients
    /// pin the key in it.
    pub fn ca_certificate(&self, not_before: i64, not_after: i64) -> Result<Vec<u8>, CryptoError> {
        let mut params = ca_params();
        params.not_before = unix(not_before)?;
        params.not_after = unix(not_after)?;
        let certificate = params
            .self_signed(&self.key_pair()?)
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(certificate.der().to_vec())
    }

    /// Issues the X.509 certificate of a working credential's signing key
    /// (`public_key`, an uncompressed P-256 point), valid from `not_before` to
    /// `not_after` (Unix seconds).
    pub fn certify_working_credential(
        &self,
        subject: &CredentialSubject,
        public_key: &[u8],
        not_before: i64,
        not_after: i64,
    ) -> Result<Vec<u8>, CryptoError> {
        check_p256_public_key(public_key)?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(public_key);
        let spki = SubjectPublicKeyInfo::from_der(&spki).map_err(|_| CryptoError::Malformed)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "medvault");
        name.push(DnType::CommonName, subject.working_credential_id.as_str());
        params.distinguished_name = name;
        params.not_before = unix(not_before)?;
        params.not_after = unix(not_after)?;
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| CryptoError::Encrypt)?;
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.subject_alt_names = vec![
            SanType::URI(
                format!("{UID_URI_PREFIX}{}", subject.uid)
                    .try_into()
                    .map_err(|_| CryptoError::Malformed)?,
            ),
            SanType::URI(
                format!(
                    "{WC_URI_PREFIX}{}:{}",
                    subject.kind, subject.working_credential_id
                )
                .try_into()
                .map_err(|_| CryptoError::Malformed)?,
            ),
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::new(ca_params(), self.key_pair()?);
        let certificate = params
            .signed_by(&spki, &issuer)
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(certificate.der().to_vec())
    }
}

impl PinnedCa {
    /// Verifies a working-credential certificate at `now` (Unix seconds):
    /// signed by this CA, within its validity, naming exactly one participant
    /// and one credential, for a P-256 key.
    pub fn verify_working_credential(
        &self,
        der: &[u8],
        now: i64,
    ) -> Result<CertifiedCredential, CryptoError> {
        if der.len() > MAX_CERTIFICATE_LEN {
            return Err(CryptoError::Malformed);
        }
        let (rest, certificate) =
            X509Certificate::from_der(der).map_err(|_| CryptoError::Malformed)?;
        if !rest.is_empty() {
            return Err(CryptoError::Malformed);
        }
        if certificate.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
            return Err(CryptoError::Decrypt);
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, self.public_key.as_slice())
            .verify(
                certificate.tbs_certificate.as_ref(),
                &certificate.signature_value.data,
            )
            .map_err(|_| CryptoError::Decrypt)?;
        let not_before = certificate.validity().not_before.timestamp();
        let not_after = certificate.validity().not_after.timestamp();
        if now < not_before || now > not_after {
            return Err(CryptoError::Decrypt);
        }
        let spki = certificate.public_key();
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
            return Err(CryptoError::Malformed);
        }
        let public_key = spki.subject_public_key.data.to_vec();
        check_p256_public_key(&public_key)?;
        let mut uid = None;
        let mut credential = None;
        let san = certificate
            .subject_alternative_name()
            .map_err(|_| CryptoError::Malformed)?
            .ok_or(CryptoError::Malformed)?;
        for name in &san.value.general_names {
            let GeneralName::URI(uri) = name else {
                return Err(CryptoError::Malformed);
            };
            if let Some(value) = uri.strip_prefix(UID_URI_PREFIX) {
                if uid.replace(value.to_owned()).is_some() {
                    return Err(CryptoError::Malformed);
                }
            } else if let Some(value) = uri.strip_prefix(WC_URI_PREFIX) {
                let (kind, id) = value.split_once(':').ok_or(CryptoError::Malformed)?;
                if credential
                    .replace((kind.to_owned(), id.to_owned()))
                    .is_some()
                {
                    return Err(CryptoError::Malformed);
                }
            } else {
                return Err(CryptoError::Malformed);
            }
        }
        let (Some(uid), Some((kind, working_credential_id))) = (uid, credential) else {
            return Err(CryptoError::Malformed);
        };
        Ok(CertifiedCredential {
            subject: CredentialSubject {
                uid,
                working_credential_id,
                kind,
            },
            public_key,
            not_before,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec::{SoftwareKey, enrolment_message, verify_challenge};

    const NOW: i64 = 1_795_000_000;

    fn subject() -> CredentialSubject {
        CredentialSubject {
            uid: "3f2c1d9e-1b7a-4c55-9a0e-2f6d8b1c4e70".into(),
            working_credential_id: "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
            kind: "software-certificate".into(),
        }
    }

    #[test]
    fn an_issued_certificate_verifies_offline_and_its_key_signs() {
        let (ca, _) = ParticipantCa::generate().unwrap();
        let key = SoftwareKey::generate().unwrap();
        let der = ca
            .certify_working_credential(&subject(), &key.public_key(), NOW - 60, NOW + 3600)
            .unwrap();
        let certified = ca.pinned().verify_working_credential(&der, NOW).unwrap();
        assert_eq!(certified.subject, subject());
        assert_eq!(certified.public_key, key.public_key());
        let message = enrolment_message("u", "w", "k", b"p");
        let signature = key.sign_challenge(&message).unwrap();
        verify_challenge(&certified.public_key, &message, &signature).unwrap();
        // The CA's own certificate parses and carries the pinned key.
        let ca_der = ca.ca_certificate(NOW - 60, NOW + 3600).unwrap();
        let (_, ca_certificate) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(
            ca_certificate.public_key().subject_public_key.data.as_ref(),
            ca.pinned().public_key()
        );
    }

    #[test]
    fn another_ca_a_changed_byte_or_the_wrong_time_is_refused() {
        let (ca, _) = ParticipantCa::generate().unwrap();
        let (other, _) = ParticipantCa::generate().unwrap();
        let key = SoftwareKey::generate().unwrap();
        let der = ca
            .certify_working_credential(&subject(), &key.public_key(), NOW - 60, NOW + 3600)
            .unwrap();
        assert_eq!(
            other.pinned().verify_working_credential(&der, NOW),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            ca.pinned().verify_working_credential(&der, NOW + 3601),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            ca.pinned().verify_working_credential(&der, NOW - 61),
            Err(CryptoError::Decrypt)
        );
        let uid_at = der
            .windows(subject().uid.len())
            .position(|window| window == subject().uid.as_bytes())
            .unwrap();
        let mut changed = der.clone();
        changed[uid_at] ^= 0x01;
        assert!(
            ca.pinned()
                .verify_working_credential(&changed, NOW)
                .is_err()
        );
        assert_eq!(
            ca.pinned()
                .verify_working_credential(&[0x30, 0x03, 1, 2, 3], NOW),
            Err(CryptoError::Malformed)
        );
        assert_eq!(
            ca.pinned().verify_working_credential(&vec![0; 5000], NOW),
            Err(CryptoError::Malformed)
        );
    }

    #[test]
    fn only_p256_points_are_certified() {
        let (ca, _) = ParticipantCa::generate().unwrap();
        let mut not_on_curve = vec![4u8; 65];
        not_on_curve[64] = 7;
        for bad in [vec![4u8; 33], vec![2u8; 65], not_on_curve] {
            assert_eq!(
                ca.certify_working_credential(&subject(), &bad, NOW, NOW + 1),
                Err(CryptoError::Malformed)
            );
        }
    }
}
