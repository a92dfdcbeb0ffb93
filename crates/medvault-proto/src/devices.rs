//! Personal health devices and their readings, the patient's side: the
//! catalogue, registration, calibration and batch upload
//! (`/api/v1/device-models`, `/api/v1/devices`, `/api/v1/readings/batches`).

use serde::{Deserialize, Serialize};

/// One model of the device catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceModelInfo {
    /// The id to register with.
    pub id: String,
    /// `glucometer` or `cgm`.
    pub kind: String,
    /// The manufacturer.
    pub manufacturer: String,
    /// The product name.
    pub name: String,
    /// A CGM's sampling period in seconds (0 for a glucometer).
    pub period_secs: u32,
    /// Whether readings carry the device's calibration state.
    pub needs_calibration: bool,
    /// The measuring range, mg/dL.
    pub range_mg_dl: [f64; 2],
}

/// A device registration (`POST /api/v1/devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// The catalogue model id.
    pub model: String,
    /// The serial number printed on the device.
    pub serial_number: String,
    /// The patient's preferred unit (`mg/dL` or `mmol/L`).
    pub unit: String,
}

/// A registered device as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceView {
    /// The Device id.
    pub id: String,
    /// The catalogue model id.
    pub model: String,
    /// The product name.
    pub name: String,
    /// `glucometer` or `cgm`.
    pub kind: String,
    /// The serial number.
    pub serial_number: String,
    /// The preferred unit.
    pub unit: String,
    /// `active` or `inactive`.
    pub status: String,
    /// The DeviceMetric id, for models that need calibration.
    pub metric_id: Option<String>,
    /// The calibration state.
    pub calibration_state: String,
    /// When it was last calibrated (RFC 3339).
    pub calibration_time: Option<String>,
    /// When its data last arrived (RFC 3339).
    pub last_sync_at: Option<String>,
}

/// A calibration or retirement (`POST /api/v1/devices/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceUpdate {
    /// A new calibration state (`calibrated`, `calibration-required`,
    /// `not-calibrated`, `unspecified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_state: Option<String>,
    /// When the calibration happened (RFC 3339; default now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_time: Option<String>,
    /// Takes the device out of use (a replaced sensor).
    #[serde(default)]
    pub retire: bool,
}

/// A reading outside the device's measuring range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    /// Below the range (`LO`).
    Low,
    /// Above the range (`HI`).
    High,
}

/// One reading as uploaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// The Device id.
    pub device: String,
    /// When it was measured (RFC 3339 with a zone).
    pub time: String,
    /// The value (absent when `limit` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// `mg/dL` or `mmol/L`.
    pub unit: String,
    /// Set when the device showed LO or HI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
}

/// A batch of readings (`POST /api/v1/readings/batches`), stored whole or
/// not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadBatch {
    /// The client's idempotency key (1 to 64 of `A-Z a-z 0-9 . _ -`): the
    /// same batch sent again is acknowledged without being stored twice.
    pub batch_id: String,
    /// The readings.
    pub readings: Vec<Reading>,
}

/// The acknowledgement of a stored batch (durable once sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadReceipt {
    /// The batch id.
    pub batch_id: String,
    /// Readings in the batch.
    pub readings: i64,
    /// Whether the batch had been stored before (a retry).
    pub replayed: bool,
}
