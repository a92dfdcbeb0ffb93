//! The FHIR R4 resources medvault serves, rendered as JSON the way the HDDT
//! profiles define them: Observation (blood-glucose reading, CGM chunk),
//! Device, DeviceMetric, Bundle and OperationOutcome. No `subject`: a DiGA
//! learns which patient only from its Pairing ID.

use medvault_store::{DeviceRowV1, ObservationKind, ObservationRowV1};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalogue::{self, DeviceModel, GlucoseUnit, SNOMED_VERSION};

/// Canonical base of the HDDT profiles.
pub const PROFILE_BASE: &str = "https://gematik.de/fhir/hddt/StructureDefinition/";
/// UCUM's system URI.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// LOINC's system URI.
pub const LOINC: &str = "http://loinc.org";
/// SNOMED CT's system URI.
pub const SNOMED: &str = "http://snomed.info/sct";

/// The profile of a blood-glucose Observation.
pub const BLOOD_GLUCOSE_PROFILE: &str =
    "https://gematik.de/fhir/hddt/StructureDefinition/hddt-blood-glucose-measurement";
/// The profile of a CGM Observation.
pub const CGM_PROFILE: &str =
    "https://gematik.de/fhir/hddt/StructureDefinition/hddt-continuous-glucose-measurement";
/// The profile of a Device.
pub const DEVICE_PROFILE: &str =
    "https://gematik.de/fhir/hddt/StructureDefinition/hddt-personal-health-device";
/// The profile of a DeviceMetric.
pub const DEVICE_METRIC_PROFILE: &str =
    "https://gematik.de/fhir/hddt/StructureDefinition/hddt-sensor-type-and-calibration-status";

/// An instant as FHIR writes it (RFC 3339, UTC).
pub fn instant(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A number at the unit's precision (whole mg/dL, one decimal of mmol/L).
pub fn quantity_value(value: f64, unit: GlucoseUnit) -> Value {
    if unit.decimals() == 0 {
        #[allow(clippy::cast_possible_truncation)]
        let whole = value.round() as i64;
        json!(whole)
    } else {
        let scale = 10_f64.powi(i32::try_from(unit.decimals()).unwrap_or(0));
        json!((value * scale).round() / scale)
    }
}

fn meta(version: i64, last_updated: OffsetDateTime, profile: &str) -> Value {
    json!({
        "versionId": version.to_string(),
        "lastUpdated": instant(last_updated),
        "profile": [profile],
    })
}

/// The reference an Observation of `row` makes to its device.
pub fn device_reference(row: &ObservationRowV1) -> String {
    match &row.metric_id {
        Some(metric) => format!("DeviceMetric/{metric}"),
        None => format!("Device/{}", row.device_id),
    }
}

/// An Observation (blood-glucose reading or CGM chunk).
pub fn observation(row: &ObservationRowV1) -> Value {
    let unit = GlucoseUnit::parse(&row.unit).unwrap_or(GlucoseUnit::MgPerDl);
    let mut resource = Map::new();
    resource.insert("resourceType".into(), json!("Observation"));
    resource.insert("id".into(), json!(row.id));
    let profile = match row.kind {
        ObservationKind::Single => BLOOD_GLUCOSE_PROFILE,
        ObservationKind::Chunk => CGM_PROFILE,
    };
    resource.insert("meta".into(), meta(row.version, row.last_updated, profile));
    resource.insert("status".into(), json!(row.status));
    let mut coding = json!({"system": LOINC, "code": row.code});
    if let (Some(display), Some(object)) =
        (catalogue::loinc_display(&row.code), coding.as_object_mut())
    {
        object.insert("display".into(), json!(display));
    }
    resource.insert("code".into(), json!({ "coding": [coding] }));
    match row.kind {
        ObservationKind::Single => {
            resource.insert(
                "effectiveDateTime".into(),
                json!(instant(row.effective_start)),
            );
            let mut quantity = Map::new();
            quantity.insert(
                "value".into(),
                quantity_value(row.value.unwrap_or(0.0), unit),
            );
            if let Some(comparator) = &row.comparator {
                quantity.insert("comparator".into(), json!(comparator));
            }
            quantity.insert("unit".into(), json!(unit.ucum()));
            quantity.insert("system".into(), json!(UCUM));
            quantity.insert("code".into(), json!(unit.ucum()));
            resource.insert("valueQuantity".into(), Value::Object(quantity));
        }
        ObservationKind::Chunk => {
            resource.insert(
                "effectivePeriod".into(),
                json!({"start": instant(row.effective_start), "end": instant(row.effective_end)}),
            );
            match row.samples.as_deref().filter(|s| !s.is_empty()) {
                Some(samples) => {
                    let mut sampled = Map::new();
                    sampled.insert(
                        "origin".into(),
                        json!({"value": 0, "unit": unit.ucum(), "system": UCUM, "code": unit.ucum()}),
                    );
                    sampled.insert("period".into(), json!(row.period_ms.unwrap_or(0)));
                    sampled.insert("dimensions".into(), json!(1));
                    sampled.insert("data".into(), json!(samples));
                    resource.insert("valueSampledData".into(), Value::Object(sampled));
                }
                None => {
                    resource.insert(
                        "dataAbsentReason".into(),
                        json!({"coding": [{
                            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                            "code": "temp-unknown",
                            "display": "Temporarily Unknown"
                        }]}),
                    );
                }
            }
        }
    }
    resource.insert(
        "device".into(),
        json!({ "reference": device_reference(row) }),
    );
    Value::Object(resource)
}

/// Adds a CGM chunk's measuring range (`lowerLimit`/`upperLimit`: where the
/// `L` and `U` tokens start) from its device's model.
pub fn add_sampled_limits(resource: &mut Value, model: &DeviceModel, unit: GlucoseUnit) {
    if let Some(sampled) = resource
        .get_mut("valueSampledData")
        .and_then(Value::as_object_mut)
    {
        sampled.insert(
            "lowerLimit".into(),
            quantity_value(unit.from_mg_dl(model.low_mg_dl), unit),
        );
        sampled.insert(
            "upperLimit".into(),
            quantity_value(unit.from_mg_dl(model.high_mg_dl), unit),
        );
    }
}

/// A Device. `status` is `unknown` once no data arrived for `sync_delay`
/// (the registered Delay-From-Real-Time).
pub fn device(
    row: &DeviceRowV1,
    model: &DeviceModel,
    now: OffsetDateTime,
    sync_delay: time::Duration,
) -> Value {
    let last_seen = row.last_sync_at.unwrap_or(row.created_at);
    let status = if row.status == "active" && now - last_seen > sync_delay {
        "unknown"
    } else {
        row.status.as_str()
    };
    let mut resource = json!({
        "resourceType": "Device",
        "id": row.id,
        "meta": meta(row.version, row.updated_at, DEVICE_PROFILE),
        "status": status,
        "manufacturer": model.manufacturer,
        "serialNumber": row.serial_number,
        "deviceName": [{"name": model.name, "type": "user-friendly-name"}],
        "modelNumber": model.model_number,
        "type": {"coding": [{
            "system": SNOMED,
            "version": SNOMED_VERSION,
            "code": model.device_type.code,
            "display": model.device_type.display,
        }]},
    });
    if model.sensor_days > 0
        && let Some(object) = resource.as_object_mut()
    {
        let expires = row.created_at + time::Duration::days(i64::from(model.sensor_days));
        object.insert("expirationDate".into(), json!(expires.date().to_string()));
    }
    resource
}

/// A DeviceMetric (sensor type and calibration status) of a device that
/// needs calibration; `None` for others.
pub fn device_metric(row: &DeviceRowV1, model: &DeviceModel) -> Option<Value> {
    let id = row.metric_id.as_ref()?;
    let mut calibration = json!({"type": "unspecified", "state": row.calibration_state});
    if let (Some(time), Some(object)) = (row.calibration_time, calibration.as_object_mut()) {
        object.insert("time".into(), json!(instant(time)));
    }
    let mut resource = json!({
        "resourceType": "DeviceMetric",
        "id": id,
        "meta": meta(row.metric_version, row.updated_at, DEVICE_METRIC_PROFILE),
        "type": {"coding": [{
            "system": "urn:iso:std:iso:11073:10101",
            "code": model.metric_type.code,
            "display": model.metric_type.display,
        }]},
        "unit": {"coding": [{"system": UCUM, "code": row.unit, "display": row.unit}]},
        "source": {"reference": format!("Device/{}", row.id)},
        "operationalStatus": if row.status == "active" { "on" } else { "off" },
        "category": "measurement",
        "calibration": [calibration],
    });
    if model.period_secs > 0
        && let Some(object) = resource.as_object_mut()
    {
        let (period, unit) = if model.period_secs.is_multiple_of(60) {
            (model.period_secs / 60, "min")
        } else {
            (model.period_secs, "s")
        };
        object.insert(
            "measurementPeriod".into(),
            json!({"repeat": {"frequency": 1, "period": period, "periodUnit": unit}}),
        );
    }
    Some(resource)
}

/// The severity of an OperationOutcome issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `fatal`.
    Fatal,
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `information`.
    Information,
}

impl Severity {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Fatal => "fatal",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Information => "information",
        }
    }
}

/// An OperationOutcome with one issue.
pub fn operation_outcome(severity: Severity, code: &str, diagnostics: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity.as_str(), "code": code, "diagnostics": diagnostics}],
    })
}

/// An OperationOutcome whose issue carries a code of HL7's
/// `operation-outcome` CodeSystem (the CGM summary's `MSG_*` codes).
pub fn operation_outcome_coded(
    severity: Severity,
    code: &str,
    message: &str,
    diagnostics: &str,
) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": severity.as_str(),
            "code": code,
            "details": {
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/operation-outcome",
                    "code": message,
                }],
                "text": diagnostics,
            },
        }],
    })
}

/// How an entry got into a search Bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// It matched.
    Match,
    /// `_include` added it.
    Include,
    /// A warning about the search.
    Outcome,
}

/// A searchset Bundle.
pub fn searchset(
    base: &str,
    self_url: &str,
    next_url: Option<&str>,
    entries: Vec<(Value, EntryMode)>,
) -> Value {
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if let Some(next) = next_url {
        links.push(json!({"relation": "next", "url": next}));
    }
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(resource, mode)| {
            let mode = match mode {
                EntryMode::Match => "match",
                EntryMode::Include => "include",
                EntryMode::Outcome => "outcome",
            };
            let kind = resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("");
            let id = resource.get("id").and_then(Value::as_str);
            let mut entry = Map::new();
            if let Some(id) = id {
                entry.insert("fullUrl".into(), json!(format!("{base}/{kind}/{id}")));
            }
            entry.insert("resource".into(), resource);
            entry.insert("search".into(), json!({ "mode": mode }));
            Value::Object(entry)
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
    });
    if !entries.is_empty()
        && let Some(object) = bundle.as_object_mut()
    {
        object.insert("entry".into(), Value::Array(entries));
    }
    bundle
}
