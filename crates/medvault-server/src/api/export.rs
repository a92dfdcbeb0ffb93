//! `GET /api/v1/export`: everything the server holds about the session's
//! participant, as one JSON document (binary values unpadded base64url,
//! instants RFC 3339). Document bodies are fetched one by one from
//! `/api/v1/documents/{id}`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{BearerSession, credential_error, rfc3339};
use crate::app::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/export", get(export))
}

fn bytes(data: &[u8]) -> Value {
    json!(medvault_proto::Bytes::from(data.to_vec()))
}

async fn export(State(state): State<AppState>, bearer: BearerSession) -> Response {
    let export = match state.accounts.export(&bearer.session).await {
        Ok(export) => export,
        Err(error) => return credential_error(error),
    };
    let participant = &export.participant;
    Json(json!({
        "format": "medvault-export/1",
        "participant": {
            "uid": participant.uid,
            "kind": participant.kind,
            "display_name": participant.display_name,
            "root_public_key": bytes(&participant.root_public_key),
            "root_key_certificate": participant.root_key_certificate,
            "registered_at": rfc3339(participant.registered_at),
        },
        "working_credentials": export.credentials.iter().map(|credential| json!({
            "id": credential.id,
            "kind": credential.kind,
            "public_key": bytes(&credential.public_key),
            "certificate": bytes(&credential.certificate),
            "created_at": rfc3339(credential.created_at),
        })).collect::<Vec<_>>(),
        "connections": export.connections.iter().map(|connection| json!({
            "uids": [connection.uid_low, connection.uid_high],
            "inviter": connection.inviter,
            "state": connection.state,
            "created_at": rfc3339(connection.created_at),
            "accepted_at": connection.accepted_at.map(rfc3339),
        })).collect::<Vec<_>>(),
        "documents": export.documents.iter().map(|received| {
            let document = &received.document;
            json!({
                "id": document.id,
                "sender_uid": document.sender_uid,
                "sender_credential_id": document.sender_credential_id,
                "sender_certificate": bytes(&document.sender_certificate),
                "signature": bytes(&document.signature),
                "sealed_header": bytes(&document.sealed_header),
                "size": document.size,
                "created_at": rfc3339(document.created_at),
                "recipients": received.recipients,
                "sealed_key": bytes(&received.sealed_key),
                "body": format!("/api/v1/documents/{}", document.id),
            })
        }).collect::<Vec<_>>(),
        "identity_proofings": export.proofings.iter().map(|proofing| json!({
            "id": proofing.id,
            "institution_uid": proofing.institution_uid,
            "assurance": proofing.assurance,
            "method": proofing.method,
            "evidence_type": proofing.evidence_type,
            "proofed_by": proofing.proofed_by,
            "proofed_at": rfc3339(proofing.proofed_at),
        })).collect::<Vec<_>>(),
        "patient_credentials": export.patient_credentials.iter().map(|credential| json!({
            "id": credential.id,
            "institution_uid": credential.institution_uid,
            "patient_uid": credential.patient_uid,
            "subject": credential.subject,
            "jti": credential.jti,
            "kid": credential.kid,
            "status": credential.status,
            "key_protection": credential.key_protection,
            "client_id": credential.client_id,
            "issued_at": rfc3339(credential.issued_at),
            "expires_at": rfc3339(credential.expires_at),
        })).collect::<Vec<_>>(),
        "audit": export.audit.iter().map(|entry| json!({
            "seq": entry.seq,
            "recorded_at": rfc3339(entry.recorded_at),
            "actor": entry.actor,
            "event_type": entry.event_type,
            "outcome": entry.outcome,
            "detail": serde_json::from_str::<Value>(&entry.detail).unwrap_or(Value::Null),
            "entry_hash": bytes(&entry.entry_hash),
        })).collect::<Vec<_>>(),
        "audit_complete": export.audit_complete,
    }))
    .into_response()
}
