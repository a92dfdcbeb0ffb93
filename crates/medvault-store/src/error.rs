//! The one error type of the storage layer, named for what the caller does next.

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key exists already (a unique constraint held). The
    /// caller decides: refuse the request, or re-read and retry.
    #[error("conflict: {0} already exists")]
    Conflict(&'static str),
    /// The database cannot be reached or did not answer in time. Retry later;
    /// the server answers 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database holds a schema newer than this program knows. Refuse to
    /// start: running old code against a new schema could corrupt data.
    #[error(
        "database schema version {found} is newer than this medvault knows ({known}); upgrade medvault"
    )]
    SchemaTooNew {
        /// The highest migration applied to the database.
        found: i64,
        /// The highest migration this build carries.
        known: i64,
    },
    /// Migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// A stored value does not have the shape its row type requires.
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    /// Any other database error (bad SQL, constraint other than uniqueness, ...).
    #[error("database error: {0}")]
    Database(String),
}
