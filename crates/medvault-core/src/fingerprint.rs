//! SHA-256 fingerprints of X.509 certificates.
//!
//! A client certificate is identified by the SHA-256 digest of its DER bytes
//! (RFC 8705 `x5t#S256` uses the same digest). The fingerprint is computed by the
//! crate that holds the bytes (it needs a hash implementation); this type only
//! carries and prints it.

use std::fmt;
use std::str::FromStr;

/// The SHA-256 digest of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateFingerprint([u8; 32]);

impl CertificateFingerprint {
    /// Wraps an already computed SHA-256 digest.
    pub const fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The raw 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hexadecimal, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateFingerprint({})", self.to_hex())
    }
}

impl fmt::Display for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a text is not a certificate fingerprint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a certificate fingerprint is 64 hexadecimal characters (SHA-256)")]
pub struct InvalidFingerprint;

impl FromStr for CertificateFingerprint {
    type Err = InvalidFingerprint;

    /// Parses 64 hex characters; colons between byte pairs are accepted, as
    /// `openssl x509 -fingerprint -sha256` prints them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let compact: String = text.chars().filter(|c| *c != ':').collect();
        let mut digest = [0u8; 32];
        hex::decode_to_slice(compact, &mut digest).map_err(|_| InvalidFingerprint)?;
        Ok(Self(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_colon_separated_hex() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        let a: CertificateFingerprint = plain.parse().unwrap();
        let b: CertificateFingerprint = colons.parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_hex(), plain);
    }

    #[test]
    fn refuses_wrong_length_or_alphabet() {
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert_eq!(
                bad.parse::<CertificateFingerprint>(),
                Err(InvalidFingerprint),
                "{bad}"
            );
        }
    }
}
