//! What a client does before it talks to the server: make keys and enrolments.

use medvault_accounts::{Accounts, Enrolment, PasswordEnrolment};
use medvault_core::{Email, Uid, WorkingCredentialKind};
use medvault_crypto::enrol::{key_agreement_slot, knowledge_slot};
use medvault_crypto::password::{self, ExportKey};
use medvault_crypto::{
    CodeKind, EnrolmentSlot, RecoveryCode, RootCredential, SoftwareKey, code_salt,
    enrolment_message,
};

/// One slot's number, KEK input and (for codes) login proof.
type SlotSecrets = (u32, Vec<u8>, Option<Vec<u8>>);

/// A knowledge credential's enrolment from its slots' key material and proofs.
fn knowledge(
    uid: Uid,
    root: &RootCredential,
    kind: WorkingCredentialKind,
    slots: &[SlotSecrets],
    password: Option<PasswordEnrolment>,
) -> Enrolment {
    let id = Uid::generate();
    let signing = SoftwareKey::generate().unwrap();
    let slots: Vec<EnrolmentSlot> = slots
        .iter()
        .map(|(slot, material, proof)| {
            knowledge_slot(
                root,
                &signing,
                &uid.to_string(),
                &id.to_string(),
                *slot,
                material,
                proof.clone(),
            )
            .unwrap()
        })
        .collect();
    finish(uid, id, kind, &signing, slots, password)
}

fn finish(
    uid: Uid,
    id: Uid,
    kind: WorkingCredentialKind,
    signing: &SoftwareKey,
    slots: Vec<EnrolmentSlot>,
    password: Option<PasswordEnrolment>,
) -> Enrolment {
    let public_key = signing.public_key();
    let message = enrolment_message(
        &uid.to_string(),
        &id.to_string(),
        kind.as_str(),
        &public_key,
    );
    Enrolment {
        id,
        kind,
        proof_of_possession: signing.sign_challenge(&message).unwrap(),
        public_key,
        slots,
        password,
    }
}

/// A code's key material and login proof.
pub fn code_secrets(
    uid: Uid,
    code: &RecoveryCode,
    kind: CodeKind,
    number: u32,
) -> (Vec<u8>, Vec<u8>) {
    let salt = code_salt(&uid.to_string(), kind, number);
    (
        code.key_material(&salt).unwrap().to_vec(),
        code.verifier(&salt).unwrap(),
    )
}

/// A SuperPIN enrolment and the code to show once.
pub fn superpin(uid: Uid, root: &RootCredential) -> (Enrolment, RecoveryCode) {
    let code = RecoveryCode::generate(CodeKind::SuperPin).unwrap();
    let (material, proof) = code_secrets(uid, &code, CodeKind::SuperPin, 0);
    let enrolment = knowledge(
        uid,
        root,
        WorkingCredentialKind::SuperPin,
        &[(0, material, Some(proof))],
        None,
    );
    (enrolment, code)
}

/// A TAN batch enrolment and its printed list.
pub fn tans(uid: Uid, root: &RootCredential, count: u32) -> (Enrolment, Vec<RecoveryCode>) {
    let codes: Vec<RecoveryCode> = (0..count)
        .map(|_| RecoveryCode::generate(CodeKind::Tan).unwrap())
        .collect();
    let slots: Vec<_> = codes
        .iter()
        .zip(1..)
        .map(|(code, number)| {
            let (material, proof) = code_secrets(uid, code, CodeKind::Tan, number);
            (number, material, Some(proof))
        })
        .collect();
    (
        knowledge(uid, root, WorkingCredentialKind::Tan, &slots, None),
        codes,
    )
}

/// A password enrolment (OPAQUE registration against `accounts`).
pub async fn password(
    accounts: &Accounts,
    uid: Uid,
    root: &RootCredential,
    email: &str,
    password_text: &str,
) -> Enrolment {
    let email = Email::parse(email).unwrap();
    let (state, request) = password::client_registration_start(password_text.as_bytes()).unwrap();
    let response = accounts
        .password_registration_response(&email, &request, std::net::IpAddr::from([192, 0, 2, 99]))
        .await
        .unwrap();
    let (upload, export_key): (Vec<u8>, ExportKey) =
        password::client_registration_finish(state, password_text.as_bytes(), &response).unwrap();
    knowledge(
        uid,
        root,
        WorkingCredentialKind::Password,
        &[(0, export_key.as_bytes().to_vec(), None)],
        Some(PasswordEnrolment {
            email,
            registration_upload: upload,
        }),
    )
}

/// A software-certificate enrolment and its key.
pub fn software(uid: Uid, root: &RootCredential) -> (Enrolment, SoftwareKey) {
    let id = Uid::generate();
    let key = SoftwareKey::generate().unwrap();
    let slot =
        key_agreement_slot(root, &key.public_key(), &uid.to_string(), &id.to_string()).unwrap();
    let enrolment = finish(
        uid,
        id,
        WorkingCredentialKind::SoftwareCertificate,
        &key,
        vec![slot],
        None,
    );
    (enrolment, key)
}
