//! One attempt reserved against a throttle key, shared by every path that
//! counts attempts (logins, OPAQUE registration, Account App approvals and
//! request openings).

use medvault_store::{Store, StoreError, ThrottlePolicy};
use time::{Duration, OffsetDateTime};

/// Reserves one attempt against `key` at `now` (counts that are `memory` old
/// start again). `Ok(Err(seconds))` when the key is locked: retry after that long.
pub(crate) async fn reserve(
    store: &dyn Store,
    key: &str,
    now: OffsetDateTime,
    memory: Duration,
    policy: ThrottlePolicy,
) -> Result<Result<(), u64>, StoreError> {
    if store
        .reserve_login_attempt(key, now, now - memory, policy)
        .await?
        .is_some()
    {
        return Ok(Ok(()));
    }
    let until = store
        .login_locked_until(&[key.to_owned()], now)
        .await?
        .unwrap_or(now);
    let seconds = (until - now).whole_seconds().max(1);
    Ok(Err(u64::try_from(seconds).unwrap_or(1)))
}
