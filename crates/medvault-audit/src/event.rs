//! What an audit entry says: the event handed to `append`, and the record read back.

use serde_json::{Map, Value};
use time::OffsetDateTime;

/// The largest serialized detail an entry may carry.
pub const MAX_DETAIL_BYTES: usize = 2048;

/// Fragments that, anywhere in a detail key with its separators removed, mark it
/// as naming a secret or a personal datum (`accesstoken`, `clientsecret`, ...).
const FORBIDDEN_FRAGMENTS: &[&str] = &[
    "password",
    "passphrase",
    "passwd",
    "secret",
    "token",
    "verifier",
    "privatekey",
    "birth",
    "insurance",
    "kvnr",
    "email",
    "ipaddress",
    "cookie",
    "bearer",
    "credential",
    "superpin",
];

/// Words that, anywhere in a detail key, mark it as naming a secret or a
/// personal datum. Keys are split into words at `_`, `-`, `.` and lower-to-upper
/// case changes (`refreshToken` -> `refresh`, `token`); a key with any of these
/// words is refused: the trail is readable by patients and auditors and must never
/// hold them.
const FORBIDDEN_WORDS: &[&str] = &[
    "password",
    "passphrase",
    "passwd",
    "secret",
    "token",
    "code",
    "verifier",
    "pin",
    "superpin",
    "tan",
    "otp",
    "private",
    "credential",
    "email",
    "mail",
    "name",
    "firstname",
    "lastname",
    "surname",
    "birth",
    "birthdate",
    "birthday",
    "dob",
    "kvnr",
    "insurance",
    "address",
    "phone",
    "ip",
    "cookie",
    "authorization",
    "bearer",
    "session",
];

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Success,
    /// It failed (bad input, unavailable dependency).
    Failure,
    /// It was refused for lack of authority (an unauthorized access attempt).
    Denied,
}

impl Outcome {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            "denied" => Some(Self::Denied),
            _ => None,
        }
    }
}

/// Why a detail was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetailError {
    /// The serialized detail is larger than [`MAX_DETAIL_BYTES`].
    #[error("audit detail is {0} bytes, more than the {MAX_DETAIL_BYTES} allowed")]
    TooLarge(usize),
    /// A key names a secret or personal datum.
    #[error("audit detail key `{0}` names a secret or personal datum")]
    ForbiddenKey(String),
}

/// A small JSON object of facts about an event (ids, counts, reasons).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditDetail {
    fields: Map<String, Value>,
}

impl AuditDetail {
    /// An empty detail.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field; refused if the key names a secret or personal datum.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Result<Self, DetailError> {
        check_key(key)?;
        let value = value.into();
        check_nested_keys(&value)?;
        self.fields.insert(key.to_owned(), value);
        Ok(self)
    }

    /// Serializes the detail, enforcing the size bound.
    pub(crate) fn to_json(&self) -> Result<String, DetailError> {
        let text = Value::Object(self.fields.clone()).to_string();
        if text.len() > MAX_DETAIL_BYTES {
            return Err(DetailError::TooLarge(text.len()));
        }
        Ok(text)
    }
}

fn check_key(key: &str) -> Result<(), DetailError> {
    let words = split_words(key);
    let joined: String = words.concat();
    let forbidden = words
        .iter()
        .any(|word| FORBIDDEN_WORDS.contains(&word.as_str()))
        || FORBIDDEN_FRAGMENTS
            .iter()
            .any(|fragment| joined.contains(fragment));
    if forbidden {
        return Err(DetailError::ForbiddenKey(key.to_owned()));
    }
    Ok(())
}

/// Splits a key into lower-case words at every non-alphanumeric character, at
/// lower-to-upper changes (`refreshToken`) and at the end of a run of capitals
/// (`userIPAddress` -> `user`, `ip`, `address`).
fn split_words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (index, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let previous = index.checked_sub(1).and_then(|i| chars.get(i)).copied();
        let next = chars.get(index + 1).copied();
        let lower_to_upper = c.is_uppercase() && previous.is_some_and(char::is_lowercase);
        let acronym_end = c.is_uppercase()
            && previous.is_some_and(char::is_uppercase)
            && next.is_some_and(char::is_lowercase);
        if (lower_to_upper || acronym_end) && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn check_nested_keys(value: &Value) -> Result<(), DetailError> {
    match value {
        Value::Object(map) => map.iter().try_for_each(|(key, inner)| {
            check_key(key)?;
            check_nested_keys(inner)
        }),
        Value::Array(items) => items.iter().try_for_each(check_nested_keys),
        _ => Ok(()),
    }
}

/// An event to append to the trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Who acted: a participant UID, a DiGA `client_id`, `system`. Never a name or email.
    pub actor: String,
    /// Whose data the event concerns: a UID or Pairing ID; `-` when none.
    pub subject: String,
    /// A dotted event name, e.g. `pairing.created`.
    pub event_type: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Facts about the event.
    pub detail: AuditDetail,
}

impl AuditEvent {
    /// An event with an empty detail.
    pub fn new(
        actor: impl Into<String>,
        subject: impl Into<String>,
        event_type: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            actor: actor.into(),
            subject: subject.into(),
            event_type: event_type.into(),
            outcome,
            detail: AuditDetail::new(),
        }
    }

    /// Sets the detail.
    pub fn with_detail(mut self, detail: AuditDetail) -> Self {
        self.detail = detail;
        self
    }
}

/// An entry as read back from the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain.
    pub seq: i64,
    /// When it was recorded.
    pub recorded_at: OffsetDateTime,
    /// Who acted.
    pub actor: String,
    /// Whose data it concerns.
    pub subject: String,
    /// What happened.
    pub event_type: String,
    /// How it ended (`success`, `failure`, `denied`).
    pub outcome: String,
    /// The detail, as stored (a JSON object).
    pub detail: String,
    /// The entry's hash, hex.
    pub entry_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_keys_that_name_secrets_or_people() {
        for key in [
            "password",
            "Refresh_Token",
            "code-verifier",
            "EMAIL",
            "birth_date",
            "KVNR",
            "client_secret",
            "auth_code",
            "patient_name",
            "givenName",
            "birthday",
            "ip",
            "remote.ip",
            "refreshToken",
            "superPIN",
            "accesstoken",
            "refreshtoken",
            "idtoken",
            "IDToken",
            "codeverifier",
            "privatekey",
            "dateofbirth",
            "insurancenumber",
            "clientsecret",
            "client:secret",
            "userIPAddress",
            "peer_ip",
        ] {
            assert_eq!(
                AuditDetail::new().with(key, "x"),
                Err(DetailError::ForbiddenKey(key.to_owned())),
                "{key}"
            );
        }
        let nested = serde_json::json!({"client": {"access_token": "x"}});
        assert!(AuditDetail::new().with("request", nested).is_err());
    }

    #[test]
    fn accepts_ids_and_reasons() {
        let detail = AuditDetail::new()
            .with("client_id", "urn:diga:bfarm:00294")
            .unwrap()
            .with("reason", "certificate not registered")
            .unwrap()
            .with("key_id", "ab12")
            .unwrap()
            .with("request_id", "r-1")
            .unwrap()
            .with("fingerprint", "ab")
            .unwrap()
            .with("path", "/fhir/Observation")
            .unwrap();
        assert!(detail.to_json().unwrap().contains("urn:diga:bfarm:00294"));
    }

    #[test]
    fn refuses_oversized_detail() {
        let detail = AuditDetail::new()
            .with("reason", "x".repeat(MAX_DETAIL_BYTES))
            .unwrap();
        assert!(matches!(detail.to_json(), Err(DetailError::TooLarge(_))));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_key_or_value_is_accepted_or_refused_without_panic(key in ".{0,64}", value in ".{0,256}") {
            if let Ok(detail) = AuditDetail::new().with(&key, value) {
                let _ = detail.to_json();
            }
        }

        #[test]
        fn a_forbidden_word_is_refused_whatever_surrounds_it(
            prefix in "[a-z]{0,8}",
            word in prop::sample::select(FORBIDDEN_WORDS.to_vec()),
            suffix in "[a-z]{0,8}",
        ) {
            let key = format!("{prefix}_{word}_{suffix}");
            prop_assert!(AuditDetail::new().with(&key, "x").is_err(), "{} was accepted", key);
        }

        #[test]
        fn a_forbidden_fragment_is_refused_inside_any_compound(
            prefix in "[a-z]{0,8}",
            fragment in prop::sample::select(FORBIDDEN_FRAGMENTS.to_vec()),
            suffix in "[a-z]{0,8}",
        ) {
            let key = format!("{prefix}{fragment}{suffix}");
            prop_assert!(AuditDetail::new().with(&key, "x").is_err(), "{} was accepted", key);
        }
    }
}
