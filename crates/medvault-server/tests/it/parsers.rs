//! Property tests of what parses network input: arbitrary or mutated bytes
//! never panic, and what parses is what was given. (cargo-fuzz needs a nightly
//! toolchain this project does not have; these run on stable in every CI run.)

use medvault_server::client_auth::ClientCertificate;
use medvault_testkit::TestCertificate;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_certificate_parser(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ClientCertificate::parse(&bytes);
    }

    #[test]
    fn mutated_certificates_never_panic_and_never_keep_the_fingerprint(
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        truncate in any::<bool>(),
    ) {
        let certificate = sample();
        let mut bytes = certificate.der.clone();
        let index = position.index(bytes.len());
        if truncate {
            bytes.truncate(index);
        } else {
            bytes[index] ^= flip;
        }
        if let Ok(parsed) = ClientCertificate::parse(&bytes) {
            // Whatever still parses is identified by its own bytes, never the original's.
            prop_assert_ne!(parsed.fingerprint, ClientCertificate::parse(&certificate.der).unwrap().fingerprint);
        }
    }
}

fn sample() -> &'static TestCertificate {
    static SAMPLE: std::sync::OnceLock<TestCertificate> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| TestCertificate::diga("property test"))
}

#[test]
fn trailing_bytes_after_a_certificate_are_refused() {
    let mut bytes = sample().der.clone();
    bytes.push(0);
    assert!(ClientCertificate::parse(&bytes).is_err());
}
