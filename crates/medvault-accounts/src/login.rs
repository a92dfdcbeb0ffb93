//! Logging in with any working credential, sessions, and managing one's
//! credentials.
//!
//! Every login path ends in a [`LoginGrant`]: a short-lived session token and
//! the wrapped keys of the credential used, which only the client can open.
//! Paths:
//! - password: OPAQUE in two round trips ([`Accounts::password_login_start`],
//!   [`Accounts::password_login_finish`]); the server state between them is in
//!   the database, so any node can finish what another started, once;
//! - SuperPIN and TAN: one request with the code's proof
//!   ([`Accounts::code_login`]); a TAN is consumed atomically, once;
//! - software certificate and smartcard: a server nonce signed by the
//!   credential's key ([`Accounts::signature_login_start`],
//!   [`Accounts::signature_login_finish`]).
//!
//! Brute force: every attempt first checks the throttle of the account and of
//! the source address (in the database, shared by all nodes); each failure
//! counts against both, and after a few free failures each further one locks
//! for a doubling time, up to a cap. Unknown accounts go through the same
//! steps as known ones (OPAQUE's dummy response, a challenge for an unknown
//! credential), so the answers do not tell which accounts exist.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{Assurance, Clock, Email, Uid, WorkingCredentialKind};
use medvault_crypto::password::{self, OpaqueServerSetup, PasswordFile, ServerLoginState};
use medvault_crypto::{ParticipantCa, login_challenge, proof_matches, verify_challenge};
use medvault_store::{
    CredentialKeyRowV1, LoginChallengeRowV1, RemoveCredentialOutcome, SessionRowV1, Store,
    StoreError, ThrottlePolicy, WorkingCredentialRowV1,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::enrolment::{Enrolment, EnrolmentError};

/// The prefix of every session token (so a leaked one is recognizable in a scan).
pub const SESSION_TOKEN_PREFIX: &str = "mvs_";

/// Timing and brute-force settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    /// How long a session lasts (absolute, from login).
    pub session_lifetime: Duration,
    /// How long a login challenge (OPAQUE state, signature nonce) is accepted.
    pub challenge_lifetime: Duration,
    /// Failures of one account allowed before locks begin.
    pub free_account_failures: i64,
    /// Failures from one address allowed before locks begin.
    pub free_address_failures: i64,
    /// The longest lock.
    pub max_lock: Duration,
    /// After this long without a failure, the count starts again.
    pub failure_memory: Duration,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        Self {
            session_lifetime: Duration::minutes(30),
            challenge_lifetime: Duration::minutes(2),
            free_account_failures: 5,
            free_address_failures: 20,
            max_lock: Duration::minutes(15),
            failure_memory: Duration::hours(1),
        }
    }
}

/// A bearer session token. `Debug` is redacted.
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    /// The token text to hand to the client (once).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// A logged-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub uid: Uid,
    /// With which working credential.
    pub credential_id: String,
    /// Until when.
    pub expires_at: OffsetDateTime,
    /// Its identity assurance.
    pub assurance: Assurance,
    /// The Patient Credential presented, for an IAL2 session.
    pub patient_credential_id: Option<String>,
}

/// What a successful login returns.
#[derive(Debug)]
pub struct LoginGrant {
    /// The bearer token.
    pub token: SessionToken,
    /// The session it opens.
    pub session: Session,
    /// The credential used (with its certificate).
    pub credential: WorkingCredentialRowV1,
    /// The wrapped keys of the slot used: only the client can open them.
    pub key: CredentialKeyRowV1,
    /// The participant's Root Credential certificate.
    pub root_key_certificate: String,
}

/// A credential as its owner sees it in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The stored credential.
    pub credential: WorkingCredentialRowV1,
    /// TAN batches: how many codes are left.
    pub remaining: Option<i64>,
}

/// Why a login or session step failed, named for what the caller answers.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The credential did not prove itself (wrong password or code, bad
    /// signature, used TAN, unknown account: all look the same).
    #[error("login failed")]
    Failed,
    /// Too many failures: try again after this many seconds.
    #[error("too many failed logins; try again later")]
    Throttled {
        /// Seconds until the lock ends.
        retry_after: u64,
    },
    /// The challenge is unknown, used or expired.
    #[error("the login challenge is unknown, used or expired")]
    Challenge,
    /// A message is malformed.
    #[error("malformed login message: {0}")]
    Malformed(&'static str),
    /// The session is unknown, expired or ended.
    #[error("no valid session")]
    Unauthenticated,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit trail could not be written.
    #[error("could not audit: {0}")]
    Audit(String),
    /// A stored row does not have the expected shape.
    #[error("stored login data is malformed: {0}")]
    Corrupt(&'static str),
}

/// Why a credential could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The enrolment was refused.
    #[error(transparent)]
    Enrolment(#[from] EnrolmentError),
    /// The participant has a credential of this kind that can exist only once.
    #[error("a {0} credential exists already; remove it first")]
    Exists(&'static str),
    /// The id or the email is taken.
    #[error("{0} is taken")]
    Taken(&'static str),
    /// No such credential of this participant.
    #[error("no such working credential")]
    NotFound,
    /// It is the last credential.
    #[error("the last working credential cannot be removed")]
    LastCredential,
    /// The participant holds a Patient Credential, and this needs a session
    /// in which it was presented (IAL2).
    #[error("this needs an IAL2 session: present your Patient Credential first")]
    NeedsIal2,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit trail could not be written.
    #[error("could not audit: {0}")]
    Audit(String),
}

/// Logins, sessions and credential management.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditTrail>,
    ca: Arc<ParticipantCa>,
    opaque: Arc<OpaqueServerSetup>,
    policy: LoginPolicy,
}

const OPAQUE: &str = "opaque";
const SIGNATURE: &str = "signature";
const NONCE_LEN: usize = 32;
/// Session tokens: prefix + 43 characters of base64url (32 bytes).
const MAX_TOKEN_LEN: usize = 64;

impl Accounts {
    /// The service over `store`, with the participant CA and the OPAQUE server setup.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditTrail>,
        ca: Arc<ParticipantCa>,
        opaque: Arc<OpaqueServerSetup>,
        policy: LoginPolicy,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            ca,
            opaque,
            policy,
        }
    }

    /// The OPAQUE registration response for `email` (any email gets one).
    ///
    /// Throttled like a login attempt on that email and address: with the
    /// OPRF under the same identifier, a response lets its caller test one
    /// password guess against an existing record offline.
    pub async fn password_registration_response(
        &self,
        email: &Email,
        request: &[u8],
        source: IpAddr,
    ) -> Result<Vec<u8>, LoginError> {
        self.reserve(&email_throttle_key(email), source).await?;
        password::server_registration_respond(&self.opaque, request, email.as_str().as_bytes())
            .map_err(|_| LoginError::Malformed("registration_request"))
    }

    // ---- password -------------------------------------------------------

    /// OPAQUE login, first half: KE1 in, (challenge id, KE2) out.
    pub async fn password_login_start(
        &self,
        email: &Email,
        ke1: &[u8],
        source: IpAddr,
    ) -> Result<(String, Vec<u8>), LoginError> {
        // The attempt counts now: OPAQUE tells the client at KE2 whether its
        // guess was right, so a guesser need never send KE3.
        let throttle_key = email_throttle_key(email);
        self.reserve(&throttle_key, source).await?;
        let record = self.store.password_by_email(email.as_str()).await?;
        let file = record
            .as_ref()
            .map(|record| PasswordFile::from_bytes(&record.password_file))
            .transpose()
            .map_err(|_| LoginError::Corrupt("password file"))?;
        let (state, ke2) = password::server_login_respond(
            &self.opaque,
            file.as_ref(),
            ke1,
            email.as_str().as_bytes(),
        )
        .map_err(|_| LoginError::Malformed("ke1"))?;
        let id = self
            .insert_challenge(
                record.map(|record| record.credential_id),
                OPAQUE,
                throttle_key,
                state.to_bytes().to_vec(),
            )
            .await?;
        Ok((id, ke2))
    }

    /// OPAQUE login, second half: KE3 in, a grant out.
    pub async fn password_login_finish(
        &self,
        challenge_id: &str,
        ke3: &[u8],
        source: IpAddr,
    ) -> Result<LoginGrant, LoginError> {
        let challenge = self.take_challenge(challenge_id, OPAQUE).await?;
        let state = ServerLoginState::from_bytes(&challenge.state)
            .map_err(|_| LoginError::Corrupt("login state"))?;
        let verified = password::server_login_finish(state, ke3).is_ok();
        let credential = match (&challenge.credential_id, verified) {
            (Some(id), true) => self.active_credential(id).await?,
            _ => None,
        };
        let Some(credential) = credential else {
            return Err(self.fail(None, WorkingCredentialKind::Password).await);
        };
        self.grant(credential, 0, &challenge.throttle_key, source)
            .await
    }

    // ---- SuperPIN and TAN -------------------------------------------------

    /// Logs in with a SuperPIN (`number` 0) or TAN number `number`, by the
    /// proof the client derived from the code.
    pub async fn code_login(
        &self,
        uid: Uid,
        kind: WorkingCredentialKind,
        number: u32,
        proof: &[u8],
        source: IpAddr,
    ) -> Result<LoginGrant, LoginError> {
        let slot = match kind {
            WorkingCredentialKind::SuperPin if number == 0 => 0,
            WorkingCredentialKind::Tan if number >= 1 => i64::from(number),
            _ => return Err(LoginError::Malformed("number")),
        };
        let throttle_key = format!("account:{uid}:codes");
        self.reserve(&throttle_key, source).await?;
        let credential = self
            .store
            .working_credentials(&uid.to_string())
            .await?
            .into_iter()
            .find(|credential| credential.kind == kind.as_str());
        let mut accepted = None;
        if let Some(credential) = credential
            && let Some(key) = self.store.credential_key(&credential.id, slot).await?
            && key.used_at.is_none()
            && key
                .proof_hash
                .as_deref()
                .is_some_and(|stored| proof_matches(proof, stored))
        {
            let now = self.clock.now();
            // A TAN is consumed here, atomically: of two racing logins with
            // the same TAN (on any nodes) exactly one passes.
            if kind != WorkingCredentialKind::Tan
                || self
                    .store
                    .consume_credential_key(&credential.id, slot, now)
                    .await?
            {
                accepted = Some(credential);
            }
        }
        let Some(credential) = accepted else {
            return Err(self.fail(Some(uid), kind).await);
        };
        self.grant(credential, slot, &throttle_key, source).await
    }

    // ---- software certificate and smartcard -------------------------------

    /// Signature login, first half: a nonce for credential `credential_id` of `uid`.
    /// Answers alike whether or not the credential exists.
    pub async fn signature_login_start(
        &self,
        uid: Uid,
        credential_id: Uid,
        source: IpAddr,
    ) -> Result<(String, Vec<u8>), LoginError> {
        // Signatures cannot be guessed: a separate count, so that someone who
        // knows the UID cannot lock a card holder out by guessing codes.
        let throttle_key = format!("account:{uid}:signature");
        self.reserve(&throttle_key, source).await?;
        let credential = self
            .active_credential(&credential_id.to_string())
            .await?
            .filter(|credential| {
                credential.uid == uid.to_string()
                    && WorkingCredentialKind::parse(&credential.kind)
                        .is_some_and(WorkingCredentialKind::holds_key)
            });
        let mut nonce = vec![0u8; NONCE_LEN];
        aws_lc_rs_fill(&mut nonce)?;
        let id = self
            .insert_challenge(
                credential.map(|credential| credential.id),
                SIGNATURE,
                throttle_key,
                nonce.clone(),
            )
            .await?;
        Ok((id, nonce))
    }

    /// Signature login, second half: the DER ECDSA signature over
    /// [`login_challenge`]`(nonce, uid, credential id)`.
    pub async fn signature_login_finish(
        &self,
        challenge_id: &str,
        signature: &[u8],
        source: IpAddr,
    ) -> Result<LoginGrant, LoginError> {
        let challenge = self.take_challenge(challenge_id, SIGNATURE).await?;
        let credential = match &challenge.credential_id {
            Some(id) => self.active_credential(id).await?,
            None => None,
        };
        let verified = credential.filter(|credential| {
            let message = login_challenge(&challenge.state, &credential.uid, &credential.id);
            verify_challenge(&credential.public_key, &message, signature).is_ok()
        });
        let Some(credential) = verified else {
            return Err(self
                .fail(None, WorkingCredentialKind::SoftwareCertificate)
                .await);
        };
        self.grant(credential, 0, &challenge.throttle_key, source)
            .await
    }

    // ---- sessions ---------------------------------------------------------

    /// The session a bearer token opens, if it is valid now.
    pub async fn authenticate(&self, token: &str) -> Result<Session, LoginError> {
        if token.len() > MAX_TOKEN_LEN || !token.starts_with(SESSION_TOKEN_PREFIX) {
            return Err(LoginError::Unauthenticated);
        }
        let row = self
            .store
            .session(&token_hash(token), self.clock.now())
            .await?
            .ok_or(LoginError::Unauthenticated)?;
        Ok(Session {
            uid: row
                .uid
                .parse()
                .map_err(|_| LoginError::Corrupt("session uid"))?,
            credential_id: row.credential_id,
            expires_at: row.expires_at,
            assurance: Assurance::parse(&row.assurance)
                .ok_or(LoginError::Corrupt("session assurance"))?,
            patient_credential_id: row.patient_credential_id,
        })
    }

    /// Replaces the session of `token` by one at IAL2 resting on the Patient
    /// Credential `patient_credential_id` (which the caller verified, with a
    /// presentation signed over the nonce that hashes to `nonce_hash`). The
    /// nonce is taken, the old session ended and the new one stored in one
    /// transaction; the new session keeps the old one's working credential
    /// and expiry (presenting a credential does not extend a session).
    /// `Challenge` if the nonce is unknown, used, expired or someone else's.
    pub async fn open_ial2_session(
        &self,
        token: &str,
        nonce_hash: &[u8],
        patient_credential_id: &str,
    ) -> Result<(SessionToken, Session), LoginError> {
        let session = self.authenticate(token).await?;
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs_fill(secret.as_mut_slice())?;
        let new_token = Zeroizing::new(format!(
            "{SESSION_TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(secret.as_slice())
        ));
        let now = self.clock.now();
        let opened = self
            .store
            .open_presented_session(
                nonce_hash,
                &token_hash(token),
                &SessionRowV1 {
                    token_hash: token_hash(&new_token),
                    uid: session.uid.to_string(),
                    credential_id: session.credential_id.clone(),
                    created_at: now,
                    expires_at: session.expires_at,
                    assurance: Assurance::Ial2.as_str().to_owned(),
                    patient_credential_id: Some(patient_credential_id.to_owned()),
                },
                now,
            )
            .await?;
        if !opened {
            return Err(LoginError::Challenge);
        }
        let detail = AuditDetail::new()
            .with("pc_id", patient_credential_id)
            .and_then(|detail| detail.with("wc_id", session.credential_id.as_str()))
            .map_err(|error| LoginError::Audit(error.to_string()))?;
        // The old session is gone: the user must get the new one even if the
        // audit trail cannot be written now (reported in the operational log).
        if let Err(error) = self
            .audit_event(
                AuditEvent::new(
                    session.uid.to_string(),
                    session.uid.to_string(),
                    "session.ial2",
                    Outcome::Success,
                )
                .with_detail(detail),
            )
            .await
        {
            tracing::error!(%error, "IAL2 session opened but not audited");
        }
        Ok((
            SessionToken(new_token),
            Session {
                assurance: Assurance::Ial2,
                patient_credential_id: Some(patient_credential_id.to_owned()),
                ..session
            },
        ))
    }

    /// Ends the session of `token`.
    pub async fn logout(&self, token: &str) -> Result<(), LoginError> {
        let session = self.authenticate(token).await?;
        self.store.delete_session(&token_hash(token)).await?;
        self.audit_event(AuditEvent::new(
            session.uid.to_string(),
            session.uid.to_string(),
            "session.ended",
            Outcome::Success,
        ))
        .await
        .map_err(LoginError::Audit)
    }

    /// Deletes expired sessions, challenges, presentation nonces and request
    /// replay entries and forgotten throttle rows; returns how many rows went.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let logins = self
            .store
            .purge_expired_logins(now, now - self.policy.failure_memory)
            .await?;
        Ok(logins + self.store.purge_expired_presentation_state(now).await?)
    }

    // ---- credential management --------------------------------------------

    /// The session owner's active credentials.
    pub async fn credentials(&self, session: &Session) -> Result<Vec<CredentialInfo>, StoreError> {
        let mut list = Vec::new();
        for credential in self
            .store
            .working_credentials(&session.uid.to_string())
            .await?
        {
            let remaining = if credential.kind == WorkingCredentialKind::Tan.as_str() {
                Some(self.store.unused_credential_keys(&credential.id).await?)
            } else {
                None
            };
            list.push(CredentialInfo {
                credential,
                remaining,
            });
        }
        Ok(list)
    }

    /// Enrols a new credential for the session's owner.
    pub async fn add_credential(
        &self,
        session: &Session,
        enrolment: Enrolment,
    ) -> Result<WorkingCredentialRowV1, CredentialError> {
        let unique = matches!(
            enrolment.kind,
            WorkingCredentialKind::Password
                | WorkingCredentialKind::SuperPin
                | WorkingCredentialKind::Tan
        );
        if unique
            && self
                .store
                .working_credentials(&session.uid.to_string())
                .await?
                .iter()
                .any(|credential| credential.kind == enrolment.kind.as_str())
        {
            return Err(CredentialError::Exists(enrolment.kind.as_str()));
        }
        let rows = enrolment.into_rows(session.uid, &self.ca, self.clock.now())?;
        self.store
            .add_working_credential(&rows)
            .await
            .map_err(|error| match error {
                StoreError::Conflict(what) => CredentialError::Taken(what),
                other => CredentialError::Store(other),
            })?;
        let detail = AuditDetail::new()
            .with("wc_kind", rows.credential.kind.as_str())
            .and_then(|detail| detail.with("wc_id", rows.credential.id.as_str()))
            .and_then(|detail| detail.with("via_wc_id", session.credential_id.as_str()))
            .map_err(|error| CredentialError::Audit(error.to_string()))?;
        self.audit_event(
            AuditEvent::new(
                session.uid.to_string(),
                session.uid.to_string(),
                "credential.added",
                Outcome::Success,
            )
            .with_detail(detail),
        )
        .await
        .map_err(CredentialError::Audit)?;
        Ok(rows.credential)
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Refuses a session below IAL2 of a participant who holds an active
    /// Patient Credential: such a participant has shown that they can reach
    /// IAL2, so the weighty steps (removing a credential, exporting all data)
    /// ask for it.
    pub async fn require_ial2_if_proofed(&self, session: &Session) -> Result<(), CredentialError> {
        if session.assurance >= Assurance::Ial2 {
            return Ok(());
        }
        if self
            .store
            .holds_patient_credential(&session.uid.to_string(), self.clock.now())
            .await?
        {
            return Err(CredentialError::NeedsIal2);
        }
        Ok(())
    }

    /// Removes one of the session owner's credentials (never the last).
    pub async fn remove_credential(
        &self,
        session: &Session,
        credential_id: &str,
    ) -> Result<(), CredentialError> {
        self.require_ial2_if_proofed(session).await?;
        let outcome = self
            .store
            .remove_working_credential(&session.uid.to_string(), credential_id, self.clock.now())
            .await?;
        match outcome {
            RemoveCredentialOutcome::Removed => {}
            RemoveCredentialOutcome::NotFound => return Err(CredentialError::NotFound),
            RemoveCredentialOutcome::LastCredential => {
                return Err(CredentialError::LastCredential);
            }
        }
        let detail = AuditDetail::new()
            .with("wc_id", credential_id)
            .map_err(|error| CredentialError::Audit(error.to_string()))?;
        self.audit_event(
            AuditEvent::new(
                session.uid.to_string(),
                session.uid.to_string(),
                "credential.removed",
                Outcome::Success,
            )
            .with_detail(detail),
        )
        .await
        .map_err(CredentialError::Audit)
    }

    // ---- helpers ----------------------------------------------------------

    async fn active_credential(
        &self,
        id: &str,
    ) -> Result<Option<WorkingCredentialRowV1>, StoreError> {
        Ok(self
            .store
            .working_credential(id)
            .await?
            .filter(|credential| credential.removed_at.is_none()))
    }

    async fn insert_challenge(
        &self,
        credential_id: Option<String>,
        purpose: &str,
        throttle_key: String,
        state: Vec<u8>,
    ) -> Result<String, LoginError> {
        let mut id = [0u8; 24];
        aws_lc_rs_fill(&mut id)?;
        let id = URL_SAFE_NO_PAD.encode(id);
        self.store
            .insert_login_challenge(&LoginChallengeRowV1 {
                id: id.clone(),
                credential_id,
                purpose: purpose.to_owned(),
                throttle_key,
                state,
                expires_at: self.clock.now() + self.policy.challenge_lifetime,
            })
            .await?;
        Ok(id)
    }

    async fn take_challenge(
        &self,
        id: &str,
        purpose: &str,
    ) -> Result<LoginChallengeRowV1, LoginError> {
        if id.len() > 64 {
            return Err(LoginError::Challenge);
        }
        let challenge = self
            .store
            .take_login_challenge(id, self.clock.now())
            .await?
            .ok_or(LoginError::Challenge)?;
        if challenge.purpose != purpose {
            return Err(LoginError::Challenge);
        }
        Ok(challenge)
    }

    /// Reserves one attempt against the account and the source address
    /// (atomically in the database; see `AccountStore::reserve_login_attempt`).
    async fn reserve(&self, account_key: &str, source: IpAddr) -> Result<(), LoginError> {
        let now = self.clock.now();
        let policy = |free| ThrottlePolicy {
            free,
            max_lock: self.policy.max_lock,
        };
        let keys = [
            (
                account_key.to_owned(),
                policy(self.policy.free_account_failures),
            ),
            (
                address_throttle_key(source),
                policy(self.policy.free_address_failures),
            ),
        ];
        let locked = self
            .store
            .reserve_login_attempts(&keys, now, now - self.policy.failure_memory)
            .await?;
        let Some(key) = locked else {
            return Ok(());
        };
        let until = self
            .store
            .login_locked_until(&[key], now)
            .await?
            .unwrap_or(now);
        Err(LoginError::Throttled {
            retry_after: u64::try_from((until - now).whole_seconds().max(1)).unwrap_or(1),
        })
    }

    /// Audits a failed login and returns the error to answer (the attempt was
    /// counted when it was reserved).
    async fn fail(&self, uid: Option<Uid>, kind: WorkingCredentialKind) -> LoginError {
        let subject = uid.map_or_else(|| "-".to_owned(), |uid| uid.to_string());
        let detail = AuditDetail::new().with("method", kind.as_str());
        let event = AuditEvent::new("anonymous", subject, "login.failed", Outcome::Denied);
        let event = match detail {
            Ok(detail) => event.with_detail(detail),
            Err(_) => event,
        };
        if let Err(error) = self.audit_event(event).await {
            return LoginError::Audit(error);
        }
        LoginError::Failed
    }

    async fn grant(
        &self,
        credential: WorkingCredentialRowV1,
        slot: i64,
        throttle_key: &str,
        source: IpAddr,
    ) -> Result<LoginGrant, LoginError> {
        let key = self
            .store
            .credential_key(&credential.id, slot)
            .await?
            .ok_or(LoginError::Failed)?;
        let participant = self
            .store
            .participant(&credential.uid)
            .await?
            .ok_or(LoginError::Corrupt("participant"))?;
        let uid: Uid = credential
            .uid
            .parse()
            .map_err(|_| LoginError::Corrupt("uid"))?;
        // Success: the account's count is forgotten, the address's attempt given back.
        self.store
            .settle_login_attempt(throttle_key, &address_throttle_key(source))
            .await?;
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs_fill(secret.as_mut_slice())?;
        let token = Zeroizing::new(format!(
            "{SESSION_TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(secret.as_slice())
        ));
        let now = self.clock.now();
        let expires_at = now + self.policy.session_lifetime;
        self.store
            .insert_session(&SessionRowV1 {
                token_hash: token_hash(&token),
                uid: credential.uid.clone(),
                credential_id: credential.id.clone(),
                created_at: now,
                expires_at,
                assurance: Assurance::Ial1.as_str().to_owned(),
                patient_credential_id: None,
            })
            .await?;
        let detail = AuditDetail::new()
            .with("method", credential.kind.as_str())
            .and_then(|detail| detail.with("wc_id", credential.id.as_str()))
            .map_err(|error| LoginError::Audit(error.to_string()))?;
        self.audit_event(
            AuditEvent::new(
                credential.uid.clone(),
                credential.uid.clone(),
                "login.succeeded",
                Outcome::Success,
            )
            .with_detail(detail),
        )
        .await
        .map_err(LoginError::Audit)?;
        Ok(LoginGrant {
            token: SessionToken(token),
            session: Session {
                uid,
                credential_id: credential.id.clone(),
                expires_at,
                assurance: Assurance::Ial1,
                patient_credential_id: None,
            },
            credential,
            key,
            root_key_certificate: participant.root_key_certificate,
        })
    }

    async fn audit_event(&self, event: AuditEvent) -> Result<(), String> {
        self.audit
            .append(event)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

fn aws_lc_rs_fill(bytes: &mut [u8]) -> Result<(), LoginError> {
    medvault_crypto::random_fill(bytes).map_err(|_| LoginError::Corrupt("random source"))
}

/// SHA-256 of a session token: what the database keeps.
fn token_hash(token: &str) -> Vec<u8> {
    medvault_crypto::sha256(token.as_bytes()).to_vec()
}

/// The throttle key of an email: a hash, so the throttle table stores no address.
fn email_throttle_key(email: &Email) -> String {
    let digest = medvault_crypto::sha256(format!("email\0{}", email.as_str()).as_bytes());
    format!("account:{}", URL_SAFE_NO_PAD.encode(digest))
}

/// The throttle key of a source address: IPv6 addresses count per /64, since
/// one host usually holds a whole /64.
fn address_throttle_key(source: IpAddr) -> String {
    match source {
        IpAddr::V4(v4) => format!("address:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("address:{v4}"),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                format!("address:{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
        },
    }
}
