//! Storage of the HDDT authorization server (§ 374a SGB V): the server's own
//! keys (the access/refresh token signing key and the Pairing ID secret, both
//! wrapped), pushed authorization requests and their consent interaction, the
//! patient's one-time login tickets for the consent page, pairings, grants
//! (one consent each), authorization codes, and a small key/value state (the
//! "retired" switch, DiGAs missing from the registry).
//!
//! Everything that must hold on every node at once (one-time `request_uri`,
//! ticket and code; refresh rotation with one winner; revocation) is a
//! conditional update here, so the database settles races between nodes.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// A key of the server itself (format 1), wrapped under the server's key-
/// encryption secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeyRowV1 {
    /// The key id.
    pub kid: String,
    /// `oauth-signing` (ES256, signs access and refresh tokens) or
    /// `pairing-secret` (the Pairing ID's secret salt).
    pub purpose: String,
    /// The public JWK (JSON text) of a signing key; `None` for a secret.
    pub public_jwk: Option<String>,
    /// The wrapped private key or secret.
    pub wrapped_secret: Vec<u8>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it stopped being current, if it did.
    pub retired_at: Option<OffsetDateTime>,
    /// Until when a retired key still verifies.
    pub publish_until: OffsetDateTime,
}

/// A pushed authorization request and its consent interaction (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRowV1 {
    /// The `request_uri` handed to the DiGA (`urn:uuid:…`).
    pub request_uri: String,
    /// The DiGA that pushed it.
    pub client_id: String,
    /// The validated request (JSON text).
    pub request: String,
    /// When it was pushed.
    pub created_at: OffsetDateTime,
    /// Until when `/authorize` accepts the `request_uri`.
    pub expires_at: OffsetDateTime,
    /// When `/authorize` opened it (it opens once).
    pub opened_at: Option<OffsetDateTime>,
    /// SHA-256 of the consent page's CSRF token.
    pub csrf_hash: Option<Vec<u8>>,
    /// Until when the patient may log in and decide.
    pub interaction_expires_at: Option<OffsetDateTime>,
    /// The patient who logged in on the consent page.
    pub patient_uid: Option<String>,
    /// When the patient decided.
    pub finished_at: Option<OffsetDateTime>,
    /// `approved` or `denied`.
    pub outcome: Option<String>,
}

/// A one-time ticket that logs a patient in on the consent page (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTicketRowV1 {
    /// SHA-256 of the ticket.
    pub ticket_hash: Vec<u8>,
    /// Whose ticket it is.
    pub patient_uid: String,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// A pairing of one patient with one DiGA (format 1). Never deleted: the
/// Pairing ID stays the same when the patient pairs the DiGA again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingRowV1 {
    /// The Pairing ID (64 hex).
    pub pairing_id: String,
    /// The DiGA.
    pub client_id: String,
    /// The patient.
    pub patient_uid: String,
    /// When it was first made.
    pub created_at: OffsetDateTime,
}

/// A grant: one consent and the tokens issued under it (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRowV1 {
    /// Random id.
    pub id: String,
    /// The pairing it belongs to.
    pub pairing_id: String,
    /// The DiGA.
    pub client_id: String,
    /// The patient (read through the pairing).
    pub patient_uid: String,
    /// The consented scopes, space-separated.
    pub scope: String,
    /// When the consent ends.
    pub consent_until: OffsetDateTime,
    /// `prescription` (the DiGA stated the prescription end) or `patient`
    /// (the patient chose the period).
    pub consent_basis: String,
    /// When the patient consented.
    pub created_at: OffsetDateTime,
    /// 0 until the code is redeemed; then the current refresh token's number.
    pub refresh_generation: i64,
    /// When the refresh token was last rotated (or first issued).
    pub rotated_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Why (`patient`, `client`, `code_reuse`, `refresh_reuse`, `superseded`,
    /// `registry`, `retired`).
    pub revoke_reason: Option<String>,
}

/// An authorization code (format 1), stored hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCodeRowV1 {
    /// SHA-256 of the code.
    pub code_hash: Vec<u8>,
    /// The grant it redeems.
    pub grant_id: String,
    /// The DiGA it was issued to.
    pub client_id: String,
    /// The `redirect_uri` of the request.
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// When it was redeemed, if it was.
    pub used_at: Option<OffsetDateTime>,
}

/// What an approval writes, in one transaction with the finished interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The pairing (inserted unless it exists).
    pub pairing: PairingRowV1,
    /// The new grant (the pairing's earlier live grants are superseded).
    pub grant: GrantRowV1,
    /// The code that redeems it.
    pub code: AuthorizationCodeRowV1,
}

/// Which grants a revocation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantSelector<'a> {
    /// One grant.
    Grant(&'a str),
    /// Every grant of one pairing.
    Pairing(&'a str),
    /// Every grant of one DiGA.
    Client(&'a str),
    /// Every grant.
    All,
}

/// The HDDT authorization server's storage.
#[async_trait]
pub trait HddtStore: Send + Sync {
    /// Stores a new server key of its purpose and retires the current one at
    /// `at` (it keeps verifying until `retired_publish_until`), in one
    /// transaction; [`StoreError::Conflict`] when another node made one at
    /// the same moment.
    async fn rotate_server_key(
        &self,
        key: &ServerKeyRowV1,
        at: OffsetDateTime,
        retired_publish_until: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Stores `key` as the first current key of its purpose, never replacing
    /// one: [`StoreError::Conflict`] when a current key exists (another node
    /// or request made it first; read it with [`Self::current_server_key`]).
    /// A check followed by [`Self::rotate_server_key`] would let two first
    /// uses each make a key, and the second would retire the first.
    async fn create_server_key(&self, key: &ServerKeyRowV1) -> Result<(), StoreError>;

    /// The current key of `purpose`.
    async fn current_server_key(&self, purpose: &str)
    -> Result<Option<ServerKeyRowV1>, StoreError>;

    /// The keys of `purpose` that still verify at `now` (current or
    /// published), oldest first.
    async fn server_keys(
        &self,
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<ServerKeyRowV1>, StoreError>;

    /// Stores a pushed authorization request.
    async fn insert_authorization(&self, row: &AuthorizationRowV1) -> Result<(), StoreError>;

    /// One authorization request.
    async fn authorization(
        &self,
        request_uri: &str,
    ) -> Result<Option<AuthorizationRowV1>, StoreError>;

    /// Opens the request for the consent page, once: only an unexpired,
    /// unopened request of `client_id`. Returns whether it opened.
    async fn open_authorization(
        &self,
        request_uri: &str,
        client_id: &str,
        csrf_hash: &[u8],
        interaction_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Stores a login ticket, replacing the patient's earlier ones.
    async fn insert_login_ticket(&self, row: &LoginTicketRowV1) -> Result<(), StoreError>;

    /// Takes (deletes) an unexpired login ticket; whose it was.
    async fn take_login_ticket(
        &self,
        ticket_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError>;

    /// Uses a login ticket on an open interaction (matching CSRF hash, no
    /// patient yet, not finished, in time), in one transaction: the ticket is
    /// gone and the patient is bound. Returns the patient, or `None`.
    async fn authenticate_authorization(
        &self,
        request_uri: &str,
        csrf_hash: &[u8],
        ticket_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError>;

    /// Finishes an interaction of a logged-in patient (matching CSRF hash,
    /// not finished, in time): denied (`None`), or approved with what the
    /// approval writes, in the same transaction. Returns whether it finished.
    async fn finish_authorization(
        &self,
        request_uri: &str,
        csrf_hash: &[u8],
        approval: Option<&Approval>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// One authorization code, used or not.
    async fn authorization_code(
        &self,
        code_hash: &[u8],
    ) -> Result<Option<AuthorizationCodeRowV1>, StoreError>;

    /// Redeems a code, once: an unused, unexpired code whose grant is not
    /// revoked becomes used and its grant gets refresh generation 1, in one
    /// transaction. Returns the grant, or `None` (used, expired or revoked).
    async fn redeem_authorization_code(
        &self,
        code_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<GrantRowV1>, StoreError>;

    /// One grant.
    async fn grant(&self, id: &str) -> Result<Option<GrantRowV1>, StoreError>;

    /// Rotates the refresh token, once per generation: a live grant (not
    /// revoked, consent not ended) at `generation` moves to `generation + 1`.
    /// Returns the updated grant, or `None` (another use won, or it ended).
    async fn rotate_refresh_token(
        &self,
        grant_id: &str,
        generation: i64,
        now: OffsetDateTime,
    ) -> Result<Option<GrantRowV1>, StoreError>;

    /// Revokes the selected live grants; returns the ids revoked.
    async fn revoke_grants(
        &self,
        selector: GrantSelector<'_>,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError>;

    /// Narrows a live grant's consented scope (an MIV left the DiGA's
    /// permissions).
    async fn set_grant_scope(&self, grant_id: &str, scope: &str) -> Result<bool, StoreError>;

    /// Extends the live consent of one of `patient_uid`'s grants that the
    /// patient chose the period of (`consent_basis` `patient`) to `until`.
    /// Returns whether it was extended.
    async fn renew_grant(
        &self,
        grant_id: &str,
        patient_uid: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// One pairing.
    async fn pairing(&self, pairing_id: &str) -> Result<Option<PairingRowV1>, StoreError>;

    /// Every grant of a patient's pairings, newest first (at most `limit`).
    async fn grants_of_patient(
        &self,
        patient_uid: &str,
        limit: i64,
    ) -> Result<Vec<GrantRowV1>, StoreError>;

    /// Live grants (not revoked, consent not ended) of one DiGA, or of all.
    async fn live_grants(
        &self,
        client_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<GrantRowV1>, StoreError>;

    /// A state value and when it was set.
    async fn hddt_state(&self, name: &str) -> Result<Option<(String, OffsetDateTime)>, StoreError>;

    /// Sets (`Some`) or clears (`None`) a state value.
    async fn set_hddt_state(
        &self,
        name: &str,
        value: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Every state value whose name starts with `prefix`.
    async fn hddt_states(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, OffsetDateTime)>, StoreError>;

    /// Deletes requests, tickets and codes that ended before `before`;
    /// returns how many rows went.
    async fn purge_expired_hddt(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}
