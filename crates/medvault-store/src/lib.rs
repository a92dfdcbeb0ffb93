//! The storage contract of medvault.
//!
//! This crate owns the storage traits (one per aggregate), the versioned row types
//! that cross them, the error type every backend maps its failures to, and the
//! [`conformance`] suite that every backend must pass. It knows no SQL: the
//! backends (`medvault-store-sqlite`, `medvault-store-postgres`) do, and callers
//! hold an `Arc<dyn Store>` and never branch on which backend is behind it.
//!
//! Rows are plain data with a `V1` suffix: when a row's shape changes, a `V2`
//! appears next to it and the backends convert, so that stored data can evolve
//! without rewriting history (an audit entry's hash covers its format version).

pub mod account_requests;
pub mod accounts;
pub mod audit;
pub mod client_certificates;
pub mod conformance;
pub mod devicedata;
pub mod documents;
mod error;
pub mod hddt;
pub mod issuer_keys;
pub mod participants;
pub mod patient_credentials;
pub mod proofing;

use async_trait::async_trait;

pub use account_requests::{AccountRequestRowV1, AccountRequestStore};
pub use accounts::{
    AccountStore, CredentialKeyRowV1, LoginChallengeRowV1, NewWorkingCredential, PasswordRowV1,
    RemoveCredentialOutcome, SessionRowV1, ThrottlePolicy, WorkingCredentialRowV1,
};
pub use audit::{AuditCheckpointRowV1, AuditEntryRowV1, AuditFilter, AuditStore};
pub use client_certificates::{ClientCertificateRowV1, ClientCertificateStore};
pub use devicedata::{
    AccessCountV1, ChunkSamples, DeviceDataStore, DeviceQuery, DeviceRowV1, DeviceSync,
    IngestBatch, IngestOutcome, ObservationKind, ObservationQuery, ObservationRowV1, RangeFilter,
    RangeOp, SqlValue, ValueFilter,
};
pub use documents::{
    ConnectionChange, ConnectionRowV1, DocumentInsert, DocumentRowV1, DocumentStore,
    ReceivedDocumentV1, connection_pair,
};
pub use error::StoreError;
pub use hddt::{
    Approval, AuthorizationCodeRowV1, AuthorizationRowV1, GrantRowV1, GrantSelector, HddtStore,
    LoginTicketRowV1, PairingRowV1, ServerKeyRowV1,
};
pub use issuer_keys::{IssuerKeyRowV1, IssuerKeyStore};
pub use participants::{ParticipantRowV1, ParticipantStore};
pub use patient_credentials::{CredentialIssue, PatientCredentialRowV1, PatientCredentialStore};
pub use proofing::{CredentialCodeRowV1, ProofingRowV1, ProofingStore};

/// Which database engine a store talks to (for logs and `/ready`, never for branching).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The embedded single-file default.
    Sqlite,
    /// The shared multi-node backend.
    Postgres,
}

impl BackendKind {
    /// A short lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Everything medvault keeps durably, behind one object.
///
/// Each aggregate has its own trait; `Store` joins them so the server can hand
/// one `Arc<dyn Store>` to every domain service.
#[async_trait]
pub trait Store:
    AuditStore
    + ClientCertificateStore
    + ParticipantStore
    + AccountStore
    + DocumentStore
    + AccountRequestStore
    + ProofingStore
    + IssuerKeyStore
    + PatientCredentialStore
    + HddtStore
    + DeviceDataStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Which engine this is.
    fn backend(&self) -> BackendKind;

    /// Checks that the database answers a trivial query (readiness probe).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The highest schema migration applied to the database.
    async fn schema_version(&self) -> Result<i64, StoreError>;

    /// Closes the connection pool, waiting for checked-out connections to return.
    async fn close(&self);
}

/// Microseconds since the Unix epoch: how every backend stores an instant.
///
/// Integers compare and index the same way in SQLite and PostgreSQL; the
/// conversion lives here so both backends agree on it.
pub fn to_unix_micros(at: time::OffsetDateTime) -> i64 {
    let nanos = at.unix_timestamp_nanos() / 1_000;
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// The inverse of [`to_unix_micros`].
pub fn from_unix_micros(micros: i64) -> Result<time::OffsetDateTime, StoreError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {micros} out of range")))
}

/// One schema migration: applied in order of `version`, each in its own transaction.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing, starting at 1.
    pub version: i64,
    /// What the migration does, for the operator.
    pub description: &'static str,
    /// The SQL, in the backend's dialect (may hold several statements).
    pub sql: &'static str,
}

/// Refuses a database whose schema is newer than the newest of `known`.
///
/// Called by every backend before it migrates: old code must not write to a
/// schema it does not understand.
pub fn check_schema_not_newer(applied: i64, known: &[Migration]) -> Result<(), StoreError> {
    let newest_known = known.iter().map(|m| m.version).max().unwrap_or(0);
    if applied > newest_known {
        return Err(StoreError::SchemaTooNew {
            found: applied,
            known: newest_known,
        });
    }
    Ok(())
}
