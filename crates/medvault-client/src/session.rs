//! A logged-in session: the bearer token, the unlocked Root Credential and,
//! for knowledge credentials, the unwrapped signing key.

use std::fmt;

use medvault_core::{Uid, WorkingCredentialKind};
use medvault_crypto::{RootCredential, RootPublicKey, SoftwareCredentialFile, SoftwareKey};
use medvault_proto::accounts as proto;
use zeroize::Zeroizing;

use crate::{Client, ClientError, Password, enrol, now};

/// A P-256 credential key the SDK cannot hold itself (a smartcard): it signs
/// login and enrolment messages (DER ECDSA P-256 SHA-256) and agrees an ECDH
/// secret with an ephemeral public key (uncompressed point).
pub trait CredentialSigner {
    /// Signs `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ClientError>;
    /// The ECDH shared secret with `ephemeral_public_key`.
    fn agree(&self, ephemeral_public_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, ClientError>;
}

/// A participant's directory entry whose Root Credential key verified against
/// the pinned CA for that UID: safe to seal to.
#[derive(Debug, Clone)]
pub struct VerifiedEntry {
    /// The UID.
    pub uid: Uid,
    /// The kind.
    pub kind: String,
    /// The public name (institutions and professionals).
    pub display_name: Option<String>,
    /// The certified Root Credential key.
    pub root_public_key: RootPublicKey,
    /// How many active working credentials with a verified certificate.
    pub working_credentials: usize,
}

/// A logged-in session.
pub struct Session {
    client: Client,
    token: Zeroizing<String>,
    uid: Uid,
    credential_id: String,
    expires_at: String,
    root: RootCredential,
    signing_key: Option<SoftwareKey>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("uid", &self.uid)
            .field("credential_id", &self.credential_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        client: Client,
        response: proto::LoginResponse,
        uid: Uid,
        root: RootCredential,
        signing_key: Option<SoftwareKey>,
    ) -> Self {
        Self {
            client,
            token: Zeroizing::new(response.session_token),
            uid,
            credential_id: response.credential.id,
            expires_at: response.expires_at,
            root,
            signing_key,
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn set_signing_key(&mut self, key: SoftwareKey) {
        self.signing_key = Some(key);
    }

    pub(crate) fn replace_token(&mut self, token: String, expires_at: String) {
        self.token = Zeroizing::new(token);
        self.expires_at = expires_at;
    }

    /// Who is logged in.
    pub fn uid(&self) -> Uid {
        self.uid
    }

    /// With which working credential.
    pub fn credential_id(&self) -> &str {
        &self.credential_id
    }

    /// When the session ends (RFC 3339).
    pub fn expires_at(&self) -> &str {
        &self.expires_at
    }

    /// The bearer token (to keep in a profile, or for raw requests).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The unlocked Root Credential.
    pub fn root_credential(&self) -> &RootCredential {
        &self.root
    }

    /// The signing key of the session's credential when the SDK holds it
    /// (password, SuperPIN, TAN, software certificate; not a smartcard).
    pub fn signing_key(&self) -> Option<&SoftwareKey> {
        self.signing_key.as_ref()
    }

    /// The server's view of this session.
    pub async fn whoami(&self) -> Result<proto::SessionView, ClientError> {
        self.client.get("api/v1/session", &self.token).await
    }

    /// Everything the server holds about this participant (`GET
    /// /api/v1/export`); a holder of a Patient Credential needs an IAL2 session.
    pub async fn export_account(&self) -> Result<serde_json::Value, ClientError> {
        self.client.get("api/v1/export", &self.token).await
    }

    /// A page of audit entries: this participant's own, or, for an auditor
    /// with `all` or `subject`, anyone's.
    pub async fn audit(
        &self,
        options: &AuditOptions,
    ) -> Result<medvault_proto::audit::AuditPage, ClientError> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(after) = options.after {
            query.append_pair("after", &after.to_string());
        }
        if let Some(limit) = options.limit {
            query.append_pair("limit", &limit.to_string());
        }
        if let Some(event_type) = &options.event_type {
            query.append_pair("event_type", event_type);
        }
        if options.all {
            query.append_pair("all", "true");
        }
        if let Some(subject) = &options.subject {
            query.append_pair("subject", subject);
        }
        let query = query.finish();
        self.client
            .get(&format!("api/v1/audit?{query}"), &self.token)
            .await
    }

    /// A one-time ticket that logs this patient in on an HDDT consent page.
    pub async fn pairing_ticket(&self) -> Result<medvault_proto::hddt::PairingTicket, ClientError> {
        self.client
            .post(
                "api/v1/hddt/tickets",
                &serde_json::json!({}),
                Some(&self.token),
            )
            .await
    }

    /// The device catalogue (models a patient can register).
    pub async fn device_models(
        &self,
    ) -> Result<Vec<medvault_proto::devices::DeviceModelInfo>, ClientError> {
        self.client.get("api/v1/device-models", &self.token).await
    }

    /// Registers one of this patient's devices.
    pub async fn register_device(
        &self,
        device: &medvault_proto::devices::NewDevice,
    ) -> Result<medvault_proto::devices::DeviceView, ClientError> {
        self.client
            .post("api/v1/devices", device, Some(&self.token))
            .await
    }

    /// This patient's devices, oldest first.
    pub async fn devices(&self) -> Result<Vec<medvault_proto::devices::DeviceView>, ClientError> {
        self.client.get("api/v1/devices", &self.token).await
    }

    /// Records a calibration or retires a device.
    pub async fn update_device(
        &self,
        device_id: &str,
        update: &medvault_proto::devices::DeviceUpdate,
    ) -> Result<medvault_proto::devices::DeviceView, ClientError> {
        if device_id.is_empty()
            || device_id.len() > 64
            || !device_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ClientError::Invalid("a device id is letters and digits"));
        }
        self.client
            .post(
                &format!("api/v1/devices/{device_id}"),
                update,
                Some(&self.token),
            )
            .await
    }

    /// Uploads a batch of readings; stored whole or not at all, and a retry
    /// with the same `batch_id` is acknowledged without storing it twice.
    pub async fn upload_readings(
        &self,
        batch: &medvault_proto::devices::UploadBatch,
    ) -> Result<medvault_proto::devices::UploadReceipt, ClientError> {
        self.client
            .post("api/v1/readings/batches", batch, Some(&self.token))
            .await
    }

    /// All of this patient's device data as a FHIR R4 Bundle (JSON).
    pub async fn export_device_data(&self) -> Result<serde_json::Value, ClientError> {
        self.client.get("api/v1/export/fhir", &self.token).await
    }

    /// The server's base URL.
    pub fn server_url(&self) -> &url::Url {
        self.client.base_url()
    }

    /// A one-time login ticket for the patient portal in a browser (patients
    /// and auditors; a few minutes).
    pub async fn portal_ticket(&self) -> Result<medvault_proto::hddt::PairingTicket, ClientError> {
        self.client
            .post(
                "api/v1/portal/tickets",
                &serde_json::json!({}),
                Some(&self.token),
            )
            .await
    }

    /// This patient's HDDT pairings (every consent, newest first).
    pub async fn pairings(&self) -> Result<Vec<medvault_proto::hddt::PairingView>, ClientError> {
        self.client.get("api/v1/hddt/pairings", &self.token).await
    }

    /// Renews a pairing's consent for `days` more (same Pairing ID and scopes).
    pub async fn renew_pairing(
        &self,
        pairing_id: &str,
        days: u32,
    ) -> Result<medvault_proto::hddt::RenewResponse, ClientError> {
        if pairing_id.len() != 64 || !pairing_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClientError::Invalid("a Pairing ID is 64 hex characters"));
        }
        self.client
            .post(
                &format!("api/v1/hddt/pairings/{pairing_id}/renew"),
                &medvault_proto::hddt::RenewRequest { days },
                Some(&self.token),
            )
            .await
    }

    /// Ends a pairing at once: its consent, refresh token and access tokens.
    pub async fn unpair(&self, pairing_id: &str) -> Result<(), ClientError> {
        if pairing_id.len() != 64 || !pairing_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClientError::Invalid("a Pairing ID is 64 hex characters"));
        }
        self.client
            .delete(&format!("api/v1/hddt/pairings/{pairing_id}"), &self.token)
            .await
    }

    /// Ends the session on the server.
    pub async fn logout(self) -> Result<(), ClientError> {
        self.client.delete("api/v1/session", &self.token).await
    }

    /// The active working credentials, each certificate verified.
    pub async fn credentials(&self) -> Result<Vec<proto::CredentialView>, ClientError> {
        let list: proto::CredentialList =
            self.client.get("api/v1/credentials", &self.token).await?;
        for credential in &list.credentials {
            self.client.verify_credential(credential, self.uid)?;
        }
        Ok(list.credentials)
    }

    async fn add(
        &self,
        request: &proto::EnrolmentRequest,
    ) -> Result<proto::CredentialView, ClientError> {
        let view: proto::CredentialView = self
            .client
            .post("api/v1/credentials", request, Some(&self.token))
            .await?;
        self.client.verify_credential(&view, self.uid)?;
        Ok(view)
    }

    /// Enrols an email + password credential.
    pub async fn add_password(
        &self,
        email: &str,
        password: &Password,
    ) -> Result<proto::CredentialView, ClientError> {
        let request = self
            .client
            .password_enrolment(self.uid, &self.root, email, password, Some(&self.token))
            .await?;
        self.add(&request).await
    }

    /// Enrols a batch of `count` TANs; returns the list to print.
    pub async fn add_tans(
        &self,
        count: u32,
    ) -> Result<(proto::CredentialView, Vec<medvault_crypto::RecoveryCode>), ClientError> {
        let (request, codes) = enrol::tans(self.uid, &self.root, count)?;
        Ok((self.add(&request).await?, codes))
    }

    /// Enrols a new software certificate; returns its file contents.
    pub async fn add_software_certificate(&self) -> Result<SoftwareCredentialFile, ClientError> {
        let (request, key) = enrol::software(self.uid, &self.root)?;
        let view = self.add(&request).await?;
        Ok(SoftwareCredentialFile {
            certificate: view.certificate.into_vec(),
            key,
        })
    }

    /// Enrols a key held elsewhere (a smartcard) by its public key.
    pub async fn add_external_key(
        &self,
        kind: WorkingCredentialKind,
        public_key: &[u8],
        signer: &dyn CredentialSigner,
    ) -> Result<proto::CredentialView, ClientError> {
        let request = enrol::external_key(self.uid, &self.root, kind, public_key, signer)?;
        self.add(&request).await
    }

    /// The session's institution records that it proofed `patient` (IAL2)
    /// with `method` and `evidence_type`; returns the one-time code for the
    /// patient, the proofing's id and when the code expires.
    pub async fn record_proofing(
        &self,
        patient: Uid,
        method: &str,
        evidence_type: &str,
    ) -> Result<ProofingCode, ClientError> {
        let issued: ProofingCodeWire = self
            .client
            .post(
                "api/v1/proofings",
                &serde_json::json!({
                    "patient_uid": patient.to_string(),
                    "method": method,
                    "evidence_type": evidence_type,
                }),
                Some(&self.token),
            )
            .await?;
        Ok(issued.into())
    }

    /// A new code for the institution's proofing `proofing_id` (the first was
    /// lost or expired; it stops working).
    pub async fn reissue_proofing_code(
        &self,
        proofing_id: &str,
    ) -> Result<ProofingCode, ClientError> {
        if proofing_id.len() != 32 || !proofing_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClientError::Invalid("proofing id"));
        }
        let issued: ProofingCodeWire = self
            .client
            .post(
                &format!("api/v1/proofings/{proofing_id}/code"),
                &serde_json::json!({}),
                Some(&self.token),
            )
            .await?;
        Ok(issued.into())
    }

    /// What the Account App request showing `code` is for (`login` or
    /// `register`) and which app's host asks: show it before approving.
    pub async fn inspect_account_request(
        &self,
        code: &str,
    ) -> Result<(String, String), ClientError> {
        #[derive(serde::Deserialize)]
        struct Inspected {
            purpose: String,
            app_host: String,
        }
        let inspected: Inspected = self
            .client
            .post(
                "api/v1/account-requests/inspect",
                &serde_json::json!({ "code": code }),
                Some(&self.token),
            )
            .await?;
        Ok((inspected.purpose, inspected.app_host))
    }

    /// Approves an Account App request showing `code` (a login or
    /// registration page an app sent the user to); returns the app's host.
    pub async fn approve_account_request(&self, code: &str) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Approved {
            app_host: String,
        }
        let approved: Approved = self
            .client
            .post(
                "api/v1/account-requests/approve",
                &serde_json::json!({ "code": code }),
                Some(&self.token),
            )
            .await?;
        Ok(approved.app_host)
    }

    /// Removes a working credential (the server refuses the last one).
    pub async fn remove_credential(&self, id: &str) -> Result<(), ClientError> {
        let id: Uid = id
            .parse()
            .map_err(|_| ClientError::Invalid("credential id"))?;
        self.client
            .delete(&format!("api/v1/credentials/{id}"), &self.token)
            .await
    }

    /// Another participant's directory entry, with its Root Credential key
    /// verified against the pinned CA for that UID.
    pub async fn directory_entry(&self, uid: Uid) -> Result<VerifiedEntry, ClientError> {
        let entry: proto::DirectoryEntryView = self
            .client
            .get(&format!("api/v1/participants/{uid}"), &self.token)
            .await?;
        let certified = self
            .client
            .ca()
            .verify_root_key(&entry.root_key_certificate, &uid.to_string(), now())
            .map_err(|_| ClientError::Verification("root key certificate"))?;
        if entry.uid != uid.to_string()
            || certified.root_public_key.as_bytes() != entry.root_public_key.as_slice()
        {
            return Err(ClientError::Verification("directory entry"));
        }
        let mut working_credentials = 0;
        for certificate in &entry.working_credential_certificates {
            let credential = self
                .client
                .ca()
                .verify_working_credential(certificate.as_slice(), now())
                .map_err(|_| ClientError::Verification("working credential certificate"))?;
            if credential.subject.uid != entry.uid {
                return Err(ClientError::Verification("working credential certificate"));
            }
            working_credentials += 1;
        }
        Ok(VerifiedEntry {
            uid,
            kind: entry.kind,
            display_name: entry.display_name,
            root_public_key: certified.root_public_key,
            working_credentials,
        })
    }
}

/// What a client keeps to resume a session in a later process: the token and
/// the unlocked keys. As secret as the credentials themselves: store it only
/// where the user alone can read it, and delete it at logout.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionState {
    /// The bearer token.
    pub token: String,
    /// Who.
    pub uid: String,
    /// With which credential.
    pub credential_id: String,
    /// Until when (RFC 3339).
    pub expires_at: String,
    /// The Root Credential's public key.
    pub root_public_key: medvault_proto::Bytes,
    /// The Root Credential's private key.
    pub root_private_key: medvault_proto::Bytes,
    /// The credential's signing key (PKCS#8), when the SDK holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<medvault_proto::Bytes>,
}

impl fmt::Debug for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionState")
            .field("uid", &self.uid)
            .field("credential_id", &self.credential_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Drop for SessionState {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.token.zeroize();
        self.root_private_key.0.zeroize();
        if let Some(key) = self.signing_key.as_mut() {
            key.0.zeroize();
        }
    }
}

impl Session {
    /// The state to resume this session later ([`Client::resume`]).
    pub fn export(&self) -> SessionState {
        SessionState {
            token: self.token.to_string(),
            uid: self.uid.to_string(),
            credential_id: self.credential_id.clone(),
            expires_at: self.expires_at.clone(),
            root_public_key: self.root.public_key().as_bytes().to_vec().into(),
            root_private_key: self.root.private_key().export().to_vec().into(),
            signing_key: self
                .signing_key
                .as_ref()
                .map(|key| key.pkcs8().to_vec().into()),
        }
    }
}

impl Client {
    /// Resumes an exported session (the server decides whether it is still valid).
    pub fn resume(&self, state: &SessionState) -> Result<Session, ClientError> {
        let invalid = |_| ClientError::Invalid("stored session");
        let public =
            RootPublicKey::from_bytes(state.root_public_key.as_slice()).map_err(invalid)?;
        let private = medvault_crypto::RootPrivateKey::from_bytes(Zeroizing::new(
            state.root_private_key.as_slice().to_vec(),
        ))
        .map_err(invalid)?;
        let root = RootCredential::from_parts(public, private).map_err(invalid)?;
        let signing_key = state
            .signing_key
            .as_ref()
            .map(|key| SoftwareKey::from_pkcs8(key.as_slice()))
            .transpose()
            .map_err(invalid)?;
        Ok(Session {
            client: self.clone(),
            token: Zeroizing::new(state.token.clone()),
            uid: state
                .uid
                .parse()
                .map_err(|_| ClientError::Invalid("stored session"))?,
            credential_id: state.credential_id.clone(),
            expires_at: state.expires_at.clone(),
            root,
            signing_key,
        })
    }
}

#[derive(serde::Deserialize)]
struct ProofingCodeWire {
    proofing_id: String,
    code: String,
    expires_at: String,
}

impl From<ProofingCodeWire> for ProofingCode {
    fn from(wire: ProofingCodeWire) -> Self {
        Self {
            proofing_id: wire.proofing_id,
            code: Zeroizing::new(wire.code),
            expires_at: wire.expires_at,
        }
    }
}

/// A proofing's one-time code, to hand to the patient.
pub struct ProofingCode {
    /// The proofing (for a new code later).
    pub proofing_id: String,
    /// The code (secret until used).
    pub code: Zeroizing<String>,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

impl fmt::Debug for ProofingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofingCode")
            .field("proofing_id", &self.proofing_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Which audit entries [`Session::audit`] asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditOptions {
    /// Entries after this seq (paging).
    pub after: Option<i64>,
    /// At most this many (server default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Auditors: every subject.
    pub all: bool,
    /// Auditors: only this subject.
    pub subject: Option<String>,
}
