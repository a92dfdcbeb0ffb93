//! Identity proofing over HTTP (Patient Credential): an institution records a
//! proofing and gets the patient's one-time code; the issuer keys' JWKS.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use medvault_core::Uid;
use medvault_credential::{EvidenceType, ProofingError, ProofingMethod};
use serde::{Deserialize, Serialize};

use super::{ApiJson, BearerSession, internal, invalid, store_error};
use crate::app::AppState;
use crate::problem::Problem;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/proofings", post(record))
        .route("/api/v1/proofings/{id}/code", post(reissue))
        .route("/.well-known/jwks.json", axum::routing::get(jwks))
}

/// The published credential issuer keys of every institution (RFC 7517 JWKS).
async fn jwks(State(state): State<AppState>) -> Response {
    match state.issuer_keys.jwks(None).await {
        Ok(keys) => Json(serde_json::json!({ "keys": keys })).into_response(),
        Err(medvault_credential::IssuerKeyError::Store(error)) => store_error(&error),
        Err(error) => internal(&error),
    }
}

/// `POST /api/v1/proofings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofingRequest {
    patient_uid: String,
    method: String,
    evidence_type: String,
}

/// The code to hand to the patient (once).
#[derive(Debug, Serialize)]
struct ProofingResponse {
    proofing_id: String,
    code: String,
    expires_at: String,
}

async fn record(
    State(state): State<AppState>,
    bearer: BearerSession,
    ApiJson(request): ApiJson<ProofingRequest>,
) -> Result<Response, Problem> {
    let patient: Uid = request
        .patient_uid
        .parse()
        .map_err(|_| invalid("patient_uid"))?;
    let method = ProofingMethod::parse(&request.method).ok_or_else(|| invalid("method"))?;
    let evidence =
        EvidenceType::parse(&request.evidence_type).ok_or_else(|| invalid("evidence_type"))?;
    Ok(issued_response(
        state
            .proofing
            .record(&bearer.session, patient, method, evidence)
            .await,
    ))
}

/// `POST /api/v1/proofings/{id}/code`: a new code for a proofing whose code
/// was lost or expired (the old one stops working).
async fn reissue(
    State(state): State<AppState>,
    bearer: BearerSession,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    if id.len() != 32 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(invalid("proofing id"));
    }
    Ok(issued_response(
        state.proofing.reissue(&bearer.session, &id).await,
    ))
}

fn issued_response(result: Result<medvault_credential::IssuedCode, ProofingError>) -> Response {
    match result {
        Ok(issued) => (
            StatusCode::CREATED,
            Json(ProofingResponse {
                proofing_id: issued.proofing_id,
                code: issued.code.to_string(),
                expires_at: super::rfc3339(issued.expires_at),
            }),
        )
            .into_response(),
        Err(error @ (ProofingError::NotAnInstitution | ProofingError::NotConnectedPatient)) => {
            Problem::new(StatusCode::FORBIDDEN, "Not allowed")
                .with_detail(error.to_string())
                .into_response()
        }
        Err(ProofingError::Store(error)) => store_error(&error),
        Err(error) => internal(&error),
    }
}
