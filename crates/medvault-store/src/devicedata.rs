//! Patients' personal health devices and their readings, as the HDDT
//! resource server serves them: one row per device (with its DeviceMetric),
//! one row per FHIR Observation (a single blood-glucose reading, or a CGM
//! chunk whose samples fill a slot string as readings arrive), and one row
//! per accepted upload batch (idempotency).
//!
//! Searches arrive already authorized (patient, codes, historic limit) and
//! are turned into SQL here once, with numbered placeholders each backend
//! spells its own way, so both backends run the same filter logic.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// A registered device (FHIR Device) and its calibration state (FHIR
/// DeviceMetric, when the model needs calibration).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRowV1 {
    /// The Device id (random, never derived from the patient).
    pub id: String,
    /// The owner.
    pub patient_uid: String,
    /// The catalogue model id (names, type and manufacturer come from it).
    pub model: String,
    /// The serial number printed on the device.
    pub serial_number: String,
    /// The patient's preferred unit (`mg/dL` or `mmol/L`).
    pub unit: String,
    /// `active` or `inactive` (replaced).
    pub status: String,
    /// The Device's version (vread).
    pub version: i64,
    /// When the device was registered.
    pub created_at: OffsetDateTime,
    /// When the Device or its DeviceMetric last changed.
    pub updated_at: OffsetDateTime,
    /// When the device's data last arrived.
    pub last_sync_at: Option<OffsetDateTime>,
    /// The DeviceMetric id, for models that need calibration.
    pub metric_id: Option<String>,
    /// The DeviceMetric's version (vread).
    pub metric_version: i64,
    /// `calibrated`, `calibration-required`, `not-calibrated` or `unspecified`.
    pub calibration_state: String,
    /// When the device was last calibrated.
    pub calibration_time: Option<OffsetDateTime>,
    /// Counts calibration changes: CGM chunks of one span but another epoch
    /// are separate Observations (a calibration change closes a chunk).
    pub calibration_epoch: i64,
}

/// What an Observation row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservationKind {
    /// One blood-glucose reading (`valueQuantity`).
    Single,
    /// A CGM chunk (`valueSampledData`).
    Chunk,
}

impl ObservationKind {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Chunk => "chunk",
        }
    }

    /// The inverse of [`Self::as_str`].
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "single" => Ok(Self::Single),
            "chunk" => Ok(Self::Chunk),
            other => Err(StoreError::Corrupt(format!("observation kind {other:?}"))),
        }
    }
}

/// One FHIR Observation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationRowV1 {
    /// The Observation id (random).
    pub id: String,
    /// The owner.
    pub patient_uid: String,
    /// The device that measured it.
    pub device_id: String,
    /// The DeviceMetric the Observation references instead of the Device.
    pub metric_id: Option<String>,
    /// Single reading or CGM chunk.
    pub kind: ObservationKind,
    /// The LOINC code.
    pub code: String,
    /// `effectiveDateTime`, or the chunk's start.
    pub effective_start: OffsetDateTime,
    /// Equal to the start for a single reading; the chunk's end.
    pub effective_end: OffsetDateTime,
    /// The reading (single) or the measuring-range limit it hit.
    pub value: Option<f64>,
    /// `<` or `>` when the reading was below or above the device's range.
    pub comparator: Option<String>,
    /// The UCUM unit of the value or the samples.
    pub unit: String,
    /// The sampling period of a chunk, in milliseconds.
    pub period_ms: Option<i64>,
    /// A chunk's samples, space-separated (`E` for an empty slot, `L`/`U`
    /// below/above the range).
    pub samples: Option<String>,
    /// `final` or `preliminary`.
    pub status: String,
    /// `meta.versionId`.
    pub version: i64,
    /// `meta.lastUpdated`.
    pub last_updated: OffsetDateTime,
    /// The calibration epoch of a chunk (0 for single readings).
    pub epoch: i64,
}

/// The samples one batch adds to one CGM chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSamples {
    /// The row to create when the chunk does not exist yet (its id, key and
    /// metadata; `samples` is ignored and `version` starts at 1).
    pub chunk: ObservationRowV1,
    /// `(slot, token)` pairs: slot `i` covers `start + i * period`.
    pub samples: Vec<(usize, String)>,
}

/// How far each device's data reached in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSync {
    /// The device.
    pub device_id: String,
    /// The latest reading of this batch: open chunks ending at or before it
    /// are complete and become `final`.
    pub latest_reading: OffsetDateTime,
}

/// One upload batch, accepted whole or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestBatch {
    /// The uploader.
    pub patient_uid: String,
    /// The client-chosen batch id (idempotency key, per patient).
    pub batch_id: String,
    /// SHA-256 of the batch's canonical content: a replay with the same id
    /// but other content is a conflict.
    pub digest: Vec<u8>,
    /// When it arrived.
    pub received_at: OffsetDateTime,
    /// How many readings it holds.
    pub reading_count: i64,
    /// New single-reading Observations.
    pub singles: Vec<ObservationRowV1>,
    /// Samples for CGM chunks.
    pub chunks: Vec<ChunkSamples>,
    /// Per device, how far the batch reached.
    pub syncs: Vec<DeviceSync>,
}

/// What became of an upload batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored now.
    Stored {
        /// Readings in the batch.
        readings: i64,
    },
    /// The same batch was stored before (same id and content); nothing changed.
    Replayed {
        /// Readings in the batch.
        readings: i64,
        /// When it was first stored.
        stored_at: OffsetDateTime,
    },
    /// A batch with this id but other content exists; nothing was stored.
    BatchConflict,
    /// A reading disagrees with a stored one at the same device and time;
    /// nothing was stored.
    ReadingConflict {
        /// The device.
        device_id: String,
        /// The reading's time (or its chunk's start).
        at: OffsetDateTime,
    },
}

/// A search prefix as FHIR R4 defines it for ranges (search.html#prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    /// The search range contains the target.
    Eq,
    /// Not `Eq`.
    Ne,
    /// The target reaches above the search range.
    Gt,
    /// The target reaches below the search range.
    Lt,
    /// `Gt` or `Eq`.
    Ge,
    /// `Lt` or `Eq`.
    Le,
    /// The target starts after the search range.
    Sa,
    /// The target ends before the search range.
    Eb,
    /// The target overlaps the (already widened) search range.
    Ap,
}

/// A range condition on an instant or period column pair, inclusive bounds
/// in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeFilter {
    /// The prefix.
    pub op: RangeOp,
    /// The search range's first microsecond.
    pub low: i64,
    /// The search range's last microsecond.
    pub high: i64,
}

/// A condition on a single reading's value (with its implicit precision
/// range for `eq`/`ne`/`ap`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueFilter {
    /// The prefix.
    pub op: RangeOp,
    /// The searched number.
    pub value: f64,
    /// The lower end of its precision range.
    pub low: f64,
    /// The upper end of its precision range.
    pub high: f64,
    /// The UCUM unit the value must have, if the search named one.
    pub unit: Option<String>,
}

/// An authorized Observation search.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationQuery {
    /// The pairing's patient.
    pub patient_uid: String,
    /// The codes allowed and asked for (never empty: an empty intersection
    /// is answered without asking the store).
    pub codes: Vec<String>,
    /// `_id` values, if given.
    pub ids: Option<Vec<String>>,
    /// `date` conditions (all must hold).
    pub date: Vec<RangeFilter>,
    /// `_lastUpdated` conditions.
    pub last_updated: Vec<RangeFilter>,
    /// `value-quantity` conditions.
    pub value: Vec<ValueFilter>,
    /// The historic limit: Observations ending before it are not served.
    pub not_before: OffsetDateTime,
    /// Newest first (`_sort=-date`).
    pub descending: bool,
    /// Keyset paging: only rows after this `(effective start, id)` in the
    /// sort order.
    pub after: Option<(i64, String)>,
    /// The most rows to return.
    pub limit: u32,
}

/// An authorized Device or DeviceMetric search.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceQuery {
    /// The pairing's patient.
    pub patient_uid: String,
    /// Observation codes the reader may see: a device is visible only when
    /// such an Observation references it.
    pub visible_codes: Vec<String>,
    /// The historic limit of those Observations.
    pub not_before: OffsetDateTime,
    /// Device ids (`_id` of Device, `source` of DeviceMetric), if given.
    pub device_ids: Option<Vec<String>>,
    /// DeviceMetric ids (`_id` of DeviceMetric), if given.
    pub metric_ids: Option<Vec<String>>,
    /// Catalogue models (from `type`, `device-name`, `manufacturer`), if given.
    pub models: Option<Vec<String>>,
    /// Only devices with a DeviceMetric (a DeviceMetric search).
    pub metrics_only: bool,
    /// Keyset paging: ids after this one.
    pub after: Option<String>,
    /// The most rows to return.
    pub limit: u32,
}

/// A value bound into generated SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
}

/// The columns of an Observation row, in [`ObservationRowV1`] order.
pub const OBSERVATION_COLUMNS: &str = "id, patient_uid, device_id, metric_id, kind, code, effective_start_us, effective_end_us, value, comparator, unit, period_ms, samples, status, version, last_updated_us, epoch";

/// The columns of a device row, in [`DeviceRowV1`] order.
pub const DEVICE_COLUMNS: &str = "id, patient_uid, model, serial_number, unit, status, version, created_at_us, updated_at_us, last_sync_at_us, metric_id, metric_version, calibration_state, calibration_time_us, calibration_epoch";

/// Builds SQL text with numbered placeholders and the values to bind.
#[derive(Debug)]
pub struct SqlBuilder {
    text: String,
    values: Vec<SqlValue>,
    placeholder: fn(usize) -> String,
}

impl SqlBuilder {
    /// Starts with `text`; `placeholder(n)` spells the n-th (1-based) parameter.
    pub fn new(text: &str, placeholder: fn(usize) -> String) -> Self {
        Self {
            text: text.to_owned(),
            values: Vec::new(),
            placeholder,
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: SqlValue) -> &mut Self {
        self.values.push(value);
        let placeholder = (self.placeholder)(self.values.len());
        self.text.push_str(&placeholder);
        self
    }

    /// Appends `(p1, p2, ...)` bound to `values`.
    pub fn bind_list(&mut self, values: &[String]) -> &mut Self {
        self.push("(");
        for (index, value) in values.iter().enumerate() {
            if index > 0 {
                self.push(", ");
            }
            self.bind(SqlValue::Text(value.clone()));
        }
        self.push(")")
    }

    /// The SQL and its values.
    pub fn finish(self) -> (String, Vec<SqlValue>) {
        (self.text, self.values)
    }

    /// Appends ` AND <condition>` for `filter` on the target range
    /// `[start, end]` (columns).
    fn range(&mut self, start: &str, end: &str, filter: &RangeFilter) {
        let low = SqlValue::Int(filter.low);
        let high = SqlValue::Int(filter.high);
        let contained = |b: &mut Self| {
            b.push("(").push(start).push(" >= ").bind(low.clone());
            b.push(" AND ").push(end).push(" <= ").bind(high.clone());
            b.push(")");
        };
        self.push(" AND ");
        match filter.op {
            RangeOp::Eq => contained(self),
            RangeOp::Ne => {
                self.push("NOT ");
                contained(self);
            }
            RangeOp::Gt => {
                self.push(end).push(" > ").bind(high.clone());
            }
            RangeOp::Lt => {
                self.push(start).push(" < ").bind(low.clone());
            }
            RangeOp::Ge => {
                self.push("(").push(end).push(" > ").bind(high.clone());
                self.push(" OR ");
                contained(self);
                self.push(")");
            }
            RangeOp::Le => {
                self.push("(").push(start).push(" < ").bind(low.clone());
                self.push(" OR ");
                contained(self);
                self.push(")");
            }
            RangeOp::Sa => {
                self.push(start).push(" > ").bind(high.clone());
            }
            RangeOp::Eb => {
                self.push(end).push(" < ").bind(low.clone());
            }
            RangeOp::Ap => {
                self.push("(").push(start).push(" <= ").bind(high.clone());
                self.push(" AND ").push(end).push(" >= ").bind(low.clone());
                self.push(")");
            }
        }
    }

    fn value(&mut self, filter: &ValueFilter) {
        self.push(" AND value IS NOT NULL");
        if let Some(unit) = &filter.unit {
            self.push(" AND unit = ").bind(SqlValue::Text(unit.clone()));
        }
        let value = SqlValue::Real(filter.value);
        let low = SqlValue::Real(filter.low);
        let high = SqlValue::Real(filter.high);
        self.push(" AND ");
        match filter.op {
            RangeOp::Eq | RangeOp::Ap => {
                self.push("value >= ")
                    .bind(low)
                    .push(" AND value < ")
                    .bind(high);
            }
            RangeOp::Ne => {
                self.push("NOT (value >= ")
                    .bind(low)
                    .push(" AND value < ")
                    .bind(high);
                self.push(")");
            }
            RangeOp::Gt | RangeOp::Sa => {
                self.push("value > ").bind(value);
            }
            RangeOp::Lt | RangeOp::Eb => {
                self.push("value < ").bind(value);
            }
            RangeOp::Ge => {
                self.push("value >= ").bind(value);
            }
            RangeOp::Le => {
                self.push("value <= ").bind(value);
            }
        }
    }
}

/// The longest effective period of any Observation (a CGM chunk spans at
/// most a day; a single reading none), in microseconds. Searches derive
/// bounds on the indexed start column from it, so that a date condition on
/// the period's end still narrows an index range instead of a scan.
pub const MAX_EFFECTIVE_SPAN_US: i64 = 86_400_000_000;

/// Bounds `[low, high]` on the effective start that `filter` implies for
/// every row (`end - start <= MAX_EFFECTIVE_SPAN_US`).
fn start_bounds(filter: &RangeFilter) -> (Option<i64>, Option<i64>) {
    let span = MAX_EFFECTIVE_SPAN_US;
    match filter.op {
        RangeOp::Eq => (Some(filter.low), Some(filter.high)),
        RangeOp::Ne => (None, None),
        // end > high  =>  start > high - span
        RangeOp::Gt => (Some(filter.high.saturating_sub(span)), None),
        RangeOp::Lt | RangeOp::Eb => (None, Some(filter.low)),
        RangeOp::Ge | RangeOp::Ap => (Some(filter.low.saturating_sub(span)), None),
        RangeOp::Le => (None, Some(filter.high)),
        RangeOp::Sa => (Some(filter.high), None),
    }
}

/// The SQL of an authorized Observation search.
pub fn observation_search_sql(
    query: &ObservationQuery,
    placeholder: fn(usize) -> String,
) -> (String, Vec<SqlValue>) {
    let mut sql = SqlBuilder::new(
        &format!("SELECT {OBSERVATION_COLUMNS} FROM hddt_observations WHERE patient_uid = "),
        placeholder,
    );
    sql.bind(SqlValue::Text(query.patient_uid.clone()));
    sql.push(" AND code IN ").bind_list(&query.codes);
    sql.push(" AND effective_end_us >= ")
        .bind(SqlValue::Int(crate::to_unix_micros(query.not_before)));
    if let Some(ids) = &query.ids {
        sql.push(" AND id IN ").bind_list(ids);
    }
    // Index bounds implied by the historic limit and the date conditions.
    let mut low = crate::to_unix_micros(query.not_before).saturating_sub(MAX_EFFECTIVE_SPAN_US);
    let mut high = None::<i64>;
    for filter in &query.date {
        let (from, to) = start_bounds(filter);
        if let Some(from) = from {
            low = low.max(from);
        }
        if let Some(to) = to {
            high = Some(high.map_or(to, |h| h.min(to)));
        }
    }
    sql.push(" AND effective_start_us >= ")
        .bind(SqlValue::Int(low));
    if let Some(high) = high {
        sql.push(" AND effective_start_us <= ")
            .bind(SqlValue::Int(high));
    }
    for filter in &query.date {
        sql.range("effective_start_us", "effective_end_us", filter);
    }
    for filter in &query.last_updated {
        sql.range("last_updated_us", "last_updated_us", filter);
    }
    for filter in &query.value {
        sql.value(filter);
    }
    let (compare, order) = if query.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((start, id)) = &query.after {
        sql.push(" AND (effective_start_us ")
            .push(compare)
            .push(" ")
            .bind(SqlValue::Int(*start));
        sql.push(" OR (effective_start_us = ")
            .bind(SqlValue::Int(*start))
            .push(" AND id ")
            .push(compare)
            .push(" ")
            .bind(SqlValue::Text(id.clone()))
            .push("))");
    }
    sql.push(&format!(
        " ORDER BY effective_start_us {order}, id {order} LIMIT "
    ))
    .bind(SqlValue::Int(i64::from(query.limit)));
    sql.finish()
}

/// The SQL of an authorized Device (or DeviceMetric) search.
pub fn device_search_sql(
    query: &DeviceQuery,
    placeholder: fn(usize) -> String,
) -> (String, Vec<SqlValue>) {
    let mut sql = SqlBuilder::new(
        &format!("SELECT {DEVICE_COLUMNS} FROM hddt_devices d WHERE patient_uid = "),
        placeholder,
    );
    sql.bind(SqlValue::Text(query.patient_uid.clone()));
    if let Some(ids) = &query.device_ids {
        sql.push(" AND id IN ").bind_list(ids);
    }
    if let Some(ids) = &query.metric_ids {
        sql.push(" AND metric_id IN ").bind_list(ids);
    }
    if let Some(models) = &query.models {
        sql.push(" AND model IN ").bind_list(models);
    }
    if query.metrics_only {
        sql.push(" AND metric_id IS NOT NULL");
    }
    if let Some(after) = &query.after {
        sql.push(" AND id > ").bind(SqlValue::Text(after.clone()));
    }
    // Visible only through an Observation the reader may see: for a
    // DeviceMetric, one that references the metric; for a Device, one that
    // references it or its metric (every Observation row names its device).
    sql.push(" AND EXISTS (SELECT 1 FROM hddt_observations o WHERE o.device_id = d.id AND o.patient_uid = ")
        .bind(SqlValue::Text(query.patient_uid.clone()));
    if query.metrics_only {
        sql.push(" AND o.metric_id = d.metric_id");
    }
    sql.push(" AND o.code IN ").bind_list(&query.visible_codes);
    sql.push(" AND o.effective_end_us >= ")
        .bind(SqlValue::Int(crate::to_unix_micros(query.not_before)));
    sql.push(") ORDER BY id ASC LIMIT ")
        .bind(SqlValue::Int(i64::from(query.limit)));
    sql.finish()
}

/// The token of an empty CGM slot.
pub const EMPTY_SLOT: &str = "E";

/// Merges `samples` into a chunk's stored sample string.
///
/// `Ok(None)` when nothing changes (every sample already stored, a replay);
/// `Err(slot)` when a sample disagrees with a stored one. Trailing empty
/// slots are not written: an open chunk's data ends at its latest sample.
pub fn merge_samples(
    existing: Option<&str>,
    samples: &[(usize, String)],
    max_slots: usize,
) -> Result<Option<String>, usize> {
    let mut slots: Vec<String> = existing
        .map(|text| text.split(' ').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut changed = false;
    for (slot, token) in samples {
        if *slot >= max_slots {
            return Err(*slot);
        }
        if slots.len() <= *slot {
            slots.resize(*slot + 1, EMPTY_SLOT.to_owned());
        }
        let Some(stored) = slots.get_mut(*slot) else {
            return Err(*slot);
        };
        if stored == EMPTY_SLOT {
            stored.clone_from(token);
            changed = true;
        } else if stored != token {
            return Err(*slot);
        }
    }
    while slots.last().is_some_and(|token| token == EMPTY_SLOT) {
        slots.pop();
    }
    Ok(changed.then(|| slots.join(" ")))
}

/// How often a DiGA used one interaction of the FHIR API on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessCountV1 {
    /// The pairing (so the DiGA and the patient).
    pub pairing_id: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// What was used (`GET /fhir/Observation`, `GET /fhir/Device/{id}`, ...).
    pub interaction: String,
    /// How many times.
    pub count: i64,
    /// The last time.
    pub last_at: OffsetDateTime,
}

/// Device data storage.
#[async_trait]
pub trait DeviceDataStore: Send + Sync {
    /// Adds counts of FHIR interactions (summed with stored ones).
    async fn record_accesses(&self, counts: &[AccessCountV1]) -> Result<(), StoreError>;

    /// The counts of a patient's pairings from day `since` (`YYYY-MM-DD`) on,
    /// newest first, with each pairing's DiGA (`client_id`).
    async fn accesses_of_patient(
        &self,
        patient_uid: &str,
        since: &str,
        limit: u32,
    ) -> Result<Vec<(String, AccessCountV1)>, StoreError>;

    /// Deletes counts of days before `before` (`YYYY-MM-DD`).
    async fn purge_accesses(&self, before: &str) -> Result<u64, StoreError>;

    /// Stores a new device (and its first history version).
    async fn insert_device(&self, device: &DeviceRowV1) -> Result<(), StoreError>;

    /// The devices of `patient_uid`, oldest first.
    async fn devices_of_patient(&self, patient_uid: &str) -> Result<Vec<DeviceRowV1>, StoreError>;

    /// The device whose Device id (or, with `metric`, DeviceMetric id) is `id`.
    async fn device(&self, id: &str, metric: bool) -> Result<Option<DeviceRowV1>, StoreError>;

    /// Replaces a device's mutable fields (status, calibration) when its
    /// stored versions are still `expected` (Device, DeviceMetric) and
    /// records the new version in its history; a calibration change
    /// finalizes its open CGM chunks. `Ok(false)` when another change came first.
    async fn update_device(
        &self,
        device: &DeviceRowV1,
        expected: (i64, i64),
    ) -> Result<bool, StoreError>;

    /// A past version of a Device (`metric = false`) or DeviceMetric.
    async fn device_version(
        &self,
        id: &str,
        metric: bool,
        version: i64,
    ) -> Result<Option<DeviceRowV1>, StoreError>;

    /// Stores a batch in one transaction (see [`IngestOutcome`]).
    async fn ingest(&self, batch: &IngestBatch) -> Result<IngestOutcome, StoreError>;

    /// The Observation `id`.
    async fn observation(&self, id: &str) -> Result<Option<ObservationRowV1>, StoreError>;

    /// An authorized Observation search.
    async fn search_observations(
        &self,
        query: &ObservationQuery,
    ) -> Result<Vec<ObservationRowV1>, StoreError>;

    /// An authorized Device or DeviceMetric search.
    async fn search_devices(&self, query: &DeviceQuery) -> Result<Vec<DeviceRowV1>, StoreError>;

    /// Every Observation of a patient with an effective start in `[from, to)`,
    /// oldest first, up to `limit` (exports and summaries).
    async fn observations_of_patient(
        &self,
        patient_uid: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ObservationRowV1>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(list: &[(usize, &str)]) -> Vec<(usize, String)> {
        list.iter().map(|(s, t)| (*s, (*t).to_owned())).collect()
    }

    #[test]
    fn merge_fills_gaps_and_detects_conflicts() {
        assert_eq!(
            merge_samples(None, &samples(&[(0, "100"), (2, "L")]), 12),
            Ok(Some("100 E L".to_owned()))
        );
        assert_eq!(
            merge_samples(Some("100 E L"), &samples(&[(1, "101")]), 12),
            Ok(Some("100 101 L".to_owned()))
        );
        assert_eq!(
            merge_samples(Some("100 101 L"), &samples(&[(1, "101")]), 12),
            Ok(None)
        );
        assert_eq!(
            merge_samples(Some("100 101 L"), &samples(&[(1, "102")]), 12),
            Err(1)
        );
        assert_eq!(merge_samples(None, &samples(&[(12, "1")]), 12), Err(12));
    }

    /// What a filter means on one row (FHIR R4 search prefixes).
    fn matches(filter: &RangeFilter, start: i64, end: i64) -> bool {
        let contained = start >= filter.low && end <= filter.high;
        match filter.op {
            RangeOp::Eq => contained,
            RangeOp::Ne => !contained,
            RangeOp::Gt => end > filter.high,
            RangeOp::Lt => start < filter.low,
            RangeOp::Ge => end > filter.high || contained,
            RangeOp::Le => start < filter.low || contained,
            RangeOp::Sa => start > filter.high,
            RangeOp::Eb => end < filter.low,
            RangeOp::Ap => start <= filter.high && end >= filter.low,
        }
    }

    #[test]
    fn index_bounds_never_exclude_a_matching_row() {
        let ops = [
            RangeOp::Eq,
            RangeOp::Ne,
            RangeOp::Gt,
            RangeOp::Lt,
            RangeOp::Ge,
            RangeOp::Le,
            RangeOp::Sa,
            RangeOp::Eb,
            RangeOp::Ap,
        ];
        let hour = 3_600_000_000_i64;
        let points: Vec<i64> = (-60..60).map(|h| h * hour / 2).collect();
        let spans = [0, hour, MAX_EFFECTIVE_SPAN_US];
        for op in ops {
            for &low in points.iter().step_by(7) {
                for width in [0, hour - 1, 86_400_000_000 - 1] {
                    let filter = RangeFilter {
                        op,
                        low,
                        high: low + width,
                    };
                    let (from, to) = start_bounds(&filter);
                    for &start in &points {
                        for span in spans {
                            if matches(&filter, start, start + span) {
                                assert!(
                                    from.is_none_or(|f| start >= f),
                                    "{filter:?} {start} {span}"
                                );
                                assert!(to.is_none_or(|t| start <= t), "{filter:?} {start} {span}");
                            }
                        }
                    }
                }
            }
        }
    }

    fn numbered(n: usize) -> String {
        format!("?{n}")
    }

    #[test]
    fn search_sql_binds_every_value_once_in_order() {
        let query = ObservationQuery {
            patient_uid: "p".into(),
            codes: vec!["a".into(), "b".into()],
            ids: None,
            date: vec![RangeFilter {
                op: RangeOp::Ge,
                low: 10,
                high: 20,
            }],
            last_updated: vec![],
            value: vec![],
            not_before: OffsetDateTime::UNIX_EPOCH,
            descending: true,
            after: Some((5, "x".into())),
            limit: 50,
        };
        let (text, values) = observation_search_sql(&query, numbered);
        assert!(text.contains("code IN (?2, ?3)"), "{text}");
        assert!(
            text.contains(
                "(effective_end_us > ?6 OR (effective_start_us >= ?7 AND effective_end_us <= ?8))"
            ),
            "{text}"
        );
        assert!(
            text.contains("ORDER BY effective_start_us DESC, id DESC LIMIT ?12"),
            "{text}"
        );
        assert_eq!(values.len(), 12);
        assert_eq!(values.last(), Some(&SqlValue::Int(50)));
    }
}
