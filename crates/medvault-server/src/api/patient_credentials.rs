//! Patient Credentials over HTTP (spec 003): issuance to the logged-in
//! patient, listing, status changes by the issuing institution, the public
//! verifier, the IAL2 presentation login, and the published documents
//! (institutions' `did:web` documents and signed status lists, the server's
//! `did.json`).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medvault_core::Uid;
use medvault_credential::{CredentialStatus, IssueError, PresentError, StatusPurpose, VerifyError};
use medvault_proto::credentials as proto;
use medvault_store::PatientCredentialRowV1;

use super::{ApiJson, BearerSession, internal, invalid, login_error, rfc3339, store_error};
use crate::app::AppState;
use crate::problem::Problem;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/patient-credentials", get(list).post(issue))
        .route("/api/v1/patient-credentials/verify", post(verify))
        .route("/api/v1/patient-credentials/{id}/status", post(set_status))
        .route(
            "/api/v1/session/presentation-challenge",
            post(presentation_challenge),
        )
        .route("/api/v1/session/presentation", post(present))
        .route("/.well-known/did.json", get(server_did))
        .route("/institutions/{uid}/did.json", get(institution_did))
        .route("/institutions/{uid}/status/{purpose}", get(status_list))
}

fn issue_error(error: IssueError) -> Response {
    match error {
        IssueError::Request(_) => {
            Problem::new(StatusCode::BAD_REQUEST, "Invalid credential request")
                .with_type("urn:medvault:problem:invalid-credential-request")
                .with_detail(error.to_string())
                .into_response()
        }
        IssueError::Code => Problem::new(StatusCode::BAD_REQUEST, "Invalid code")
            .with_type("urn:medvault:problem:invalid-code")
            .with_detail(error.to_string())
            .into_response(),
        IssueError::Replay => Problem::new(StatusCode::BAD_REQUEST, "Replayed request")
            .with_type("urn:medvault:problem:replayed-request")
            .with_detail(error.to_string())
            .into_response(),
        IssueError::NotAPatient | IssueError::NotAnInstitution => {
            Problem::new(StatusCode::FORBIDDEN, "Not allowed")
                .with_detail(error.to_string())
                .into_response()
        }
        IssueError::NotFound => Problem::new(StatusCode::NOT_FOUND, "No such credential")
            .with_detail(error.to_string())
            .into_response(),
        IssueError::Store(error) => store_error(&error),
        error @ (IssueError::Key(_) | IssueError::Internal(_) | IssueError::Audit(_)) => {
            internal(&error)
        }
    }
}

fn view(row: PatientCredentialRowV1) -> proto::CredentialView {
    proto::CredentialView {
        id: row.id,
        institution_uid: row.institution_uid,
        patient_uid: row.patient_uid,
        subject: row.subject,
        status: row.status,
        key_protection: row.key_protection,
        client_id: row.client_id,
        issued_at: rfc3339(row.issued_at),
        expires_at: rfc3339(row.expires_at),
    }
}

async fn issue(
    State(state): State<AppState>,
    bearer: BearerSession,
    ApiJson(request): ApiJson<proto::IssueRequest>,
) -> Response {
    match state.issuer.issue(&bearer.session, &request.request).await {
        Ok(issued) => (
            StatusCode::CREATED,
            Json(proto::IssuedCredential {
                id: issued.id,
                credential: issued.jwt,
                institution_uid: issued.institution.to_string(),
                expires_at: rfc3339(issued.expires_at),
            }),
        )
            .into_response(),
        Err(error) => issue_error(error),
    }
}

async fn list(State(state): State<AppState>, bearer: BearerSession) -> Response {
    match state.issuer.list(&bearer.session).await {
        Ok(rows) => Json(proto::CredentialList {
            credentials: rows.into_iter().map(view).collect(),
        })
        .into_response(),
        Err(error) => issue_error(error),
    }
}

async fn set_status(
    State(state): State<AppState>,
    bearer: BearerSession,
    Path(id): Path<String>,
    ApiJson(change): ApiJson<proto::StatusChange>,
) -> Result<Response, Problem> {
    if id.len() != 32 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(invalid("credential id"));
    }
    let status = CredentialStatus::parse(&change.status).ok_or_else(|| invalid("status"))?;
    Ok(
        match state.issuer.set_status(&bearer.session, &id, status).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => issue_error(error),
        },
    )
}

async fn verify(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<proto::VerifyRequest>,
) -> Response {
    match state.verifier.verify(&request.credential).await {
        Ok(verified) => Json(proto::VerifyResult {
            valid: true,
            error: None,
            issuer: Some(verified.claims.iss),
            subject: Some(verified.subject),
            expires_at: Some(rfc3339(verified.expires_at)),
        })
        .into_response(),
        Err(VerifyError::Store(error)) => store_error(&error),
        Err(error @ VerifyError::Corrupt(_)) => internal(&error),
        Err(error) => Json(proto::VerifyResult {
            valid: false,
            error: Some(error.to_string()),
            issuer: None,
            subject: None,
            expires_at: None,
        })
        .into_response(),
    }
}

async fn presentation_challenge(State(state): State<AppState>, bearer: BearerSession) -> Response {
    match state.presentations.challenge(&bearer.session).await {
        Ok(challenge) => Json(proto::PresentationChallenge {
            nonce: challenge.nonce,
            audience: challenge.audience,
            expires_at: rfc3339(challenge.expires_at),
        })
        .into_response(),
        Err(PresentError::Store(error)) => store_error(&error),
        Err(error @ PresentError::NoCredential) => {
            Problem::new(StatusCode::FORBIDDEN, "Not allowed")
                .with_detail(error.to_string())
                .into_response()
        }
        Err(error) => internal(&error),
    }
}

async fn present(
    State(state): State<AppState>,
    bearer: BearerSession,
    ApiJson(request): ApiJson<proto::Presentation>,
) -> Response {
    match state
        .presentations
        .present(&bearer.token, &request.presentation)
        .await
    {
        Ok((token, session, verified)) => Json(proto::PresentedSession {
            token: token.expose().to_owned(),
            assurance: session.assurance.as_str().to_owned(),
            patient_credential_id: verified.id,
            expires_at: rfc3339(session.expires_at),
        })
        .into_response(),
        Err(PresentError::Login(error)) => login_error(error),
        Err(PresentError::Store(error) | PresentError::Credential(VerifyError::Store(error))) => {
            store_error(&error)
        }
        Err(error @ PresentError::NotYours) => Problem::new(StatusCode::FORBIDDEN, "Not allowed")
            .with_detail(error.to_string())
            .into_response(),
        Err(
            error @ (PresentError::Internal(_) | PresentError::Credential(VerifyError::Corrupt(_))),
        ) => internal(&error),
        Err(error) => Problem::new(StatusCode::BAD_REQUEST, "Presentation refused")
            .with_type("urn:medvault:problem:presentation-refused")
            .with_detail(error.to_string())
            .into_response(),
    }
}

async fn server_did(State(state): State<AppState>) -> Response {
    did_json(state.issuer.names().server_document())
}

fn did_json(document: serde_json::Value) -> Response {
    let mut response = Json(document).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/did+json"),
    );
    response
}

fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "Not found").into_response()
}

async fn institution_did(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let Ok(uid) = uid.parse::<Uid>() else {
        return not_found();
    };
    let known = match state.store.participant(&uid.to_string()).await {
        Ok(row) => row.is_some_and(|row| row.kind.starts_with("institution:")),
        Err(error) => return store_error(&error),
    };
    if !known {
        return not_found();
    }
    match state.issuer_keys.jwks(Some(uid)).await {
        Ok(keys) => did_json(state.issuer.names().institution_document(uid, &keys)),
        Err(medvault_credential::IssuerKeyError::Store(error)) => store_error(&error),
        Err(error) => internal(&error),
    }
}

async fn status_list(
    State(state): State<AppState>,
    Path((uid, purpose)): Path<(String, String)>,
) -> Response {
    let Ok(uid) = uid.parse::<Uid>() else {
        return not_found();
    };
    let Some(purpose) = StatusPurpose::parse(&purpose) else {
        return not_found();
    };
    match state.issuer.status_list(uid, purpose).await {
        Ok(Some(jwt)) => (
            [
                (header::CONTENT_TYPE, "application/vc+jwt"),
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            jwt,
        )
            .into_response(),
        Ok(None) => not_found(),
        Err(error) => issue_error(error),
    }
}
