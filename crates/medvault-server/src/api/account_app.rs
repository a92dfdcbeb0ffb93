//! The Account App over HTTP: server-rendered login and registration pages
//! (no JavaScript, no credential typed into them), the approval a logged-in
//! client sends, and the one-time result an app's backend redeems.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medvault_accounts::{AccountAppError, RequestPage, RequestPurpose};
use serde::{Deserialize, Serialize};

use super::{
    ApiJson, BearerSession, ClientAddress, internal, store_error, too_many, with_retry_after,
};
use crate::app::AppState;
use crate::html::escape;
use crate::problem::Problem;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/account/login", get(login_page))
        .route("/account/register", get(register_page))
        .route("/account/requests/{id}", get(request_page))
        .route("/api/v1/account-requests/inspect", post(inspect))
        .route("/api/v1/account-requests/approve", post(approve))
        .route("/api/v1/account-requests/result", post(redeem))
}

/// `?return_to=&state=` of the entry pages.
#[derive(Debug, Deserialize)]
struct EntryQuery {
    return_to: String,
    #[serde(default)]
    state: String,
}

/// `?code=` of a request page.
#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    code: String,
}

/// An Account App page: shows only, never posts.
fn html(status: StatusCode, title: &str, body: &str, refresh: bool) -> Response {
    crate::html::page(status, title, body, refresh, crate::html::Forms::None)
}

fn app_error_page(error: AccountAppError) -> Response {
    match error {
        AccountAppError::ReturnUrl | AccountAppError::State => html(
            StatusCode::BAD_REQUEST,
            "Anfrage abgelehnt",
            &format!("<p>{}</p>", escape(&error.to_string())),
            false,
        ),
        AccountAppError::Throttled { retry_after } => with_retry_after(
            html(
                StatusCode::TOO_MANY_REQUESTS,
                "Zu viele Anfragen",
                "<p>Von dieser Adresse kamen zu viele Anfragen. Versuchen Sie es später wieder.</p>",
                false,
            ),
            retry_after,
        ),
        AccountAppError::Store(error) => store_error(&error),
        other => internal(&other),
    }
}

async fn open(
    state: AppState,
    purpose: RequestPurpose,
    query: EntryQuery,
    source: std::net::IpAddr,
) -> Response {
    match state
        .account_app
        .open(purpose, &query.return_to, &query.state, source)
        .await
    {
        Ok(request) => Redirect::to(&format!(
            "/account/requests/{}?code={}",
            request.id,
            request.code.as_str()
        ))
        .into_response(),
        Err(error) => app_error_page(error),
    }
}

async fn login_page(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Query(query): Query<EntryQuery>,
) -> Response {
    open(state, RequestPurpose::Login, query, client).await
}

async fn register_page(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Query(query): Query<EntryQuery>,
) -> Response {
    open(state, RequestPurpose::Register, query, client).await
}

async fn request_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    match state.account_app.page(&id, &query.code).await {
        Ok(RequestPage::Pending { purpose, app_host }) => {
            let code = escape(&query.code.to_ascii_uppercase());
            let host = escape(&app_host);
            let (title, first) = match purpose {
                RequestPurpose::Login => (
                    "Anmelden mit medvault",
                    "Melden Sie sich in Ihrer medvault-App oder mit <code>medvault account login</code> an.".to_owned(),
                ),
                RequestPurpose::Register => (
                    "Registrieren bei medvault",
                    "Registrieren Sie sich in Ihrer medvault-App oder mit <code>medvault account register</code> und melden Sie sich an.".to_owned(),
                ),
            };
            let body = format!(
                "<p><strong>{host}</strong> möchte wissen, wer Sie bei medvault sind.</p>\
                 <ol><li>{first}</li>\
                 <li>Bestätigen Sie diesen Code: <code>medvault account approve {code}</code></li></ol>\
                 <p>Code: <strong>{code}</strong></p>\
                 <p>Diese Seite geht danach von selbst weiter. Der Code gilt zehn Minuten.</p>\
                 <p>Geben Sie hier kein Passwort, keine SuperPIN und keine TAN ein: diese Seite fragt nie danach.</p>"
            );
            html(StatusCode::OK, title, &body, true)
        }
        Ok(RequestPage::Redirect(target)) => Redirect::to(&target).into_response(),
        Ok(RequestPage::Gone) => html(
            StatusCode::NOT_FOUND,
            "Anfrage nicht gefunden",
            "<p>Diese Anfrage ist unbekannt, abgelaufen oder schon erledigt. Kehren Sie zur App zurück und beginnen Sie neu.</p>",
            false,
        ),
        Err(error) => app_error_page(error),
    }
}

/// `POST /api/v1/account-requests/approve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    code: String,
}

/// What a request is for and who asks.
#[derive(Debug, Serialize)]
struct InspectResponse {
    purpose: &'static str,
    app_host: String,
}

async fn inspect(
    State(state): State<AppState>,
    bearer: BearerSession,
    ApiJson(request): ApiJson<ApproveRequest>,
) -> Response {
    match state
        .account_app
        .inspect(&bearer.session, &request.code)
        .await
    {
        Ok((purpose, app_host)) => Json(InspectResponse {
            purpose: purpose.as_str(),
            app_host,
        })
        .into_response(),
        Err(error) => api_error(error),
    }
}

/// Whom the approval let in.
#[derive(Debug, Serialize)]
struct ApproveResponse {
    app_host: String,
}

async fn approve(
    State(state): State<AppState>,
    bearer: BearerSession,
    ApiJson(request): ApiJson<ApproveRequest>,
) -> Response {
    match state
        .account_app
        .approve(&bearer.session, &request.code)
        .await
    {
        Ok(app_host) => Json(ApproveResponse { app_host }).into_response(),
        Err(error) => api_error(error),
    }
}

/// `POST /api/v1/account-requests/result`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemRequest {
    code: String,
    return_to: String,
}

/// The redeemed result.
#[derive(Debug, Serialize)]
struct RedeemResponse {
    uid: String,
    purpose: String,
    credential_id: String,
    state: String,
}

async fn redeem(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RedeemRequest>,
) -> Response {
    match state
        .account_app
        .redeem(&request.code, &request.return_to)
        .await
    {
        Ok(result) => Json(RedeemResponse {
            uid: result.uid.to_string(),
            purpose: result.purpose,
            credential_id: result.credential_id,
            state: result.state,
        })
        .into_response(),
        Err(error) => api_error(error),
    }
}

fn api_error(error: AccountAppError) -> Response {
    match error {
        AccountAppError::Code => Problem::new(StatusCode::BAD_REQUEST, "Invalid code")
            .with_detail(error.to_string())
            .into_response(),
        AccountAppError::Throttled { retry_after } => too_many(retry_after, "Too many attempts"),
        AccountAppError::ReturnUrl | AccountAppError::State => {
            Problem::new(StatusCode::BAD_REQUEST, "Invalid request")
                .with_detail(error.to_string())
                .into_response()
        }
        AccountAppError::Store(error) => store_error(&error),
        AccountAppError::Audit(_) => internal(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
