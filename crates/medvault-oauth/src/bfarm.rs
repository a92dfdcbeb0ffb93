//! The DiGA-VZ in BfArM's own FHIR form (digest §6): a searchset Bundle of
//! `HealthApp` DeviceDefinitions. Per DiGA: the DiGA-ID identifier
//! (`https://fhir.bfarm.de/Identifier/DigaId`), a display name
//! (`deviceName`), the `HealthAppHiisTrustAttributes` extension with
//! `clientId`, `redirectUri` and any number of `clientCertificates`
//! (base64 DER), and `HealthAppMivSet` extensions naming the authorized MIV
//! ValueSets.
//!
//! The shape follows the digest's description of BfArM's profiles; it has
//! not been checked against BfArM's live API (which needs a manufacturer
//! account). A listed DiGA is active; one that leaves the list loses its
//! pairings after the grace period. An entry whose `clientId` does not match
//! its DiGA-ID, or without a valid `redirectUri`, is skipped; a certificate
//! that fails the registration checks is dropped (and reported), the entry
//! kept with the others.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use medvault_core::{DigaClientId, Miv};
use serde_json::Value;

use crate::certificate::check_client_certificate;
use crate::registry::{DigaRegistry, DigaRegistryEntry, DigaStatus};

/// The DiGA-ID identifier system.
pub const DIGA_ID_SYSTEM: &str = "https://fhir.bfarm.de/Identifier/DigaId";
/// The trust attributes extension.
pub const TRUST_ATTRIBUTES: &str =
    "https://fhir.bfarm.de/StructureDefinition/HealthAppHiisTrustAttributes";
/// The MIV authorization extension.
pub const MIV_SET: &str = "https://fhir.bfarm.de/StructureDefinition/HealthAppMivSet";
/// The profile of a DiGA's DeviceDefinition.
pub const HEALTH_APP_PROFILE: &str = "https://fhir.bfarm.de/StructureDefinition/HealthApp";
/// The most DiGAs read from one source.
pub const MAX_DIGAS: usize = 10_000;

/// What reading a page found besides the DiGAs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BfarmPage {
    /// The next page's URL (`link` `next`), if any.
    pub next: Option<String>,
    /// Entries or certificates left out, and why (for the operator's log).
    pub skipped: Vec<String>,
}

fn extensions<'a>(value: &'a Value, url: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    value
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |extension| extension.get("url").and_then(Value::as_str) == Some(url))
}

fn text_value(extension: &Value) -> Option<&str> {
    ["valueString", "valueUri", "valueUrl", "valueCanonical"]
        .iter()
        .find_map(|key| extension.get(*key).and_then(Value::as_str))
        .or_else(|| {
            extension
                .get("valueReference")
                .and_then(|reference| reference.get("reference"))
                .and_then(Value::as_str)
        })
}

fn miv_of(reference: &str, value_set_base: &str) -> Option<Miv> {
    let reference = reference.split('|').next()?;
    let id = reference
        .strip_prefix(value_set_base)
        .or_else(|| reference.strip_prefix("ValueSet/"))?;
    Miv::from_value_set_id(id)
}

/// Adds the DiGAs of one Bundle page to `registry`, checking certificates
/// at `now` (Unix seconds).
pub fn read_bfarm_page(
    bundle: &[u8],
    registry: &mut DigaRegistry,
    value_set_base: &str,
    now: i64,
) -> Result<BfarmPage, String> {
    let bundle: Value =
        serde_json::from_slice(bundle).map_err(|_| "the answer is not JSON".to_owned())?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err("the answer is not a FHIR Bundle".to_owned());
    }
    let mut page = BfarmPage {
        next: bundle
            .get("link")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|link| link.get("relation").and_then(Value::as_str) == Some("next"))
            .and_then(|link| link.get("url").and_then(Value::as_str))
            .map(str::to_owned),
        skipped: Vec::new(),
    };
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for resource in entries.iter().filter_map(|entry| entry.get("resource")) {
        if resource.get("resourceType").and_then(Value::as_str) != Some("DeviceDefinition") {
            continue;
        }
        if registry.entries().count() >= MAX_DIGAS {
            return Err(format!("more than {MAX_DIGAS} DiGAs"));
        }
        match entry_of(resource, value_set_base, now, &mut page.skipped) {
            Ok(Some(entry)) => {
                let id = entry.client_id.to_string();
                if let Err(error) = registry.upsert(entry, now) {
                    page.skipped.push(format!("{id}: {error}"));
                }
            }
            Ok(None) => {}
            Err(reason) => page.skipped.push(reason),
        }
    }
    Ok(page)
}

fn entry_of(
    resource: &Value,
    value_set_base: &str,
    now: i64,
    skipped: &mut Vec<String>,
) -> Result<Option<DigaRegistryEntry>, String> {
    let Some(diga_id) = resource
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|identifier| identifier.get("system").and_then(Value::as_str) == Some(DIGA_ID_SYSTEM))
        .and_then(|identifier| identifier.get("value").and_then(Value::as_str))
    else {
        // Not a DiGA (e.g. a component DeviceDefinition of the same search).
        return Ok(None);
    };
    let client_id = DigaClientId::parse(&format!("urn:diga:bfarm:{diga_id}"))
        .ok_or_else(|| format!("DiGA-ID {:.10}: not five digits", diga_id))?;
    let Some(trust) = extensions(resource, TRUST_ATTRIBUTES).next() else {
        // Listed without HDDT trust attributes: not an HDDT client.
        return Ok(None);
    };
    let claimed = extensions(trust, "clientId").find_map(text_value);
    if claimed != Some(client_id.as_str()) {
        return Err(format!("{client_id}: clientId does not match the DiGA-ID"));
    }
    let redirect_uri = extensions(trust, "redirectUri")
        .find_map(text_value)
        .ok_or_else(|| format!("{client_id}: no redirectUri"))?
        .to_owned();
    let mut certificates = Vec::new();
    for (index, extension) in extensions(trust, "clientCertificates").enumerate() {
        let Some(der) = extension
            .get("valueBase64Binary")
            .and_then(Value::as_str)
            .and_then(|text| STANDARD.decode(text.trim()).ok())
        else {
            skipped.push(format!("{client_id}: certificate {index}: not base64"));
            continue;
        };
        match check_client_certificate(&der, now) {
            Ok(_) => certificates.push(der),
            Err(reason) => skipped.push(format!("{client_id}: certificate {index}: {reason}")),
        }
    }
    let mut mivs = Vec::new();
    for extension in extensions(resource, MIV_SET) {
        let reference = text_value(extension).or_else(|| {
            extension
                .get("extension")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(text_value)
        });
        match reference.and_then(|reference| miv_of(reference, value_set_base)) {
            Some(miv) if !mivs.contains(&miv) => mivs.push(miv),
            Some(_) => {}
            None => skipped.push(format!("{client_id}: an MIV set that is not a known MIV")),
        }
    }
    let name = resource
        .get("deviceName")
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(|name| name.get("name").and_then(Value::as_str))
        .unwrap_or(client_id.as_str())
        .chars()
        .take(200)
        .collect();
    Ok(Some(DigaRegistryEntry {
        client_id,
        name,
        status: DigaStatus::Active,
        redirect_uri,
        mivs,
        certificates,
    }))
}

/// A `HealthApp` DeviceDefinition as BfArM's registry lists it (for tests
/// and for operators who mirror the registry).
pub fn health_app_resource(entry: &DigaRegistryEntry, value_set_base: &str) -> Value {
    let mut trust = vec![
        serde_json::json!({"url": "clientId", "valueString": entry.client_id.as_str()}),
        serde_json::json!({"url": "redirectUri", "valueUri": entry.redirect_uri}),
    ];
    trust.extend(entry.certificates.iter().map(|der| {
        serde_json::json!({"url": "clientCertificates", "valueBase64Binary": STANDARD.encode(der)})
    }));
    let mut extension = vec![serde_json::json!({"url": TRUST_ATTRIBUTES, "extension": trust})];
    extension.extend(entry.mivs.iter().map(|miv| {
        serde_json::json!({"url": MIV_SET, "valueCanonical": medvault_core::hddt::value_set_url(value_set_base, *miv)})
    }));
    serde_json::json!({
        "resourceType": "DeviceDefinition",
        "meta": {"profile": [HEALTH_APP_PROFILE]},
        "identifier": [{"system": DIGA_ID_SYSTEM, "value": entry.client_id.diga_id()}],
        "deviceName": [{"name": entry.name, "type": "user-friendly-name"}],
        "extension": extension
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use medvault_core::hddt::DEFAULT_VALUE_SET_BASE;
    use medvault_testkit::{CertificateSpec, TestCertificate, wall_clock_now};
    use serde_json::json;

    use super::*;

    fn entry(id: &str, certificates: Vec<Vec<u8>>) -> DigaRegistryEntry {
        DigaRegistryEntry {
            client_id: DigaClientId::parse(id).unwrap(),
            name: "Glukose-Tagebuch".to_owned(),
            status: DigaStatus::Active,
            redirect_uri: "https://diga.example/callback".to_owned(),
            mivs: vec![Miv::ContinuousGlucose],
            certificates,
        }
    }

    #[test]
    fn a_page_of_health_apps_becomes_the_registry() {
        let now = wall_clock_now().unix_timestamp();
        let good = TestCertificate::diga("good");
        let mut weak = CertificateSpec::diga("too-long");
        weak.not_after = wall_clock_now() + time::Duration::days(800);
        let weak = TestCertificate::self_signed(&weak);
        let first = health_app_resource(
            &entry(
                "urn:diga:bfarm:00294",
                vec![good.der.clone(), weak.der.clone()],
            ),
            DEFAULT_VALUE_SET_BASE,
        );
        let mut mismatched = health_app_resource(
            &entry("urn:diga:bfarm:11111", vec![good.der.clone()]),
            DEFAULT_VALUE_SET_BASE,
        );
        mismatched["extension"][0]["extension"][0]["valueString"] = json!("urn:diga:bfarm:22222");
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "next", "url": "https://diga.bfarm.de/api/fhir/v3.0/DeviceDefinition?page=2"}],
            "entry": [
                {"resource": first},
                {"resource": mismatched},
                {"resource": {"resourceType": "DeviceDefinition", "identifier": [{"system": "other", "value": "x"}]}}
            ]
        });
        let mut registry = DigaRegistry::default();
        let page = read_bfarm_page(
            &serde_json::to_vec(&bundle).unwrap(),
            &mut registry,
            DEFAULT_VALUE_SET_BASE,
            now,
        )
        .unwrap();
        assert_eq!(
            page.next.as_deref(),
            Some("https://diga.bfarm.de/api/fhir/v3.0/DeviceDefinition?page=2")
        );
        let listed = registry
            .get(&DigaClientId::parse("urn:diga:bfarm:00294").unwrap())
            .unwrap();
        // The 800-day certificate is dropped, the good one kept.
        assert_eq!(listed.certificates, vec![good.der.clone()]);
        assert_eq!(listed.mivs, vec![Miv::ContinuousGlucose]);
        assert_eq!(listed.status, DigaStatus::Active);
        assert_eq!(registry.entries().count(), 1);
        assert_eq!(page.skipped.len(), 2, "{:?}", page.skipped);
        assert!(read_bfarm_page(b"{}", &mut registry, DEFAULT_VALUE_SET_BASE, now).is_err());
        assert!(read_bfarm_page(b"<xml/>", &mut registry, DEFAULT_VALUE_SET_BASE, now).is_err());
    }
}
