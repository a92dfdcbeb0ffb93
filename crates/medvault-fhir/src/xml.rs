//! FHIR XML from the JSON form of the resources this server produces
//! (FHIR R4 "XML Representation"): primitives as `value` attributes, arrays
//! as repeated elements, contained resources wrapped in an element named
//! after their type, and children in the order the specification defines
//! for each element (XML, unlike JSON, is order-sensitive).
//!
//! Only the resources and datatypes medvault emits are known; an element
//! without a known order keeps its JSON order (serde_json's, alphabetical).

use serde_json::{Map, Value};

const NAMESPACE: &str = "http://hl7.org/fhir";

const RESOURCE_PREFIX: &[&str] = &[
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
];

/// The element order of a resource or datatype.
fn order(kind: &str) -> &'static [&'static str] {
    match kind {
        "Observation" => &[
            "identifier",
            "basedOn",
            "partOf",
            "status",
            "category",
            "code",
            "subject",
            "focus",
            "encounter",
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveTiming",
            "effectiveInstant",
            "issued",
            "performer",
            "valueQuantity",
            "valueCodeableConcept",
            "valueString",
            "valueBoolean",
            "valueInteger",
            "valueRange",
            "valueRatio",
            "valueSampledData",
            "valueTime",
            "valueDateTime",
            "valuePeriod",
            "dataAbsentReason",
            "interpretation",
            "note",
            "bodySite",
            "method",
            "specimen",
            "device",
            "referenceRange",
            "hasMember",
            "derivedFrom",
            "component",
        ],
        "Observation.component" => &[
            "code",
            "valueQuantity",
            "valueCodeableConcept",
            "valueString",
            "valueBoolean",
            "valueInteger",
            "valueRange",
            "valueRatio",
            "valueSampledData",
            "valueTime",
            "valueDateTime",
            "valuePeriod",
            "dataAbsentReason",
            "interpretation",
            "referenceRange",
        ],
        "Device" => &[
            "identifier",
            "definition",
            "udiCarrier",
            "status",
            "statusReason",
            "distinctIdentifier",
            "manufacturer",
            "manufactureDate",
            "expirationDate",
            "lotNumber",
            "serialNumber",
            "deviceName",
            "modelNumber",
            "partNumber",
            "type",
            "specialization",
            "version",
            "property",
            "patient",
            "owner",
            "contact",
            "location",
            "url",
            "note",
            "safety",
            "parent",
        ],
        "Device.deviceName" => &["name", "type"],
        "DeviceMetric" => &[
            "identifier",
            "type",
            "unit",
            "source",
            "parent",
            "operationalStatus",
            "color",
            "category",
            "measurementPeriod",
            "calibration",
        ],
        "DeviceMetric.calibration" => &["type", "state", "time"],
        "Timing" => &["event", "repeat", "code"],
        "Timing.repeat" => &[
            "boundsDuration",
            "boundsRange",
            "boundsPeriod",
            "count",
            "countMax",
            "duration",
            "durationMax",
            "durationUnit",
            "frequency",
            "frequencyMax",
            "period",
            "periodMax",
            "periodUnit",
            "dayOfWeek",
            "timeOfDay",
            "when",
            "offset",
        ],
        "Bundle" => &[
            "identifier",
            "type",
            "timestamp",
            "total",
            "link",
            "entry",
            "signature",
        ],
        "Bundle.link" => &["relation", "url"],
        "Bundle.entry" => &[
            "link", "fullUrl", "resource", "search", "request", "response",
        ],
        "Bundle.entry.search" => &["mode", "score"],
        "OperationOutcome" => &["issue"],
        "OperationOutcome.issue" => &[
            "severity",
            "code",
            "details",
            "diagnostics",
            "location",
            "expression",
        ],
        "Meta" => &[
            "versionId",
            "lastUpdated",
            "source",
            "profile",
            "security",
            "tag",
        ],
        "CodeableConcept" => &["coding", "text"],
        "Coding" => &["system", "version", "code", "display", "userSelected"],
        "Quantity" => &["value", "comparator", "unit", "system", "code"],
        "SampledData" => &[
            "origin",
            "period",
            "factor",
            "lowerLimit",
            "upperLimit",
            "dimensions",
            "data",
        ],
        "Period" => &["start", "end"],
        "Reference" => &["reference", "type", "identifier", "display"],
        "Parameters" => &["parameter"],
        "Parameters.parameter" => &["name", "valueBoolean", "valueDateTime", "resource", "part"],
        "CapabilityStatement" => &[
            "url",
            "version",
            "name",
            "title",
            "status",
            "experimental",
            "date",
            "publisher",
            "contact",
            "description",
            "useContext",
            "jurisdiction",
            "purpose",
            "copyright",
            "kind",
            "instantiates",
            "imports",
            "software",
            "implementation",
            "fhirVersion",
            "format",
            "patchFormat",
            "implementationGuide",
            "rest",
            "messaging",
            "document",
        ],
        "CapabilityStatement.software" => &["name", "version", "releaseDate"],
        "CapabilityStatement.implementation" => &["description", "url", "custodian"],
        "CapabilityStatement.rest" => &[
            "mode",
            "documentation",
            "security",
            "resource",
            "interaction",
            "searchParam",
            "operation",
            "compartment",
        ],
        "CapabilityStatement.rest.security" => &["cors", "service", "description"],
        "CapabilityStatement.rest.resource" => &[
            "type",
            "profile",
            "supportedProfile",
            "documentation",
            "interaction",
            "versioning",
            "readHistory",
            "updateCreate",
            "conditionalCreate",
            "conditionalRead",
            "conditionalUpdate",
            "conditionalDelete",
            "referencePolicy",
            "searchInclude",
            "searchRevInclude",
            "searchParam",
            "operation",
        ],
        "CapabilityStatement.rest.resource.interaction" => &["code", "documentation"],
        "CapabilityStatement.rest.resource.searchParam" => {
            &["name", "definition", "type", "documentation"]
        }
        "CapabilityStatement.rest.resource.operation" => &["name", "definition", "documentation"],
        _ => &[],
    }
}

/// The type of child `key` of an element of type `parent`.
fn child_type(parent: &str, key: &str) -> String {
    let datatype = match key {
        "meta" => "Meta",
        "coding" => "Coding",
        "code" | "category" | "dataAbsentReason" | "method" | "interpretation" | "details"
            if parent != "DeviceMetric" =>
        {
            "CodeableConcept"
        }
        "type" if matches!(parent, "Device" | "DeviceMetric") => "CodeableConcept",
        "unit" if parent == "DeviceMetric" => "CodeableConcept",
        "valueQuantity" | "origin" => "Quantity",
        "valueSampledData" => "SampledData",
        "effectivePeriod" | "valuePeriod" => "Period",
        "device" | "source" | "subject" | "definition" | "parent" => "Reference",
        "measurementPeriod" => "Timing",
        "repeat" if parent == "Timing" => "Timing.repeat",
        _ => "",
    };
    if datatype.is_empty() {
        format!("{parent}.{key}")
    } else {
        datatype.to_owned()
    }
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            '\t' => out.push_str("&#x9;"),
            c if u32::from(c) < 0x20 => {}
            c => out.push(c),
        }
    }
}

fn sorted<'a>(kind: &str, object: &'a Map<String, Value>) -> Vec<(&'a String, &'a Value)> {
    let resource = object.contains_key("resourceType");
    let known = order(kind);
    let rank = |key: &str| -> usize {
        if resource && let Some(index) = RESOURCE_PREFIX.iter().position(|k| *k == key) {
            return index;
        }
        known
            .iter()
            .position(|k| *k == key)
            .map_or(usize::MAX, |index| RESOURCE_PREFIX.len() + index)
    };
    let mut entries: Vec<_> = object
        .iter()
        .filter(|(key, _)| key.as_str() != "resourceType")
        .collect();
    entries.sort_by_key(|(key, _)| rank(key));
    entries
}

fn element(name: &str, kind: &str, value: &Value, out: &mut String) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                element(name, kind, item, out);
            }
        }
        Value::Object(object) => {
            if let Some(resource_type) = object.get("resourceType").and_then(Value::as_str) {
                out.push('<');
                out.push_str(name);
                out.push('>');
                resource(resource_type, object, out);
                out.push_str("</");
                out.push_str(name);
                out.push('>');
                return;
            }
            out.push('<');
            out.push_str(name);
            out.push('>');
            for (key, child) in sorted(kind, object) {
                element(key, &child_type(kind, key), child, out);
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        Value::String(text) => primitive(name, text, out),
        Value::Bool(flag) => primitive(name, if *flag { "true" } else { "false" }, out),
        Value::Number(number) => primitive(name, &number.to_string(), out),
    }
}

fn primitive(name: &str, text: &str, out: &mut String) {
    out.push('<');
    out.push_str(name);
    out.push_str(" value=\"");
    escape(text, out);
    out.push_str("\"/>");
}

fn resource(kind: &str, object: &Map<String, Value>, out: &mut String) {
    out.push('<');
    out.push_str(kind);
    out.push_str(" xmlns=\"");
    out.push_str(NAMESPACE);
    out.push_str("\">");
    for (key, child) in sorted(kind, object) {
        element(key, &child_type(kind, key), child, out);
    }
    out.push_str("</");
    out.push_str(kind);
    out.push('>');
}

/// The XML of a resource in FHIR JSON form (`resourceType` required).
pub fn to_xml(value: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    if let Some(object) = value.as_object()
        && let Some(kind) = object.get("resourceType").and_then(Value::as_str)
    {
        resource(kind, object, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn primitives_become_value_attributes_in_spec_order() {
        let observation = json!({
            "resourceType": "Observation",
            "valueQuantity": {"code": "mg/dL", "system": "http://unitsofmeasure.org", "unit": "mg/dL", "value": 120, "comparator": "<"},
            "status": "final",
            "id": "a1",
            "code": {"coding": [{"display": "x & y", "code": "41653-7", "system": "http://loinc.org"}]},
            "device": {"reference": "Device/d1"},
        });
        assert_eq!(
            to_xml(&observation),
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                "<Observation xmlns=\"http://hl7.org/fhir\"><id value=\"a1\"/><status value=\"final\"/>",
                "<code><coding><system value=\"http://loinc.org\"/><code value=\"41653-7\"/><display value=\"x &amp; y\"/></coding></code>",
                "<valueQuantity><value value=\"120\"/><comparator value=\"&lt;\"/><unit value=\"mg/dL\"/><system value=\"http://unitsofmeasure.org\"/><code value=\"mg/dL\"/></valueQuantity>",
                "<device><reference value=\"Device/d1\"/></device></Observation>"
            )
        );
    }

    #[test]
    fn contained_resources_are_wrapped_and_arrays_repeat() {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"search": {"mode": "match"}, "resource": {"resourceType": "Device", "id": "d1", "type": {"coding": []}, "status": "active"}},
                {"resource": {"resourceType": "Device", "id": "d2"}},
            ],
        });
        let xml = to_xml(&bundle);
        assert!(xml.contains("<entry><resource><Device xmlns=\"http://hl7.org/fhir\"><id value=\"d1\"/><status value=\"active\"/><type></type></Device></resource><search><mode value=\"match\"/></search></entry><entry>"), "{xml}");
    }
}
