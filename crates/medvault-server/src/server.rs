//! Start-up, background duties and graceful shutdown of `medvault serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use medvault_accounts::{AccountApp, Accounts, Directory, Exchange, LoginPolicy};
use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, CheckpointKey, Outcome, Retention};
use medvault_core::Clock;
use medvault_crypto::ParticipantCa;
use medvault_crypto::password::OpaqueServerSetup;
use medvault_store::{Store, StoreError};
use medvault_store_postgres::PostgresStore;
use medvault_store_sqlite::SqliteStore;
use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::app::{AppState, hddt_router, patient_router};
use crate::client_auth::{AllowList, AllowListVerifier};
use crate::config::{Config, DatabaseConfig, TlsSource};
use crate::listener::{ConnectionLimits, HttpLimits, TlsListener, serve_connections};
use crate::tls::{
    ClockTimeProvider, ServerIdentity, TlsSetupError, check_production_certificate,
    development_identity, load_identity, policy_provider, write_file,
};

/// Why the server could not start. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created or used.
    #[error("data_dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A setting cannot be used (checked beyond the configuration's own checks).
    #[error("setting: {0}")]
    Setting(&'static str),
    /// The database cannot be opened, reached or migrated.
    #[error("database: {0}")]
    Database(#[from] StoreError),
    /// The server certificate is missing or refused.
    #[error("tls: {0}")]
    Tls(#[from] TlsSetupError),
    /// The audit checkpoint key cannot be read or made.
    #[error("audit key {path}: {reason}")]
    AuditKey {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another long-lived server key (participant CA, OPAQUE setup) cannot be read or made.
    #[error("{name} {path}: {reason}")]
    Key {
        /// Which key.
        name: &'static str,
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A listener address cannot be bound.
    #[error("{setting} {addr}: {reason}")]
    Bind {
        /// `listen` or `hddt_listen`.
        setting: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What went wrong (e.g. address in use).
        reason: String,
    },
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the patient listener is bound.
    pub patient_addr: SocketAddr,
    /// Where the HDDT listener is bound.
    pub hddt_addr: SocketAddr,
    /// The development CA certificate, when one is in use.
    pub dev_ca: Option<PathBuf>,
    /// Whether the development certificates were created by this start.
    pub dev_ca_created: bool,
    /// The state shared by all handlers.
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
}

/// Starts both listeners.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<RunningServer, StartError> {
    start_with_routes(config, clock, axum::Router::new()).await
}

/// Starts both listeners, with `extra_patient_routes` merged into the patient
/// listener's router (under the same middleware, limits and timeouts).
pub async fn start_with_routes(
    config: Config,
    clock: Arc<dyn Clock>,
    extra_patient_routes: axum::Router<AppState>,
) -> Result<RunningServer, StartError> {
    let config = Arc::new(config);
    prepare_data_dir(&config.data_dir)?;
    let store = open_store(&config.database).await?;

    let (identity, dev_ca_created) = match &config.tls {
        TlsSource::Development => development_identity(&config.data_dir, &config.fqdn)?,
        TlsSource::Files { cert, key } => (load_identity(cert, key)?, false),
    };
    if !config.dev {
        let leaf = identity
            .chain
            .first()
            .ok_or_else(|| TlsSetupError::Refused("empty chain".into()))?;
        check_production_certificate(leaf, &config.fqdn, clock.now())?;
    }

    let key = load_or_create_audit_key(&config.data_dir.join("audit-checkpoint.key"))?;
    let audit = Arc::new(AuditTrail::new(store.clone(), clock.clone(), Arc::new(key)));
    let allow_list = AllowList::new(
        store.clone(),
        clock.clone(),
        audit.clone(),
        config.allowlist_max_age,
    );
    allow_list.reload().await?;

    let patient_tcp = bind("listen", config.listen).await?;
    let hddt_tcp = bind("hddt_listen", config.hddt_listen).await?;
    let patient_addr = local_addr("listen", &patient_tcp)?;
    let hddt_addr = local_addr("hddt_listen", &hddt_tcp)?;

    // Development mode on port 0 (tests): the public URLs name the ports bound.
    let config = if config.dev {
        let mut fixed = (*config).clone();
        for (url, port) in [
            (&mut fixed.public_base_url, patient_addr.port()),
            (&mut fixed.oauth_issuer, hddt_addr.port()),
            (&mut fixed.fhir_base_url, hddt_addr.port()),
        ] {
            if url.port() == Some(0) {
                let _ = url.set_port(Some(port));
            }
        }
        Arc::new(fixed)
    } else {
        config
    };
    let provider = Arc::new(policy_provider());
    let (refusal_sender, refusal_receiver) = tokio::sync::mpsc::channel(1024);
    let verifier: Arc<dyn ClientCertVerifier> = Arc::new(
        AllowListVerifier::new(
            allow_list.clone(),
            crate::tls::client_signature_algorithms(),
        )
        .reporting_to(refusal_sender),
    );
    let patient_tls = server_tls_config(&provider, &clock, None, &identity)?;
    let hddt_tls = server_tls_config(&provider, &clock, Some(verifier), &identity)?;

    let keys = config.data_dir.join("keys");
    let ca_path = keys.join("participant-ca.p8");
    let ca = Arc::new(load_or_create_key(
        "participant CA key",
        &ca_path,
        || ParticipantCa::generate().map_err(|error| error.to_string()),
        |bytes| ParticipantCa::from_pkcs8(bytes).map_err(|error| error.to_string()),
    )?);
    let opaque = Arc::new(load_or_create_key(
        "OPAQUE server setup",
        &keys.join("opaque-server-setup.bin"),
        || {
            let setup = OpaqueServerSetup::generate();
            let bytes = setup.to_bytes();
            Ok((setup, bytes))
        },
        |bytes| OpaqueServerSetup::from_bytes(bytes).map_err(|error| error.to_string()),
    )?);
    let issuer_secret = load_or_create_key(
        "credential issuer secret",
        &keys.join("issuer-kek.bin"),
        || {
            let mut secret = zeroize::Zeroizing::new(vec![0u8; 32]);
            medvault_crypto::random_fill(&mut secret).map_err(|error| error.to_string())?;
            Ok((secret.clone(), secret))
        },
        |bytes| {
            if bytes.len() == 32 {
                Ok(zeroize::Zeroizing::new(bytes.to_vec()))
            } else {
                Err("must hold 32 bytes".to_owned())
            }
        },
    )?;
    let now = clock.now().unix_timestamp();
    let ca_certificate = ca
        .ca_certificate(now - 3600, now + CA_CERTIFICATE_LIFETIME_SECONDS)
        .map_err(|error| StartError::Key {
            name: "participant CA key",
            path: ca_path.clone(),
            reason: error.to_string(),
        })?;
    let pinned = ca.pinned();
    let ca_info = Arc::new(medvault_proto::accounts::CaInfo {
        key_id: pinned.key_id().to_owned(),
        public_key: pinned.public_key().to_vec().into(),
        certificate: ca_certificate.into(),
    });
    let names = medvault_credential::DidWeb::new(&config.public_base_url).ok_or(
        StartError::Setting("public_base_url has no host to name a did:web"),
    )?;
    let audience = config
        .credential_audience
        .clone()
        .unwrap_or_else(|| names.server().to_owned());
    let skew = time::Duration::try_from(config.credential_clock_skew)
        .unwrap_or(time::Duration::minutes(1));
    let accounts = Accounts::new(
        store.clone(),
        clock.clone(),
        audit.clone(),
        ca.clone(),
        opaque,
        LoginPolicy {
            session_lifetime: time::Duration::try_from(config.session_lifetime)
                .unwrap_or(time::Duration::minutes(30)),
            free_account_failures: config.login_free_account_failures,
            free_address_failures: config.login_free_address_failures,
            max_lock: time::Duration::try_from(config.login_max_lock)
                .unwrap_or(time::Duration::minutes(15)),
            ..LoginPolicy::default()
        },
    );
    let hddt_secret = issuer_secret.clone();
    let issuer_keys =
        medvault_credential::IssuerKeys::new(store.clone(), clock.clone(), issuer_secret).map_err(
            |error| StartError::Key {
                name: "credential issuer secret",
                path: keys.join("issuer-kek.bin"),
                reason: error.to_string(),
            },
        )?;
    let verifier = medvault_credential::CredentialVerifier::new(
        store.clone(),
        clock.clone(),
        names.clone(),
        audience.clone(),
        skew,
    );
    let issuer = medvault_credential::CredentialIssuer::new(
        store.clone(),
        clock.clone(),
        audit.clone(),
        issuer_keys.clone(),
        names,
        medvault_credential::IssuancePolicy {
            request: medvault_credential::RequestPolicy {
                trusted_clients: config.credential_trusted_clients.clone(),
                max_lifetime: time::Duration::try_from(config.credential_request_lifetime)
                    .unwrap_or(time::Duration::minutes(5)),
                clock_skew: skew,
            },
            audience,
            lifetime: time::Duration::try_from(config.credential_lifetime)
                .unwrap_or(time::Duration::days(365)),
            status_list_lifetime: time::Duration::minutes(5),
        },
    );
    let presentations = medvault_credential::PresentationLogin::new(
        store.clone(),
        clock.clone(),
        accounts.clone(),
        verifier.clone(),
        time::Duration::minutes(2),
    );
    let token_keys = medvault_oauth::TokenKeys::new(
        store.clone(),
        clock.clone(),
        hddt_secret,
        time::Duration::days(31),
    )
    .map_err(|error| StartError::Key {
        name: "credential issuer secret",
        path: keys.join("issuer-kek.bin"),
        reason: error.to_string(),
    })?;
    // The token signing key and the pairing secret exist from the first
    // start (not the first token or consent), so a node started later knows
    // them before any token arrives; every node loads the verification keys
    // now. (Both are made by an insert that never replaces a key, so two
    // nodes starting at once still agree.)
    token_keys
        .signing_key()
        .await
        .and(token_keys.pairing_key().await.map(|_| ()))
        .and(token_keys.reload_public().await)
        .map_err(|error| StartError::Key {
            name: "token signing key",
            path: keys.join("issuer-kek.bin"),
            reason: error.to_string(),
        })?;
    let mut policy = medvault_oauth::AuthorizationPolicy::new(
        config.oauth_issuer.as_str(),
        config.fhir_base_url.as_str(),
        &config.value_set_base,
    );
    policy.access_lifetime = time::Duration::try_from(config.access_token_lifetime)
        .unwrap_or(time::Duration::minutes(10));
    policy.reuse_grace =
        time::Duration::try_from(config.token_reuse_grace).unwrap_or(time::Duration::seconds(30));
    let hddt = medvault_oauth::AuthorizationServer::new(
        store.clone(),
        clock.clone(),
        audit.clone(),
        token_keys,
        medvault_oauth::TrustCache::default(),
        policy,
    );
    let request_log = crate::request_log::RequestLog::open(&config.data_dir.join("request-log"))
        .map_err(|error| StartError::DataDir {
            path: config.data_dir.join("request-log"),
            reason: error.to_string(),
        })?;
    let fhir = medvault_fhir::ResourceServer::new(
        store.clone(),
        clock.clone(),
        medvault_fhir::FhirPolicy {
            base_url: config
                .fhir_base_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            value_set_base: config.value_set_base.clone(),
            historic: time::Duration::days(i64::try_from(config.hddt_historic_days).unwrap_or(30)),
            sync_delay: time::Duration::try_from(config.device_sync_delay)
                .unwrap_or(time::Duration::minutes(15)),
            chunk: medvault_fhir::ingest::ChunkPolicy {
                span_secs: i64::try_from(config.cgm_chunk.as_secs()).unwrap_or(3600),
            },
        },
    );
    let state = AppState::new(crate::app::AppServices {
        fhir,
        accesses: Arc::default(),
        request_log: Some(Arc::new(request_log)),
        client_limiter: Arc::new(crate::app::ClientLimiter::new(config.hddt_rate_per_client)),
        hddt,
        issuer,
        verifier,
        presentations,
        config: config.clone(),
        store: store.clone(),
        audit: audit.clone(),
        allow_list: allow_list.clone(),
        clock: clock.clone(),
        denial_limiter: Arc::new(crate::app::DenialLimiter::new(
            config.audit_denied_per_second,
            clock.now(),
        )),
        directory: Directory::new(store.clone(), clock.clone(), audit.clone(), ca.clone()),
        accounts,
        ca_info,
        issuer_keys,
        proofing: medvault_credential::IdentityProofing::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            time::Duration::minutes(10),
        ),
        account_app: AccountApp::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            config.account_app_return_urls.clone(),
        ),
        exchange: Exchange::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            config.max_document_bytes,
        ),
    });
    if let Err(error) = crate::hddt::refresh_registry(&state).await {
        // Not fatal: HDDT requests are refused (fail closed) until a refresh works.
        tracing::warn!(%error, "DiGA-VZ could not be loaded");
    }
    let (shutdown, _) = watch::channel(false);
    let listeners = vec![
        serve(
            patient_tcp,
            patient_tls,
            patient_router(state.clone(), extra_patient_routes),
            &config,
            shutdown.subscribe(),
        )?,
        serve(
            hddt_tcp,
            hddt_tls,
            hddt_router(state.clone()),
            &config,
            shutdown.subscribe(),
        )?,
    ];
    let background = vec![
        spawn_allow_list_refresh(allow_list, config.allowlist_refresh, shutdown.subscribe()),
        spawn_audit_maintenance(
            audit.clone(),
            config.audit_retention_days,
            shutdown.subscribe(),
        ),
        spawn_login_cleanup(state.accounts.clone(), shutdown.subscribe()),
        spawn_handshake_refusal_audit(state.clone(), refusal_receiver, shutdown.subscribe()),
        crate::hddt::spawn_hddt_maintenance(state.clone(), shutdown.subscribe()),
        crate::hddt::spawn_request_log_sync(state.clone(), shutdown.subscribe()),
        crate::hddt::spawn_access_flush(state.clone(), shutdown.subscribe()),
        crate::hddt::spawn_registry_refresh(
            state.clone(),
            config.registry_refresh,
            shutdown.subscribe(),
        ),
    ];

    let detail = AuditDetail::new()
        .with("backend", store.backend().name())
        .and_then(|d| d.with("version", env!("CARGO_PKG_VERSION")));
    if let Ok(detail) = detail
        && let Err(error) = audit
            .append(
                AuditEvent::new("system", "-", "server.started", Outcome::Success)
                    .with_detail(detail),
            )
            .await
    {
        tracing::error!(%error, "could not audit the start");
    }
    tracing::info!(%patient_addr, %hddt_addr, backend = store.backend().name(), "medvault is serving");
    Ok(RunningServer {
        patient_addr,
        hddt_addr,
        dev_ca: identity.dev_ca,
        dev_ca_created,
        state,
        shutdown,
        listeners,
        background,
        grace: config.shutdown_grace,
    })
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish (up to the
    /// configured grace period), checkpoints the audit trail and closes the database.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = self.shutdown.send(true);
        let wait_all = async {
            for listener in self.listeners {
                if let Err(error) = listener.await {
                    tracing::error!(%error, "listener task failed");
                }
            }
        };
        if tokio::time::timeout(self.grace, wait_all).await.is_err() {
            tracing::warn!("grace period over: dropping the remaining connections");
        }
        for task in self.background {
            task.abort();
        }
        let audit = &self.state.audit;
        // Refusals that were only counted are written before the trail closes.
        let suppressed = self.state.denial_limiter.take_suppressed();
        if suppressed > 0 {
            let summary = AuditDetail::new()
                .with("reason", "a client certificate is required")
                .and_then(|d| d.with("suppressed_before", suppressed));
            if let Ok(detail) = summary {
                let event = AuditEvent::new("cert:-", "-", "mtls.access_denied", Outcome::Denied)
                    .with_detail(detail);
                if let Err(error) = audit.append(event).await {
                    tracing::error!(%error, "could not audit the counted refusals");
                }
            }
        }
        if let Err(error) = audit
            .append(AuditEvent::new(
                "system",
                "-",
                "server.stopped",
                Outcome::Success,
            ))
            .await
        {
            tracing::error!(%error, "could not audit the stop");
        }
        if let Err(error) = audit.checkpoint().await {
            tracing::error!(%error, "could not checkpoint the audit trail");
        }
        if let Err(error) = self.state.accesses.flush(&*self.state.store).await {
            tracing::error!(%error, "could not write the access counts");
        }
        if let Some(log) = &self.state.request_log
            && let Err(error) = log.sync()
        {
            tracing::error!(%error, "could not sync the request log");
        }
        self.state.store.close().await;
        tracing::info!("stopped");
    }
}

fn prepare_data_dir(path: &Path) -> Result<(), StartError> {
    let failed = |error: std::io::Error| StartError::DataDir {
        path: path.to_owned(),
        reason: error.to_string(),
    };
    std::fs::create_dir_all(path).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

/// Opens the configured database, migrating it.
pub async fn open_store(database: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match database {
        DatabaseConfig::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        DatabaseConfig::Postgres(url) => {
            let connect = PostgresStore::connect(url);
            match tokio::time::timeout(Duration::from_secs(15), connect).await {
                Ok(store) => Arc::new(store?),
                Err(_) => {
                    return Err(StoreError::Unavailable(
                        "PostgreSQL did not answer within 15 s".into(),
                    ));
                }
            }
        }
    })
}

/// How long the published self-signed CA certificate is valid (ten years; it
/// is made afresh at every start, and clients pin the key, not the certificate).
const CA_CERTIFICATE_LIFETIME_SECONDS: i64 = 10 * 365 * 86_400;

/// Reads a long-lived key at `path`, creating it (mode 0600, directory 0700) if
/// absent. Every node of a multi-node deployment needs the same file.
fn load_or_create_key<T>(
    name: &'static str,
    path: &Path,
    generate: impl FnOnce() -> Result<(T, zeroize::Zeroizing<Vec<u8>>), String>,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, StartError> {
    let failed = |reason: String| StartError::Key {
        name,
        path: path.to_owned(),
        reason,
    };
    if path.exists() {
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(path).map_err(|error| failed(error.to_string()))?,
        );
        return parse(&bytes).map_err(failed);
    }
    if let Some(parent) = path.parent() {
        prepare_data_dir(parent).map_err(|error| failed(error.to_string()))?;
    }
    let (key, bytes) = generate().map_err(failed)?;
    write_file(path, &bytes, true).map_err(|error| failed(error.to_string()))?;
    tracing::info!(path = %path.display(), "created the {name}");
    Ok(key)
}

/// Reads the audit checkpoint key at `path`, creating it (mode 0600) if absent.
pub fn load_or_create_audit_key(path: &Path) -> Result<CheckpointKey, StartError> {
    let failed = |reason: String| StartError::AuditKey {
        path: path.to_owned(),
        reason,
    };
    if path.exists() {
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(path).map_err(|error| failed(error.to_string()))?,
        );
        return CheckpointKey::from_pkcs8(&bytes).map_err(|error| failed(error.to_string()));
    }
    let (key, pkcs8) = CheckpointKey::generate().map_err(|error| failed(error.to_string()))?;
    write_file(path, &pkcs8, true).map_err(|error| failed(error.to_string()))?;
    tracing::info!(path = %path.display(), key_id = key.key_id(), "created the audit checkpoint key");
    Ok(key)
}

async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Bind {
            setting,
            addr,
            reason: error.to_string(),
        })
}

fn local_addr(setting: &'static str, listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|error| StartError::Bind {
        setting,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        reason: error.to_string(),
    })
}

fn server_tls_config(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    clock: &Arc<dyn Clock>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    identity: &ServerIdentity,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let refused = |error: rustls::Error| TlsSetupError::Refused(error.to_string());
    let builder = ServerConfig::builder_with_details(
        provider.clone(),
        Arc::new(ClockTimeProvider(clock.clone())),
    )
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(refused)?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(refused)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // BSI TR-02102-2: TLS 1.2 only with the extended master secret (RFC 7627).
    config.require_ems = true;
    Ok(Arc::new(config))
}

fn serve(
    tcp: TcpListener,
    tls: Arc<ServerConfig>,
    router: axum::Router,
    config: &Config,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, StartError> {
    let listener = TlsListener::new(
        tcp,
        TlsAcceptor::from(tls),
        config.handshake_timeout,
        ConnectionLimits {
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
        },
    )
    .map_err(|error| StartError::Bind {
        setting: "listen",
        addr: config.listen,
        reason: error.to_string(),
    })?;
    let limits = HttpLimits {
        header_read_timeout: config.handshake_timeout,
        max_concurrent_streams: 100,
    };
    Ok(tokio::spawn(serve_connections(
        listener, router, limits, shutdown,
    )))
}

fn spawn_allow_list_refresh(
    allow_list: AllowList,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = allow_list.reload().await {
                        tracing::warn!(%error, "could not refresh the client-certificate allow-list");
                    }
                }
                () = stopped(&mut shutdown) => break,
            }
        }
    })
}

fn spawn_audit_maintenance(
    audit: Arc<AuditTrail>,
    retention_days: u64,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let retention = Retention::new(time::Duration::days(
        i64::try_from(retention_days).unwrap_or(i64::MAX / 86_400),
    ));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(3600));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    match audit.purge_expired(retention).await {
                        Ok(0) => {}
                        Ok(removed) => tracing::info!(removed, "purged expired audit entries"),
                        Err(error) => tracing::warn!(%error, "audit retention purge failed"),
                    }
                    if let Err(error) = audit.checkpoint().await {
                        tracing::warn!(%error, "audit checkpoint failed");
                    }
                }
                () = stopped(&mut shutdown) => break,
            }
        }
    })
}

/// Audits client certificates refused during a handshake (an unregistered
/// or expired certificate never reaches a route), bounded by the same token
/// bucket as refused requests.
fn spawn_handshake_refusal_audit(
    state: AppState,
    mut refusals: tokio::sync::mpsc::Receiver<crate::client_auth::HandshakeRefusal>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                refusal = refusals.recv() => {
                    let Some(refusal) = refusal else { break };
                    let Some(suppressed_before) = state.denial_limiter.admit(state.clock.now()) else {
                        continue;
                    };
                    let detail = AuditDetail::new()
                        .with("reason", refusal.reason)
                        .and_then(|d| d.with("stage", "handshake"))
                        .and_then(|d| d.with("suppressed_before", suppressed_before));
                    if let Ok(detail) = detail {
                        let event = AuditEvent::new(
                            format!("cert:{}", refusal.fingerprint),
                            "-",
                            "mtls.access_denied",
                            Outcome::Denied,
                        )
                        .with_detail(detail);
                        if let Err(error) = state.audit.append(event).await {
                            tracing::error!(%error, "could not audit a refused handshake");
                        }
                    }
                }
                () = stopped(&mut shutdown) => break,
            }
        }
    })
}

/// Every five minutes, deletes expired sessions and login challenges and
/// throttle rows whose failures are forgotten (none of them grants anything
/// once expired; this keeps the tables small).
fn spawn_login_cleanup(accounts: Accounts, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(300));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => match accounts.purge_expired().await {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "purged expired login state"),
                    Err(error) => tracing::warn!(%error, "purging expired login state failed"),
                },
                () = stopped(&mut shutdown) => break,
            }
        }
    })
}

/// Resolves once shutdown has been requested (or the sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
