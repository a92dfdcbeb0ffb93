//! `$hddt-cgm-summary`: the HL7 CGM summary (IG `hl7.fhir.uv.cgm` 1.0.0)
//! over the CGM chunks of a period: mean glucose (mg/dL and mmol/L), times
//! in the five consensus ranges, GMI, coefficient of variation, days of
//! wear and sensor active percentage, each an Observation, with the summary
//! Observation pointing at them, in a `collection` Bundle (profile
//! `hddt-cgm-summary`).
//!
//! The HL7 profiles demand a `subject`; HDDT forbids identifying the
//! patient. The subject is therefore a logical reference by the Pairing ID
//! (an identifier only the DiGA already knows), never a Patient resource.

use medvault_store::{ObservationKind, ObservationRowV1};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::catalogue::{GlucoseUnit, MG_DL_PER_MMOL_L};
use crate::resources::{LOINC, UCUM, instant};

/// The summary Bundle's profile.
pub const SUMMARY_BUNDLE_PROFILE: &str =
    "https://gematik.de/fhir/hddt/StructureDefinition/hddt-cgm-summary";
const CGM_IG: &str = "http://hl7.org/fhir/uv/cgm/StructureDefinition/";

/// The shortest period summarized (the guide: at least 7 days MUST work,
/// shorter MAY be refused).
pub const MIN_DAYS: i64 = 7;
/// The default period when `effectivePeriodStart` is absent.
pub const DEFAULT_DAYS: i64 = 14;
/// The longest period summarized.
pub const MAX_DAYS: i64 = 90;

/// The metrics of a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Mean glucose, mg/dL.
    pub mean_mg_dl: f64,
    /// Percent of readings: < 54, 54–69, 70–180, 181–250, > 250 mg/dL.
    pub ranges: [f64; 5],
    /// Glucose management indicator, %.
    pub gmi: f64,
    /// Coefficient of variation, %.
    pub cv: f64,
    /// Days with any reading.
    pub days_of_wear: u32,
    /// Readings received of those expected, %.
    pub sensor_active: f64,
    /// Readings counted.
    pub readings: usize,
}

/// The readings of `chunks` within `[from, to]`, in mg/dL (limits as the
/// device's range ends: `L` below 54 counts as very low, `U` as very high).
fn readings(
    chunks: &[ObservationRowV1],
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Vec<(OffsetDateTime, f64)> {
    let mut values = Vec::new();
    for chunk in chunks.iter().filter(|c| c.kind == ObservationKind::Chunk) {
        let unit = GlucoseUnit::parse(&chunk.unit).unwrap_or(GlucoseUnit::MgPerDl);
        let period = time::Duration::milliseconds(chunk.period_ms.unwrap_or(300_000).max(1));
        let Some(samples) = &chunk.samples else {
            continue;
        };
        for (slot, token) in samples.split(' ').enumerate() {
            let at = chunk.effective_start + period * u32::try_from(slot).unwrap_or(u32::MAX);
            if at < from || at > to {
                continue;
            }
            let mg_dl = match token {
                "E" | "" => continue,
                "L" => 39.0,
                "U" => 401.0,
                number => match number.parse::<f64>() {
                    Ok(value) => unit.to_mg_dl(value),
                    Err(_) => continue,
                },
            };
            values.push((at, mg_dl));
        }
    }
    values
}

/// The metrics of `chunks` over `[from, to]`; `None` without any reading.
pub fn metrics(
    chunks: &[ObservationRowV1],
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Option<Metrics> {
    let values = readings(chunks, from, to);
    if values.is_empty() {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let count = values.len() as f64;
    let mean = values.iter().map(|(_, v)| v).sum::<f64>() / count;
    let variance = values.iter().map(|(_, v)| (v - mean).powi(2)).sum::<f64>() / count;
    let mut ranges = [0.0; 5];
    for (_, value) in &values {
        let index = match *value {
            v if v < 54.0 => 0,
            v if v < 70.0 => 1,
            v if v <= 180.0 => 2,
            v if v <= 250.0 => 3,
            _ => 4,
        };
        if let Some(bucket) = ranges.get_mut(index) {
            *bucket += 1.0;
        }
    }
    for bucket in &mut ranges {
        *bucket = *bucket * 100.0 / count;
    }
    let days: std::collections::BTreeSet<_> = values.iter().map(|(at, _)| at.date()).collect();
    let period_ms = chunks
        .iter()
        .filter_map(|c| c.period_ms)
        .min()
        .unwrap_or(300_000)
        .max(1);
    #[allow(clippy::cast_precision_loss)]
    let expected = ((to - from).whole_milliseconds() as f64 / period_ms as f64).max(1.0);
    Some(Metrics {
        mean_mg_dl: mean,
        ranges,
        gmi: 3.31 + 0.023_92 * mean,
        cv: variance.sqrt() / mean * 100.0,
        days_of_wear: u32::try_from(days.len()).unwrap_or(u32::MAX),
        sensor_active: (count / expected * 100.0).min(100.0),
        readings: values.len(),
    })
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

fn quantity(value: f64, unit: &str) -> Value {
    json!({"value": value, "unit": unit, "system": UCUM, "code": unit})
}

/// What a summary report is about.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The period's start.
    pub from: OffsetDateTime,
    /// The period's end.
    pub to: OffsetDateTime,
    /// The subject reference (by Pairing ID).
    pub subject: Value,
    /// The FHIR base URL (`fullUrl`s).
    pub base: &'a str,
    /// Makes the report's resource ids unique.
    pub id_prefix: String,
    /// When it was computed.
    pub now: OffsetDateTime,
}

/// The summary Bundle (entries: the summary, its member Observations, and
/// with `related` the `devices` given).
pub fn bundle(metrics: &Metrics, report: &Report<'_>, devices: Vec<Value>) -> Value {
    let Report {
        from,
        to,
        subject: pairing_reference,
        base,
        id_prefix,
        now,
    } = report;
    let (from, to, now) = (*from, *to, *now);
    let period = json!({"start": instant(from), "end": instant(to)});
    let observation = |id: &str, profile: &str, code: &str, extra: Value| -> Value {
        let mut resource = json!({
            "resourceType": "Observation",
            "id": format!("{id_prefix}-{id}"),
            "meta": {"profile": [format!("{CGM_IG}{profile}")]},
            "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory"
            }]}],
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": pairing_reference,
            "effectivePeriod": period,
        });
        if let (Some(object), Value::Object(extra)) = (resource.as_object_mut(), extra) {
            object.extend(extra);
        }
        resource
    };
    let range_codes = ["104642-4", "104641-6", "97510-2", "104640-8", "104639-0"];
    let members = vec![
        observation(
            "mean-mg",
            "cgm-summary-mean-glucose-mass-per-volume",
            "97507-8",
            json!({"valueQuantity": quantity(round(metrics.mean_mg_dl, 0), "mg/dL")}),
        ),
        observation(
            "mean-mmol",
            "cgm-summary-mean-glucose-moles-per-volume",
            "105273-7",
            json!({"valueQuantity": quantity(round(metrics.mean_mg_dl / MG_DL_PER_MMOL_L, 1), "mmol/L")}),
        ),
        observation(
            "times-in-ranges",
            "cgm-summary-times-in-ranges",
            "106793-3",
            json!({"component": range_codes.iter().zip(metrics.ranges).map(|(code, percent)| json!({
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": quantity(round(percent, 1), "%"),
            })).collect::<Vec<_>>()}),
        ),
        observation(
            "gmi",
            "cgm-summary-gmi",
            "97506-0",
            json!({"valueQuantity": quantity(round(metrics.gmi, 1), "%")}),
        ),
        observation(
            "cv",
            "cgm-summary-coefficient-of-variation",
            "104638-2",
            json!({"valueQuantity": quantity(round(metrics.cv, 1), "%")}),
        ),
        observation(
            "days-of-wear",
            "cgm-summary-days-of-wear",
            "104636-6",
            json!({"valueQuantity": quantity(f64::from(metrics.days_of_wear), "d")}),
        ),
        observation(
            "sensor-active",
            "cgm-summary-sensor-active-percentage",
            "104637-4",
            json!({"valueQuantity": quantity(round(metrics.sensor_active, 1), "%")}),
        ),
    ];
    let has_member: Vec<Value> = members
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str))
        .map(|id| json!({"reference": format!("Observation/{id}")}))
        .collect();
    let summary = observation(
        "summary",
        "cgm-summary",
        "107931-8",
        json!({"hasMember": has_member}),
    );
    let entries: Vec<Value> = std::iter::once(summary)
        .chain(members)
        .chain(devices)
        .map(|resource| {
            let kind = resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("");
            let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
            json!({"fullUrl": format!("{base}/{kind}/{id}"), "resource": resource})
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "meta": {"profile": [SUMMARY_BUNDLE_PROFILE]},
        "type": "collection",
        "timestamp": instant(now),
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: OffsetDateTime, samples: &str, unit: &str) -> ObservationRowV1 {
        ObservationRowV1 {
            id: "c".into(),
            patient_uid: "p".into(),
            device_id: "d".into(),
            metric_id: None,
            kind: ObservationKind::Chunk,
            code: "99504-3".into(),
            effective_start: start,
            effective_end: start + time::Duration::hours(1),
            value: None,
            comparator: None,
            unit: unit.into(),
            period_ms: Some(300_000),
            samples: Some(samples.into()),
            status: "final".into(),
            version: 1,
            last_updated: start,
            epoch: 0,
        }
    }

    #[test]
    fn metrics_follow_the_consensus_definitions() {
        let start = time::macros::datetime!(2026-11-01 0:00 UTC);
        let chunks = vec![
            chunk(start, "50 60 100 100 200 300 L U E 100", "mg/dL"),
            chunk(start + time::Duration::days(1), "5.5", "mmol/L"),
        ];
        let m = metrics(&chunks, start, start + time::Duration::days(2)).expect("data");
        assert_eq!(m.readings, 10);
        // very low: 50, L; low: 60; in range: 100, 100, 100, 99.1; high: 200; very high: 300, U
        assert_eq!(m.ranges, [20.0, 10.0, 40.0, 10.0, 20.0]);
        assert_eq!(m.days_of_wear, 2);
        assert!((m.gmi - (3.31 + 0.02392 * m.mean_mg_dl)).abs() < 1e-9);
        assert!(
            metrics(
                &chunks,
                start + time::Duration::days(5),
                start + time::Duration::days(6)
            )
            .is_none()
        );
    }
}
