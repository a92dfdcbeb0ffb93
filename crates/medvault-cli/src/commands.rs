//! Command-line parsing and the commands themselves.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use medvault_audit::{AuditTrail, CheckpointAnchor, CheckpointKey};
use medvault_core::{CertificateFingerprint, Clock, SystemClock};
use medvault_server::client_auth::AllowList;
use medvault_server::config::{Config, LogFormat, RawConfig};
use medvault_server::server::{load_or_create_audit_key, open_store};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::format_description::well_known::Rfc3339;

/// medvault: patient-owned health data, HDDT device data recorder.
#[derive(Debug, Parser)]
#[command(name = "medvault", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (HTTPS patient listener + mTLS HDDT listener).
    Serve(Box<ServeArgs>),
    /// The whole system once, as each actor in turn, on a new development
    /// server: patient, institution, HCP, Patient Credential, DiGA pairing,
    /// FHIR paging, CGM summary, a sealed document, revocation, audit trail.
    Demo(crate::demo::DemoArgs),
    /// Operator tasks on the database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Your account: register, log in and out.
    Account {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::user::AccountCommand,
    },
    /// Your working credentials.
    Credentials {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::user::CredentialsCommand,
    },
    /// Sealed documents.
    Documents {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::user::DocumentsCommand,
    },
    /// Identity proofing (institutions): the patient's one-time credential code.
    Proofing {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::user::ProofingCommand,
    },
    /// Patient Credentials: request, show, present (patients); list, revoke (institutions).
    Credential {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::patient::CredentialCommand,
    },
    /// The DiGA reference client: pair with a patient, refresh, unpair (any
    /// Device Data Recorder; mTLS with the DiGA's certificate).
    Diga {
        #[command(flatten)]
        args: crate::diga::DigaArgs,
        #[command(subcommand)]
        command: crate::diga::DigaCommand,
    },
    /// Your personal health devices (patients): models, add, list, calibrate, retire.
    Devices {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::devices::DevicesCommand,
    },
    /// Upload device readings (patients) from a CSV or JSON file.
    Readings {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::devices::ReadingsCommand,
    },
    /// Simulated device data (patients): `simulate cgm --days N`.
    Simulate {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::devices::SimulateCommand,
    },
    /// The patient portal in a browser: `portal ticket` makes a one-time login ticket.
    Portal {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::devices::PortalCommand,
    },
    /// All your device data as a FHIR R4 Bundle (patients).
    Export {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// HDDT pairings with DiGAs (patients): login ticket, list, revoke.
    Pairing {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::user::PairingCommand,
    },
    /// Connections with other participants.
    Connections {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(subcommand)]
        command: crate::user::ConnectionsCommand,
    },
}

/// Settings shared by every command that opens the data directory or database.
/// Each is also read from `MEDVAULT_<NAME>` and from the `--config` TOML file.
#[derive(Debug, Args)]
struct CommonArgs {
    /// TOML configuration file (keys as the flags, with underscores).
    #[arg(long, env = "MEDVAULT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./medvault-data].
    #[arg(long, env = "MEDVAULT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://... [default: SQLite in the data directory].
    #[arg(long, env = "MEDVAULT_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Development mode: generated certificates and derived base URLs.
    #[arg(long, env = "MEDVAULT_DEV")]
    dev: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Patient listener address [default: 127.0.0.1:8443].
    #[arg(long, env = "MEDVAULT_LISTEN")]
    listen: Option<String>,
    /// HDDT (mTLS) listener address [default: 127.0.0.1:9443].
    #[arg(long, env = "MEDVAULT_HDDT_LISTEN")]
    hddt_listen: Option<String>,
    /// Server certificate chain (PEM).
    #[arg(long, env = "MEDVAULT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM, PKCS#8).
    #[arg(long, env = "MEDVAULT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Public host name (in the certificate's SAN).
    #[arg(long, env = "MEDVAULT_FQDN")]
    fqdn: Option<String>,
    /// Public base URL of the patient API.
    #[arg(long, env = "MEDVAULT_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
    /// OAuth issuer (RFC 8414).
    #[arg(long, env = "MEDVAULT_OAUTH_ISSUER")]
    oauth_issuer: Option<String>,
    /// Public base URL of the FHIR API.
    #[arg(long, env = "MEDVAULT_FHIR_BASE_URL")]
    fhir_base_url: Option<String>,
    /// Largest request body in bytes [default: 65536].
    #[arg(long, env = "MEDVAULT_BODY_LIMIT_BYTES")]
    body_limit_bytes: Option<u64>,
    /// Largest sealed document in bytes [default: 16777216].
    #[arg(long, env = "MEDVAULT_MAX_DOCUMENT_BYTES")]
    max_document_bytes: Option<u64>,
    /// How long a login session lasts, in seconds [default: 1800].
    #[arg(long, env = "MEDVAULT_SESSION_LIFETIME_SECS")]
    session_lifetime_secs: Option<u64>,
    /// A URL the Account App may send users back to (repeat; comma-separated in the environment).
    #[arg(
        long = "account-app-return-url",
        env = "MEDVAULT_ACCOUNT_APP_RETURN_URLS",
        value_delimiter = ','
    )]
    account_app_return_urls: Vec<String>,
    /// Request timeout in seconds [default: 30].
    #[arg(long, env = "MEDVAULT_REQUEST_TIMEOUT_SECS")]
    request_timeout_secs: Option<u64>,
    /// TLS handshake timeout in seconds [default: 10].
    #[arg(long, env = "MEDVAULT_HANDSHAKE_TIMEOUT_SECS")]
    handshake_timeout_secs: Option<u64>,
    /// Most connections (handshaking or open) per listener [default: 2048].
    #[arg(long, env = "MEDVAULT_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most connections per listener from one peer address [default: 256].
    #[arg(long, env = "MEDVAULT_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Shutdown grace period in seconds [default: 30].
    #[arg(long, env = "MEDVAULT_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: Option<u64>,
    /// Audit retention in days, at least 30 [default: 30].
    #[arg(long, env = "MEDVAULT_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u64>,
    /// Allow-list refresh interval in seconds [default: 5].
    #[arg(long, env = "MEDVAULT_ALLOWLIST_REFRESH_SECS")]
    allowlist_refresh_secs: Option<u64>,
    /// Seconds without a successful allow-list reload before all client certificates are refused [default: 14400].
    #[arg(long, env = "MEDVAULT_ALLOWLIST_MAX_AGE_SECS")]
    allowlist_max_age_secs: Option<u64>,
    /// Refused mTLS requests audited one by one per second; the rest are counted [default: 20].
    #[arg(long, env = "MEDVAULT_AUDIT_DENIED_PER_SECOND")]
    audit_denied_per_second: Option<u32>,
    /// Log format: text or json [default: text]. Level from MEDVAULT_LOG (e.g. info, debug).
    #[arg(long, env = "MEDVAULT_LOG_FORMAT")]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// The mTLS client-certificate allow-list.
    ClientCert {
        #[command(subcommand)]
        command: ClientCertCommand,
    },
    /// The DiGA-VZ, local-file source (`<data_dir>/diga-vz.json`).
    Diga {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        command: crate::registry::DigaCommand,
    },
    /// Auditor accounts (data-protection officers): may read every audit entry.
    Auditor {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        command: AuditorCommand,
    },
    /// The HDDT operational request log (`<data_dir>/request-log/`, JSON Lines).
    RequestLog {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        command: RequestLogCommand,
    },
    /// The HDDT token signing key: `rotate` makes a new one; the old one keeps
    /// verifying for 31 days (every refresh token it signed stays usable).
    TokenKey {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        command: TokenKeyCommand,
    },
    /// Planned maintenance of the FHIR API: `on` makes it answer 503
    /// `transient` with Retry-After and the `X-HDDT-Maintenance` header;
    /// `/status.json` says so. Every node follows within 5 seconds.
    Maintenance {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Retire HDDT (this Device Data Recorder left the HIIS-VZ): revoke every
    /// pairing; /par, /token and the FHIR API answer "no longer supported".
    Retire {
        #[command(flatten)]
        common: CommonArgs,
        /// Confirm: this cannot be undone from the command line.
        #[arg(long)]
        yes: bool,
    },
    /// The trust attributes to register in the HIIS-VZ.
    Hiis {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        command: crate::registry::HiisCommand,
    },
    /// The MIV ValueSets (`<data_dir>/valuesets/`).
    Valuesets {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        command: crate::registry::ValueSetCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MaintenanceCommand {
    /// Start a maintenance window.
    On {
        /// What Retry-After tells DiGAs (seconds).
        #[arg(long, default_value_t = 600)]
        retry_after: u32,
        /// When the window is planned to end (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
    /// End it.
    Off,
}

#[derive(Debug, Subcommand)]
enum TokenKeyCommand {
    /// Make a new signing key now (nodes use it within the hour).
    Rotate,
}

#[derive(Debug, Subcommand)]
enum AuditorCommand {
    /// Make a registered participant an auditor.
    Add {
        /// Their UID.
        uid: String,
    },
    /// Take the auditor role away.
    Remove {
        /// Their UID.
        uid: String,
    },
    /// List auditors.
    List,
}

#[derive(Debug, Subcommand)]
enum RequestLogCommand {
    /// Print the matching lines, oldest first.
    Show {
        /// At or after this instant (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Before this instant (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only this DiGA (`partner_id`, its client_id).
        #[arg(long)]
        client: Option<String>,
        /// Only this endpoint (`interface_id`, e.g. /token).
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this HTTP status.
        #[arg(long)]
        status: Option<u16>,
        /// Only this transaction (request id).
        #[arg(long)]
        transaction: Option<String>,
    },
    /// Check every day's checksum chain; exit 1 if one is broken.
    Verify,
}

#[derive(Debug, Subcommand)]
enum ClientCertCommand {
    /// Register a client certificate (PEM) for an owner, e.g. urn:diga:bfarm:00294.
    Add {
        #[command(flatten)]
        common: CommonArgs,
        /// The certificate file (PEM).
        file: PathBuf,
        /// Who the certificate authenticates.
        #[arg(long)]
        owner: String,
    },
    /// List registered certificates.
    List {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Remove a certificate by its SHA-256 fingerprint (hex).
    Remove {
        #[command(flatten)]
        common: CommonArgs,
        /// The fingerprint.
        fingerprint: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the whole audit chain; exit 1 if it is broken. Prints the newest
    /// checkpoint as NUMBER:HASH: record it outside the database and pass it back
    /// with --anchor to detect removal of the newest checkpoints themselves.
    Verify {
        #[command(flatten)]
        common: CommonArgs,
        /// A checkpoint recorded earlier, as NUMBER:HASH (hex).
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Your own audit entries (pairings, unpairings, logins, ...); auditors
    /// may list everyone's with --all or --subject.
    List {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(flatten)]
        filter: crate::user::AuditFilterArgs,
    },
    /// Write every matching entry as JSON Lines (all pages).
    Export {
        #[command(flatten)]
        profile: crate::user::ProfileArgs,
        #[command(flatten)]
        filter: crate::user::AuditFilterArgs,
        /// The output file (mode 0600).
        #[arg(long)]
        output: PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Demo(args) => crate::demo::run(args),
        Command::Admin {
            command: AdminCommand::ClientCert { command },
        } => {
            let common = match &command {
                ClientCertCommand::Add { common, .. }
                | ClientCertCommand::List { common }
                | ClientCertCommand::Remove { common, .. } => common,
            };
            let Some(config) = load_storage_config(common) else {
                return ExitCode::from(2);
            };
            run_async(client_cert(config, command))
        }
        Command::Admin {
            command:
                AdminCommand::TokenKey {
                    common,
                    command: TokenKeyCommand::Rotate,
                },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            run_async(rotate_token_key(config))
        }
        Command::Admin {
            command: AdminCommand::Auditor { common, command },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            run_async(auditor(config, command))
        }
        Command::Admin {
            command: AdminCommand::RequestLog { common, command },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            report(request_log(&config.data_dir.join("request-log"), command))
        }
        Command::Admin {
            command: AdminCommand::Maintenance { common, command },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            run_async(maintenance(config, command))
        }
        Command::Admin {
            command: AdminCommand::Retire { common, yes },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            if !yes {
                eprintln!("medvault: retiring ends every pairing; pass --yes to confirm");
                return ExitCode::from(2);
            }
            run_async(retire(config))
        }
        Command::Admin {
            command: AdminCommand::Valuesets { common, command },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            report(crate::registry::valuesets(
                &config.data_dir,
                &config.value_set_base,
                command,
            ))
        }
        Command::Admin {
            command: AdminCommand::Diga { common, command },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            let reload = matches!(command, crate::registry::DigaCommand::Reload);
            match crate::registry::diga(&config.data_dir, command) {
                Ok(()) if reload => run_async(request_registry_reload(config)),
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("medvault: {error:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Admin {
            command: AdminCommand::Hiis { common, command },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            report(crate::registry::hiis(&config, command))
        }
        Command::Audit {
            command: AuditCommand::List { profile, filter },
        } => run_async(crate::user::audit_list(profile, filter, None)),
        Command::Audit {
            command:
                AuditCommand::Export {
                    profile,
                    filter,
                    output,
                },
        } => run_async(crate::user::audit_list(profile, filter, Some(output))),
        Command::Audit {
            command: AuditCommand::Verify { common, anchor },
        } => {
            let Some(config) = load_storage_config(&common) else {
                return ExitCode::from(2);
            };
            let anchor = match anchor.as_deref().map(parse_anchor).transpose() {
                Ok(anchor) => anchor,
                Err(error) => {
                    eprintln!("medvault: --anchor: {error}");
                    return ExitCode::from(2);
                }
            };
            run_async(audit_verify(config, anchor))
        }
        Command::Account { profile, command } => run_async(crate::user::account(profile, command)),
        Command::Credentials { profile, command } => {
            run_async(crate::user::credentials(profile, command))
        }
        Command::Documents { profile, command } => {
            run_async(crate::user::documents(profile, command))
        }
        Command::Credential { profile, command } => {
            run_async(crate::patient::credential(profile, command))
        }
        Command::Proofing { profile, command } => {
            run_async(crate::user::proofing(profile, command))
        }
        Command::Connections { profile, command } => {
            run_async(crate::user::connections(profile, command))
        }
        Command::Pairing { profile, command } => run_async(crate::user::pairing(profile, command)),
        Command::Devices { profile, command } => {
            run_async(crate::devices::devices(profile, command))
        }
        Command::Readings { profile, command } => {
            run_async(crate::devices::readings(profile, command))
        }
        Command::Simulate { profile, command } => {
            run_async(crate::devices::simulate(profile, command))
        }
        Command::Export { profile, out } => run_async(crate::devices::export(profile, out)),
        Command::Portal { profile, command } => run_async(crate::devices::portal(profile, command)),
        Command::Diga { args, command } => run_async(crate::diga::diga(args, command)),
    }
}

/// Merges flags/environment over the config file, validates, and reports a bad
/// setting on one line.
fn load_config(common: &CommonArgs, specific: RawConfig) -> Option<Config> {
    load_config_for(common, specific, true)
}

/// Like [`load_config`] for commands that only open the data directory and the
/// database: they need no certificate nor public URLs, so those are validated as
/// in development mode (nothing is served).
fn load_storage_config(common: &CommonArgs) -> Option<Config> {
    load_config_for(common, RawConfig::default(), false)
}

fn load_config_for(common: &CommonArgs, specific: RawConfig, serving: bool) -> Option<Config> {
    let from_flags = RawConfig {
        data_dir: common.data_dir.clone(),
        database: common.database.clone(),
        dev: common.dev.then_some(true),
        ..specific
    };
    let from_file = match &common.config {
        Some(path) => match RawConfig::from_toml_file(path) {
            Ok(raw) => raw,
            Err(error) => {
                eprintln!("medvault: invalid configuration: {error}");
                return None;
            }
        },
        None => RawConfig::default(),
    };
    let mut merged = from_flags.or(from_file);
    if !serving {
        merged.dev = Some(true);
    }
    match Config::from_raw(merged) {
        Ok(config) => Some(config),
        Err(error) => {
            eprintln!("medvault: invalid configuration: {error}");
            None
        }
    }
}

/// Exit 0, or print the error on one line and exit 1.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("medvault: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run_async(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("medvault: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("medvault: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let specific = RawConfig {
        listen: args.listen,
        hddt_listen: args.hddt_listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        fqdn: args.fqdn,
        public_base_url: args.public_base_url,
        oauth_issuer: args.oauth_issuer,
        fhir_base_url: args.fhir_base_url,
        body_limit_bytes: args.body_limit_bytes,
        max_document_bytes: args.max_document_bytes,
        session_lifetime_secs: args.session_lifetime_secs,
        account_app_return_urls: (!args.account_app_return_urls.is_empty())
            .then(|| args.account_app_return_urls.clone()),
        request_timeout_secs: args.request_timeout_secs,
        handshake_timeout_secs: args.handshake_timeout_secs,
        shutdown_grace_secs: args.shutdown_grace_secs,
        audit_retention_days: args.audit_retention_days,
        allowlist_refresh_secs: args.allowlist_refresh_secs,
        audit_denied_per_second: args.audit_denied_per_second,
        allowlist_max_age_secs: args.allowlist_max_age_secs,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        log_format: args.log_format,
        ..RawConfig::default()
    };
    let Some(config) = load_config(&args.common, specific) else {
        return ExitCode::from(2);
    };
    init_logging(config.log_format);
    run_async(async move {
        // The handlers are installed before the server announces itself: a
        // supervisor may signal as soon as it reads the line below, and an
        // uninstalled handler would let the default action kill the process
        // without a clean shutdown.
        let stop = StopSignal::install().context("cannot install signal handlers")?;
        let running = medvault_server::start(config, Arc::new(SystemClock))
            .await
            .context("cannot start")?;
        if let Some(ca) = &running.dev_ca {
            let verb = if running.dev_ca_created {
                "created"
            } else {
                "using"
            };
            println!(
                "development mode: {verb} the development CA {}",
                ca.display()
            );
            println!(
                "  try: curl --cacert {} https://localhost:{}/health",
                ca.display(),
                running.patient_addr.port()
            );
        }
        println!(
            "medvault serving: patient https://{} , HDDT (mTLS) https://{}",
            running.patient_addr, running.hddt_addr
        );
        stop.wait().await;
        running.shutdown().await;
        Ok(())
    })
}

/// SIGTERM and SIGINT (Ctrl-C), registered up front so that neither can
/// arrive unhandled between start-up and the wait.
struct StopSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => {}
                _ = self.interrupt.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn client_cert(config: Config, command: ClientCertCommand) -> anyhow::Result<()> {
    let store = open_store(&config.database).await.context("database")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The server creates the audit key at its first start; an admin command
    // never creates one (it could end up with the wrong owner or host).
    let key_path = config.data_dir.join("audit-checkpoint.key");
    if !matches!(command, ClientCertCommand::List { .. }) && !key_path.exists() {
        store.close().await;
        anyhow::bail!(
            "{} does not exist: start `medvault serve` once with this data directory first",
            key_path.display()
        );
    }
    let key = if key_path.exists() {
        load_or_create_audit_key(&key_path)?
    } else {
        // `list` changes nothing and appends nothing: a throw-away key is never used.
        CheckpointKey::generate()?.0
    };
    let audit = Arc::new(AuditTrail::new(store.clone(), clock.clone(), Arc::new(key)));
    let allow_list = AllowList::new(store.clone(), clock, audit, config.allowlist_max_age);
    // Changes made from the command line are audited as the operator's.
    let actor = "operator:cli";
    let outcome = match command {
        ClientCertCommand::Add { file, owner, .. } => {
            let der = CertificateDer::from_pem_file(&file)
                .with_context(|| format!("{}", file.display()))?;
            let fingerprint = allow_list.register(&der, &owner, actor).await?;
            println!("registered {fingerprint} for {owner}");
            Ok(())
        }
        ClientCertCommand::List { .. } => {
            for row in store.client_certificates().await? {
                let registered = row.registered_at.format(&Rfc3339).unwrap_or_default();
                println!(
                    "{}  {}  registered {registered}",
                    hex::encode(&row.fingerprint),
                    row.owner
                );
            }
            Ok(())
        }
        ClientCertCommand::Remove { fingerprint, .. } => {
            let fingerprint: CertificateFingerprint = fingerprint.parse()?;
            if allow_list.remove(&fingerprint, actor).await? {
                println!("removed {fingerprint}");
                Ok(())
            } else {
                Err(anyhow::anyhow!("{fingerprint} is not registered"))
            }
        }
    };
    store.close().await;
    outcome
}

async fn auditor(config: Config, command: AuditorCommand) -> anyhow::Result<()> {
    const PREFIX: &str = medvault_server::api::audit::AUDITOR_PREFIX;
    let key_path = config.data_dir.join("audit-checkpoint.key");
    if !matches!(command, AuditorCommand::List) && !key_path.exists() {
        anyhow::bail!(
            "{} does not exist: start `medvault serve` once with this data directory first",
            key_path.display()
        );
    }
    let store = open_store(&config.database).await.context("database")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let outcome = async {
        match command {
            AuditorCommand::List => {
                for (name, _, since) in store.hddt_states(PREFIX).await? {
                    let uid = name.trim_start_matches(PREFIX);
                    println!(
                        "{uid}  since {}",
                        since.format(&Rfc3339).unwrap_or_default()
                    );
                }
                return Ok(());
            }
            AuditorCommand::Add { uid } | AuditorCommand::Remove { uid }
                if uid.parse::<medvault_core::Uid>().is_err() =>
            {
                anyhow::bail!("{uid} is not a UID");
            }
            AuditorCommand::Add { uid } => {
                if store.participant(&uid).await?.is_none() {
                    anyhow::bail!("{uid} is not a registered participant");
                }
                store
                    .set_hddt_state(&format!("{PREFIX}{uid}"), Some("auditor"), clock.now())
                    .await?;
                audit_role(&store, &clock, &key_path, &uid, "audit.auditor_added").await?;
                println!("{uid} is an auditor");
            }
            AuditorCommand::Remove { uid } => {
                store
                    .set_hddt_state(&format!("{PREFIX}{uid}"), None, clock.now())
                    .await?;
                audit_role(&store, &clock, &key_path, &uid, "audit.auditor_removed").await?;
                println!("{uid} is no longer an auditor");
            }
        }
        Ok(())
    }
    .await;
    store.close().await;
    outcome
}

async fn audit_role(
    store: &Arc<dyn medvault_store::Store>,
    clock: &Arc<dyn Clock>,
    key_path: &std::path::Path,
    uid: &str,
    event_type: &str,
) -> anyhow::Result<()> {
    let key = load_or_create_audit_key(key_path)?;
    let audit = AuditTrail::new(store.clone(), clock.clone(), Arc::new(key));
    audit
        .append(medvault_audit::AuditEvent::new(
            "operator:cli",
            uid,
            event_type,
            medvault_audit::Outcome::Success,
        ))
        .await?;
    Ok(())
}

fn request_log(dir: &std::path::Path, command: RequestLogCommand) -> anyhow::Result<()> {
    use medvault_server::request_log::{LogFilter, read, verify_file};
    match command {
        RequestLogCommand::Show {
            from,
            until,
            client,
            endpoint,
            status,
            transaction,
        } => {
            let instant = |text: Option<String>| -> anyhow::Result<Option<time::OffsetDateTime>> {
                text.map(|text| {
                    time::OffsetDateTime::parse(&text, &Rfc3339)
                        .with_context(|| format!("{text} is not an RFC 3339 instant"))
                })
                .transpose()
            };
            let filter = LogFilter {
                from: instant(from)?,
                until: instant(until)?,
                client,
                endpoint,
                status,
                transaction,
            };
            for line in read(dir, &filter).with_context(|| format!("{}", dir.display()))? {
                println!("{line}");
            }
            Ok(())
        }
        RequestLogCommand::Verify => {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| format!("{}", dir.display()))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
                .collect();
            files.sort();
            let mut lines = 0;
            for file in &files {
                lines += verify_file(file)?;
            }
            println!(
                "request log intact: {} day(s), {lines} line(s)",
                files.len()
            );
            Ok(())
        }
    }
}

async fn request_registry_reload(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config.database).await.context("database")?;
    let outcome = store
        .set_hddt_state(
            crate::registry::RELOAD_STATE,
            Some("requested"),
            SystemClock.now(),
        )
        .await;
    store.close().await;
    outcome?;
    println!("every running node re-reads the registry within seconds");
    Ok(())
}

async fn rotate_token_key(config: Config) -> anyhow::Result<()> {
    let secret_path = config.data_dir.join("keys").join("issuer-kek.bin");
    let key_path = config.data_dir.join("audit-checkpoint.key");
    if !secret_path.exists() || !key_path.exists() {
        anyhow::bail!(
            "{} does not exist: start `medvault serve` once with this data directory first",
            secret_path.display()
        );
    }
    let secret = zeroize::Zeroizing::new(
        std::fs::read(&secret_path).with_context(|| format!("{}", secret_path.display()))?,
    );
    let store = open_store(&config.database).await.context("database")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let outcome = async {
        let keys = medvault_oauth::TokenKeys::new(
            store.clone(),
            clock.clone(),
            secret,
            time::Duration::days(31),
        )?;
        let kid = keys.rotate_signing_key().await?;
        let audit = AuditTrail::new(
            store.clone(),
            clock.clone(),
            Arc::new(load_or_create_audit_key(&key_path)?),
        );
        let detail = medvault_audit::AuditDetail::new().with("kid", kid.clone())?;
        audit
            .append(
                medvault_audit::AuditEvent::new(
                    "operator:cli",
                    "-",
                    "hddt.token_key_rotated",
                    medvault_audit::Outcome::Success,
                )
                .with_detail(detail),
            )
            .await?;
        println!("new token signing key {kid}; the old one verifies for 31 more days");
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    outcome
}

async fn maintenance(config: Config, command: MaintenanceCommand) -> anyhow::Result<()> {
    let key_path = config.data_dir.join("audit-checkpoint.key");
    if !key_path.exists() {
        anyhow::bail!(
            "{} does not exist: start `medvault serve` once with this data directory first",
            key_path.display()
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let window = match &command {
        MaintenanceCommand::On { retry_after, until } => {
            if let Some(until) = until {
                time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
                    .context("--until must be an RFC 3339 date-time")?;
            }
            if !(1..=86_400).contains(retry_after) {
                anyhow::bail!("--retry-after must be between 1 and 86400 seconds");
            }
            Some(medvault_fhir::status::Maintenance {
                retry_after_secs: *retry_after,
                until: until.clone(),
                since: now
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            })
        }
        MaintenanceCommand::Off => None,
    };
    let store = open_store(&config.database).await.context("database")?;
    let key = load_or_create_audit_key(&key_path)?;
    let audit = AuditTrail::new(store.clone(), clock.clone(), Arc::new(key));
    let outcome = async {
        let text = window.as_ref().map(serde_json::to_string).transpose()?;
        store
            .set_hddt_state(
                medvault_fhir::status::MAINTENANCE_STATE,
                text.as_deref(),
                now,
            )
            .await?;
        let detail = medvault_audit::AuditDetail::new()
            .with("state", if window.is_some() { "on" } else { "off" })?;
        audit
            .append(
                medvault_audit::AuditEvent::new(
                    "operator:cli",
                    "-",
                    "hddt.maintenance",
                    medvault_audit::Outcome::Success,
                )
                .with_detail(detail),
            )
            .await?;
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    outcome?;
    match window {
        Some(window) => println!(
            "maintenance on: the FHIR API answers 503 with Retry-After: {} (every node within 5 s)",
            window.retry_after_secs
        ),
        None => println!("maintenance off: the FHIR API answers again (every node within 5 s)"),
    }
    Ok(())
}

async fn retire(config: Config) -> anyhow::Result<()> {
    let key_path = config.data_dir.join("audit-checkpoint.key");
    if !key_path.exists() {
        anyhow::bail!(
            "{} does not exist: start `medvault serve` once with this data directory first",
            key_path.display()
        );
    }
    let store = open_store(&config.database).await.context("database")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let key = load_or_create_audit_key(&key_path)?;
    let audit = AuditTrail::new(store.clone(), clock.clone(), Arc::new(key));
    let outcome = medvault_oauth::retire(&*store, &audit, clock.now(), "operator:cli").await;
    store.close().await;
    let ended = outcome?;
    println!(
        "HDDT retired: {ended} grant(s) revoked; /par, /token and FHIR now answer 410 hddt_not_supported"
    );
    Ok(())
}

fn parse_anchor(text: &str) -> Result<CheckpointAnchor, String> {
    let (number, hash_hex) = text.split_once(':').ok_or("expected NUMBER:HASH")?;
    let number = number
        .parse()
        .map_err(|_| "the checkpoint number is not an integer")?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hash_hex, &mut hash)
        .map_err(|_| "the hash is not 64 hexadecimal characters")?;
    Ok(CheckpointAnchor { number, hash })
}

async fn audit_verify(config: Config, anchor: Option<CheckpointAnchor>) -> anyhow::Result<()> {
    let key_path = config.data_dir.join("audit-checkpoint.key");
    let pkcs8 = zeroize::Zeroizing::new(
        std::fs::read(&key_path).with_context(|| format!("{}", key_path.display()))?,
    );
    let key = CheckpointKey::from_pkcs8(&pkcs8)?;
    let store = open_store(&config.database).await.context("database")?;
    let trail = AuditTrail::new(store.clone(), Arc::new(SystemClock), Arc::new(key));
    let outcome = trail.verify_with_anchor(anchor).await;
    store.close().await;
    let report = outcome?;
    println!(
        "audit chain verifies: {} entries (seq {}..{}), {} checkpoints",
        report.entries,
        report.first_seq.unwrap_or(0),
        report.last_seq.unwrap_or(0),
        report.checkpoints
    );
    if let Some((number, hash)) = report.newest_checkpoint {
        println!("newest checkpoint (record it outside the database): {number}:{hash}");
    }
    Ok(())
}
