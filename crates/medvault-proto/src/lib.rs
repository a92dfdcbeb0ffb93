//! Wire types of medvault's JSON API under `/api/v1`, shared by the server and
//! the SDK so both sides agree on every field.
//!
//! This crate owns the serde shapes only: field names, optionality and the
//! encoding of binary values (unpadded base64url, RFC 4648 §5, in the
//! [`Bytes`] type). It validates nothing beyond the encoding; the server's
//! domain crates check every value. Unknown fields are refused, so a typo in
//! a client shows up as a 400 instead of being ignored.

pub mod accounts;
pub mod audit;
pub mod credentials;
pub mod devices;
pub mod documents;
pub mod hddt;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Binary data, carried as an unpadded base64url string.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&[u8]> for Bytes {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl fmt::Debug for Bytes {
    /// Prints the length only: wire values may be wrapped keys or proofs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Base64Url;
        impl Visitor<'_> for Base64Url {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unpadded base64url string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Bytes, E> {
                URL_SAFE_NO_PAD
                    .decode(text)
                    .map(Bytes)
                    .map_err(|_| E::custom("not unpadded base64url"))
            }
        }
        deserializer.deserialize_str(Base64Url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_travel_as_unpadded_base64url() {
        let bytes = Bytes(vec![0xfb, 0xff, 0x00]);
        let json = serde_json::to_string(&bytes).unwrap();
        assert_eq!(json, "\"-_8A\"");
        assert_eq!(serde_json::from_str::<Bytes>(&json).unwrap(), bytes);
        assert!(serde_json::from_str::<Bytes>("\"+/8A\"").is_err());
        assert!(serde_json::from_str::<Bytes>("\"-_8A==\"").is_err());
        assert!(serde_json::from_str::<Bytes>("12").is_err());
        assert_eq!(format!("{bytes:?}"), "Bytes(3 bytes)");
    }
}
