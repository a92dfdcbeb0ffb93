//! The Account App: registration and login pages a third-party app can send
//! a user to, and get the user back from with a one-time result code.
//!
//! No credential is ever typed into these pages: OPAQUE, the codes and the
//! keys need the user's own client. The page shows a one-time approval code;
//! the user approves it in their medvault client (`medvault account approve`),
//! logged in with any working credential (after registering there first, for
//! the registration page); the page then sends the browser back to the app's
//! configured return URL with a one-time result code and the app's `state`;
//! the app's backend redeems the code for the UID. Return URLs must be
//! configured exactly (no open redirect); codes are stored hashed, expire
//! after ten minutes, and each step happens once across all nodes.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{Clock, Uid};
use medvault_crypto::{CodeKind, RecoveryCode, random_fill, sha256};
use medvault_store::{AccountRequestRowV1, Store, StoreError, ThrottlePolicy};
use time::Duration;
use zeroize::Zeroizing;

use crate::login::Session;

/// How long a request can be approved and redeemed.
pub const REQUEST_LIFETIME: Duration = Duration::minutes(10);
/// The longest `state` an app may pass.
pub const MAX_STATE_LEN: usize = 200;
/// Requests one source address may open per hour before locks begin.
pub const FREE_OPENS: i64 = 30;
/// Wrong approval codes allowed per participant before locks begin.
const FREE_APPROVAL_FAILURES: i64 = 5;

/// What the user comes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPurpose {
    /// Log in with an existing account.
    Login,
    /// Register, then come back.
    Register,
}

impl RequestPurpose {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
        }
    }
}

/// A new request: its id (for the page's URL) and the approval code to show.
#[derive(Debug)]
pub struct NewRequest {
    /// The id.
    pub id: String,
    /// The approval code, grouped for reading.
    pub code: Zeroizing<String>,
}

/// Where a request stands, for its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestPage {
    /// Waiting for approval: show the code.
    Pending {
        /// Login or registration.
        purpose: RequestPurpose,
        /// The app's host (shown so the user knows who asks).
        app_host: String,
    },
    /// Approved: send the browser here (return URL with `code` and `state`).
    Redirect(String),
    /// Unknown, expired, finished, or a wrong code for this id.
    Gone,
}

/// What a redeemed result says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountResult {
    /// Who approved.
    pub uid: Uid,
    /// Login or registration.
    pub purpose: String,
    /// The working credential of the approving session.
    pub credential_id: String,
    /// The app's state.
    pub state: String,
}

/// Why an Account App step was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountAppError {
    /// The return URL is not configured.
    #[error("return_to is not a configured return URL")]
    ReturnUrl,
    /// The state is too long or has characters outside printable ASCII.
    #[error("state must be at most 200 printable ASCII characters")]
    State,
    /// The code is unknown, used or expired.
    #[error("the code is unknown, used or expired")]
    Code,
    /// Too many wrong approval codes: try later.
    #[error("too many wrong approval codes; try again later")]
    Throttled {
        /// Seconds until the lock ends.
        retry_after: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit trail could not be written.
    #[error("could not audit: {0}")]
    Audit(String),
}

/// The Account App service.
#[derive(Debug, Clone)]
pub struct AccountApp {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditTrail>,
    return_urls: Arc<Vec<url::Url>>,
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_default()
}

fn code_hash(code: &RecoveryCode) -> Vec<u8> {
    sha256(code.display().as_bytes()).to_vec()
}

impl AccountApp {
    /// The service, accepting exactly `return_urls` as return URLs.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditTrail>,
        return_urls: Vec<url::Url>,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            return_urls: Arc::new(return_urls),
        }
    }

    /// Opens a request for an app that will take the user back to `return_to`.
    /// Each source address may open [`FREE_OPENS`] an hour before doubling
    /// locks begin (every request is a row until it expires).
    pub async fn open(
        &self,
        purpose: RequestPurpose,
        return_to: &str,
        state: &str,
        source: std::net::IpAddr,
    ) -> Result<NewRequest, AccountAppError> {
        let now = self.clock.now();
        let key = format!("account-app:{source}");
        let policy = ThrottlePolicy {
            free: FREE_OPENS,
            max_lock: Duration::minutes(15),
        };
        crate::throttle::reserve(&*self.store, &key, now, Duration::hours(1), policy)
            .await?
            .map_err(|retry_after| AccountAppError::Throttled { retry_after })?;
        let return_to = url::Url::parse(return_to).map_err(|_| AccountAppError::ReturnUrl)?;
        if !self.return_urls.contains(&return_to) {
            return Err(AccountAppError::ReturnUrl);
        }
        if state.len() > MAX_STATE_LEN || !state.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AccountAppError::State);
        }
        let code = RecoveryCode::generate(CodeKind::Tan).map_err(|_| AccountAppError::Code)?;
        let mut id = [0u8; 24];
        random_fill(&mut id).map_err(|_| AccountAppError::Code)?;
        let id = URL_SAFE_NO_PAD.encode(id);
        self.store
            .insert_account_request(&AccountRequestRowV1 {
                id: id.clone(),
                purpose: purpose.as_str().to_owned(),
                code_hash: code_hash(&code),
                return_to: return_to.to_string(),
                state: state.to_owned(),
                status: "pending".to_owned(),
                uid: None,
                credential_id: None,
                result_hash: None,
                created_at: now,
                expires_at: now + REQUEST_LIFETIME,
            })
            .await?;
        Ok(NewRequest {
            id,
            code: code.display(),
        })
    }

    /// What the page of request `id` shows to whoever holds its `code`.
    pub async fn page(&self, id: &str, code: &str) -> Result<RequestPage, AccountAppError> {
        let Ok(code) = RecoveryCode::parse(CodeKind::Tan, code) else {
            return Ok(RequestPage::Gone);
        };
        let now = self.clock.now();
        let Some(request) = self.store.account_request(id, now).await? else {
            return Ok(RequestPage::Gone);
        };
        if !medvault_crypto::proof_matches_hash(&code_hash(&code), &request.code_hash) {
            return Ok(RequestPage::Gone);
        }
        match request.status.as_str() {
            "pending" => Ok(RequestPage::Pending {
                purpose: if request.purpose == "register" {
                    RequestPurpose::Register
                } else {
                    RequestPurpose::Login
                },
                app_host: host_of(&request.return_to),
            }),
            "approved" => {
                let mut result = Zeroizing::new([0u8; 32]);
                random_fill(result.as_mut_slice()).map_err(|_| AccountAppError::Code)?;
                let result = Zeroizing::new(URL_SAFE_NO_PAD.encode(result.as_slice()));
                if !self
                    .store
                    .redirect_account_request(id, &sha256(result.as_bytes()), now)
                    .await?
                {
                    return Ok(RequestPage::Gone);
                }
                let mut target =
                    url::Url::parse(&request.return_to).map_err(|_| AccountAppError::ReturnUrl)?;
                target
                    .query_pairs_mut()
                    .append_pair("code", &result)
                    .append_pair("state", &request.state);
                Ok(RequestPage::Redirect(target.to_string()))
            }
            _ => Ok(RequestPage::Gone),
        }
    }

    /// What the request showing `code` is for and which app asks, so the
    /// user can check before approving. Throttled like an approval.
    pub async fn inspect(
        &self,
        session: &Session,
        code: &str,
    ) -> Result<(RequestPurpose, String), AccountAppError> {
        let now = self.clock.now();
        self.reserve_approval(session, now).await?;
        let pending = match RecoveryCode::parse(CodeKind::Tan, code) {
            Ok(code) => {
                self.store
                    .pending_account_request(&code_hash(&code), now)
                    .await?
            }
            Err(_) => None,
        };
        let request = pending.ok_or(AccountAppError::Code)?;
        let purpose = if request.purpose == "register" {
            RequestPurpose::Register
        } else {
            RequestPurpose::Login
        };
        Ok((purpose, host_of(&request.return_to)))
    }

    async fn reserve_approval(
        &self,
        session: &Session,
        now: time::OffsetDateTime,
    ) -> Result<(), AccountAppError> {
        let key = format!("approve:{}", session.uid);
        let policy = ThrottlePolicy {
            free: FREE_APPROVAL_FAILURES,
            max_lock: Duration::minutes(15),
        };
        crate::throttle::reserve(&*self.store, &key, now, Duration::hours(1), policy)
            .await?
            .map_err(|retry_after| AccountAppError::Throttled { retry_after })?;
        Ok(())
    }

    /// The session's owner approves the request showing `code`; returns the
    /// app's host, to show them whom they let in.
    pub async fn approve(&self, session: &Session, code: &str) -> Result<String, AccountAppError> {
        let now = self.clock.now();
        self.reserve_approval(session, now).await?;
        let approved = match RecoveryCode::parse(CodeKind::Tan, code) {
            Ok(code) => {
                self.store
                    .approve_account_request(
                        &code_hash(&code),
                        &session.uid.to_string(),
                        &session.credential_id,
                        now,
                    )
                    .await?
            }
            Err(_) => None,
        };
        let Some(request) = approved else {
            return Err(AccountAppError::Code);
        };
        self.store
            .clear_login_failures(&format!("approve:{}", session.uid))
            .await?;
        let host = host_of(&request.return_to);
        let detail = AuditDetail::new()
            .with("purpose", request.purpose.as_str())
            .and_then(|detail| detail.with("app_host", host.as_str()))
            .map_err(|error| AccountAppError::Audit(error.to_string()))?;
        self.audit
            .append(
                AuditEvent::new(
                    session.uid.to_string(),
                    session.uid.to_string(),
                    "account_app.approved",
                    Outcome::Success,
                )
                .with_detail(detail),
            )
            .await
            .map_err(|error| AccountAppError::Audit(error.to_string()))?;
        Ok(host)
    }

    /// The app's backend redeems a result code, once, naming the return URL
    /// it received the code on: a code issued for one app is refused to
    /// another (as OAuth binds a code to its `redirect_uri`).
    pub async fn redeem(
        &self,
        result_code: &str,
        return_to: &str,
    ) -> Result<AccountResult, AccountAppError> {
        if result_code.len() > 64 {
            return Err(AccountAppError::Code);
        }
        let return_to = url::Url::parse(return_to).map_err(|_| AccountAppError::Code)?;
        let request = self
            .store
            .take_account_result(&sha256(result_code.as_bytes()), self.clock.now())
            .await?
            .ok_or(AccountAppError::Code)?;
        if url::Url::parse(&request.return_to).ok().as_ref() != Some(&return_to) {
            return Err(AccountAppError::Code);
        }
        let uid = request
            .uid
            .as_deref()
            .and_then(|uid| uid.parse().ok())
            .ok_or(AccountAppError::Code)?;
        Ok(AccountResult {
            uid,
            purpose: request.purpose,
            credential_id: request.credential_id.unwrap_or_default(),
            state: request.state,
        })
    }
}
