//! The FHIR R4 resource server's HTTP side (HDDT listener, base `/fhir`):
//! content negotiation (JSON and XML, 406/415), the access check of every
//! request (token, certificate, live grant), the handlers, and errors as
//! OperationOutcomes with the guide's texts.
//!
//! `/fhir/metadata` is public; everything else sits behind the listener's
//! per-route certificate check and then needs a valid access token issued
//! to the same DiGA.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use medvault_audit::{AuditDetail, AuditEvent, Outcome};
use medvault_fhir::resources::{Severity, operation_outcome};
use medvault_fhir::service::reader_of;
use medvault_fhir::{FhirError, Reader};
use medvault_oauth::AccessError;
use serde_json::Value;

use crate::app::AppState;
use crate::client_auth::AuthenticatedClient;
use crate::request_log::LogNote;

/// Counts of successful FHIR interactions per pairing, day and interaction,
/// kept in memory and written to the database every few seconds and at
/// shutdown (the patient's "who read what, when" on every node; the request
/// log has each request on its own node). A count is lost only if the
/// process dies between two flushes.
#[derive(Debug, Default)]
pub struct AccessCounter {
    counts: std::sync::Mutex<std::collections::HashMap<AccessKey, (i64, time::OffsetDateTime)>>,
}

/// Pairing ID, UTC day, interaction.
type AccessKey = (String, String, String);

/// The most distinct counters kept between flushes (then flushed early).
const MAX_COUNTERS: usize = 100_000;

impl AccessCounter {
    /// Counts one use of `interaction` by `pairing_id` at `at`; `true` when
    /// the counter is full and should be flushed now.
    pub fn count(&self, pairing_id: &str, interaction: &str, at: time::OffsetDateTime) -> bool {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let day = at.date().to_string();
        let entry = counts
            .entry((pairing_id.to_owned(), day, interaction.to_owned()))
            .or_insert((0, at));
        entry.0 += 1;
        entry.1 = entry.1.max(at);
        counts.len() >= MAX_COUNTERS
    }

    /// Writes the counts to the database (kept for the next try if that fails).
    pub async fn flush(
        &self,
        store: &dyn medvault_store::Store,
    ) -> Result<(), medvault_store::StoreError> {
        let taken = std::mem::take(
            &mut *self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if taken.is_empty() {
            return Ok(());
        }
        let rows: Vec<medvault_store::AccessCountV1> = taken
            .iter()
            .map(|((pairing_id, day, interaction), (count, last_at))| {
                medvault_store::AccessCountV1 {
                    pairing_id: pairing_id.clone(),
                    day: day.clone(),
                    interaction: interaction.clone(),
                    count: *count,
                    last_at: *last_at,
                }
            })
            .collect();
        if let Err(error) = store.record_accesses(&rows).await {
            let mut counts = self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (key, (count, last_at)) in taken {
                let entry = counts.entry(key).or_insert((0, last_at));
                entry.0 += count;
                entry.1 = entry.1.max(last_at);
            }
            return Err(error);
        }
        Ok(())
    }
}

/// A response body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/fhir+json`.
    Json,
    /// `application/fhir+xml`.
    Xml,
}

/// Public FHIR routes (no client certificate).
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/status.json", get(status))
}

/// The public status feed (on both listeners): up, maintenance or retired.
pub async fn status(State(state): State<AppState>) -> Response {
    let retired = state.hddt.is_retired().await;
    let maintenance = state.fhir.maintenance().await;
    let (Ok(retired), Ok(maintenance)) = (retired, maintenance) else {
        return unavailable(Format::Json);
    };
    let status = if retired {
        "retired"
    } else if maintenance.is_some() {
        "maintenance"
    } else {
        "up"
    };
    let body = medvault_fhir::status::ServiceStatus {
        status: status.to_owned(),
        maintenance,
        fhir_version: "4.0.1".to_owned(),
        checked_at: medvault_fhir::resources::instant(state.clock.now()),
    };
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// 410 once HDDT is retired, 503 with the maintenance header during
/// maintenance; `None` when the API is open.
async fn closed(state: &AppState, format: Format) -> Option<Response> {
    match state.hddt.is_retired().await {
        Ok(true) => {
            return Some(outcome(
                StatusCode::GONE,
                format,
                "not-supported",
                "HDDT is no longer supported by this Device Data Recorder (hddt_not_supported)",
            ));
        }
        Ok(false) => {}
        Err(_) => return Some(unavailable(format)),
    }
    match state.fhir.maintenance().await {
        Ok(None) => None,
        Ok(Some(window)) => {
            let mut response = outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                format,
                "transient",
                "Planned maintenance: the service is back soon (see Retry-After)",
            );
            let headers = response.headers_mut();
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(window.retry_after_secs),
            );
            headers.insert(
                medvault_fhir::status::MAINTENANCE_HEADER,
                HeaderValue::from_static("planned"),
            );
            Some(response)
        }
        Err(_) => Some(unavailable(format)),
    }
}

/// FHIR routes behind the certificate check.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/fhir/{kind}", get(search_get).post(operation_on_type))
        .route("/fhir/{kind}/_search", post(search_post))
        .route("/fhir/{kind}/{id}", get(read).post(operation))
        .route("/fhir/{kind}/{id}/_history/{version}", get(vread))
        .method_not_allowed_fallback(method_not_allowed)
}

/// Create, update, patch, delete and the like: 405 with an OperationOutcome
/// (the API is read-only for DiGAs).
async fn method_not_allowed(headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let format = negotiate(&headers, &query_pairs(query.as_deref())).unwrap_or(Format::Json);
    read_only(format)
}

fn read_only(format: Format) -> Response {
    let mut response = outcome(
        StatusCode::METHOD_NOT_ALLOWED,
        format,
        "not-supported",
        "The FHIR API of this Device Data Recorder is read-only: read, vread, search and $hddt-cgm-summary",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    response
}

/// The resource types served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Observation,
    Device,
    DeviceMetric,
}

impl Kind {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "Observation" => Some(Self::Observation),
            "Device" => Some(Self::Device),
            "DeviceMetric" => Some(Self::DeviceMetric),
            _ => None,
        }
    }
}

fn media_format(media: &str) -> Option<Format> {
    match media {
        "application/fhir+json" | "application/json" | "json" | "application/*" | "*/*" => {
            Some(Format::Json)
        }
        "application/fhir+xml" | "application/xml" | "text/xml" | "xml" => Some(Format::Xml),
        _ => None,
    }
}

/// The format the client asked for (`_format` wins over `Accept`); `None`
/// when none is supported (406), including another `fhirVersion`.
pub fn negotiate(headers: &HeaderMap, parameters: &[(String, String)]) -> Option<Format> {
    if let Some((_, format)) = parameters.iter().find(|(name, _)| name == "_format") {
        return media_format(format.trim());
    }
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Some(Format::Json);
    };
    let accept = accept.to_str().ok()?;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut version_ok = true;
        for parameter in parts {
            if let Some((name, value)) = parameter.split_once('=')
                && name.trim().eq_ignore_ascii_case("fhirVersion")
            {
                version_ok = value.trim().trim_matches('"') == "4.0";
            }
        }
        if version_ok && let Some(format) = media_format(&media) {
            return Some(format);
        }
    }
    None
}

/// A FHIR resource in the negotiated format.
pub fn resource_response(status: StatusCode, format: Format, resource: &Value) -> Response {
    let (content_type, body) = match format {
        Format::Json => (
            "application/fhir+json; fhirVersion=4.0; charset=utf-8",
            serde_json::to_vec(resource).unwrap_or_default(),
        ),
        Format::Xml => (
            "application/fhir+xml; fhirVersion=4.0; charset=utf-8",
            medvault_fhir::xml::to_xml(resource).into_bytes(),
        ),
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An OperationOutcome error with its request-log note.
pub fn outcome(status: StatusCode, format: Format, code: &str, diagnostics: &str) -> Response {
    let severity = if status.is_server_error() {
        Severity::Fatal
    } else {
        Severity::Error
    };
    let mut response = resource_response(
        status,
        format,
        &operation_outcome(severity, code, diagnostics),
    );
    response.extensions_mut().insert(LogNote {
        error_code: Some(code.to_owned()),
        error_description: Some(diagnostics.to_owned()),
        pairing_id: None,
    });
    response
}

/// An OperationOutcome with an `operation-outcome` code (the CGM summary's).
fn coded(
    status: StatusCode,
    format: Format,
    severity: Severity,
    code: &str,
    message: &str,
    text: &str,
) -> Response {
    let mut response = resource_response(
        status,
        format,
        &medvault_fhir::resources::operation_outcome_coded(severity, code, message, text),
    );
    response.extensions_mut().insert(LogNote {
        error_code: Some(message.to_owned()),
        error_description: Some(text.to_owned()),
        pairing_id: None,
    });
    response
}

fn not_acceptable() -> Response {
    outcome(
        StatusCode::NOT_ACCEPTABLE,
        Format::Json,
        "not-supported",
        "Only FHIR 4.0 JSON and XML are supported",
    )
}

fn fhir_error(error: &FhirError, format: Format) -> Response {
    match error {
        FhirError::NotKnown(_) | FhirError::VersionNotValid(..) => outcome(
            StatusCode::NOT_FOUND,
            format,
            "not-found",
            &error.to_string(),
        ),
        FhirError::Invalid(text) => outcome(StatusCode::BAD_REQUEST, format, "invalid", text),
        FhirError::Operation(message, text) => coded(
            StatusCode::BAD_REQUEST,
            format,
            Severity::Error,
            "invalid",
            message,
            text,
        ),
        FhirError::NoMatch(text) => coded(
            StatusCode::OK,
            format,
            Severity::Information,
            "not-found",
            "MSG_NO_MATCH",
            text,
        ),
        FhirError::Unavailable => unavailable(format),
    }
}

fn unavailable(format: Format) -> Response {
    let mut response = outcome(
        StatusCode::SERVICE_UNAVAILABLE,
        format,
        "transient",
        "The service is temporarily unavailable",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    response
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The access check of every protected FHIR request.
async fn access(
    state: &AppState,
    headers: &HeaderMap,
    client: &AuthenticatedClient,
    path: &str,
    format: Format,
) -> Result<(Reader, String), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty() && token.len() <= 4096);
    let result = match token {
        None => Err(AccessError::NotSigned),
        Some(token) => {
            state
                .hddt
                .validate_access(token, &client.certificate.der)
                .await
        }
    };
    match result {
        Ok(context) => {
            let reader = reader_of(&context.patient_uid, &context.scopes);
            Ok((reader, context.claims.sub))
        }
        Err(AccessError::Unavailable) => Err(unavailable(format)),
        Err(error) => {
            audit_denied(state, client, path, &error).await;
            let description = if token.is_none() {
                "Token is not a signed JWT".to_owned()
            } else {
                error.to_string()
            };
            let mut response = outcome(StatusCode::UNAUTHORIZED, format, "login", &description);
            let challenge =
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            Err(response)
        }
    }
}

/// Unauthorized access attempts go to the audit trail (no personal data:
/// the DiGA, the reason, the path), rate-bounded like refused certificates.
async fn audit_denied(
    state: &AppState,
    client: &AuthenticatedClient,
    path: &str,
    error: &AccessError,
) {
    let Some(suppressed_before) = state.denial_limiter.admit(state.clock.now()) else {
        return;
    };
    let path: String = path.chars().take(200).collect();
    let detail = AuditDetail::new()
        .with("reason", error.to_string())
        .and_then(|d| d.with("path", path))
        .and_then(|d| d.with("suppressed_before", suppressed_before));
    let Ok(detail) = detail else { return };
    let owner: String = client.owner.chars().take(64).collect();
    let event =
        AuditEvent::new(owner, "-", "hddt.access_denied", Outcome::Denied).with_detail(detail);
    if let Err(error) = state.audit.append(event).await {
        tracing::error!(%error, "could not audit a refused FHIR request");
    }
}

fn with_pairing(mut response: Response, pairing_id: String) -> Response {
    let mut note = response
        .extensions()
        .get::<LogNote>()
        .cloned()
        .unwrap_or_default();
    note.pairing_id = Some(pairing_id);
    response.extensions_mut().insert(note);
    response
}

async fn metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let parameters = query_pairs(query.as_deref());
    let Some(format) = negotiate(&headers, &parameters) else {
        return not_acceptable();
    };
    let statement = medvault_fhir::capability::capability_statement(
        state.fhir.policy().base_url.as_str(),
        env!("CARGO_PKG_VERSION"),
        true,
    );
    resource_response(StatusCode::OK, format, &statement)
}

/// What a protected handler does once the request is authorized.
enum Action<'a> {
    Read(Kind, &'a str, Option<&'a str>),
    Search(Kind),
    CgmSummary(&'a [u8]),
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    client: &AuthenticatedClient,
    path: &str,
    parameters: Vec<(String, String)>,
    action: Action<'_>,
) -> Response {
    let Some(format) = negotiate(headers, &parameters) else {
        return not_acceptable();
    };
    if let Some(response) = closed(state, format).await {
        return response;
    }
    let (reader, pairing_id) = match access(state, headers, client, path, format).await {
        Ok(granted) => granted,
        Err(response) => return response,
    };
    let result = match action {
        Action::Read(Kind::Observation, id, version) => {
            state.fhir.read_observation(&reader, id, version).await
        }
        Action::Read(kind, id, version) => {
            state
                .fhir
                .read_device(&reader, id, kind == Kind::DeviceMetric, version)
                .await
        }
        Action::Search(Kind::Observation) => {
            state.fhir.search_observations(&reader, &parameters).await
        }
        Action::Search(kind) => {
            state
                .fhir
                .search_devices(&reader, &parameters, kind == Kind::DeviceMetric)
                .await
        }
        Action::CgmSummary(body) => state.fhir.cgm_summary(&reader, &pairing_id, body).await,
    };
    let response = match result {
        Ok(resource) => {
            let method = if path.ends_with("_search") || path.contains('$') {
                "POST"
            } else {
                "GET"
            };
            if state
                .accesses
                .count(&pairing_id, &format!("{method} {path}"), state.clock.now())
                && let Err(error) = state.accesses.flush(&*state.store).await
            {
                tracing::warn!(%error, "could not write the access counts");
            }
            resource_response(StatusCode::OK, format, &resource)
        }
        Err(error) => fhir_error(&error, format),
    };
    with_pairing(response, pairing_id)
}

/// The parameters of a POST `_search` (query and form body); `None` for a
/// body that is not a form.
fn form_parameters(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &Bytes,
) -> Option<Vec<(String, String)>> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.split(';').next().is_some_and(|media| {
                media
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form {
        return None;
    }
    let mut parameters = query_pairs(query);
    parameters
        .extend(url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    Some(parameters)
}

/// 415 for a POST `_search` whose body is not a form.
fn not_a_form(headers: &HeaderMap, query: Option<&str>) -> Response {
    let format = negotiate(headers, &query_pairs(query)).unwrap_or(Format::Json);
    outcome(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format,
        "not-supported",
        "A search by POST takes an application/x-www-form-urlencoded body",
    )
}

async fn search_get(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Path(kind): Path<String>,
) -> Response {
    let Some(kind) = Kind::parse(&kind) else {
        return type_not_supported(&headers, &kind);
    };
    let parameters = query_pairs(query.as_deref());
    let path = format!("/fhir/{kind:?}");
    handle(
        &state,
        &headers,
        &client,
        &path,
        parameters,
        Action::Search(kind),
    )
    .await
}

async fn search_post(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Path(kind): Path<String>,
    body: Bytes,
) -> Response {
    let Some(kind) = Kind::parse(&kind) else {
        return type_not_supported(&headers, &kind);
    };
    let Some(parameters) = form_parameters(&headers, query.as_deref(), &body) else {
        return not_a_form(&headers, query.as_deref());
    };
    let path = format!("/fhir/{kind:?}/_search");
    handle(
        &state,
        &headers,
        &client,
        &path,
        parameters,
        Action::Search(kind),
    )
    .await
}

async fn read(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let Some(kind) = Kind::parse(&kind) else {
        return type_not_supported(&headers, &kind);
    };
    let parameters = query_pairs(query.as_deref());
    let path = format!("/fhir/{kind:?}/{{id}}");
    handle(
        &state,
        &headers,
        &client,
        &path,
        parameters,
        Action::Read(kind, &id, None),
    )
    .await
}

async fn vread(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Path((kind, id, version)): Path<(String, String, String)>,
) -> Response {
    let Some(kind) = Kind::parse(&kind) else {
        return type_not_supported(&headers, &kind);
    };
    let parameters = query_pairs(query.as_deref());
    let path = format!("/fhir/{kind:?}/{{id}}/_history/{{version}}");
    let action = Action::Read(kind, &id, Some(&version));
    handle(&state, &headers, &client, &path, parameters, action).await
}

async fn operation_on_type(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Path(kind): Path<String>,
    body: Bytes,
) -> Response {
    // The guide also writes the operation without a slash.
    match kind.split_once('$') {
        Some((kind, name)) => {
            let operation = format!("${name}");
            run_operation(
                &state,
                &client,
                &headers,
                query.as_deref(),
                kind,
                &operation,
                &body,
            )
            .await
        }
        // A create on a served type.
        None if Kind::parse(&kind).is_some() => {
            read_only(negotiate(&headers, &query_pairs(query.as_deref())).unwrap_or(Format::Json))
        }
        None => type_not_supported(&headers, &kind),
    }
}

async fn operation(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Path((kind, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    run_operation(
        &state,
        &client,
        &headers,
        query.as_deref(),
        &kind,
        &name,
        &body,
    )
    .await
}

/// Type-level operations; only `Observation/$hddt-cgm-summary` exists.
async fn run_operation(
    state: &AppState,
    client: &AuthenticatedClient,
    headers: &HeaderMap,
    query: Option<&str>,
    kind: &str,
    name: &str,
    body: &Bytes,
) -> Response {
    let parameters = query_pairs(query);
    if !name.starts_with('$') && Kind::parse(kind).is_some() {
        // A POST to a resource (an update in disguise), not an operation.
        return read_only(negotiate(headers, &parameters).unwrap_or(Format::Json));
    }
    if kind != "Observation" || name != "$hddt-cgm-summary" {
        let format = negotiate(headers, &parameters).unwrap_or(Format::Json);
        return outcome(
            StatusCode::NOT_FOUND,
            format,
            "not-supported",
            &format!(
                "Operation {}/{} is not supported",
                medvault_fhir::search::quote(kind),
                medvault_fhir::search::quote(name)
            ),
        );
    }
    let json_body = body.is_empty()
        || headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| {
                matches!(
                    media.trim().to_ascii_lowercase().as_str(),
                    "application/fhir+json" | "application/json"
                )
            });
    if !json_body {
        let format = negotiate(headers, &parameters).unwrap_or(Format::Json);
        return outcome(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format,
            "not-supported",
            "The operation takes a Parameters resource as application/fhir+json",
        );
    }
    if body.len() > medvault_fhir::service::MAX_PARAMETERS_BYTES {
        let format = negotiate(headers, &parameters).unwrap_or(Format::Json);
        return coded(
            StatusCode::BAD_REQUEST,
            format,
            Severity::Error,
            "invalid",
            "MSG_BAD_SYNTAX",
            "The Parameters body is too large",
        );
    }
    let path = "/fhir/Observation/$hddt-cgm-summary";
    handle(
        state,
        headers,
        client,
        path,
        parameters,
        Action::CgmSummary(body),
    )
    .await
}

/// The HDDT listener's answer to an unknown path: an OperationOutcome
/// under `/fhir`, problem+json elsewhere.
pub async fn not_found(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    match uri.path().strip_prefix("/fhir/") {
        Some(rest) => type_not_supported(&headers, rest.split('/').next().unwrap_or("")),
        None => crate::problem::Problem::new(StatusCode::NOT_FOUND, "Not found").into_response(),
    }
}

fn type_not_supported(headers: &HeaderMap, kind: &str) -> Response {
    let format = negotiate(headers, &[]).unwrap_or(Format::Json);
    let kind: String = kind.chars().take(64).collect();
    outcome(
        StatusCode::NOT_FOUND,
        format,
        "not-supported",
        &format!(
            "Resource type {} is not supported",
            medvault_fhir::search::quote(&kind)
        ),
    )
}
