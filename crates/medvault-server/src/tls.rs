//! TLS for both listeners: the BSI TR-02102-2 policy, server certificates
//! (operator-provided or generated for development) and the start-up checks.
//!
//! Policy (BSI TR-02102-2, version 2025-01, tables for TLS 1.2 and 1.3; the subset
//! that rustls implements):
//!
//! | version | cipher suites | groups |
//! |---|---|---|
//! | TLS 1.3 | `TLS_AES_256_GCM_SHA384`, `TLS_AES_128_GCM_SHA256` | secp384r1, secp256r1 |
//! | TLS 1.2 | `TLS_ECDHE_ECDSA_WITH_AES_{256,128}_GCM_SHA{384,256}`, `TLS_ECDHE_RSA_WITH_AES_{256,128}_GCM_SHA{384,256}` | secp384r1, secp256r1 |
//!
//! Left out on purpose: ChaCha20-Poly1305 and X25519 (not in the TR's tables),
//! every TLS version below 1.2. TLS 1.2 requires the extended master secret
//! (RFC 7627), as the TR recommends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use medvault_core::Clock;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::SignatureScheme;
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::time_provider::TimeProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SignatureVerificationAlgorithm, UnixTime};
use time::OffsetDateTime;

/// The crypto provider with only the TR-02102-2 suites and groups.
pub fn policy_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::SECP384R1, kx_group::SECP256R1],
        ..aws_lc_rs::default_provider()
    }
}

/// The handshake signature schemes a client may use to prove possession of its
/// certificate's key, per BSI TR-02102-2: ECDSA on the NIST curves and RSA-PSS.
/// Left out: Ed25519/Ed448 (not in the TR's tables) and RSA PKCS#1 v1.5.
pub const CLIENT_SIGNATURE_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// The provider's signature verification algorithms, restricted to
/// [`CLIENT_SIGNATURE_SCHEMES`].
pub fn client_signature_algorithms() -> WebPkiSupportedAlgorithms {
    static MAPPING: OnceLock<
        Vec<(
            SignatureScheme,
            &'static [&'static dyn SignatureVerificationAlgorithm],
        )>,
    > = OnceLock::new();
    let all = aws_lc_rs::default_provider().signature_verification_algorithms;
    let mapping = MAPPING.get_or_init(|| {
        all.mapping
            .iter()
            .filter(|(scheme, _)| CLIENT_SIGNATURE_SCHEMES.contains(scheme))
            .copied()
            .collect()
    });
    WebPkiSupportedAlgorithms {
        all: all.all,
        mapping: mapping.as_slice(),
    }
}

/// Lets rustls read the time from our [`Clock`], so tests that move the clock
/// also move certificate validity checks.
#[derive(Debug)]
pub struct ClockTimeProvider(pub Arc<dyn Clock>);

impl TimeProvider for ClockTimeProvider {
    fn current_time(&self) -> Option<UnixTime> {
        let seconds = u64::try_from(self.0.now().unix_timestamp()).ok()?;
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            seconds,
        )))
    }
}

/// A failure to obtain a usable server certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The certificate does not meet the production rules.
    #[error("server certificate refused: {0}")]
    Refused(String),
    /// Generating the development certificates failed.
    #[error("cannot generate development certificates: {0}")]
    Generate(String),
}

/// The server's certificate chain and key.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 private key.
    pub key: PrivateKeyDer<'static>,
    /// Where the development CA certificate is, when one was generated.
    pub dev_ca: Option<PathBuf>,
}

fn file_error(path: &Path, error: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::File {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// Reads an operator-provided certificate chain and key.
pub fn load_identity(cert: &Path, key: &Path) -> Result<ServerIdentity, TlsSetupError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|error| file_error(cert, error))?
        .collect::<Result<_, _>>()
        .map_err(|error| file_error(cert, error))?;
    if chain.is_empty() {
        return Err(file_error(cert, "holds no certificate"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|error| file_error(key, error))?;
    Ok(ServerIdentity {
        chain,
        key: key_der,
        dev_ca: None,
    })
}

/// Production rules for the HDDT listener's certificate: not self-signed, valid
/// now, and `fqdn` in its subject alternative names.
pub fn check_production_certificate(
    leaf: &CertificateDer<'_>,
    fqdn: &str,
    now: OffsetDateTime,
) -> Result<(), TlsSetupError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| TlsSetupError::Refused("the certificate cannot be parsed".into()))?;
    let self_signed =
        certificate.subject() == certificate.issuer() && certificate.verify_signature(None).is_ok();
    if self_signed {
        return Err(TlsSetupError::Refused(
            "it is self-signed; HDDT requires a publicly trusted certificate (use --dev for development)".into(),
        ));
    }
    let not_before = certificate.validity().not_before.timestamp();
    let not_after = certificate.validity().not_after.timestamp();
    let now_seconds = now.unix_timestamp();
    if now_seconds < not_before || now_seconds > not_after {
        return Err(TlsSetupError::Refused("it is not valid now".into()));
    }
    let names: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        Some(dns.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let fqdn = fqdn.to_ascii_lowercase();
    let matches = names.iter().any(|name| {
        *name == fqdn
            || name
                .strip_prefix("*.")
                .is_some_and(|suffix| fqdn.split_once('.').is_some_and(|(_, rest)| rest == suffix))
    });
    if !matches {
        return Err(TlsSetupError::Refused(format!(
            "its subject alternative names do not include {fqdn}"
        )));
    }
    Ok(())
}

/// File names of the generated development material inside `<data_dir>/tls`.
const DEV_CA_CERT: &str = "dev-ca.pem";
const DEV_CA_KEY: &str = "dev-ca.key";
const DEV_SERVER_CERT: &str = "server.pem";
const DEV_SERVER_KEY: &str = "server.key";

/// Loads the development CA and server certificate from `<data_dir>/tls`,
/// creating them on first start. Returns whether they were created.
pub fn development_identity(
    data_dir: &Path,
    fqdn: &str,
) -> Result<(ServerIdentity, bool), TlsSetupError> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join(DEV_SERVER_CERT);
    let key_path = dir.join(DEV_SERVER_KEY);
    let ca_path = dir.join(DEV_CA_CERT);
    let created = !(cert_path.exists() && key_path.exists() && ca_path.exists());
    if created {
        std::fs::create_dir_all(&dir).map_err(|error| file_error(&dir, error))?;
        let (ca_pem, ca_key_pem, server_pem, server_key_pem) = generate_development_pki(fqdn)?;
        write_file(&ca_path, ca_pem.as_bytes(), false)?;
        write_file(&dir.join(DEV_CA_KEY), ca_key_pem.as_bytes(), true)?;
        write_file(&cert_path, server_pem.as_bytes(), false)?;
        write_file(&key_path, server_key_pem.as_bytes(), true)?;
    }
    let mut identity = load_identity(&cert_path, &key_path)?;
    identity.dev_ca = Some(ca_path);
    Ok((identity, created))
}

/// A development CA and a server certificate it signed, all PEM:
/// (CA cert, CA key, server cert, server key). The server certificate names
/// `fqdn`, `localhost`, 127.0.0.1 and ::1.
pub fn generate_development_pki(
    fqdn: &str,
) -> Result<(String, String, String, String), TlsSetupError> {
    let generate = |error: rcgen::Error| TlsSetupError::Generate(error.to_string());
    let ca_key = KeyPair::generate().map_err(generate)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::CommonName, "medvault development CA (not trusted)");
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(generate)?;

    let server_key = KeyPair::generate().map_err(generate)?;
    let mut names = vec![fqdn.to_owned()];
    if fqdn != "localhost" {
        names.push("localhost".to_owned());
    }
    let mut params = CertificateParams::new(names).map_err(generate)?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, fqdn);
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let server = params.signed_by(&server_key, &ca).map_err(generate)?;
    Ok((
        ca.pem(),
        ca.key().serialize_pem(),
        server.pem(),
        server_key.serialize_pem(),
    ))
}

/// Writes a file; secrets get mode 0600 and are never overwritten in place.
pub fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsSetupError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options
        .open(path)
        .map_err(|error| file_error(path, error))?;
    file.write_all(contents)
        .map_err(|error| file_error(path, error))?;
    file.sync_all().map_err(|error| file_error(path, error))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2027-06-01 00:00 UTC);

    fn leaf_of(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_ca_signed_certificate_naming_the_fqdn_is_accepted() {
        let (_, _, server_pem, _) = generate_development_pki("ddr.example.com").unwrap();
        check_production_certificate(&leaf_of(&server_pem), "ddr.example.com", NOW).unwrap();
        check_production_certificate(&leaf_of(&server_pem), "DDR.Example.com", NOW).unwrap();
    }

    #[test]
    fn a_san_mismatch_is_refused() {
        let (_, _, server_pem, _) = generate_development_pki("ddr.example.com").unwrap();
        let error = check_production_certificate(&leaf_of(&server_pem), "other.example.com", NOW)
            .unwrap_err();
        assert!(error.to_string().contains("other.example.com"), "{error}");
    }

    #[test]
    fn a_self_signed_certificate_is_refused() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["ddr.example.com".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let certificate = params.self_signed(&key).unwrap();
        let error =
            check_production_certificate(certificate.der(), "ddr.example.com", NOW).unwrap_err();
        assert!(error.to_string().contains("self-signed"), "{error}");
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let (_, _, server_pem, _) = generate_development_pki("ddr.example.com").unwrap();
        let later = datetime!(2036-01-01 00:00 UTC);
        let error = check_production_certificate(&leaf_of(&server_pem), "ddr.example.com", later)
            .unwrap_err();
        assert!(error.to_string().contains("not valid now"), "{error}");
    }

    #[test]
    fn a_wildcard_covers_one_label_only() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["*.example.com".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let leaf = params.signed_by(&key, &ca).unwrap();
        check_production_certificate(leaf.der(), "ddr.example.com", NOW).unwrap();
        assert!(check_production_certificate(leaf.der(), "a.ddr.example.com", NOW).is_err());
        assert!(check_production_certificate(leaf.der(), "example.com", NOW).is_err());
    }
}
