//! `medvault diga pair|token|unpair`: the DiGA reference client, what a DiGA
//! developer uses to try an HDDT integration against any Device Data
//! Recorder. It speaks only the guide's protocol (RFC 8414 metadata, PAR,
//! PKCE S256, tokens, RFC 7009 revocation) over mTLS with the DiGA's own
//! certificate, checks the server's FQDN against a local HIIS-VZ file when
//! given one, and keeps the tokens in a state file (mode 0600). `-v` prints
//! each HTTP exchange (tokens shortened; the key is never printed).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the DiGA reaches the server and who it is.
#[derive(Debug, Args)]
pub struct DigaArgs {
    /// The state file with the pairing's tokens.
    #[arg(long, default_value = "diga-pairing.json")]
    state_file: PathBuf,
    /// Print each HTTP exchange.
    #[arg(short, long)]
    verbose: bool,
}

/// `medvault diga ...`
#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process from the command line"
)]
pub enum DigaCommand {
    /// Pair with a patient: PAR, the patient's consent in a browser, the code
    /// exchanged with PKCE.
    Pair {
        /// The authorization server (its issuer URL).
        #[arg(long)]
        server: url::Url,
        /// `urn:diga:bfarm:NNNNN`.
        #[arg(long)]
        client_id: String,
        /// The DiGA's client certificate (PEM).
        #[arg(long)]
        client_cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        client_key: PathBuf,
        /// The registered redirect URI. A loopback `http://127.0.0.1:PORT/...`
        /// one is answered here; for any other, paste the URL the browser ends on.
        #[arg(long)]
        redirect_uri: String,
        /// The SMART scopes asked for.
        #[arg(long)]
        scope: String,
        /// The prescription's last day (YYYY-MM-DD), medvault's PAR extension.
        #[arg(long)]
        prescription_end: Option<String>,
        /// A HIIS-VZ export (FHIR Bundle of Endpoints): the server's host must be in it.
        #[arg(long)]
        hiis: Option<PathBuf>,
        /// Trust this CA for the server's TLS certificate (test setups).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
    },
    /// Refresh the tokens (rotation): prints the new access token's scope and expiry.
    Token,
    /// Read FHIR resources with the access token (mTLS): a search or read
    /// relative to the FHIR base, following `next` links with `--all`.
    Fetch {
        /// The query, e.g. `Observation?date=ge2026-12-01&_count=50`.
        #[arg(default_value = "Observation?_count=50")]
        query: String,
        /// Follow every `next` link.
        #[arg(long)]
        all: bool,
        /// Print the raw FHIR JSON instead of one line per resource.
        #[arg(long)]
        json: bool,
        /// The FHIR base URL (default: the access token's audience).
        #[arg(long)]
        fhir_base: Option<String>,
    },
    /// The CGM summary (`$hddt-cgm-summary`).
    Summary {
        /// Start of the period (RFC 3339; default 14 days before the end).
        #[arg(long)]
        start: Option<String>,
        /// End of the period (RFC 3339; default now).
        #[arg(long)]
        end: Option<String>,
        /// Include the Devices.
        #[arg(long)]
        related: bool,
        /// Print the raw FHIR JSON.
        #[arg(long)]
        json: bool,
        /// The FHIR base URL (default: the access token's audience).
        #[arg(long)]
        fhir_base: Option<String>,
    },
    /// Revoke the pairing at the server and forget it here.
    Unpair,
}

/// The stored pairing and an mTLS client with its certificate.
fn resume(args: &DigaArgs) -> anyhow::Result<(Pairing, Http)> {
    let pairing = load(&args.state_file)?;
    let http = Http::new(
        &pairing.client_cert,
        &pairing.client_key,
        pairing.tls_ca.as_deref(),
        args.verbose,
    )?;
    Ok((pairing, http))
}

/// The FHIR base: given, or the access token's `aud` (read, not verified:
/// it only says where to send the token, which the server then checks).
fn fhir_base(pairing: &Pairing, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(base) = given {
        return Ok(base.trim_end_matches('/').to_owned());
    }
    let payload = pairing
        .access_token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("the access token is not a JWT: pass --fhir-base"))?;
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .context("access token payload")?,
    )
    .context("access token claims")?;
    let audience = text(&claims, "aud");
    if !audience.starts_with("https://") {
        bail!("the access token names no https audience: pass --fhir-base");
    }
    Ok(audience.trim_end_matches('/').to_owned())
}

/// One line about a FHIR resource.
fn describe(resource: &Value) -> String {
    let kind = text(resource, "resourceType");
    let id = text(resource, "id");
    let code = resource
        .pointer("/code/coding/0/code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "Observation" => {
            if let Some(quantity) = resource.get("valueQuantity") {
                format!(
                    "Observation/{id} {code} {} {}{} {}",
                    text(resource, "effectiveDateTime"),
                    text(quantity, "comparator"),
                    quantity
                        .get("value")
                        .map(Value::to_string)
                        .unwrap_or_default(),
                    text(quantity, "code")
                )
            } else if let Some(sampled) = resource.get("valueSampledData") {
                let samples = text(sampled, "data")
                    .split(' ')
                    .filter(|t| *t != "E")
                    .count();
                format!(
                    "Observation/{id} {code} {} .. {} {} samples ({}) {}",
                    resource
                        .pointer("/effectivePeriod/start")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    resource
                        .pointer("/effectivePeriod/end")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    samples,
                    resource
                        .pointer("/valueSampledData/origin/code")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    text(resource, "status")
                )
            } else {
                format!("Observation/{id} {code} {}", text(resource, "status"))
            }
        }
        "OperationOutcome" => format!(
            "OperationOutcome: {}",
            resource
                .pointer("/issue/0/diagnostics")
                .or_else(|| resource.pointer("/issue/0/details/text"))
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        _ => format!("{kind}/{id}"),
    }
}

fn fhir_failure(what: &str, status: u16, body: &Value) -> anyhow::Error {
    let diagnostics = body
        .pointer("/issue/0/diagnostics")
        .or_else(|| body.pointer("/issue/0/details/text"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let hint = if status == 401 {
        " (expired: `medvault diga token`; or the pairing was revoked)"
    } else {
        ""
    };
    anyhow!("{what}: {status} {diagnostics}{hint}")
}

/// What the state file keeps.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pairing {
    pub(crate) server: String,
    pub(crate) token_endpoint: String,
    pub(crate) revocation_endpoint: String,
    pub(crate) client_id: String,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) pairing_id: String,
    pub(crate) scope: String,
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
}

fn short(token: &str) -> String {
    if token.len() > 24 {
        let start: String = token.chars().take(16).collect();
        format!("{start}…({} chars)", token.len())
    } else {
        token.to_owned()
    }
}

/// A string member of a JSON object (`""` when absent).
fn text<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// The DiGA's HTTP client: mTLS with its certificate, no redirects, HTTPS
/// only; prints each exchange with `-v`.
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    verbose: bool,
}

impl Http {
    pub(crate) fn new(
        cert: &Path,
        key: &Path,
        tls_ca: Option<&Path>,
        verbose: bool,
    ) -> anyhow::Result<Self> {
        let mut identity = std::fs::read(cert).with_context(|| format!("{}", cert.display()))?;
        identity.extend(std::fs::read(key).with_context(|| format!("{}", key.display()))?);
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .identity(
                reqwest::Identity::from_pem(&identity).context("client certificate and key")?,
            );
        if let Some(ca) = tls_ca {
            let pem = std::fs::read(ca).with_context(|| format!("{}", ca.display()))?;
            builder = builder.tls_certs_only(
                reqwest::Certificate::from_pem_bundle(&pem).context("TLS CA certificate")?,
            );
        }
        Ok(Self {
            client: builder.build().context("HTTP client")?,
            verbose,
        })
    }

    pub(crate) async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: no answer"))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if self.verbose {
            let mut shown = body.clone();
            if let Some(object) = shown.as_object_mut() {
                for field in ["access_token", "refresh_token"] {
                    if let Some(Value::String(token)) = object.get_mut(field) {
                        *token = short(token);
                    }
                }
            }
            eprintln!("< {what}: {status} {shown}");
        }
        Ok((status, body))
    }

    pub(crate) async fn form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        what: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            body.append_pair(name, value);
        }
        if self.verbose {
            let names: Vec<&str> = form.iter().map(|(name, _)| *name).collect();
            eprintln!("> POST {url} ({})", names.join(", "));
        }
        self.exchange(
            self.client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.finish()),
            what,
        )
        .await
    }
}

fn oauth_failure(what: &str, status: u16, body: &Value) -> anyhow::Error {
    anyhow!(
        "{what} refused: {status} {} ({})",
        text(body, "error"),
        text(body, "error_description")
    )
}

/// The hosts a HIIS-VZ export lists (Endpoint addresses).
fn hiis_hosts(path: &Path) -> anyhow::Result<Vec<String>> {
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("{}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("resource"))
        .filter(|resource| text(resource, "resourceType") == "Endpoint")
        .map(|resource| text(resource, "address"))
        .filter_map(|address| url::Url::parse(address).ok())
        .filter_map(|url| url.host_str().map(str::to_owned))
        .collect())
}

pub(crate) fn random_b64(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    medvault_crypto::random_fill(&mut buffer).map_err(|_| anyhow!("no randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

pub(crate) fn save(path: &Path, pairing: &Pairing) -> anyhow::Result<()> {
    crate::user::write_private(path, &serde_json::to_vec_pretty(pairing)?)
}

fn load(path: &Path) -> anyhow::Result<Pairing> {
    serde_json::from_slice(
        &std::fs::read(path)
            .with_context(|| format!("{} (pair first: medvault diga pair)", path.display()))?,
    )
    .with_context(|| format!("{} is not a pairing state file", path.display()))
}

/// Waits for the browser's request on a loopback redirect URI and returns
/// the URL it asked for.
async fn catch_redirect(redirect: &url::Url) -> anyhow::Result<url::Url> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = redirect
        .port()
        .ok_or_else(|| anyhow!("the loopback redirect URI needs a port"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    let (mut stream, _) = listener.accept().await?;
    let mut buffer = vec![0u8; 8192];
    let read = stream.read(&mut buffer).await?;
    buffer.truncate(read);
    let head = String::from_utf8_lossy(&buffer).into_owned();
    let target = head
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("the browser sent no request line"))?;
    let page = "Die Kopplung ist abgeschlossen. Sie können dieses Fenster schließen. / Pairing done; you may close this window.";
    let _ = stream
        .write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            )
            .as_bytes(),
        )
        .await;
    redirect.join(target).context("the redirect target")
}

/// Runs a `medvault diga` command.
pub async fn diga(args: DigaArgs, command: DigaCommand) -> anyhow::Result<()> {
    match command {
        DigaCommand::Pair {
            server,
            client_id,
            client_cert,
            client_key,
            redirect_uri,
            scope,
            prescription_end,
            hiis,
            tls_ca,
        } => {
            let host = server
                .host_str()
                .ok_or_else(|| anyhow!("the server URL has no host"))?;
            if let Some(hiis) = &hiis {
                let hosts = hiis_hosts(hiis)?;
                if !hosts.iter().any(|listed| listed == host) {
                    bail!(
                        "{host} is not registered in the HIIS-VZ export {}: a DiGA must not pair with it",
                        hiis.display()
                    );
                }
            }
            let http = Http::new(&client_cert, &client_key, tls_ca.as_deref(), args.verbose)?;
            let issuer = server.as_str().trim_end_matches('/');
            let metadata_url = format!("{issuer}/.well-known/oauth-authorization-server");
            if args.verbose {
                eprintln!("> GET {metadata_url}");
            }
            let (status, metadata) = http
                .exchange(http.client.get(&metadata_url), "metadata")
                .await?;
            if status != 200 {
                bail!("metadata: {status}");
            }
            let endpoint = |name: &str| {
                metadata
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("the metadata has no {name}"))
            };
            // RFC 8414 §3.3: the metadata must name the server it came from.
            if text(&metadata, "issuer").trim_end_matches('/') != issuer {
                bail!(
                    "the metadata names another issuer ({}): refusing it",
                    text(&metadata, "issuer")
                );
            }
            if metadata.get("require_pushed_authorization_requests") != Some(&Value::Bool(true)) {
                bail!("the server does not require PAR: not an HDDT authorization server");
            }
            let verifier = random_b64(32)?;
            let challenge = URL_SAFE_NO_PAD.encode(medvault_crypto::sha256(verifier.as_bytes()));
            let state = random_b64(16)?;
            let mut form = vec![
                ("client_id", client_id.as_str()),
                ("response_type", "code"),
                ("code_challenge_method", "S256"),
                ("code_challenge", challenge.as_str()),
                ("redirect_uri", redirect_uri.as_str()),
                ("scope", scope.as_str()),
                ("state", state.as_str()),
            ];
            if let Some(end) = &prescription_end {
                form.push(("prescription_end", end));
            }
            let (status, pushed) = http
                .form(
                    &endpoint("pushed_authorization_request_endpoint")?,
                    &form,
                    "PAR",
                )
                .await?;
            if status != 201 && status != 200 {
                return Err(oauth_failure("PAR", status, &pushed));
            }
            let request_uri = pushed
                .get("request_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("PAR answered without request_uri"))?;
            let mut authorize = url::Url::parse(&endpoint("authorization_endpoint")?)?;
            authorize
                .query_pairs_mut()
                .append_pair("client_id", &client_id)
                .append_pair("request_uri", request_uri);
            println!("open in the patient's browser: {authorize}");
            std::io::stdout().flush()?;
            let redirect = url::Url::parse(&redirect_uri).context("redirect_uri")?;
            let landed = if redirect.scheme() == "http"
                && matches!(redirect.host_str(), Some("127.0.0.1" | "localhost"))
            {
                catch_redirect(&redirect).await?
            } else {
                println!("paste the URL the browser ends on:");
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                url::Url::parse(line.trim()).context("the pasted URL")?
            };
            let query = |name: &str| {
                landed
                    .query_pairs()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.into_owned())
            };
            if query("state").as_deref() != Some(state.as_str()) {
                bail!("the redirect's state is not ours: refusing it (possible CSRF)");
            }
            // RFC 9207: the server says it sends `iss`; a redirect without it,
            // or naming another server, is not this pairing's.
            match query("iss") {
                Some(iss) if iss.trim_end_matches('/') == issuer => {}
                Some(iss) => {
                    bail!("the redirect names another issuer ({iss}): refusing it (mix-up)")
                }
                None if metadata.get("authorization_response_iss_parameter_supported")
                    == Some(&Value::Bool(true)) =>
                {
                    bail!("the redirect carries no iss although the server sends it: refusing it")
                }
                None => {}
            }
            if let Some(error) = query("error") {
                bail!(
                    "the patient's answer: {error} ({})",
                    query("error_description").unwrap_or_default()
                );
            }
            let code = query("code").ok_or_else(|| anyhow!("the redirect has no code"))?;
            let (status, tokens) = http
                .form(
                    &endpoint("token_endpoint")?,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("code_verifier", &verifier),
                        ("redirect_uri", &redirect_uri),
                        ("client_id", &client_id),
                    ],
                    "token",
                )
                .await?;
            if status != 200 {
                return Err(oauth_failure("token", status, &tokens));
            }
            let pairing = Pairing {
                server: issuer.to_owned(),
                token_endpoint: endpoint("token_endpoint")?,
                revocation_endpoint: endpoint("revocation_endpoint")?,
                client_id,
                client_cert,
                client_key,
                tls_ca,
                pairing_id: text(&tokens, "sub").to_owned(),
                scope: text(&tokens, "scope").to_owned(),
                access_token: text(&tokens, "access_token").to_owned(),
                refresh_token: text(&tokens, "refresh_token").to_owned(),
            };
            save(&args.state_file, &pairing)?;
            println!("paired: Pairing ID {}", pairing.pairing_id);
            println!("scope: {}", pairing.scope);
            Ok(())
        }
        DigaCommand::Token => {
            let (mut pairing, http) = resume(&args)?;
            let (status, tokens) = http
                .form(
                    &pairing.token_endpoint,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &pairing.refresh_token),
                        ("client_id", &pairing.client_id),
                    ],
                    "refresh",
                )
                .await?;
            if status != 200 {
                return Err(oauth_failure("refresh", status, &tokens));
            }
            pairing.access_token = text(&tokens, "access_token").to_owned();
            pairing.refresh_token = text(&tokens, "refresh_token").to_owned();
            pairing.scope = text(&tokens, "scope").to_owned();
            save(&args.state_file, &pairing)?;
            println!(
                "refreshed: Pairing ID {}, access token valid {} s",
                pairing.pairing_id,
                tokens
                    .get("expires_in")
                    .and_then(Value::as_i64)
                    .unwrap_or_default()
            );
            println!("scope: {}", pairing.scope);
            Ok(())
        }
        DigaCommand::Fetch {
            query,
            all,
            json,
            fhir_base: given,
        } => {
            let (pairing, http) = resume(&args)?;
            let base = fhir_base(&pairing, given.as_deref())?;
            let mut url = format!("{base}/{}", query.trim_start_matches('/'));
            let mut count = 0;
            for _page in 0..10_000 {
                if args.verbose {
                    eprintln!("> GET {url}");
                }
                let (status, body) = http
                    .exchange(
                        http.client
                            .get(&url)
                            .bearer_auth(&pairing.access_token)
                            .header("accept", "application/fhir+json"),
                        "fhir",
                    )
                    .await?;
                if status != 200 {
                    return Err(fhir_failure("fhir", status, &body));
                }
                if json {
                    println!("{body}");
                } else if text(&body, "resourceType") == "Bundle" {
                    for entry in body
                        .get("entry")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let mode = entry
                            .pointer("/search/mode")
                            .and_then(Value::as_str)
                            .unwrap_or("match");
                        let resource = entry.get("resource").unwrap_or(&Value::Null);
                        if mode == "match" {
                            count += 1;
                        }
                        println!(
                            "{}{}",
                            if mode == "match" { "" } else { "  + " },
                            describe(resource)
                        );
                    }
                } else {
                    count += 1;
                    println!("{}", describe(&body));
                }
                let next = body
                    .get("link")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|link| text(link, "relation") == "next")
                    .map(|link| text(link, "url").to_owned());
                match next {
                    Some(next) if all && next.starts_with(&base) => url = next,
                    _ => break,
                }
            }
            if !json {
                println!("{count} resource(s)");
            }
            Ok(())
        }
        DigaCommand::Summary {
            start,
            end,
            related,
            json,
            fhir_base: given,
        } => {
            let (pairing, http) = resume(&args)?;
            let base = fhir_base(&pairing, given.as_deref())?;
            let mut parameters = Vec::new();
            if let Some(start) = start {
                parameters.push(
                    serde_json::json!({"name": "effectivePeriodStart", "valueDateTime": start}),
                );
            }
            if let Some(end) = end {
                parameters
                    .push(serde_json::json!({"name": "effectivePeriodEnd", "valueDateTime": end}));
            }
            if related {
                parameters.push(serde_json::json!({"name": "related", "valueBoolean": true}));
            }
            let body = serde_json::json!({"resourceType": "Parameters", "parameter": parameters});
            let url = format!("{base}/Observation/$hddt-cgm-summary");
            if args.verbose {
                eprintln!("> POST {url} {body}");
            }
            let (status, answer) = http
                .exchange(
                    http.client
                        .post(&url)
                        .bearer_auth(&pairing.access_token)
                        .header("content-type", "application/fhir+json")
                        .header("accept", "application/fhir+json")
                        .body(body.to_string()),
                    "summary",
                )
                .await?;
            if status != 200 {
                return Err(fhir_failure("summary", status, &answer));
            }
            if json {
                println!("{answer}");
                return Ok(());
            }
            if text(&answer, "resourceType") == "OperationOutcome" {
                println!("{}", describe(&answer));
                return Ok(());
            }
            for entry in answer
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let resource = entry.get("resource").unwrap_or(&Value::Null);
                let code = resource
                    .pointer("/code/coding/0/code")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let value = resource.get("valueQuantity").map(|q| {
                    format!(
                        "{} {}",
                        q.get("value").map(Value::to_string).unwrap_or_default(),
                        text(q, "code")
                    )
                });
                let components: Vec<String> = resource
                    .get("component")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{}={}%",
                            c.pointer("/code/coding/0/code")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                            c.pointer("/valueQuantity/value")
                                .map(Value::to_string)
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                match (text(resource, "resourceType"), value) {
                    ("Observation", Some(value)) => println!("{code}: {value}"),
                    ("Observation", None) if !components.is_empty() => {
                        println!("{code}: {}", components.join(" "));
                    }
                    ("Observation", None) => println!("{code}: summary"),
                    (kind, _) => println!("{kind}/{}", text(resource, "id")),
                }
            }
            Ok(())
        }
        DigaCommand::Unpair => {
            let (pairing, http) = resume(&args)?;
            let (status, body) = http
                .form(
                    &pairing.revocation_endpoint,
                    &[
                        ("token", &pairing.refresh_token),
                        ("token_type_hint", "refresh_token"),
                        ("client_id", &pairing.client_id),
                    ],
                    "revoke",
                )
                .await?;
            if status != 200 {
                return Err(oauth_failure("revoke", status, &body));
            }
            std::fs::remove_file(&args.state_file)
                .with_context(|| format!("{}", args.state_file.display()))?;
            println!("unpaired: Pairing ID {}", pairing.pairing_id);
            Ok(())
        }
    }
}
