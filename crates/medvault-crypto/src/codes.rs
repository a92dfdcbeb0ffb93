//! SuperPIN and TAN working credentials: high-entropy codes a person writes down.
//!
//! A [`RecoveryCode`] is random, shown once, in Crockford base32 (no I, L, O, U;
//! case-insensitive; `0`/`O` and `1`/`I`/`L` read alike) and in groups, like a
//! PUK. A SuperPIN has 25 characters (125 bits), a TAN 16 (80 bits). Two
//! independent values are derived from a code with HKDF-SHA256 and a per-code
//! salt: the **verifier** the server stores to check a login, and the **key
//! material** the client turns into the KEK that wraps the Root Credential.
//! Knowing the verifier gives neither the code nor the key material (the code's
//! entropy makes offline guessing hopeless).

use std::fmt;

use aws_lc_rs::constant_time;
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use zeroize::Zeroizing;

use crate::CryptoError;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const VERIFIER_INFO: &[u8] = b"medvault.code.verifier.v1";
const KEY_MATERIAL_INFO: &[u8] = b"medvault.code.key-material.v1";
const SALT_DOMAIN: &[u8] = b"medvault.code-salt.v1\0";
const STORED_PROOF_DOMAIN: &[u8] = b"medvault.code.stored-proof.v1\0";

/// The salt of a participant's code: their UID, the kind and the code's number
/// (the TAN's number on the printed list; 0 for the SuperPIN). Public and
/// computable by the client from what is printed with the codes.
pub fn code_salt(uid: &str, kind: CodeKind, number: u32) -> Vec<u8> {
    let label: &[u8] = match kind {
        CodeKind::SuperPin => b"superpin",
        CodeKind::Tan => b"tan",
    };
    let mut salt = Vec::with_capacity(SALT_DOMAIN.len() + uid.len() + 16);
    salt.extend_from_slice(SALT_DOMAIN);
    salt.extend_from_slice(uid.as_bytes());
    salt.push(0);
    salt.extend_from_slice(label);
    salt.push(0);
    salt.extend_from_slice(&number.to_be_bytes());
    salt
}

/// What the server stores for a code: a hash of the login proof the client
/// sends ([`RecoveryCode::verifier`]). A database thief gets neither the code,
/// nor its key material, nor a proof that would log in.
pub fn stored_proof(proof: &[u8]) -> Vec<u8> {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(STORED_PROOF_DOMAIN);
    context.update(proof);
    context.finish().as_ref().to_vec()
}

/// Whether two hashes are equal, in constant time.
pub fn proof_matches_hash(candidate: &[u8], stored: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(candidate, stored).is_ok()
}

/// Whether a login proof matches what [`stored_proof`] made (constant time).
pub fn proof_matches(proof: &[u8], stored: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(&stored_proof(proof), stored).is_ok()
}

/// Which kind of code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// The recovery SuperPIN: 25 characters, 125 bits, groups of 5.
    SuperPin,
    /// A one-time TAN: 16 characters, 80 bits, groups of 4.
    Tan,
}

impl CodeKind {
    const fn length(self) -> usize {
        match self {
            Self::SuperPin => 25,
            Self::Tan => 16,
        }
    }

    const fn group(self) -> usize {
        match self {
            Self::SuperPin => 5,
            Self::Tan => 4,
        }
    }
}

/// A SuperPIN or TAN. Zeroized on drop; `Debug` is redacted.
pub struct RecoveryCode {
    kind: CodeKind,
    symbols: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryCode({:?}, <redacted>)", self.kind)
    }
}

struct Length(usize);

impl KeyType for Length {
    fn len(&self) -> usize {
        self.0
    }
}

impl RecoveryCode {
    /// A fresh random code from the system's random source.
    pub fn generate(kind: CodeKind) -> Result<Self, CryptoError> {
        let mut random = Zeroizing::new(vec![0u8; kind.length()]);
        aws_lc_rs::rand::fill(&mut random).map_err(|_| CryptoError::Encrypt)?;
        // Each byte's low 5 bits pick a symbol: 256 is a multiple of 32, so uniform.
        let symbols = random.iter().map(|byte| byte & 0x1f).collect();
        Ok(Self {
            kind,
            symbols: Zeroizing::new(symbols),
        })
    }

    /// A batch of TANs.
    pub fn generate_tans(count: usize) -> Result<Vec<Self>, CryptoError> {
        (0..count).map(|_| Self::generate(CodeKind::Tan)).collect()
    }

    /// Reads a code as a person typed it: case, spaces and hyphens do not matter,
    /// and `O`, `I`, `L` are read as `0`, `1`, `1`.
    pub fn parse(kind: CodeKind, text: &str) -> Result<Self, CryptoError> {
        let mut symbols = Zeroizing::new(Vec::with_capacity(kind.length()));
        for c in text.chars() {
            if c == '-' || c == ' ' {
                continue;
            }
            let c = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                other => other,
            };
            let position = ALPHABET
                .iter()
                .position(|&a| char::from(a) == c)
                .ok_or(CryptoError::Malformed)?;
            symbols.push(u8::try_from(position).map_err(|_| CryptoError::Malformed)?);
            if symbols.len() > kind.length() {
                return Err(CryptoError::Malformed);
            }
        }
        if symbols.len() != kind.length() {
            return Err(CryptoError::Malformed);
        }
        Ok(Self { kind, symbols })
    }

    /// The code for display, in groups (`ABCDE-FGHJK-...`). Show it once.
    pub fn display(&self) -> Zeroizing<String> {
        let mut text = String::with_capacity(self.symbols.len() * 2);
        for (index, &symbol) in self.symbols.iter().enumerate() {
            if index > 0 && index % self.kind.group() == 0 {
                text.push('-');
            }
            text.push(char::from(
                *ALPHABET.get(usize::from(symbol)).unwrap_or(&b'0'),
            ));
        }
        Zeroizing::new(text)
    }

    fn derive(&self, salt: &[u8], info: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let prk = Salt::new(HKDF_SHA256, salt).extract(&self.symbols);
        let info_parts = [info];
        let okm = prk
            .expand(&info_parts, Length(32))
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Zeroizing::new(vec![0u8; 32]);
        okm.fill(&mut out).map_err(|_| CryptoError::Encrypt)?;
        Ok(out)
    }

    /// The login proof the client sends for this code (with its [`code_salt`]).
    pub fn verifier(&self, salt: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(self.derive(salt, VERIFIER_INFO)?.to_vec())
    }

    /// Whether this code matches a stored verifier (constant time).
    pub fn matches(&self, salt: &[u8], stored_verifier: &[u8]) -> bool {
        self.derive(salt, VERIFIER_INFO).is_ok_and(|candidate| {
            constant_time::verify_slices_are_equal(&candidate, stored_verifier).is_ok()
        })
    }

    /// The input key material for this credential's KEK (never sent to the server).
    pub fn key_material(&self, salt: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.derive(salt, KEY_MATERIAL_INFO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_promised_length_and_grouping() {
        let pin = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
        let shown = pin.display();
        assert_eq!(shown.len(), 25 + 4, "{}", shown.as_str());
        assert_eq!(
            shown.split('-').map(str::len).collect::<Vec<_>>(),
            vec![5; 5]
        );
        let tans = RecoveryCode::generate_tans(20).unwrap();
        assert_eq!(tans.len(), 20);
        assert!(
            tans.iter().all(
                |tan| tan.display().split('-').map(str::len).collect::<Vec<_>>() == vec![4; 4]
            )
        );
        let mut shown: Vec<String> = tans.iter().map(|tan| tan.display().to_string()).collect();
        shown.sort();
        shown.dedup();
        assert_eq!(shown.len(), 20);
    }

    #[test]
    fn typed_codes_parse_forgivingly_and_round_trip() {
        let pin = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
        let typed = pin.display().to_lowercase().replace('-', " ");
        let parsed = RecoveryCode::parse(CodeKind::SuperPin, &typed).unwrap();
        assert_eq!(parsed.display().as_str(), pin.display().as_str());
        let a = RecoveryCode::parse(CodeKind::Tan, "0O1I-L000-1111-2222").unwrap();
        let b = RecoveryCode::parse(CodeKind::Tan, "0011-1000-1111-2222").unwrap();
        assert_eq!(a.display().as_str(), b.display().as_str());
        for bad in [
            "",
            "0000-0000-0000-000",
            "0000-0000-0000-00000",
            "UUUU-0000-0000-0000",
            "0000-0000-0000-000!",
        ] {
            assert_eq!(
                RecoveryCode::parse(CodeKind::Tan, bad).unwrap_err(),
                CryptoError::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_verifier_checks_the_code_but_does_not_reveal_the_key_material() {
        let salt = [3u8; 16];
        let pin = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
        let stored = pin.verifier(&salt).unwrap();
        let typed = RecoveryCode::parse(CodeKind::SuperPin, &pin.display()).unwrap();
        assert!(typed.matches(&salt, &stored));
        let other = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
        assert!(!other.matches(&salt, &stored));
        assert!(!typed.matches(&[4u8; 16], &stored), "the salt is bound");
        assert_ne!(
            pin.key_material(&salt).unwrap().as_slice(),
            stored.as_slice()
        );
        assert_eq!(format!("{pin:?}"), "RecoveryCode(SuperPin, <redacted>)");
    }

    #[test]
    fn a_tan_unwraps_the_root_key_it_wrapped() {
        use crate::{KeyEncryptionKey, RootCredential, WrapBinding};
        let salt = [9u8; 16];
        let tan = RecoveryCode::generate(CodeKind::Tan).unwrap();
        let binding = WrapBinding {
            uid: "uid".into(),
            working_credential_id: "tan-7".into(),
        };
        let credential = RootCredential::generate().unwrap();
        let wrapped = KeyEncryptionKey::derive(&tan.key_material(&salt).unwrap(), &binding)
            .unwrap()
            .wrap(credential.private_key(), &binding)
            .unwrap();
        let typed = RecoveryCode::parse(CodeKind::Tan, &tan.display()).unwrap();
        let kek = KeyEncryptionKey::derive(&typed.key_material(&salt).unwrap(), &binding).unwrap();
        kek.unwrap(&wrapped, &binding).unwrap();
    }

    #[test]
    fn the_server_keeps_a_hash_of_the_proof_only() {
        let code = RecoveryCode::generate(CodeKind::Tan).unwrap();
        let salt = code_salt("uid-1", CodeKind::Tan, 3);
        assert_ne!(salt, code_salt("uid-1", CodeKind::Tan, 4));
        assert_ne!(salt, code_salt("uid-1", CodeKind::SuperPin, 3));
        assert_ne!(salt, code_salt("uid-2", CodeKind::Tan, 3));
        let proof = code.verifier(&salt).unwrap();
        let stored = stored_proof(&proof);
        assert_ne!(stored, proof);
        assert!(proof_matches(&proof, &stored));
        assert!(!proof_matches(&stored, &stored));
        let other = RecoveryCode::generate(CodeKind::Tan).unwrap();
        assert!(!proof_matches(&other.verifier(&salt).unwrap(), &stored));
    }
}
