//! HDDT pairing as a DiGA and a patient's browser drive it, for tests and
//! benchmarks: the DiGA-VZ written and loaded, form posts over mTLS, and the
//! whole consent (PAR, page, ticket login, decision) up to the code.

use medvault_client::Session;
use medvault_oauth::{DigaRegistry, DigaRegistryEntry};
use serde_json::Value;

use crate::TestServer;

/// The PKCE verifier of RFC 7636 appendix B.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// Its S256 challenge.
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// `application/x-www-form-urlencoded` of `form`.
pub fn encode(form: &[(&str, String)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in form {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// Writes the DiGA-VZ file with `entries` and makes the server load it now.
pub async fn install_registry(server: &TestServer, entries: Vec<DigaRegistryEntry>) {
    let mut registry = DigaRegistry::default();
    let now = medvault_core::Clock::now(&*server.clock).unix_timestamp();
    for entry in entries {
        registry.upsert(entry, now).unwrap();
    }
    std::fs::write(
        server.data_dir.path().join("diga-vz.json"),
        registry.to_json(),
    )
    .unwrap();
    medvault_server::hddt::refresh_registry(server.state())
        .await
        .unwrap();
}

/// POSTs a form to the HDDT listener, presenting `identity`; the status and
/// the JSON body (`Null` when there is none).
pub async fn post_form(
    server: &TestServer,
    client: &reqwest::Client,
    path: &str,
    form: &[(&str, String)],
) -> (u16, Value) {
    let response = client
        .post(server.hddt_url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(form))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A browser: no client certificate, no automatic redirects.
pub fn browser(server: &TestServer) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&server.ca_pem).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of a hidden form field of `html`.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// A query parameter of `location`.
pub fn query_value(location: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The pushed request's form: `client_id`, code, S256 with [`CHALLENGE`],
/// `redirect_uri`, `scope`, `state` `xyz-state`.
pub fn par_form(client_id: &str, redirect_uri: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", client_id.to_owned()),
        ("response_type", "code".to_owned()),
        ("code_challenge_method", "S256".to_owned()),
        ("code_challenge", CHALLENGE.to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
        ("scope", scope.to_owned()),
        ("state", "xyz-state".to_owned()),
    ]
}

/// The token request for `code` with `verifier`.
pub fn code_form(
    client_id: &str,
    redirect_uri: &str,
    code: &str,
    verifier: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_owned()),
        ("code_verifier", verifier.to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
        ("client_id", client_id.to_owned()),
    ]
}

/// The refresh request for `token`.
pub fn refresh_form(client_id: &str, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", token.to_owned()),
        ("client_id", client_id.to_owned()),
    ]
}

/// On an opened consent `page`: the patient logs in with a fresh ticket and
/// posts `decision`; returns the `Location` the browser is sent to.
pub async fn consent(
    server: &TestServer,
    patient: &Session,
    page: &str,
    decision: &[(&str, &str)],
) -> String {
    let ticket = patient.pairing_ticket().await.unwrap();
    consent_with_ticket(server, &ticket.ticket, page, decision).await
}

/// [`consent`] with a ticket the patient made elsewhere (e.g. the CLI).
pub async fn consent_with_ticket(
    server: &TestServer,
    ticket: &str,
    page: &str,
    decision: &[(&str, &str)],
) -> String {
    let request_uri = hidden(page, "request_uri");
    let csrf = hidden(page, "csrf");
    let browser = browser(server);
    let logged_in = browser
        .post(server.patient_url("/authorize/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[
            ("request_uri", request_uri.clone()),
            ("csrf", csrf.clone()),
            ("ticket", ticket.to_lowercase()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(logged_in.status(), 200);
    let page = logged_in.text().await.unwrap();
    assert!(page.contains("type=\"checkbox\""), "{page}");
    let mut form = vec![("request_uri", request_uri), ("csrf", csrf)];
    form.extend(
        decision
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    let decided = browser
        .post(server.patient_url("/authorize/decision"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 303, "{}", decided.text().await.unwrap());
    decided.headers()["location"].to_str().unwrap().to_owned()
}

/// Opens the consent page of `request_uri`; the status and the page.
pub async fn open_consent(
    server: &TestServer,
    client_id: &str,
    request_uri: &str,
) -> (u16, String) {
    let response = browser(server)
        .get(format!(
            "{}?{}",
            server.patient_url("/authorize"),
            encode(&[
                ("client_id", client_id.to_owned()),
                ("request_uri", request_uri.to_owned())
            ])
        ))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        let headers = response.headers();
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
    (status, response.text().await.unwrap())
}

/// A whole pairing: PAR by `diga` (presenting its certificate), the consent
/// page, the patient's ticket login, approval of `mivs` (ValueSet ids) for
/// 90 days, and the code redeemed with PKCE; the token response.
pub async fn pair(
    server: &TestServer,
    diga: &crate::TestCertificate,
    client_id: &str,
    redirect_uri: &str,
    patient: &Session,
    scope: &str,
    mivs: &[&str],
) -> Value {
    let client = server.client(Some(diga));
    let (status, pushed) = post_form(
        server,
        &client,
        "/par",
        &par_form(client_id, redirect_uri, scope),
    )
    .await;
    assert_eq!(status, 201, "{pushed}");
    let request_uri = pushed
        .get("request_uri")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    let (status, page) = open_consent(server, client_id, &request_uri).await;
    assert_eq!(status, 200, "{page}");
    let mut decision: Vec<(&str, &str)> = mivs.iter().map(|miv| ("miv", *miv)).collect();
    decision.push(("days", "90"));
    decision.push(("decision", "approve"));
    let location = consent(server, patient, &page, &decision).await;
    let code = query_value(&location, "code").unwrap();
    let (status, tokens) = post_form(
        server,
        &client,
        "/token",
        &code_form(client_id, redirect_uri, &code, VERIFIER),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}
