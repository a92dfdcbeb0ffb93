//! Bitstring status lists (W3C Bitstring Status List v1.0): each institution
//! publishes two lists, `revocation` and `suspension`, of
//! [`STATUS_LIST_BITS`] bits; a credential's bit is set when it is revoked
//! (for good) or suspended (until reinstated). Indexes are drawn at random so
//! a list tells nobody in which order credentials were issued.
//!
//! The encoding is the specification's: the bitstring (index 0 is the most
//! significant bit of the first byte), GZIP-compressed, base64url without
//! padding, prefixed with the multibase `u`.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// Bits per list: the specification's minimum (16 KiB), for herd privacy.
pub const STATUS_LIST_BITS: usize = 131_072;

/// What a list's set bit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusPurpose {
    /// Revoked for good.
    Revocation,
    /// Suspended; may be reinstated.
    Suspension,
}

impl StatusPurpose {
    /// The specification's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Revocation => "revocation",
            Self::Suspension => "suspension",
        }
    }

    /// Reads [`Self::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "revocation" => Some(Self::Revocation),
            "suspension" => Some(Self::Suspension),
            _ => None,
        }
    }

    /// The stored credential status whose credentials this list marks.
    pub const fn marks(self) -> &'static str {
        match self {
            Self::Revocation => "revoked",
            Self::Suspension => "suspended",
        }
    }
}

/// Why an encoded list could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed status list: {0}")]
pub struct StatusListError(&'static str);

/// Encodes a list of [`STATUS_LIST_BITS`] bits with `set` set.
pub fn encode_status_list(set: &[i64]) -> Result<String, StatusListError> {
    let mut bits = vec![0u8; STATUS_LIST_BITS / 8];
    for &index in set {
        let index = usize::try_from(index).map_err(|_| StatusListError("index"))?;
        let byte = bits
            .get_mut(index / 8)
            .ok_or(StatusListError("index out of range"))?;
        *byte |= 0x80 >> (index % 8);
    }
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(&bits)
        .map_err(|_| StatusListError("gzip"))?;
    let compressed = encoder.finish().map_err(|_| StatusListError("gzip"))?;
    Ok(format!("u{}", URL_SAFE_NO_PAD.encode(compressed)))
}

/// Whether bit `index` is set in an encoded list (at most 16 MiB of bits,
/// so a hostile list cannot exhaust memory).
pub fn status_list_bit(encoded: &str, index: usize) -> Result<bool, StatusListError> {
    const MAX_BYTES: u64 = 16 * 1024 * 1024;
    let body = encoded
        .strip_prefix('u')
        .ok_or(StatusListError("multibase prefix"))?;
    let compressed = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| StatusListError("base64url"))?;
    let mut bits = Vec::new();
    GzDecoder::new(compressed.as_slice())
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bits)
        .map_err(|_| StatusListError("gzip"))?;
    if bits.len() as u64 > MAX_BYTES || bits.len() * 8 < STATUS_LIST_BITS {
        return Err(StatusListError("length"));
    }
    let byte = bits
        .get(index / 8)
        .ok_or(StatusListError("index out of range"))?;
    Ok(byte & (0x80 >> (index % 8)) != 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    #[test]
    fn set_bits_read_back_and_others_stay_clear() {
        let encoded = encode_status_list(&[0, 7, 8, 131_071]).unwrap();
        for index in [0, 7, 8, 131_071] {
            assert!(status_list_bit(&encoded, index).unwrap(), "{index}");
        }
        for index in [1, 6, 9, 65_536, 131_070] {
            assert!(!status_list_bit(&encoded, index).unwrap(), "{index}");
        }
        // Index 0 is the most significant bit of the first byte.
        let bits = {
            let compressed = URL_SAFE_NO_PAD.decode(&encoded[1..]).unwrap();
            let mut out = Vec::new();
            GzDecoder::new(compressed.as_slice())
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        assert_eq!(bits.len(), STATUS_LIST_BITS / 8);
        assert_eq!(bits[0], 0b1000_0001);
        assert_eq!(bits[1], 0b1000_0000);
        assert!(encode_status_list(&[131_072]).is_err());
        assert!(encode_status_list(&[-1]).is_err());
        assert!(status_list_bit(&encoded, 131_072).is_err());
        assert!(status_list_bit("zabc", 0).is_err());
        assert!(status_list_bit("uAAAA", 0).is_err());
    }
}
