//! Accounts and PKI (spec 000): participants and the directory.
//!
//! This crate owns registration of patients, institutions and health care
//! professionals and the directory entry each gets: kind, Root Credential public
//! key and, for institutions and professionals only, a display name. Working
//! credentials, sessions and sealed documents build on it.
//!
//! Invariants: a UID is random and never reused (the store's key refuses a
//! second row); a patient's directory entry names nothing; every registration is
//! in the audit trail, with the UID as subject and no name in the detail.

mod directory;

pub use directory::{Directory, DirectoryEntry, Registration, RegistrationError};
