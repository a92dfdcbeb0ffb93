//! Storage of Account App requests: a third-party app sends a user to
//! medvault's login or registration page; the user approves the request in
//! their own medvault client; the app gets the user back with a one-time
//! result code. Every step is one conditional update, so each happens once
//! across all server nodes.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// An Account App request (format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRequestRowV1 {
    /// Random id in the page's URL.
    pub id: String,
    /// `login` or `register`.
    pub purpose: String,
    /// SHA-256 of the approval code the page shows.
    pub code_hash: Vec<u8>,
    /// Where the user goes back to (one of the configured URLs).
    pub return_to: String,
    /// The app's opaque state, echoed back.
    pub state: String,
    /// `pending`, `approved`, `redirected` or `done`.
    pub status: String,
    /// Who approved it.
    pub uid: Option<String>,
    /// With which working credential's session.
    pub credential_id: Option<String>,
    /// SHA-256 of the one-time result code, once redirected.
    pub result_hash: Option<Vec<u8>>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it stops being accepted.
    pub expires_at: OffsetDateTime,
}

/// Account App requests.
#[async_trait]
pub trait AccountRequestStore: Send + Sync {
    /// Stores a new pending request.
    async fn insert_account_request(&self, request: &AccountRequestRowV1)
    -> Result<(), StoreError>;

    /// A request by id, if it has not expired at `now`.
    async fn account_request(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AccountRequestRowV1>, StoreError>;

    /// The pending, unexpired request whose code hashes to `code_hash`.
    async fn pending_account_request(
        &self,
        code_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<AccountRequestRowV1>, StoreError>;

    /// Approves the pending, unexpired request whose code hashes to
    /// `code_hash`, for `uid`; returns it, or `None`.
    async fn approve_account_request(
        &self,
        code_hash: &[u8],
        uid: &str,
        credential_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AccountRequestRowV1>, StoreError>;

    /// Moves an approved request to `redirected` with its result code's hash;
    /// `true` for exactly one caller.
    async fn redirect_account_request(
        &self,
        id: &str,
        result_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Takes the result of a redirected request once (`done` afterwards).
    async fn take_account_result(
        &self,
        result_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<AccountRequestRowV1>, StoreError>;
}
