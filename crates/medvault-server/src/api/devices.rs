//! The patient's device API: the catalogue, device registration,
//! calibration and retirement, reading upload, and the FHIR export of all
//! their device data.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medvault_fhir::catalogue::{self, ModelKind};
use medvault_fhir::service::IngestFailure;
use medvault_proto::devices::{
    DeviceModelInfo, DeviceUpdate, DeviceView, NewDevice, UploadBatch, UploadReceipt,
};
use medvault_store::{DeviceRowV1, StoreError};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ApiJson, BearerSession, rfc3339, store_error};
use crate::app::AppState;
use crate::problem::Problem;

/// The device routes (bodies up to the general limit).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/device-models", get(models))
        .route("/api/v1/devices", get(list).post(register))
        .route("/api/v1/devices/{id}", post(update))
        .route("/api/v1/export/fhir", get(export))
}

/// The upload route (bodies up to `max_upload_bytes`).
pub fn upload_routes() -> Router<AppState> {
    Router::new().route("/api/v1/readings/batches", post(upload))
}

const fn kind_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Glucometer => "glucometer",
        ModelKind::Cgm => "cgm",
    }
}

async fn models() -> Json<Vec<DeviceModelInfo>> {
    Json(
        catalogue::CATALOGUE
            .iter()
            .map(|model| DeviceModelInfo {
                id: model.id.to_owned(),
                kind: kind_name(model.kind).to_owned(),
                manufacturer: model.manufacturer.to_owned(),
                name: model.name.to_owned(),
                period_secs: model.period_secs,
                needs_calibration: model.needs_calibration,
                range_mg_dl: [model.low_mg_dl, model.high_mg_dl],
            })
            .collect(),
    )
}

fn view(row: &DeviceRowV1) -> DeviceView {
    let model = catalogue::model(&row.model);
    DeviceView {
        id: row.id.clone(),
        model: row.model.clone(),
        name: model.map_or_else(String::new, |m| m.name.to_owned()),
        kind: model.map_or("", |m| kind_name(m.kind)).to_owned(),
        serial_number: row.serial_number.clone(),
        unit: row.unit.clone(),
        status: row.status.clone(),
        metric_id: row.metric_id.clone(),
        calibration_state: row.calibration_state.clone(),
        calibration_time: row.calibration_time.map(rfc3339),
        last_sync_at: row.last_sync_at.map(rfc3339),
    }
}

/// The patient behind a session; devices belong to patients only.
async fn patient(state: &AppState, session: &BearerSession) -> Result<String, Response> {
    let uid = session.session.uid.to_string();
    match state.store.participant(&uid).await {
        Ok(Some(row)) if row.kind == "patient" => Ok(uid),
        Ok(_) => {
            Err(Problem::new(StatusCode::FORBIDDEN, "Only patients have devices").into_response())
        }
        Err(error) => Err(store_error(&error)),
    }
}

fn failure(error: &IngestFailure) -> Response {
    let (status, title) = match error {
        IngestFailure::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid device data"),
        IngestFailure::UnknownDevice => (StatusCode::NOT_FOUND, "No such device"),
        IngestFailure::Duplicate => (StatusCode::CONFLICT, "Device already registered"),
        IngestFailure::BatchConflict => (StatusCode::CONFLICT, "Batch id already used"),
        IngestFailure::ReadingConflict => (StatusCode::CONFLICT, "Reading conflicts"),
        IngestFailure::Unavailable => {
            return store_error(&StoreError::Unavailable("device data".into()));
        }
    };
    Problem::new(status, title)
        .with_detail(error.to_string())
        .into_response()
}

async fn list(State(state): State<AppState>, session: BearerSession) -> Response {
    let uid = match patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    match state.fhir.devices(&uid).await {
        Ok(rows) => Json(rows.iter().map(view).collect::<Vec<_>>()).into_response(),
        Err(error) => failure(&error),
    }
}

async fn register(
    State(state): State<AppState>,
    session: BearerSession,
    ApiJson(request): ApiJson<NewDevice>,
) -> Response {
    let uid = match patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    match state.fhir.register_device(&uid, &request).await {
        Ok(row) => (StatusCode::CREATED, Json(view(&row))).into_response(),
        Err(error) => failure(&error),
    }
}

async fn update(
    State(state): State<AppState>,
    session: BearerSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<DeviceUpdate>,
) -> Response {
    let uid = match patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    let at = match request.calibration_time.as_deref() {
        None => state.clock.now(),
        Some(text) => match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(at) => at,
            Err(_) => {
                return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid device data")
                    .with_detail("calibration_time must be an RFC 3339 date-time")
                    .into_response();
            }
        },
    };
    let calibration = request
        .calibration_state
        .as_deref()
        .map(|state| (state, at));
    match state
        .fhir
        .update_device(&uid, &id, calibration, request.retire)
        .await
    {
        Ok(row) => Json(view(&row)).into_response(),
        Err(error) => failure(&error),
    }
}

async fn upload(
    State(state): State<AppState>,
    session: BearerSession,
    ApiJson(batch): ApiJson<UploadBatch>,
) -> Response {
    let uid = match patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    match state.fhir.upload(&uid, &batch).await {
        Ok(accepted) => (
            if accepted.replayed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            Json(UploadReceipt {
                batch_id: batch.batch_id,
                readings: accepted.readings,
                replayed: accepted.replayed,
            }),
        )
            .into_response(),
        Err(error) => failure(&error),
    }
}

async fn export(State(state): State<AppState>, session: BearerSession) -> Response {
    let uid = match patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    // Exporting everything is a weighty step: a patient who holds a Patient
    // Credential must have presented it in this session (IAL2).
    if let Err(error) = state
        .accounts
        .require_ial2_if_proofed(&session.session)
        .await
    {
        return super::credential_error(error);
    }
    match state.fhir.export(&uid).await {
        Ok(bundle) => (
            [(axum::http::header::CONTENT_TYPE, "application/fhir+json")],
            Json(bundle),
        )
            .into_response(),
        Err(_) => store_error(&StoreError::Unavailable("device data".into())),
    }
}
