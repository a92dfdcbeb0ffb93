//! The DiGA-VZ as medvault needs it: per DiGA its `client_id`, display name,
//! status, registered client certificates (exact DER), `redirect_uri` and the
//! MIVs it is authorized for; and the local-file form an operator manages
//! with `medvault admin diga add|list|remove` (format 1, JSON).
//!
//! A trust decision reads an entry through [`Cached`], which refuses data
//! older than its maximum age (fail closed: guide §security-and-privacy).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use medvault_core::{DigaClientId, Miv};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::certificate::{CertificateError, check_client_certificate};

/// The largest registry file read.
pub const MAX_REGISTRY_BYTES: usize = 16 * 1024 * 1024;

/// Whether a DiGA may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigaStatus {
    /// Listed and usable.
    Active,
    /// Listed but not usable (its pairings end).
    Inactive,
}

impl DigaStatus {
    /// The file's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// One DiGA of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigaRegistryEntry {
    /// `urn:diga:bfarm:NNNNN`.
    pub client_id: DigaClientId,
    /// Its display name (shown on the consent page).
    pub name: String,
    /// Whether it may be used.
    pub status: DigaStatus,
    /// Its registered `redirect_uri` (compared exactly).
    pub redirect_uri: String,
    /// The MIVs it is authorized for.
    pub mivs: Vec<Miv>,
    /// Its client certificates (DER), any number.
    pub certificates: Vec<Vec<u8>>,
}

impl DigaRegistryEntry {
    /// Whether `der` is byte-identical to one of its certificates.
    pub fn has_certificate(&self, der: &[u8]) -> bool {
        self.certificates.iter().any(|registered| registered == der)
    }
}

/// Why a registry file or entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The file is not a registry of format 1.
    #[error("malformed registry: {0}")]
    Malformed(String),
    /// An entry's field is unusable.
    #[error("{client_id}: invalid {field}")]
    Invalid {
        /// The entry (or its position).
        client_id: String,
        /// Which field.
        field: &'static str,
    },
    /// A certificate failed registration checks.
    #[error("{client_id}: certificate {index}: {reason}")]
    Certificate {
        /// The entry.
        client_id: String,
        /// Which certificate (from 0).
        index: usize,
        /// Why.
        reason: CertificateError,
    },
    /// The same `client_id` twice.
    #[error("{0} is listed twice")]
    Duplicate(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    format: u32,
    digas: Vec<DigaFileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigaFileEntry {
    client_id: String,
    name: String,
    status: String,
    redirect_uri: String,
    mivs: Vec<String>,
    client_certificates: Vec<String>,
}

fn file_entry(entry: &DigaRegistryEntry) -> DigaFileEntry {
    DigaFileEntry {
        client_id: entry.client_id.to_string(),
        name: entry.name.clone(),
        status: entry.status.as_str().to_owned(),
        redirect_uri: entry.redirect_uri.clone(),
        mivs: entry
            .mivs
            .iter()
            .map(|miv| miv.value_set_id().to_owned())
            .collect(),
        client_certificates: entry
            .certificates
            .iter()
            .map(|der| STANDARD.encode(der))
            .collect(),
    }
}

fn valid_redirect_uri(text: &str) -> bool {
    let Ok(url) = url::Url::parse(text) else {
        return false;
    };
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    // HTTPS, or a private-use scheme of a native app (RFC 8252 §7.1);
    // plain http only for loopback (RFC 8252 §7.3).
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => loopback,
        scheme => scheme.contains('.'),
    };
    scheme_ok && url.fragment().is_none() && text.len() <= 2048
}

/// The DiGAs known to this server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigaRegistry {
    entries: BTreeMap<DigaClientId, DigaRegistryEntry>,
}

impl DigaRegistry {
    /// Reads a registry file (format 1). Certificates are taken as listed:
    /// the registration checks run when an entry is added, and validity is
    /// checked again at each use.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RegistryError> {
        if bytes.len() > MAX_REGISTRY_BYTES {
            return Err(RegistryError::Malformed("larger than 16 MiB".into()));
        }
        let file: RegistryFile = serde_json::from_slice(bytes)
            .map_err(|error| RegistryError::Malformed(error.to_string()))?;
        if file.format != 1 {
            return Err(RegistryError::Malformed(format!(
                "format {} (this medvault reads format 1)",
                file.format
            )));
        }
        let mut registry = Self::default();
        for raw in file.digas {
            let entry = Self::entry(raw)?;
            let id = entry.client_id.clone();
            if registry.entries.insert(id.clone(), entry).is_some() {
                return Err(RegistryError::Duplicate(id.to_string()));
            }
        }
        Ok(registry)
    }

    fn entry(raw: DigaFileEntry) -> Result<DigaRegistryEntry, RegistryError> {
        let invalid = |field| RegistryError::Invalid {
            client_id: raw.client_id.chars().take(40).collect(),
            field,
        };
        let client_id = DigaClientId::parse(&raw.client_id).ok_or_else(|| invalid("client_id"))?;
        if raw.name.trim().is_empty()
            || raw.name.chars().count() > 200
            || raw.name.chars().any(char::is_control)
        {
            return Err(invalid("name"));
        }
        let status = DigaStatus::parse(&raw.status).ok_or_else(|| invalid("status"))?;
        if !valid_redirect_uri(&raw.redirect_uri) {
            return Err(invalid("redirect_uri"));
        }
        let mut mivs = Vec::new();
        for text in &raw.mivs {
            let miv = Miv::from_value_set_id(text).ok_or_else(|| invalid("mivs"))?;
            if mivs.contains(&miv) {
                return Err(invalid("mivs"));
            }
            mivs.push(miv);
        }
        mivs.sort();
        let certificates = raw
            .client_certificates
            .iter()
            .map(|text| {
                STANDARD
                    .decode(text)
                    .map_err(|_| invalid("client_certificates"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DigaRegistryEntry {
            client_id,
            name: raw.name,
            status,
            redirect_uri: raw.redirect_uri,
            mivs,
            certificates,
        })
    }

    /// The file form (format 1), stable order.
    pub fn to_json(&self) -> Vec<u8> {
        let file = RegistryFile {
            format: 1,
            digas: self.entries.values().map(file_entry).collect(),
        };
        serde_json::to_vec_pretty(&file).unwrap_or_default()
    }

    /// Adds or replaces an entry after the registration checks on each of
    /// its certificates at `now` (Unix seconds) and on its fields.
    pub fn upsert(&mut self, entry: DigaRegistryEntry, now: i64) -> Result<(), RegistryError> {
        let checked = Self::entry(file_entry(&entry))?;
        for (index, der) in checked.certificates.iter().enumerate() {
            check_client_certificate(der, now).map_err(|reason| RegistryError::Certificate {
                client_id: checked.client_id.to_string(),
                index,
                reason,
            })?;
        }
        self.entries.insert(checked.client_id.clone(), checked);
        Ok(())
    }

    /// Removes a DiGA; `true` if it was listed.
    pub fn remove(&mut self, client_id: &DigaClientId) -> bool {
        self.entries.remove(client_id).is_some()
    }

    /// The entry of `client_id`.
    pub fn get(&self, client_id: &DigaClientId) -> Option<&DigaRegistryEntry> {
        self.entries.get(client_id)
    }

    /// Every entry, by `client_id`.
    pub fn entries(&self) -> impl Iterator<Item = &DigaRegistryEntry> {
        self.entries.values()
    }
}

/// Data from a registry with the time it was fetched: usable only while
/// younger than its maximum age (4 h for certificates and endpoints, 24 h
/// for ValueSets; shorter in test setups).
#[derive(Debug, Clone)]
pub struct Cached<T> {
    value: T,
    fetched_at: OffsetDateTime,
    max_age: Duration,
}

/// The data is older than its maximum age: every request relying on it is
/// refused until a refresh succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("registry data is {age_secs} s old, more than its maximum of {max_age_secs} s")]
pub struct Stale {
    /// How old the data is.
    pub age_secs: i64,
    /// The maximum age.
    pub max_age_secs: i64,
}

impl<T> Cached<T> {
    /// `value`, fetched at `fetched_at`, usable for `max_age`.
    pub fn new(value: T, fetched_at: OffsetDateTime, max_age: Duration) -> Self {
        Self {
            value,
            fetched_at,
            max_age,
        }
    }

    /// The value if it is fresh at `now`.
    pub fn get(&self, now: OffsetDateTime) -> Result<&T, Stale> {
        let age = now - self.fetched_at;
        if age > self.max_age || age < -Duration::minutes(5) {
            return Err(Stale {
                age_secs: age.whole_seconds(),
                max_age_secs: self.max_age.whole_seconds(),
            });
        }
        Ok(&self.value)
    }

    /// When it was fetched.
    pub fn fetched_at(&self) -> OffsetDateTime {
        self.fetched_at
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use medvault_testkit::{TestCertificate, wall_clock_now};

    use super::*;

    fn entry(id: &str, certificates: Vec<Vec<u8>>) -> DigaRegistryEntry {
        DigaRegistryEntry {
            client_id: DigaClientId::parse(id).unwrap(),
            name: "Glukose-Tagebuch".to_owned(),
            status: DigaStatus::Active,
            redirect_uri: "https://diga.example/callback".to_owned(),
            mivs: vec![Miv::ContinuousGlucose, Miv::BloodGlucose],
            certificates,
        }
    }

    #[test]
    fn entries_round_trip_through_the_file_and_are_checked() {
        let now = wall_clock_now().unix_timestamp();
        let certificate = TestCertificate::diga("DiGA 00294");
        let mut registry = DigaRegistry::default();
        registry
            .upsert(
                entry("urn:diga:bfarm:00294", vec![certificate.der.clone()]),
                now,
            )
            .unwrap();
        let reread = DigaRegistry::from_json(&registry.to_json()).unwrap();
        assert_eq!(reread, registry);
        let id = DigaClientId::parse("urn:diga:bfarm:00294").unwrap();
        let listed = reread.get(&id).unwrap();
        assert!(listed.has_certificate(&certificate.der));
        assert!(!listed.has_certificate(&TestCertificate::diga("other").der));
        assert_eq!(listed.mivs, vec![Miv::BloodGlucose, Miv::ContinuousGlucose]);

        // Registration checks: a certificate that fails them is refused.
        let mut no_client_auth = medvault_testkit::CertificateSpec::diga("x");
        no_client_auth.client_auth = false;
        let refused = registry
            .upsert(
                entry(
                    "urn:diga:bfarm:00295",
                    vec![TestCertificate::self_signed(&no_client_auth).der],
                ),
                now,
            )
            .unwrap_err();
        assert!(
            matches!(refused, RegistryError::Certificate { index: 0, .. }),
            "{refused}"
        );
        for (field, mutate) in [
            (
                "redirect_uri",
                (|e: &mut DigaRegistryEntry| e.redirect_uri = "http://diga.example/cb".into())
                    as fn(&mut DigaRegistryEntry),
            ),
            ("redirect_uri", |e| {
                e.redirect_uri = "https://diga.example/cb#frag".into()
            }),
            ("name", |e| e.name = "bell\u{7}".into()),
            ("name", |e| e.name = " ".into()),
        ] {
            let mut bad = entry("urn:diga:bfarm:00296", Vec::new());
            mutate(&mut bad);
            let error = registry.upsert(bad, now).unwrap_err();
            assert!(
                matches!(error, RegistryError::Invalid { field: f, .. } if f == field),
                "{error}"
            );
        }
        assert!(
            registry
                .get(&DigaClientId::parse("urn:diga:bfarm:00296").unwrap())
                .is_none()
        );
        // Native-app and loopback redirect URIs are allowed (RFC 8252).
        let mut native = entry("urn:diga:bfarm:00297", Vec::new());
        native.redirect_uri = "de.example.diga:/oauth2redirect".into();
        registry.upsert(native, now).unwrap();
        assert!(registry.remove(&DigaClientId::parse("urn:diga:bfarm:00297").unwrap()));

        for (text, expected) in [
            (r#"{"format":2,"digas":[]}"#, "format 2"),
            (r#"{"format":1,"digas":[],"extra":1}"#, "unknown field"),
            (
                r#"{"format":1,"digas":[{"client_id":"urn:diga:bfarm:1","name":"n","status":"active","redirect_uri":"https://a.example/","mivs":[],"client_certificates":[]}]}"#,
                "client_id",
            ),
            (
                r#"{"format":1,"digas":[{"client_id":"urn:diga:bfarm:00001","name":"n","status":"paused","redirect_uri":"https://a.example/","mivs":[],"client_certificates":[]}]}"#,
                "status",
            ),
            (
                r#"{"format":1,"digas":[{"client_id":"urn:diga:bfarm:00001","name":"n","status":"active","redirect_uri":"https://a.example/","mivs":["hddt-miv-blood-pressure-measurement"],"client_certificates":[]}]}"#,
                "mivs",
            ),
        ] {
            let error = DigaRegistry::from_json(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        let twice = format!(
            r#"{{"format":1,"digas":[{0},{0}]}}"#,
            r#"{"client_id":"urn:diga:bfarm:00001","name":"n","status":"active","redirect_uri":"https://a.example/","mivs":[],"client_certificates":[]}"#
        );
        assert!(matches!(
            DigaRegistry::from_json(twice.as_bytes()),
            Err(RegistryError::Duplicate(_))
        ));
    }

    #[test]
    fn cached_data_fails_closed_past_its_age() {
        let fetched = wall_clock_now();
        let cached = Cached::new(7, fetched, Duration::hours(4));
        assert_eq!(cached.get(fetched + Duration::hours(4)), Ok(&7));
        let stale = cached.get(fetched + Duration::hours(4) + Duration::seconds(1));
        assert_eq!(
            stale,
            Err(Stale {
                age_secs: 4 * 3600 + 1,
                max_age_secs: 4 * 3600
            })
        );
        assert!(
            cached.get(fetched - Duration::hours(1)).is_err(),
            "from the future"
        );
    }
}
