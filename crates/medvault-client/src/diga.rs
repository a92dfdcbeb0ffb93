//! The DiGA side of HDDT (§ 374a SGB V): what a DiGA's backend does against
//! any Device Data Recorder, over mTLS with the DiGA's client certificate.
//!
//! Discovery (RFC 8414, checked to name the server it came from and to
//! require PAR), the pushed authorization request with PKCE S256 and a fresh
//! `state` (RFC 9126, RFC 7636), the checks of the redirect the patient's
//! browser lands on (`state`, RFC 9207 `iss`, `error`), the code exchange,
//! refresh (rotation), revocation (RFC 7009) and FHIR requests with the
//! access token. `medvault diga` (the reference client) is built on it.
//!
//! OAuth refusals come back as [`ClientError::Api`] with the OAuth `error`
//! code as the title and `error_description` as the detail; FHIR refusals
//! with the OperationOutcome's diagnostics as the detail.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::ClientError;

/// One HTTP exchange, for a caller that shows them (`medvault diga -v`).
#[derive(Debug)]
pub enum Event<'a> {
    /// A request is sent: the method, the URL and (for forms) the field names.
    Request {
        /// `GET` or `POST`.
        method: &'static str,
        /// The URL.
        url: &'a str,
        /// The form's field names (never their values).
        fields: Vec<&'a str>,
    },
    /// An answer arrived for the request named `what`.
    Response {
        /// What the request was (`metadata`, `PAR`, `token`, ...).
        what: &'a str,
        /// The HTTP status.
        status: u16,
        /// The JSON body (`Null` when there is none).
        body: &'a Value,
    },
}

/// Receives every [`Event`].
pub type Observer = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// The authorization server's metadata, as far as a DiGA needs it.
#[derive(Debug, Clone)]
pub struct ServerMetadata {
    /// The issuer (no trailing slash).
    pub issuer: String,
    /// `pushed_authorization_request_endpoint`.
    pub par_endpoint: String,
    /// `authorization_endpoint` (the patient's browser goes there).
    pub authorization_endpoint: String,
    /// `token_endpoint`.
    pub token_endpoint: String,
    /// `revocation_endpoint`.
    pub revocation_endpoint: String,
    /// Whether the server puts `iss` on its redirects (RFC 9207).
    pub sends_iss: bool,
}

/// A pushed authorization request, waiting for the patient's consent.
pub struct PendingAuthorization {
    /// Where to send the patient's browser.
    pub authorize_url: url::Url,
    /// The `state` sent, to compare with the redirect's.
    pub state: String,
    /// The PKCE verifier for the code exchange.
    pub verifier: Zeroizing<String>,
}

impl std::fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("authorize_url", &self.authorize_url.as_str())
            .finish_non_exhaustive()
    }
}

/// A token response (code exchange or refresh).
#[derive(Clone)]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token (rotated on every refresh).
    pub refresh_token: String,
    /// The granted scope.
    pub scope: String,
    /// The Pairing ID (`sub`).
    pub pairing_id: String,
    /// Seconds the access token is valid.
    pub expires_in: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("scope", &self.scope)
            .field("pairing_id", &self.pairing_id)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The DiGA's HTTP client: mTLS with its certificate, HTTPS only, no
/// redirects followed.
#[derive(Clone)]
pub struct DigaClient {
    http: reqwest::Client,
    observer: Option<Observer>,
}

impl std::fmt::Debug for DigaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigaClient").finish_non_exhaustive()
    }
}

fn text<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn random_b64(bytes: usize) -> Result<String, ClientError> {
    let mut buffer = Zeroizing::new(vec![0u8; bytes]);
    medvault_crypto::random_fill(&mut buffer).map_err(|_| ClientError::Unlock("randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(buffer.as_slice()))
}

/// An OAuth refusal as [`ClientError::Api`].
fn oauth_error(status: u16, body: &Value) -> ClientError {
    ClientError::Api {
        status,
        title: text(body, "error").to_owned(),
        detail: body
            .get("error_description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        retry_after: None,
    }
}

/// A FHIR refusal as [`ClientError::Api`].
fn fhir_error(status: u16, body: &Value) -> ClientError {
    ClientError::Api {
        status,
        title: "FHIR request refused".to_owned(),
        detail: body
            .pointer("/issue/0/diagnostics")
            .or_else(|| body.pointer("/issue/0/details/text"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        retry_after: None,
    }
}

impl DigaClient {
    /// A client presenting `identity_pem` (the certificate followed by its
    /// PKCS#8 key), trusting `tls_ca_pem` if given (else the system's roots).
    pub fn new(identity_pem: &[u8], tls_ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .identity(
                reqwest::Identity::from_pem(identity_pem)
                    .map_err(|_| ClientError::Invalid("client certificate and key"))?,
            );
        if let Some(pem) = tls_ca_pem {
            builder = builder.tls_certs_only(
                reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|_| ClientError::Invalid("TLS CA certificate"))?,
            );
        }
        Ok(Self {
            http: builder
                .build()
                .map_err(|error| ClientError::Transport(error.to_string()))?,
            observer: None,
        })
    }

    /// Reports every exchange to `observer`.
    #[must_use]
    pub fn observed(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, event: &Event<'_>) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(u16, Value), ClientError> {
        let response = request
            .send()
            .await
            .map_err(|error| ClientError::Transport(format!("{what}: {error}")))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.observe(&Event::Response {
            what,
            status,
            body: &body,
        });
        Ok((status, body))
    }

    async fn form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        what: &str,
    ) -> Result<(u16, Value), ClientError> {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            body.append_pair(name, value);
        }
        self.observe(&Event::Request {
            method: "POST",
            url,
            fields: form.iter().map(|(name, _)| *name).collect(),
        });
        self.send(
            self.http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.finish()),
            what,
        )
        .await
    }

    /// The metadata of the authorization server `issuer` (RFC 8414): it must
    /// name `issuer` itself and require PAR, as an HDDT server does.
    pub async fn discover(&self, issuer: &str) -> Result<ServerMetadata, ClientError> {
        let issuer = issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/oauth-authorization-server");
        self.observe(&Event::Request {
            method: "GET",
            url: &url,
            fields: Vec::new(),
        });
        let (status, metadata) = self.send(self.http.get(&url), "metadata").await?;
        if status != 200 {
            return Err(oauth_error(status, &metadata));
        }
        if text(&metadata, "issuer").trim_end_matches('/') != issuer {
            return Err(ClientError::Verification(
                "the metadata names another issuer",
            ));
        }
        if metadata.get("require_pushed_authorization_requests") != Some(&Value::Bool(true)) {
            return Err(ClientError::Verification(
                "the server does not require PAR: not an HDDT authorization server",
            ));
        }
        let endpoint = |name: &'static str| {
            metadata
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(ClientError::Verification("the metadata lacks an endpoint"))
        };
        Ok(ServerMetadata {
            issuer: issuer.to_owned(),
            par_endpoint: endpoint("pushed_authorization_request_endpoint")?,
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            revocation_endpoint: endpoint("revocation_endpoint")?,
            sends_iss: metadata.get("authorization_response_iss_parameter_supported")
                == Some(&Value::Bool(true)),
        })
    }

    /// Pushes an authorization request with a fresh PKCE verifier and
    /// `state`; returns where the patient's browser goes.
    pub async fn push_authorization(
        &self,
        metadata: &ServerMetadata,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        prescription_end: Option<&str>,
    ) -> Result<PendingAuthorization, ClientError> {
        let verifier = Zeroizing::new(random_b64(32)?);
        let challenge = URL_SAFE_NO_PAD.encode(medvault_crypto::sha256(verifier.as_bytes()));
        let state = random_b64(16)?;
        let mut form = vec![
            ("client_id", client_id),
            ("response_type", "code"),
            ("code_challenge_method", "S256"),
            ("code_challenge", challenge.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", state.as_str()),
        ];
        if let Some(end) = prescription_end {
            form.push(("prescription_end", end));
        }
        let (status, pushed) = self.form(&metadata.par_endpoint, &form, "PAR").await?;
        if status != 201 && status != 200 {
            return Err(oauth_error(status, &pushed));
        }
        let request_uri =
            pushed
                .get("request_uri")
                .and_then(Value::as_str)
                .ok_or(ClientError::Verification(
                    "PAR answered without request_uri",
                ))?;
        let mut authorize_url = url::Url::parse(&metadata.authorization_endpoint)
            .map_err(|_| ClientError::Verification("the authorization endpoint"))?;
        authorize_url
            .query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("request_uri", request_uri);
        Ok(PendingAuthorization {
            authorize_url,
            state,
            verifier,
        })
    }

    /// The code from the redirect the patient's browser `landed` on, after
    /// checking its `state` (CSRF) and `iss` (mix-up, RFC 9207); a denial or
    /// error becomes [`ClientError::Api`] with status 0.
    pub fn code_from_redirect(
        metadata: &ServerMetadata,
        pending: &PendingAuthorization,
        landed: &url::Url,
    ) -> Result<String, ClientError> {
        let query = |name: &str| {
            landed
                .query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        if query("state").as_deref() != Some(pending.state.as_str()) {
            return Err(ClientError::Verification(
                "the redirect's state is not ours (possible CSRF)",
            ));
        }
        match query("iss") {
            Some(iss) if iss.trim_end_matches('/') == metadata.issuer => {}
            Some(_) => {
                return Err(ClientError::Verification(
                    "the redirect names another issuer (mix-up)",
                ));
            }
            None if metadata.sends_iss => {
                return Err(ClientError::Verification(
                    "the redirect carries no iss although the server sends it",
                ));
            }
            None => {}
        }
        if let Some(error) = query("error") {
            return Err(ClientError::Api {
                status: 0,
                title: error,
                detail: query("error_description"),
                retry_after: None,
            });
        }
        query("code").ok_or(ClientError::Verification("the redirect has no code"))
    }

    fn tokens(status: u16, body: &Value) -> Result<Tokens, ClientError> {
        if status != 200 {
            return Err(oauth_error(status, body));
        }
        let tokens = Tokens {
            access_token: text(body, "access_token").to_owned(),
            refresh_token: text(body, "refresh_token").to_owned(),
            scope: text(body, "scope").to_owned(),
            pairing_id: text(body, "sub").to_owned(),
            expires_in: body
                .get("expires_in")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
        };
        if tokens.access_token.is_empty() || tokens.refresh_token.is_empty() {
            return Err(ClientError::Verification(
                "the token response lacks a token",
            ));
        }
        Ok(tokens)
    }

    /// Redeems `code` with the PKCE verifier.
    pub async fn redeem_code(
        &self,
        metadata: &ServerMetadata,
        client_id: &str,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
    ) -> Result<Tokens, ClientError> {
        let (status, body) = self
            .form(
                &metadata.token_endpoint,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("code_verifier", verifier),
                    ("redirect_uri", redirect_uri),
                    ("client_id", client_id),
                ],
                "token",
            )
            .await?;
        Self::tokens(status, &body)
    }

    /// Refreshes (the refresh token rotates: keep the new one).
    pub async fn refresh(
        &self,
        token_endpoint: &str,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<Tokens, ClientError> {
        let (status, body) = self
            .form(
                token_endpoint,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                    ("client_id", client_id),
                ],
                "refresh",
            )
            .await?;
        Self::tokens(status, &body)
    }

    /// Revokes the pairing through its refresh token (RFC 7009): the grant,
    /// its tokens and the consent end.
    pub async fn revoke(
        &self,
        revocation_endpoint: &str,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<(), ClientError> {
        let (status, body) = self
            .form(
                revocation_endpoint,
                &[
                    ("token", refresh_token),
                    ("token_type_hint", "refresh_token"),
                    ("client_id", client_id),
                ],
                "revoke",
            )
            .await?;
        if status != 200 {
            return Err(oauth_error(status, &body));
        }
        Ok(())
    }

    /// A FHIR read or search (`url` absolute) with the access token.
    pub async fn fhir_get(&self, url: &str, access_token: &str) -> Result<Value, ClientError> {
        self.observe(&Event::Request {
            method: "GET",
            url,
            fields: Vec::new(),
        });
        let (status, body) = self
            .send(
                self.http
                    .get(url)
                    .bearer_auth(access_token)
                    .header("accept", "application/fhir+json"),
                "fhir",
            )
            .await?;
        if status != 200 {
            return Err(fhir_error(status, &body));
        }
        Ok(body)
    }

    /// `POST {fhir_base}/Observation/$hddt-cgm-summary` with `parameters` (a
    /// FHIR Parameters resource).
    pub async fn cgm_summary(
        &self,
        fhir_base: &str,
        access_token: &str,
        parameters: &Value,
    ) -> Result<Value, ClientError> {
        let url = format!(
            "{}/Observation/$hddt-cgm-summary",
            fhir_base.trim_end_matches('/')
        );
        self.observe(&Event::Request {
            method: "POST",
            url: &url,
            fields: Vec::new(),
        });
        let (status, body) = self
            .send(
                self.http
                    .post(&url)
                    .bearer_auth(access_token)
                    .header("content-type", "application/fhir+json")
                    .header("accept", "application/fhir+json")
                    .body(parameters.to_string()),
                "summary",
            )
            .await?;
        if status != 200 {
            return Err(fhir_error(status, &body));
        }
        Ok(body)
    }
}

/// The FHIR base an access token is for: its `aud`, read without
/// verification (it only says where to send the token, which the server
/// then checks); `None` when the token is not a JWT with an https audience.
pub fn token_audience(access_token: &str) -> Option<String> {
    let payload = access_token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let audience = text(&claims, "aud");
    audience
        .starts_with("https://")
        .then(|| audience.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> ServerMetadata {
        ServerMetadata {
            issuer: "https://ddr.example".into(),
            par_endpoint: "https://ddr.example/par".into(),
            authorization_endpoint: "https://ddr.example/authorize".into(),
            token_endpoint: "https://ddr.example/token".into(),
            revocation_endpoint: "https://ddr.example/revoke".into(),
            sends_iss: true,
        }
    }

    fn pending() -> PendingAuthorization {
        PendingAuthorization {
            authorize_url: url::Url::parse("https://ddr.example/authorize").unwrap(),
            state: "s1".into(),
            verifier: Zeroizing::new("v".repeat(43)),
        }
    }

    #[test]
    fn the_redirect_must_carry_our_state_and_the_servers_iss() {
        let landed =
            |query: &str| url::Url::parse(&format!("https://diga.example/cb?{query}")).unwrap();
        let code = DigaClient::code_from_redirect(
            &metadata(),
            &pending(),
            &landed("code=c1&state=s1&iss=https%3A%2F%2Fddr.example"),
        );
        assert_eq!(code.unwrap(), "c1");
        for (query, refused) in [
            ("code=c1&state=s2&iss=https%3A%2F%2Fddr.example", "state"),
            ("code=c1&state=s1&iss=https%3A%2F%2Fevil.example", "issuer"),
            ("code=c1&state=s1", "iss"),
        ] {
            let error = DigaClient::code_from_redirect(&metadata(), &pending(), &landed(query))
                .unwrap_err()
                .to_string();
            assert!(error.contains(refused), "{query}: {error}");
        }
        let denied = DigaClient::code_from_redirect(
            &metadata(),
            &pending(),
            &landed("error=access_denied&state=s1&iss=https%3A%2F%2Fddr.example"),
        )
        .unwrap_err();
        assert!(denied.to_string().contains("access_denied"), "{denied}");
    }

    #[test]
    fn the_audience_is_read_from_the_token() {
        let claims = URL_SAFE_NO_PAD.encode(br#"{"aud":"https://ddr.example/fhir/"}"#);
        assert_eq!(
            token_audience(&format!("e30.{claims}.sig")).as_deref(),
            Some("https://ddr.example/fhir")
        );
        let plain = URL_SAFE_NO_PAD.encode(br#"{"aud":"http://ddr.example/fhir"}"#);
        assert_eq!(token_audience(&format!("e30.{plain}.sig")), None);
        assert_eq!(token_audience("opaque"), None);
    }
}
