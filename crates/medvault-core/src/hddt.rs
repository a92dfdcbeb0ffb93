//! HDDT vocabulary (§ 374a SGB V, gematik implementation guide 1.0.1): the
//! MIVs (device-data categories), SMART v2 scopes as the guide restricts
//! them, the DiGA's `client_id`, and the Pairing ID. Pure values and their
//! parsers; the authorization server's state lives in `medvault-oauth`.

use std::fmt;

/// The ValueSet canonical base of guide 1.0.1 (configurable: the ZTS may
/// host the ValueSets under another base).
pub const DEFAULT_VALUE_SET_BASE: &str = "https://gematik.de/fhir/hddt/ValueSet/";

/// A MIV ("Medizinische Informationsobjekt-Variante"): one category of device
/// data a DiGA may be authorized for, identified by its ValueSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Miv {
    /// Blood glucose, single measurements (glucometer).
    BloodGlucose,
    /// Continuous glucose measurement (CGM).
    ContinuousGlucose,
    /// Blood pressure.
    BloodPressure,
    /// Lung function testing.
    LungFunction,
}

impl Miv {
    /// Every MIV of the guide.
    pub const ALL: [Self; 4] = [
        Self::BloodGlucose,
        Self::ContinuousGlucose,
        Self::BloodPressure,
        Self::LungFunction,
    ];

    /// The MIVs medvault serves data for.
    pub const SUPPORTED: [Self; 2] = [Self::BloodGlucose, Self::ContinuousGlucose];

    /// The ValueSet id (the last path segment of its canonical URL).
    pub const fn value_set_id(self) -> &'static str {
        match self {
            Self::BloodGlucose => "hddt-miv-blood-glucose-measurement",
            Self::ContinuousGlucose => "hddt-miv-continuous-glucose-measurement",
            Self::BloodPressure => "hddt-miv-blood-pressure-value",
            Self::LungFunction => "hddt-miv-lung-function-testing",
        }
    }

    /// The MIV whose ValueSet id is `id`.
    pub fn from_value_set_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|miv| miv.value_set_id() == id)
    }

    /// Whether medvault serves this MIV.
    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }
}

/// The canonical URL of `miv`'s ValueSet under `base` (ending in `/`).
pub fn value_set_url(base: &str, miv: Miv) -> String {
    format!("{base}{}", miv.value_set_id())
}

/// One SMART v2 scope of the kinds HDDT allows (patient context, read and
/// search only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SmartScope {
    /// `patient/Observation.rs?code:in=<the MIV's ValueSet>`.
    Observation(Miv),
    /// `patient/Device.rs`.
    Device,
    /// `patient/DeviceMetric.rs`.
    DeviceMetric,
}

/// Why a scope string was refused (names the rule, never echoes the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeError {
    /// Empty, too long, too many scopes or characters outside the grammar.
    Malformed,
    /// A wildcard (`*`) or a context other than `patient/`.
    Wildcard,
    /// Permissions other than `.rs` (read and search).
    Permission,
    /// A resource type HDDT does not grant.
    Resource,
    /// An Observation scope without exactly one `code:in=` ValueSet, or with
    /// another constraint.
    Constraint,
    /// A ValueSet that is not a MIV ValueSet under the configured base (a
    /// `|version` suffix included).
    UnknownValueSet,
    /// The same scope twice.
    Duplicate,
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the scope is not a space-separated list of SMART v2 scopes",
            Self::Wildcard => "wildcard scopes and contexts other than patient/ are not granted",
            Self::Permission => "only read and search (.rs) are granted",
            Self::Resource => "only Observation, Device and DeviceMetric scopes exist in HDDT",
            Self::Constraint => {
                "an Observation scope needs exactly one code:in=<MIV ValueSet> and nothing else"
            }
            Self::UnknownValueSet => "the ValueSet is not a MIV ValueSet",
            Self::Duplicate => "a scope appears twice",
        })
    }
}

impl std::error::Error for ScopeError {}

/// The longest scope string accepted.
pub const MAX_SCOPE_LEN: usize = 2048;
/// The most scopes in one string.
pub const MAX_SCOPES: usize = 16;

impl SmartScope {
    /// Reads one scope, with MIV ValueSets under `value_set_base`.
    pub fn parse(text: &str, value_set_base: &str) -> Result<Self, ScopeError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ScopeError::Malformed);
        }
        if text.contains('*') {
            return Err(ScopeError::Wildcard);
        }
        let rest = text.strip_prefix("patient/").ok_or(
            if text.starts_with("user/") || text.starts_with("system/") {
                ScopeError::Wildcard
            } else {
                ScopeError::Malformed
            },
        )?;
        let (resource_permission, query) = match rest.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (rest, None),
        };
        let (resource, permission) = resource_permission
            .split_once('.')
            .ok_or(ScopeError::Malformed)?;
        if permission != "rs" {
            return Err(ScopeError::Permission);
        }
        match (resource, query) {
            ("Device", None) => Ok(Self::Device),
            ("DeviceMetric", None) => Ok(Self::DeviceMetric),
            ("Device" | "DeviceMetric", Some(_)) => Err(ScopeError::Constraint),
            ("Observation", None) => Err(ScopeError::Constraint),
            ("Observation", Some(query)) => {
                let url = query
                    .strip_prefix("code:in=")
                    .filter(|url| !url.contains('&') && !url.contains(','))
                    .ok_or(ScopeError::Constraint)?;
                let id = url
                    .strip_prefix(value_set_base)
                    .ok_or(ScopeError::UnknownValueSet)?;
                Miv::from_value_set_id(id)
                    .map(Self::Observation)
                    .ok_or(ScopeError::UnknownValueSet)
            }
            _ => Err(ScopeError::Resource),
        }
    }

    /// The scope's text, with MIV ValueSets under `value_set_base`.
    pub fn to_text(self, value_set_base: &str) -> String {
        match self {
            Self::Observation(miv) => format!(
                "patient/Observation.rs?code:in={}",
                value_set_url(value_set_base, miv)
            ),
            Self::Device => "patient/Device.rs".to_owned(),
            Self::DeviceMetric => "patient/DeviceMetric.rs".to_owned(),
        }
    }
}

/// A set of scopes, as requested or granted: each at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Vec<SmartScope>);

impl ScopeSet {
    /// Reads a space-separated scope string (RFC 6749 §3.3).
    pub fn parse(text: &str, value_set_base: &str) -> Result<Self, ScopeError> {
        if text.is_empty() || text.len() > MAX_SCOPE_LEN || text.split(' ').count() > MAX_SCOPES {
            return Err(ScopeError::Malformed);
        }
        let mut scopes = Vec::new();
        for part in text.split(' ') {
            let scope = SmartScope::parse(part, value_set_base)?;
            if scopes.contains(&scope) {
                return Err(ScopeError::Duplicate);
            }
            scopes.push(scope);
        }
        scopes.sort();
        Ok(Self(scopes))
    }

    /// A set of these scopes.
    pub fn of(scopes: impl IntoIterator<Item = SmartScope>) -> Self {
        let mut scopes: Vec<SmartScope> = scopes.into_iter().collect();
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    /// The scopes, in a fixed order.
    pub fn scopes(&self) -> &[SmartScope] {
        &self.0
    }

    /// The MIVs of its Observation scopes.
    pub fn mivs(&self) -> Vec<Miv> {
        self.0
            .iter()
            .filter_map(|scope| match scope {
                SmartScope::Observation(miv) => Some(*miv),
                _ => None,
            })
            .collect()
    }

    /// Whether it holds `scope`.
    pub fn contains(&self, scope: SmartScope) -> bool {
        self.0.contains(&scope)
    }

    /// The space-separated text.
    pub fn to_text(&self, value_set_base: &str) -> String {
        self.0
            .iter()
            .map(|scope| scope.to_text(value_set_base))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A DiGA's OAuth `client_id` as the DiGA-VZ assigns it: `urn:diga:bfarm:`
/// followed by the five-digit DiGA id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DigaClientId(String);

impl DigaClientId {
    /// Reads `urn:diga:bfarm:NNNNN`.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix("urn:diga:bfarm:")?;
        (digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The five-digit DiGA id.
    pub fn diga_id(&self) -> &str {
        self.0.strip_prefix("urn:diga:bfarm:").unwrap_or(&self.0)
    }
}

impl fmt::Display for DigaClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Pairing ID: the only patient identifier a DiGA ever receives (64
/// lower-case hex characters; distinct per DiGA, stable for the pairing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PairingId(String);

impl PairingId {
    /// From the 32 bytes of its derivation.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// Reads 64 lower-case hex characters.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PairingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    const BASE: &str = DEFAULT_VALUE_SET_BASE;

    #[test]
    fn the_guides_scope_strings_parse_and_print_back() {
        let text = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-blood-glucose-measurement patient/Device.rs patient/DeviceMetric.rs";
        let set = ScopeSet::parse(text, BASE).unwrap();
        assert_eq!(set.mivs(), vec![Miv::BloodGlucose]);
        assert!(set.contains(SmartScope::Device));
        assert_eq!(set.to_text(BASE), text);
        let cgm = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement";
        assert_eq!(
            SmartScope::parse(cgm, BASE),
            Ok(SmartScope::Observation(Miv::ContinuousGlucose))
        );
        // Another base is configuration, not a different scope.
        let zts = "https://terminologien.bfarm.de/fhir/ValueSet/";
        assert_eq!(
            SmartScope::parse(
                "patient/Observation.rs?code:in=https://terminologien.bfarm.de/fhir/ValueSet/hddt-miv-blood-pressure-value",
                zts
            ),
            Ok(SmartScope::Observation(Miv::BloodPressure))
        );
    }

    #[test]
    fn every_refusal_names_its_rule() {
        let vs = |id: &str| format!("patient/Observation.rs?code:in={BASE}{id}");
        for (text, error) in [
            ("patient/*.rs", ScopeError::Wildcard),
            ("patient/Observation.*", ScopeError::Wildcard),
            ("user/Observation.rs", ScopeError::Wildcard),
            ("system/Device.rs", ScopeError::Wildcard),
            ("patient/Device.read", ScopeError::Permission),
            ("patient/Device.cruds", ScopeError::Permission),
            ("patient/device.rs", ScopeError::Resource),
            ("patient/devicemetric.rs", ScopeError::Resource),
            ("patient/Patient.rs", ScopeError::Resource),
            ("patient/Observation.rs", ScopeError::Constraint),
            ("patient/Device.rs?code:in=x", ScopeError::Constraint),
            (
                "patient/Observation.rs?category=vital-signs",
                ScopeError::Constraint,
            ),
            ("openid", ScopeError::Malformed),
            ("", ScopeError::Malformed),
            ("patient/Device.rs\u{7f}", ScopeError::Malformed),
        ] {
            assert_eq!(SmartScope::parse(text, BASE), Err(error), "{text}");
        }
        for (text, error) in [
            (
                vs("hddt-miv-blood-pressure-measurement"),
                ScopeError::UnknownValueSet,
            ),
            (
                format!("{}|1.0.1", vs("hddt-miv-blood-glucose-measurement")),
                ScopeError::UnknownValueSet,
            ),
            (
                "patient/Observation.rs?code:in=https://terminologien.bfarm.de/fhir/ValueSet/hddt-miv-blood-glucose-measurement".to_owned(),
                ScopeError::UnknownValueSet,
            ),
            (
                format!(
                    "{}&code:in={BASE}hddt-miv-continuous-glucose-measurement",
                    vs("hddt-miv-blood-glucose-measurement")
                ),
                ScopeError::Constraint,
            ),
            (
                format!(
                    "{},{BASE}hddt-miv-continuous-glucose-measurement",
                    vs("hddt-miv-blood-glucose-measurement")
                ),
                ScopeError::Constraint,
            ),
        ] {
            assert_eq!(SmartScope::parse(&text, BASE), Err(error), "{text}");
        }
        assert_eq!(
            ScopeSet::parse("patient/Device.rs patient/Device.rs", BASE),
            Err(ScopeError::Duplicate)
        );
        assert_eq!(
            ScopeSet::parse("patient/Device.rs  patient/DeviceMetric.rs", BASE),
            Err(ScopeError::Malformed),
            "one space between scopes"
        );
        assert_eq!(
            ScopeSet::parse(&vec!["patient/Device.rs"; 17].join(" "), BASE),
            Err(ScopeError::Malformed)
        );
    }

    #[test]
    fn client_ids_and_pairing_ids_have_one_shape() {
        let id = DigaClientId::parse("urn:diga:bfarm:00294").unwrap();
        assert_eq!(id.diga_id(), "00294");
        for bad in [
            "urn:diga:bfarm:294",
            "urn:diga:bfarm:002945",
            "urn:diga:bfarm:0029x",
            "00294",
        ] {
            assert!(DigaClientId::parse(bad).is_none(), "{bad}");
        }
        let pairing = PairingId::from_bytes([0xab; 32]);
        assert_eq!(pairing.as_str().len(), 64);
        assert_eq!(PairingId::parse(pairing.as_str()), Some(pairing));
        assert!(PairingId::parse(&"AB".repeat(32)).is_none());
        assert!(PairingId::parse("ab").is_none());
    }
}
