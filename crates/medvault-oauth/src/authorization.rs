//! The HDDT authorization server (guide §pairing, RFC 6749, RFC 9126, RFC
//! 7636, RFC 7009, RFC 9700), sans HTTP: pushed requests, the consent
//! interaction, codes, tokens with rotating refresh tokens, revocation, the
//! patient's pairings, the "retired" switch, and access-token validation
//! for the resource server.
//!
//! Flow: the DiGA pushes a request (`/par`, mTLS) and gets a one-time
//! `request_uri` (90 s). The browser opens `/authorize`, which opens the
//! request once and starts an interaction (10 min) with a CSRF token. The
//! patient logs in on the page with a one-time ticket from their own app
//! (`medvault pairing ticket`), so the page never sees a password, picks the
//! MIVs and (when the DiGA stated no prescription end) the period, and
//! approves or denies. Approval writes the pairing, the grant (= the
//! consent) and a one-time code in one transaction. The DiGA redeems the code
//! with PKCE (`/token`, mTLS) for an access token and a refresh token.
//!
//! Reuse: a code or a rotated-out refresh token presented within
//! `reuse_grace` of its first use gets `invalid_grant` and nothing else (a
//! lost response, or two requests racing: exactly one wins). Later, it is
//! treated as stolen: the grant and every token of it are revoked
//! (RFC 9700 §4.14.2).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, Outcome};
use medvault_core::{Clock, DigaClientId, Miv, ScopeSet, SmartScope, Uid};
use medvault_crypto::sha256;
use medvault_store::{
    Approval, AuthorizationCodeRowV1, AuthorizationRowV1, GrantRowV1, GrantSelector,
    LoginTicketRowV1, PairingRowV1, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::{Date, Duration, OffsetDateTime, Time};

use crate::error::OAuthError;
use crate::par::{AuthorizationRequest, MAX_PARAMETERS, MAX_VALUE_LEN, validate_par};
use crate::pkce::{is_code_verifier, verify_s256};
use crate::registry::{Cached, DigaRegistry, DigaRegistryEntry, DigaStatus, Stale};
use crate::tokens::{
    ACCESS_TOKEN_TYPE, AccessClaims, KeyError, REFRESH_TOKEN_TYPE, RefreshClaims, TokenKeys,
    random_id,
};

/// The state name of the retired switch.
pub const RETIRED_STATE: &str = "retired";
/// The state name prefix of DiGAs found inactive or missing in the registry.
const ABSENT_PREFIX: &str = "diga-absent:";
/// The state name prefix of grants whose DiGA lost one of their MIVs.
const NARROW_PREFIX: &str = "grant-narrowing:";

/// Retires HDDT (the Device Data Recorder left the HIIS-VZ): every grant is
/// revoked; `/par`, `/token` and the FHIR API answer "no longer supported"
/// from now on. Returns how many grants ended. Also used offline by
/// `medvault admin retire`.
pub async fn retire(
    store: &dyn Store,
    audit: &AuditTrail,
    now: OffsetDateTime,
    actor: &str,
) -> Result<usize, StoreError> {
    store
        .set_hddt_state(RETIRED_STATE, Some("retired"), now)
        .await?;
    let ended = store
        .revoke_grants(GrantSelector::All, "retired", now)
        .await?;
    let detail = AuditDetail::new().with("grants_ended", ended.len());
    if let Ok(detail) = detail {
        let event =
            AuditEvent::new(actor, "-", "hddt.retired", Outcome::Success).with_detail(detail);
        if let Err(error) = audit.append(event).await {
            tracing::error!(%error, "could not audit the retirement");
        }
    }
    Ok(ended.len())
}

/// Lifetimes and names of the authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    /// `iss` of every token: the HDDT listener's base URL.
    pub issuer: String,
    /// `aud` of access tokens: the FHIR base URL.
    pub resource_audience: String,
    /// The ValueSet base the scopes name.
    pub value_set_base: String,
    /// How long a `request_uri` is accepted.
    pub request_uri_lifetime: Duration,
    /// How long the patient has on the consent page.
    pub interaction_lifetime: Duration,
    /// How long a code is accepted.
    pub code_lifetime: Duration,
    /// Access token lifetime.
    pub access_lifetime: Duration,
    /// Refresh token lifetime (30 days by the guide).
    pub refresh_lifetime: Duration,
    /// How long after its first use a reused code or refresh token is taken
    /// for a lost response rather than a theft.
    pub reuse_grace: Duration,
    /// How long a login ticket works.
    pub ticket_lifetime: Duration,
    /// The longest consent (one year).
    pub max_consent: Duration,
}

impl AuthorizationPolicy {
    /// The defaults for an issuer and resource server base.
    pub fn new(issuer: &str, resource_audience: &str, value_set_base: &str) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            resource_audience: resource_audience.trim_end_matches('/').to_owned(),
            value_set_base: value_set_base.to_owned(),
            request_uri_lifetime: Duration::seconds(90),
            interaction_lifetime: Duration::minutes(10),
            code_lifetime: Duration::seconds(60),
            access_lifetime: Duration::minutes(10),
            refresh_lifetime: Duration::days(30),
            reuse_grace: Duration::seconds(30),
            ticket_lifetime: Duration::minutes(5),
            max_consent: Duration::days(365),
        }
    }

    fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }
}

type CachedRegistry = Cached<Arc<DigaRegistry>>;

/// The DiGA-VZ as this node last loaded it.
#[derive(Debug, Clone, Default)]
pub struct TrustCache {
    registry: Arc<RwLock<Option<Arc<CachedRegistry>>>>,
}

impl TrustCache {
    /// Installs a freshly fetched registry, usable for `max_age`.
    pub fn install(&self, registry: DigaRegistry, fetched_at: OffsetDateTime, max_age: Duration) {
        *self
            .registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(Cached::new(
            Arc::new(registry),
            fetched_at,
            max_age,
        )));
    }

    /// The registry if it is fresh at `now`.
    pub fn current(&self, now: OffsetDateTime) -> Result<Arc<DigaRegistry>, Stale> {
        let cached = self
            .registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or(Stale {
                age_secs: i64::MAX,
                max_age_secs: 0,
            })?;
        cached.get(now).cloned()
    }

    /// When the registry was last fetched, if ever.
    pub fn fetched_at(&self) -> Option<OffsetDateTime> {
        self.registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|cached| cached.fetched_at())
    }
}

/// The pushed request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRequest {
    client_id: String,
    redirect_uri: String,
    scope: String,
    code_challenge: String,
    state: Option<String>,
    prescription_end: Option<String>,
}

/// The answer to a pushed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedRequest {
    /// `urn:uuid:…`.
    pub request_uri: String,
    /// Seconds it is accepted.
    pub expires_in: i64,
}

/// The token response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    /// The access token (a signed JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: i64,
    /// The refresh token (a signed JWT, 30 days).
    pub refresh_token: String,
    /// The granted scopes.
    pub scope: String,
    /// The Pairing ID.
    pub sub: String,
}

/// What the consent page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentView {
    /// The request (hidden form field).
    pub request_uri: String,
    /// The CSRF token (hidden form field).
    pub csrf: String,
    /// The DiGA's `client_id`.
    pub client_id: String,
    /// The DiGA's registered display name.
    pub diga_name: String,
    /// The MIVs asked for (each one separately selectable).
    pub mivs: Vec<Miv>,
    /// Whether Device and DeviceMetric are asked for.
    pub devices: bool,
    /// The prescription's last day, if the DiGA stated it.
    pub prescription_end: Option<Date>,
    /// The consent's last possible day.
    pub consent_cap: Date,
    /// Whether the patient has logged in.
    pub logged_in: bool,
}

/// Why the consent page cannot go on (shown on the page, never redirected:
/// the request it would redirect to is not trustworthy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Unknown, used or expired request, or a wrong CSRF token.
    #[error("this authorization request is unknown, already used or expired")]
    InvalidRequest,
    /// The ticket was not accepted.
    #[error("the login ticket was not accepted (wrong, used or expired)")]
    LoginFailed,
    /// The decision form was malformed.
    #[error("{0}")]
    BadDecision(&'static str),
    /// The DiGA is not (or no longer) usable, or the registry is stale.
    #[error("the DiGA is not registered or not active in the DiGA directory")]
    Unregistered,
    /// HDDT was retired.
    #[error("HDDT is no longer supported by this Device Data Recorder")]
    Retired,
    /// Internal failure.
    #[error("internal error")]
    Internal,
}

/// The patient's decision on the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deny: the DiGA gets `access_denied`.
    Deny,
    /// Approve these MIVs, for `days` (when the DiGA stated no prescription end).
    Approve {
        /// The MIVs chosen (a subset of those asked for).
        mivs: Vec<Miv>,
        /// The period chosen, in days.
        days: Option<u32>,
    },
}

/// A pairing as the patient sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingView {
    /// The grant behind it.
    pub grant: GrantRowV1,
    /// The DiGA's display name, when the registry knows it.
    pub diga_name: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    /// Active, and ends within [`EXPIRY_WARNING_DAYS`]: the patient is warned.
    pub expires_soon: bool,
}

/// How long before its end a consent is shown as ending soon.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// What a renewal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The consent now lasts until then.
    Renewed(OffsetDateTime),
    /// The pairing has no live consent of this patient (expired, revoked,
    /// or not theirs): the DiGA must ask again.
    NoLiveConsent,
    /// The consent follows the DiGA's prescription end.
    PrescriptionBound,
}

/// A valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessContext {
    /// The claims.
    pub claims: AccessClaims,
    /// The patient (internal; never shown to the DiGA).
    pub patient_uid: String,
    /// The effective scopes (granted, consented and still authorized).
    pub scopes: ScopeSet,
}

/// Why an access token was refused (the RS error table's texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// Not a JWT signed by this server.
    #[error("Token is not a signed JWT")]
    NotSigned,
    /// Another issuer.
    #[error("Invalid token issuer")]
    Issuer,
    /// Another audience.
    #[error("Invalid token audience")]
    Audience,
    /// Expired.
    #[error("The access token expired")]
    Expired,
    /// Not valid yet (`nbf` in the future beyond the allowed skew).
    #[error("Token cannot be used yet")]
    NotYetValid,
    /// Revoked, consent ended or pairing gone.
    #[error("The access token was revoked or its consent ended")]
    Revoked,
    /// The presented certificate is not the token's DiGA's.
    #[error("The access token was not issued to this client")]
    WrongClient,
    /// Registry stale, retired, or the database failed.
    #[error("Service unavailable")]
    Unavailable,
}

/// The authorization server.
#[derive(Debug, Clone)]
pub struct AuthorizationServer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditTrail>,
    keys: TokenKeys,
    trust: TrustCache,
    policy: Arc<AuthorizationPolicy>,
    retired: Arc<RwLock<Option<(bool, OffsetDateTime)>>>,
    verified: Arc<RwLock<HashMap<[u8; 32], AccessClaims>>>,
}

/// Access tokens whose signature was checked, by SHA-256 of the token: a
/// DiGA sends the same token until it expires, and the ES256 verification
/// was a third of a request's cost. Only the signature check is skipped;
/// expiry, the client, the registry and the live grant are checked on every
/// request. Cleared when full.
const VERIFIED_TOKENS: usize = 50_000;

/// What a portal ticket's hash is prefixed with.
const PORTAL_TICKET_DOMAIN: &str = "portal:";

/// How long a node trusts its last reading of the retired switch.
const RETIRED_RECHECK: Duration = Duration::seconds(5);

fn hash(text: &str) -> Vec<u8> {
    sha256(text.as_bytes()).to_vec()
}

fn internal(error: impl std::fmt::Display) -> OAuthError {
    tracing::error!(%error, "authorization server failure");
    OAuthError::server_error()
}

const TICKET_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Normalizes a typed ticket: upper case, without separators.
fn normalize_ticket(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .take(64)
        .collect()
}

impl AuthorizationServer {
    /// The server over `store`, with its keys and the registry cache.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditTrail>,
        keys: TokenKeys,
        trust: TrustCache,
        policy: AuthorizationPolicy,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            keys,
            trust,
            policy: Arc::new(policy),
            retired: Arc::default(),
            verified: Arc::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &AuthorizationPolicy {
        &self.policy
    }

    /// The registry cache.
    pub fn trust(&self) -> &TrustCache {
        &self.trust
    }

    /// The keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    async fn audit(
        &self,
        actor: &str,
        subject: &str,
        event: &str,
        outcome: Outcome,
        detail: &[(&str, &str)],
    ) {
        let mut built = AuditDetail::new();
        for (key, value) in detail {
            built = match built.with(key, (*value).chars().take(200).collect::<String>()) {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(%error, "audit detail refused");
                    return;
                }
            };
        }
        let entry = AuditEvent::new(actor, subject, event, outcome).with_detail(built);
        if let Err(error) = self.audit.append(entry).await {
            tracing::error!(%error, event, "could not audit");
        }
    }

    /// Whether HDDT was retired (re-read from the database at most every
    /// five seconds: the switch is rare, the check is on every request; the
    /// grants it revokes end at once everywhere regardless).
    pub async fn is_retired(&self) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let cached = *self
            .retired
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((retired, read_at)) = cached
            && (retired || (now >= read_at && now - read_at < RETIRED_RECHECK))
        {
            return Ok(retired);
        }
        let retired = self.store.hddt_state(RETIRED_STATE).await?.is_some();
        *self
            .retired
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((retired, now));
        Ok(retired)
    }

    /// Retires HDDT (see [`retire`]).
    pub async fn retire(&self, actor: &str) -> Result<usize, StoreError> {
        let ended = retire(&*self.store, &self.audit, self.clock.now(), actor).await?;
        *self
            .retired
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((true, self.clock.now()));
        Ok(ended)
    }

    fn registry(&self) -> Result<Arc<DigaRegistry>, Stale> {
        self.trust.current(self.clock.now())
    }

    async fn refuse(&self, client: &str, step: &str, error: OAuthError) -> OAuthError {
        let actor = if client.is_empty() {
            "diga:-".to_owned()
        } else {
            format!("diga:{client}")
        };
        self.audit(
            &actor,
            "-",
            "hddt.pairing_failed",
            Outcome::Denied,
            &[
                ("step", step),
                ("error", error.error),
                ("reason", &error.error_description),
            ],
        )
        .await;
        error
    }

    async fn stale(&self, client: &str, step: &str, stale: Stale) -> OAuthError {
        let age = stale.age_secs.to_string();
        self.audit(
            &format!("diga:{client}"),
            "-",
            "hddt.registry_stale",
            Outcome::Denied,
            &[("step", step), ("age_secs", &age)],
        )
        .await;
        OAuthError::registry_unavailable()
    }

    /// Authenticates a DiGA at `/token` and `/revoke`: `client_id` names an
    /// active registry entry holding exactly this certificate.
    async fn client(
        &self,
        client_id: Option<&str>,
        certificate: &[u8],
        step: &str,
    ) -> Result<DigaRegistryEntry, OAuthError> {
        // Only a bounded prefix of a client-supplied value reaches the audit trail.
        let shown: String = client_id.unwrap_or_default().chars().take(40).collect();
        let text = shown.as_str();
        let registry = match self.registry() {
            Ok(registry) => registry,
            Err(stale) => return Err(self.stale(text, step, stale).await),
        };
        let Some(id) = DigaClientId::parse(text) else {
            return Err(self
                .refuse(text, step, OAuthError::unregistered_client())
                .await);
        };
        let Some(entry) = registry
            .get(&id)
            .filter(|entry| entry.status == DigaStatus::Active)
        else {
            return Err(self
                .refuse(text, step, OAuthError::unregistered_client())
                .await);
        };
        if !entry.has_certificate(certificate) {
            return Err(self
                .refuse(text, step, OAuthError::certificate_mismatch())
                .await);
        }
        Ok(entry.clone())
    }

    /// `POST /par`: checks and stores a pushed authorization request.
    pub async fn push(
        &self,
        form: &[(String, String)],
        certificate: &[u8],
    ) -> Result<PushedRequest, OAuthError> {
        let claimed = form
            .iter()
            .find(|(name, _)| name == "client_id")
            .map(|(_, value)| value.chars().take(40).collect::<String>())
            .unwrap_or_default();
        if self.is_retired().await.map_err(internal)? {
            return Err(OAuthError::retired());
        }
        let registry = match self.registry() {
            Ok(registry) => registry,
            Err(stale) => return Err(self.stale(&claimed, "par", stale).await),
        };
        let now = self.clock.now();
        let request = match validate_par(
            form,
            certificate,
            &registry,
            &self.policy.value_set_base,
            now.date(),
        ) {
            Ok(request) => request,
            Err(error) => return Err(self.refuse(&claimed, "par", error).await),
        };
        let stored = StoredRequest {
            client_id: request.client_id.to_string(),
            redirect_uri: request.redirect_uri.clone(),
            scope: request.scopes.to_text(&self.policy.value_set_base),
            code_challenge: request.code_challenge.clone(),
            state: request.state.clone(),
            prescription_end: request.prescription_end.map(|date| date.to_string()),
        };
        let request_uri = format!("urn:uuid:{}", Uid::generate());
        self.store
            .insert_authorization(&AuthorizationRowV1 {
                request_uri: request_uri.clone(),
                client_id: stored.client_id.clone(),
                request: serde_json::to_string(&stored).map_err(internal)?,
                created_at: now,
                expires_at: now + self.policy.request_uri_lifetime,
                opened_at: None,
                csrf_hash: None,
                interaction_expires_at: None,
                patient_uid: None,
                finished_at: None,
                outcome: None,
            })
            .await
            .map_err(internal)?;
        Ok(PushedRequest {
            request_uri,
            expires_in: self.policy.request_uri_lifetime.whole_seconds(),
        })
    }

    fn parse_stored(&self, row: &AuthorizationRowV1) -> Option<AuthorizationRequest> {
        let stored: StoredRequest = serde_json::from_str(&row.request).ok()?;
        Some(AuthorizationRequest {
            client_id: DigaClientId::parse(&stored.client_id)?,
            redirect_uri: stored.redirect_uri,
            scopes: ScopeSet::parse(&stored.scope, &self.policy.value_set_base).ok()?,
            code_challenge: stored.code_challenge,
            state: stored.state,
            prescription_end: stored.prescription_end.and_then(|text| {
                Date::parse(&text, &time::format_description::well_known::Iso8601::DATE).ok()
            }),
        })
    }

    fn view(
        &self,
        row: &AuthorizationRowV1,
        request: &AuthorizationRequest,
        csrf: &str,
        diga_name: String,
    ) -> ConsentView {
        let cap = (self.clock.now() + self.policy.max_consent).date();
        ConsentView {
            request_uri: row.request_uri.clone(),
            csrf: csrf.to_owned(),
            client_id: request.client_id.to_string(),
            diga_name,
            mivs: request.scopes.mivs(),
            devices: request.scopes.contains(SmartScope::Device)
                || request.scopes.contains(SmartScope::DeviceMetric),
            prescription_end: request.prescription_end,
            consent_cap: request.prescription_end.map_or(cap, |end| end.min(cap)),
            logged_in: row.patient_uid.is_some(),
        }
    }

    fn active_entry(&self, client: &DigaClientId) -> Result<DigaRegistryEntry, PageError> {
        let registry = self.registry().map_err(|_| PageError::Unregistered)?;
        registry
            .get(client)
            .filter(|entry| entry.status == DigaStatus::Active)
            .cloned()
            .ok_or(PageError::Unregistered)
    }

    /// `GET /authorize`: opens a pushed request, once, for the consent page.
    pub async fn open(&self, client_id: &str, request_uri: &str) -> Result<ConsentView, PageError> {
        if self.is_retired().await.map_err(|_| PageError::Internal)? {
            return Err(PageError::Retired);
        }
        let row = self
            .store
            .authorization(request_uri)
            .await
            .map_err(|_| PageError::Internal)?;
        let Some(mut row) = row.filter(|row| row.client_id == client_id) else {
            self.page_refused(client_id, "authorize", "unknown request")
                .await;
            return Err(PageError::InvalidRequest);
        };
        let request = self.parse_stored(&row).ok_or(PageError::Internal)?;
        let entry = self.active_entry(&request.client_id)?;
        let csrf = random_id(32).map_err(|_| PageError::Internal)?;
        let now = self.clock.now();
        let until = now + self.policy.interaction_lifetime;
        let opened = self
            .store
            .open_authorization(request_uri, client_id, &hash(&csrf), until, now)
            .await
            .map_err(|_| PageError::Internal)?;
        if !opened {
            self.page_refused(client_id, "authorize", "request used or expired")
                .await;
            return Err(PageError::InvalidRequest);
        }
        row.patient_uid = None;
        Ok(self.view(&row, &request, &csrf, entry.name))
    }

    async fn page_refused(&self, client_id: &str, step: &str, reason: &str) {
        let client: String = client_id.chars().take(40).collect();
        self.audit(
            &format!("diga:{client}"),
            "-",
            "hddt.pairing_failed",
            Outcome::Denied,
            &[("step", step), ("reason", reason)],
        )
        .await;
    }

    /// The open interaction if `csrf` is its token.
    async fn interaction(
        &self,
        request_uri: &str,
        csrf: &str,
    ) -> Result<(AuthorizationRowV1, AuthorizationRequest), PageError> {
        let row = self
            .store
            .authorization(request_uri)
            .await
            .map_err(|_| PageError::Internal)?
            .ok_or(PageError::InvalidRequest)?;
        let matches = row
            .csrf_hash
            .as_deref()
            .is_some_and(|stored| bool::from(stored.ct_eq(&hash(csrf))));
        let open = row.finished_at.is_none()
            && row
                .interaction_expires_at
                .is_some_and(|until| until > self.clock.now());
        if !matches || !open {
            return Err(PageError::InvalidRequest);
        }
        let request = self.parse_stored(&row).ok_or(PageError::Internal)?;
        Ok((row, request))
    }

    /// The consent page of an open interaction as it stands (e.g. to ask
    /// for the ticket again after a wrong one).
    pub async fn current_view(
        &self,
        request_uri: &str,
        csrf: &str,
    ) -> Result<ConsentView, PageError> {
        let (row, request) = self.interaction(request_uri, csrf).await?;
        let entry = self.active_entry(&request.client_id)?;
        Ok(self.view(&row, &request, csrf, entry.name))
    }

    /// The consent page's login: a ticket from the patient's own app.
    pub async fn login(
        &self,
        request_uri: &str,
        csrf: &str,
        ticket: &str,
    ) -> Result<ConsentView, PageError> {
        let (mut row, request) = self.interaction(request_uri, csrf).await?;
        let entry = self.active_entry(&request.client_id)?;
        let patient = self
            .store
            .authenticate_authorization(
                request_uri,
                &hash(csrf),
                &hash(&normalize_ticket(ticket)),
                self.clock.now(),
            )
            .await
            .map_err(|_| PageError::Internal)?;
        let Some(patient) = patient else {
            self.page_refused(request.client_id.as_str(), "login", "ticket refused")
                .await;
            return Err(PageError::LoginFailed);
        };
        row.patient_uid = Some(patient);
        Ok(self.view(&row, &request, csrf, entry.name))
    }

    /// The consent page's decision; returns the URL to redirect the browser to.
    pub async fn decide(
        &self,
        request_uri: &str,
        csrf: &str,
        decision: Decision,
    ) -> Result<String, PageError> {
        if self.is_retired().await.map_err(|_| PageError::Internal)? {
            return Err(PageError::Retired);
        }
        let (row, request) = self.interaction(request_uri, csrf).await?;
        let patient = row.patient_uid.clone().ok_or(PageError::InvalidRequest)?;
        let patient_uid: Uid = patient.parse().map_err(|_| PageError::Internal)?;
        self.active_entry(&request.client_id)?;
        let now = self.clock.now();
        let redirect = |pairs: &[(&str, &str)]| {
            let mut url =
                url::Url::parse(&request.redirect_uri).map_err(|_| PageError::Internal)?;
            {
                let mut query = url.query_pairs_mut();
                for (name, value) in pairs {
                    query.append_pair(name, value);
                }
                if let Some(state) = &request.state {
                    query.append_pair("state", state);
                }
                query.append_pair("iss", &self.policy.issuer);
            }
            Ok::<_, PageError>(url.to_string())
        };
        let client = request.client_id.to_string();
        let (mivs, days) = match decision {
            Decision::Deny => {
                let finished = self
                    .store
                    .finish_authorization(request_uri, &hash(csrf), None, now)
                    .await
                    .map_err(|_| PageError::Internal)?;
                if !finished {
                    return Err(PageError::InvalidRequest);
                }
                self.audit(
                    &patient,
                    &patient,
                    "hddt.pairing_denied",
                    Outcome::Success,
                    &[("client_id", &client)],
                )
                .await;
                return redirect(&[
                    ("error", "access_denied"),
                    ("error_description", "The patient denied the request"),
                ]);
            }
            Decision::Approve { mivs, days } => (mivs, days),
        };
        let asked = request.scopes.mivs();
        if mivs.is_empty() || mivs.iter().any(|miv| !asked.contains(miv)) {
            return Err(PageError::BadDecision(
                "choose at least one of the requested data types",
            ));
        }
        let (consent_until, basis) = match request.prescription_end {
            Some(end) => {
                let end_of_day = end
                    .next_day()
                    .unwrap_or(end)
                    .with_time(Time::MIDNIGHT)
                    .assume_utc();
                (
                    end_of_day.min(now + self.policy.max_consent),
                    "prescription",
                )
            }
            None => {
                let days =
                    days.ok_or(PageError::BadDecision("choose how long the consent lasts"))?;
                if days == 0 {
                    return Err(PageError::BadDecision(
                        "the consent must last at least a day",
                    ));
                }
                let asked = Duration::days(i64::from(days));
                (now + asked.min(self.policy.max_consent), "patient")
            }
        };
        let scopes = ScopeSet::of(
            mivs.iter().copied().map(SmartScope::Observation).chain(
                [SmartScope::Device, SmartScope::DeviceMetric]
                    .into_iter()
                    .filter(|scope| request.scopes.contains(*scope)),
            ),
        );
        let pairing_id = match self.keys.pairing_key().await {
            Ok(key) => key.derive(&request.client_id, patient_uid),
            Err(error) => {
                tracing::error!(%error, "pairing identifier");
                return redirect(&[
                    ("error", "server_error"),
                    ("error_description", "Failed to generate pairing identifier"),
                ]);
            }
        };
        let code = random_id(32).map_err(|_| PageError::Internal)?;
        let grant_id = Uid::generate().to_string();
        let approval = Approval {
            pairing: PairingRowV1 {
                pairing_id: pairing_id.to_string(),
                client_id: client.clone(),
                patient_uid: patient.clone(),
                created_at: now,
            },
            grant: GrantRowV1 {
                id: grant_id.clone(),
                pairing_id: pairing_id.to_string(),
                client_id: client.clone(),
                patient_uid: patient.clone(),
                scope: scopes.to_text(&self.policy.value_set_base),
                consent_until,
                consent_basis: basis.to_owned(),
                created_at: now,
                refresh_generation: 0,
                rotated_at: None,
                revoked_at: None,
                revoke_reason: None,
            },
            code: AuthorizationCodeRowV1 {
                code_hash: hash(&code),
                grant_id: grant_id.clone(),
                client_id: client.clone(),
                redirect_uri: request.redirect_uri.clone(),
                code_challenge: request.code_challenge.clone(),
                expires_at: now + self.policy.code_lifetime,
                used_at: None,
            },
        };
        let finished = self
            .store
            .finish_authorization(request_uri, &hash(csrf), Some(&approval), now)
            .await
            .map_err(|error| {
                tracing::error!(%error, "storing an approved consent failed");
                PageError::Internal
            })?;
        if !finished {
            return Err(PageError::InvalidRequest);
        }
        let until = consent_until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let scope_text = approval.grant.scope.clone();
        self.audit(
            &patient,
            &patient,
            "hddt.pairing",
            Outcome::Success,
            &[
                ("client_id", &client),
                ("pairing_id", pairing_id.as_str()),
                ("grant", &grant_id),
                ("scope", &scope_text),
                ("consent_until", &until),
                ("consent_basis", basis),
            ],
        )
        .await;
        redirect(&[("code", &code)])
    }

    /// `POST /token`.
    pub async fn token(
        &self,
        form: &[(String, String)],
        certificate: &[u8],
    ) -> Result<TokenResponse, OAuthError> {
        let form = single_values(form)?;
        if self.is_retired().await.map_err(internal)? {
            return Err(OAuthError::retired());
        }
        let entry = self
            .client(form.get("client_id"), certificate, "token")
            .await?;
        let client = entry.client_id.to_string();
        match form.get("grant_type") {
            Some("authorization_code") => self.redeem(&entry, &form).await,
            Some("refresh_token") => self.refresh(&entry, &form).await,
            None => Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_request("grant_type is required"),
                )
                .await),
            Some(_) => Err(self
                .refuse(&client, "token", OAuthError::unauthorized_client())
                .await),
        }
    }

    async fn redeem(
        &self,
        entry: &DigaRegistryEntry,
        form: &Form<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = entry.client_id.to_string();
        let (Some(code), Some(redirect_uri)) = (form.get("code"), form.get("redirect_uri")) else {
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_request("code and redirect_uri are required"),
                )
                .await);
        };
        let Some(verifier) = form.get("code_verifier") else {
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_request("code_verifier is required (PKCE)"),
                )
                .await);
        };
        let now = self.clock.now();
        let code_hash = hash(code);
        let row = self
            .store
            .authorization_code(&code_hash)
            .await
            .map_err(internal)?;
        let Some(row) = row.filter(|row| row.client_id == client) else {
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_grant("The authorization code is invalid or expired"),
                )
                .await);
        };
        if let Some(used_at) = row.used_at {
            if now - used_at > self.policy.reuse_grace {
                let ended = self
                    .store
                    .revoke_grants(GrantSelector::Grant(&row.grant_id), "code_reuse", now)
                    .await
                    .map_err(internal)?;
                if !ended.is_empty() {
                    self.audit(
                        &format!("diga:{client}"),
                        "-",
                        "hddt.unpairing",
                        Outcome::Success,
                        &[
                            ("reason", "authorization code reused"),
                            ("grant", &row.grant_id),
                        ],
                    )
                    .await;
                }
            }
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_grant("The authorization code was already used"),
                )
                .await);
        }
        if row.expires_at <= now {
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_grant("The authorization code is invalid or expired"),
                )
                .await);
        }
        if row.redirect_uri != redirect_uri {
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_grant(
                        "redirect_uri does not match the authorization request",
                    ),
                )
                .await);
        }
        if !is_code_verifier(verifier) || !verify_s256(verifier, &row.code_challenge) {
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_grant("PKCE verification failed"),
                )
                .await);
        }
        let Some(grant) = self
            .store
            .redeem_authorization_code(&code_hash, now)
            .await
            .map_err(internal)?
        else {
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_grant("The authorization code was already used"),
                )
                .await);
        };
        self.issue(entry, &grant).await
    }

    async fn refresh(
        &self,
        entry: &DigaRegistryEntry,
        form: &Form<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = entry.client_id.to_string();
        let invalid =
            || OAuthError::invalid_grant("The refresh token is invalid, expired or revoked");
        let Some(token) = form.get("refresh_token") else {
            return Err(self
                .refuse(
                    &client,
                    "refresh",
                    OAuthError::invalid_request("refresh_token is required"),
                )
                .await);
        };
        let claims: Option<RefreshClaims> = self
            .keys
            .verify(REFRESH_TOKEN_TYPE, token)
            .await
            .map_err(internal)?;
        let now = self.clock.now();
        let Some(claims) = claims.filter(|claims| {
            claims.iss == self.policy.issuer
                && claims.aud == self.policy.token_endpoint()
                && claims.exp > now.unix_timestamp()
                && claims.client_id == client
        }) else {
            return Err(self.refuse(&client, "refresh", invalid()).await);
        };
        let Some((grant_id, generation)) = claims.grant_and_generation() else {
            return Err(self.refuse(&client, "refresh", invalid()).await);
        };
        // The current token rotates in one statement; only a refusal reads
        // the grant to tell a lost race or response from a reused old token.
        if let Some(grant) = self
            .store
            .rotate_refresh_token(grant_id, generation, now)
            .await
            .map_err(internal)?
            .filter(|grant| grant.client_id == client)
        {
            return self.issue(entry, &grant).await;
        }
        let grant = self.store.grant(grant_id).await.map_err(internal)?;
        let Some(grant) =
            grant.filter(|grant| grant.client_id == client && grant.revoked_at.is_none())
        else {
            return Err(self.refuse(&client, "refresh", invalid()).await);
        };
        if generation < grant.refresh_generation {
            let rotated_at = grant.rotated_at.unwrap_or(grant.created_at);
            if now - rotated_at > self.policy.reuse_grace {
                let ended = self
                    .store
                    .revoke_grants(GrantSelector::Grant(grant_id), "refresh_reuse", now)
                    .await
                    .map_err(internal)?;
                if !ended.is_empty() {
                    self.audit(
                        &format!("diga:{client}"),
                        &grant.patient_uid,
                        "hddt.unpairing",
                        Outcome::Success,
                        &[
                            ("reason", "rotated-out refresh token reused"),
                            ("grant", grant_id),
                        ],
                    )
                    .await;
                }
            }
        }
        Err(self.refuse(&client, "refresh", invalid()).await)
    }

    /// The grant's scopes still covered by the DiGA's registry permissions.
    fn effective_scopes(&self, entry: &DigaRegistryEntry, grant: &GrantRowV1) -> Option<ScopeSet> {
        let granted = ScopeSet::parse(&grant.scope, &self.policy.value_set_base).ok()?;
        let kept: Vec<SmartScope> = granted
            .scopes()
            .iter()
            .copied()
            .filter(|scope| match scope {
                SmartScope::Observation(miv) => entry.mivs.contains(miv) && miv.is_supported(),
                _ => true,
            })
            .collect();
        kept.iter()
            .any(|scope| matches!(scope, SmartScope::Observation(_)))
            .then(|| ScopeSet::of(kept))
    }

    async fn issue(
        &self,
        entry: &DigaRegistryEntry,
        grant: &GrantRowV1,
    ) -> Result<TokenResponse, OAuthError> {
        let client = entry.client_id.to_string();
        let Some(scopes) = self.effective_scopes(entry, grant) else {
            return Err(self
                .refuse(
                    &client,
                    "token",
                    OAuthError::invalid_grant("The consent no longer covers any authorized data"),
                )
                .await);
        };
        let scope = scopes.to_text(&self.policy.value_set_base);
        let now = self.clock.now().unix_timestamp();
        let access = AccessClaims {
            iss: self.policy.issuer.clone(),
            sub: grant.pairing_id.clone(),
            aud: self.policy.resource_audience.clone(),
            exp: now + self.policy.access_lifetime.whole_seconds(),
            nbf: now,
            iat: now,
            jti: format!("{}.{}", grant.id, random_id(12).map_err(internal)?),
            client_id: client.clone(),
            scope: scope.clone(),
        };
        let refresh = RefreshClaims {
            iss: self.policy.issuer.clone(),
            sub: grant.pairing_id.clone(),
            aud: self.policy.token_endpoint(),
            exp: now + self.policy.refresh_lifetime.whole_seconds(),
            iat: now,
            jti: format!("{}.{}", grant.id, grant.refresh_generation),
            client_id: client,
        };
        Ok(TokenResponse {
            access_token: self
                .keys
                .sign(ACCESS_TOKEN_TYPE, &access)
                .await
                .map_err(internal)?,
            token_type: "Bearer",
            expires_in: self.policy.access_lifetime.whole_seconds(),
            refresh_token: self
                .keys
                .sign(REFRESH_TOKEN_TYPE, &refresh)
                .await
                .map_err(internal)?,
            scope,
            sub: grant.pairing_id.clone(),
        })
    }

    /// `POST /revoke` (RFC 7009): ends the token's grant (its refresh token,
    /// every access token and the consent) if the token is the caller's.
    /// Unknown or invalid tokens are fine (200).
    pub async fn revoke(
        &self,
        form: &[(String, String)],
        certificate: &[u8],
    ) -> Result<(), OAuthError> {
        let form = single_values(form)?;
        let entry = self
            .client(form.get("client_id"), certificate, "revoke")
            .await?;
        let client = entry.client_id.to_string();
        let Some(token) = form.get("token") else {
            return Err(self
                .refuse(
                    &client,
                    "revoke",
                    OAuthError::invalid_request("token is required"),
                )
                .await);
        };
        let refresh: Option<RefreshClaims> = self
            .keys
            .verify(REFRESH_TOKEN_TYPE, token)
            .await
            .map_err(internal)?;
        let found = match refresh {
            Some(claims) => claims
                .grant_and_generation()
                .map(|(grant, _)| (grant.to_owned(), claims.client_id.clone())),
            None => {
                let access: Option<AccessClaims> = self
                    .keys
                    .verify(ACCESS_TOKEN_TYPE, token)
                    .await
                    .map_err(internal)?;
                access.and_then(|claims| {
                    claims
                        .grant_id()
                        .map(|grant| (grant.to_owned(), claims.client_id.clone()))
                })
            }
        };
        let Some((grant_id, owner)) = found else {
            return Ok(());
        };
        if owner != client {
            self.audit(
                &format!("diga:{client}"),
                "-",
                "hddt.unpairing_failed",
                Outcome::Denied,
                &[("reason", "the token belongs to another DiGA")],
            )
            .await;
            return Err(OAuthError::invalid_request(
                "The token was not issued to this client",
            ));
        }
        let now = self.clock.now();
        let grant = self.store.grant(&grant_id).await.map_err(internal)?;
        let ended = self
            .store
            .revoke_grants(GrantSelector::Grant(&grant_id), "client", now)
            .await
            .map_err(internal)?;
        if let (false, Some(grant)) = (ended.is_empty(), grant) {
            self.audit(
                &format!("diga:{client}"),
                &grant.patient_uid,
                "hddt.unpairing",
                Outcome::Success,
                &[
                    ("reason", "revoked by the DiGA"),
                    ("pairing_id", &grant.pairing_id),
                ],
            )
            .await;
        }
        Ok(())
    }

    /// Makes a one-time login ticket for the consent page (for a patient
    /// logged in with a working credential). 20 characters, 100 bits.
    pub async fn issue_ticket(
        &self,
        patient_uid: &str,
    ) -> Result<(String, OffsetDateTime), StoreError> {
        self.issue_ticket_in(patient_uid, "").await
    }

    /// A one-time ticket for the patient portal (`participant_uid` may be a
    /// patient or an auditor). Its hash is domain-separated from consent
    /// tickets: neither works on the other's page.
    pub async fn issue_portal_ticket(
        &self,
        participant_uid: &str,
    ) -> Result<(String, OffsetDateTime), StoreError> {
        self.issue_ticket_in(participant_uid, PORTAL_TICKET_DOMAIN)
            .await
    }

    /// Takes a portal ticket; whose it was (`None`: unknown, used or expired).
    pub async fn redeem_portal_ticket(&self, ticket: &str) -> Result<Option<String>, StoreError> {
        let normalized = normalize_ticket(ticket);
        self.store
            .take_login_ticket(
                &hash(&format!("{PORTAL_TICKET_DOMAIN}{normalized}")),
                self.clock.now(),
            )
            .await
    }

    async fn issue_ticket_in(
        &self,
        patient_uid: &str,
        domain: &str,
    ) -> Result<(String, OffsetDateTime), StoreError> {
        let mut bytes = [0u8; 20];
        medvault_crypto::random_fill(&mut bytes)
            .map_err(|_| StoreError::Unavailable("random".to_owned()))?;
        let ticket: String = bytes
            .iter()
            .filter_map(|byte| TICKET_ALPHABET.get(usize::from(byte % 32)))
            .map(|byte| char::from(*byte))
            .collect();
        let now = self.clock.now();
        let expires_at = now + self.policy.ticket_lifetime;
        self.store
            .insert_login_ticket(&LoginTicketRowV1 {
                ticket_hash: hash(&format!("{domain}{ticket}")),
                patient_uid: patient_uid.to_owned(),
                created_at: now,
                expires_at,
            })
            .await?;
        let grouped = ticket
            .as_bytes()
            .chunks(5)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        Ok((grouped, expires_at))
    }

    /// The patient's pairings (every grant, newest first).
    pub async fn pairings(&self, patient_uid: &str) -> Result<Vec<PairingView>, StoreError> {
        let now = self.clock.now();
        let registry = self.registry().ok();
        let grants = self.store.grants_of_patient(patient_uid, 500).await?;
        Ok(grants
            .into_iter()
            .map(|grant| {
                let diga_name = registry.as_ref().and_then(|registry| {
                    DigaClientId::parse(&grant.client_id)
                        .and_then(|id| registry.get(&id).map(|entry| entry.name.clone()))
                });
                let status = if grant.revoked_at.is_some() {
                    "revoked"
                } else if grant.consent_until <= now {
                    "expired"
                } else {
                    "active"
                };
                let expires_soon = status == "active"
                    && grant.consent_until - now <= Duration::days(EXPIRY_WARNING_DAYS);
                PairingView {
                    grant,
                    diga_name,
                    status,
                    expires_soon,
                }
            })
            .collect())
    }

    /// The patient renews the live consent of a pairing (same Pairing ID,
    /// same scopes) for `days` more from now, capped at one year. A consent
    /// bounded by the DiGA's prescription end is not extended here: the DiGA
    /// asks again with the new prescription end.
    pub async fn renew(
        &self,
        patient_uid: &str,
        pairing_id: &str,
        days: u32,
    ) -> Result<Renewal, StoreError> {
        let now = self.clock.now();
        let live = self
            .store
            .grants_of_patient(patient_uid, 500)
            .await?
            .into_iter()
            .find(|grant| {
                grant.pairing_id == pairing_id
                    && grant.revoked_at.is_none()
                    && grant.consent_until > now
            });
        let Some(grant) = live else {
            return Ok(Renewal::NoLiveConsent);
        };
        if grant.consent_basis != "patient" {
            return Ok(Renewal::PrescriptionBound);
        }
        let until = now + Duration::days(i64::from(days.max(1))).min(self.policy.max_consent);
        if !self
            .store
            .renew_grant(&grant.id, patient_uid, until, now)
            .await?
        {
            return Ok(Renewal::NoLiveConsent);
        }
        let text = until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.audit(
            patient_uid,
            patient_uid,
            "hddt.consent_renewed",
            Outcome::Success,
            &[
                ("client_id", &grant.client_id),
                ("pairing_id", pairing_id),
                ("consent_until", &text),
            ],
        )
        .await;
        Ok(Renewal::Renewed(until))
    }

    /// The patient ends a pairing: every grant of it, at once. Returns
    /// whether the pairing was theirs.
    pub async fn unpair(&self, patient_uid: &str, pairing_id: &str) -> Result<bool, StoreError> {
        let pairing = self.store.pairing(pairing_id).await?;
        let Some(pairing) = pairing.filter(|pairing| pairing.patient_uid == patient_uid) else {
            self.audit(
                patient_uid,
                patient_uid,
                "hddt.unpairing_failed",
                Outcome::Denied,
                &[("reason", "no such pairing of this patient")],
            )
            .await;
            return Ok(false);
        };
        let ended = self
            .store
            .revoke_grants(
                GrantSelector::Pairing(pairing_id),
                "patient",
                self.clock.now(),
            )
            .await?;
        let count = ended.len().to_string();
        self.audit(
            patient_uid,
            patient_uid,
            "hddt.unpairing",
            Outcome::Success,
            &[
                ("reason", "revoked by the patient"),
                ("client_id", &pairing.client_id),
                ("pairing_id", pairing_id),
                ("grants_ended", &count),
            ],
        )
        .await;
        Ok(true)
    }

    /// Installs a freshly loaded registry and applies what changed to the
    /// grants: a DiGA that is inactive or no longer listed loses its grants
    /// once it has been so for `grace` (one broken poll cannot mass-revoke;
    /// meanwhile its requests are refused anyway), and an MIV no longer
    /// authorized for a DiGA is left out of every token at once and out of
    /// the stored consents once that has held for `grace`.
    pub async fn apply_registry(
        &self,
        registry: DigaRegistry,
        max_age: Duration,
        grace: Duration,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.trust.install(registry, now, max_age);
        let Ok(registry) = self.registry() else {
            return Ok(());
        };
        let mut clients: Vec<String> = self
            .store
            .live_grants(None, now)
            .await?
            .into_iter()
            .map(|grant| grant.client_id)
            .collect();
        clients.dedup();
        for (name, _, _) in self.store.hddt_states(ABSENT_PREFIX).await? {
            if let Some(client) = name.strip_prefix(ABSENT_PREFIX) {
                clients.push(client.to_owned());
            }
        }
        clients.sort();
        clients.dedup();
        for client in clients {
            let state_name = format!("{ABSENT_PREFIX}{client}");
            let entry = DigaClientId::parse(&client)
                .and_then(|id| registry.get(&id).cloned())
                .filter(|entry| entry.status == DigaStatus::Active);
            let Some(entry) = entry else {
                let since = match self.store.hddt_state(&state_name).await? {
                    Some((_, since)) => since,
                    None => {
                        self.store
                            .set_hddt_state(&state_name, Some("inactive or not listed"), now)
                            .await?;
                        now
                    }
                };
                if now - since >= grace {
                    let ended = self
                        .store
                        .revoke_grants(GrantSelector::Client(&client), "registry", now)
                        .await?;
                    let count = ended.len().to_string();
                    self.audit(
                        "registry",
                        "-",
                        "hddt.unpairing",
                        Outcome::Success,
                        &[
                            ("reason", "the DiGA is inactive or left the DiGA directory"),
                            ("client_id", &client),
                            ("grants_ended", &count),
                        ],
                    )
                    .await;
                    self.store.set_hddt_state(&state_name, None, now).await?;
                }
                continue;
            };
            self.store.set_hddt_state(&state_name, None, now).await?;
            for grant in self.store.live_grants(Some(&client), now).await? {
                // Tokens leave out an MIV no longer authorized at once
                // (`effective_scopes`); the stored consent ends only once the
                // change has held for the grace period, so one broken poll
                // cannot end consents for good.
                let narrowed = self
                    .effective_scopes(&entry, &grant)
                    .map(|kept| kept.to_text(&self.policy.value_set_base));
                let narrow_state = format!("{NARROW_PREFIX}{}", grant.id);
                if narrowed.as_deref() == Some(grant.scope.as_str()) {
                    self.store.set_hddt_state(&narrow_state, None, now).await?;
                    continue;
                }
                let since = match self.store.hddt_state(&narrow_state).await? {
                    Some((_, since)) => since,
                    None => {
                        self.store
                            .set_hddt_state(&narrow_state, Some("mivs withdrawn"), now)
                            .await?;
                        now
                    }
                };
                if now - since < grace {
                    continue;
                }
                self.store.set_hddt_state(&narrow_state, None, now).await?;
                let Some(kept) = self.effective_scopes(&entry, &grant) else {
                    self.store
                        .revoke_grants(GrantSelector::Grant(&grant.id), "registry", now)
                        .await?;
                    self.audit(
                        "registry",
                        &grant.patient_uid,
                        "hddt.unpairing",
                        Outcome::Success,
                        &[
                            (
                                "reason",
                                "no consented MIV is authorized for the DiGA any more",
                            ),
                            ("client_id", &client),
                            ("pairing_id", &grant.pairing_id),
                        ],
                    )
                    .await;
                    continue;
                };
                let text = kept.to_text(&self.policy.value_set_base);
                if text != grant.scope {
                    self.store.set_grant_scope(&grant.id, &text).await?;
                    self.audit(
                        "registry",
                        &grant.patient_uid,
                        "hddt.consent_narrowed",
                        Outcome::Success,
                        &[
                            ("reason", "an MIV is no longer authorized for the DiGA"),
                            ("client_id", &client),
                            ("pairing_id", &grant.pairing_id),
                            ("scope", &text),
                        ],
                    )
                    .await;
                }
            }
        }
        Ok(())
    }

    /// Checks an access token for the resource server: signature, issuer,
    /// audience, time, a live grant of a live pairing, the presented
    /// certificate's DiGA, and its current registry permissions.
    pub async fn validate_access(
        &self,
        token: &str,
        certificate: &[u8],
    ) -> Result<AccessContext, AccessError> {
        if self
            .is_retired()
            .await
            .map_err(|_| AccessError::Unavailable)?
        {
            return Err(AccessError::Unavailable);
        }
        let digest = sha256(token.as_bytes());
        let cached = self
            .verified
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&digest)
            .cloned();
        let claims: AccessClaims = match cached {
            Some(claims) => claims,
            None => {
                let claims: AccessClaims = self
                    .keys
                    .verify(ACCESS_TOKEN_TYPE, token)
                    .await
                    .map_err(|_| AccessError::Unavailable)?
                    .ok_or(AccessError::NotSigned)?;
                let mut verified = self
                    .verified
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if verified.len() >= VERIFIED_TOKENS {
                    verified.clear();
                }
                verified.insert(digest, claims.clone());
                claims
            }
        };
        if claims.iss != self.policy.issuer {
            return Err(AccessError::Issuer);
        }
        if claims.aud != self.policy.resource_audience {
            return Err(AccessError::Audience);
        }
        let now = self.clock.now();
        let seconds = now.unix_timestamp();
        if claims.exp <= seconds {
            return Err(AccessError::Expired);
        }
        if claims.nbf > seconds + 60 {
            return Err(AccessError::NotYetValid);
        }
        let registry = self.registry().map_err(|_| AccessError::Unavailable)?;
        let entry = DigaClientId::parse(&claims.client_id)
            .and_then(|id| registry.get(&id).cloned())
            .filter(|entry| entry.status == DigaStatus::Active)
            .ok_or(AccessError::Revoked)?;
        if !entry.has_certificate(certificate) {
            return Err(AccessError::WrongClient);
        }
        let grant_id = claims.grant_id().ok_or(AccessError::NotSigned)?;
        let grant = self
            .store
            .grant(grant_id)
            .await
            .map_err(|_| AccessError::Unavailable)?
            .filter(|grant| {
                grant.revoked_at.is_none()
                    && grant.consent_until > now
                    && grant.client_id == claims.client_id
                    && grant.pairing_id == claims.sub
            })
            .ok_or(AccessError::Revoked)?;
        let scopes = self
            .effective_scopes(&entry, &grant)
            .ok_or(AccessError::Revoked)?;
        Ok(AccessContext {
            patient_uid: grant.patient_uid,
            claims,
            scopes,
        })
    }
}

/// A form whose parameters appear at most once (RFC 6749 §3.2).
struct Form<'a>(&'a [(String, String)]);

impl<'a> Form<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads a form whose parameters appear at most once (RFC 6749 §3.2).
fn single_values(form: &[(String, String)]) -> Result<Form<'_>, OAuthError> {
    if form.len() > MAX_PARAMETERS || form.iter().any(|(_, value)| value.len() > MAX_VALUE_LEN) {
        return Err(OAuthError::invalid_request(
            "too many or too long parameters",
        ));
    }
    for (index, (name, _)) in form.iter().enumerate() {
        if form.iter().skip(index + 1).any(|(other, _)| other == name) {
            return Err(OAuthError::invalid_request(format!(
                "{} appears twice",
                name.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(Form(form))
}

impl From<KeyError> for OAuthError {
    fn from(error: KeyError) -> Self {
        internal(error)
    }
}
