//! The Patient Credential (spec 003), the server's half: identity proofing by
//! an institution and the one-time authorization code it yields; the checks
//! on a device's credential request; issuance of the JWT VC under the
//! institution's issuer key; status lists (revocation, suspension); the
//! verifier; and the IAL2 login by presentation.
//!
//! Invariants: a proofing record names method, evidence type, who and when,
//! never a copy or number of the identity document; a code is stored hashed,
//! bound to one patient, works once and expires (10 minutes by default); a
//! request's `jti` is accepted once while the request could be valid, across
//! all nodes (the replay cache is in the database); a request is accepted
//! only with `alg` ES256, signed by the key its `sub` names (and `jwk`, if
//! present, names the same key), from a trusted user agent, within a bounded
//! time window; issuance uses the code, records the `jti` and stores the
//! credential in one transaction; a credential holds nothing that names the
//! patient; a verifier trusts only institutions registered here and reads
//! the status from the database (revocation is effective at once); a
//! presentation nonce works once, for its account.

mod did_web;
mod issuance;
mod issuer;
mod presentation;
mod proofing;
mod request;
mod status_list;
mod vc;
mod verify;

pub use did_web::DidWeb;
pub use issuance::{
    CREDENTIAL_TYP, CredentialIssuer, CredentialStatus, IssuancePolicy, IssueError,
    IssuedCredential,
};
pub use issuer::{IssuerKeyError, IssuerKeys};
pub use presentation::{
    MAX_PRESENTATION_LIFETIME, PRESENTATION_TYP, PresentError, PresentationChallenge,
    PresentationLogin,
};
pub use proofing::{EvidenceType, IdentityProofing, IssuedCode, ProofingError, ProofingMethod};
pub use request::{
    CredentialRequest, KeyProtection, RequestClaims, RequestError, RequestPolicy,
    verify_credential_request,
};
pub use status_list::{
    STATUS_LIST_BITS, StatusListError, StatusPurpose, encode_status_list, status_list_bit,
};
pub use vc::{
    CREDENTIAL_CONTEXT, CREDENTIAL_TYPES, CredentialBody, CredentialSubject,
    PatientCredentialClaims, Physician, StatusEntry, audience_contains,
};
pub use verify::{CredentialVerifier, MAX_CREDENTIAL_LEN, VerifiedCredential, VerifyError};
