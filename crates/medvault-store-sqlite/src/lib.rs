//! The embedded SQLite backend: one database file in the data directory.
//!
//! This crate owns the SQLite dialect of the schema (`migrations/`) and the
//! implementation of the `medvault-store` traits over an `sqlx` pool. The file
//! runs in WAL mode with `synchronous = FULL` (an acknowledged write survives a
//! crash of the process or the machine), foreign keys on and a busy timeout, so
//! that the pool's connections wait for each other instead of failing.
//!
//! Invariant: every write that returns `Ok` has been committed.

mod account_requests;
mod accounts;
mod devicedata;
mod documents;
mod hddt;
mod issuer_keys;
mod patient_credentials;
mod proofing;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use medvault_store::{
    AuditCheckpointRowV1, AuditEntryRowV1, AuditFilter, AuditStore, BackendKind,
    ClientCertificateRowV1, ClientCertificateStore, Migration, ParticipantRowV1, ParticipantStore,
    Store, StoreError, check_schema_not_newer, from_unix_micros, to_unix_micros,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

/// The migrations of the SQLite schema, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "audit trail and registered client certificates",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "participants and their directory entries",
        sql: include_str!("../migrations/0002_participants.sql"),
    },
    Migration {
        version: 3,
        description: "working credentials, passwords, sessions, login challenges and throttle",
        sql: include_str!("../migrations/0003_credentials.sql"),
    },
    Migration {
        version: 4,
        description: "connections and sealed documents",
        sql: include_str!("../migrations/0004_documents.sql"),
    },
    Migration {
        version: 5,
        description: "Account App requests",
        sql: include_str!("../migrations/0005_account_requests.sql"),
    },
    Migration {
        version: 6,
        description: "one active password, SuperPIN and TAN batch per participant",
        sql: include_str!("../migrations/0006_unique_credential_kinds.sql"),
    },
    Migration {
        version: 7,
        description: "identity proofing, credential codes, request replay cache",
        sql: include_str!("../migrations/0007_identity_proofing.sql"),
    },
    Migration {
        version: 8,
        description: "credential issuer keys",
        sql: include_str!("../migrations/0008_issuer_keys.sql"),
    },
    Migration {
        version: 9,
        description: "patient credentials, presentation nonces, session assurance",
        sql: include_str!("../migrations/0009_patient_credentials.sql"),
    },
    Migration {
        version: 10,
        description: "HDDT authorization server: server keys, authorizations, pairings, grants, codes",
        sql: include_str!("../migrations/0010_hddt.sql"),
    },
    Migration {
        version: 11,
        description: "HDDT device data: devices, device history, observations, upload batches",
        sql: include_str!("../migrations/0011_device_data.sql"),
    },
    Migration {
        version: 12,
        description: "HDDT accesses: reads per pairing, day and interaction",
        sql: include_str!("../migrations/0012_hddt_accesses.sql"),
    },
];

/// How long a connection waits for a lock held by another before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and migrates it.
    ///
    /// Refuses with [`StoreError::SchemaTooNew`] a file written by a newer medvault.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_with(options).await
    }

    /// Opens a database named by an `sqlite://` URL (as `--database` takes it).
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::Unavailable(format!("bad SQLite URL: {error}")))?
            .create_if_missing(true);
        Self::open_with(options).await
    }

    async fn open_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            // No ping before every use: it doubled the round trips of every
            // query. A connection that broke fails its next query, which
            // maps to `Unavailable` (503) and is dropped from the pool.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(map_error)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await.map_err(map_error)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS medvault_schema (
                version INTEGER PRIMARY KEY NOT NULL,
                description TEXT NOT NULL,
                applied_at_us INTEGER NOT NULL
            ) STRICT",
        )
        .execute(&mut *connection)
        .await
        .map_err(map_error)?;
        // BEGIN IMMEDIATE takes the write lock first, so two processes starting on
        // one file migrate one after the other.
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await
            .map_err(map_error)?;
        let outcome = apply_pending(&mut connection).await;
        let finish = if outcome.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        sqlx::raw_sql(finish)
            .execute(&mut *connection)
            .await
            .map_err(map_error)?;
        outcome
    }
}

async fn apply_pending(connection: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM medvault_schema")
        .fetch_one(&mut *connection)
        .await
        .map_err(map_error)?
        .try_get(0)
        .map_err(map_error)?;
    check_schema_not_newer(applied, MIGRATIONS)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "applying SQLite migration"
        );
        sqlx::raw_sql(migration.sql)
            .execute(&mut *connection)
            .await
            .map_err(|error| StoreError::Migration(format!("{}: {error}", migration.version)))?;
        sqlx::query(
            "INSERT INTO medvault_schema (version, description, applied_at_us) VALUES (?, ?, 0)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .execute(&mut *connection)
        .await
        .map_err(map_error)?;
    }
    Ok(())
}

/// Maps an sqlx error to what the caller does next.
pub(crate) fn map_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("row"),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("5" | "6" | "14")) => {
            // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CANTOPEN
            StoreError::Unavailable(error.to_string())
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(error.to_string())
        }
        _ => StoreError::Database(error.to_string()),
    }
}

fn audit_entry(row: &SqliteRow) -> Result<AuditEntryRowV1, StoreError> {
    Ok(AuditEntryRowV1 {
        seq: row.try_get("seq").map_err(map_error)?,
        recorded_at: from_unix_micros(row.try_get("recorded_at_us").map_err(map_error)?)?,
        actor: row.try_get("actor").map_err(map_error)?,
        subject: row.try_get("subject").map_err(map_error)?,
        event_type: row.try_get("event_type").map_err(map_error)?,
        outcome: row.try_get("outcome").map_err(map_error)?,
        detail: row.try_get("detail").map_err(map_error)?,
        prev_hash: row.try_get("prev_hash").map_err(map_error)?,
        entry_hash: row.try_get("entry_hash").map_err(map_error)?,
    })
}

fn audit_checkpoint(row: &SqliteRow) -> Result<AuditCheckpointRowV1, StoreError> {
    Ok(AuditCheckpointRowV1 {
        number: row.try_get("number").map_err(map_error)?,
        kind: row.try_get("kind").map_err(map_error)?,
        seq: row.try_get("seq").map_err(map_error)?,
        entry_hash: row.try_get("entry_hash").map_err(map_error)?,
        created_at: from_unix_micros(row.try_get("created_at_us").map_err(map_error)?)?,
        prev_hash: row.try_get("prev_hash").map_err(map_error)?,
        key_id: row.try_get("key_id").map_err(map_error)?,
        signature: row.try_get("signature").map_err(map_error)?,
    })
}

fn client_certificate(row: &SqliteRow) -> Result<ClientCertificateRowV1, StoreError> {
    Ok(ClientCertificateRowV1 {
        fingerprint: row.try_get("fingerprint").map_err(map_error)?,
        der: row.try_get("der").map_err(map_error)?,
        owner: row.try_get("owner").map_err(map_error)?,
        registered_at: from_unix_micros(row.try_get("registered_at_us").map_err(map_error)?)?,
    })
}

const AUDIT_COLUMNS: &str =
    "seq, recorded_at_us, actor, subject, event_type, outcome, detail, prev_hash, entry_hash";

#[async_trait]
impl AuditStore for SqliteStore {
    async fn last_audit_entry(&self) -> Result<Option<AuditEntryRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_entries ORDER BY seq DESC LIMIT 1"
        )))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(audit_entry).transpose()
    }

    async fn insert_audit_entry(&self, entry: &AuditEntryRowV1) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_entries (seq, format, recorded_at_us, actor, subject, event_type, outcome, detail, prev_hash, entry_hash)
             VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.seq)
        .bind(to_unix_micros(entry.recorded_at))
        .bind(&entry.actor)
        .bind(&entry.subject)
        .bind(&entry.event_type)
        .bind(&entry.outcome)
        .bind(&entry.detail)
        .bind(&entry.prev_hash)
        .bind(&entry.entry_hash)
        .execute(&self.pool)
        .await
        .map_err(|error| match map_error(error) {
            StoreError::Conflict(_) => StoreError::Conflict("audit entry"),
            other => other,
        })?;
        Ok(())
    }

    async fn audit_entries(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntryRowV1>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_entries WHERE 1 = 1"
        ));
        if let Some(subject) = &filter.subject {
            query.push(" AND subject = ").push_bind(subject.clone());
        }
        if let Some(event_type) = &filter.event_type {
            query
                .push(" AND event_type = ")
                .push_bind(event_type.clone());
        }
        if let Some(from) = filter.from {
            query
                .push(" AND recorded_at_us >= ")
                .push_bind(to_unix_micros(from));
        }
        if let Some(until) = filter.until {
            query
                .push(" AND recorded_at_us < ")
                .push_bind(to_unix_micros(until));
        }
        if let Some(after_seq) = filter.after_seq {
            query.push(" AND seq > ").push_bind(after_seq);
        }
        query
            .push(" ORDER BY seq ASC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter().map(audit_entry).collect()
    }

    async fn insert_audit_checkpoint(
        &self,
        checkpoint: &AuditCheckpointRowV1,
    ) -> Result<(), StoreError> {
        insert_checkpoint(&self.pool, checkpoint).await
    }

    async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpointRowV1>, StoreError> {
        let rows = sqlx::query(
            "SELECT number, kind, seq, entry_hash, created_at_us, prev_hash, key_id, signature FROM audit_checkpoints ORDER BY number ASC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(audit_checkpoint).collect()
    }

    async fn purge_audit_entries_through(
        &self,
        checkpoint: &AuditCheckpointRowV1,
    ) -> Result<u64, StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        if let Err(error) = insert_checkpoint(&mut *transaction, checkpoint).await {
            transaction.rollback().await.map_err(map_error)?;
            return Err(error);
        }
        let deleted = sqlx::query("DELETE FROM audit_entries WHERE seq <= ?")
            .bind(checkpoint.seq)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?
            .rows_affected();
        transaction.commit().await.map_err(map_error)?;
        Ok(deleted)
    }
}

async fn insert_checkpoint<'e, E>(
    executor: E,
    checkpoint: &AuditCheckpointRowV1,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query(
        "INSERT INTO audit_checkpoints (number, format, kind, seq, entry_hash, created_at_us, prev_hash, key_id, signature)
         VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(checkpoint.number)
    .bind(&checkpoint.kind)
    .bind(checkpoint.seq)
    .bind(&checkpoint.entry_hash)
    .bind(to_unix_micros(checkpoint.created_at))
    .bind(&checkpoint.prev_hash)
    .bind(&checkpoint.key_id)
    .bind(&checkpoint.signature)
    .execute(executor)
    .await
    .map_err(|error| match map_error(error) {
        StoreError::Conflict(_) => StoreError::Conflict("audit checkpoint"),
        other => other,
    })?;
    Ok(())
}

#[async_trait]
impl ClientCertificateStore for SqliteStore {
    async fn insert_client_certificate(
        &self,
        certificate: &ClientCertificateRowV1,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO client_certificates (fingerprint, format, der, owner, registered_at_us) VALUES (?, 1, ?, ?, ?)",
        )
        .bind(&certificate.fingerprint)
        .bind(&certificate.der)
        .bind(&certificate.owner)
        .bind(to_unix_micros(certificate.registered_at))
        .execute(&self.pool)
        .await
        .map_err(|error| match map_error(error) {
            StoreError::Conflict(_) => StoreError::Conflict("client certificate"),
            other => other,
        })?;
        Ok(())
    }

    async fn remove_client_certificate(&self, fingerprint: &[u8]) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM client_certificates WHERE fingerprint = ?")
            .bind(fingerprint)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn client_certificate(
        &self,
        fingerprint: &[u8],
    ) -> Result<Option<ClientCertificateRowV1>, StoreError> {
        let row = sqlx::query(
            "SELECT fingerprint, der, owner, registered_at_us FROM client_certificates WHERE fingerprint = ?",
        )
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(client_certificate).transpose()
    }

    async fn client_certificates(&self) -> Result<Vec<ClientCertificateRowV1>, StoreError> {
        let rows = sqlx::query(
            "SELECT fingerprint, der, owner, registered_at_us FROM client_certificates ORDER BY fingerprint ASC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(client_certificate).collect()
    }
}

fn participant(row: &SqliteRow) -> Result<ParticipantRowV1, StoreError> {
    Ok(ParticipantRowV1 {
        uid: row.try_get("uid").map_err(map_error)?,
        kind: row.try_get("kind").map_err(map_error)?,
        display_name: row.try_get("display_name").map_err(map_error)?,
        root_public_key: row.try_get("root_public_key").map_err(map_error)?,
        root_key_certificate: row.try_get("root_key_certificate").map_err(map_error)?,
        registered_at: from_unix_micros(row.try_get("registered_at_us").map_err(map_error)?)?,
    })
}

/// Inserts a participant on `connection` (alone or inside a registration's transaction).
pub(crate) async fn insert_participant_in(
    connection: &mut sqlx::SqliteConnection,
    participant: &ParticipantRowV1,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO participants (uid, format, kind, display_name, root_public_key, root_key_certificate, registered_at_us)
         VALUES (?, 1, ?, ?, ?, ?, ?)",
    )
    .bind(&participant.uid)
    .bind(&participant.kind)
    .bind(&participant.display_name)
    .bind(&participant.root_public_key)
    .bind(&participant.root_key_certificate)
    .bind(to_unix_micros(participant.registered_at))
    .execute(&mut *connection)
    .await
    .map_err(|error| match map_error(error) {
        StoreError::Conflict(_) => StoreError::Conflict("participant"),
        other => other,
    })?;
    Ok(())
}

#[async_trait]
impl ParticipantStore for SqliteStore {
    async fn insert_participant(&self, participant: &ParticipantRowV1) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await.map_err(map_error)?;
        insert_participant_in(&mut connection, participant).await
    }

    async fn participant(&self, uid: &str) -> Result<Option<ParticipantRowV1>, StoreError> {
        let row = sqlx::query(
            "SELECT uid, kind, display_name, root_public_key, root_key_certificate, registered_at_us FROM participants WHERE uid = ?",
        )
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(participant).transpose()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT COALESCE(MAX(version), 0) FROM medvault_schema")
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?
            .try_get(0)
            .map_err(map_error)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
