//! HDDT (§ 374a SGB V, gematik guide 1.0.1): the authorization server's
//! domain, first pieces. [`PairingIdKey`] derives the Pairing ID, the only
//! patient identifier a DiGA ever sees; [`MivValueSets`] holds the MIV
//! ValueSets (loaded from the guide's FHIR JSON) that scopes name and the
//! resource server expands; [`DigaRegistry`] is the DiGA-VZ (local-file
//! form) with the certificate registration checks
//! ([`check_client_certificate`]); [`Cached`] makes registry data fail
//! closed past its maximum age; [`validate_par`] checks a pushed
//! authorization request, [`verify_s256`] a PKCE verifier, and
//! [`authorization_server_metadata`] is the RFC 8414 document. The endpoints,
//! consent and tokens build on these.
//!
//! Invariants: a Pairing ID is a keyed hash (HMAC-SHA256 under a secret
//! 128-bit-or-longer key shared by all nodes) of the DiGA's `client_id` and
//! the patient's internal UID: stable per (DiGA, patient), distinct per
//! DiGA, and without the key nobody can link it to the UID. A ValueSet is
//! accepted only with the canonical URL of its MIV under the configured base,
//! `status` active, and at least one code.

mod authorization;
mod bfarm;
mod certificate;
mod error;
mod metadata;
mod pairing;
mod par;
mod pkce;
mod registry;
mod tokens;
mod valueset;

pub use authorization::{
    AccessContext, AccessError, AuthorizationPolicy, AuthorizationServer, ConsentView, Decision,
    EXPIRY_WARNING_DAYS, PageError, PairingView, PushedRequest, RETIRED_STATE, Renewal,
    TokenResponse, TrustCache, retire,
};
pub use bfarm::{
    BfarmPage, DIGA_ID_SYSTEM, HEALTH_APP_PROFILE, MIV_SET, TRUST_ATTRIBUTES, health_app_resource,
    read_bfarm_page,
};
pub use certificate::{
    CertificateError, CheckedCertificate, MIN_RSA_BITS, VALIDITY_DAYS, check_client_certificate,
};

pub use error::OAuthError;
pub use metadata::{Endpoints, authorization_server_metadata, scopes_supported};
pub use pairing::{PairingIdKey, PairingKeyError};
pub use par::{AuthorizationRequest, MAX_PARAMETERS, MAX_VALUE_LEN, validate_par};
pub use pkce::{is_code_verifier, is_s256_challenge, verify_s256};
pub use registry::{
    Cached, DigaRegistry, DigaRegistryEntry, DigaStatus, MAX_REGISTRY_BYTES, RegistryError, Stale,
};
pub use tokens::{
    ACCESS_TOKEN_TYPE, AccessClaims, KeyError, REFRESH_TOKEN_TYPE, RefreshClaims, TokenKeys,
};
pub use valueset::{MivValueSet, MivValueSets, ValueSetError};
