//! Storage of what a participant logs in with (accounts and PKI): working
//! credentials and their wrapped keys, OPAQUE password records, sessions,
//! pending login challenges and the login throttle.
//!
//! Invariants the backends keep, whatever the number of server nodes:
//! - a participant and its first working credentials are stored in one
//!   transaction ([`AccountStore::register_participant`]);
//! - a participant's last working credential cannot be removed, also when two
//!   removals race (the participant's row is locked while counting);
//! - a one-time key slot (a TAN) is consumed at most once
//!   ([`AccountStore::consume_credential_key`] succeeds for exactly one caller);
//! - a login challenge is taken at most once ([`AccountStore::take_login_challenge`]);
//! - sessions are stored by the hash of their token, never the token.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{ParticipantRowV1, StoreError};

/// A working credential (format 1). Removed credentials keep their row (and
/// certificate, so old signatures still verify) but lose their keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingCredentialRowV1 {
    /// The credential's id (a UUID chosen by the enrolling client).
    pub id: String,
    /// The participant it belongs to.
    pub uid: String,
    /// `password`, `superpin`, `tan`, `software-certificate` or `smartcard`.
    pub kind: String,
    /// The signing key (uncompressed P-256 point).
    pub public_key: Vec<u8>,
    /// The participant CA's X.509 certificate of that key (DER).
    pub certificate: Vec<u8>,
    /// When it was enrolled.
    pub created_at: OffsetDateTime,
    /// When it was removed, if it was.
    pub removed_at: Option<OffsetDateTime>,
}

/// One wrapped copy of a participant's keys under one credential (format 1):
/// slot 0 for every kind, slots 1..=n for the n TANs of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialKeyRowV1 {
    /// The working credential.
    pub credential_id: String,
    /// The slot (the TAN's number; 0 otherwise).
    pub slot: i64,
    /// SuperPIN and TAN: the hash of the login proof; `None` otherwise.
    pub proof_hash: Option<Vec<u8>>,
    /// The Root Credential's private key, wrapped (nonce || ciphertext).
    pub wrapped_root_key: Vec<u8>,
    /// The credential's signing key, wrapped, for kinds whose key has no other home.
    pub wrapped_signing_key: Option<Vec<u8>>,
    /// P-256 kinds: the ephemeral public key of the ECDH envelope.
    pub ecdh_public_key: Option<Vec<u8>>,
    /// When a one-time slot was used.
    pub used_at: Option<OffsetDateTime>,
}

/// The OPAQUE record of a password credential (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRowV1 {
    /// The normalized email (unique).
    pub email: String,
    /// The working credential.
    pub credential_id: String,
    /// Which OPAQUE suite and key-stretching parameters made the record.
    pub suite: i64,
    /// The serialized OPAQUE registration record.
    pub password_file: Vec<u8>,
}

/// A working credential with everything stored with it at enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkingCredential {
    /// The credential.
    pub credential: WorkingCredentialRowV1,
    /// Its wrapped keys (at least one).
    pub keys: Vec<CredentialKeyRowV1>,
    /// Its OPAQUE record, for a password credential.
    pub password: Option<PasswordRowV1>,
}

/// A session (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRowV1 {
    /// SHA-256 of the bearer token.
    pub token_hash: Vec<u8>,
    /// Who is logged in.
    pub uid: String,
    /// With which working credential.
    pub credential_id: String,
    /// When the session began.
    pub created_at: OffsetDateTime,
    /// When it ends.
    pub expires_at: OffsetDateTime,
    /// The identity assurance: `IAL1` (a working credential alone) or `IAL2`
    /// (a Patient Credential was presented as well).
    pub assurance: String,
    /// The Patient Credential presented, for an `IAL2` session; the session
    /// ends when that credential is revoked, suspended or expires.
    pub patient_credential_id: Option<String>,
}

/// A pending step of a two-message login (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginChallengeRowV1 {
    /// Random id the client sends back.
    pub id: String,
    /// The credential the login is for; `None` when the account is unknown
    /// (the login runs to its end with a dummy, so nothing tells).
    pub credential_id: Option<String>,
    /// `signature` (nonce to sign) or `opaque` (the server's OPAQUE state).
    pub purpose: String,
    /// The throttle key the attempt counts against.
    pub throttle_key: String,
    /// The nonce or the serialized state.
    pub state: Vec<u8>,
    /// When it stops being accepted.
    pub expires_at: OffsetDateTime,
}

/// How many attempts pass freely and how long a lock may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Attempts allowed before locks begin.
    pub free: i64,
    /// The longest lock.
    pub max_lock: time::Duration,
}

/// Why a credential could not be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveCredentialOutcome {
    /// Removed.
    Removed,
    /// No such active credential of that participant.
    NotFound,
    /// It is the participant's last credential.
    LastCredential,
}

/// The accounts' login state.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Stores a participant with its first credentials, all or nothing.
    /// [`StoreError::Conflict`] if the UID, a credential id or an email exists.
    async fn register_participant(
        &self,
        participant: &ParticipantRowV1,
        credentials: &[NewWorkingCredential],
    ) -> Result<(), StoreError>;

    /// Adds a credential to an existing participant, all or nothing.
    async fn add_working_credential(
        &self,
        credential: &NewWorkingCredential,
    ) -> Result<(), StoreError>;

    /// The participant's active credentials, oldest first.
    async fn working_credentials(
        &self,
        uid: &str,
    ) -> Result<Vec<WorkingCredentialRowV1>, StoreError>;

    /// One credential by id, active or removed.
    async fn working_credential(
        &self,
        id: &str,
    ) -> Result<Option<WorkingCredentialRowV1>, StoreError>;

    /// Removes an active credential of `uid` unless it is the last one: marks
    /// it removed, deletes its keys, password record and sessions.
    async fn remove_working_credential(
        &self,
        uid: &str,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<RemoveCredentialOutcome, StoreError>;

    /// One key slot of an active credential.
    async fn credential_key(
        &self,
        credential_id: &str,
        slot: i64,
    ) -> Result<Option<CredentialKeyRowV1>, StoreError>;

    /// Marks an unused slot used; `true` for exactly one caller.
    async fn consume_credential_key(
        &self,
        credential_id: &str,
        slot: i64,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// How many slots of a credential are unused.
    async fn unused_credential_keys(&self, credential_id: &str) -> Result<i64, StoreError>;

    /// The password record of a normalized email, if an active credential has it.
    async fn password_by_email(&self, email: &str) -> Result<Option<PasswordRowV1>, StoreError>;

    /// Stores a session.
    async fn insert_session(&self, session: &SessionRowV1) -> Result<(), StoreError>;

    /// The session with this token hash, if it exists, has not expired at
    /// `now`, and its working credential has not been removed.
    async fn session(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<SessionRowV1>, StoreError>;

    /// Deletes a session; `true` if it existed.
    async fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError>;

    /// Stores a login challenge.
    async fn insert_login_challenge(
        &self,
        challenge: &LoginChallengeRowV1,
    ) -> Result<(), StoreError>;

    /// Removes and returns a challenge that has not expired at `now`; a second
    /// call for the same id gets `None`.
    async fn take_login_challenge(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<LoginChallengeRowV1>, StoreError>;

    /// Deletes expired sessions, challenges and Account App requests and stale
    /// throttle rows (last attempt before `stale_before`); returns how many rows went.
    async fn purge_expired_logins(
        &self,
        now: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// Reserves one login attempt against `key`, atomically: refused (`None`)
    /// while `key` is locked at `at`; otherwise counts it (a count whose last
    /// attempt is older than `stale_before` starts again at 1) and returns the
    /// count. Beyond `policy.free` attempts the same statement locks `key` for
    /// 1, 2, 4, … seconds, at most `policy.max_lock`, so of any number of
    /// concurrent attempts on any nodes at most one passes per lock period.
    async fn reserve_login_attempt(
        &self,
        key: &str,
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
        policy: ThrottlePolicy,
    ) -> Result<Option<i64>, StoreError>;

    /// Reserves one attempt against each of `keys` in one transaction: all
    /// counted, or none (then the first locked key is returned).
    async fn reserve_login_attempts(
        &self,
        keys: &[(String, ThrottlePolicy)],
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<Option<String>, StoreError>;

    /// After a success, in one transaction: forgets `clear`'s attempts and
    /// gives `refund` its attempt back.
    async fn settle_login_attempt(&self, clear: &str, refund: &str) -> Result<(), StoreError>;

    /// The latest lock of any of `keys` that is still in force at `now`.
    async fn login_locked_until(
        &self,
        keys: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError>;

    /// Forgets the attempts of `key` (after a successful login).
    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError>;
}
