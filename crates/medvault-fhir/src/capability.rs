//! The CapabilityStatement (`GET /fhir/metadata`): exactly the profiles,
//! interactions, search parameters and operations this server supports.

use serde_json::{Value, json};

use crate::resources::{BLOOD_GLUCOSE_PROFILE, CGM_PROFILE, DEVICE_METRIC_PROFILE, DEVICE_PROFILE};

/// The HDDT CGM summary operation's canonical URL.
pub const CGM_SUMMARY_OPERATION: &str =
    "https://gematik.de/fhir/hddt/OperationDefinition/hddt-cgm-summary-operation";

fn parameter(name: &str, definition: &str, kind: &str, documentation: &str) -> Value {
    json!({
        "name": name,
        "definition": format!("http://hl7.org/fhir/SearchParameter/{definition}"),
        "type": kind,
        "documentation": documentation,
    })
}

/// When this statement last changed (CapabilityStatement.date).
pub const STATEMENT_DATE: &str = "2026-12-03";

/// The statement, for the FHIR base `base` (what it supports, no more).
pub fn capability_statement(base: &str, version: &str, with_summary: bool) -> Value {
    let paging = "Results come in pages (_count, default 50, at most 500; follow the next link). _sort=date or -date.";
    let mut observation = json!({
        "type": "Observation",
        "supportedProfile": [BLOOD_GLUCOSE_PROFILE, CGM_PROFILE],
        "documentation": format!("Only Observations of the MIVs the access token grants, of the pairing's patient, within the historic period. subject and patient are implied by the token and refused when sent. {paging}"),
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "versioned",
        "readHistory": false,
        "searchInclude": ["Observation:device", "DeviceMetric:source"],
        "searchParam": [
            parameter("code", "clinical-code", "token", "LOINC code, also code:in=<MIV ValueSet>"),
            parameter("date", "clinical-date", "date", "All prefixes (eq ne gt lt ge le sa eb ap)"),
            parameter("value-quantity", "Observation-value-quantity", "quantity", "Blood glucose readings (mg/dL, mmol/L)"),
            parameter("_id", "Resource-id", "token", "Resource ids"),
            parameter("_lastUpdated", "Resource-lastUpdated", "date", "When a CGM chunk last changed"),
        ],
    });
    if with_summary && let Some(object) = observation.as_object_mut() {
        object.insert(
            "operation".into(),
            json!([{"name": "hddt-cgm-summary", "definition": CGM_SUMMARY_OPERATION}]),
        );
    }
    json!({
        "resourceType": "CapabilityStatement",
        "id": "medvault-hddt",
        "status": "active",
        "date": STATEMENT_DATE,
        "publisher": "medvault",
        "kind": "instance",
        "software": {"name": "medvault", "version": version},
        "implementation": {"description": "medvault HDDT Device Data Recorder", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json", "xml"],
        "rest": [{
            "mode": "server",
            "documentation": "Every request but this one needs mutual TLS with the DiGA's registered certificate and an access token (Authorization: Bearer) of this server's authorization server.",
            "security": {"cors": false, "description": "mTLS (DiGA-VZ certificate) + OAuth 2.0 bearer token with SMART v2 scopes"},
            "resource": [
                observation,
                {
                    "type": "Device",
                    "supportedProfile": [DEVICE_PROFILE],
                    "documentation": format!("Only devices an Observation the token grants references. {paging}"),
                    "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
                    "versioning": "versioned",
                    "readHistory": true,
                    "searchParam": [
                        parameter("_id", "Resource-id", "token", "Resource ids"),
                        parameter("type", "Device-type", "token", "SNOMED CT device type"),
                        parameter("device-name", "Device-device-name", "string", "Product name (:exact, :contains)"),
                        parameter("manufacturer", "Device-manufacturer", "string", "Manufacturer (:exact, :contains)"),
                    ],
                },
                {
                    "type": "DeviceMetric",
                    "supportedProfile": [DEVICE_METRIC_PROFILE],
                    "documentation": format!("Only metrics an Observation the token grants references. {paging}"),
                    "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
                    "versioning": "versioned",
                    "readHistory": true,
                    "searchInclude": ["DeviceMetric:source"],
                    "searchParam": [
                        parameter("_id", "Resource-id", "token", "Resource ids"),
                        parameter("source", "DeviceMetric-source", "reference", "The Device"),
                    ],
                },
            ],
        }],
    })
}
