//! Domain vocabulary shared by every medvault crate.
//!
//! This crate owns the types that name things in the source documents and the
//! [`Clock`](clock::Clock) through which all domain code learns the time. It does no
//! I/O, has no async code and derives no `serde` traits: wire and storage types
//! live elsewhere and are converted explicitly.

pub mod clock;
pub mod credential;
pub mod fingerprint;
pub mod hddt;
pub mod participant;

pub use clock::{Clock, ManualClock, SystemClock};
pub use credential::{Assurance, Email, InvalidEmail, WorkingCredentialKind};
pub use fingerprint::CertificateFingerprint;
pub use hddt::{DigaClientId, Miv, PairingId, ScopeError, ScopeSet, SmartScope};
pub use participant::{DisplayName, InstitutionKind, ParticipantKind, Uid};
