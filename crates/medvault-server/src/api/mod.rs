//! medvault's own JSON API under `/api/v1` (problem+json errors).
//!
//! This module owns the HTTP side of the API: the JSON body extractor that
//! answers malformed bodies with problem+json, the bearer-session extractor,
//! the mapping of domain errors to statuses, and the routes. Handlers convert
//! wire types (`medvault-proto`) to domain types and back; every check on a
//! value is the domain crates' job.

mod account_app;
mod accounts;
pub mod audit;
pub mod devices;
mod documents;
mod export;
mod patient_credentials;
mod proofing;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use medvault_accounts::{CredentialError, LoginError, RegistrationError, Session};
use medvault_store::StoreError;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::problem::Problem;

pub use accounts::OPENAPI;

/// The `/api/v1` routes with the ordinary body limit.
pub fn router() -> Router<AppState> {
    accounts::routes()
        .merge(documents::routes())
        .merge(account_app::routes())
        .merge(proofing::routes())
        .merge(patient_credentials::routes())
        .merge(export::routes())
        .merge(audit::routes())
        .merge(devices::routes())
}

/// The document upload route, which takes bodies up to the document limit.
pub fn document_router() -> Router<AppState> {
    documents::large_routes()
}

/// An instant as RFC 3339 text.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A JSON body; a malformed one is answered with problem+json 400 (415 for a
/// wrong content type), naming what is wrong but echoing no value.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected application/json",
            )),
            Err(JsonRejection::JsonDataError(error)) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Invalid request body",
            )
            .with_detail(describe_data_error(&error.body_text()))),
            Err(JsonRejection::BytesRejection(_)) => Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            )),
            Err(_) => Err(Problem::new(StatusCode::BAD_REQUEST, "Malformed JSON")),
        }
    }
}

/// Says where a body does not fit its type without echoing any value: serde's
/// messages for a wrong type or value quote the value, which may be a secret.
fn describe_data_error(text: &str) -> String {
    let rest = text
        .split_once("target type: ")
        .map_or(text, |(_, rest)| rest);
    let (path, message) = rest.split_once(": ").unwrap_or((".", rest));
    let path: String = path.chars().take(120).collect();
    if message.starts_with("missing field") || message.starts_with("unknown field") {
        let message: String = message
            .split(", expected")
            .next()
            .unwrap_or(message)
            .chars()
            .take(120)
            .collect();
        format!("{path}: {message}")
    } else {
        format!("{path}: wrong type or value")
    }
}

/// The client's address for throttling: the TCP peer, or, when the peer is
/// one of the configured `trusted_proxies`, the rightmost address of
/// `X-Forwarded-For` that is not itself a trusted proxy (the one the outermost
/// trusted proxy saw). A malformed header from a trusted proxy counts as the
/// proxy's own address, never as a value the client chose.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub std::net::IpAddr);

/// The longest `X-Forwarded-For` read.
const MAX_FORWARDED_LEN: usize = 2048;

/// The client address behind `peer` given the `X-Forwarded-For` values.
pub fn client_address(
    peer: std::net::IpAddr,
    forwarded: &[&str],
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |address: &std::net::IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut address = peer;
    let total: usize = forwarded.iter().map(|value| value.len()).sum();
    if total > MAX_FORWARDED_LEN {
        return peer;
    }
    // Headers in order, each a comma-separated list; the rightmost entry is
    // the one the nearest proxy added.
    for entry in forwarded.iter().flat_map(|value| value.split(',')).rev() {
        let Ok(parsed) = entry.trim().parse::<std::net::IpAddr>() else {
            return address;
        };
        address = parsed;
        if !is_trusted(&parsed) {
            break;
        }
    }
    address
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<crate::listener::ConnectionInfo>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |info| {
                info.0.remote_addr.ip()
            });
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        Ok(Self(client_address(
            peer,
            &forwarded,
            &state.config.trusted_proxies,
        )))
    }
}

/// The session of an `Authorization: Bearer` header; 401 without a valid one.
#[derive(Debug, Clone)]
pub struct BearerSession {
    /// The session.
    pub session: Session,
    /// The token (to log out with).
    pub token: String,
}

impl FromRequestParts<AppState> for BearerSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(unauthenticated)?;
        match state.accounts.authenticate(token).await {
            Ok(session) => Ok(Self {
                session,
                token: token.to_owned(),
            }),
            Err(LoginError::Unauthenticated) => Err(unauthenticated()),
            Err(error) => Err(login_error(error)),
        }
    }
}

fn unauthenticated() -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, "Session required")
        .with_detail("send a valid session token as Authorization: Bearer")
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"medvault\""),
    );
    response
}

/// 429 problem+json with `Retry-After`.
pub fn too_many(retry_after: u64, title: &'static str) -> Response {
    with_retry_after(
        Problem::new(StatusCode::TOO_MANY_REQUESTS, title)
            .with_detail(format!("try again in {retry_after} s"))
            .into_response(),
        retry_after,
    )
}

/// Adds `Retry-After: seconds` to a response.
pub fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A 400 naming the field at fault.
pub fn invalid(field: &str) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "Invalid request").with_detail(format!("invalid {field}"))
}

/// Maps a store failure: 503 when the database is away, 500 otherwise (logged).
pub fn store_error(error: &StoreError) -> Response {
    match error {
        StoreError::Unavailable(_) => {
            tracing::warn!(%error, "database unavailable");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable").into_response()
        }
        other => internal(other),
    }
}

/// A 500 whose cause goes to the log only.
pub fn internal(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "request failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error").into_response()
}

/// Maps a login or session failure.
pub fn login_error(error: LoginError) -> Response {
    match error {
        LoginError::Failed => Problem::new(StatusCode::UNAUTHORIZED, "Login failed")
            .with_detail("the credential was not accepted")
            .into_response(),
        LoginError::Throttled { retry_after } => {
            let mut response =
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too many failed logins")
                    .with_detail(format!("try again in {retry_after} s"))
                    .into_response();
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        LoginError::Challenge => Problem::new(StatusCode::BAD_REQUEST, "Invalid challenge")
            .with_detail("the login challenge is unknown, used or expired")
            .into_response(),
        LoginError::Malformed(field) => invalid(field).into_response(),
        LoginError::Unauthenticated => unauthenticated(),
        LoginError::Store(error) => store_error(&error),
        other => internal(&other),
    }
}

/// Maps a registration failure.
pub fn registration_error(error: RegistrationError) -> Response {
    match error {
        RegistrationError::NameRequired
        | RegistrationError::NameForbidden
        | RegistrationError::Credentials(_)
        | RegistrationError::Enrolment(_) => {
            Problem::new(StatusCode::BAD_REQUEST, "Invalid registration")
                .with_detail(error.to_string())
                .into_response()
        }
        RegistrationError::Taken(what) => Problem::new(StatusCode::CONFLICT, "Already taken")
            .with_detail(format!("{what} is taken"))
            .into_response(),
        RegistrationError::Store(error) => store_error(&error),
        other => internal(&other),
    }
}

/// The problem type of a refusal that an IAL2 session would have passed.
pub const IAL2_REQUIRED: &str = "urn:medvault:problem:ial2-required";

/// Maps a credential-management failure.
pub fn credential_error(error: CredentialError) -> Response {
    match error {
        CredentialError::Enrolment(_) => {
            Problem::new(StatusCode::BAD_REQUEST, "Invalid working credential")
                .with_detail(error.to_string())
                .into_response()
        }
        CredentialError::Exists(_) | CredentialError::Taken(_) => {
            Problem::new(StatusCode::CONFLICT, "Conflict")
                .with_detail(error.to_string())
                .into_response()
        }
        CredentialError::NotFound => {
            Problem::new(StatusCode::NOT_FOUND, "No such credential").into_response()
        }
        CredentialError::LastCredential => {
            Problem::new(StatusCode::CONFLICT, "Last working credential")
                .with_detail(error.to_string())
                .into_response()
        }
        CredentialError::NeedsIal2 => Problem::new(StatusCode::FORBIDDEN, "IAL2 session required")
            .with_detail(error.to_string())
            .with_type(IAL2_REQUIRED)
            .into_response(),
        CredentialError::Store(error) => store_error(&error),
        CredentialError::Audit(_) => internal(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::{client_address, describe_data_error};

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let proxy: std::net::IpAddr = "10.0.0.5".parse().unwrap_or(std::net::IpAddr::from([0; 4]));
        let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "192.0.2.1"]
            .iter()
            .filter_map(|text| {
                text.parse::<ipnet::IpNet>().ok().or_else(|| {
                    text.parse::<std::net::IpAddr>()
                        .ok()
                        .map(ipnet::IpNet::from)
                })
            })
            .collect();
        let ip = |text: &str| {
            text.parse::<std::net::IpAddr>()
                .unwrap_or(std::net::IpAddr::from([0; 4]))
        };
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &["198.51.100.1"], &trusted),
            ip("203.0.113.9")
        );
        // Behind a trusted proxy: the rightmost untrusted entry, whatever the client put left of it.
        assert_eq!(
            client_address(proxy, &["1.2.3.4, 198.51.100.7, 10.1.1.1"], &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(proxy, &["1.2.3.4", "198.51.100.7"], &trusted),
            ip("198.51.100.7"),
            "several headers are one list"
        );
        assert_eq!(
            client_address(proxy, &["2001:db8::1"], &trusted),
            ip("2001:db8::1")
        );
        // Malformed or oversized: the proxy's own address.
        assert_eq!(client_address(proxy, &["not-an-ip"], &trusted), proxy);
        assert_eq!(
            client_address(proxy, &["198.51.100.7, junk"], &trusted),
            proxy
        );
        assert_eq!(
            client_address(proxy, &[&"1.1.1.1,".repeat(300)], &trusted),
            proxy
        );
        assert_eq!(client_address(proxy, &[], &trusted), proxy);
        assert_eq!(
            client_address(ip("192.0.2.1"), &["198.51.100.8"], &trusted),
            ip("198.51.100.8")
        );
        assert_eq!(
            client_address(ip("192.0.2.2"), &["198.51.100.8"], &trusted),
            ip("192.0.2.2")
        );
    }

    #[test]
    fn data_errors_name_the_field_but_never_the_value() {
        let described = describe_data_error(
            "Failed to deserialize the JSON body into the target type: credentials[0].slot: invalid type: string \"hunter2\", expected u32 at line 1 column 9",
        );
        assert_eq!(described, "credentials[0].slot: wrong type or value");
        assert_eq!(
            describe_data_error(
                "Failed to deserialize the JSON body into the target type: missing field `uid` at line 1 column 2"
            ),
            ".: missing field `uid` at line 1 column 2"
        );
    }
}
