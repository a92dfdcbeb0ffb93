//! The Patient Credential (spec 003), the server's half: identity proofing by
//! an institution, the one-time authorization code it yields, and the checks
//! on a device's credential request. Issuance of the JWT VC, the issuer keys,
//! verification, revocation and the IAL2 login build on these.
//!
//! Invariants: a proofing record names method, evidence type, who and when,
//! never a copy or number of the identity document; a code is stored hashed,
//! bound to one patient, works once and expires (10 minutes by default); a
//! request's `jti` is accepted once while the request could be valid, across
//! all nodes (the replay cache is in the database); a request is accepted
//! only with `alg` ES256, signed by the key its `sub` names (and `jwk`, if
//! present, names the same key), from a trusted user agent, within a bounded
//! time window.

mod issuer;
mod proofing;
mod request;

pub use issuer::{IssuerKeyError, IssuerKeys};
pub use proofing::{EvidenceType, IdentityProofing, IssuedCode, ProofingError, ProofingMethod};
pub use request::{
    CredentialRequest, KeyProtection, RequestClaims, RequestError, RequestPolicy,
    verify_credential_request,
};
