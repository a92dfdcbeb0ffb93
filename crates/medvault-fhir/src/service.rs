//! The resource server's logic: every read and search applies the reader's
//! grant (the pairing's patient, the codes of the granted MIVs, the historic
//! period, Device and DeviceMetric only through an Observation the reader
//! may see), and the patient's side: device registration, calibration and
//! batch upload.
//!
//! Anything outside the grant is "not known" (404), never "forbidden": a
//! DiGA cannot tell another patient's resource from a missing one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use medvault_core::Clock;
use medvault_core::hddt::{Miv, value_set_url};
use medvault_store::{
    DeviceQuery, DeviceRowV1, IngestOutcome, ObservationKind, ObservationQuery, ObservationRowV1,
    Store, StoreError,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::catalogue::{self, DeviceModel, GlucoseUnit};
use crate::ingest::{self, ChunkPolicy, IngestError, NewDevice, UploadBatch};
use crate::resources::{self, EntryMode, Severity};
use crate::search::{self, Cursor, SearchError, Token};
use crate::status::Maintenance;
use crate::valuesets;

/// The resource server's settings.
#[derive(Debug, Clone)]
pub struct FhirPolicy {
    /// The FHIR base URL (no trailing slash): `fullUrl`s and paging links.
    pub base_url: String,
    /// The MIV ValueSet base.
    pub value_set_base: String,
    /// How far back data is served (at least 30 days for BG and CGM).
    pub historic: time::Duration,
    /// Delay-From-Real-Time: a Device without data for longer is `unknown`.
    pub sync_delay: time::Duration,
    /// How CGM readings are chunked.
    pub chunk: ChunkPolicy,
}

/// Who reads: the pairing's patient and what the grant allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// The patient the Pairing ID maps to.
    pub patient_uid: String,
    /// The MIVs whose Observations may be read.
    pub mivs: Vec<Miv>,
    /// `patient/Device.rs` granted.
    pub devices: bool,
    /// `patient/DeviceMetric.rs` granted.
    pub metrics: bool,
}

impl Reader {
    fn codes(&self) -> Vec<String> {
        self.mivs
            .iter()
            .flat_map(|miv| valuesets::codes(*miv))
            .map(|code| (*code).to_owned())
            .collect()
    }
}

/// Why a FHIR request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// 404: `Resource %s is not known` (absent or outside the grant).
    #[error("Resource {0} is not known")]
    NotKnown(String),
    /// 404: `Version %s is not valid for resource %s.`
    #[error("Version {0} is not valid for resource {1}.")]
    VersionNotValid(String, String),
    /// 400: a search or parameter refused.
    #[error("{0}")]
    Invalid(String),
    /// 400: a `$hddt-cgm-summary` parameter refused (`MSG_*` code, text).
    #[error("{1}")]
    Operation(&'static str, String),
    /// No data for an operation (`MSG_NO_MATCH`).
    #[error("{0}")]
    NoMatch(String),
    /// 503 (database unavailable) / 500.
    #[error("the service is temporarily unavailable")]
    Unavailable,
}

impl From<SearchError> for FhirError {
    fn from(error: SearchError) -> Self {
        Self::Invalid(error.0)
    }
}

impl From<StoreError> for FhirError {
    fn from(error: StoreError) -> Self {
        // The store's messages name tables and constraints, never data.
        tracing::error!(%error, "resource server: the store failed");
        Self::Unavailable
    }
}

/// Why a registration or upload failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestFailure {
    /// 422: the input is wrong.
    #[error("{0}")]
    Invalid(IngestError),
    /// 404: no such device of this patient.
    #[error("no such device")]
    UnknownDevice,
    /// 409: the same model and serial number is registered already.
    #[error("this device is registered already")]
    Duplicate,
    /// 409: a batch with this id but other content was stored.
    #[error("a different batch with this batch_id was stored before")]
    BatchConflict,
    /// 409: a reading disagrees with a stored one.
    #[error("a reading disagrees with a stored reading of the same device and time")]
    ReadingConflict,
    /// 503.
    #[error("the service is temporarily unavailable")]
    Unavailable,
}

/// The outcome of an accepted upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Readings in the batch.
    pub readings: i64,
    /// Whether this was a replay of a stored batch.
    pub replayed: bool,
}

/// The resource server (and the patient's ingestion API behind it).
#[derive(Debug, Clone)]
pub struct ResourceServer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: Arc<FhirPolicy>,
    models: Arc<std::sync::Mutex<HashMap<String, &'static DeviceModel>>>,
    maintenance: Arc<std::sync::Mutex<Option<CachedMaintenance>>>,
}

/// The maintenance window last read, and when.
type CachedMaintenance = (Option<Maintenance>, OffsetDateTime);

/// Devices whose model is cached (cleared when full).
const MODEL_CACHE_ENTRIES: usize = 100_000;

impl ResourceServer {
    /// A resource server over `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, policy: FhirPolicy) -> Self {
        Self {
            store,
            clock,
            policy: Arc::new(policy),
            models: Arc::default(),
            maintenance: Arc::default(),
        }
    }

    /// The settings.
    pub fn policy(&self) -> &FhirPolicy {
        &self.policy
    }

    /// The current maintenance window, if the FHIR API is in one (read from
    /// the database at most every [`crate::status::RECHECK`]).
    pub async fn maintenance(&self) -> Result<Option<Maintenance>, FhirError> {
        let now = self.clock.now();
        let cached = self
            .maintenance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some((window, read_at)) = cached
            && now >= read_at
            && now - read_at < crate::status::RECHECK
        {
            return Ok(window);
        }
        let window = self
            .store
            .hddt_state(crate::status::MAINTENANCE_STATE)
            .await?
            .and_then(|(value, _)| serde_json::from_str::<Maintenance>(&value).ok());
        *self
            .maintenance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((window.clone(), now));
        Ok(window)
    }

    /// Switches maintenance on (`Some`) or off, for every node (each sees
    /// it within [`crate::status::RECHECK`]; this one at once).
    pub async fn set_maintenance(&self, window: Option<&Maintenance>) -> Result<(), FhirError> {
        let text = window
            .map(serde_json::to_string)
            .transpose()
            .map_err(|_| FhirError::Unavailable)?;
        self.store
            .set_hddt_state(
                crate::status::MAINTENANCE_STATE,
                text.as_deref(),
                self.clock.now(),
            )
            .await?;
        *self
            .maintenance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
    }

    fn not_before(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - self.policy.historic
    }

    /// Registers a device of `patient_uid`.
    pub async fn register_device(
        &self,
        patient_uid: &str,
        request: &NewDevice,
    ) -> Result<DeviceRowV1, IngestFailure> {
        let device = ingest::new_device(patient_uid, request, self.clock.now())
            .map_err(IngestFailure::Invalid)?;
        match self.store.insert_device(&device).await {
            Ok(()) => Ok(device),
            Err(StoreError::Conflict(_)) => Err(IngestFailure::Duplicate),
            Err(_) => Err(IngestFailure::Unavailable),
        }
    }

    /// The devices of `patient_uid`.
    pub async fn devices(&self, patient_uid: &str) -> Result<Vec<DeviceRowV1>, IngestFailure> {
        self.store
            .devices_of_patient(patient_uid)
            .await
            .map_err(|_| IngestFailure::Unavailable)
    }

    /// Records a calibration (or a device taken out of use): a new
    /// DeviceMetric version, and the device's open CGM chunks close.
    pub async fn update_device(
        &self,
        patient_uid: &str,
        device_id: &str,
        calibration: Option<(&str, OffsetDateTime)>,
        retire: bool,
    ) -> Result<DeviceRowV1, IngestFailure> {
        const STATES: [&str; 4] = [
            "not-calibrated",
            "calibration-required",
            "calibrated",
            "unspecified",
        ];
        for _attempt in 0..3 {
            let current = self
                .store
                .device(device_id, false)
                .await
                .map_err(|_| IngestFailure::Unavailable)?
                .filter(|device| device.patient_uid == patient_uid)
                .ok_or(IngestFailure::UnknownDevice)?;
            let now = self.clock.now();
            let mut next = current.clone();
            next.updated_at = now;
            if let Some((state, at)) = calibration {
                if current.metric_id.is_none() {
                    return Err(IngestFailure::Invalid(IngestError {
                        index: None,
                        reason: "this model needs no calibration".to_owned(),
                    }));
                }
                if !STATES.contains(&state) || at > now + time::Duration::seconds(60) {
                    return Err(IngestFailure::Invalid(IngestError {
                        index: None,
                        reason: "state must be one of not-calibrated, calibration-required, calibrated, unspecified; time not in the future".to_owned(),
                    }));
                }
                next.calibration_state = state.to_owned();
                next.calibration_time = Some(at);
                next.calibration_epoch += 1;
                next.metric_version += 1;
            }
            if retire && current.status == "active" {
                next.status = "inactive".to_owned();
                next.version += 1;
                if next.metric_id.is_some() && calibration.is_none() {
                    next.metric_version += 1;
                }
            }
            if next.version == current.version && next.metric_version == current.metric_version {
                return Ok(current);
            }
            match self
                .store
                .update_device(&next, (current.version, current.metric_version))
                .await
            {
                Ok(true) => return Ok(next),
                Ok(false) => {}
                Err(_) => return Err(IngestFailure::Unavailable),
            }
        }
        Err(IngestFailure::Unavailable)
    }

    /// Stores an upload batch of `patient_uid` (whole or not at all).
    pub async fn upload(
        &self,
        patient_uid: &str,
        upload: &UploadBatch,
    ) -> Result<Accepted, IngestFailure> {
        let devices = self.devices(patient_uid).await?;
        // Another node may create a chunk between lookup and insert: the
        // store refuses with a conflict and the batch is merged again.
        for _attempt in 0..3 {
            let batch = ingest::prepare_batch(
                patient_uid,
                &devices,
                upload,
                self.policy.chunk,
                self.clock.now(),
            )
            .map_err(IngestFailure::Invalid)?;
            match self.store.ingest(&batch).await {
                Ok(IngestOutcome::Stored { readings }) => {
                    return Ok(Accepted {
                        readings,
                        replayed: false,
                    });
                }
                Ok(IngestOutcome::Replayed { readings, .. }) => {
                    return Ok(Accepted {
                        readings,
                        replayed: true,
                    });
                }
                Ok(IngestOutcome::BatchConflict) => return Err(IngestFailure::BatchConflict),
                Ok(IngestOutcome::ReadingConflict { .. }) => {
                    return Err(IngestFailure::ReadingConflict);
                }
                Err(StoreError::Conflict(_)) => {}
                Err(_) => return Err(IngestFailure::Unavailable),
            }
        }
        Err(IngestFailure::Unavailable)
    }

    fn visible(&self, reader: &Reader, row: &ObservationRowV1, now: OffsetDateTime) -> bool {
        row.patient_uid == reader.patient_uid
            && reader.codes().contains(&row.code)
            && row.effective_end >= self.not_before(now)
    }

    /// The catalogue model of a device (a device never changes model, so
    /// the answer is cached for the life of the process).
    async fn model_of(&self, device_id: &str) -> Result<Option<&'static DeviceModel>, FhirError> {
        let cached = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(device_id)
            .copied();
        if let Some(model) = cached {
            return Ok(Some(model));
        }
        let Some(model) = self
            .store
            .device(device_id, false)
            .await?
            .and_then(|device| catalogue::model(&device.model))
        else {
            return Ok(None);
        };
        let mut models = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if models.len() >= MODEL_CACHE_ENTRIES {
            models.clear();
        }
        models.insert(device_id.to_owned(), model);
        Ok(Some(model))
    }

    async fn render_observation(&self, row: &ObservationRowV1) -> Result<Value, FhirError> {
        let mut resource = resources::observation(row);
        if row.kind == ObservationKind::Chunk
            && let Some(model) = self.model_of(&row.device_id).await?
        {
            let unit = GlucoseUnit::parse(&row.unit).unwrap_or(GlucoseUnit::MgPerDl);
            resources::add_sampled_limits(&mut resource, model, unit);
        }
        Ok(resource)
    }

    /// `GET Observation/{id}`, or with `version` its vread (only the
    /// current version is kept: a chunk's earlier states are superseded).
    pub async fn read_observation(
        &self,
        reader: &Reader,
        id: &str,
        version: Option<&str>,
    ) -> Result<Value, FhirError> {
        let now = self.clock.now();
        let reference = format!("Observation/{}", search::quote(id));
        let row = self
            .store
            .observation(id)
            .await?
            .filter(|row| self.visible(reader, row, now))
            .ok_or_else(|| FhirError::NotKnown(reference.clone()))?;
        if let Some(version) = version
            && version != row.version.to_string()
        {
            return Err(FhirError::VersionNotValid(
                search::quote(version),
                reference,
            ));
        }
        self.render_observation(&row).await
    }

    async fn visible_device(
        &self,
        reader: &Reader,
        id: &str,
        metric: bool,
    ) -> Result<Option<DeviceRowV1>, FhirError> {
        let granted = if metric {
            reader.metrics
        } else {
            reader.devices
        };
        let codes = reader.codes();
        if !granted || codes.is_empty() {
            return Ok(None);
        }
        let query = DeviceQuery {
            patient_uid: reader.patient_uid.clone(),
            visible_codes: codes,
            not_before: self.not_before(self.clock.now()),
            device_ids: (!metric).then(|| vec![id.to_owned()]),
            metric_ids: metric.then(|| vec![id.to_owned()]),
            models: None,
            metrics_only: metric,
            after: None,
            limit: 1,
        };
        Ok(self.store.search_devices(&query).await?.into_iter().next())
    }

    fn render_device(&self, row: &DeviceRowV1, metric: bool) -> Option<Value> {
        let model = catalogue::model(&row.model)?;
        if metric {
            resources::device_metric(row, model)
        } else {
            Some(resources::device(
                row,
                model,
                self.clock.now(),
                self.policy.sync_delay,
            ))
        }
    }

    /// `GET Device/{id}` or `DeviceMetric/{id}`, or with `version` their vread.
    pub async fn read_device(
        &self,
        reader: &Reader,
        id: &str,
        metric: bool,
        version: Option<&str>,
    ) -> Result<Value, FhirError> {
        let kind = if metric { "DeviceMetric" } else { "Device" };
        let reference = format!("{kind}/{}", search::quote(id));
        let current = self
            .visible_device(reader, id, metric)
            .await?
            .ok_or_else(|| FhirError::NotKnown(reference.clone()))?;
        let row = match version {
            None => current,
            Some(version) => {
                let invalid =
                    || FhirError::VersionNotValid(search::quote(version), reference.clone());
                let number: i64 = version.parse().map_err(|_| invalid())?;
                self.store
                    .device_version(id, metric, number)
                    .await?
                    .ok_or_else(invalid)?
            }
        };
        self.render_device(&row, metric)
            .ok_or(FhirError::NotKnown(reference))
    }

    fn page_url(
        &self,
        kind: &str,
        parameters: &[(String, String)],
        cursor: Option<&Cursor>,
    ) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in parameters {
            if name != "_cursor" {
                query.append_pair(name, value);
            }
        }
        if let Some(cursor) = cursor {
            query.append_pair("_cursor", &cursor.encode());
        }
        let query = query.finish();
        if query.is_empty() {
            format!("{}/{kind}", self.policy.base_url)
        } else {
            format!("{}/{kind}?{query}", self.policy.base_url)
        }
    }

    /// Observation search (GET or POST `_search`).
    pub async fn search_observations(
        &self,
        reader: &Reader,
        parameters: &[(String, String)],
    ) -> Result<Value, FhirError> {
        let now = self.clock.now();
        let search = search::observation_search(parameters, &self.policy.value_set_base, now)?;
        let allowed = reader.codes();
        let mut codes: BTreeSet<String> = allowed.iter().cloned().collect();
        let mut outcomes = Vec::new();
        for group in &search.codes {
            codes.retain(|code| {
                group
                    .iter()
                    .any(|token| token.matches(resources::LOINC, code))
            });
            for token in group {
                if !allowed
                    .iter()
                    .any(|code| token.matches(resources::LOINC, code))
                {
                    let sets: Vec<String> = reader
                        .mivs
                        .iter()
                        .map(|miv| value_set_url(&self.policy.value_set_base, *miv))
                        .collect();
                    outcomes.push(resources::operation_outcome(
                        Severity::Warning,
                        "processing",
                        &format!(
                            "Code {} not in ValueSet {}",
                            search::quote(&token.code),
                            sets.join(", ")
                        ),
                    ));
                }
            }
        }
        let not_before = self.not_before(now);
        if search
            .earliest_date
            .is_some_and(|low| low < medvault_store::to_unix_micros(not_before))
        {
            outcomes.push(resources::operation_outcome(
                Severity::Warning,
                "processing",
                "Search includes a time range which is outside the historical time range of this service. Potentially no matches found.",
            ));
        }
        let mut rows = Vec::new();
        if !codes.is_empty() && search.count > 0 {
            let query = ObservationQuery {
                patient_uid: reader.patient_uid.clone(),
                codes: codes.into_iter().collect(),
                ids: search.ids.clone(),
                date: search.date.clone(),
                last_updated: search.last_updated.clone(),
                value: search.value.clone(),
                not_before,
                descending: search.descending,
                after: search.cursor.as_ref().map(|c| (c.start, c.id.clone())),
                limit: search.count + 1,
            };
            rows = self.store.search_observations(&query).await?;
        }
        let more = rows.len() > usize::try_from(search.count).unwrap_or(usize::MAX);
        rows.truncate(usize::try_from(search.count).unwrap_or(usize::MAX));
        let next = if more {
            rows.last().map(|row| Cursor {
                start: medvault_store::to_unix_micros(row.effective_start),
                id: row.id.clone(),
            })
        } else {
            None
        };
        let mut entries: Vec<(Value, EntryMode)> = Vec::with_capacity(rows.len());
        for row in &rows {
            entries.push((self.render_observation(row).await?, EntryMode::Match));
        }
        if search.include_device {
            let mut seen = BTreeSet::new();
            for row in &rows {
                let metric = row.metric_id.is_some();
                let granted = if metric {
                    reader.metrics
                } else {
                    reader.devices
                };
                let id = row.metric_id.as_ref().unwrap_or(&row.device_id);
                if !granted || !seen.insert(id.clone()) {
                    continue;
                }
                let Some(device) = self.store.device(id, metric).await? else {
                    continue;
                };
                if let Some(resource) = self.render_device(&device, metric) {
                    entries.push((resource, EntryMode::Include));
                }
                if metric
                    && search.include_source
                    && reader.devices
                    && seen.insert(device.id.clone())
                    && let Some(resource) = self.render_device(&device, false)
                {
                    entries.push((resource, EntryMode::Include));
                }
            }
        }
        entries.extend(outcomes.into_iter().map(|o| (o, EntryMode::Outcome)));
        Ok(resources::searchset(
            &self.policy.base_url,
            &self.page_url("Observation", parameters, None),
            next.as_ref()
                .map(|cursor| self.page_url("Observation", parameters, Some(cursor)))
                .as_deref(),
            entries,
        ))
    }

    /// Device (`metric = false`) or DeviceMetric search.
    pub async fn search_devices(
        &self,
        reader: &Reader,
        parameters: &[(String, String)],
        metric: bool,
    ) -> Result<Value, FhirError> {
        let kind = if metric { "DeviceMetric" } else { "Device" };
        let search = search::device_search(parameters, metric)?;
        let granted = if metric {
            reader.metrics
        } else {
            reader.devices
        };
        let codes = reader.codes();
        let models: Vec<String> = catalogue::CATALOGUE
            .iter()
            .filter(|model| {
                search.types.iter().all(|group| {
                    group.iter().any(|token: &Token| {
                        token.matches(resources::SNOMED, model.device_type.code)
                    })
                }) && search
                    .names
                    .iter()
                    .all(|(how, wanted)| how.matches(model.name, wanted))
                    && search
                        .manufacturers
                        .iter()
                        .all(|(how, wanted)| how.matches(model.manufacturer, wanted))
            })
            .map(|model| model.id.to_owned())
            .collect();
        let filtered = !search.types.is_empty()
            || !search.names.is_empty()
            || !search.manufacturers.is_empty();
        let mut rows = Vec::new();
        if granted && !codes.is_empty() && search.count > 0 && !(filtered && models.is_empty()) {
            let query = DeviceQuery {
                patient_uid: reader.patient_uid.clone(),
                visible_codes: codes,
                not_before: self.not_before(self.clock.now()),
                device_ids: if metric {
                    search.sources.clone()
                } else {
                    search.ids.clone()
                },
                metric_ids: if metric { search.ids.clone() } else { None },
                models: filtered.then_some(models),
                metrics_only: metric,
                after: search.cursor.as_ref().map(|c| c.id.clone()),
                limit: search.count + 1,
            };
            rows = self.store.search_devices(&query).await?;
        }
        let more = rows.len() > usize::try_from(search.count).unwrap_or(usize::MAX);
        rows.truncate(usize::try_from(search.count).unwrap_or(usize::MAX));
        let next = more
            .then(|| {
                rows.last().map(|row| Cursor {
                    start: 0,
                    id: row.id.clone(),
                })
            })
            .flatten();
        let mut entries = Vec::new();
        for row in &rows {
            if let Some(resource) = self.render_device(row, metric) {
                entries.push((resource, EntryMode::Match));
            }
            if metric
                && search.include_source
                && reader.devices
                && let Some(resource) = self.render_device(row, false)
            {
                entries.push((resource, EntryMode::Include));
            }
        }
        Ok(resources::searchset(
            &self.policy.base_url,
            &self.page_url(kind, parameters, None),
            next.as_ref()
                .map(|cursor| self.page_url(kind, parameters, Some(cursor)))
                .as_deref(),
            entries,
        ))
    }

    /// Every Observation of `patient_uid` (their export), oldest first.
    pub async fn export(&self, patient_uid: &str) -> Result<Value, FhirError> {
        let devices = self.store.devices_of_patient(patient_uid).await?;
        let mut entries: Vec<Value> = Vec::new();
        for device in &devices {
            if let Some(resource) = self.render_device(device, false) {
                entries.push(json!({"resource": resource}));
            }
            if let Some(resource) = self.render_device(device, true) {
                entries.push(json!({"resource": resource}));
            }
        }
        // Pages by effective start; the rows of the last start of a page are
        // read again with the next page and skipped by id, so rows sharing a
        // start across a page boundary are neither lost nor doubled.
        const PAGE: u32 = 5_000;
        let mut from = OffsetDateTime::UNIX_EPOCH;
        let mut seen_at_from: BTreeSet<String> = BTreeSet::new();
        let to = self.clock.now() + time::Duration::days(1);
        loop {
            let page = self
                .store
                .observations_of_patient(patient_uid, from, to, PAGE)
                .await?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                break;
            };
            let full = page.len() == usize::try_from(PAGE).unwrap_or(usize::MAX);
            let stuck = full && first.effective_start == last.effective_start;
            let last_start = last.effective_start;
            let mut at_last = BTreeSet::new();
            for row in &page {
                if row.effective_start == from && seen_at_from.contains(&row.id) {
                    continue;
                }
                if row.effective_start == last_start {
                    at_last.insert(row.id.clone());
                }
                entries.push(json!({"resource": self.render_observation(row).await?}));
            }
            if !full {
                break;
            }
            if stuck {
                // More than a page of rows at one instant: move past it.
                from = last_start + time::Duration::microseconds(1);
                seen_at_from.clear();
            } else {
                from = last_start;
                seen_at_from = at_last;
            }
        }
        Ok(json!({
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": resources::instant(self.clock.now()),
            "entry": entries,
        }))
    }
}

/// The Reader of a grant's scopes.
pub fn reader_of(patient_uid: &str, scopes: &medvault_core::hddt::ScopeSet) -> Reader {
    use medvault_core::hddt::SmartScope;
    let mut reader = Reader {
        patient_uid: patient_uid.to_owned(),
        mivs: Vec::new(),
        devices: false,
        metrics: false,
    };
    for scope in scopes.scopes() {
        match scope {
            SmartScope::Observation(miv) => reader.mivs.push(*miv),
            SmartScope::Device => reader.devices = true,
            SmartScope::DeviceMetric => reader.metrics = true,
        }
    }
    reader
}

/// The largest `Parameters` body of `$hddt-cgm-summary`.
pub const MAX_PARAMETERS_BYTES: usize = 8 * 1024;

fn summary_error(message: &'static str, text: &str) -> FhirError {
    FhirError::Operation(message, text.to_owned())
}

/// The period and `related` flag of a `$hddt-cgm-summary` Parameters body.
fn summary_request(
    body: &[u8],
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime, bool), FhirError> {
    let parameters: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({"resourceType": "Parameters"})
    } else {
        serde_json::from_slice(body).map_err(|_| {
            summary_error(
                "MSG_BAD_SYNTAX",
                "The body is not a FHIR Parameters resource in JSON",
            )
        })?
    };
    if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(summary_error(
            "MSG_BAD_SYNTAX",
            "The body is not a FHIR Parameters resource",
        ));
    }
    let (mut start, mut end, mut related) = (None, None, false);
    let list = match parameters.get("parameter") {
        None => Vec::new(),
        Some(Value::Array(list)) if list.len() <= 3 => list.clone(),
        Some(_) => {
            return Err(summary_error(
                "MSG_BAD_SYNTAX",
                "parameter must be a list of at most 3 entries",
            ));
        }
    };
    for parameter in &list {
        let name = parameter.get("name").and_then(Value::as_str).unwrap_or("");
        let date = |key: &str| -> Result<OffsetDateTime, FhirError> {
            let text = parameter.get(key).and_then(Value::as_str).ok_or_else(|| {
                summary_error(
                    "MSG_PARAM_INVALID",
                    &format!("{name} must be a valueDateTime"),
                )
            })?;
            search::date_range(text)
                .and_then(|(low, _)| medvault_store::from_unix_micros(low).ok())
                .ok_or_else(|| {
                    summary_error(
                        "MSG_PARAM_INVALID",
                        &format!(
                            "Invalid date/time format or date range: {}",
                            search::quote(text)
                        ),
                    )
                })
        };
        match name {
            "effectivePeriodStart" if start.is_none() => start = Some(date("valueDateTime")?),
            "effectivePeriodEnd" if end.is_none() => end = Some(date("valueDateTime")?),
            "related" => {
                related = parameter
                    .get("valueBoolean")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| {
                        summary_error("MSG_PARAM_INVALID", "related must be a valueBoolean")
                    })?;
            }
            other => {
                return Err(summary_error(
                    "MSG_PARAM_UNKNOWN",
                    &format!("Unknown or repeated parameter {}", search::quote(other)),
                ));
            }
        }
    }
    let end = end.unwrap_or(now).min(now);
    let start = start.unwrap_or(end - time::Duration::days(crate::summary::DEFAULT_DAYS));
    let length = end - start;
    if length < time::Duration::days(crate::summary::MIN_DAYS)
        || length > time::Duration::days(crate::summary::MAX_DAYS)
    {
        return Err(summary_error(
            "MSG_PARAM_INVALID",
            &format!(
                "The effective period must span {} to {} days",
                crate::summary::MIN_DAYS,
                crate::summary::MAX_DAYS
            ),
        ));
    }
    Ok((start, end, related))
}

impl ResourceServer {
    /// `POST Observation/$hddt-cgm-summary` for a reader with the CGM MIV;
    /// `pairing_id` becomes the summary's (non-identifying) subject.
    pub async fn cgm_summary(
        &self,
        reader: &Reader,
        pairing_id: &str,
        body: &[u8],
    ) -> Result<Value, FhirError> {
        if !reader.mivs.contains(&Miv::ContinuousGlucose) {
            return Err(FhirError::NotKnown(
                "Observation/$hddt-cgm-summary".to_owned(),
            ));
        }
        let now = self.clock.now();
        let (start, end, related) = summary_request(body, now)?;
        let start = start.max(self.not_before(now));
        let no_match = || {
            FhirError::NoMatch(
                "No CGM summary observations found for the given effective period.".to_owned(),
            )
        };
        if start >= end {
            return Err(no_match());
        }
        let cgm_codes = valuesets::codes(Miv::ContinuousGlucose);
        // Chunks that overlap the period: those starting up to a day before it.
        let chunks: Vec<ObservationRowV1> = self
            .store
            .observations_of_patient(
                &reader.patient_uid,
                start - time::Duration::days(1),
                end,
                u32::try_from(crate::summary::MAX_DAYS * 24 * 12 + 1_000).unwrap_or(u32::MAX),
            )
            .await?
            .into_iter()
            .filter(|row| {
                row.kind == ObservationKind::Chunk && cgm_codes.contains(&row.code.as_str())
            })
            .collect();
        let metrics = crate::summary::metrics(&chunks, start, end).ok_or_else(no_match)?;
        let mut devices = Vec::new();
        // Devices only for a reader granted `patient/Device.rs`.
        if related && reader.devices {
            let mut seen = BTreeSet::new();
            for chunk in &chunks {
                if !seen.insert(chunk.device_id.clone()) {
                    continue;
                }
                // The summary Bundle's profile admits Devices, not
                // DeviceMetrics (the OperationDefinition's text names both).
                if let Some(device) = self.store.device(&chunk.device_id, false).await? {
                    devices.extend(self.render_device(&device, false));
                }
            }
        }
        let subject = json!({
            "type": "Patient",
            "identifier": {
                "system": format!("{}/sid/pairing-id", self.policy.base_url),
                "value": pairing_id,
            },
        });
        let id_prefix = ingest::new_resource_id().map_err(|_| FhirError::Unavailable)?;
        let report = crate::summary::Report {
            from: start,
            to: end,
            subject,
            base: &self.policy.base_url,
            id_prefix,
            now,
        };
        Ok(crate::summary::bundle(&metrics, &report, devices))
    }
}
