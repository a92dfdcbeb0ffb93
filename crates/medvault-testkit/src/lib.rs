//! The medvault test kit.
//!
//! [`TestServer`] starts a real medvault server in the test's process on
//! 127.0.0.1:0 (both listeners), over a temporary SQLite file or a fresh
//! PostgreSQL schema, with a [`ManualClock`] the test can move and the
//! development CA it generated. [`TestCertificate`] makes client certificates
//! (self-signed, expired, without clientAuth, ...) and [`TestServer::client`]
//! gives a `reqwest` client that trusts the server and presents one.
//!
//! Every integration test uses this crate; none depends on a hand-started process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test support: a failed set-up must fail the test loudly"
)]

pub mod hddt;

use std::net::SocketAddr;
use std::sync::Arc;

use medvault_core::{CertificateFingerprint, Clock, ManualClock, SystemClock};
use medvault_server::{RawConfig, RunningServer};
use medvault_store_postgres::test_schema::TestSchema;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Which database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file in the data directory.
    Sqlite,
    /// A fresh schema in `MEDVAULT_TEST_POSTGRES_URL`.
    Postgres,
}

/// A medvault server running inside the test process.
pub struct TestServer {
    running: Option<RunningServer>,
    /// The clock the server reads; move it to test expiry.
    pub clock: Arc<ManualClock>,
    /// The data directory (deleted when the server is dropped).
    pub data_dir: tempfile::TempDir,
    /// PEM of the development CA that signed the server certificate.
    pub ca_pem: Vec<u8>,
    /// The database URL given to the server (`None`: SQLite in `data_dir`).
    database: Option<String>,
    _schema: Option<TestSchema>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("data_dir", &self.data_dir.path())
            .finish_non_exhaustive()
    }
}

/// The wall-clock time now, truncated to seconds (certificate precision).
pub fn wall_clock_now() -> OffsetDateTime {
    let now = SystemClock.now();
    now.replace_nanosecond(0).unwrap_or(now)
}

impl TestServer {
    /// A development-mode server on SQLite.
    pub async fn start() -> Self {
        Self::start_with(Backend::Sqlite, |_| {})
            .await
            .expect("SQLite is always available")
    }

    /// A development-mode server on `backend`, with `tweak` applied to its settings.
    /// `None` (after saying so) when the backend is PostgreSQL and
    /// `MEDVAULT_TEST_POSTGRES_URL` is unset.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut RawConfig)) -> Option<Self> {
        Self::start_with_routes(backend, tweak, axum::Router::new()).await
    }

    /// Like [`start_with`](Self::start_with), with extra routes on the patient
    /// listener (e.g. a deliberately slow handler to test timeouts and shutdown).
    pub async fn start_with_routes(
        backend: Backend,
        tweak: impl FnOnce(&mut RawConfig),
        extra_patient_routes: axum::Router<medvault_server::app::AppState>,
    ) -> Option<Self> {
        let data_dir = tempfile::tempdir().unwrap();
        let mut schema = None;
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let Some(url) = TestSchema::url_from_env() else {
                    medvault_store::conformance::report_skipped("server on PostgreSQL");
                    return None;
                };
                let created = TestSchema::create(&url)
                    .await
                    .expect("PostgreSQL unreachable");
                let separator = if url.contains('?') { '&' } else { '?' };
                let url = format!("{url}{separator}options=-csearch_path%3D{}", created.name());
                schema = Some(created);
                Some(url)
            }
        };
        Self::boot(data_dir, database, schema, tweak, extra_patient_routes).await
    }

    async fn boot(
        data_dir: tempfile::TempDir,
        database: Option<String>,
        schema: Option<TestSchema>,
        tweak: impl FnOnce(&mut RawConfig),
        extra_patient_routes: axum::Router<medvault_server::app::AppState>,
    ) -> Option<Self> {
        let mut raw = RawConfig {
            data_dir: Some(data_dir.path().to_owned()),
            listen: Some("127.0.0.1:0".into()),
            hddt_listen: Some("127.0.0.1:0".into()),
            database: database.clone(),
            dev: Some(true),
            shutdown_grace_secs: Some(5),
            ..RawConfig::default()
        };
        tweak(&mut raw);
        let config = medvault_server::Config::from_raw(raw).unwrap();
        let clock = Arc::new(ManualClock::new(wall_clock_now()));
        let running =
            medvault_server::start_with_routes(config, clock.clone(), extra_patient_routes)
                .await
                .unwrap();
        let ca_path = running.dev_ca.clone().expect("development mode makes a CA");
        let ca_pem = std::fs::read(ca_path).unwrap();
        Some(Self {
            running: Some(running),
            clock,
            data_dir,
            ca_pem,
            database,
            _schema: schema,
        })
    }

    /// A second server node on the same database, with the same long-lived
    /// keys (participant CA, OPAQUE setup) copied from this one, as an
    /// operator deploys them: state shared by all nodes must hold across both.
    pub async fn second_node(&self) -> Self {
        self.second_node_with(|_| {}).await
    }

    /// [`Self::second_node`] with settings changed first (e.g. the first
    /// node's public URLs, as nodes behind one load balancer share them).
    pub async fn second_node_with(&self, tweak: impl FnOnce(&mut RawConfig)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let keys = self.data_dir.path().join("keys");
        let target = data_dir.path().join("keys");
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(&keys).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
        let database = Some(self.database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.path().join("medvault.db").display()
            )
        }));
        let node = Self::boot(data_dir, database, None, tweak, axum::Router::new())
            .await
            .expect("the first node's database is reachable");
        node.clock.set(self.clock.now());
        // Its allow-list was read at its own boot time, which may be later
        // than the shared clock it now runs on: a clock that went back counts
        // as a stale allow-list (fail closed), so read it again.
        node.state().allow_list.reload().await.unwrap();
        node
    }

    /// The database URL given to the server (`None`: SQLite in `data_dir`);
    /// a PostgreSQL URL names the test's own schema.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The SDK for this server, with its participant CA pinned from the
    /// server's state (as a client configured out of band would).
    pub fn sdk(&self) -> medvault_client::Client {
        let pinned =
            medvault_crypto::PinnedCa::from_public_key(self.state().ca_info.public_key.as_slice())
                .unwrap();
        let base = url::Url::parse(&self.patient_url("/")).unwrap();
        medvault_client::Client::new(self.client(None), base, pinned)
    }

    fn running(&self) -> &RunningServer {
        self.running.as_ref().expect("server is running until stop")
    }

    /// The patient listener's address.
    pub fn patient_addr(&self) -> SocketAddr {
        self.running().patient_addr
    }

    /// The HDDT listener's address.
    pub fn hddt_addr(&self) -> SocketAddr {
        self.running().hddt_addr
    }

    /// `https://localhost:<port>` + `path` on the patient listener.
    pub fn patient_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.patient_addr().port())
    }

    /// `https://localhost:<port>` + `path` on the HDDT listener.
    pub fn hddt_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.hddt_addr().port())
    }

    /// The server's shared state (store, audit trail, allow-list, config).
    pub fn state(&self) -> &medvault_server::app::AppState {
        &self.running().state
    }

    /// Registers `certificate` on the allow-list for `owner`.
    pub async fn register(
        &self,
        certificate: &TestCertificate,
        owner: &str,
    ) -> CertificateFingerprint {
        self.state()
            .allow_list
            .register(&certificate.der, owner, "operator:test")
            .await
            .unwrap()
    }

    /// An HTTPS client that trusts the development CA and presents `identity`.
    pub fn client(&self, identity: Option<&TestCertificate>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.ca_pem).unwrap()])
            .timeout(std::time::Duration::from_secs(20));
        if let Some(identity) = identity {
            let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    /// A rustls client configuration that trusts the development CA (for tests
    /// below HTTP: cipher suites, session resumption).
    pub fn rustls_client_config(
        &self,
        provider: rustls::crypto::CryptoProvider,
        identity: Option<&TestCertificate>,
    ) -> Result<rustls::ClientConfig, rustls::Error> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        Ok(match identity {
            Some(identity) => builder.with_client_auth_cert(
                vec![rustls_pki_types::CertificateDer::from(identity.der.clone())],
                rustls_pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                    .unwrap(),
            )?,
            None => builder.with_no_client_auth(),
        })
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// A client certificate and its private key.
#[derive(Debug, Clone)]
pub struct TestCertificate {
    /// DER bytes.
    pub der: Vec<u8>,
    /// PEM of the certificate.
    pub cert_pem: String,
    /// PEM (PKCS#8) of the private key.
    pub key_pem: String,
}

/// What a test certificate looks like.
#[derive(Debug, Clone)]
pub struct CertificateSpec {
    /// Subject common name.
    pub common_name: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Whether to include key usage digitalSignature.
    pub digital_signature: bool,
    /// Whether to include extended key usage clientAuth.
    pub client_auth: bool,
    /// The key and signature algorithm.
    pub algorithm: &'static rcgen::SignatureAlgorithm,
}

impl CertificateSpec {
    /// A DiGA-style client certificate: valid from a day ago for 365 days,
    /// digitalSignature + clientAuth.
    pub fn diga(common_name: &str) -> Self {
        let now = wall_clock_now();
        Self {
            common_name: common_name.to_owned(),
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(364),
            digital_signature: true,
            client_auth: true,
            algorithm: &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

impl TestCertificate {
    /// A self-signed certificate as `spec` describes (ECDSA P-256).
    pub fn self_signed(spec: &CertificateSpec) -> Self {
        let key = KeyPair::generate_for(spec.algorithm).unwrap();
        let certificate = leaf_params(spec).self_signed(&key).unwrap();
        Self {
            der: certificate.der().to_vec(),
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A certificate as `spec` describes, issued by `ca`.
    pub fn issued_by(spec: &CertificateSpec, ca: &TestCa) -> Self {
        let key = KeyPair::generate_for(spec.algorithm).unwrap();
        let params = leaf_params(spec);
        let certificate = params.signed_by(&key, &ca.issuer).unwrap();
        Self {
            der: certificate.der().to_vec(),
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A valid DiGA-style self-signed certificate named `common_name`.
    pub fn diga(common_name: &str) -> Self {
        Self::self_signed(&CertificateSpec::diga(common_name))
    }
}

fn leaf_params(spec: &CertificateSpec) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, spec.common_name.as_str());
    params.distinguished_name = name;
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.key_usages = if spec.digital_signature {
        vec![KeyUsagePurpose::DigitalSignature]
    } else {
        vec![KeyUsagePurpose::KeyAgreement]
    };
    params.extended_key_usages = if spec.client_auth {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ServerAuth]
    };
    params
}

/// A test certificate authority that issues client certificates.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA named `common_name`.
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }
}
