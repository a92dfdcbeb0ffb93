//! Making enrolment requests: keys, wrapped copies of the Root Credential,
//! proofs and proof of possession, for each kind of working credential.

use medvault_core::{Email, Uid, WorkingCredentialKind};
use medvault_crypto::enrol::{key_agreement_slot, knowledge_slot};
use medvault_crypto::{
    CodeKind, EnrolmentSlot, RecoveryCode, RootCredential, SoftwareKey, code_salt,
    enrolment_message,
};
use medvault_proto::accounts as proto;

use crate::ClientError;

fn key_error(_: medvault_crypto::CryptoError) -> ClientError {
    ClientError::Unlock("key generation")
}

/// One slot's number, KEK input and (for codes) login proof.
struct SlotSecret {
    number: u32,
    key_material: Vec<u8>,
    proof: Option<Vec<u8>>,
}

fn request(
    uid: Uid,
    id: Uid,
    kind: WorkingCredentialKind,
    signing_key: &SoftwareKey,
    slots: Vec<EnrolmentSlot>,
    password: Option<proto::PasswordEnrolmentRequest>,
) -> Result<proto::EnrolmentRequest, ClientError> {
    let public_key = signing_key.public_key();
    let message = enrolment_message(
        &uid.to_string(),
        &id.to_string(),
        kind.as_str(),
        &public_key,
    );
    let proof_of_possession = signing_key.sign_challenge(&message).map_err(key_error)?;
    Ok(proto::EnrolmentRequest {
        id: id.to_string(),
        kind: kind.as_str().to_owned(),
        public_key: public_key.into(),
        proof_of_possession: proof_of_possession.into(),
        slots: slots
            .into_iter()
            .map(|slot| proto::SlotRequest {
                slot: slot.slot,
                proof: slot.proof.map(Into::into),
                wrapped_root_key: slot.wrapped_root_key.into(),
                wrapped_signing_key: slot.wrapped_signing_key.map(Into::into),
                ecdh_public_key: slot.ecdh_public_key.map(Into::into),
            })
            .collect(),
        password,
    })
}

fn knowledge(
    uid: Uid,
    root: &RootCredential,
    kind: WorkingCredentialKind,
    secrets: &[SlotSecret],
    password: Option<proto::PasswordEnrolmentRequest>,
) -> Result<proto::EnrolmentRequest, ClientError> {
    let id = Uid::generate();
    let signing_key = SoftwareKey::generate().map_err(key_error)?;
    let slots = secrets
        .iter()
        .map(|secret| {
            knowledge_slot(
                root,
                &signing_key,
                &uid.to_string(),
                &id.to_string(),
                secret.number,
                &secret.key_material,
                secret.proof.clone(),
            )
            .map_err(key_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    request(uid, id, kind, &signing_key, slots, password)
}

fn code_secret(
    uid: Uid,
    code: &RecoveryCode,
    kind: CodeKind,
    number: u32,
) -> Result<SlotSecret, ClientError> {
    let salt = code_salt(&uid.to_string(), kind, number);
    Ok(SlotSecret {
        number,
        key_material: code.key_material(&salt).map_err(key_error)?.to_vec(),
        proof: Some(code.verifier(&salt).map_err(key_error)?),
    })
}

/// A SuperPIN credential and its code.
pub(crate) fn superpin(
    uid: Uid,
    root: &RootCredential,
) -> Result<(proto::EnrolmentRequest, RecoveryCode), ClientError> {
    let code = RecoveryCode::generate(CodeKind::SuperPin).map_err(key_error)?;
    let secret = code_secret(uid, &code, CodeKind::SuperPin, 0)?;
    let request = knowledge(uid, root, WorkingCredentialKind::SuperPin, &[secret], None)?;
    Ok((request, code))
}

/// A TAN batch and its list.
pub(crate) fn tans(
    uid: Uid,
    root: &RootCredential,
    count: u32,
) -> Result<(proto::EnrolmentRequest, Vec<RecoveryCode>), ClientError> {
    let codes = RecoveryCode::generate_tans(
        usize::try_from(count).map_err(|_| ClientError::Invalid("TAN count"))?,
    )
    .map_err(key_error)?;
    let secrets = codes
        .iter()
        .zip(1..)
        .map(|(code, number)| code_secret(uid, code, CodeKind::Tan, number))
        .collect::<Result<Vec<_>, _>>()?;
    let request = knowledge(uid, root, WorkingCredentialKind::Tan, &secrets, None)?;
    Ok((request, codes))
}

/// A password credential from a finished OPAQUE registration.
pub(crate) fn password(
    uid: Uid,
    root: &RootCredential,
    email: &Email,
    registration_upload: Vec<u8>,
    export_key: &[u8],
) -> Result<proto::EnrolmentRequest, ClientError> {
    let secret = SlotSecret {
        number: 0,
        key_material: export_key.to_vec(),
        proof: None,
    };
    knowledge(
        uid,
        root,
        WorkingCredentialKind::Password,
        &[secret],
        Some(proto::PasswordEnrolmentRequest {
            email: email.as_str().to_owned(),
            registration_upload: registration_upload.into(),
        }),
    )
}

/// A software-certificate credential and its new key.
pub(crate) fn software(
    uid: Uid,
    root: &RootCredential,
) -> Result<(proto::EnrolmentRequest, SoftwareKey), ClientError> {
    let id = Uid::generate();
    let key = SoftwareKey::generate().map_err(key_error)?;
    let slot = key_agreement_slot(root, &key.public_key(), &uid.to_string(), &id.to_string())
        .map_err(key_error)?;
    let request = request(
        uid,
        id,
        WorkingCredentialKind::SoftwareCertificate,
        &key,
        vec![slot],
        None,
    )?;
    Ok((request, key))
}

/// A key-holding credential (a smartcard) from its public key and a signer for
/// the proof of possession.
pub(crate) fn external_key(
    uid: Uid,
    root: &RootCredential,
    kind: WorkingCredentialKind,
    public_key: &[u8],
    signer: &dyn crate::CredentialSigner,
) -> Result<proto::EnrolmentRequest, ClientError> {
    let id = Uid::generate();
    let slot = key_agreement_slot(root, public_key, &uid.to_string(), &id.to_string())
        .map_err(|_| ClientError::Invalid("credential public key"))?;
    let message = enrolment_message(&uid.to_string(), &id.to_string(), kind.as_str(), public_key);
    Ok(proto::EnrolmentRequest {
        id: id.to_string(),
        kind: kind.as_str().to_owned(),
        public_key: public_key.to_vec().into(),
        proof_of_possession: signer.sign(&message)?.into(),
        slots: vec![proto::SlotRequest {
            slot: 0,
            proof: None,
            wrapped_root_key: slot.wrapped_root_key.into(),
            wrapped_signing_key: None,
            ecdh_public_key: slot.ecdh_public_key.map(Into::into),
        }],
        password: None,
    })
}
