//! Server configuration: raw settings in, a validated [`Config`] out.
//!
//! Settings come from a TOML file (`--config`), environment variables
//! (`MEDVAULT_*`) and flags; the CLI merges them (flag > environment > file >
//! default) into a [`RawConfig`], and [`Config::from_raw`] validates it once at
//! start. A bad setting is a [`ConfigError`] that names the setting: the binary
//! prints it on one line and exits with code 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// Every setting, as read (all optional). Field names are the TOML keys; the
/// environment variable is `MEDVAULT_` + the upper-case name.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where medvault keeps its files (database, development certificates, keys).
    pub data_dir: Option<PathBuf>,
    /// Address of the patient listener (portal, account API, `/authorize`).
    pub listen: Option<String>,
    /// Address of the HDDT listener (mutual TLS).
    pub hddt_listen: Option<String>,
    /// Database URL: `sqlite://FILE` or `postgres://...`.
    pub database: Option<String>,
    /// Development mode: generated certificates, derived base URLs.
    pub dev: Option<bool>,
    /// PEM file with the server certificate chain (leaf first).
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the server's PKCS#8 private key.
    pub tls_key: Option<PathBuf>,
    /// The public host name of the server (must be in the certificate's SAN).
    pub fqdn: Option<String>,
    /// Public base URL of the patient-facing API and portal.
    pub public_base_url: Option<String>,
    /// The OAuth `issuer` (RFC 8414), registered in the HIIS-VZ.
    pub oauth_issuer: Option<String>,
    /// Public base URL of the FHIR API, registered in the HIIS-VZ.
    pub fhir_base_url: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: Option<u64>,
    /// Largest sealed document body, in bytes (its upload may be larger).
    pub max_document_bytes: Option<u64>,
    /// The exact URLs the Account App may send users back to.
    pub account_app_return_urls: Option<Vec<String>>,
    /// How long a login session lasts, in seconds.
    pub session_lifetime_secs: Option<u64>,
    /// Longest a request may take, in seconds.
    pub request_timeout_secs: Option<u64>,
    /// Longest a TLS handshake may take, in seconds.
    pub handshake_timeout_secs: Option<u64>,
    /// Most connections (handshaking or open) per listener.
    pub max_connections: Option<usize>,
    /// Most connections per listener from one peer address.
    pub max_connections_per_ip: Option<usize>,
    /// How long shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: Option<u64>,
    /// How long audit entries are kept, in days (never less than 30).
    pub audit_retention_days: Option<u64>,
    /// How often the client-certificate allow-list is re-read from the database, in seconds.
    pub allowlist_refresh_secs: Option<u64>,
    /// After how many seconds without a successful reload the allow-list refuses
    /// every certificate (fail closed; HDDT allows at most 4 h).
    pub allowlist_max_age_secs: Option<u64>,
    /// How many refused mTLS requests per second are written to the audit trail
    /// one by one; the rest are counted into the next entry.
    pub audit_denied_per_second: Option<u32>,
    /// Log format: `text` or `json`.
    pub log_format: Option<String>,
    /// The `client_id`s of user agents trusted to request Patient Credentials.
    pub credential_trusted_clients: Option<Vec<String>>,
    /// The `aud` of Patient Credentials (default: this server's `did:web`).
    pub credential_audience: Option<String>,
    /// How long a Patient Credential is valid, in days.
    pub credential_lifetime_days: Option<u64>,
    /// The longest `exp - iat` of a credential request, in seconds.
    pub credential_request_lifetime_secs: Option<u64>,
    /// Clock difference allowed on credential requests, credentials and presentations.
    pub credential_clock_skew_secs: Option<u64>,
    /// Failed logins of one account before locks begin.
    pub login_free_account_failures: Option<i64>,
    /// Failed logins from one address before locks begin.
    pub login_free_address_failures: Option<i64>,
    /// The longest login lock, in seconds.
    pub login_max_lock_secs: Option<u64>,
    /// Reverse proxies (IP addresses or CIDR networks) whose `X-Forwarded-For`
    /// names the client.
    pub trusted_proxies: Option<Vec<String>>,
    /// The canonical base of the HDDT MIV ValueSets.
    pub value_set_base: Option<String>,
    /// The DiGA-VZ file (default `<data_dir>/diga-vz.json`).
    pub diga_registry_file: Option<PathBuf>,
    /// How often the DiGA-VZ is re-read.
    pub registry_refresh_secs: Option<u64>,
    /// How old the DiGA-VZ may be before requests relying on it are refused.
    pub registry_max_age_secs: Option<u64>,
    /// How long a DiGA may be inactive or unlisted before its pairings end.
    pub diga_unpair_grace_secs: Option<u64>,
    /// How long a reused code or refresh token counts as a lost response.
    pub token_reuse_grace_secs: Option<u64>,
    /// Access token lifetime.
    pub access_token_lifetime_secs: Option<u64>,
    /// Requests per second one DiGA may make on the HDDT listener.
    pub hddt_rate_per_client: Option<u32>,
    /// BfArM's DiGA-VZ FHIR API (e.g. `https://diga.bfarm.de/api/fhir/v3.0/`);
    /// when set it replaces the file source.
    pub diga_registry_url: Option<String>,
    /// Extra CA certificates (PEM) to trust for `diga_registry_url`.
    pub diga_registry_ca_file: Option<PathBuf>,
    /// How many days of device data the FHIR API serves.
    pub hddt_historic_days: Option<u64>,
    /// The fixed span of a CGM chunk Observation.
    pub cgm_chunk_secs: Option<u64>,
    /// Delay-From-Real-Time: a Device without data for longer is `unknown`.
    pub device_sync_delay_secs: Option<u64>,
    /// The largest reading upload.
    pub max_upload_bytes: Option<u64>,
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::new("config", format!("cannot read {}: {error}", path.display()))
        })?;
        toml::from_str(&text).map_err(|error| {
            let message = error.message().replace('\n', " ");
            ConfigError::new("config", format!("{}: {message}", path.display()))
        })
    }

    /// Fills every unset field of `self` from `lower` (`self` wins).
    pub fn or(self, lower: RawConfig) -> RawConfig {
        RawConfig {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            hddt_listen: self.hddt_listen.or(lower.hddt_listen),
            database: self.database.or(lower.database),
            dev: self.dev.or(lower.dev),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            fqdn: self.fqdn.or(lower.fqdn),
            public_base_url: self.public_base_url.or(lower.public_base_url),
            oauth_issuer: self.oauth_issuer.or(lower.oauth_issuer),
            fhir_base_url: self.fhir_base_url.or(lower.fhir_base_url),
            body_limit_bytes: self.body_limit_bytes.or(lower.body_limit_bytes),
            max_document_bytes: self.max_document_bytes.or(lower.max_document_bytes),
            account_app_return_urls: self
                .account_app_return_urls
                .or(lower.account_app_return_urls),
            session_lifetime_secs: self.session_lifetime_secs.or(lower.session_lifetime_secs),
            request_timeout_secs: self.request_timeout_secs.or(lower.request_timeout_secs),
            handshake_timeout_secs: self.handshake_timeout_secs.or(lower.handshake_timeout_secs),
            shutdown_grace_secs: self.shutdown_grace_secs.or(lower.shutdown_grace_secs),
            audit_retention_days: self.audit_retention_days.or(lower.audit_retention_days),
            allowlist_refresh_secs: self.allowlist_refresh_secs.or(lower.allowlist_refresh_secs),
            audit_denied_per_second: self
                .audit_denied_per_second
                .or(lower.audit_denied_per_second),
            allowlist_max_age_secs: self.allowlist_max_age_secs.or(lower.allowlist_max_age_secs),
            max_connections: self.max_connections.or(lower.max_connections),
            max_connections_per_ip: self.max_connections_per_ip.or(lower.max_connections_per_ip),
            log_format: self.log_format.or(lower.log_format),
            credential_trusted_clients: self
                .credential_trusted_clients
                .or(lower.credential_trusted_clients),
            credential_audience: self.credential_audience.or(lower.credential_audience),
            credential_lifetime_days: self
                .credential_lifetime_days
                .or(lower.credential_lifetime_days),
            credential_request_lifetime_secs: self
                .credential_request_lifetime_secs
                .or(lower.credential_request_lifetime_secs),
            credential_clock_skew_secs: self
                .credential_clock_skew_secs
                .or(lower.credential_clock_skew_secs),
            login_free_account_failures: self
                .login_free_account_failures
                .or(lower.login_free_account_failures),
            login_free_address_failures: self
                .login_free_address_failures
                .or(lower.login_free_address_failures),
            login_max_lock_secs: self.login_max_lock_secs.or(lower.login_max_lock_secs),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            value_set_base: self.value_set_base.or(lower.value_set_base),
            diga_registry_file: self.diga_registry_file.or(lower.diga_registry_file),
            registry_refresh_secs: self.registry_refresh_secs.or(lower.registry_refresh_secs),
            registry_max_age_secs: self.registry_max_age_secs.or(lower.registry_max_age_secs),
            diga_unpair_grace_secs: self.diga_unpair_grace_secs.or(lower.diga_unpair_grace_secs),
            token_reuse_grace_secs: self.token_reuse_grace_secs.or(lower.token_reuse_grace_secs),
            access_token_lifetime_secs: self
                .access_token_lifetime_secs
                .or(lower.access_token_lifetime_secs),
            hddt_rate_per_client: self.hddt_rate_per_client.or(lower.hddt_rate_per_client),
            diga_registry_url: self.diga_registry_url.or(lower.diga_registry_url),
            diga_registry_ca_file: self.diga_registry_ca_file.or(lower.diga_registry_ca_file),
            hddt_historic_days: self.hddt_historic_days.or(lower.hddt_historic_days),
            cgm_chunk_secs: self.cgm_chunk_secs.or(lower.cgm_chunk_secs),
            device_sync_delay_secs: self.device_sync_delay_secs.or(lower.device_sync_delay_secs),
            max_upload_bytes: self.max_upload_bytes.or(lower.max_upload_bytes),
        }
    }
}

/// A setting that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    /// The setting's name (TOML key).
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

/// Which database the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// The embedded file.
    Sqlite(PathBuf),
    /// A shared PostgreSQL (the URL may hold a password: never log it).
    Postgres(String),
}

/// Where the server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Operator-provided PEM files.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// PKCS#8 private key.
        key: PathBuf,
    },
    /// A development CA and server certificate generated in the data directory.
    Development,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where medvault keeps its files.
    pub data_dir: PathBuf,
    /// Patient listener address.
    pub listen: SocketAddr,
    /// HDDT (mTLS) listener address.
    pub hddt_listen: SocketAddr,
    /// The database.
    pub database: DatabaseConfig,
    /// Development mode.
    pub dev: bool,
    /// The server certificate.
    pub tls: TlsSource,
    /// The public host name.
    pub fqdn: String,
    /// Public base URL of the patient API.
    pub public_base_url: Url,
    /// The OAuth issuer.
    pub oauth_issuer: Url,
    /// Public base URL of the FHIR API.
    pub fhir_base_url: Url,
    /// Largest request body.
    pub body_limit_bytes: usize,
    /// Largest sealed document body (the document upload route alone takes
    /// bodies up to about 4/3 of this, for base64, plus 64 KiB).
    pub max_document_bytes: usize,
    /// The exact URLs the Account App may send users back to (https, or
    /// http on a loopback host in development mode).
    pub account_app_return_urls: Vec<Url>,
    /// How long a login session lasts (absolute, from login).
    pub session_lifetime: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// TLS handshake timeout.
    pub handshake_timeout: Duration,
    /// Most connections per listener.
    pub max_connections: usize,
    /// Most connections per listener from one peer address.
    pub max_connections_per_ip: usize,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Audit retention, in days (at least 30).
    pub audit_retention_days: u64,
    /// Allow-list refresh interval.
    pub allowlist_refresh: Duration,
    /// Longest the allow-list may go without a successful reload.
    pub allowlist_max_age: Duration,
    /// Refused mTLS requests audited one by one per second.
    pub audit_denied_per_second: u32,
    /// Log format.
    pub log_format: LogFormat,
    /// User agents trusted to request Patient Credentials (default: `medvault-cli`).
    pub credential_trusted_clients: Vec<String>,
    /// The `aud` of Patient Credentials; `None`: this server's `did:web`.
    pub credential_audience: Option<String>,
    /// How long a Patient Credential is valid (default 365 days).
    pub credential_lifetime: Duration,
    /// The longest `exp - iat` of a credential request (default 300 s).
    pub credential_request_lifetime: Duration,
    /// Clock difference allowed on credential requests, credentials and
    /// presentations (default 60 s).
    pub credential_clock_skew: Duration,
    /// Failed logins of one account before locks begin (default 5).
    pub login_free_account_failures: i64,
    /// Failed logins from one address before locks begin (default 20).
    pub login_free_address_failures: i64,
    /// The longest login lock (default 15 minutes).
    pub login_max_lock: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed (default none).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The canonical base of the HDDT MIV ValueSets (default gematik's of
    /// guide 1.0.1; the ZTS may publish them under another).
    pub value_set_base: String,
    /// The DiGA-VZ file.
    pub diga_registry_file: PathBuf,
    /// How often the DiGA-VZ is re-read (default 60 s).
    pub registry_refresh: Duration,
    /// The DiGA-VZ's maximum cache age (default and maximum 4 h).
    pub registry_max_age: Duration,
    /// How long a DiGA may be inactive or unlisted before its pairings end
    /// (default 24 h).
    pub diga_unpair_grace: Duration,
    /// How long after its first use a reused code or refresh token counts as
    /// a lost response, not a theft (default 30 s).
    pub token_reuse_grace: Duration,
    /// Access token lifetime (default 600 s).
    pub access_token_lifetime: Duration,
    /// Requests per second one DiGA may make on the HDDT listener (default
    /// 500, twice that as a burst; the guide's SLA asks for at least 50).
    pub hddt_rate_per_client: u32,
    /// BfArM's DiGA-VZ FHIR API base, replacing the file source when set.
    pub diga_registry_url: Option<Url>,
    /// Extra CA certificates (PEM) for `diga_registry_url`.
    pub diga_registry_ca_file: Option<PathBuf>,
    /// How many days of device data the FHIR API serves (default and
    /// minimum 30: the guide's Historic-Data-Period of BG and CGM).
    pub hddt_historic_days: u64,
    /// The fixed span of a CGM chunk (default 3600 s; divides a day).
    pub cgm_chunk: Duration,
    /// Delay-From-Real-Time as registered in the HIIS-VZ (default 900 s).
    pub device_sync_delay: Duration,
    /// The largest reading upload body (default 4 MiB).
    pub max_upload_bytes: usize,
}

/// The `client_id` of medvault's own user agent (SDK and CLI).
pub const DEFAULT_TRUSTED_CLIENT: &str = "medvault-cli";

/// The largest body limit an operator may configure.
const MAX_BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// The largest `max_document_bytes`.
const MAX_DOCUMENT_LIMIT: u64 = 64 * 1024 * 1024;

fn parse_addr(
    setting: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    text.parse().map_err(|_| {
        ConfigError::new(
            setting,
            format!("`{text}` is not an address like 127.0.0.1:8443"),
        )
    })
}

fn parse_base_url(setting: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .map_err(|error| ConfigError::new(setting, format!("`{text}` is not a URL: {error}")))?;
    if url.scheme() != "https" {
        return Err(ConfigError::new(setting, "must be an https:// URL"));
    }
    if url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(ConfigError::new(
            setting,
            "must be https://host[:port][/path] without credentials, query or fragment",
        ));
    }
    Ok(url)
}

fn seconds(
    setting: &'static str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        return Err(ConfigError::new(
            setting,
            format!(
                "must be between {} and {} seconds",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(Duration::from_secs(value))
}

/// Never below 30 days (HDDT): a smaller value is raised, not refused. At most
/// 100 years, so that date arithmetic cannot overflow.
fn retention_days(value: Option<u64>) -> Result<u64, ConfigError> {
    let days = value.unwrap_or(30);
    if days > 36_500 {
        return Err(ConfigError::new(
            "audit_retention_days",
            "must be at most 36500 (100 years)",
        ));
    }
    Ok(days.max(30))
}

impl Config {
    /// Validates raw settings. Relative paths are taken relative to the working directory.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let dev = raw.dev.unwrap_or(false);
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./medvault-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        let listen = parse_addr("listen", raw.listen, "127.0.0.1:8443")?;
        let hddt_listen = parse_addr("hddt_listen", raw.hddt_listen, "127.0.0.1:9443")?;
        if listen == hddt_listen && listen.port() != 0 {
            return Err(ConfigError::new("hddt_listen", "must differ from listen"));
        }
        let database = match raw.database {
            None => DatabaseConfig::Sqlite(data_dir.join("medvault.db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseConfig::Postgres(url)
            }
            Some(url) if url.starts_with("sqlite://") => {
                let path = url.trim_start_matches("sqlite://");
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    return Err(ConfigError::new("database", "sqlite:// needs a file path"));
                }
                DatabaseConfig::Sqlite(PathBuf::from(path))
            }
            Some(_) => {
                return Err(ConfigError::new(
                    "database",
                    "must start with sqlite:// or postgres://",
                ));
            }
        };
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "tls_key",
                    "is required when tls_cert is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "tls_cert",
                    "is required when tls_key is set",
                ));
            }
            (None, None) if dev => TlsSource::Development,
            (None, None) => {
                return Err(ConfigError::new(
                    "tls_cert",
                    "is required outside development mode (use --dev for generated development certificates)",
                ));
            }
        };
        let fqdn = match raw.fqdn {
            Some(fqdn) => fqdn,
            None if dev => "localhost".to_owned(),
            None => {
                return Err(ConfigError::new(
                    "fqdn",
                    "is required outside development mode",
                ));
            }
        };
        if fqdn.is_empty()
            || fqdn.len() > 253
            || !fqdn
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(ConfigError::new(
                "fqdn",
                format!("`{fqdn}` is not a host name"),
            ));
        }
        let base = |setting: &'static str,
                    value: Option<String>,
                    port: u16,
                    path: &str|
         -> Result<Url, ConfigError> {
            match value {
                Some(text) => parse_base_url(setting, &text),
                None if dev => parse_base_url(setting, &format!("https://{fqdn}:{port}{path}")),
                None => Err(ConfigError::new(
                    setting,
                    "is required outside development mode",
                )),
            }
        };
        let public_base_url = base("public_base_url", raw.public_base_url, listen.port(), "")?;
        let oauth_issuer = base("oauth_issuer", raw.oauth_issuer, hddt_listen.port(), "")?;
        let fhir_base_url = base(
            "fhir_base_url",
            raw.fhir_base_url,
            hddt_listen.port(),
            "/fhir",
        )?;
        let max_document = raw.max_document_bytes.unwrap_or(16 * 1024 * 1024);
        if !(64 * 1024..=MAX_DOCUMENT_LIMIT).contains(&max_document) {
            return Err(ConfigError::new(
                "max_document_bytes",
                format!("must be between 65536 and {MAX_DOCUMENT_LIMIT}"),
            ));
        }
        let mut account_app_return_urls = Vec::new();
        for text in raw.account_app_return_urls.iter().flatten() {
            let url = Url::parse(text).map_err(|_| {
                ConfigError::new("account_app_return_urls", "each must be an absolute URL")
            })?;
            let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            let acceptable = url.scheme() == "https"
                || (url.scheme() == "http" && loopback && raw.dev == Some(true));
            if !acceptable || url.fragment().is_some() || url.query().is_some() {
                return Err(ConfigError::new(
                    "account_app_return_urls",
                    "each must be https (http only on localhost in development), without query or fragment",
                ));
            }
            account_app_return_urls.push(url);
        }
        let session_lifetime = raw.session_lifetime_secs.unwrap_or(1800);
        if !(60..=86_400).contains(&session_lifetime) {
            return Err(ConfigError::new(
                "session_lifetime_secs",
                "must be between 60 and 86400",
            ));
        }
        let body_limit = raw.body_limit_bytes.unwrap_or(64 * 1024);
        if !(1024..=MAX_BODY_LIMIT).contains(&body_limit) {
            return Err(ConfigError::new(
                "body_limit_bytes",
                format!("must be between 1024 and {MAX_BODY_LIMIT}"),
            ));
        }
        let allowlist_refresh = seconds(
            "allowlist_refresh_secs",
            raw.allowlist_refresh_secs,
            5,
            1..=3600,
        )?;
        let allowlist_max_age = seconds(
            "allowlist_max_age_secs",
            raw.allowlist_max_age_secs,
            14_400,
            10..=14_400,
        )?;
        if allowlist_max_age < allowlist_refresh * 2 {
            return Err(ConfigError::new(
                "allowlist_max_age_secs",
                "must be at least twice allowlist_refresh_secs",
            ));
        }
        let registry_refresh = seconds(
            "registry_refresh_secs",
            raw.registry_refresh_secs,
            60,
            1..=3600,
        )?;
        let registry_max_age = seconds(
            "registry_max_age_secs",
            raw.registry_max_age_secs,
            14_400,
            10..=14_400,
        )?;
        if registry_max_age < registry_refresh * 2 {
            return Err(ConfigError::new(
                "registry_max_age_secs",
                "must be at least twice registry_refresh_secs",
            ));
        }
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "log_format",
                    format!("`{other}` is neither text nor json"),
                ));
            }
        };
        let credential_trusted_clients = raw
            .credential_trusted_clients
            .unwrap_or_else(|| vec![DEFAULT_TRUSTED_CLIENT.to_owned()]);
        if credential_trusted_clients
            .iter()
            .any(|id| id.is_empty() || id.len() > 128 || id.chars().any(char::is_control))
        {
            return Err(ConfigError::new(
                "credential_trusted_clients",
                "each must be 1 to 128 characters without control characters",
            ));
        }
        if let Some(audience) = &raw.credential_audience
            && (audience.is_empty()
                || audience.len() > 512
                || audience.chars().any(char::is_control))
        {
            return Err(ConfigError::new(
                "credential_audience",
                "must be 1 to 512 characters without control characters",
            ));
        }
        let credential_lifetime_days = raw.credential_lifetime_days.unwrap_or(365);
        if !(1..=1826).contains(&credential_lifetime_days) {
            return Err(ConfigError::new(
                "credential_lifetime_days",
                "must be between 1 and 1826",
            ));
        }
        let count = |setting: &'static str, value: Option<i64>, default: i64, max: i64| {
            let value = value.unwrap_or(default);
            if (1..=max).contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError::new(
                    setting,
                    format!("must be between 1 and {max}"),
                ))
            }
        };
        let mut trusted_proxies = Vec::new();
        for text in raw.trusted_proxies.iter().flatten() {
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "trusted_proxies",
                        "each must be an IP address or a CIDR network",
                    )
                })?;
            trusted_proxies.push(net);
        }
        Ok(Self {
            login_free_account_failures: count(
                "login_free_account_failures",
                raw.login_free_account_failures,
                5,
                1000,
            )?,
            login_free_address_failures: count(
                "login_free_address_failures",
                raw.login_free_address_failures,
                20,
                100_000,
            )?,
            login_max_lock: seconds(
                "login_max_lock_secs",
                raw.login_max_lock_secs,
                900,
                1..=86_400,
            )?,
            trusted_proxies,
            value_set_base: match raw.value_set_base {
                None => medvault_core::hddt::DEFAULT_VALUE_SET_BASE.to_owned(),
                Some(base)
                    if base.starts_with("https://")
                        && base.ends_with('/')
                        && Url::parse(&base).is_ok()
                        && base.len() <= 512 =>
                {
                    base
                }
                Some(_) => {
                    return Err(ConfigError::new(
                        "value_set_base",
                        "must be an https URL ending in /",
                    ));
                }
            },
            diga_registry_file: raw
                .diga_registry_file
                .unwrap_or_else(|| data_dir.join("diga-vz.json")),
            registry_refresh,
            registry_max_age,
            diga_unpair_grace: seconds(
                "diga_unpair_grace_secs",
                raw.diga_unpair_grace_secs,
                86_400,
                0..=30 * 86_400,
            )?,
            token_reuse_grace: seconds(
                "token_reuse_grace_secs",
                raw.token_reuse_grace_secs,
                30,
                0..=300,
            )?,
            diga_registry_url: match raw.diga_registry_url {
                None => None,
                Some(text) => match Url::parse(&text) {
                    Ok(url) if url.scheme() == "https" && url.host_str().is_some() => Some(url),
                    _ => {
                        return Err(ConfigError::new(
                            "diga_registry_url",
                            "must be an https URL",
                        ));
                    }
                },
            },
            diga_registry_ca_file: raw.diga_registry_ca_file,
            hddt_historic_days: match raw.hddt_historic_days.unwrap_or(30) {
                days @ 30..=3650 => days,
                _ => {
                    return Err(ConfigError::new(
                        "hddt_historic_days",
                        "must be between 30 and 3650",
                    ));
                }
            },
            cgm_chunk: match raw.cgm_chunk_secs.unwrap_or(3600) {
                secs @ 300..=86_400
                    if 86_400_u64.is_multiple_of(secs) && secs.is_multiple_of(300) =>
                {
                    Duration::from_secs(secs)
                }
                _ => {
                    return Err(ConfigError::new(
                        "cgm_chunk_secs",
                        "must be a multiple of 300 seconds that divides a day",
                    ));
                }
            },
            device_sync_delay: seconds(
                "device_sync_delay_secs",
                raw.device_sync_delay_secs,
                900,
                60..=7 * 86_400,
            )?,
            max_upload_bytes: match raw.max_upload_bytes.unwrap_or(4 * 1024 * 1024) {
                bytes @ 65_536..=67_108_864 => usize::try_from(bytes).unwrap_or(4 * 1024 * 1024),
                _ => {
                    return Err(ConfigError::new(
                        "max_upload_bytes",
                        "must be between 64 KiB and 64 MiB",
                    ));
                }
            },
            hddt_rate_per_client: match raw.hddt_rate_per_client.unwrap_or(500) {
                rate @ 1..=1_000_000 => rate,
                _ => {
                    return Err(ConfigError::new(
                        "hddt_rate_per_client",
                        "must be between 1 and 1000000",
                    ));
                }
            },
            access_token_lifetime: seconds(
                "access_token_lifetime_secs",
                raw.access_token_lifetime_secs,
                600,
                60..=3600,
            )?,
            credential_trusted_clients,
            credential_audience: raw.credential_audience,
            credential_lifetime: Duration::from_secs(credential_lifetime_days * 86_400),
            credential_request_lifetime: seconds(
                "credential_request_lifetime_secs",
                raw.credential_request_lifetime_secs,
                300,
                30..=3600,
            )?,
            credential_clock_skew: seconds(
                "credential_clock_skew_secs",
                raw.credential_clock_skew_secs,
                60,
                0..=300,
            )?,
            data_dir,
            listen,
            hddt_listen,
            database,
            dev,
            tls,
            fqdn,
            public_base_url,
            oauth_issuer,
            fhir_base_url,
            body_limit_bytes: usize::try_from(body_limit).unwrap_or(usize::MAX),
            max_document_bytes: usize::try_from(max_document).unwrap_or(usize::MAX),
            account_app_return_urls,
            session_lifetime: Duration::from_secs(session_lifetime),
            request_timeout: seconds(
                "request_timeout_secs",
                raw.request_timeout_secs,
                30,
                1..=600,
            )?,
            handshake_timeout: seconds(
                "handshake_timeout_secs",
                raw.handshake_timeout_secs,
                10,
                1..=120,
            )?,
            shutdown_grace: seconds("shutdown_grace_secs", raw.shutdown_grace_secs, 30, 0..=600)?,
            audit_retention_days: retention_days(raw.audit_retention_days)?,
            allowlist_refresh,
            allowlist_max_age,
            max_connections: match raw.max_connections.unwrap_or(2048) {
                limit @ 1..=100_000 => limit,
                _ => {
                    return Err(ConfigError::new(
                        "max_connections",
                        "must be between 1 and 100000",
                    ));
                }
            },
            max_connections_per_ip: match raw.max_connections_per_ip.unwrap_or(256) {
                limit @ 1..=100_000 => limit,
                _ => {
                    return Err(ConfigError::new(
                        "max_connections_per_ip",
                        "must be between 1 and 100000",
                    ));
                }
            },
            audit_denied_per_second: match raw.audit_denied_per_second.unwrap_or(20) {
                rate @ 1..=100_000 => rate,
                _ => {
                    return Err(ConfigError::new(
                        "audit_denied_per_second",
                        "must be between 1 and 100000",
                    ));
                }
            },
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> RawConfig {
        RawConfig {
            dev: Some(true),
            ..RawConfig::default()
        }
    }

    #[track_caller]
    fn refused(raw: RawConfig, setting: &str) {
        match Config::from_raw(raw) {
            Err(error) => assert_eq!(error.setting, setting, "{error}"),
            Ok(config) => panic!("accepted: {config:?}"),
        }
    }

    #[test]
    fn development_defaults_are_complete() {
        let config = Config::from_raw(dev()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(config.hddt_listen.to_string(), "127.0.0.1:9443");
        assert_eq!(
            config.database,
            DatabaseConfig::Sqlite(PathBuf::from("./medvault-data/medvault.db"))
        );
        assert_eq!(config.tls, TlsSource::Development);
        assert_eq!(config.oauth_issuer.as_str(), "https://localhost:9443/");
        assert_eq!(config.fhir_base_url.as_str(), "https://localhost:9443/fhir");
    }

    #[test]
    fn production_requires_certificate_fqdn_and_urls() {
        refused(RawConfig::default(), "tls_cert");
        let with_cert = RawConfig {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..RawConfig::default()
        };
        refused(with_cert.clone(), "fqdn");
        let with_fqdn = RawConfig {
            fqdn: Some("ddr.example.com".into()),
            ..with_cert
        };
        refused(with_fqdn.clone(), "public_base_url");
        let complete = RawConfig {
            public_base_url: Some("https://ddr.example.com".into()),
            oauth_issuer: Some("https://auth.ddr.example.com".into()),
            fhir_base_url: Some("https://fhir.ddr.example.com/fhir".into()),
            ..with_fqdn
        };
        let config = Config::from_raw(complete).unwrap();
        assert!(!config.dev);
        assert_eq!(config.oauth_issuer.host_str(), Some("auth.ddr.example.com"));
    }

    #[test]
    fn each_bad_value_names_its_setting() {
        refused(
            RawConfig {
                listen: Some("nowhere".into()),
                ..dev()
            },
            "listen",
        );
        refused(
            RawConfig {
                hddt_listen: Some("127.0.0.1:8443".into()),
                ..dev()
            },
            "hddt_listen",
        );
        refused(
            RawConfig {
                database: Some("mysql://x".into()),
                ..dev()
            },
            "database",
        );
        refused(
            RawConfig {
                tls_cert: Some("c.pem".into()),
                ..dev()
            },
            "tls_key",
        );
        refused(
            RawConfig {
                oauth_issuer: Some("http://insecure".into()),
                ..dev()
            },
            "oauth_issuer",
        );
        refused(
            RawConfig {
                fhir_base_url: Some("https://x/fhir?q=1".into()),
                ..dev()
            },
            "fhir_base_url",
        );
        refused(
            RawConfig {
                body_limit_bytes: Some(10),
                ..dev()
            },
            "body_limit_bytes",
        );
        refused(
            RawConfig {
                request_timeout_secs: Some(0),
                ..dev()
            },
            "request_timeout_secs",
        );
        refused(
            RawConfig {
                log_format: Some("xml".into()),
                ..dev()
            },
            "log_format",
        );
        refused(
            RawConfig {
                fqdn: Some("bad host".into()),
                ..dev()
            },
            "fqdn",
        );
    }

    #[test]
    fn retention_is_never_below_thirty_days() {
        let config = Config::from_raw(RawConfig {
            audit_retention_days: Some(3),
            ..dev()
        })
        .unwrap();
        assert_eq!(config.audit_retention_days, 30);
        let config = Config::from_raw(RawConfig {
            audit_retention_days: Some(90),
            ..dev()
        })
        .unwrap();
        assert_eq!(config.audit_retention_days, 90);
    }

    #[test]
    fn toml_unknown_keys_are_refused_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("medvault-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("medvault.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten_typo = 1\n").unwrap();
        let error = RawConfig::from_toml_file(&path).unwrap_err();
        assert_eq!(error.setting, "config");
        assert!(error.reason.contains("listen_typo"), "{error}");
        assert!(!error.to_string().contains('\n'));
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\ndev = true\n").unwrap();
        let raw = RawConfig::from_toml_file(&path).unwrap();
        assert_eq!(raw.listen.as_deref(), Some("127.0.0.1:1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn higher_layers_win() {
        let file = RawConfig {
            listen: Some("127.0.0.1:1".into()),
            fqdn: Some("file".into()),
            ..RawConfig::default()
        };
        let flags = RawConfig {
            listen: Some("127.0.0.1:2".into()),
            ..RawConfig::default()
        };
        let merged = flags.or(file);
        assert_eq!(merged.listen.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(merged.fqdn.as_deref(), Some("file"));
    }
}
