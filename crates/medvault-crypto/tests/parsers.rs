//! Every parser of untrusted bytes in this crate refuses garbage without
//! panicking: certificates, credential files, wrapped keys, sealed documents,
//! codes, OPAQUE messages and the server's stored login state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "property tests: a failed expectation must fail the test"
)]

use medvault_crypto::document::{DocumentHeader, Recipient, open_document_key, seal_document};
use medvault_crypto::password::{self, OpaqueServerSetup, ServerLoginState};
use medvault_crypto::{
    CodeKind, CredentialSubject, ParticipantCa, RecoveryCode, RootCredential,
    SoftwareCredentialFile, SoftwareKey, WrappedKey, ecdsa_p256_fixed_to_der,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_no_certificate(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (ca, _) = ParticipantCa::generate().unwrap();
        prop_assert!(ca.pinned().verify_working_credential(&bytes, 1_800_000_000).is_err());
        prop_assert!(ca.pinned().verify_root_key(&String::from_utf8_lossy(&bytes), "uid", 1_800_000_000).is_err());
    }

    #[test]
    fn a_mutated_certificate_never_verifies_as_another(index in 0usize..400, flip in 1u8..=255) {
        let (ca, _) = ParticipantCa::generate().unwrap();
        let key = SoftwareKey::generate().unwrap();
        let subject = CredentialSubject {
            uid: "3f2c1d9e-1b7a-4c55-9a0e-2f6d8b1c4e70".into(),
            working_credential_id: "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
            kind: "password".into(),
        };
        let mut der = ca
            .certify_working_credential(&subject, &key.public_key(), 0, 4_000_000_000)
            .unwrap();
        let at = index % der.len();
        der[at] ^= flip;
        // Either refused, or (a byte the signature does not cover, e.g. in the
        // outer length bytes that still parse) the very same statement.
        if let Ok(certified) = ca.pinned().verify_working_credential(&der, 1_800_000_000) {
            prop_assert_eq!(certified.subject, subject);
            prop_assert_eq!(certified.public_key, key.public_key());
        }
    }

    #[test]
    fn arbitrary_text_is_no_credential_file(text in ".{0,3000}") {
        prop_assert!(SoftwareCredentialFile::from_pem(&text, None).is_err());
        prop_assert!(SoftwareCredentialFile::from_pem(&text, Some(b"x")).is_err());
    }

    #[test]
    fn arbitrary_bytes_are_no_wrapped_key_or_document(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = WrappedKey::from_bytes(&bytes);
        let root = RootCredential::generate().unwrap();
        prop_assert!(open_document_key(&root, "d", "s", "r", &bytes).is_err());
        let _ = ecdsa_p256_fixed_to_der(&bytes);
        // OPAQUE messages of the right length may parse; none may panic.
        let _ = ServerLoginState::from_bytes(&bytes);
        let setup = OpaqueServerSetup::generate();
        let _ = password::server_login_respond(&setup, None, &bytes, b"a@b.c");
        let _ = password::server_registration_finish(&bytes);
        let _ = medvault_crypto::jose::UnverifiedJws::parse(&String::from_utf8_lossy(&bytes));
        let _ = medvault_crypto::did::resolve_did(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn a_changed_document_never_opens(part in 0usize..2, index in 0usize..64, flip in 1u8..=255) {
        let root = RootCredential::generate().unwrap();
        let header = DocumentHeader { title: "t".into(), media_type: "text/plain".into() };
        let parts = seal_document(
            "d",
            "s",
            &[Recipient { uid: "r", root_public_key: root.public_key() }],
            &header,
            b"body of the document",
        )
        .unwrap();
        let key = open_document_key(&root, "d", "s", "r", &parts.keys[0].1).unwrap();
        let (mut header_bytes, mut body) = (parts.header.clone(), parts.body.clone());
        let target = if part == 0 { &mut header_bytes } else { &mut body };
        let at = index % target.len();
        target[at] ^= flip;
        prop_assert!(key.open_header(&header_bytes).is_err() || part == 1);
        prop_assert!(key.open_body(&body).is_err() || part == 0);
    }

    #[test]
    fn arbitrary_text_is_rarely_a_code(text in "[0-9A-Za-z -]{0,40}") {
        for kind in [CodeKind::SuperPin, CodeKind::Tan] {
            if let Ok(code) = RecoveryCode::parse(kind, &text) {
                // Whatever parsed, displays and parses back to itself.
                let shown = code.display();
                let again = RecoveryCode::parse(kind, &shown).unwrap().display();
                prop_assert_eq!(again.as_str(), shown.as_str());
            }
        }
    }
}
