//! Accounts and PKI (spec 000): participants, the directory, working
//! credentials, logins and sessions.
//!
//! This crate owns registration of patients, institutions and health care
//! professionals with their first working credentials ([`Directory`]), the
//! directory entry each gets (kind, Root Credential public key and
//! certificate, working-credential certificates and, for institutions and
//! professionals only, a display name), the checks on an enrolled credential
//! ([`Enrolment`]), and every login path, session and credential change
//! ([`Accounts`]), connections between participants and the sealed documents
//! they exchange ([`Exchange`]).
//!
//! Invariants: a UID is never reused (the store's key refuses a second row); a
//! patient's directory entry names nothing; a registration stores the
//! participant and its credentials together or not at all; the server stores
//! only wrapped keys it cannot open and hashes of session tokens and code
//! proofs; every registration, login, logout and credential change is in the
//! audit trail, with no name, email or secret in the detail.

mod account_app;
mod directory;
mod documents;
mod enrolment;
mod export;
mod login;
mod throttle;

pub use account_app::{
    AccountApp, AccountAppError, AccountResult, NewRequest, REQUEST_LIFETIME, RequestPage,
    RequestPurpose,
};
pub use directory::{Directory, DirectoryEntry, Registration, RegistrationError};
pub use documents::{
    Connection, Exchange, ExchangeError, MAX_LIST, MAX_RECIPIENTS, MAX_SEALED_HEADER,
    MAX_SEALED_KEY, NewDocument,
};
pub use enrolment::{Enrolment, EnrolmentError, MAX_TANS, PASSWORD_SUITE, PasswordEnrolment};
pub use export::{Export, MAX_EXPORT_AUDIT, MAX_EXPORT_DOCUMENTS};
pub use login::{
    Accounts, CredentialError, CredentialInfo, LoginError, LoginGrant, LoginPolicy,
    SESSION_TOKEN_PREFIX, Session, SessionToken,
};
pub use medvault_crypto::EnrolmentSlot;
