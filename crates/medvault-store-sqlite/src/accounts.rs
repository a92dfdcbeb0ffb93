//! [`AccountStore`] over SQLite.

use async_trait::async_trait;
use medvault_store::{
    AccountStore, CredentialKeyRowV1, LoginChallengeRowV1, NewWorkingCredential, ParticipantRowV1,
    PasswordRowV1, RemoveCredentialOutcome, SessionRowV1, StoreError, ThrottlePolicy,
    WorkingCredentialRowV1, from_unix_micros, to_unix_micros,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use crate::{SqliteStore, insert_participant_in, map_error};

const CREDENTIAL_COLUMNS: &str =
    "id, uid, kind, public_key, certificate, created_at_us, removed_at_us";
const KEY_COLUMNS: &str = "credential_id, slot, proof_hash, wrapped_root_key, wrapped_signing_key, ecdh_public_key, used_at_us";

fn optional_instant(micros: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    micros.map(from_unix_micros).transpose()
}

fn working_credential(row: &SqliteRow) -> Result<WorkingCredentialRowV1, StoreError> {
    Ok(WorkingCredentialRowV1 {
        id: row.try_get("id").map_err(map_error)?,
        uid: row.try_get("uid").map_err(map_error)?,
        kind: row.try_get("kind").map_err(map_error)?,
        public_key: row.try_get("public_key").map_err(map_error)?,
        certificate: row.try_get("certificate").map_err(map_error)?,
        created_at: from_unix_micros(row.try_get("created_at_us").map_err(map_error)?)?,
        removed_at: optional_instant(row.try_get("removed_at_us").map_err(map_error)?)?,
    })
}

fn credential_key(row: &SqliteRow) -> Result<CredentialKeyRowV1, StoreError> {
    Ok(CredentialKeyRowV1 {
        credential_id: row.try_get("credential_id").map_err(map_error)?,
        slot: row.try_get("slot").map_err(map_error)?,
        proof_hash: row.try_get("proof_hash").map_err(map_error)?,
        wrapped_root_key: row.try_get("wrapped_root_key").map_err(map_error)?,
        wrapped_signing_key: row.try_get("wrapped_signing_key").map_err(map_error)?,
        ecdh_public_key: row.try_get("ecdh_public_key").map_err(map_error)?,
        used_at: optional_instant(row.try_get("used_at_us").map_err(map_error)?)?,
    })
}

fn session(row: &SqliteRow) -> Result<SessionRowV1, StoreError> {
    Ok(SessionRowV1 {
        token_hash: row.try_get("token_hash").map_err(map_error)?,
        uid: row.try_get("uid").map_err(map_error)?,
        credential_id: row.try_get("credential_id").map_err(map_error)?,
        created_at: from_unix_micros(row.try_get("created_at_us").map_err(map_error)?)?,
        expires_at: from_unix_micros(row.try_get("expires_at_us").map_err(map_error)?)?,
        assurance: row.try_get("assurance").map_err(map_error)?,
        patient_credential_id: row.try_get("patient_credential_id").map_err(map_error)?,
    })
}

fn conflict(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| match map_error(error) {
        StoreError::Conflict(_) => StoreError::Conflict(what),
        other => other,
    }
}

async fn insert_credential_in(
    connection: &mut SqliteConnection,
    new: &NewWorkingCredential,
) -> Result<(), StoreError> {
    let credential = &new.credential;
    sqlx::query(
        "INSERT INTO working_credentials (id, format, uid, kind, public_key, certificate, created_at_us, removed_at_us)
         VALUES (?, 1, ?, ?, ?, ?, ?, NULL)",
    )
    .bind(&credential.id)
    .bind(&credential.uid)
    .bind(&credential.kind)
    .bind(&credential.public_key)
    .bind(&credential.certificate)
    .bind(to_unix_micros(credential.created_at))
    .execute(&mut *connection)
    .await
    .map_err(conflict("working credential"))?;
    for key in &new.keys {
        sqlx::query(
            "INSERT INTO credential_keys (credential_id, slot, format, proof_hash, wrapped_root_key, wrapped_signing_key, ecdh_public_key, used_at_us)
             VALUES (?, ?, 1, ?, ?, ?, ?, NULL)",
        )
        .bind(&credential.id)
        .bind(key.slot)
        .bind(&key.proof_hash)
        .bind(&key.wrapped_root_key)
        .bind(&key.wrapped_signing_key)
        .bind(&key.ecdh_public_key)
        .execute(&mut *connection)
        .await
        .map_err(conflict("credential key"))?;
    }
    if let Some(password) = &new.password {
        sqlx::query(
            "INSERT INTO passwords (email, credential_id, format, suite, password_file) VALUES (?, ?, 1, ?, ?)",
        )
        .bind(&password.email)
        .bind(&credential.id)
        .bind(password.suite)
        .bind(&password.password_file)
        .execute(&mut *connection)
        .await
        .map_err(conflict("email"))?;
    }
    Ok(())
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn register_participant(
        &self,
        participant: &ParticipantRowV1,
        credentials: &[NewWorkingCredential],
    ) -> Result<(), StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        insert_participant_in(&mut transaction, participant).await?;
        for credential in credentials {
            insert_credential_in(&mut transaction, credential).await?;
        }
        transaction.commit().await.map_err(map_error)
    }

    async fn add_working_credential(
        &self,
        credential: &NewWorkingCredential,
    ) -> Result<(), StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        insert_credential_in(&mut transaction, credential).await?;
        transaction.commit().await.map_err(map_error)
    }

    async fn working_credentials(
        &self,
        uid: &str,
    ) -> Result<Vec<WorkingCredentialRowV1>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM working_credentials WHERE uid = ? AND removed_at_us IS NULL ORDER BY created_at_us, id"
        )))
        .bind(uid)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(working_credential).collect()
    }

    async fn working_credential(
        &self,
        id: &str,
    ) -> Result<Option<WorkingCredentialRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM working_credentials WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(working_credential).transpose()
    }

    async fn remove_working_credential(
        &self,
        uid: &str,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<RemoveCredentialOutcome, StoreError> {
        // BEGIN IMMEDIATE: the count and the removal see no concurrent writer.
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        let active: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM working_credentials WHERE uid = ? AND removed_at_us IS NULL",
        )
        .bind(uid)
        .fetch_all(&mut *transaction)
        .await
        .map_err(map_error)?;
        if !active.iter().any(|active_id| active_id == id) {
            return Ok(RemoveCredentialOutcome::NotFound);
        }
        if active.len() <= 1 {
            return Ok(RemoveCredentialOutcome::LastCredential);
        }
        sqlx::query("UPDATE working_credentials SET removed_at_us = ? WHERE id = ?")
            .bind(to_unix_micros(at))
            .bind(id)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        for statement in [
            "DELETE FROM credential_keys WHERE credential_id = ?",
            "DELETE FROM passwords WHERE credential_id = ?",
            "DELETE FROM sessions WHERE credential_id = ?",
            "DELETE FROM login_challenges WHERE credential_id = ?",
        ] {
            sqlx::query(statement)
                .bind(id)
                .execute(&mut *transaction)
                .await
                .map_err(map_error)?;
        }
        transaction.commit().await.map_err(map_error)?;
        Ok(RemoveCredentialOutcome::Removed)
    }

    async fn credential_key(
        &self,
        credential_id: &str,
        slot: i64,
    ) -> Result<Option<CredentialKeyRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM credential_keys WHERE credential_id = ? AND slot = ?"
        )))
        .bind(credential_id)
        .bind(slot)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(credential_key).transpose()
    }

    async fn consume_credential_key(
        &self,
        credential_id: &str,
        slot: i64,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE credential_keys SET used_at_us = ? WHERE credential_id = ? AND slot = ? AND used_at_us IS NULL",
        )
        .bind(to_unix_micros(at))
        .bind(credential_id)
        .bind(slot)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(result.rows_affected() == 1)
    }

    async fn unused_credential_keys(&self, credential_id: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM credential_keys WHERE credential_id = ? AND used_at_us IS NULL",
        )
        .bind(credential_id)
        .fetch_one(&self.pool)
        .await
        .map_err(map_error)
    }

    async fn password_by_email(&self, email: &str) -> Result<Option<PasswordRowV1>, StoreError> {
        let row = sqlx::query(
            "SELECT email, credential_id, suite, password_file FROM passwords WHERE email = ?",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.map(|row| {
            Ok(PasswordRowV1 {
                email: row.try_get("email").map_err(map_error)?,
                credential_id: row.try_get("credential_id").map_err(map_error)?,
                suite: row.try_get("suite").map_err(map_error)?,
                password_file: row.try_get("password_file").map_err(map_error)?,
            })
        })
        .transpose()
    }

    async fn insert_session(&self, session: &SessionRowV1) -> Result<(), StoreError> {
        insert_session(&self.pool, session).await
    }

    async fn session(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<SessionRowV1>, StoreError> {
        let row = sqlx::query(
            "SELECT s.token_hash, s.uid, s.credential_id, s.created_at_us, s.expires_at_us,
                    s.assurance, s.patient_credential_id
             FROM sessions s JOIN working_credentials w ON w.id = s.credential_id
             LEFT JOIN patient_credentials p ON p.id = s.patient_credential_id
             WHERE s.token_hash = ? AND s.expires_at_us > ? AND w.removed_at_us IS NULL
               AND (s.patient_credential_id IS NULL OR (p.status = 'active' AND p.expires_at_us > ?))",
        )
        .bind(token_hash)
        .bind(to_unix_micros(now))
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(session).transpose()
    }

    async fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(result.rows_affected() == 1)
    }

    async fn insert_login_challenge(
        &self,
        challenge: &LoginChallengeRowV1,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO login_challenges (id, format, credential_id, purpose, throttle_key, state, expires_at_us) VALUES (?, 1, ?, ?, ?, ?, ?)",
        )
        .bind(&challenge.id)
        .bind(&challenge.credential_id)
        .bind(&challenge.purpose)
        .bind(&challenge.throttle_key)
        .bind(&challenge.state)
        .bind(to_unix_micros(challenge.expires_at))
        .execute(&self.pool)
        .await
        .map_err(conflict("login challenge"))?;
        Ok(())
    }

    async fn take_login_challenge(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<LoginChallengeRowV1>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM login_challenges WHERE id = ?
             RETURNING id, credential_id, purpose, throttle_key, state, expires_at_us",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let challenge = LoginChallengeRowV1 {
            id: row.try_get("id").map_err(map_error)?,
            credential_id: row.try_get("credential_id").map_err(map_error)?,
            purpose: row.try_get("purpose").map_err(map_error)?,
            throttle_key: row.try_get("throttle_key").map_err(map_error)?,
            state: row.try_get("state").map_err(map_error)?,
            expires_at: from_unix_micros(row.try_get("expires_at_us").map_err(map_error)?)?,
        };
        Ok((challenge.expires_at > now).then_some(challenge))
    }

    async fn purge_expired_logins(
        &self,
        now: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let now = to_unix_micros(now);
        let mut purged = 0;
        for (statement, bound) in [
            ("DELETE FROM sessions WHERE expires_at_us <= ?", now),
            ("DELETE FROM login_challenges WHERE expires_at_us <= ?", now),
            ("DELETE FROM account_requests WHERE expires_at_us <= ?", now),
            (
                "DELETE FROM login_throttle WHERE last_failure_us < ? AND locked_until_us <= ?",
                to_unix_micros(stale_before),
            ),
        ] {
            let mut query = sqlx::query(statement).bind(bound);
            if statement.contains("locked_until_us") {
                query = query.bind(now);
            }
            purged += query
                .execute(&self.pool)
                .await
                .map_err(map_error)?
                .rows_affected();
        }
        Ok(purged)
    }

    async fn reserve_login_attempt(
        &self,
        key: &str,
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
        policy: ThrottlePolicy,
    ) -> Result<Option<i64>, StoreError> {
        reserve_on(&self.pool, key, at, stale_before, policy).await
    }

    async fn reserve_login_attempts(
        &self,
        keys: &[(String, ThrottlePolicy)],
        at: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        for (key, policy) in keys {
            if reserve_on(&mut *transaction, key, at, stale_before, *policy)
                .await?
                .is_none()
            {
                // Dropping the transaction rolls back what was counted.
                return Ok(Some(key.clone()));
            }
        }
        transaction.commit().await.map_err(map_error)?;
        Ok(None)
    }

    async fn settle_login_attempt(&self, clear: &str, refund: &str) -> Result<(), StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        sqlx::query("DELETE FROM login_throttle WHERE key = ?")
            .bind(clear)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        sqlx::query("UPDATE login_throttle SET failures = MAX(failures - 1, 0) WHERE key = ?")
            .bind(refund)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)
    }

    async fn login_locked_until(
        &self,
        keys: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut latest: Option<i64> = None;
        for key in keys {
            let locked: Option<i64> = sqlx::query_scalar(
                "SELECT locked_until_us FROM login_throttle WHERE key = ? AND locked_until_us > ?",
            )
            .bind(key)
            .bind(to_unix_micros(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
            latest = latest.max(locked);
        }
        optional_instant(latest)
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_throttle WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }
}

/// The conditional upsert behind `reserve_login_attempt`, on any executor.
async fn reserve_on<'e, E>(
    executor: E,
    key: &str,
    at: OffsetDateTime,
    stale_before: OffsetDateTime,
    policy: ThrottlePolicy,
) -> Result<Option<i64>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let max_lock_us = i64::try_from(policy.max_lock.whole_microseconds()).unwrap_or(i64::MAX);
    sqlx::query_scalar(
        "INSERT INTO login_throttle (key, failures, last_failure_us, locked_until_us)
             VALUES (?1, 1, ?2, CASE WHEN 1 > ?4 THEN ?2 + MIN(?5, 1000000) ELSE 0 END)
             ON CONFLICT (key) DO UPDATE SET
                 failures = (CASE WHEN login_throttle.last_failure_us < ?3 THEN 1 ELSE login_throttle.failures + 1 END),
                 last_failure_us = ?2,
                 locked_until_us = CASE WHEN (CASE WHEN login_throttle.last_failure_us < ?3 THEN 1 ELSE login_throttle.failures + 1 END) > ?4
                     THEN ?2 + MIN(?5, (1 << MIN(20, (CASE WHEN login_throttle.last_failure_us < ?3 THEN 1 ELSE login_throttle.failures + 1 END) - ?4 - 1)) * 1000000)
                     ELSE login_throttle.locked_until_us END
             WHERE login_throttle.locked_until_us <= ?2
             RETURNING failures",
    )
    .bind(key)
    .bind(to_unix_micros(at))
    .bind(to_unix_micros(stale_before))
    .bind(policy.free)
    .bind(max_lock_us)
    .fetch_optional(executor)
    .await
    .map_err(map_error)
}

/// Stores a session row (on the pool, or inside a caller's transaction).
pub(crate) async fn insert_session<'e, E>(
    executor: E,
    session: &SessionRowV1,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO sessions (token_hash, format, uid, credential_id, created_at_us, expires_at_us, assurance, patient_credential_id)
         VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&session.token_hash)
    .bind(&session.uid)
    .bind(&session.credential_id)
    .bind(to_unix_micros(session.created_at))
    .bind(to_unix_micros(session.expires_at))
    .bind(&session.assurance)
    .bind(&session.patient_credential_id)
    .execute(executor)
    .await
    .map_err(conflict("session"))?;
    Ok(())
}
