//! RFC 9457 problem details: the error format of medvault's own (non-OAuth,
//! non-FHIR) API. The one place that turns errors of this API into responses.
//!
//! | status | when |
//! |---|---|
//! | 400 | malformed request |
//! | 401 | no client certificate on a route that needs one |
//! | 403 | client certificate not registered, expired or with wrong key usage |
//! | 404 | no such route |
//! | 408 | the request took longer than the configured timeout |
//! | 413 | body larger than the configured limit |
//! | 503 | the database is unreachable |
//! | 500 | anything else; details are logged, never sent |

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem details object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// A URI naming the problem type (`about:blank` for plain HTTP errors).
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    /// A short summary of the problem type.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this case (never a secret or personal datum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problem {
    /// A problem with `status` and `title`.
    pub fn new(status: StatusCode, title: &'static str) -> Self {
        Self {
            problem_type: "about:blank",
            title,
            status: status.as_u16(),
            detail: None,
        }
    }

    /// Names the problem type (a URN a client can match on).
    pub fn with_type(mut self, problem_type: &'static str) -> Self {
        self.problem_type = problem_type;
        self
    }

    /// Adds a detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}
