//! Server-rendered HTML pages (the Account App's and the HDDT consent page):
//! escaping, and one page builder whose headers keep what a page shows to
//! that page: no scripts, no framing, no referrer, not cached.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Whether a page's forms may post (to this origin only) or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forms {
    /// `form-action 'none'`: the page only shows.
    None,
    /// Forms post to the page's own origin (whose answer may redirect on).
    SameOrigin,
}

/// A page titled `title` (escaped) around `body` (already safe HTML),
/// reloading itself every 3 s when `refresh`.
pub fn page(status: StatusCode, title: &str, body: &str, refresh: bool, forms: Forms) -> Response {
    let refresh = if refresh {
        "<meta http-equiv=\"refresh\" content=\"3\">"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"de\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">{refresh}<title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // form-action is left out for posting pages: browsers apply it to the
    // redirect a post answers with too, and the consent's goes to the DiGA.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(match forms {
            Forms::None => "default-src 'none'; frame-ancestors 'none'; form-action 'none'",
            Forms::SameOrigin => "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        }),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
