//! The BSI TR-02102-2 TLS policy, seen from clients.

use std::sync::Arc;

use medvault_testkit::TestServer;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};

async fn handshake(
    server: &TestServer,
    provider: CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(rustls::ProtocolVersion, rustls::SupportedCipherSuite), String> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&server.ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut results = Vec::new();
    for addr in [server.patient_addr(), server.hddt_addr()] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        match connector.connect(name, tcp).await {
            Ok(stream) => {
                let connection = stream.get_ref().1;
                results.push(Ok((
                    connection.protocol_version().unwrap(),
                    connection.negotiated_cipher_suite().unwrap(),
                )));
            }
            Err(error) => results.push(Err(error.to_string())),
        }
    }
    // Both listeners follow one policy.
    assert_eq!(results[0].is_ok(), results[1].is_ok(), "{results:?}");
    results.remove(0)
}

fn only(
    suites: Vec<rustls::SupportedCipherSuite>,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: suites,
        kx_groups: groups,
        ..aws_lc_rs::default_provider()
    }
}

#[tokio::test]
async fn tls13_with_aes_gcm_and_nist_curves_is_accepted() {
    let server = TestServer::start().await;
    let (version, suite) = handshake(
        &server,
        aws_lc_rs::default_provider(),
        &[&rustls::version::TLS13],
    )
    .await
    .unwrap();
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    assert_ne!(
        suite.suite(),
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256.suite()
    );
    let p256_only = only(
        vec![cipher_suite::TLS13_AES_128_GCM_SHA256],
        vec![kx_group::SECP256R1],
    );
    handshake(&server, p256_only, &[&rustls::version::TLS13])
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn tls12_with_ecdhe_aes_gcm_is_accepted() {
    let server = TestServer::start().await;
    let tls12 = only(
        vec![cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384],
        vec![kx_group::SECP384R1],
    );
    let (version, _) = handshake(&server, tls12, &[&rustls::version::TLS12])
        .await
        .unwrap();
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    server.stop().await;
}

#[tokio::test]
async fn a_client_offering_only_an_out_of_policy_suite_is_refused() {
    let server = TestServer::start().await;
    let chacha13 = only(
        vec![cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        vec![kx_group::SECP256R1],
    );
    assert!(
        handshake(&server, chacha13, &[&rustls::version::TLS13])
            .await
            .is_err()
    );
    let chacha12 = only(
        vec![cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256],
        vec![kx_group::SECP256R1],
    );
    assert!(
        handshake(&server, chacha12, &[&rustls::version::TLS12])
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_offering_only_an_out_of_policy_group_is_refused() {
    let server = TestServer::start().await;
    let x25519 = only(
        vec![cipher_suite::TLS13_AES_128_GCM_SHA256],
        vec![kx_group::X25519],
    );
    assert!(
        handshake(&server, x25519, &[&rustls::version::TLS13])
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_can_only_sign_with_ed25519_is_refused() {
    // TR-02102-2 lists ECDSA and RSA-PSS for the client's CertificateVerify.
    let server = TestServer::start().await;
    let spec = medvault_testkit::CertificateSpec {
        algorithm: &rcgen::PKCS_ED25519,
        ..medvault_testkit::CertificateSpec::diga("ed25519 client")
    };
    let certificate = medvault_testkit::TestCertificate::self_signed(&spec);
    server.register(&certificate, "urn:diga:bfarm:00294").await;
    let outcome = server
        .client(Some(&certificate))
        .get(server.hddt_url("/client-certificate"))
        .send()
        .await;
    assert!(outcome.is_err() || outcome.unwrap().status() != 200);
    // The same client with a P-256 key gets in.
    let ecdsa = medvault_testkit::TestCertificate::diga("p256 client");
    server.register(&ecdsa, "urn:diga:bfarm:00294").await;
    let response = server
        .client(Some(&ecdsa))
        .get(server.hddt_url("/client-certificate"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}
