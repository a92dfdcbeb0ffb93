//! The medvault SDK.
//!
//! This crate owns the client's half of accounts and PKI: it generates the
//! Root Credential and every working credential's keys, wraps the Root
//! Credential's private key under each credential's KEK, speaks OPAQUE, derives
//! code proofs, signs login challenges, and checks every certificate the
//! server hands out against the participant CA the caller pinned. The server
//! sees wrapped keys, proofs and public keys only.
//!
//! Start with [`Client::new`] (or [`Client::fetch_ca`] to read the CA to pin
//! on first contact), then [`Client::register`] and one of the `login_*`
//! methods, which give a [`Session`] holding the unlocked Root Credential.
//!
//! [`diga`] is the other side of HDDT: a DiGA's backend pairing with a
//! patient through any Device Data Recorder and reading their data over mTLS.

pub mod diga;
mod documents;
mod enrol;
mod patient_credential;
mod session;
pub mod smartcard;

use std::fmt;

use medvault_core::{Email, ParticipantKind, Uid, WorkingCredentialKind};
use medvault_crypto::enrol::{SlotKeys, envelope, open_key_agreement_slot, open_knowledge_slot};
use medvault_crypto::password;
use medvault_crypto::{
    CertifiedCredential, CodeKind, PinnedCa, RecoveryCode, RootCredential, SoftwareCredentialFile,
    SoftwareKey, code_salt, login_challenge,
};
use medvault_proto::accounts as proto;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

pub use documents::{DocumentInfo, OpenedDocument};
pub use patient_credential::{
    CheckedCredential, DeviceKey, USER_AGENT_ID, credential_request, device_did, presentation,
};
pub use session::{
    AuditOptions, CredentialSigner, ProofingCode, Session, SessionState, VerifiedEntry,
};

/// What went wrong, named for what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The server refused (a problem+json answer).
    #[error("{status} {title}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Api {
        /// The HTTP status.
        status: u16,
        /// The problem's title.
        title: String,
        /// The problem's detail.
        detail: Option<String>,
        /// `Retry-After` seconds, when throttled.
        retry_after: Option<u64>,
    },
    /// A certificate or key from the server did not verify against the pinned
    /// CA: the server (or someone in between) handed out something not certified.
    #[error("verification failed: {0}")]
    Verification(&'static str),
    /// A local key operation failed (wrong password, code or passphrase).
    #[error("could not unlock: {0}")]
    Unlock(&'static str),
    /// A value given to the SDK is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(&'static str),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A password, zeroized on drop, never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password.
    pub fn new(text: impl Into<String>) -> Self {
        Self(Zeroizing::new(text.into()))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A new account's choices.
#[derive(Debug)]
pub struct NewAccount {
    /// The kind of participant.
    pub kind: ParticipantKind,
    /// Institutions and professionals only.
    pub display_name: Option<String>,
    /// An email + password credential, if wanted.
    pub password: Option<(String, Password)>,
    /// How many TANs to print (0 for none).
    pub tans: u32,
    /// Whether to make a software-certificate credential.
    pub software_certificate: bool,
}

/// What registration hands the user: show the SuperPIN and TANs once.
#[derive(Debug)]
pub struct Registered {
    /// The new UID.
    pub uid: Uid,
    /// The recovery SuperPIN (show once; it is not stored anywhere).
    pub superpin: RecoveryCode,
    /// The TAN list, number `n` at index `n - 1`.
    pub tans: Vec<RecoveryCode>,
    /// The software-certificate file contents, if one was made.
    pub software_certificate: Option<SoftwareCredentialFile>,
    /// The Root Credential (to seal and open right away).
    pub root: RootCredential,
}

/// A connection to one medvault server, with its participant CA pinned.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    ca: PinnedCa,
}

/// The local clock, against which certificates' validity is checked.
fn now() -> i64 {
    use medvault_core::Clock as _;
    medvault_core::SystemClock.now().unix_timestamp()
}

impl Client {
    /// A client for the server at `base_url` (e.g. `https://medvault.example/`),
    /// over `http` (which decides TLS trust), trusting participant certificates
    /// from `ca` only.
    pub fn new(http: reqwest::Client, base_url: url::Url, ca: PinnedCa) -> Self {
        Self {
            http,
            base: base_url,
            ca,
        }
    }

    /// Reads the server's participant CA, for a caller that pins on first
    /// contact (and then keeps the key: [`PinnedCa::public_key`]).
    pub async fn fetch_ca(
        http: &reqwest::Client,
        base_url: &url::Url,
    ) -> Result<PinnedCa, ClientError> {
        let url = base_url
            .join("api/v1/ca")
            .map_err(|_| ClientError::Invalid("base url"))?;
        let info: proto::CaInfo = decode(send(http.get(url)).await?).await?;
        PinnedCa::from_public_key(info.public_key.as_slice())
            .map_err(|_| ClientError::Verification("CA public key"))
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    /// The pinned CA.
    pub fn ca(&self) -> &PinnedCa {
        &self.ca
    }

    fn url(&self, path: &str) -> Result<url::Url, ClientError> {
        self.base
            .join(path)
            .map_err(|_| ClientError::Invalid("path"))
    }

    pub(crate) async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        token: Option<&str>,
    ) -> Result<R, ClientError> {
        let mut request = self.http.post(self.url(path)?).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        decode(send(request).await?).await
    }

    pub(crate) async fn post_empty<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        token: &str,
    ) -> Result<(), ClientError> {
        send(
            self.http
                .post(self.url(path)?)
                .json(body)
                .bearer_auth(token),
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn get<R: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
    ) -> Result<R, ClientError> {
        decode(send(self.http.get(self.url(path)?).bearer_auth(token)).await?).await
    }

    pub(crate) async fn get_public<R: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<R, ClientError> {
        decode(send(self.http.get(self.url(path)?)).await?).await
    }

    pub(crate) async fn delete(&self, path: &str, token: &str) -> Result<(), ClientError> {
        send(self.http.delete(self.url(path)?).bearer_auth(token))
            .await
            .map(|_| ())
    }

    /// Registers a participant: makes the Root Credential, the SuperPIN and the
    /// chosen credentials on this machine, and sends only public keys, wrapped
    /// keys and proofs.
    pub async fn register(&self, account: NewAccount) -> Result<Registered, ClientError> {
        let uid = Uid::generate();
        let root = RootCredential::generate().map_err(|_| ClientError::Unlock("key generation"))?;
        let (superpin_request, superpin) = enrol::superpin(uid, &root)?;
        let mut credentials = vec![superpin_request];
        if let Some((email, password_text)) = &account.password {
            credentials.push(
                self.password_enrolment(uid, &root, email, password_text, None)
                    .await?,
            );
        }
        let mut tans = Vec::new();
        if account.tans > 0 {
            let (request, codes) = enrol::tans(uid, &root, account.tans)?;
            credentials.push(request);
            tans = codes;
        }
        let mut software_key = None;
        if account.software_certificate {
            let (request, key) = enrol::software(uid, &root)?;
            software_key = Some((request.id.clone(), key));
            credentials.push(request);
        }
        let request = proto::RegistrationRequest {
            uid: uid.to_string(),
            kind: account.kind.as_str().to_owned(),
            display_name: account.display_name,
            root_public_key: root.public_key().as_bytes().to_vec().into(),
            credentials,
        };
        let response: proto::RegistrationResponse =
            self.post("api/v1/participants", &request, None).await?;
        if response.uid != uid.to_string() {
            return Err(ClientError::Verification("registered UID"));
        }
        let certified = self
            .ca
            .verify_root_key(&response.root_key_certificate, &response.uid, now())
            .map_err(|_| ClientError::Verification("root key certificate"))?;
        if &certified.root_public_key != root.public_key() {
            return Err(ClientError::Verification("root key certificate"));
        }
        for credential in &response.credentials {
            self.verify_credential(credential, uid)?;
        }
        let software_certificate = match software_key {
            Some((id, key)) => {
                let view = response
                    .credentials
                    .iter()
                    .find(|credential| credential.id == id)
                    .ok_or(ClientError::Verification("software certificate missing"))?;
                Some(SoftwareCredentialFile {
                    certificate: view.certificate.as_slice().to_vec(),
                    key,
                })
            }
            None => None,
        };
        Ok(Registered {
            uid,
            superpin,
            tans,
            software_certificate,
            root,
        })
    }

    /// An OPAQUE registration for a password credential of `uid`.
    pub(crate) async fn password_enrolment(
        &self,
        uid: Uid,
        root: &RootCredential,
        email: &str,
        password_text: &Password,
        token: Option<&str>,
    ) -> Result<proto::EnrolmentRequest, ClientError> {
        let email = Email::parse(email).map_err(|_| ClientError::Invalid("email"))?;
        let (state, registration_request) =
            password::client_registration_start(password_text.bytes())
                .map_err(|_| ClientError::Unlock("OPAQUE"))?;
        let response: proto::PasswordRegistrationResponse = self
            .post(
                "api/v1/password/registration",
                &proto::PasswordRegistrationRequest {
                    email: email.as_str().to_owned(),
                    registration_request: registration_request.into(),
                },
                token,
            )
            .await?;
        let (upload, export_key) = password::client_registration_finish(
            state,
            password_text.bytes(),
            response.registration_response.as_slice(),
        )
        .map_err(|_| ClientError::Verification("OPAQUE registration response"))?;
        enrol::password(uid, root, &email, upload, export_key.as_bytes())
    }

    /// Checks a credential's certificate against the pinned CA and the UID.
    pub(crate) fn verify_credential(
        &self,
        view: &proto::CredentialView,
        uid: Uid,
    ) -> Result<medvault_crypto::CertifiedCredential, ClientError> {
        let certified = self
            .ca
            .verify_working_credential(view.certificate.as_slice(), now())
            .map_err(|_| ClientError::Verification("working credential certificate"))?;
        if certified.subject.uid != uid.to_string()
            || certified.subject.working_credential_id != view.id
            || certified.subject.kind != view.kind
        {
            return Err(ClientError::Verification("working credential certificate"));
        }
        Ok(certified)
    }

    /// Logs in with email and password (OPAQUE: the password never leaves
    /// this machine) and unlocks the Root Credential.
    pub async fn login_password(
        &self,
        email: &str,
        password_text: &Password,
    ) -> Result<Session, ClientError> {
        let email = Email::parse(email).map_err(|_| ClientError::Invalid("email"))?;
        let (state, ke1) = password::client_login_start(password_text.bytes())
            .map_err(|_| ClientError::Unlock("OPAQUE"))?;
        let challenge: proto::PasswordLoginChallenge = self
            .post(
                "api/v1/login/password/start",
                &proto::PasswordLoginStart {
                    email: email.as_str().to_owned(),
                    ke1: ke1.into(),
                },
                None,
            )
            .await?;
        // A wrong password (or unknown account) fails here, on the client; the
        // server still counts the attempt: the client finishes with a KE3 that
        // cannot verify, so the failure is throttled like any other.
        let finished =
            password::client_login_finish(state, password_text.bytes(), challenge.ke2.as_slice());
        let (ke3, export_key) = match finished {
            Ok((ke3, export_key)) => (ke3, Some(export_key)),
            Err(_) => (vec![0u8; 64], None),
        };
        let response: proto::LoginResponse = self
            .post(
                "api/v1/login/password/finish",
                &proto::PasswordLoginFinish {
                    challenge_id: challenge.challenge_id,
                    ke3: ke3.into(),
                },
                None,
            )
            .await?;
        let export_key = export_key.ok_or(ClientError::Unlock("password"))?;
        self.unlock_knowledge(response, export_key.as_bytes())
    }

    /// Logs in with the SuperPIN.
    pub async fn login_superpin(
        &self,
        uid: Uid,
        code: &RecoveryCode,
    ) -> Result<Session, ClientError> {
        self.login_code(uid, CodeKind::SuperPin, 0, code).await
    }

    /// Logs in with TAN number `number` of the printed list (it works once).
    pub async fn login_tan(
        &self,
        uid: Uid,
        number: u32,
        code: &RecoveryCode,
    ) -> Result<Session, ClientError> {
        if number == 0 {
            return Err(ClientError::Invalid("TAN numbers start at 1"));
        }
        self.login_code(uid, CodeKind::Tan, number, code).await
    }

    async fn login_code(
        &self,
        uid: Uid,
        kind: CodeKind,
        number: u32,
        code: &RecoveryCode,
    ) -> Result<Session, ClientError> {
        let salt = code_salt(&uid.to_string(), kind, number);
        let proof = code
            .verifier(&salt)
            .map_err(|_| ClientError::Unlock("code"))?;
        let material = code
            .key_material(&salt)
            .map_err(|_| ClientError::Unlock("code"))?;
        let kind_text = match kind {
            CodeKind::SuperPin => WorkingCredentialKind::SuperPin,
            CodeKind::Tan => WorkingCredentialKind::Tan,
        }
        .as_str();
        let response: proto::LoginResponse = self
            .post(
                "api/v1/login/code",
                &proto::CodeLogin {
                    uid: uid.to_string(),
                    kind: kind_text.to_owned(),
                    number,
                    proof: proof.into(),
                },
                None,
            )
            .await?;
        self.unlock_knowledge(response, &material)
    }

    /// Logs in with a software-certificate file.
    pub async fn login_software(
        &self,
        file: &SoftwareCredentialFile,
    ) -> Result<Session, ClientError> {
        let certified = self
            .ca
            .verify_working_credential(&file.certificate, now())
            .map_err(|_| ClientError::Verification("software certificate"))?;
        let uid: Uid = certified
            .subject
            .uid
            .parse()
            .map_err(|_| ClientError::Verification("software certificate"))?;
        let credential_id: Uid = certified
            .subject
            .working_credential_id
            .parse()
            .map_err(|_| ClientError::Verification("software certificate"))?;
        let signer = SoftwareSigner(&file.key);
        let mut session = self.login_signer(uid, credential_id, &signer).await?;
        session.set_signing_key(
            SoftwareKey::from_pkcs8(file.key.pkcs8())
                .map_err(|_| ClientError::Unlock("software key"))?,
        );
        Ok(session)
    }

    /// Logs in with any P-256 credential that can sign and agree keys (a
    /// software key, a smartcard).
    pub async fn login_signer(
        &self,
        uid: Uid,
        credential_id: Uid,
        signer: &dyn CredentialSigner,
    ) -> Result<Session, ClientError> {
        let challenge: proto::SignatureLoginChallenge = self
            .post(
                "api/v1/login/signature/start",
                &proto::SignatureLoginStart {
                    uid: uid.to_string(),
                    credential_id: credential_id.to_string(),
                },
                None,
            )
            .await?;
        let message = login_challenge(
            challenge.nonce.as_slice(),
            &uid.to_string(),
            &credential_id.to_string(),
        );
        let signature = signer.sign(&message)?;
        let response: proto::LoginResponse = self
            .post(
                "api/v1/login/signature/finish",
                &proto::SignatureLoginFinish {
                    challenge_id: challenge.challenge_id,
                    signature: signature.into(),
                },
                None,
            )
            .await?;
        let (uid, root_public_key, credential) = self.check_login(&response)?;
        if credential.subject.working_credential_id != credential_id.to_string() {
            return Err(ClientError::Verification("login response"));
        }
        let ephemeral = response
            .ecdh_public_key
            .as_ref()
            .ok_or(ClientError::Verification("login response"))?;
        // A point off the curve could make a careless token leak its key.
        medvault_crypto::check_p256_public_key(ephemeral.as_slice())
            .map_err(|_| ClientError::Verification("login response"))?;
        let secret = signer.agree(ephemeral.as_slice())?;
        let root = open_key_agreement_slot(&slot_keys(&response), &root_public_key, &secret)
            .map_err(|_| ClientError::Unlock("credential key"))?;
        Ok(Session::new(self.clone(), response, uid, root, None))
    }

    /// Checks a login response's certificates: the Root Credential's (for the
    /// UID) and the credential's; returns the UID and the certified root key.
    fn check_login(
        &self,
        response: &proto::LoginResponse,
    ) -> Result<(Uid, medvault_crypto::RootPublicKey, CertifiedCredential), ClientError> {
        let uid: Uid = response
            .uid
            .parse()
            .map_err(|_| ClientError::Verification("login response"))?;
        let certified = self
            .ca
            .verify_root_key(&response.root_key_certificate, &response.uid, now())
            .map_err(|_| ClientError::Verification("root key certificate"))?;
        let credential = self.verify_credential(&response.credential, uid)?;
        Ok((uid, certified.root_public_key, credential))
    }

    fn unlock_knowledge(
        &self,
        response: proto::LoginResponse,
        key_material: &[u8],
    ) -> Result<Session, ClientError> {
        let (uid, root_public_key, certified) = self.check_login(&response)?;
        let (root, signing) =
            open_knowledge_slot(&slot_keys(&response), &root_public_key, key_material)
                .map_err(|_| ClientError::Unlock("wrapped keys"))?;
        if certified.public_key != signing.public_key() {
            return Err(ClientError::Verification("signing key"));
        }
        Ok(Session::new(
            self.clone(),
            response,
            uid,
            root,
            Some(signing),
        ))
    }
}

fn slot_keys(response: &proto::LoginResponse) -> SlotKeys<'_> {
    SlotKeys {
        uid: &response.uid,
        credential_id: &response.credential.id,
        slot: response.slot,
        wrapped_root_key: response.wrapped_root_key.as_slice(),
        wrapped_signing_key: response.wrapped_signing_key.as_ref().map(|b| b.as_slice()),
    }
}

/// A software key as a [`CredentialSigner`].
pub(crate) struct SoftwareSigner<'a>(pub(crate) &'a SoftwareKey);

impl CredentialSigner for SoftwareSigner<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.0
            .sign_challenge(message)
            .map_err(|_| ClientError::Unlock("signature"))
    }

    fn agree(&self, ephemeral_public_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        self.0
            .open_ecdh_envelope(&envelope(ephemeral_public_key))
            .map_err(|_| ClientError::Unlock("key agreement"))
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
    let response = request
        .send()
        .await
        .map_err(|error| ClientError::Transport(error.to_string()))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    #[derive(serde::Deserialize)]
    struct ProblemBody {
        title: String,
        detail: Option<String>,
    }
    let problem = response.json::<ProblemBody>().await.ok();
    Err(ClientError::Api {
        status,
        title: problem
            .as_ref()
            .map_or_else(|| "error".to_owned(), |p| p.title.clone()),
        detail: problem.and_then(|p| p.detail),
        retry_after,
    })
}

async fn decode<R: DeserializeOwned>(response: reqwest::Response) -> Result<R, ClientError> {
    response
        .json()
        .await
        .map_err(|error| ClientError::Transport(format!("unexpected response: {error}")))
}
