//! Working credentials (accounts and PKI): the five kinds of the document and
//! the email a password credential logs in with.
//!
//! Invariants: an [`Email`] is stored and compared only in its normalized form
//! (trimmed, lower case), so one address has one account; its `Debug` prints
//! no address, so it cannot reach a log by accident.

use std::fmt;

/// The kinds of working credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkingCredentialKind {
    /// Email + password (OPAQUE).
    Password,
    /// The recovery code shown once at registration.
    SuperPin,
    /// A printed batch of one-time codes.
    Tan,
    /// A P-256 key and X.509 certificate in a file.
    SoftwareCertificate,
    /// A P-256 key on a PKCS#11 token.
    Smartcard,
}

impl WorkingCredentialKind {
    /// Every kind, in the document's order.
    pub const ALL: [Self; 5] = [
        Self::Password,
        Self::SuperPin,
        Self::Tan,
        Self::SoftwareCertificate,
        Self::Smartcard,
    ];

    /// The stored and wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::SuperPin => "superpin",
            Self::Tan => "tan",
            Self::SoftwareCertificate => "software-certificate",
            Self::Smartcard => "smartcard",
        }
    }

    /// Reads [`Self::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether the credential holds its own P-256 key outside medvault (a file
    /// or a card): it logs in by signing a challenge and its KEK comes from an
    /// ECDH agreement. The other kinds are knowledge the user types.
    pub const fn holds_key(self) -> bool {
        matches!(self, Self::SoftwareCertificate | Self::Smartcard)
    }
}

/// The longest email address accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// A normalized email address (the login name of a password credential).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Why a text is not an acceptable email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an email address is local@domain, at most 254 characters, without spaces")]
pub struct InvalidEmail;

impl Email {
    /// Normalizes and checks an address: surrounding white space is dropped and
    /// the whole address is lower-cased (so `Anna@Example.org` and
    /// `anna@example.org` are one account); exactly one `@`, a non-empty local
    /// part, a domain with a dot, no white space or control characters.
    pub fn parse(text: &str) -> Result<Self, InvalidEmail> {
        let normalized = text.trim().to_lowercase();
        if normalized.len() > MAX_EMAIL_LEN
            || normalized
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidEmail);
        }
        let (local, domain) = normalized.split_once('@').ok_or(InvalidEmail)?;
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(InvalidEmail);
        }
        Ok(Self(normalized))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in WorkingCredentialKind::ALL {
            assert_eq!(WorkingCredentialKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(WorkingCredentialKind::parse("Password"), None);
        assert!(WorkingCredentialKind::Smartcard.holds_key());
        assert!(!WorkingCredentialKind::Tan.holds_key());
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        let email = Email::parse("  Anna.Muster@Example.ORG ").unwrap();
        assert_eq!(email.as_str(), "anna.muster@example.org");
        assert_eq!(email, Email::parse("anna.muster@example.org").unwrap());
        assert_eq!(format!("{email:?}"), "Email(<redacted>)");
        let long = format!("{}@example.org", "a".repeat(250));
        for bad in [
            "",
            "anna",
            "@example.org",
            "anna@",
            "anna@example",
            "anna@@example.org",
            "an na@example.org",
            "anna@example.org.",
            "anna@.example.org",
            "anna\u{0}@example.org",
            long.as_str(),
        ] {
            assert_eq!(Email::parse(bad), Err(InvalidEmail), "{bad:?}");
        }
    }
}

/// The identity assurance of a session (NIST SP 800-63A levels).
///
/// A working credential alone gives [`Assurance::Ial1`]: it proves the same
/// person as at registration, not who they are. Presenting a Patient
/// Credential (issued after identity proofing at IAL2) lifts a session to
/// [`Assurance::Ial2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Assurance {
    /// Self-asserted identity.
    Ial1,
    /// Identity proofed at IAL2 (a Patient Credential was presented).
    Ial2,
}

impl Assurance {
    /// The stored and wire spelling (`IAL1`, `IAL2`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ial1 => "IAL1",
            Self::Ial2 => "IAL2",
        }
    }

    /// Reads [`Self::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "IAL1" => Some(Self::Ial1),
            "IAL2" => Some(Self::Ial2),
            _ => None,
        }
    }
}
