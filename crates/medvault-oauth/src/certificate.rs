//! The checks on a DiGA's client certificate before it is registered (guide
//! §security-and-privacy; BSI TR-02102-1/-2): X.509 (self-signed allowed),
//! `digitalSignature` key usage and `clientAuth` extended key usage, a
//! validity of 365 to 398 days that covers now, and a key and signature
//! TR-02102 accepts: ECDSA on P-256, P-384 or P-521, or RSA of at least
//! 3000 bits; signatures with SHA-256/384/512 (ECDSA, PKCS#1 v1.5, PSS).
//! SHA-1, MD5, DSA and short RSA keys are refused.

use medvault_core::CertificateFingerprint;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_SIG_ECDSA_WITH_SHA512,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// The shortest RSA modulus accepted (TR-02102-1: 3000 bits from 2023 on).
pub const MIN_RSA_BITS: usize = 3000;
/// The validity period's bounds, in days.
pub const VALIDITY_DAYS: std::ops::RangeInclusive<i64> = 365..=398;

/// Why a certificate cannot be registered (each names the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Not a DER X.509 certificate (or trailing bytes).
    #[error("not a DER X.509 certificate")]
    Malformed,
    /// The validity period is shorter than 365 or longer than 398 days.
    #[error("the validity must be 365 to 398 days")]
    ValidityPeriod,
    /// Not valid now.
    #[error("the certificate is not valid now")]
    NotValidNow,
    /// `digitalSignature` key usage missing.
    #[error("the key usage must include digitalSignature")]
    KeyUsage,
    /// `clientAuth` extended key usage missing.
    #[error("the extended key usage must include clientAuth")]
    ExtendedKeyUsage,
    /// A key type, curve or size outside TR-02102.
    #[error("the key must be ECDSA P-256/P-384/P-521 or RSA of at least 3000 bits")]
    Key,
    /// A signature algorithm outside TR-02102 (SHA-1, MD5, ...).
    #[error("the signature algorithm must use SHA-256, SHA-384 or SHA-512")]
    SignatureAlgorithm,
}

/// What registration keeps about a certificate that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCertificate {
    /// SHA-256 of the DER.
    pub fingerprint: CertificateFingerprint,
    /// Not before (Unix seconds).
    pub not_before: i64,
    /// Not after (Unix seconds).
    pub not_after: i64,
}

/// Checks `der` at `now` (Unix seconds).
pub fn check_client_certificate(
    der: &[u8],
    now: i64,
) -> Result<CheckedCertificate, CertificateError> {
    let (rest, certificate) =
        X509Certificate::from_der(der).map_err(|_| CertificateError::Malformed)?;
    if !rest.is_empty() {
        return Err(CertificateError::Malformed);
    }
    let validity = certificate.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let days = not_after.saturating_sub(not_before) / 86_400;
    if !VALIDITY_DAYS.contains(&days) {
        return Err(CertificateError::ValidityPeriod);
    }
    if now < not_before || now > not_after {
        return Err(CertificateError::NotValidNow);
    }
    if !matches!(certificate.key_usage(), Ok(Some(usage)) if usage.value.digital_signature()) {
        return Err(CertificateError::KeyUsage);
    }
    if !matches!(certificate.extended_key_usage(), Ok(Some(usage)) if usage.value.client_auth) {
        return Err(CertificateError::ExtendedKeyUsage);
    }
    let spki = certificate.public_key();
    let key_ok = if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.as_oid().ok());
        matches!(curve, Some(oid) if oid == OID_EC_P256 || oid == OID_NIST_EC_P384 || oid == OID_NIST_EC_P521)
    } else if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
        matches!(spki.parsed(), Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= MIN_RSA_BITS)
    } else {
        false
    };
    if !key_ok {
        return Err(CertificateError::Key);
    }
    let algorithm = &certificate.signature_algorithm.algorithm;
    if ![
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ECDSA_WITH_SHA512,
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
        OID_PKCS1_RSASSAPSS,
    ]
    .contains(algorithm)
    {
        return Err(CertificateError::SignatureAlgorithm);
    }
    Ok(CheckedCertificate {
        fingerprint: CertificateFingerprint::from_digest(medvault_crypto::sha256(der)),
        not_before,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use medvault_testkit::{CertificateSpec, TestCertificate, wall_clock_now};
    use time::Duration;

    use super::*;

    fn check(spec: &CertificateSpec) -> Result<CheckedCertificate, CertificateError> {
        let certificate = TestCertificate::self_signed(spec);
        check_client_certificate(&certificate.der, wall_clock_now().unix_timestamp())
    }

    #[test]
    fn a_diga_certificate_passes_and_each_rule_refuses() {
        let good = CertificateSpec::diga("DiGA Test");
        let checked = check(&good).unwrap();
        assert_eq!(checked.not_after - checked.not_before, 365 * 86_400);
        let p384 = CertificateSpec {
            algorithm: &rcgen::PKCS_ECDSA_P384_SHA384,
            ..good.clone()
        };
        assert!(check(&p384).is_ok());
        let now = wall_clock_now();
        for (spec, error) in [
            (
                CertificateSpec {
                    not_after: good.not_before + Duration::days(399),
                    ..good.clone()
                },
                CertificateError::ValidityPeriod,
            ),
            (
                CertificateSpec {
                    not_after: good.not_before + Duration::days(364),
                    ..good.clone()
                },
                CertificateError::ValidityPeriod,
            ),
            (
                CertificateSpec {
                    not_before: now + Duration::days(2),
                    not_after: now + Duration::days(367),
                    ..good.clone()
                },
                CertificateError::NotValidNow,
            ),
            (
                CertificateSpec {
                    digital_signature: false,
                    ..good.clone()
                },
                CertificateError::KeyUsage,
            ),
            (
                CertificateSpec {
                    client_auth: false,
                    ..good.clone()
                },
                CertificateError::ExtendedKeyUsage,
            ),
            (
                CertificateSpec {
                    algorithm: &rcgen::PKCS_ED25519,
                    ..good.clone()
                },
                CertificateError::Key,
            ),
            (
                CertificateSpec {
                    algorithm: &rcgen::PKCS_RSA_SHA256,
                    ..good.clone()
                },
                CertificateError::Key,
            ),
        ] {
            assert_eq!(check(&spec), Err(error), "{error}");
        }
        let mut der = TestCertificate::self_signed(&good).der;
        der.push(0);
        assert_eq!(
            check_client_certificate(&der, now.unix_timestamp()),
            Err(CertificateError::Malformed)
        );
        assert_eq!(
            check_client_certificate(b"not a certificate", now.unix_timestamp()),
            Err(CertificateError::Malformed)
        );
    }
}
