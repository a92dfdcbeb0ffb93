//! The routers of both listeners, their shared state and middleware.
//!
//! Every route gets: a request id (`x-request-id`, generated unless the client
//! sent a well-formed one), a span logging method, path (never the query string,
//! which may hold codes), status and latency, a body-size limit, a timeout, and
//! hardening headers. On the HDDT listener every route needs a registered client
//! certificate unless it is listed in [`hddt_router`]'s public part.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::Clock;
use medvault_store::Store;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::client_auth::{AllowList, AuthenticatedClient, ClientCertError};
use crate::config::Config;
use crate::listener::ConnectionInfo;
use crate::problem::Problem;

/// What every handler can reach: one shared [`AppServices`] behind an
/// `Arc`, so the per-request clones axum makes cost one reference count.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppServices>);

impl AppState {
    /// Shares `services` with every handler.
    pub fn new(services: AppServices) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

/// The services and settings behind [`AppState`].
#[derive(Debug)]
pub struct AppServices {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The database.
    pub store: Arc<dyn Store>,
    /// The audit trail.
    pub audit: Arc<AuditTrail>,
    /// Registered client certificates.
    pub allow_list: AllowList,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Bounds how many refused requests reach the audit trail one by one.
    pub denial_limiter: Arc<DenialLimiter>,
    /// Participant registration and directory entries.
    pub directory: medvault_accounts::Directory,
    /// Logins, sessions and working credentials.
    pub accounts: medvault_accounts::Accounts,
    /// The participant CA as clients pin it.
    pub ca_info: Arc<medvault_proto::accounts::CaInfo>,
    /// Connections and sealed documents.
    pub exchange: medvault_accounts::Exchange,
    /// The Account App's login and registration requests.
    pub account_app: medvault_accounts::AccountApp,
    /// Identity proofing (Patient Credential).
    pub proofing: medvault_credential::IdentityProofing,
    /// Institutions' credential issuer keys.
    pub issuer_keys: medvault_credential::IssuerKeys,
    /// Issuance, status and status lists of Patient Credentials.
    pub issuer: medvault_credential::CredentialIssuer,
    /// The Patient Credential verifier.
    pub verifier: medvault_credential::CredentialVerifier,
    /// IAL2 logins by presentation.
    pub presentations: medvault_credential::PresentationLogin,
    /// The HDDT authorization server.
    pub hddt: medvault_oauth::AuthorizationServer,
    /// The HDDT operational request log.
    pub request_log: Option<Arc<crate::request_log::RequestLog>>,
    /// Per-DiGA request rate on the HDDT listener.
    pub client_limiter: Arc<ClientLimiter>,
    /// Device data: ingestion and the FHIR resource server.
    pub fhir: medvault_fhir::ResourceServer,
    /// Counts of DiGAs' FHIR interactions, flushed to the database.
    pub accesses: Arc<crate::fhir::AccessCounter>,
}

/// A token bucket per authenticated HDDT client (by registered owner): one
/// DiGA cannot crowd out the others. Refills at `rate` per second, holds
/// twice that. Only clients that passed the certificate check get a bucket,
/// so the map is bounded by the allow-list.
#[derive(Debug)]
pub struct ClientLimiter {
    rate: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, time::OffsetDateTime)>>,
}

impl ClientLimiter {
    /// `rate` requests per second per client.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            buckets: std::sync::Mutex::default(),
        }
    }

    /// Whether `client` may make a request at `now`.
    pub fn admit(&self, client: &str, now: time::OffsetDateTime) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let capacity = self.rate * 2.0;
        let (tokens, last) = buckets.entry(client.to_owned()).or_insert((capacity, now));
        let elapsed = (now - *last).as_seconds_f64().max(0.0);
        *tokens = (*tokens + elapsed * self.rate).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A token bucket over audit entries for refused requests.
///
/// HDDT wants unauthorized access attempts in the audit trail, but a client
/// without a certificate must not be able to turn a request flood into a flood of
/// durable, chained writes (disk, and the append lock every audited action
/// shares). Up to `rate` refusals per second are audited one by one; the others
/// are counted, and the next audited refusal carries the count
/// (`suppressed_before`). Every refusal is in the operational log either way.
#[derive(Debug)]
pub struct DenialLimiter {
    rate: f64,
    state: std::sync::Mutex<DenialBucket>,
}

#[derive(Debug)]
struct DenialBucket {
    tokens: f64,
    last: time::OffsetDateTime,
    suppressed: u64,
}

impl DenialLimiter {
    /// A bucket that refills at `rate` per second, starting full.
    pub fn new(rate: u32, now: time::OffsetDateTime) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            state: std::sync::Mutex::new(DenialBucket {
                tokens: rate,
                last: now,
                suppressed: 0,
            }),
        }
    }

    /// How many refusals were counted but not yet written; resets the count.
    pub fn take_suppressed(&self) -> u64 {
        let mut bucket = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut bucket.suppressed)
    }

    /// `Some(n)` when this refusal is to be audited (`n` refusals were only
    /// counted since the last audited one); `None` when it is only counted.
    pub fn admit(&self, now: time::OffsetDateTime) -> Option<u64> {
        let mut bucket = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = (now - bucket.last).as_seconds_f64().max(0.0);
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The patient listener's router, with `extra` routes merged in.
pub fn patient_router(state: AppState, extra: Router<AppState>) -> Router {
    let limited = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status.json", get(crate::fhir::status))
        .merge(crate::api::router())
        .merge(crate::hddt::patient_routes())
        .merge(crate::portal::routes())
        .merge(extra)
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(state.config.body_limit_bytes));
    // Sealed documents are larger than any other body: their route alone
    // takes up to the document limit (base64 adds a third) plus the envelope.
    let documents = crate::api::document_router().layer(RequestBodyLimitLayer::new(
        document_upload_limit(state.config.max_document_bytes),
    ));
    // Reading uploads take up to their own limit.
    let uploads = crate::api::devices::upload_routes()
        .layer(RequestBodyLimitLayer::new(state.config.max_upload_bytes));
    common_layers(limited.merge(documents).merge(uploads), &state.config).with_state(state)
}

/// The largest body of a document upload: the base64 of the largest sealed
/// body, plus room for the recipients' keys, header and signature.
pub fn document_upload_limit(max_document_bytes: usize) -> usize {
    max_document_bytes
        .saturating_add(max_document_bytes.div_ceil(3))
        .saturating_add(64 * 1024)
}

/// The HDDT (mTLS) listener's router.
pub fn hddt_router(state: AppState) -> Router {
    // Routes that need no client certificate: liveness, readiness, the RFC 8414
    // metadata and /fhir/metadata.
    let public = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(crate::hddt::public_routes())
        .merge(crate::fhir::public_routes())
        .layer(RequestBodyLimitLayer::new(state.config.body_limit_bytes));
    // Everything else, including unknown paths, needs a registered certificate.
    let protected = Router::new()
        .route("/client-certificate", get(client_certificate))
        .merge(crate::hddt::oauth_routes())
        .merge(crate::fhir::routes())
        .fallback(crate::fhir::not_found)
        .layer(RequestBodyLimitLayer::new(state.config.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_client_certificate,
        ));
    let logged = public
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), log_request));
    common_layers(logged, &state.config).with_state(state)
}

/// Who the request log names as the partner (the registered owner).
#[derive(Debug, Clone)]
struct Partner(String);

/// Writes every HDDT request and response to the operational request log.
async fn log_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(log) = state.request_log.clone() else {
        return next.run(request).await;
    };
    let started = tokio::time::Instant::now();
    let timestamp = state.clock.now();
    let method = request.method().as_str().to_owned();
    let path: String = request.uri().path().chars().take(200).collect();
    let transaction_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let response = next.run(request).await;
    let note = response
        .extensions()
        .get::<crate::request_log::LogNote>()
        .cloned()
        .unwrap_or_default();
    let partner_id = response
        .extensions()
        .get::<Partner>()
        .map_or_else(|| "-".to_owned(), |partner| partner.0.clone());
    let data_volume_bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .or_else(|| axum::body::HttpBody::size_hint(response.body()).exact())
        .unwrap_or(0);
    let record = crate::request_log::RequestRecord {
        timestamp,
        transaction_id,
        event_type: crate::request_log::event_type(&method, &path),
        message: format!("{method} {path}"),
        interface_id: path,
        partner_id,
        status: response.status().as_u16(),
        response_time_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        data_volume_bytes,
        note,
    };
    if let Err(error) = log.append(&record) {
        tracing::error!(%error, "could not write the request log");
    }
    response
}

fn common_layers(router: Router<AppState>, config: &Config) -> Router<AppState> {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        })
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO));
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(sanitize_request_id))
            .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
            .layer(trace)
            .layer(SetResponseHeaderLayer::overriding(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ))
            .layer(middleware::from_fn(problem_for_bare_errors))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                config.request_timeout,
            )),
    )
}

/// Drops a client-sent request id that is not a short token, so log lines cannot
/// be forged or flooded through it; a fresh one is generated instead.
async fn sanitize_request_id(mut request: Request, next: Next) -> Response {
    let acceptable = request.headers().get(&REQUEST_ID).is_some_and(|value| {
        let bytes = value.as_bytes();
        (1..=64).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    });
    if !acceptable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

/// Turns the plain-text responses of the limit and timeout layers into problem+json.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large").into_response()
        }
        StatusCode::REQUEST_TIMEOUT => {
            Problem::new(StatusCode::REQUEST_TIMEOUT, "Request took too long").into_response()
        }
        _ => response,
    }
}

/// The per-request mTLS check of the HDDT listener.
async fn require_client_certificate(
    State(state): State<AppState>,
    ConnectInfo(connection): ConnectInfo<ConnectionInfo>,
    mut request: Request,
    next: Next,
) -> Response {
    match state
        .allow_list
        .authenticate(connection.client_certificate.as_ref())
    {
        Ok(client) => {
            let partner = Partner(client.owner.clone());
            if !state.client_limiter.admit(&client.owner, state.clock.now()) {
                let oauth = matches!(request.uri().path(), "/par" | "/token" | "/revoke");
                let mut response = if oauth {
                    crate::hddt::oauth_error(&medvault_oauth::OAuthError::rate_limited())
                } else if request.uri().path().starts_with("/fhir") {
                    crate::fhir::outcome(
                        StatusCode::TOO_MANY_REQUESTS,
                        crate::fhir::Format::Json,
                        "throttled",
                        "This client's request rate is limited; see Retry-After",
                    )
                } else {
                    Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests")
                        .with_detail("this client's request rate is limited; see Retry-After")
                        .into_response()
                };
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response.extensions_mut().insert(partner);
                return response;
            }
            request.extensions_mut().insert(client);
            let mut response = next.run(request).await;
            response.extensions_mut().insert(partner);
            response
        }
        Err(error) => {
            let fingerprint = connection
                .client_certificate
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| c.fingerprint.to_hex());
            tracing::info!(reason = %error, %fingerprint, "request refused: client certificate");
            let request_id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let path: String = request.uri().path().chars().take(200).collect();
            let oauth_endpoint = matches!(path.as_str(), "/par" | "/token" | "/revoke");
            let fhir_endpoint = path == "/fhir" || path.starts_with("/fhir/");
            // A certificate-less request costs an attacker nothing: those are
            // rate-bounded. A refused certificate got through the handshake (an
            // open or resumed connection of a removed or expired one): always audited.
            let admitted = match error {
                ClientCertError::Missing => state.denial_limiter.admit(state.clock.now()),
                _ => Some(0),
            };
            let detail = admitted.map(|suppressed_before| {
                AuditDetail::new()
                    .with("reason", error.to_string())
                    .and_then(|d| d.with("path", path))
                    .and_then(|d| d.with("request_id", request_id))
                    .and_then(|d| d.with("suppressed_before", suppressed_before))
            });
            if let Some(Ok(detail)) = detail {
                let event = AuditEvent::new(
                    format!("cert:{fingerprint}"),
                    "-",
                    "mtls.access_denied",
                    Outcome::Denied,
                )
                .with_detail(detail);
                if let Err(audit_error) = state.audit.append(event).await {
                    tracing::error!(%audit_error, "could not audit a refused request");
                }
            }
            if oauth_endpoint {
                // The OAuth endpoints answer in RFC 6749's format.
                return crate::hddt::oauth_error(
                    &if matches!(error, ClientCertError::StaleAllowList) {
                        medvault_oauth::OAuthError::registry_unavailable()
                    } else {
                        medvault_oauth::OAuthError::unregistered_client()
                    },
                );
            }
            if fhir_endpoint {
                // The FHIR API answers with OperationOutcomes, and an HDDT
                // resource server never uses 403 (digest §4): a missing,
                // unregistered or removed DiGA certificate is 401.
                let query: Vec<(String, String)> = request
                    .uri()
                    .query()
                    .map(|query| {
                        url::form_urlencoded::parse(query.as_bytes())
                            .into_owned()
                            .collect()
                    })
                    .unwrap_or_default();
                let format = crate::fhir::negotiate(request.headers(), &query)
                    .unwrap_or(crate::fhir::Format::Json);
                return if matches!(error, ClientCertError::StaleAllowList) {
                    crate::fhir::outcome(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format,
                        "transient",
                        "The DiGA registry cannot be read at the moment; try again later",
                    )
                } else {
                    crate::fhir::outcome(
                        StatusCode::UNAUTHORIZED,
                        format,
                        "login",
                        "A client certificate registered for a DiGA in the DiGA-VZ is required (mTLS)",
                    )
                };
            }
            let status = match error {
                ClientCertError::Missing => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            Problem::new(status, "Client certificate refused")
                .with_detail(error.to_string())
                .into_response()
        }
    }
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
}

/// Liveness: the process answers.
async fn health() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// Readiness: the database answers within two seconds.
async fn ready(State(state): State<AppState>) -> Response {
    let ping = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(())) => Json(HealthBody { status: "ready" }).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable").into_response()
        }
        Err(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable")
            .with_detail("the database did not answer in time")
            .into_response(),
    }
}

#[derive(Serialize)]
struct ClientCertificateBody {
    fingerprint_sha256: String,
    subject: String,
    not_before: String,
    not_after: String,
    registered_for: String,
}

/// Shows a DiGA backend how the server sees its certificate (integration aid).
async fn client_certificate(Extension(client): Extension<AuthenticatedClient>) -> Response {
    let format = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    Json(ClientCertificateBody {
        fingerprint_sha256: client.certificate.fingerprint.to_hex(),
        subject: client.certificate.subject.clone(),
        not_before: format(client.certificate.not_before),
        not_after: format(client.certificate.not_after),
        registered_for: client.owner,
    })
    .into_response()
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "Not found")
}
