//! `GET /api/v1/audit`: the audit trail for those entitled to read it. A
//! participant reads the entries about themselves (HDDT: patients inspect
//! their pairing and access history); an auditor (a participant an operator
//! named with `medvault admin auditor add`, e.g. a data-protection officer)
//! reads all, filtered by subject, event type and time. Pages of at most
//! 1000, oldest first.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use medvault_audit::AuditQuery;
use medvault_proto::audit::{AuditEntryView, AuditPage};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{BearerSession, internal, rfc3339, store_error};
use crate::app::AppState;
use crate::problem::Problem;

/// The state-name prefix of auditor accounts.
pub const AUDITOR_PREFIX: &str = "auditor:";

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Entries after this seq.
    after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
    /// Only this event type.
    event_type: Option<String>,
    /// Auditors: every subject (`all=true`) or one.
    all: Option<bool>,
    /// Auditors: only this subject.
    subject: Option<String>,
    /// At or after (RFC 3339).
    from: Option<String>,
    /// Before (RFC 3339).
    until: Option<String>,
}

fn instant(text: Option<&str>) -> Result<Option<OffsetDateTime>, ()> {
    text.map(|text| OffsetDateTime::parse(text, &Rfc3339).map_err(|_| ()))
        .transpose()
}

async fn list(
    State(state): State<AppState>,
    bearer: BearerSession,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return Problem::new(StatusCode::BAD_REQUEST, "Invalid query").into_response();
    };
    let uid = bearer.session.uid.to_string();
    let wide = query.all.unwrap_or(false) || query.subject.is_some();
    let subject = if wide {
        match state
            .store
            .hddt_state(&format!("{AUDITOR_PREFIX}{uid}"))
            .await
        {
            Ok(Some(_)) => query.subject.clone(),
            Ok(None) => {
                return Problem::new(StatusCode::FORBIDDEN, "Auditors only")
                    .with_detail("reading other participants' entries needs an auditor account")
                    .into_response();
            }
            Err(error) => return store_error(&error),
        }
    } else {
        Some(uid)
    };
    let (Ok(from), Ok(until)) = (
        instant(query.from.as_deref()),
        instant(query.until.as_deref()),
    ) else {
        return Problem::new(StatusCode::BAD_REQUEST, "Invalid time")
            .with_detail("from and until are RFC 3339 instants")
            .into_response();
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let records = match state
        .audit
        .query(&AuditQuery {
            subject,
            event_type: query.event_type.clone(),
            from,
            until,
            after_seq: query.after,
            limit,
        })
        .await
    {
        Ok(records) => records,
        Err(error) => return internal(&error),
    };
    let full = records.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let next_after = if full {
        records.last().map(|record| record.seq)
    } else {
        None
    };
    Json(AuditPage {
        entries: records
            .into_iter()
            .map(|record| AuditEntryView {
                seq: record.seq,
                recorded_at: rfc3339(record.recorded_at),
                actor: record.actor,
                subject: record.subject,
                event_type: record.event_type,
                outcome: record.outcome,
                detail: serde_json::from_str(&record.detail).unwrap_or_default(),
                entry_hash: record.entry_hash,
            })
            .collect(),
        next_after,
    })
    .into_response()
}
