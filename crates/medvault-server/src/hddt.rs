//! HDDT over HTTP: the authorization server's endpoints on the HDDT listener
//! (`/.well-known/oauth-authorization-server` public; `/par`, `/token`,
//! `/revoke` behind mTLS, answering RFC 6749 JSON errors), the consent pages
//! on the patient listener (`/authorize`, server-rendered, no JavaScript),
//! the patient's API (`/api/v1/hddt/...`: login tickets, pairings), and the
//! DiGA-VZ refresh duty (file source, installed into the trust cache and
//! synchronised into the mTLS allow-list).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use medvault_core::Miv;
use medvault_oauth::{
    ConsentView, Decision, DigaRegistry, OAuthError, PageError, authorization_server_metadata,
};
use serde::Deserialize;
use tokio::sync::watch;

use crate::api::{BearerSession, rfc3339, store_error};
use crate::app::AppState;
use crate::client_auth::AuthenticatedClient;
use crate::html::escape;
use crate::problem::Problem;

/// The largest OAuth form body read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Public routes of the HDDT listener.
pub fn public_routes() -> Router<AppState> {
    Router::new().route("/.well-known/oauth-authorization-server", get(metadata))
}

/// mTLS routes of the HDDT listener.
pub fn oauth_routes() -> Router<AppState> {
    Router::new()
        .route("/par", post(par))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
}

/// The consent pages and the patient's HDDT API (patient listener).
pub fn patient_routes() -> Router<AppState> {
    Router::new()
        .route("/docs/hddt", get(integration_guide))
        .route("/authorize", get(authorize))
        .route("/authorize/login", post(authorize_login))
        .route("/authorize/decision", post(authorize_decision))
        .route("/api/v1/hddt/tickets", post(issue_ticket))
        .route("/api/v1/hddt/pairings", get(pairings))
        .route("/api/v1/hddt/pairings/{pairing_id}", delete(unpair))
        .route("/api/v1/hddt/pairings/{pairing_id}/renew", post(renew))
}

/// An OAuth error as RFC 6749 JSON.
pub fn oauth_error(error: &OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, error.to_json()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .extensions_mut()
        .insert(crate::request_log::LogNote {
            error_code: Some(error.error.to_owned()),
            error_description: Some(error.error_description.clone()),
            pairing_id: None,
        });
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    response
}

/// The integration guide the metadata names as `service_documentation`.
const INTEGRATION_GUIDE: &str = include_str!("../../../docs/hddt-integration.md");

async fn integration_guide() -> Response {
    let mut response = INTEGRATION_GUIDE.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/markdown; charset=utf-8"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

fn endpoints(state: &AppState) -> medvault_oauth::Endpoints {
    let public = state.config.public_base_url.as_str().trim_end_matches('/');
    medvault_oauth::Endpoints {
        issuer: state
            .config
            .oauth_issuer
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
        authorization_endpoint: format!("{public}/authorize"),
        service_documentation: format!("{public}/docs/hddt"),
    }
}

async fn metadata(State(state): State<AppState>) -> Response {
    Json(authorization_server_metadata(
        &endpoints(&state),
        &state.config.value_set_base,
    ))
    .into_response()
}

/// Reads an `application/x-www-form-urlencoded` body into pairs.
fn read_form(headers: &HeaderMap, body: &Bytes) -> Result<Vec<(String, String)>, OAuthError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.split(';').next().is_some_and(|media| {
                media
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form_type {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    if body.len() > MAX_FORM_BYTES {
        return Err(OAuthError::invalid_request("the body is too large"));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .take(medvault_oauth::MAX_PARAMETERS + 1)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    Ok(pairs)
}

async fn par(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match read_form(&headers, &body) {
        Ok(form) => form,
        Err(error) => return oauth_error(&error),
    };
    match state.hddt.push(&form, &client.certificate.der).await {
        Ok(pushed) => (StatusCode::CREATED, Json(pushed)).into_response(),
        Err(error) => oauth_error(&error),
    }
}

async fn token(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match read_form(&headers, &body) {
        Ok(form) => form,
        Err(error) => return oauth_error(&error),
    };
    match state.hddt.token(&form, &client.certificate.der).await {
        Ok(tokens) => {
            let note = crate::request_log::LogNote {
                pairing_id: Some(tokens.sub.clone()),
                ..crate::request_log::LogNote::default()
            };
            let mut response = Json(tokens).into_response();
            response.extensions_mut().insert(note);
            response
                .headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => oauth_error(&error),
    }
}

async fn revoke(
    State(state): State<AppState>,
    Extension(client): Extension<AuthenticatedClient>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match read_form(&headers, &body) {
        Ok(form) => form,
        Err(error) => return oauth_error(&error),
    };
    match state.hddt.revoke(&form, &client.certificate.der).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => oauth_error(&error),
    }
}

/// A consent page (its forms post to this origin).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    crate::html::page(status, title, body, false, crate::html::Forms::SameOrigin)
}

fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

fn page_error(error: &PageError) -> Response {
    let (status, german) = match error {
        PageError::InvalidRequest => (
            StatusCode::BAD_REQUEST,
            "Diese Anfrage ist unbekannt, schon verwendet oder abgelaufen. Starten Sie die Verbindung in der DiGA neu.",
        ),
        PageError::LoginFailed => (
            StatusCode::UNAUTHORIZED,
            "Das Anmeldeticket wurde nicht angenommen (falsch, verbraucht oder abgelaufen).",
        ),
        PageError::BadDecision(_) => (StatusCode::BAD_REQUEST, "Die Auswahl ist unvollständig."),
        PageError::Unregistered => (
            StatusCode::FORBIDDEN,
            "Die DiGA ist im DiGA-Verzeichnis nicht (mehr) aktiv gelistet.",
        ),
        PageError::Retired => (
            StatusCode::GONE,
            "Dieser Dienst unterstützt HDDT nicht mehr.",
        ),
        PageError::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Ein interner Fehler ist aufgetreten.",
        ),
    };
    page(
        status,
        "Anfrage abgelehnt / Request refused",
        &format!(
            "<p lang=\"de\">{}</p><p lang=\"en\">{}</p>",
            escape(german),
            escape(&error.to_string())
        ),
    )
}

fn miv_names(miv: Miv) -> (&'static str, &'static str) {
    match miv {
        Miv::BloodGlucose => ("Blutzucker-Messwerte", "blood glucose readings"),
        Miv::ContinuousGlucose => (
            "kontinuierliche Glukosemessung (CGM)",
            "continuous glucose monitoring (CGM)",
        ),
        Miv::BloodPressure => ("Blutdruck", "blood pressure"),
        Miv::LungFunction => ("Lungenfunktion", "lung function"),
    }
}

fn consent_page(view: &ConsentView, notice: Option<&str>) -> Response {
    let hidden = format!(
        "<input type=\"hidden\" name=\"request_uri\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(&view.request_uri),
        escape(&view.csrf)
    );
    let mut body = String::new();
    if let Some(notice) = notice {
        body.push_str(&format!(
            "<p role=\"alert\"><strong>{}</strong></p>",
            escape(notice)
        ));
    }
    body.push_str(&format!(
        "<p lang=\"de\">Die DiGA <strong>{name}</strong> ({id}) möchte Daten Ihrer Messgeräte lesen.</p>\
         <p lang=\"en\">The DiGA <strong>{name}</strong> ({id}) asks to read data from your devices.</p>\
         <p lang=\"de\">Die DiGA erfährt nicht, wer Sie sind: sie erhält nur eine zufällige Kopplungs-ID, keinen Namen, keine E-Mail-Adresse und keine Versichertennummer.</p>\
         <p lang=\"en\">The DiGA will not learn who you are: it receives only a random pairing ID, no name, email address or insurance number.</p>",
        name = escape(&view.diga_name),
        id = escape(&view.client_id),
    ));
    let cap = view.consent_cap.to_string();
    if !view.logged_in {
        body.push_str("<ul>");
        for miv in &view.mivs {
            let (de, en) = miv_names(*miv);
            body.push_str(&format!("<li>{de} / {en}</li>"));
        }
        body.push_str("</ul>");
        body.push_str(&format!(
            "<form method=\"post\" action=\"/authorize/login\">{hidden}\
             <p lang=\"de\">Melden Sie sich an: Erzeugen Sie in Ihrer medvault-App ein Anmeldeticket (<code>medvault pairing ticket</code>) und geben Sie es hier ein.</p>\
             <p lang=\"en\">Log in: create a login ticket in your medvault app (<code>medvault pairing ticket</code>) and enter it here.</p>\
             <label>Anmeldeticket / Login ticket <input name=\"ticket\" autocomplete=\"off\" required maxlength=\"64\"></label>\
             <button type=\"submit\">Anmelden / Log in</button></form>"
        ));
        return page(StatusCode::OK, "Datenfreigabe / Data sharing", &body);
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/authorize/decision\">{hidden}<fieldset><legend>Welche Daten? / Which data?</legend>"
    ));
    for miv in &view.mivs {
        let (de, en) = miv_names(*miv);
        body.push_str(&format!(
            "<label><input type=\"checkbox\" name=\"miv\" value=\"{}\" checked> {de} / {en}</label><br>",
            miv.value_set_id()
        ));
    }
    if view.devices {
        body.push_str("<p lang=\"de\">Dazu die Angaben der Messgeräte (Typ, Hersteller, Kalibrierung).</p><p lang=\"en\">With the devices' details (type, manufacturer, calibration).</p>");
    }
    body.push_str("</fieldset>");
    match view.prescription_end {
        Some(end) => body.push_str(&format!(
            "<p lang=\"de\">Die Freigabe gilt bis zum Ende der Verordnung, längstens bis {cap}.</p><p lang=\"en\">The consent lasts until the prescription ends, at most until {cap}.</p><input type=\"hidden\" name=\"days\" value=\"\">",
            cap = escape(&end.min(view.consent_cap).to_string())
        )),
        None => body.push_str(&format!(
            "<label>Wie lange? / For how long? <select name=\"days\">\
             <option value=\"30\">30 Tage / days</option><option value=\"90\" selected>90 Tage / days</option>\
             <option value=\"180\">180 Tage / days</option><option value=\"365\">1 Jahr / year</option></select></label>\
             <p>Längstens / at most: {cap}</p>"
        )),
    }
    body.push_str(
        "<p lang=\"de\">Sie können die Freigabe jederzeit in Ihrer medvault-App widerrufen (<code>medvault pairing revoke</code>).</p>\
         <p lang=\"en\">You can revoke the consent at any time in your medvault app (<code>medvault pairing revoke</code>).</p>\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Freigeben / Approve</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\">Ablehnen / Deny</button></form>",
    );
    page(StatusCode::OK, "Datenfreigabe / Data sharing", &body)
}

#[derive(Debug, Deserialize)]
struct AuthorizeQuery {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    request_uri: String,
}

async fn authorize(
    State(state): State<AppState>,
    query: Result<Query<AuthorizeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page_error(&PageError::InvalidRequest);
    };
    if query.client_id.len() > 64 || query.request_uri.len() > 128 {
        return page_error(&PageError::InvalidRequest);
    }
    match state.hddt.open(&query.client_id, &query.request_uri).await {
        Ok(view) => consent_page(&view, None),
        Err(error) => page_error(&error),
    }
}

/// Reads the consent pages' form (same-origin posts of this page).
fn page_form(headers: &HeaderMap, body: &Bytes) -> Option<Vec<(String, String)>> {
    read_form(headers, body).ok()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.as_str())
}

async fn authorize_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(form) = page_form(&headers, &body) else {
        return page_error(&PageError::InvalidRequest);
    };
    let (request_uri, csrf) = (field(&form, "request_uri"), field(&form, "csrf"));
    match state
        .hddt
        .login(request_uri, csrf, field(&form, "ticket"))
        .await
    {
        Ok(view) => consent_page(&view, None),
        // A mistyped ticket: the same page again, to try once more.
        Err(PageError::LoginFailed) => match state.hddt.current_view(request_uri, csrf).await {
            Ok(view) => with_status(
                consent_page(
                    &view,
                    Some(
                        "Das Anmeldeticket wurde nicht angenommen. / The login ticket was not accepted.",
                    ),
                ),
                StatusCode::UNAUTHORIZED,
            ),
            Err(error) => page_error(&error),
        },
        Err(error) => page_error(&error),
    }
}

async fn authorize_decision(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(form) = page_form(&headers, &body) else {
        return page_error(&PageError::InvalidRequest);
    };
    let decision = match field(&form, "decision") {
        "deny" => Decision::Deny,
        "approve" => {
            let mut mivs = Vec::new();
            for (name, value) in &form {
                if name == "miv" {
                    match Miv::from_value_set_id(value) {
                        Some(miv) if !mivs.contains(&miv) => mivs.push(miv),
                        Some(_) => {}
                        None => return page_error(&PageError::BadDecision("unknown data type")),
                    }
                }
            }
            let days = match field(&form, "days") {
                "" => None,
                text => match text.parse::<u32>() {
                    Ok(days) => Some(days),
                    Err(_) => return page_error(&PageError::BadDecision("invalid period")),
                },
            };
            Decision::Approve { mivs, days }
        }
        _ => return page_error(&PageError::BadDecision("approve or deny")),
    };
    match state
        .hddt
        .decide(field(&form, "request_uri"), field(&form, "csrf"), decision)
        .await
    {
        Ok(location) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            response
        }
        Err(error) => page_error(&error),
    }
}

async fn require_patient(state: &AppState, session: &BearerSession) -> Result<String, Response> {
    let uid = session.session.uid.to_string();
    match state.store.participant(&uid).await {
        Ok(Some(row)) if row.kind == "patient" => Ok(uid),
        Ok(_) => {
            Err(Problem::new(StatusCode::FORBIDDEN, "Only patients pair DiGAs").into_response())
        }
        Err(error) => Err(store_error(&error)),
    }
}

async fn issue_ticket(State(state): State<AppState>, session: BearerSession) -> Response {
    let uid = match require_patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    match state.hddt.issue_ticket(&uid).await {
        Ok((ticket, expires_at)) => (
            StatusCode::CREATED,
            Json(medvault_proto::hddt::PairingTicket {
                ticket,
                expires_at: rfc3339(expires_at),
            }),
        )
            .into_response(),
        Err(error) => store_error(&error),
    }
}

async fn pairings(State(state): State<AppState>, session: BearerSession) -> Response {
    let uid = match require_patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    match state.hddt.pairings(&uid).await {
        Ok(views) => Json(
            views
                .into_iter()
                .map(|view| medvault_proto::hddt::PairingView {
                    pairing_id: view.grant.pairing_id,
                    client_id: view.grant.client_id,
                    diga_name: view.diga_name,
                    scope: view.grant.scope,
                    status: view.status.to_owned(),
                    expires_soon: view.expires_soon,
                    consented_at: rfc3339(view.grant.created_at),
                    consent_until: rfc3339(view.grant.consent_until),
                    consent_basis: view.grant.consent_basis,
                    revoked_at: view.grant.revoked_at.map(rfc3339),
                    revoke_reason: view.grant.revoke_reason,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => store_error(&error),
    }
}

async fn unpair(
    State(state): State<AppState>,
    session: BearerSession,
    Path(pairing_id): Path<String>,
) -> Response {
    let uid = match require_patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    if pairing_id.len() != 64 {
        return Problem::new(StatusCode::NOT_FOUND, "No such pairing").into_response();
    }
    match state.hddt.unpair(&uid, &pairing_id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => Problem::new(StatusCode::NOT_FOUND, "No such pairing").into_response(),
        Err(error) => store_error(&error),
    }
}

async fn renew(
    State(state): State<AppState>,
    session: BearerSession,
    Path(pairing_id): Path<String>,
    crate::api::ApiJson(request): crate::api::ApiJson<medvault_proto::hddt::RenewRequest>,
) -> Response {
    let uid = match require_patient(&state, &session).await {
        Ok(uid) => uid,
        Err(response) => return response,
    };
    if !(1..=365).contains(&request.days) {
        return Problem::new(StatusCode::BAD_REQUEST, "Invalid period")
            .with_detail("days must be between 1 and 365")
            .into_response();
    }
    match state.hddt.renew(&uid, &pairing_id, request.days).await {
        Ok(medvault_oauth::Renewal::Renewed(until)) => Json(medvault_proto::hddt::RenewResponse {
            consent_until: rfc3339(until),
        })
        .into_response(),
        Ok(medvault_oauth::Renewal::NoLiveConsent) => {
            Problem::new(StatusCode::NOT_FOUND, "No live consent")
                .with_detail("this pairing has no consent to renew; the DiGA must ask again")
                .into_response()
        }
        Ok(medvault_oauth::Renewal::PrescriptionBound) => {
            Problem::new(StatusCode::CONFLICT, "Consent follows the prescription")
                .with_detail("the DiGA asks again with the new prescription end")
                .into_response()
        }
        Err(error) => store_error(&error),
    }
}

/// Reads the DiGA-VZ file. A missing file is a failed refresh, not an empty
/// registry: a node whose file is missing must not take every DiGA's
/// certificate off the allow-list all nodes share; it refuses HDDT requests
/// itself (fail closed) until the file is there.
pub fn read_registry_file(path: &std::path::Path) -> Result<DigaRegistry, String> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() > medvault_oauth::MAX_REGISTRY_BYTES => {
            Err("the registry file is too large".to_owned())
        }
        Ok(bytes) => DigaRegistry::from_json(&bytes).map_err(|error| error.to_string()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "no DiGA-VZ file at {} (medvault admin diga add creates it)",
            path.display()
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// The most pages read from BfArM's API in one refresh.
const MAX_REGISTRY_PAGES: usize = 100;

/// Reads every page of BfArM's `HealthApp` DeviceDefinitions. Every page
/// must come from the configured host over HTTPS, within 30 s and 16 MiB;
/// any failure fails the whole refresh (the cached copy keeps ageing).
async fn fetch_bfarm_registry(state: &AppState, base: &url::Url) -> Result<DigaRegistry, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true);
    if let Some(path) = &state.config.diga_registry_ca_file {
        let pem = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        builder = builder.tls_certs_merge(roots);
    }
    let client = builder.build().map_err(|error| error.to_string())?;
    let mut next = Some(
        base.join(&format!(
            "DeviceDefinition?_profile={}&_count=100",
            medvault_oauth::HEALTH_APP_PROFILE
        ))
        .map_err(|error| error.to_string())?,
    );
    let mut registry = DigaRegistry::default();
    let now = medvault_core::Clock::now(&*state.clock).unix_timestamp();
    for _ in 0..MAX_REGISTRY_PAGES {
        let Some(url) = next.take() else {
            // An empty answer is far likelier a fault upstream than the end of
            // every DiGA: it is a failed refresh, so nothing is unregistered.
            if registry.entries().next().is_none() {
                return Err(
                    "BfArM listed no DiGA with HDDT trust attributes; the cached registry stays"
                        .to_owned(),
                );
            }
            return Ok(registry);
        };
        if url.scheme() != "https"
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err("a next link leaves the registry's host".to_owned());
        }
        let response = client
            .get(url)
            .header(header::ACCEPT, "application/fhir+json")
            .send()
            .await
            .map_err(|error| format!("registry unreachable: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("registry answered {}", response.status()));
        }
        // Read in chunks, never more than the limit.
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| format!("registry answer: {error}"))?
        {
            if body.len() + chunk.len() > medvault_oauth::MAX_REGISTRY_BYTES {
                return Err("a registry page is too large".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        let page = medvault_oauth::read_bfarm_page(
            &body,
            &mut registry,
            &state.config.value_set_base,
            now,
        )?;
        for reason in &page.skipped {
            tracing::warn!(%reason, "DiGA-VZ entry or certificate left out");
        }
        next = page
            .next
            .map(|link| url::Url::parse(&link).map_err(|_| "a malformed next link".to_owned()))
            .transpose()?;
    }
    Err(format!("more than {MAX_REGISTRY_PAGES} registry pages"))
}

/// Loads the DiGA-VZ, installs it, and makes the mTLS allow-list hold
/// exactly the certificates of its listed DiGAs (owner = `client_id`;
/// certificates of other owners are left alone).
pub async fn refresh_registry(state: &AppState) -> Result<(), String> {
    let registry = match &state.config.diga_registry_url {
        Some(url) => fetch_bfarm_registry(state, url).await?,
        None => read_registry_file(&state.config.diga_registry_file)?,
    };
    let mut wanted: HashMap<medvault_core::CertificateFingerprint, (Vec<u8>, String)> =
        HashMap::new();
    for entry in registry.entries() {
        // Inactive DiGAs keep their certificates at the TLS layer, so that they
        // get the guide's 401 invalid_client instead of a handshake failure.
        for der in &entry.certificates {
            wanted.insert(
                crate::client_auth::fingerprint(der),
                (der.clone(), entry.client_id.to_string()),
            );
        }
    }
    let rows = state
        .store
        .client_certificates()
        .await
        .map_err(|error| error.to_string())?;
    let actor = "registry";
    for row in &rows {
        let Ok(digest) = <[u8; 32]>::try_from(row.fingerprint.as_slice()) else {
            continue;
        };
        let fingerprint = medvault_core::CertificateFingerprint::from_digest(digest);
        let keep = wanted
            .get(&fingerprint)
            .is_some_and(|(_, owner)| *owner == row.owner);
        if row.owner.starts_with("urn:diga:bfarm:")
            && !keep
            && let Err(error) = state.allow_list.remove(&fingerprint, actor).await
        {
            tracing::warn!(%error, "could not remove a certificate of the registry");
        }
    }
    for (fingerprint, (der, owner)) in &wanted {
        let present = rows
            .iter()
            .any(|row| row.fingerprint.as_slice() == fingerprint.as_bytes() && row.owner == *owner);
        if !present && let Err(error) = state.allow_list.register(der, owner, actor).await {
            tracing::warn!(%error, %fingerprint, "registry certificate not usable for mTLS");
        }
    }
    let max_age =
        time::Duration::try_from(state.config.registry_max_age).unwrap_or(time::Duration::hours(4));
    let grace =
        time::Duration::try_from(state.config.diga_unpair_grace).unwrap_or(time::Duration::days(1));
    state
        .hddt
        .apply_registry(registry, max_age, grace)
        .await
        .map_err(|error| error.to_string())
}

/// The state `medvault admin diga reload` sets; nodes re-read the
/// registry when it changes.
pub const RELOAD_STATE: &str = "registry-reload";

/// Re-reads the DiGA-VZ every `every`, and within seconds of a `medvault
/// admin diga reload`, until shutdown.
pub fn spawn_registry_refresh(
    state: AppState,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let check = every.min(Duration::from_secs(5));
        let mut interval = tokio::time::interval(check);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        let mut since_refresh = Duration::ZERO;
        let mut seen = state.store.hddt_state(RELOAD_STATE).await.ok().flatten();
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    since_refresh += check;
                    let requested = state.store.hddt_state(RELOAD_STATE).await.ok().flatten();
                    let asked = requested.is_some() && requested != seen;
                    seen = requested;
                    if asked || since_refresh >= every {
                        since_refresh = Duration::ZERO;
                        if let Err(error) = refresh_registry(&state).await {
                            tracing::warn!(%error, "DiGA-VZ refresh failed; the cached copy ages");
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    })
}

/// Hourly: deletes request-log days past the retention (at least 30 days),
/// spent or expired authorization requests, tickets and codes (older than a
/// day), and re-reads the token keys (a rotation made on another node is
/// used here within the hour).
pub fn spawn_hddt_maintenance(
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    periodic(Duration::from_secs(3600), shutdown, move || {
        let state = state.clone();
        async move {
            let now = medvault_core::Clock::now(&*state.clock);
            let days = i64::try_from(state.config.audit_retention_days.max(30)).unwrap_or(30);
            if let Some(log) = &state.request_log
                && let Err(error) = log.purge_before((now - time::Duration::days(days)).date())
            {
                tracing::warn!(%error, "request log retention purge failed");
            }
            if let Err(error) = state
                .store
                .purge_expired_hddt(now - time::Duration::days(1))
                .await
            {
                tracing::warn!(%error, "purge of expired authorization requests failed");
            }
            let keep_from = (now - time::Duration::days(days)).date().to_string();
            if let Err(error) = state.store.purge_accesses(&keep_from).await {
                tracing::warn!(%error, "purge of old access counts failed");
            }
            if let Err(error) = crate::portal::purge_sessions(&state).await {
                tracing::warn!(%error, "purge of expired portal sessions failed");
            }
            // Another node may have rotated the signing key.
            state.hddt.keys().forget_cached();
            if let Err(error) = state.hddt.keys().reload_public().await {
                tracing::warn!(%error, "token key reload failed");
            }
        }
    })
}

/// Runs `work` every `period` (the first run at once) until shutdown.
fn periodic<F, Fut>(
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut work: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => work().await,
                _ = shutdown.changed() => break,
            }
        }
    })
}

/// Writes the FHIR access counts every 5 s.
pub fn spawn_access_flush(
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    periodic(Duration::from_secs(5), shutdown, move || {
        let state = state.clone();
        async move {
            if let Err(error) = state.accesses.flush(&*state.store).await {
                tracing::warn!(%error, "could not write the access counts");
            }
        }
    })
}

/// Every second, makes the request log's new lines durable.
pub fn spawn_request_log_sync(
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let log = state.request_log.clone();
    periodic(Duration::from_secs(1), shutdown, move || {
        let log = log.clone();
        async move {
            let Some(log) = log else {
                return;
            };
            let synced = tokio::task::spawn_blocking(move || log.sync()).await;
            if let Ok(Err(error)) = synced {
                tracing::warn!(%error, "request log sync failed");
            }
        }
    })
}
