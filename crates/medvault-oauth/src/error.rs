//! OAuth 2.0 error responses (RFC 6749 §5.2, RFC 9126 §2.3, RFC 7009) with
//! the texts gematik's guide prescribes where it prescribes one. A
//! description never echoes a request value.

use serde::Serialize;

/// An OAuth error: HTTP status, `error` code and a human-readable description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{error}: {error_description}")]
pub struct OAuthError {
    /// The HTTP status (not serialized).
    #[serde(skip)]
    pub status: u16,
    /// The RFC 6749 error code.
    pub error: &'static str,
    /// What is wrong.
    pub error_description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            error_description: description.into(),
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }

    /// 401 `invalid_client` with the guide's text: the client is not
    /// registered or not active in the DiGA directory.
    pub fn unregistered_client() -> Self {
        Self::new(
            401,
            "invalid_client",
            "The authenticated client is not registered or not active in the DiGA directory",
        )
    }

    /// 401 `invalid_client` for a certificate that is not the DiGA's.
    pub fn certificate_mismatch() -> Self {
        Self::new(
            401,
            "invalid_client",
            "The client certificate is not registered for this client_id",
        )
    }

    /// 400 `invalid_scope` with the guide's text.
    pub fn scope_exceeds_grant() -> Self {
        Self::new(
            400,
            "invalid_scope",
            "The requested scope exceeds the scope granted to the client",
        )
    }

    /// 400 `invalid_scope` for a scope that is not a valid HDDT scope.
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_scope", description)
    }

    /// 400 `unauthorized_client` with the guide's text.
    pub fn unauthorized_client() -> Self {
        Self::new(
            400,
            "unauthorized_client",
            "The client is not authorized to use this authorization grant type",
        )
    }

    /// 400 `unsupported_response_type`.
    pub fn unsupported_response_type() -> Self {
        Self::new(
            400,
            "unsupported_response_type",
            "Only response_type=code is supported",
        )
    }

    /// 400 `invalid_grant`.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }

    /// 500 `server_error`.
    pub fn server_error() -> Self {
        Self::new(500, "server_error", "internal error")
    }

    /// 503 `temporarily_unavailable`: the DiGA directory could not be
    /// refreshed within its maximum cache age, so the server fails closed.
    pub fn registry_unavailable() -> Self {
        Self::new(
            503,
            "temporarily_unavailable",
            "The DiGA directory could not be refreshed; requests are refused until it is",
        )
    }

    /// 429 `temporarily_unavailable`: the client's request rate is limited
    /// (with `Retry-After`).
    pub fn rate_limited() -> Self {
        Self::new(
            429,
            "temporarily_unavailable",
            "Too many requests from this client; retry after the time in Retry-After",
        )
    }

    /// 410 `hddt_not_supported`: the Device Data Recorder left the HIIS-VZ
    /// (medvault's documented answer; the guide leaves the format open).
    pub fn retired() -> Self {
        Self::new(
            410,
            "hddt_not_supported",
            "HDDT is no longer supported by this Device Data Recorder",
        )
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"error":"server_error","error_description":"internal error"}"#.to_owned()
        })
    }
}
