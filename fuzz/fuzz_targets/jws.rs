//! Compact JWS (every JWT we read: credential requests, presentations,
//! tokens): parsing must never panic, and a signature check with an
//! unrelated key must never succeed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medvault_crypto::SoftwareKey;
use medvault_crypto::did::P256PublicKey;
use medvault_crypto::jose::UnverifiedJws;

fn key() -> &'static P256PublicKey {
    static KEY: OnceLock<P256PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SoftwareKey::generate().expect("a key");
        P256PublicKey::from_uncompressed(&key.public_key()).expect("a public key")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jws) = UnverifiedJws::parse(text) else {
        return;
    };
    let _ = jws.header();
    let _ = jws.claims_unverified::<serde_json::Value>();
    // A fresh random key signed nothing the fuzzer can make.
    assert!(jws.verify::<serde_json::Value>(key()).is_err());
});
