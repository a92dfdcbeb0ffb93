//! OAuth form bodies (`/par`): decoding and validation must never panic,
//! and nothing the fuzzer makes passes without the registered client, its
//! redirect URI and an S256 challenge.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medvault_core::{DigaClientId, Miv};
use medvault_oauth::{DigaRegistry, DigaRegistryEntry, DigaStatus, validate_par};

const BASE: &str = "https://gematik.de/fhir/hddt/ValueSet/";
/// The registered client certificate: a self-signed ECDSA P-256 one as a
/// DiGA makes it (DER).
fn certificate() -> &'static [u8] {
    static CERTIFICATE: OnceLock<Vec<u8>> = OnceLock::new();
    CERTIFICATE.get_or_init(|| {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_763_900_000).expect("t");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(1_796_732_000).expect("t");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .to_vec()
    })
}

fn registry() -> &'static DigaRegistry {
    static REGISTRY: OnceLock<DigaRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = DigaRegistry::default();
        registry
            .upsert(
                DigaRegistryEntry {
                    client_id: DigaClientId::parse("urn:diga:bfarm:12345").expect("an id"),
                    name: "Fuzz-DiGA".to_owned(),
                    status: DigaStatus::Active,
                    redirect_uri: "https://diga.example/cb".to_owned(),
                    mivs: vec![Miv::ContinuousGlucose, Miv::BloodGlucose],
                    certificates: vec![certificate().to_vec()],
                },
                1_764_000_000,
            )
            .expect("an entry");
        registry
    })
}

fuzz_target!(|data: &[u8]| {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(data)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let today = time::Date::from_calendar_date(2026, time::Month::December, 3).expect("a date");
    if let Ok(request) = validate_par(&form, certificate(), registry(), BASE, today) {
        assert_eq!(request.client_id.as_str(), "urn:diga:bfarm:12345");
        assert_eq!(request.redirect_uri, "https://diga.example/cb");
        assert!(medvault_oauth::is_s256_challenge(&request.code_challenge));
    }
    // Another certificate is never accepted.
    assert!(validate_par(&form, b"another", registry(), BASE, today).is_err());
});
