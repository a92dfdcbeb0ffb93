//! The patient portal (patient listener, `/portal`): server-rendered HTML
//! that works without JavaScript. A patient sees their devices, their
//! glucose as SVG charts (24 hours and 14 days, target range shaded), their
//! pairings with validity and scopes (and revokes one), and their audit
//! trail; an auditor sees the whole audit trail, read-only.
//!
//! Login: a one-time portal ticket from the participant's own app (`POST
//! /api/v1/portal/tickets`, `medvault portal ticket`); the page never asks
//! for a password (OPAQUE needs code in the page). The session is a random
//! token in a `__Host-` cookie (HttpOnly, Secure, SameSite=Strict) whose hash
//! is kept in the database (every node sees it, logout ends it); posts carry
//! a per-session CSRF token.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use medvault_audit::AuditQuery;
use medvault_store::{ObservationKind, ObservationRowV1};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::api::{BearerSession, rfc3339, store_error};
use crate::app::AppState;
use crate::html::{Forms, escape, page};

/// The session cookie.
const COOKIE: &str = "__Host-medvault-portal";
/// The state-row prefix of portal sessions.
const SESSION_PREFIX: &str = "portal-session:";
/// How long a portal session lasts.
const SESSION_LIFETIME: time::Duration = time::Duration::minutes(30);

/// The portal's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(portal))
        .route("/portal/login", post(login))
        .route("/portal/logout", post(logout))
        .route("/portal/pairings/revoke", post(revoke))
        .route("/api/v1/portal/tickets", post(issue_ticket))
}

/// A portal session.
struct PortalSession {
    uid: String,
    csrf: String,
    auditor: bool,
}

fn random_token() -> Option<String> {
    let mut bytes = [0_u8; 32];
    medvault_crypto::random_fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn session_key(token: &str) -> String {
    format!(
        "{SESSION_PREFIX}{}",
        hex::encode(medvault_crypto::sha256(token.as_bytes()))
    )
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| (20..=100).contains(&value.len()))
}

async fn is_auditor(state: &AppState, uid: &str) -> bool {
    matches!(
        state
            .store
            .hddt_state(&format!("{}{uid}", crate::api::audit::AUDITOR_PREFIX))
            .await,
        Ok(Some(_))
    )
}

async fn current(state: &AppState, headers: &HeaderMap) -> Option<PortalSession> {
    let token = cookie_token(headers)?;
    let (value, _) = state
        .store
        .hddt_state(&session_key(&token))
        .await
        .ok()
        .flatten()?;
    let mut parts = value.split(' ');
    let (uid, expires, csrf) = (parts.next()?, parts.next()?, parts.next()?);
    let expires: i64 = expires.parse().ok()?;
    if state.clock.now().unix_timestamp() >= expires {
        return None;
    }
    Some(PortalSession {
        uid: uid.to_owned(),
        csrf: csrf.to_owned(),
        auditor: is_auditor(state, uid).await,
    })
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .take(16)
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.as_str())
}

fn see_other(location: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

fn login_page(status: StatusCode, notice: &str) -> Response {
    let notice = if notice.is_empty() {
        String::new()
    } else {
        format!("<p role=\"alert\"><strong>{}</strong></p>", escape(notice))
    };
    page(
        status,
        "medvault portal",
        &format!(
            "{notice}<p>Make a one-time portal ticket in your medvault app (<code>medvault portal ticket</code>) and enter it here. This page never asks for your password.</p>\
             <form method=\"post\" action=\"/portal/login\"><label>Ticket <input name=\"ticket\" autocomplete=\"off\" required maxlength=\"40\"></label> <button type=\"submit\">Log in</button></form>"
        ),
        false,
        Forms::SameOrigin,
    )
}

async fn issue_ticket(State(state): State<AppState>, session: BearerSession) -> Response {
    let uid = session.session.uid.to_string();
    match state.hddt.issue_portal_ticket(&uid).await {
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

async fn login(State(state): State<AppState>, body: Bytes) -> Response {
    let form = form(&body);
    let uid = match state
        .hddt
        .redeem_portal_ticket(field(&form, "ticket"))
        .await
    {
        Ok(Some(uid)) => uid,
        Ok(None) => {
            return login_page(
                StatusCode::UNAUTHORIZED,
                "This ticket is unknown, used or expired. Make a new one in your app.",
            );
        }
        Err(error) => return store_error(&error),
    };
    let (Some(token), Some(csrf)) = (random_token(), random_token()) else {
        return crate::api::internal(&"random generator");
    };
    let expires = state.clock.now() + SESSION_LIFETIME;
    let value = format!("{uid} {} {csrf}", expires.unix_timestamp());
    if let Err(error) = state
        .store
        .set_hddt_state(&session_key(&token), Some(&value), state.clock.now())
        .await
    {
        return store_error(&error);
    }
    let mut response = see_other("/portal");
    let cookie = format!(
        "{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.whole_seconds()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let (Some(session), Some(token)) = (current(&state, &headers).await, cookie_token(&headers))
        && csrf_ok(&session, &form(&body))
    {
        let _ = state
            .store
            .set_hddt_state(&session_key(&token), None, state.clock.now())
            .await;
    }
    let mut response = see_other("/portal");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-medvault-portal=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

fn csrf_ok(session: &PortalSession, form: &[(String, String)]) -> bool {
    let sent = field(form, "csrf");
    !sent.is_empty() && bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes()))
}

async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(session) = current(&state, &headers).await else {
        return see_other("/portal");
    };
    let form = form(&body);
    if !csrf_ok(&session, &form) || session.auditor {
        return page(
            StatusCode::FORBIDDEN,
            "medvault portal",
            "<p>This request was refused. <a href=\"/portal\">Back</a></p>",
            false,
            Forms::None,
        );
    }
    match state
        .hddt
        .unpair(&session.uid, field(&form, "pairing_id"))
        .await
    {
        Ok(_) => see_other("/portal"),
        Err(error) => store_error(&error),
    }
}

/// Glucose points of a patient, `(time, mg/dL)`, from CGM chunks and meter readings.
fn points(rows: &[ObservationRowV1]) -> Vec<(OffsetDateTime, f64, bool)> {
    use medvault_fhir::catalogue::GlucoseUnit;
    let mut out = Vec::new();
    for row in rows {
        let unit = GlucoseUnit::parse(&row.unit).unwrap_or(GlucoseUnit::MgPerDl);
        match row.kind {
            ObservationKind::Single => {
                if let Some(value) = row.value {
                    out.push((row.effective_start, unit.to_mg_dl(value), false));
                }
            }
            ObservationKind::Chunk => {
                let period = time::Duration::milliseconds(row.period_ms.unwrap_or(300_000).max(1));
                for (slot, token) in row.samples.as_deref().unwrap_or("").split(' ').enumerate() {
                    let value = match token {
                        "L" => 40.0,
                        "U" => 400.0,
                        number => match number.parse::<f64>() {
                            Ok(value) => unit.to_mg_dl(value),
                            Err(_) => continue,
                        },
                    };
                    let at = row.effective_start + period * u32::try_from(slot).unwrap_or(0);
                    out.push((at, value, true));
                }
            }
        }
    }
    out.sort_by_key(|(at, _, _)| *at);
    out
}

/// An SVG chart of `points` over `[from, to]`, 70–180 mg/dL shaded, CGM as
/// a line (broken at gaps longer than `gap`), meter readings as dots.
fn chart(
    title: &str,
    points: &[(OffsetDateTime, f64, bool)],
    from: OffsetDateTime,
    to: OffsetDateTime,
    gap: time::Duration,
) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    let span = (to - from).as_seconds_f64().max(1.0);
    let x = |at: OffsetDateTime| ((at - from).as_seconds_f64() / span * W).clamp(0.0, W);
    let y = |mg: f64| H - ((mg.clamp(40.0, 400.0) - 40.0) / 360.0 * H);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\" stroke=\"#999999\"/>\
         <rect class=\"target\" x=\"0\" y=\"{:.1}\" width=\"{W}\" height=\"{:.1}\" fill=\"#d8f0d8\"/>",
        escape(title),
        escape(title),
        y(180.0),
        y(70.0) - y(180.0)
    );
    for mark in [70.0, 180.0, 250.0] {
        svg.push_str(&format!(
            "<text x=\"4\" y=\"{:.1}\" font-size=\"10\" fill=\"#555555\">{mark} mg/dL</text>",
            y(mark) - 2.0
        ));
    }
    let mut line: Vec<String> = Vec::new();
    let mut last: Option<OffsetDateTime> = None;
    let mut lines = Vec::new();
    for (at, mg, cgm) in points.iter().filter(|(at, _, _)| *at >= from && *at <= to) {
        if *cgm {
            if last.is_some_and(|previous| *at - previous > gap) && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            line.push(format!("{:.1},{:.1}", x(*at), y(*mg)));
            last = Some(*at);
        } else {
            svg.push_str(&format!(
                "<circle class=\"meter\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#c03030\"/>",
                x(*at),
                y(*mg)
            ));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    for line in lines {
        svg.push_str(&format!(
            "<polyline class=\"cgm\" fill=\"none\" stroke=\"#2050b0\" stroke-width=\"1.5\" points=\"{}\"/>",
            line.join(" ")
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Hourly means of `points` (the 14-day chart).
fn hourly(points: &[(OffsetDateTime, f64, bool)]) -> Vec<(OffsetDateTime, f64, bool)> {
    let mut out: Vec<(OffsetDateTime, f64, bool)> = Vec::new();
    let mut bucket: Option<(i64, f64, u32)> = None;
    for (at, mg, cgm) in points {
        if !cgm {
            out.push((*at, *mg, false));
            continue;
        }
        let hour = at.unix_timestamp().div_euclid(3600);
        match &mut bucket {
            Some((h, sum, n)) if *h == hour => {
                *sum += mg;
                *n += 1;
            }
            _ => {
                if let Some((h, sum, n)) = bucket.take()
                    && let Ok(at) = OffsetDateTime::from_unix_timestamp(h * 3600 + 1800)
                {
                    out.push((at, sum / f64::from(n), true));
                }
                bucket = Some((hour, *mg, 1));
            }
        }
    }
    if let Some((h, sum, n)) = bucket
        && let Ok(at) = OffsetDateTime::from_unix_timestamp(h * 3600 + 1800)
    {
        out.push((at, sum / f64::from(n), true));
    }
    out.sort_by_key(|(at, _, _)| *at);
    out
}

fn audit_table(records: &[medvault_audit::AuditRecord], with_subject: bool) -> String {
    let mut html = String::from("<table><thead><tr><th>When</th><th>Who</th>");
    if with_subject {
        html.push_str("<th>Subject</th>");
    }
    html.push_str("<th>What</th><th>Outcome</th><th>Detail</th></tr></thead><tbody>");
    for record in records.iter().rev() {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td>",
            escape(&rfc3339(record.recorded_at)),
            escape(&record.actor)
        ));
        if with_subject {
            html.push_str(&format!("<td>{}</td>", escape(&record.subject)));
        }
        html.push_str(&format!(
            "<td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&record.event_type),
            escape(&record.outcome),
            escape(&record.detail)
        ));
    }
    html.push_str("</tbody></table>");
    html
}

async fn portal(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(session) = current(&state, &headers).await else {
        return login_page(StatusCode::OK, "");
    };
    let now = state.clock.now();
    let logout = format!(
        "<form method=\"post\" action=\"/portal/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
        escape(&session.csrf)
    );
    if session.auditor {
        let records = match state
            .audit
            .query(&AuditQuery {
                from: Some(now - time::Duration::days(7)),
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
        {
            Ok(records) => records,
            Err(error) => return crate::api::internal(&error),
        };
        let body = format!(
            "{logout}<p>Auditor view (read-only): the audit trail of the last 7 days, newest first.</p><h2>Audit trail</h2>{}",
            audit_table(&records, true)
        );
        return page(
            StatusCode::OK,
            "medvault portal — auditor",
            &body,
            false,
            Forms::SameOrigin,
        );
    }
    let uid = session.uid.clone();
    let devices = match state.fhir.devices(&uid).await {
        Ok(devices) => devices,
        Err(_) => return store_error(&medvault_store::StoreError::Unavailable("devices".into())),
    };
    let rows = match state
        .store
        .observations_of_patient(
            &uid,
            now - time::Duration::days(15),
            now + time::Duration::hours(1),
            10_000,
        )
        .await
    {
        Ok(rows) => rows,
        Err(error) => return store_error(&error),
    };
    let pairings = match state.hddt.pairings(&uid).await {
        Ok(pairings) => pairings,
        Err(error) => return store_error(&error),
    };
    let records = match state
        .audit
        .query(&AuditQuery {
            subject: Some(uid.clone()),
            from: Some(now - time::Duration::days(30)),
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
    {
        Ok(records) => records,
        Err(error) => return crate::api::internal(&error),
    };
    let mut body = logout;
    body.push_str("<h2>Devices</h2>");
    if devices.is_empty() {
        body.push_str("<p>No devices yet.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Device</th><th>Serial number</th><th>Status</th><th>Unit</th><th>Calibration</th><th>Last data</th></tr></thead><tbody>");
        for device in &devices {
            let name = medvault_fhir::catalogue::model(&device.model).map_or("", |m| m.name);
            body.push_str(&format!(
                "<tr class=\"device\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(name),
                escape(&device.serial_number),
                escape(&device.status),
                escape(&device.unit),
                escape(&device.calibration_state),
                escape(&device.last_sync_at.map(rfc3339).unwrap_or_else(|| "never".into()))
            ));
        }
        body.push_str("</tbody></table>");
    }
    let glucose = points(&rows);
    body.push_str("<h2>Glucose</h2>");
    body.push_str(&chart(
        "Last 24 hours (target range 70–180 mg/dL shaded)",
        &glucose,
        now - time::Duration::hours(24),
        now,
        time::Duration::minutes(20),
    ));
    body.push_str(&chart(
        "Last 14 days, hourly means",
        &hourly(&glucose),
        now - time::Duration::days(14),
        now,
        time::Duration::hours(3),
    ));
    body.push_str("<h2>Pairings with DiGAs</h2>");
    if pairings.is_empty() {
        body.push_str("<p>No DiGA has access to your data.</p>");
    } else {
        body.push_str("<table><thead><tr><th>DiGA</th><th>Status</th><th>Valid until</th><th>Data</th><th></th></tr></thead><tbody>");
        for pairing in &pairings {
            let action = if pairing.status == "active" {
                format!(
                    "<form method=\"post\" action=\"/portal/pairings/revoke\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"pairing_id\" value=\"{}\"><button type=\"submit\">Revoke</button></form>",
                    escape(&session.csrf),
                    escape(&pairing.grant.pairing_id)
                )
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<tr class=\"pairing\"><td>{} <small>{}</small></td><td>{}</td><td>{}</td><td><small>{}</small></td><td>{action}</td></tr>",
                escape(pairing.diga_name.as_deref().unwrap_or("(not in the registry)")),
                escape(&pairing.grant.client_id),
                escape(pairing.status),
                escape(&rfc3339(pairing.grant.consent_until)),
                escape(&pairing.grant.scope)
            ));
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h2>Data read by DiGAs (30 days)</h2>");
    let since = (now - time::Duration::days(30)).date().to_string();
    match state.store.accesses_of_patient(&uid, &since, 200).await {
        Ok(accesses) if accesses.is_empty() => body.push_str("<p>No DiGA has read your data.</p>"),
        Ok(accesses) => {
            body.push_str("<table><thead><tr><th>DiGA</th><th>Day</th><th>What</th><th>Times</th><th>Last</th></tr></thead><tbody>");
            for (client_id, access) in &accesses {
                let name = pairings
                    .iter()
                    .find(|p| p.grant.pairing_id == access.pairing_id)
                    .and_then(|p| p.diga_name.clone())
                    .unwrap_or_else(|| client_id.clone());
                body.push_str(&format!(
                    "<tr class=\"access\"><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    escape(&name),
                    escape(&access.day),
                    escape(&access.interaction),
                    access.count,
                    escape(&rfc3339(access.last_at))
                ));
            }
            body.push_str("</tbody></table>");
        }
        Err(error) => return store_error(&error),
    }
    body.push_str("<h2>Your audit trail (30 days)</h2>");
    body.push_str(&audit_table(&records, false));
    page(
        StatusCode::OK,
        "medvault portal",
        &body,
        false,
        Forms::SameOrigin,
    )
}

/// Ends portal sessions past their expiry (hourly maintenance).
pub async fn purge_sessions(state: &AppState) -> Result<usize, medvault_store::StoreError> {
    let now = state.clock.now();
    let mut purged = 0;
    for (name, value, _) in state.store.hddt_states(SESSION_PREFIX).await? {
        let expired = value
            .split(' ')
            .nth(1)
            .and_then(|e| e.parse::<i64>().ok())
            .is_none_or(|e| e <= now.unix_timestamp());
        if expired {
            state.store.set_hddt_state(&name, None, now).await?;
            purged += 1;
        }
    }
    Ok(purged)
}
