//! `medvault diga pair|token|unpair`: the DiGA reference client, what a DiGA
//! developer uses to try an HDDT integration against any Device Data
//! Recorder. It speaks only the guide's protocol (RFC 8414 metadata, PAR,
//! PKCE S256, tokens, RFC 7009 revocation) over mTLS with the DiGA's own
//! certificate, checks the server's FQDN against a local HIIS-VZ file when
//! given one, and keeps the tokens in a state file (mode 0600). `-v` prints
//! each HTTP exchange (tokens shortened; the key is never printed). The
//! protocol is the SDK's (`medvault_client::diga`); this module adds the
//! command line, the browser hand-off and the state file.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use medvault_client::ClientError;
use medvault_client::diga::{DigaClient, Event};
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
fn resume(args: &DigaArgs) -> anyhow::Result<(Pairing, DigaClient)> {
    let pairing = load(&args.state_file)?;
    let client = client(
        &pairing.client_cert,
        &pairing.client_key,
        pairing.tls_ca.as_deref(),
        args.verbose,
    )?;
    Ok((pairing, client))
}

/// The FHIR base: given, or the access token's `aud`.
fn fhir_base(pairing: &Pairing, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(base) = given {
        return Ok(base.trim_end_matches('/').to_owned());
    }
    medvault_client::diga::token_audience(&pairing.access_token)
        .ok_or_else(|| anyhow!("the access token names no https audience: pass --fhir-base"))
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

/// A refused FHIR request, with a hint where one helps.
fn fhir_failure(what: &str, error: ClientError) -> anyhow::Error {
    let hint = if error.status() == Some(401) {
        " (expired: `medvault diga token`; or the pairing was revoked)"
    } else {
        ""
    };
    anyhow!("{what}: {error}{hint}")
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

/// The SDK's DiGA client with the certificate and key files; with
/// `verbose`, every exchange is printed on stderr (tokens shortened).
pub(crate) fn client(
    cert: &Path,
    key: &Path,
    tls_ca: Option<&Path>,
    verbose: bool,
) -> anyhow::Result<DigaClient> {
    let mut identity = std::fs::read(cert).with_context(|| format!("{}", cert.display()))?;
    identity.extend(std::fs::read(key).with_context(|| format!("{}", key.display()))?);
    let ca = tls_ca
        .map(|path| std::fs::read(path).with_context(|| format!("{}", path.display())))
        .transpose()?;
    let client = DigaClient::new(&identity, ca.as_deref())?;
    Ok(if verbose {
        client.observed(std::sync::Arc::new(print_exchange))
    } else {
        client
    })
}

fn print_exchange(event: &Event<'_>) {
    match event {
        Event::Request {
            method,
            url,
            fields,
        } if fields.is_empty() => eprintln!("> {method} {url}"),
        Event::Request {
            method,
            url,
            fields,
        } => eprintln!("> {method} {url} ({})", fields.join(", ")),
        Event::Response { what, status, body } => {
            let mut shown = (*body).clone();
            if let Some(object) = shown.as_object_mut() {
                for field in ["access_token", "refresh_token"] {
                    if let Some(Value::String(token)) = object.get_mut(field) {
                        *token = short(token);
                    }
                }
            }
            eprintln!("< {what}: {status} {shown}");
        }
    }
}

/// A refused OAuth request.
fn oauth_failure(what: &str, error: ClientError) -> anyhow::Error {
    match error {
        ClientError::Api {
            status,
            title,
            detail,
            ..
        } => anyhow!(
            "{what} refused: {status} {title} ({})",
            detail.unwrap_or_default()
        ),
        other => anyhow!("{what}: {other}"),
    }
}

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
            let diga = client(&client_cert, &client_key, tls_ca.as_deref(), args.verbose)?;
            let metadata = diga
                .discover(server.as_str())
                .await
                .map_err(|error| oauth_failure("metadata", error))?;
            let pending = diga
                .push_authorization(
                    &metadata,
                    &client_id,
                    &redirect_uri,
                    &scope,
                    prescription_end.as_deref(),
                )
                .await
                .map_err(|error| oauth_failure("PAR", error))?;
            println!("open in the patient's browser: {}", pending.authorize_url);
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
            let code =
                DigaClient::code_from_redirect(&metadata, &pending, &landed).map_err(|error| {
                    match error {
                        ClientError::Api { title, detail, .. } => anyhow!(
                            "the patient's answer: {title} ({})",
                            detail.unwrap_or_default()
                        ),
                        other => anyhow!("refusing the redirect: {other}"),
                    }
                })?;
            let tokens = diga
                .redeem_code(
                    &metadata,
                    &client_id,
                    &redirect_uri,
                    &code,
                    &pending.verifier,
                )
                .await
                .map_err(|error| oauth_failure("token", error))?;
            let pairing = Pairing {
                server: metadata.issuer.clone(),
                token_endpoint: metadata.token_endpoint.clone(),
                revocation_endpoint: metadata.revocation_endpoint.clone(),
                client_id,
                client_cert,
                client_key,
                tls_ca,
                pairing_id: tokens.pairing_id,
                scope: tokens.scope,
                access_token: tokens.access_token,
                refresh_token: tokens.refresh_token,
            };
            save(&args.state_file, &pairing)?;
            println!("paired: Pairing ID {}", pairing.pairing_id);
            println!("scope: {}", pairing.scope);
            Ok(())
        }
        DigaCommand::Token => {
            let (mut pairing, diga) = resume(&args)?;
            let tokens = diga
                .refresh(
                    &pairing.token_endpoint,
                    &pairing.client_id,
                    &pairing.refresh_token,
                )
                .await
                .map_err(|error| oauth_failure("refresh", error))?;
            pairing.access_token = tokens.access_token;
            pairing.refresh_token = tokens.refresh_token;
            pairing.scope = tokens.scope;
            save(&args.state_file, &pairing)?;
            println!(
                "refreshed: Pairing ID {}, access token valid {} s",
                pairing.pairing_id, tokens.expires_in
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
            let (pairing, diga) = resume(&args)?;
            let base = fhir_base(&pairing, given.as_deref())?;
            let mut url = format!("{base}/{}", query.trim_start_matches('/'));
            let mut count = 0;
            for _page in 0..10_000 {
                let body = diga
                    .fhir_get(&url, &pairing.access_token)
                    .await
                    .map_err(|error| fhir_failure("fhir", error))?;
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
            let (pairing, diga) = resume(&args)?;
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
            let answer = diga
                .cgm_summary(&base, &pairing.access_token, &body)
                .await
                .map_err(|error| fhir_failure("summary", error))?;
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
            let (pairing, diga) = resume(&args)?;
            diga.revoke(
                &pairing.revocation_endpoint,
                &pairing.client_id,
                &pairing.refresh_token,
            )
            .await
            .map_err(|error| oauth_failure("revoke", error))?;
            std::fs::remove_file(&args.state_file)
                .with_context(|| format!("{}", args.state_file.display()))?;
            println!("unpaired: Pairing ID {}", pairing.pairing_id);
            Ok(())
        }
    }
}
