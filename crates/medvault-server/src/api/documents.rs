//! Connections and sealed documents over HTTP.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medvault_accounts::{ExchangeError, NewDocument};
use medvault_core::Uid;
use medvault_proto::Bytes;
use medvault_proto::documents as proto;
use medvault_store::ReceivedDocumentV1;
use serde::Deserialize;

use super::{ApiJson, BearerSession, internal, invalid, rfc3339, store_error};
use crate::app::AppState;
use crate::problem::Problem;

/// Routes with ordinary body limits.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/connections", get(connections).post(invite))
        .route("/api/v1/connections/{uid}", axum::routing::delete(remove))
        .route("/api/v1/connections/{uid}/accept", post(accept))
        .route("/api/v1/documents/{id}", get(fetch))
}

/// The document upload (and list) route, which takes large bodies.
pub(super) fn large_routes() -> Router<AppState> {
    Router::new().route("/api/v1/documents", get(list).post(send))
}

fn exchange_error(error: ExchangeError) -> Response {
    match error {
        ExchangeError::UnknownParticipant => {
            Problem::new(StatusCode::NOT_FOUND, "No such participant").into_response()
        }
        ExchangeError::NotFound => Problem::new(StatusCode::NOT_FOUND, "Not found").into_response(),
        ExchangeError::NotConnectable | ExchangeError::NotConnected | ExchangeError::Signature => {
            Problem::new(StatusCode::FORBIDDEN, "Not allowed")
                .with_detail(error.to_string())
                .into_response()
        }
        ExchangeError::Exists | ExchangeError::Taken => {
            Problem::new(StatusCode::CONFLICT, "Conflict")
                .with_detail(error.to_string())
                .into_response()
        }
        ExchangeError::Invalid(field) => invalid(field).into_response(),
        ExchangeError::TooLarge(_) => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "Document too large")
                .with_detail(error.to_string())
                .into_response()
        }
        ExchangeError::Store(error) => store_error(&error),
        ExchangeError::Audit(_) => internal(&error),
    }
}

fn parse_uid(text: &str, field: &'static str) -> Result<Uid, Problem> {
    text.parse().map_err(|_| invalid(field))
}

async fn invite(
    State(state): State<AppState>,
    bearer: BearerSession,
    ApiJson(request): ApiJson<proto::ConnectionInvite>,
) -> Result<Response, Problem> {
    let other = parse_uid(&request.uid, "uid")?;
    Ok(match state.exchange.invite(&bearer.session, other).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(error) => exchange_error(error),
    })
}

async fn accept(
    State(state): State<AppState>,
    bearer: BearerSession,
    Path(uid): Path<String>,
) -> Result<Response, Problem> {
    let other = parse_uid(&uid, "uid")?;
    Ok(match state.exchange.accept(&bearer.session, other).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => exchange_error(error),
    })
}

async fn remove(
    State(state): State<AppState>,
    bearer: BearerSession,
    Path(uid): Path<String>,
) -> Result<Response, Problem> {
    let other = parse_uid(&uid, "uid")?;
    Ok(match state.exchange.remove(&bearer.session, other).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => exchange_error(error),
    })
}

async fn connections(State(state): State<AppState>, bearer: BearerSession) -> Response {
    match state.exchange.connections(&bearer.session).await {
        Ok(list) => Json(proto::ConnectionList {
            connections: list
                .into_iter()
                .map(|connection| proto::ConnectionView {
                    uid: connection.other.to_string(),
                    state: connection.state,
                    direction: if connection.invited_by_me {
                        "outgoing"
                    } else {
                        "incoming"
                    }
                    .to_owned(),
                    created_at: rfc3339(connection.created_at),
                })
                .collect(),
        })
        .into_response(),
        Err(error) => exchange_error(error),
    }
}

async fn send(
    State(state): State<AppState>,
    bearer: BearerSession,
    ApiJson(request): ApiJson<proto::DocumentUpload>,
) -> Result<Response, Problem> {
    let id = parse_uid(&request.id, "id")?;
    let keys = request
        .recipients
        .into_iter()
        .map(|recipient| {
            Ok((
                parse_uid(&recipient.uid, "recipient uid")?,
                recipient.sealed_key.into_vec(),
            ))
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    let document = NewDocument {
        id,
        keys,
        sealed_header: request.sealed_header.into_vec(),
        sealed_body: request.sealed_body.into_vec(),
        signature: request.signature.into_vec(),
    };
    Ok(match state.exchange.send(&bearer.session, document).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(error) => exchange_error(error),
    })
}

fn summary(received: &ReceivedDocumentV1) -> proto::DocumentSummary {
    let document = &received.document;
    proto::DocumentSummary {
        id: document.id.clone(),
        sender_uid: document.sender_uid.clone(),
        sender_credential_id: document.sender_credential_id.clone(),
        created_at: rfc3339(document.created_at),
        size: document.size,
        recipients: received.recipients.clone(),
        sealed_header: document.sealed_header.clone().into(),
        sealed_key: received.sealed_key.clone().into(),
    }
}

/// `?limit=` of the document list.
#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    bearer: BearerSession,
    Query(query): Query<ListQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(50);
    match state.exchange.received(&bearer.session, limit).await {
        Ok(documents) => Json(proto::DocumentList {
            documents: documents.iter().map(summary).collect(),
        })
        .into_response(),
        Err(error) => exchange_error(error),
    }
}

async fn fetch(
    State(state): State<AppState>,
    bearer: BearerSession,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_uid(&id, "id")?;
    Ok(match state.exchange.fetch(&bearer.session, id).await {
        Ok(received) => Json(proto::DocumentView {
            summary: summary(&received),
            sender_certificate: Bytes::from(received.document.sender_certificate),
            signature: Bytes::from(received.document.signature),
            sealed_body: Bytes::from(received.document.sealed_body),
        })
        .into_response(),
        Err(error) => exchange_error(error),
    })
}
