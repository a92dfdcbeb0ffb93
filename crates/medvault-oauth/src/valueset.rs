//! The MIV ValueSets (ZTS; in 1.0.1 published with the guide): which codes
//! (LOINC) belong to each MIV. Scopes name them; the resource server expands
//! them. Loaded from the guide's FHIR JSON: extensional ValueSets only
//! (`compose.include` with `system` and listed `concept`s, the union of
//! other such ValueSets of the guide, or an `expansion`); a ValueSet defined
//! by a filter or an exclusion is refused rather than guessed at.

use std::collections::BTreeMap;
use std::path::Path;

use medvault_core::Miv;
use medvault_core::hddt::value_set_url;
use serde::Deserialize;

/// The largest ValueSet file read.
pub const MAX_VALUE_SET_BYTES: usize = 1024 * 1024;

/// Why a ValueSet was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValueSetError {
    /// Not a FHIR ValueSet in JSON, or too large.
    #[error("not a FHIR ValueSet (JSON): {0}")]
    Malformed(String),
    /// Its `url` is not a MIV ValueSet under the configured base.
    #[error("{0} is not a MIV ValueSet under the configured base")]
    UnknownUrl(String),
    /// Its `status` is not `active`.
    #[error("the ValueSet {0} is not active")]
    Inactive(String),
    /// Defined by a filter or by other ValueSets, or without codes.
    #[error("the ValueSet {0} does not list its codes")]
    Intensional(String),
    /// A file could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A MIV's ValueSet is missing.
    #[error("no ValueSet for the MIV {0}")]
    Missing(&'static str),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValueSetJson {
    resource_type: String,
    url: Option<String>,
    version: Option<String>,
    status: Option<String>,
    compose: Option<Compose>,
    expansion: Option<Expansion>,
}

#[derive(Debug, Deserialize)]
struct Compose {
    #[serde(default)]
    include: Vec<Include>,
    #[serde(default)]
    exclude: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Include {
    system: Option<String>,
    #[serde(default)]
    concept: Vec<Concept>,
    #[serde(default)]
    filter: Vec<serde_json::Value>,
    #[serde(default)]
    value_set: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Concept {
    code: String,
}

#[derive(Debug, Deserialize)]
struct Expansion {
    #[serde(default)]
    contains: Vec<Contains>,
}

#[derive(Debug, Deserialize)]
struct Contains {
    system: Option<String>,
    code: Option<String>,
}

fn parse(bytes: &[u8]) -> Result<ValueSetJson, ValueSetError> {
    if bytes.len() > MAX_VALUE_SET_BYTES {
        return Err(ValueSetError::Malformed("larger than 1 MiB".into()));
    }
    let parsed: ValueSetJson = serde_json::from_slice(bytes)
        .map_err(|error| ValueSetError::Malformed(error.to_string()))?;
    if parsed.resource_type != "ValueSet" {
        return Err(ValueSetError::Malformed(format!(
            "resourceType is {}",
            parsed.resource_type.chars().take(40).collect::<String>()
        )));
    }
    Ok(parsed)
}

/// One MIV's ValueSet: its codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MivValueSet {
    /// The MIV.
    pub miv: Miv,
    /// The canonical URL.
    pub url: String,
    /// The ValueSet's version.
    pub version: Option<String>,
    /// (system, code) pairs, sorted.
    pub codes: Vec<(String, String)>,
}

/// The MIV ValueSets in force, under one canonical base.
#[derive(Debug, Clone)]
pub struct MivValueSets {
    base: String,
    sets: BTreeMap<Miv, MivValueSet>,
}

impl MivValueSets {
    /// No ValueSets yet, under `base` (e.g.
    /// [`medvault_core::hddt::DEFAULT_VALUE_SET_BASE`]).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            sets: BTreeMap::new(),
        }
    }

    /// The canonical base.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Reads one ValueSet (FHIR JSON) and keeps it for its MIV; it must list
    /// its codes itself.
    pub fn load_json(&mut self, bytes: &[u8]) -> Result<Miv, ValueSetError> {
        self.load_json_with(bytes, &|_| None)
    }

    /// Like [`Self::load_json`]; a `compose.include.valueSet` reference to
    /// another ValueSet under the base is read through `resolve` (given the
    /// ValueSet id), at most four levels deep, its version checked when the
    /// reference names one.
    pub fn load_json_with(
        &mut self,
        bytes: &[u8],
        resolve: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<Miv, ValueSetError> {
        let parsed = parse(bytes)?;
        let url = parsed
            .url
            .clone()
            .ok_or_else(|| ValueSetError::Malformed("no url".into()))?;
        let miv = url
            .strip_prefix(&self.base)
            .and_then(Miv::from_value_set_id)
            .filter(|miv| value_set_url(&self.base, *miv) == url)
            .ok_or_else(|| ValueSetError::UnknownUrl(url.chars().take(200).collect()))?;
        let mut codes = self.codes_of(&parsed, &url, resolve, 0)?;
        if codes.is_empty() {
            return Err(ValueSetError::Intensional(url));
        }
        codes.sort();
        codes.dedup();
        self.sets.insert(
            miv,
            MivValueSet {
                miv,
                url,
                version: parsed.version,
                codes,
            },
        );
        Ok(miv)
    }

    fn codes_of(
        &self,
        parsed: &ValueSetJson,
        url: &str,
        resolve: &dyn Fn(&str) -> Option<Vec<u8>>,
        depth: usize,
    ) -> Result<Vec<(String, String)>, ValueSetError> {
        let intensional = || ValueSetError::Intensional(url.chars().take(200).collect());
        if depth > 4 {
            return Err(intensional());
        }
        if parsed.status.as_deref() != Some("active") {
            return Err(ValueSetError::Inactive(url.to_owned()));
        }
        let mut codes = Vec::new();
        if let Some(compose) = &parsed.compose {
            if !compose.exclude.is_empty() {
                return Err(intensional());
            }
            for include in &compose.include {
                if !include.filter.is_empty() {
                    return Err(intensional());
                }
                match (&include.system, include.value_set.is_empty()) {
                    // Listed codes of one system.
                    (Some(system), true) if !include.concept.is_empty() => codes.extend(
                        include
                            .concept
                            .iter()
                            .map(|concept| (system.clone(), concept.code.clone())),
                    ),
                    // The union of other ValueSets of the guide.
                    (None, false) if include.concept.is_empty() => {
                        for reference in &include.value_set {
                            let (target, version) = match reference.split_once('|') {
                                Some((target, version)) => (target, Some(version)),
                                None => (reference.as_str(), None),
                            };
                            let id = target.strip_prefix(&self.base).ok_or_else(intensional)?;
                            let bytes = resolve(id).ok_or_else(intensional)?;
                            let nested = parse(&bytes)?;
                            if nested.url.as_deref() != Some(target)
                                || version.is_some_and(|v| nested.version.as_deref() != Some(v))
                            {
                                return Err(intensional());
                            }
                            codes.extend(self.codes_of(&nested, target, resolve, depth + 1)?);
                        }
                    }
                    _ => return Err(intensional()),
                }
            }
        } else if let Some(expansion) = &parsed.expansion {
            for entry in &expansion.contains {
                if let (Some(system), Some(code)) = (&entry.system, &entry.code) {
                    codes.push((system.clone(), code.clone()));
                }
            }
        }
        Ok(codes)
    }

    /// Loads `ValueSet-<id>.json` of every MIV from `dir` (the guide's
    /// package layout); every MIV must be there.
    pub fn load_dir(base: &str, dir: &Path) -> Result<Self, ValueSetError> {
        let mut sets = Self::new(base);
        for miv in Miv::ALL {
            let path = dir.join(format!("ValueSet-{}.json", miv.value_set_id()));
            let bytes = std::fs::read(&path).map_err(|error| ValueSetError::Io {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
            let resolve = |id: &str| {
                // Ids of the guide are plain names: no path can be smuggled in.
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return None;
                }
                std::fs::read(dir.join(format!("ValueSet-{id}.json"))).ok()
            };
            let loaded = sets.load_json_with(&bytes, &resolve)?;
            if loaded != miv {
                return Err(ValueSetError::Missing(miv.value_set_id()));
            }
        }
        Ok(sets)
    }

    /// The ValueSet of `miv`, if loaded.
    pub fn get(&self, miv: Miv) -> Option<&MivValueSet> {
        self.sets.get(&miv)
    }

    /// Whether `system|code` belongs to `miv`.
    pub fn contains(&self, miv: Miv, system: &str, code: &str) -> bool {
        self.get(miv).is_some_and(|set| {
            set.codes
                .binary_search_by(|(s, c)| (s.as_str(), c.as_str()).cmp(&(system, code)))
                .is_ok()
        })
    }

    /// The MIV a `system|code` belongs to (MIV ValueSets do not overlap).
    pub fn miv_of(&self, system: &str, code: &str) -> Option<Miv> {
        Miv::ALL
            .into_iter()
            .find(|miv| self.contains(*miv, system, code))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use medvault_core::hddt::DEFAULT_VALUE_SET_BASE;

    use super::*;

    const LOINC: &str = "http://loinc.org";

    fn guide() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hddt-ig")
    }

    #[test]
    fn the_guides_miv_value_sets_load() {
        let sets = MivValueSets::load_dir(DEFAULT_VALUE_SET_BASE, &guide()).unwrap();
        let cgm = sets.get(Miv::ContinuousGlucose).unwrap();
        assert_eq!(cgm.version.as_deref(), Some("1.0.1"));
        for code in ["99504-3", "105272-9"] {
            assert!(sets.contains(Miv::ContinuousGlucose, LOINC, code), "{code}");
            assert!(!sets.contains(Miv::BloodGlucose, LOINC, code), "{code}");
        }
        for code in ["2339-0", "15074-8", "41653-7", "14743-9"] {
            assert_eq!(sets.miv_of(LOINC, code), Some(Miv::BloodGlucose), "{code}");
        }
        assert!(!sets.contains(Miv::BloodGlucose, "http://snomed.info/sct", "2339-0"));
        // Lung function is the union of three ValueSets of the guide.
        assert!(sets.get(Miv::LungFunction).unwrap().codes.len() >= 3);
        // Under another base, the guide's files are not MIV ValueSets.
        assert!(matches!(
            MivValueSets::load_dir("https://terminologien.bfarm.de/fhir/ValueSet/", &guide()),
            Err(ValueSetError::UnknownUrl(_))
        ));
    }

    #[test]
    fn unusable_value_sets_are_refused() {
        let mut sets = MivValueSets::new(DEFAULT_VALUE_SET_BASE);
        let vs = |extra: &str| {
            format!(
                r#"{{"resourceType":"ValueSet","url":"{DEFAULT_VALUE_SET_BASE}hddt-miv-blood-glucose-measurement","status":"active",{extra}}}"#
            )
        };
        for (json, expected) in [
            (
                vs(r#""compose":{"include":[{"system":"http://loinc.org","filter":[{"property":"component","op":"=","value":"Glucose"}]}]}"#),
                "does not list",
            ),
            (vs(r#""compose":{"include":[{"valueSet":["x"]}]}"#), "does not list"),
            (
                vs(r#""compose":{"include":[{"valueSet":["https://gematik.de/fhir/hddt/ValueSet/hddt-device-type"]}]}"#),
                "does not list",
            ),
            (vs(r#""compose":{"include":[]}"#), "does not list"),
            (
                r#"{"resourceType":"CodeSystem","url":"x","status":"active"}"#.to_owned(),
                "resourceType",
            ),
            (
                vs(r#""compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"1-1"}]}]}"#)
                    .replace("\"active\"", "\"retired\""),
                "not active",
            ),
            ("[]".to_owned(), "not a FHIR ValueSet"),
        ] {
            let error = sets.load_json(json.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{error} for {json}");
        }
        assert!(sets.get(Miv::BloodGlucose).is_none(), "nothing kept");
        let from_expansion =
            vs(r#""expansion":{"contains":[{"system":"http://loinc.org","code":"2339-0"}]}"#);
        assert_eq!(
            sets.load_json(from_expansion.as_bytes()).unwrap(),
            Miv::BloodGlucose
        );
        assert!(sets.contains(Miv::BloodGlucose, LOINC, "2339-0"));
        assert!(
            sets.load_json(&vec![b' '; MAX_VALUE_SET_BYTES + 1])
                .is_err(),
            "bounded"
        );
    }
}
