//! Device registration and reading upload: validation of what a patient's
//! app sends, and its conversion to the rows the store keeps (single
//! readings, CGM chunk samples).
//!
//! A batch is checked whole before anything is stored; the store then takes
//! it in one transaction, so a batch is accepted whole or not at all.

use std::collections::{BTreeMap, HashMap};

pub use medvault_proto::devices::{Limit, NewDevice, Reading, UploadBatch};
use medvault_store::{
    ChunkSamples, DeviceRowV1, DeviceSync, IngestBatch, ObservationKind, ObservationRowV1,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalogue::{self, DeviceModel, GlucoseUnit, ModelKind};

/// The most readings in one batch (14 days of 1-minute CGM data fit).
pub const MAX_READINGS: usize = 25_000;
/// How far in the future a reading may lie (device clock skew).
pub const FUTURE_SKEW_SECS: i64 = 60;
/// The earliest reading accepted.
pub const EARLIEST_READING: OffsetDateTime = time::macros::datetime!(2000-01-01 0:00 UTC);

/// Why an upload or registration was refused (the reading's index, never
/// its value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", index.map(|i| format!("reading {i}: ")).unwrap_or_default())]
pub struct IngestError {
    /// The reading at fault, if one is.
    pub index: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl IngestError {
    fn batch(reason: &str) -> Self {
        Self {
            index: None,
            reason: reason.to_owned(),
        }
    }

    fn reading(index: usize, reason: &str) -> Self {
        Self {
            index: Some(index),
            reason: reason.to_owned(),
        }
    }
}

/// A random resource id: 32 hex digits, within FHIR's id grammar.
pub fn new_resource_id() -> Result<String, IngestError> {
    let mut bytes = [0_u8; 16];
    medvault_crypto::random_fill(&mut bytes)
        .map_err(|_| IngestError::batch("the random generator failed"))?;
    Ok(hex::encode(bytes))
}

/// Checks a registration and makes the device row.
pub fn new_device(
    patient_uid: &str,
    request: &NewDevice,
    now: OffsetDateTime,
) -> Result<DeviceRowV1, IngestError> {
    let model = catalogue::model(&request.model)
        .ok_or_else(|| IngestError::batch("model is not in the device catalogue"))?;
    let serial = request.serial_number.trim();
    if serial.is_empty()
        || serial.len() > 40
        || !serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(IngestError::batch(
            "serial_number must be 1 to 40 letters, digits, '-' or '.'",
        ));
    }
    // The serial number is the one typed value a DiGA receives
    // (Device.serialNumber is Must Support): it must not be able to carry a
    // name or the patient's insurance number.
    if !serial.bytes().any(|b| b.is_ascii_digit()) {
        return Err(IngestError::batch(
            "serial_number must contain a digit (it is the number printed on the device)",
        ));
    }
    if is_kvnr(serial) {
        return Err(IngestError::batch(
            "serial_number looks like a health insurance number (KVNR) and is not stored",
        ));
    }
    let unit = GlucoseUnit::parse(&request.unit)
        .ok_or_else(|| IngestError::batch("unit must be mg/dL or mmol/L"))?;
    Ok(DeviceRowV1 {
        id: new_resource_id()?,
        patient_uid: patient_uid.to_owned(),
        model: model.id.to_owned(),
        serial_number: serial.to_owned(),
        unit: unit.ucum().to_owned(),
        status: "active".to_owned(),
        version: 1,
        created_at: now,
        updated_at: now,
        last_sync_at: None,
        metric_id: if model.needs_calibration {
            Some(new_resource_id()?)
        } else {
            None
        },
        metric_version: 1,
        calibration_state: if model.needs_calibration {
            "not-calibrated".to_owned()
        } else {
            "unspecified".to_owned()
        },
        calibration_time: None,
        calibration_epoch: 0,
    })
}

/// Whether `text` is a KVNR (the unchangeable part of the German health
/// insurance number): a letter and nine digits whose last is the check digit
/// (the letter as 01..26, weights 1, 2, 1, 2, ..., digit sums of the
/// products, sum modulo 10).
pub fn is_kvnr(text: &str) -> bool {
    let bytes = text.as_bytes();
    let [letter, digits @ ..] = bytes else {
        return false;
    };
    if digits.len() != 9 || !letter.is_ascii_alphabetic() || !digits.iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let position = letter.to_ascii_uppercase() - b'A' + 1;
    let mut values = vec![position / 10, position % 10];
    values.extend(digits.iter().take(8).map(|d| d - b'0'));
    let sum: u32 = values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let product = u32::from(*value) * if index % 2 == 0 { 1 } else { 2 };
            product / 10 + product % 10
        })
        .sum();
    digits.last().map(|d| u32::from(d - b'0')) == Some(sum % 10)
}

/// How readings become Observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPolicy {
    /// The fixed span of a CGM chunk, in seconds (divides a day).
    pub span_secs: i64,
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        Self { span_secs: 3600 }
    }
}

/// The sample token of a reading (`L`/`U` for the limits).
fn token(value: f64, unit: GlucoseUnit, limit: Option<Limit>) -> String {
    match limit {
        Some(Limit::Low) => "L".to_owned(),
        Some(Limit::High) => "U".to_owned(),
        None => format_value(value, unit),
    }
}

/// A value at its unit's precision.
pub fn format_value(value: f64, unit: GlucoseUnit) -> String {
    format!("{value:.prec$}", prec = unit.decimals())
}

fn round(value: f64, unit: GlucoseUnit) -> f64 {
    let scale = 10_f64.powi(i32::try_from(unit.decimals()).unwrap_or(0));
    (value * scale).round() / scale
}

/// Checks `upload` against the patient's `devices` and makes the batch.
pub fn prepare_batch(
    patient_uid: &str,
    devices: &[DeviceRowV1],
    upload: &UploadBatch,
    policy: ChunkPolicy,
    now: OffsetDateTime,
) -> Result<IngestBatch, IngestError> {
    let id = &upload.batch_id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(IngestError::batch(
            "batch_id must be 1 to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    if upload.readings.is_empty() || upload.readings.len() > MAX_READINGS {
        return Err(IngestError::batch(&format!(
            "a batch holds 1 to {MAX_READINGS} readings"
        )));
    }
    let by_id: HashMap<&str, (&DeviceRowV1, &'static DeviceModel)> = devices
        .iter()
        .filter_map(|device| {
            catalogue::model(&device.model).map(|m| (device.id.as_str(), (device, m)))
        })
        .collect();
    let mut singles = Vec::new();
    let mut single_keys = std::collections::HashSet::new();
    // (device, chunk start) -> samples by slot
    let mut chunks: BTreeMap<(String, i64), BTreeMap<usize, String>> = BTreeMap::new();
    let mut latest: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    for (index, reading) in upload.readings.iter().enumerate() {
        let fail = |reason: &str| IngestError::reading(index, reason);
        let (device, model) = by_id
            .get(reading.device.as_str())
            .copied()
            .ok_or_else(|| fail("device is not one of this patient's devices"))?;
        if device.status != "active" {
            return Err(fail("device is no longer active"));
        }
        let at = OffsetDateTime::parse(&reading.time, &Rfc3339)
            .map_err(|_| fail("time must be an RFC 3339 date-time with a time zone"))?;
        if at > now + time::Duration::seconds(FUTURE_SKEW_SECS) {
            return Err(fail("time lies in the future"));
        }
        if at < EARLIEST_READING {
            return Err(fail("time lies before 2000"));
        }
        let unit = GlucoseUnit::parse(&reading.unit)
            .ok_or_else(|| fail("unit must be mg/dL or mmol/L"))?;
        let low = round(unit.from_mg_dl(model.low_mg_dl), unit);
        let high = round(unit.from_mg_dl(model.high_mg_dl), unit);
        let value = match (reading.limit, reading.value) {
            (Some(Limit::Low), _) => low,
            (Some(Limit::High), _) => high,
            (None, Some(value)) if value.is_finite() => {
                let value = round(value, unit);
                if value < low || value > high {
                    return Err(fail(
                        "value is outside the device's measuring range: send limit low or high",
                    ));
                }
                value
            }
            (None, _) => return Err(fail("value is missing (or set limit)")),
        };
        let entry = latest.entry(device.id.clone()).or_insert(at);
        *entry = (*entry).max(at);
        let code = catalogue::reading_code(model.kind, unit);
        let metric_id = if model.needs_calibration {
            device.metric_id.clone()
        } else {
            None
        };
        match model.kind {
            ModelKind::Glucometer => {
                if !single_keys.insert((device.id.as_str(), at)) {
                    return Err(fail(
                        "a reading of this device at this time is in the batch twice",
                    ));
                }
                singles.push(ObservationRowV1 {
                    id: new_resource_id().map_err(|e| fail(&e.reason))?,
                    patient_uid: patient_uid.to_owned(),
                    device_id: device.id.clone(),
                    metric_id,
                    kind: ObservationKind::Single,
                    code: code.code.to_owned(),
                    effective_start: at,
                    effective_end: at,
                    value: Some(value),
                    comparator: reading.limit.map(|limit| match limit {
                        Limit::Low => "<".to_owned(),
                        Limit::High => ">".to_owned(),
                    }),
                    unit: unit.ucum().to_owned(),
                    period_ms: None,
                    samples: None,
                    status: "final".to_owned(),
                    version: 1,
                    last_updated: now,
                    epoch: 0,
                });
            }
            ModelKind::Cgm => {
                if unit.ucum() != device.unit {
                    return Err(fail(
                        "a CGM's readings must be in the unit it was registered with",
                    ));
                }
                let seconds = at.unix_timestamp();
                let start = seconds - seconds.rem_euclid(policy.span_secs);
                let slot = usize::try_from((seconds - start) / i64::from(model.period_secs))
                    .map_err(|_| fail("time is out of range"))?;
                let samples = chunks.entry((device.id.clone(), start)).or_default();
                if samples
                    .insert(slot, token(value, unit, reading.limit))
                    .is_some()
                {
                    return Err(fail(
                        "two readings of this CGM fall into one sampling period",
                    ));
                }
            }
        }
    }
    let mut chunk_rows = Vec::new();
    for ((device_id, start), samples) in chunks {
        let Some((device, model)) = by_id.get(device_id.as_str()).copied() else {
            continue;
        };
        let unit = GlucoseUnit::parse(&device.unit).unwrap_or(GlucoseUnit::MgPerDl);
        let effective_start = OffsetDateTime::from_unix_timestamp(start)
            .map_err(|_| IngestError::batch("time is out of range"))?;
        chunk_rows.push(ChunkSamples {
            chunk: ObservationRowV1 {
                id: new_resource_id()?,
                patient_uid: patient_uid.to_owned(),
                device_id: device.id.clone(),
                metric_id: if model.needs_calibration {
                    device.metric_id.clone()
                } else {
                    None
                },
                kind: ObservationKind::Chunk,
                code: catalogue::reading_code(ModelKind::Cgm, unit)
                    .code
                    .to_owned(),
                effective_start,
                effective_end: effective_start + time::Duration::seconds(policy.span_secs),
                value: None,
                comparator: None,
                unit: unit.ucum().to_owned(),
                period_ms: Some(i64::from(model.period_secs) * 1000),
                samples: None,
                status: "preliminary".to_owned(),
                version: 1,
                last_updated: now,
                epoch: device.calibration_epoch,
            },
            samples: samples.into_iter().collect(),
        });
    }
    let canonical = serde_json::to_vec(upload)
        .map_err(|_| IngestError::batch("the batch could not be serialized"))?;
    Ok(IngestBatch {
        patient_uid: patient_uid.to_owned(),
        batch_id: upload.batch_id.clone(),
        digest: medvault_crypto::sha256(&canonical).to_vec(),
        received_at: now,
        reading_count: i64::try_from(upload.readings.len()).unwrap_or(i64::MAX),
        singles,
        chunks: chunk_rows,
        syncs: latest
            .into_iter()
            .map(|(device_id, latest_reading)| DeviceSync {
                device_id,
                latest_reading,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-12-01 12:00 UTC)
    }

    fn device(model: &str, unit: &str) -> DeviceRowV1 {
        new_device(
            "patient",
            &NewDevice {
                model: model.into(),
                serial_number: "SN-1".into(),
                unit: unit.into(),
            },
            now(),
        )
        .expect("device")
    }

    fn reading(
        device: &DeviceRowV1,
        time: &str,
        value: Option<f64>,
        limit: Option<Limit>,
    ) -> Reading {
        Reading {
            device: device.id.clone(),
            time: time.into(),
            value,
            unit: device.unit.clone(),
            limit,
        }
    }

    #[test]
    fn serial_numbers_cannot_carry_a_name_or_an_insurance_number() {
        let register = |serial: &str| {
            new_device(
                "patient",
                &NewDevice {
                    model: "glukko-meter-5".into(),
                    serial_number: serial.into(),
                    unit: "mg/dL".into(),
                },
                now(),
            )
        };
        assert!(register("GM5-2024-00017").is_ok());
        // A valid KVNR (A = 01; check digit 0), in either case, is refused.
        assert!(is_kvnr("A123456780"));
        assert!(is_kvnr("a123456780"));
        for refused in [
            "A123456780",
            "a123456780",
            "ErikaMustermann",
            "",
            "SN 1",
            &"7".repeat(41),
        ] {
            assert!(register(refused).is_err(), "{refused:?}");
        }
        // Same shape, wrong check digit: a serial number, not a KVNR.
        assert!(!is_kvnr("A123456781"));
        assert!(register("A123456781").is_ok());
        assert!(!is_kvnr("AB12345678"));
        assert!(!is_kvnr("A12345678"));
    }

    #[test]
    fn cgm_readings_fill_slots_of_hour_chunks() {
        let cgm = device("glukko-cgm-18", "mg/dL");
        let upload = UploadBatch {
            batch_id: "b-1".into(),
            readings: vec![
                reading(&cgm, "2026-12-01T08:00:10Z", Some(101.0), None),
                reading(&cgm, "2026-12-01T08:05:10Z", None, Some(Limit::Low)),
                reading(&cgm, "2026-12-01T09:00:00Z", Some(120.4), None),
            ],
        };
        let batch = prepare_batch(
            "patient",
            std::slice::from_ref(&cgm),
            &upload,
            ChunkPolicy::default(),
            now(),
        )
        .expect("valid");
        assert_eq!(batch.chunks.len(), 2);
        let first = batch.chunks.first().expect("chunk");
        assert_eq!(
            first.samples,
            vec![(0, "101".to_owned()), (1, "L".to_owned())]
        );
        assert_eq!(first.chunk.code, "99504-3");
        assert_eq!(first.chunk.metric_id, cgm.metric_id);
        assert_eq!(batch.syncs.len(), 1);
        assert_eq!(batch.reading_count, 3);
    }

    #[test]
    fn refusals_name_the_reading_not_its_value() {
        let meter = device("glukko-meter-5", "mmol/L");
        let cases = [
            (
                reading(&meter, "2026-12-01T08:00:00Z", Some(40.0), None),
                "measuring range",
            ),
            (
                reading(&meter, "2026-12-02T08:00:00Z", Some(5.0), None),
                "future",
            ),
            (reading(&meter, "yesterday", Some(5.0), None), "RFC 3339"),
            (
                reading(&meter, "2026-12-01T08:00:00Z", None, None),
                "missing",
            ),
        ];
        for (bad, expected) in cases {
            let upload = UploadBatch {
                batch_id: "b".into(),
                readings: vec![
                    reading(&meter, "2026-12-01T07:00:00Z", Some(5.5), None),
                    bad,
                ],
            };
            let error = prepare_batch(
                "patient",
                std::slice::from_ref(&meter),
                &upload,
                ChunkPolicy::default(),
                now(),
            )
            .expect_err("refused");
            assert_eq!(error.index, Some(1));
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn meter_readings_get_codes_by_unit_and_limits_as_comparators() {
        let meter = device("glukko-meter-5", "mg/dL");
        let mut high = reading(&meter, "2026-12-01T08:00:00Z", None, Some(Limit::High));
        high.unit = "mmol/L".into();
        let upload = UploadBatch {
            batch_id: "b".into(),
            readings: vec![
                reading(&meter, "2026-12-01T07:00:00Z", Some(99.6), None),
                high,
            ],
        };
        let batch = prepare_batch("patient", &[meter], &upload, ChunkPolicy::default(), now())
            .expect("valid");
        let codes: Vec<_> = batch
            .singles
            .iter()
            .map(|s| (s.code.as_str(), s.value, s.comparator.as_deref()))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("41653-7", Some(100.0), None),
                ("14743-9", Some(33.3), Some(">"))
            ]
        );
    }

    #[test]
    fn other_patients_devices_and_bad_batch_ids_are_refused() {
        let cgm = device("glukko-cgm-18", "mg/dL");
        let upload = UploadBatch {
            batch_id: "b".into(),
            readings: vec![reading(&cgm, "2026-12-01T07:00:00Z", Some(100.0), None)],
        };
        assert!(prepare_batch("patient", &[], &upload, ChunkPolicy::default(), now()).is_err());
        let bad_id = UploadBatch {
            batch_id: "../x".into(),
            ..upload
        };
        assert!(prepare_batch("patient", &[cgm], &bad_id, ChunkPolicy::default(), now()).is_err());
    }
}
