//! medvault's FHIR constants against the HDDT guide's own artifacts
//! (`conformance/hddt-ig/`, guide 1.0.1): the MIV ValueSets, the device
//! types of the catalogue, the profiles' canonical URLs, and the examples
//! (each parses, and its XML form keeps every primitive value).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use medvault_core::hddt::Miv;
use serde_json::Value;

fn ig() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance/hddt-ig")
}

fn read(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(ig().join(name)).unwrap()).unwrap()
}

fn value_set_codes(name: &str) -> BTreeSet<String> {
    read(name)["compose"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|include| include["concept"].as_array().cloned().unwrap_or_default())
        .map(|concept| concept["code"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_miv_codes_are_the_guides_value_sets() {
    for miv in Miv::SUPPORTED {
        let ours: BTreeSet<String> = medvault_fhir::valuesets::codes(miv)
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let file = format!("ValueSet-{}.json", miv.value_set_id());
        assert_eq!(ours, value_set_codes(&file), "{file}");
    }
}

#[test]
fn catalogue_device_types_are_in_the_device_type_value_set() {
    let types = value_set_codes("ValueSet-hddt-device-type.json");
    for model in medvault_fhir::catalogue::CATALOGUE {
        assert!(types.contains(model.device_type.code), "{}", model.id);
    }
}

#[test]
fn our_profile_urls_are_the_guides() {
    for (file, ours) in [
        (
            "StructureDefinition-hddt-blood-glucose-measurement.json",
            medvault_fhir::resources::BLOOD_GLUCOSE_PROFILE,
        ),
        (
            "StructureDefinition-hddt-continuous-glucose-measurement.json",
            medvault_fhir::resources::CGM_PROFILE,
        ),
        (
            "StructureDefinition-hddt-personal-health-device.json",
            medvault_fhir::resources::DEVICE_PROFILE,
        ),
        (
            "StructureDefinition-hddt-sensor-type-and-calibration-status.json",
            medvault_fhir::resources::DEVICE_METRIC_PROFILE,
        ),
        (
            "StructureDefinition-hddt-cgm-summary.json",
            medvault_fhir::summary::SUMMARY_BUNDLE_PROFILE,
        ),
        (
            "OperationDefinition-hddt-cgm-summary-operation.json",
            medvault_fhir::capability::CGM_SUMMARY_OPERATION,
        ),
    ] {
        assert_eq!(read(file)["url"], ours, "{file}");
    }
}

/// Every primitive value of a JSON resource, as text.
fn primitives(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                if key != "resourceType" && key != "text" {
                    primitives(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| primitives(item, out)),
        Value::String(text) => out.push(text.clone()),
        Value::Number(number) => out.push(number.to_string()),
        Value::Bool(flag) => out.push(flag.to_string()),
        Value::Null => {}
    }
}

#[test]
fn every_example_parses_and_keeps_its_values_in_xml() {
    let mut count = 0;
    for entry in std::fs::read_dir(ig()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json")
            || path.file_name().unwrap() == "package.json"
        {
            continue;
        }
        let mut resource: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(resource["resourceType"].is_string(), "{}", path.display());
        // Narrative XHTML is not part of what the server writes.
        resource.as_object_mut().unwrap().remove("text");
        let xml = medvault_fhir::xml::to_xml(&resource);
        let kind = resource["resourceType"].as_str().unwrap();
        assert!(
            xml.contains(&format!("<{kind} xmlns=\"http://hl7.org/fhir\">")),
            "{}",
            path.display()
        );
        let mut values = Vec::new();
        primitives(&resource, &mut values);
        for value in values {
            let escaped = value
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\n', "&#xA;");
            assert!(
                xml.contains(&format!("value=\"{escaped}\"")),
                "{}: {value} lost",
                path.display()
            );
        }
        count += 1;
    }
    assert!(count >= 60, "{count}");
}
