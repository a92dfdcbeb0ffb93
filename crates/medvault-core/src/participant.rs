//! Participants (accounts and PKI): patients, institutions and health care
//! professionals, each with a global UID.
//!
//! Invariants: a [`Uid`] is 122 random bits (UUID version 4), so it says nothing
//! about its holder or when they registered, and it is never reused; a patient
//! has no [`DisplayName`] (their directory entry names nothing), institutions and
//! professionals must have one.

use std::fmt;
use std::str::FromStr;

/// A participant's global, never reused identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(uuid::Uuid);

impl Uid {
    /// A fresh random UID.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({self})")
    }
}

/// Why a text is not a UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a UID is a version-4 UUID in hyphenated lower-case form")]
pub struct InvalidUid;

impl FromStr for Uid {
    type Err = InvalidUid;

    /// Accepts only the canonical form this type prints, so one UID has one spelling.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uuid = uuid::Uuid::try_parse(text).map_err(|_| InvalidUid)?;
        if uuid.get_version_num() != 4 || uuid.hyphenated().to_string() != text {
            return Err(InvalidUid);
        }
        Ok(Self(uuid))
    }
}

/// Which kind of institution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstitutionKind {
    /// A doctor's practice.
    Practice,
    /// A hospital.
    Hospital,
    /// A pharmacy.
    Pharmacy,
}

/// The kinds of participant of the accounts document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParticipantKind {
    /// A patient.
    Patient,
    /// An institution.
    Institution(InstitutionKind),
    /// A health care professional.
    HealthCareProfessional,
}

impl ParticipantKind {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Institution(InstitutionKind::Practice) => "institution:practice",
            Self::Institution(InstitutionKind::Hospital) => "institution:hospital",
            Self::Institution(InstitutionKind::Pharmacy) => "institution:pharmacy",
            Self::HealthCareProfessional => "hcp",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "patient" => Self::Patient,
            "institution:practice" => Self::Institution(InstitutionKind::Practice),
            "institution:hospital" => Self::Institution(InstitutionKind::Hospital),
            "institution:pharmacy" => Self::Institution(InstitutionKind::Pharmacy),
            "hcp" => Self::HealthCareProfessional,
            _ => return None,
        })
    }

    /// Whether the directory shows a name for this kind (not for patients).
    pub const fn has_display_name(self) -> bool {
        !matches!(self, Self::Patient)
    }
}

/// The public name of an institution or professional: 1 to 200 characters,
/// no control characters, no leading or trailing space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Why a text is not a display name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a display name has 1 to 200 characters, no control characters and no surrounding spaces")]
pub struct InvalidDisplayName;

impl DisplayName {
    /// Validates a display name.
    pub fn parse(text: &str) -> Result<Self, InvalidDisplayName> {
        let length = text.chars().count();
        let valid = (1..=200).contains(&length)
            && !text.chars().any(char::is_control)
            && text.trim() == text;
        if !valid {
            return Err(InvalidDisplayName);
        }
        Ok(Self(text.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_round_trip_in_one_spelling_only() {
        let uid = Uid::generate();
        assert_eq!(uid.to_string().parse::<Uid>().unwrap(), uid);
        assert!(uid.to_string().to_uppercase().parse::<Uid>().is_err());
        assert!(uid.to_string().replace('-', "").parse::<Uid>().is_err());
        assert!(
            "00000000-0000-1000-8000-000000000000"
                .parse::<Uid>()
                .is_err(),
            "v1 accepted"
        );
        assert_ne!(Uid::generate(), Uid::generate());
    }

    #[test]
    fn kinds_round_trip_and_only_patients_are_nameless() {
        for kind in [
            ParticipantKind::Patient,
            ParticipantKind::Institution(InstitutionKind::Practice),
            ParticipantKind::Institution(InstitutionKind::Hospital),
            ParticipantKind::Institution(InstitutionKind::Pharmacy),
            ParticipantKind::HealthCareProfessional,
        ] {
            assert_eq!(ParticipantKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.has_display_name(), kind != ParticipantKind::Patient);
        }
        assert_eq!(ParticipantKind::parse("admin"), None);
    }

    #[test]
    fn display_names_are_bounded_and_clean() {
        assert!(DisplayName::parse("Praxis Dr. Weiß").is_ok());
        for bad in ["", " leading", "trailing ", "line\nbreak", &"x".repeat(201)] {
            assert_eq!(DisplayName::parse(bad), Err(InvalidDisplayName), "{bad:?}");
        }
    }
}
