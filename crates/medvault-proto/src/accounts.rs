//! Accounts and PKI: registration, logins, sessions, credentials, directory.

use serde::{Deserialize, Serialize};

use crate::Bytes;

/// `GET /api/v1/ca`: the participant CA clients pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaInfo {
    /// The CA key's id (as in certificates' `kid`).
    pub key_id: String,
    /// The CA's P-256 public key (uncompressed point): what a client pins.
    pub public_key: Bytes,
    /// The CA's self-signed X.509 certificate (DER).
    pub certificate: Bytes,
}

/// One slot of an enrolled credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRequest {
    /// 0, or the TAN's number.
    pub slot: u32,
    /// SuperPIN, TAN: the code's login proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Bytes>,
    /// The Root Credential's private key, wrapped.
    pub wrapped_root_key: Bytes,
    /// Knowledge credentials: the signing key, wrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_signing_key: Option<Bytes>,
    /// Key-holding credentials: the ECDH envelope's ephemeral public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecdh_public_key: Option<Bytes>,
}

/// The password part of an enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordEnrolmentRequest {
    /// The login email.
    pub email: String,
    /// The OPAQUE registration upload.
    pub registration_upload: Bytes,
}

/// A working credential to enrol (`POST /api/v1/credentials`, and within a registration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentRequest {
    /// The credential's id (a UUID v4 the client drew).
    pub id: String,
    /// `password`, `superpin`, `tan`, `software-certificate` or `smartcard`.
    pub kind: String,
    /// The P-256 signing key (uncompressed point).
    pub public_key: Bytes,
    /// Signature by that key over the enrolment message.
    pub proof_of_possession: Bytes,
    /// The wrapped keys.
    pub slots: Vec<SlotRequest>,
    /// Password credentials only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordEnrolmentRequest>,
}

/// `POST /api/v1/participants`: register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    /// The UID the client drew (UUID v4).
    pub uid: String,
    /// `patient`, `institution:practice`, `institution:hospital`,
    /// `institution:pharmacy` or `hcp`.
    pub kind: String,
    /// Institutions and professionals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The Root Credential's X25519 public key.
    pub root_public_key: Bytes,
    /// The first working credentials (exactly one SuperPIN).
    pub credentials: Vec<EnrolmentRequest>,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationResponse {
    /// The registered UID.
    pub uid: String,
    /// The CA's certificate of the Root Credential.
    pub root_key_certificate: String,
    /// The registered working credentials with their certificates.
    pub credentials: Vec<CredentialView>,
}

/// `POST /api/v1/password/registration`: OPAQUE registration, first step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordRegistrationRequest {
    /// The email the password will log in with.
    pub email: String,
    /// The OPAQUE registration request.
    pub registration_request: Bytes,
}

/// The OPAQUE registration response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordRegistrationResponse {
    /// The OPAQUE registration response.
    pub registration_response: Bytes,
}

/// `POST /api/v1/login/password/start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordLoginStart {
    /// The login email.
    pub email: String,
    /// OPAQUE KE1.
    pub ke1: Bytes,
}

/// The server's OPAQUE KE2 and the id to finish with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordLoginChallenge {
    /// Send back with KE3.
    pub challenge_id: String,
    /// OPAQUE KE2.
    pub ke2: Bytes,
}

/// `POST /api/v1/login/password/finish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordLoginFinish {
    /// From the challenge.
    pub challenge_id: String,
    /// OPAQUE KE3.
    pub ke3: Bytes,
}

/// `POST /api/v1/login/code`: SuperPIN or TAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeLogin {
    /// The account's UID.
    pub uid: String,
    /// `superpin` or `tan`.
    pub kind: String,
    /// 0 for the SuperPIN; the TAN's number on the list.
    pub number: u32,
    /// The code's login proof.
    pub proof: Bytes,
}

/// `POST /api/v1/login/signature/start`: software certificate or smartcard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureLoginStart {
    /// The account's UID.
    pub uid: String,
    /// The credential's id (from its certificate).
    pub credential_id: String,
}

/// A nonce to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureLoginChallenge {
    /// Send back with the signature.
    pub challenge_id: String,
    /// The nonce the signed login message contains.
    pub nonce: Bytes,
}

/// `POST /api/v1/login/signature/finish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureLoginFinish {
    /// From the challenge.
    pub challenge_id: String,
    /// DER ECDSA P-256 SHA-256 signature over the login message.
    pub signature: Bytes,
}

/// A working credential as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialView {
    /// The id.
    pub id: String,
    /// The kind.
    pub kind: String,
    /// When it was enrolled (RFC 3339).
    pub created_at: String,
    /// The CA's X.509 certificate of its signing key (DER).
    pub certificate: Bytes,
    /// TAN batches: how many codes are left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
}

/// `GET /api/v1/credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialList {
    /// The active credentials, oldest first.
    pub credentials: Vec<CredentialView>,
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginResponse {
    /// The bearer token for `Authorization: Bearer ...`.
    pub session_token: String,
    /// When the session ends (RFC 3339).
    pub expires_at: String,
    /// Who logged in.
    pub uid: String,
    /// With which credential.
    pub credential: CredentialView,
    /// The slot used.
    pub slot: u32,
    /// The Root Credential's private key, wrapped for this slot.
    pub wrapped_root_key: Bytes,
    /// Knowledge credentials: the signing key, wrapped for this slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_signing_key: Option<Bytes>,
    /// Key-holding credentials: the ECDH envelope's ephemeral public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecdh_public_key: Option<Bytes>,
    /// The CA's certificate of the Root Credential.
    pub root_key_certificate: String,
}

/// `GET /api/v1/session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionView {
    /// Who.
    pub uid: String,
    /// With which credential.
    pub credential_id: String,
    /// Until when (RFC 3339).
    pub expires_at: String,
    /// `IAL1`, or `IAL2` after a Patient Credential was presented.
    pub assurance: String,
}

/// `GET /api/v1/participants/{uid}`: a directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryEntryView {
    /// The UID.
    pub uid: String,
    /// The kind.
    pub kind: String,
    /// Institutions and professionals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The Root Credential's public key.
    pub root_public_key: Bytes,
    /// The CA's certificate of that key (verify before sealing).
    pub root_key_certificate: String,
    /// The active working credentials' certificates (DER).
    pub working_credential_certificates: Vec<Bytes>,
}
