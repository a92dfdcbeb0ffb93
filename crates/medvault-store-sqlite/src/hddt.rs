//! [`HddtStore`] over SQLite.

use async_trait::async_trait;
use medvault_store::{
    Approval, AuthorizationCodeRowV1, AuthorizationRowV1, GrantRowV1, GrantSelector, HddtStore,
    LoginTicketRowV1, PairingRowV1, ServerKeyRowV1, StoreError, from_unix_micros, to_unix_micros,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::{SqliteStore, map_error};

/// `SELECT` of a grant with its patient, then `$rest`.
macro_rules! select_grant {
    ($rest:literal) => {
        concat!("SELECT g.id, g.pairing_id, g.client_id, p.patient_uid, g.scope, g.consent_until_us, g.consent_basis, g.created_at_us, g.refresh_generation, g.rotated_at_us, g.revoked_at_us, g.revoke_reason FROM hddt_grants g JOIN hddt_pairings p ON p.pairing_id = g.pairing_id ", $rest)
    };
}

/// `RETURNING` of an updated grant with its patient.
macro_rules! returning_grant {
    () => {
        "RETURNING id, pairing_id, client_id, (SELECT p.patient_uid FROM hddt_pairings p WHERE p.pairing_id = hddt_grants.pairing_id) AS patient_uid, scope, consent_until_us, consent_basis, created_at_us, refresh_generation, rotated_at_us, revoked_at_us, revoke_reason"
    };
}

macro_rules! select_authorization {
    ($rest:literal) => {
        concat!("SELECT request_uri, client_id, request, created_at_us, expires_at_us, opened_at_us, csrf_hash, interaction_expires_at_us, patient_uid, finished_at_us, outcome FROM hddt_authorizations ", $rest)
    };
}

fn optional_instant(row: &SqliteRow, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    let micros: Option<i64> = row.try_get(column).map_err(map_error)?;
    micros.map(from_unix_micros).transpose()
}

fn instant(row: &SqliteRow, column: &str) -> Result<OffsetDateTime, StoreError> {
    from_unix_micros(row.try_get(column).map_err(map_error)?)
}

fn server_key(row: &SqliteRow) -> Result<ServerKeyRowV1, StoreError> {
    Ok(ServerKeyRowV1 {
        kid: row.try_get("kid").map_err(map_error)?,
        purpose: row.try_get("purpose").map_err(map_error)?,
        public_jwk: row.try_get("public_jwk").map_err(map_error)?,
        wrapped_secret: row.try_get("wrapped_secret").map_err(map_error)?,
        created_at: instant(row, "created_at_us")?,
        retired_at: optional_instant(row, "retired_at_us")?,
        publish_until: instant(row, "publish_until_us")?,
    })
}

fn authorization(row: &SqliteRow) -> Result<AuthorizationRowV1, StoreError> {
    Ok(AuthorizationRowV1 {
        request_uri: row.try_get("request_uri").map_err(map_error)?,
        client_id: row.try_get("client_id").map_err(map_error)?,
        request: row.try_get("request").map_err(map_error)?,
        created_at: instant(row, "created_at_us")?,
        expires_at: instant(row, "expires_at_us")?,
        opened_at: optional_instant(row, "opened_at_us")?,
        csrf_hash: row.try_get("csrf_hash").map_err(map_error)?,
        interaction_expires_at: optional_instant(row, "interaction_expires_at_us")?,
        patient_uid: row.try_get("patient_uid").map_err(map_error)?,
        finished_at: optional_instant(row, "finished_at_us")?,
        outcome: row.try_get("outcome").map_err(map_error)?,
    })
}

fn grant(row: &SqliteRow) -> Result<GrantRowV1, StoreError> {
    Ok(GrantRowV1 {
        id: row.try_get("id").map_err(map_error)?,
        pairing_id: row.try_get("pairing_id").map_err(map_error)?,
        client_id: row.try_get("client_id").map_err(map_error)?,
        patient_uid: row.try_get("patient_uid").map_err(map_error)?,
        scope: row.try_get("scope").map_err(map_error)?,
        consent_until: instant(row, "consent_until_us")?,
        consent_basis: row.try_get("consent_basis").map_err(map_error)?,
        created_at: instant(row, "created_at_us")?,
        refresh_generation: row.try_get("refresh_generation").map_err(map_error)?,
        rotated_at: optional_instant(row, "rotated_at_us")?,
        revoked_at: optional_instant(row, "revoked_at_us")?,
        revoke_reason: row.try_get("revoke_reason").map_err(map_error)?,
    })
}

fn code(row: &SqliteRow) -> Result<AuthorizationCodeRowV1, StoreError> {
    Ok(AuthorizationCodeRowV1 {
        code_hash: row.try_get("code_hash").map_err(map_error)?,
        grant_id: row.try_get("grant_id").map_err(map_error)?,
        client_id: row.try_get("client_id").map_err(map_error)?,
        redirect_uri: row.try_get("redirect_uri").map_err(map_error)?,
        code_challenge: row.try_get("code_challenge").map_err(map_error)?,
        expires_at: instant(row, "expires_at_us")?,
        used_at: optional_instant(row, "used_at_us")?,
    })
}

#[async_trait]
impl HddtStore for SqliteStore {
    async fn rotate_server_key(
        &self,
        key: &ServerKeyRowV1,
        at: OffsetDateTime,
        retired_publish_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        sqlx::query(
            "UPDATE server_keys SET retired_at_us = ?, publish_until_us = ? WHERE purpose = ? AND retired_at_us IS NULL",
        )
        .bind(to_unix_micros(at))
        .bind(to_unix_micros(retired_publish_until))
        .bind(&key.purpose)
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        sqlx::query(
            "INSERT INTO server_keys (kid, format, purpose, public_jwk, wrapped_secret, created_at_us, retired_at_us, publish_until_us)
             VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.purpose)
        .bind(&key.public_jwk)
        .bind(&key.wrapped_secret)
        .bind(to_unix_micros(key.created_at))
        .bind(key.retired_at.map(to_unix_micros))
        .bind(to_unix_micros(key.publish_until))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)
    }

    async fn create_server_key(&self, key: &ServerKeyRowV1) -> Result<(), StoreError> {
        // The partial unique index `server_keys_one_current` refuses a second
        // current key of a purpose: a conflict, never a replacement.
        sqlx::query(
            "INSERT INTO server_keys (kid, format, purpose, public_jwk, wrapped_secret, created_at_us, retired_at_us, publish_until_us)
             VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.purpose)
        .bind(&key.public_jwk)
        .bind(&key.wrapped_secret)
        .bind(to_unix_micros(key.created_at))
        .bind(key.retired_at.map(to_unix_micros))
        .bind(to_unix_micros(key.publish_until))
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn current_server_key(
        &self,
        purpose: &str,
    ) -> Result<Option<ServerKeyRowV1>, StoreError> {
        let row = sqlx::query(
            "SELECT kid, purpose, public_jwk, wrapped_secret, created_at_us, retired_at_us, publish_until_us
             FROM server_keys WHERE purpose = ? AND retired_at_us IS NULL",
        )
        .bind(purpose)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(server_key).transpose()
    }

    async fn server_keys(
        &self,
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<ServerKeyRowV1>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, purpose, public_jwk, wrapped_secret, created_at_us, retired_at_us, publish_until_us
             FROM server_keys WHERE purpose = ? AND (retired_at_us IS NULL OR publish_until_us > ?)
             ORDER BY created_at_us, kid",
        )
        .bind(purpose)
        .bind(to_unix_micros(now))
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(server_key).collect()
    }

    async fn insert_authorization(&self, row: &AuthorizationRowV1) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hddt_authorizations (request_uri, format, client_id, request, created_at_us, expires_at_us)
             VALUES (?, 1, ?, ?, ?, ?)",
        )
        .bind(&row.request_uri)
        .bind(&row.client_id)
        .bind(&row.request)
        .bind(to_unix_micros(row.created_at))
        .bind(to_unix_micros(row.expires_at))
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn authorization(
        &self,
        request_uri: &str,
    ) -> Result<Option<AuthorizationRowV1>, StoreError> {
        let row = sqlx::query(select_authorization!("WHERE request_uri = ?"))
            .bind(request_uri)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(authorization).transpose()
    }

    async fn open_authorization(
        &self,
        request_uri: &str,
        client_id: &str,
        csrf_hash: &[u8],
        interaction_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now_us = to_unix_micros(now);
        let opened = sqlx::query(
            "UPDATE hddt_authorizations SET opened_at_us = ?, csrf_hash = ?, interaction_expires_at_us = ?
             WHERE request_uri = ? AND client_id = ? AND opened_at_us IS NULL AND expires_at_us > ?",
        )
        .bind(now_us)
        .bind(csrf_hash)
        .bind(to_unix_micros(interaction_expires_at))
        .bind(request_uri)
        .bind(client_id)
        .bind(now_us)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(opened.rows_affected() == 1)
    }

    async fn take_login_ticket(
        &self,
        ticket_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "DELETE FROM hddt_login_tickets WHERE ticket_hash = ? AND expires_at_us > ? RETURNING patient_uid",
        )
        .bind(ticket_hash)
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)
    }

    async fn insert_login_ticket(&self, row: &LoginTicketRowV1) -> Result<(), StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        sqlx::query("DELETE FROM hddt_login_tickets WHERE patient_uid = ?")
            .bind(&row.patient_uid)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        sqlx::query(
            "INSERT INTO hddt_login_tickets (ticket_hash, format, patient_uid, created_at_us, expires_at_us)
             VALUES (?, 1, ?, ?, ?)",
        )
        .bind(&row.ticket_hash)
        .bind(&row.patient_uid)
        .bind(to_unix_micros(row.created_at))
        .bind(to_unix_micros(row.expires_at))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)
    }

    async fn authenticate_authorization(
        &self,
        request_uri: &str,
        csrf_hash: &[u8],
        ticket_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let now_us = to_unix_micros(now);
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        let open = sqlx::query(
            "SELECT 1 FROM hddt_authorizations
             WHERE request_uri = ? AND csrf_hash = ? AND patient_uid IS NULL
               AND finished_at_us IS NULL AND interaction_expires_at_us > ?",
        )
        .bind(request_uri)
        .bind(csrf_hash)
        .bind(now_us)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(map_error)?;
        if open.is_none() {
            return Ok(None);
        }
        let ticket = sqlx::query(
            "DELETE FROM hddt_login_tickets WHERE ticket_hash = ? AND expires_at_us > ?
             RETURNING patient_uid",
        )
        .bind(ticket_hash)
        .bind(now_us)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(map_error)?;
        let Some(ticket) = ticket else {
            return Ok(None);
        };
        let patient: String = ticket.try_get("patient_uid").map_err(map_error)?;
        sqlx::query("UPDATE hddt_authorizations SET patient_uid = ? WHERE request_uri = ?")
            .bind(&patient)
            .bind(request_uri)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)?;
        Ok(Some(patient))
    }

    async fn finish_authorization(
        &self,
        request_uri: &str,
        csrf_hash: &[u8],
        approval: Option<&Approval>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now_us = to_unix_micros(now);
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        let finished = sqlx::query(
            "UPDATE hddt_authorizations SET finished_at_us = ?, outcome = ?
             WHERE request_uri = ? AND csrf_hash = ? AND patient_uid IS NOT NULL
               AND finished_at_us IS NULL AND interaction_expires_at_us > ?",
        )
        .bind(now_us)
        .bind(if approval.is_some() {
            "approved"
        } else {
            "denied"
        })
        .bind(request_uri)
        .bind(csrf_hash)
        .bind(now_us)
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        if finished.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(approval) = approval {
            sqlx::query(
                "INSERT INTO hddt_pairings (pairing_id, format, client_id, patient_uid, created_at_us)
                 VALUES (?, 1, ?, ?, ?) ON CONFLICT (pairing_id) DO NOTHING",
            )
            .bind(&approval.pairing.pairing_id)
            .bind(&approval.pairing.client_id)
            .bind(&approval.pairing.patient_uid)
            .bind(to_unix_micros(approval.pairing.created_at))
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
            sqlx::query(
                "UPDATE hddt_grants SET revoked_at_us = ?, revoke_reason = 'superseded'
                 WHERE pairing_id = ? AND revoked_at_us IS NULL",
            )
            .bind(now_us)
            .bind(&approval.pairing.pairing_id)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
            let grant = &approval.grant;
            sqlx::query(
                "INSERT INTO hddt_grants (id, format, pairing_id, client_id, scope, consent_until_us, consent_basis, created_at_us, refresh_generation)
                 VALUES (?, 1, ?, ?, ?, ?, ?, ?, 0)",
            )
            .bind(&grant.id)
            .bind(&grant.pairing_id)
            .bind(&grant.client_id)
            .bind(&grant.scope)
            .bind(to_unix_micros(grant.consent_until))
            .bind(&grant.consent_basis)
            .bind(to_unix_micros(grant.created_at))
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
            let code = &approval.code;
            sqlx::query(
                "INSERT INTO hddt_codes (code_hash, format, grant_id, client_id, redirect_uri, code_challenge, expires_at_us)
                 VALUES (?, 1, ?, ?, ?, ?, ?)",
            )
            .bind(&code.code_hash)
            .bind(&code.grant_id)
            .bind(&code.client_id)
            .bind(&code.redirect_uri)
            .bind(&code.code_challenge)
            .bind(to_unix_micros(code.expires_at))
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        }
        transaction.commit().await.map_err(map_error)?;
        Ok(true)
    }

    async fn authorization_code(
        &self,
        code_hash: &[u8],
    ) -> Result<Option<AuthorizationCodeRowV1>, StoreError> {
        let row = sqlx::query(
            "SELECT code_hash, grant_id, client_id, redirect_uri, code_challenge, expires_at_us, used_at_us
             FROM hddt_codes WHERE code_hash = ?",
        )
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(code).transpose()
    }

    async fn redeem_authorization_code(
        &self,
        code_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<GrantRowV1>, StoreError> {
        let now_us = to_unix_micros(now);
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        let used = sqlx::query(
            "UPDATE hddt_codes SET used_at_us = ?
             WHERE code_hash = ? AND used_at_us IS NULL AND expires_at_us > ?
             RETURNING grant_id",
        )
        .bind(now_us)
        .bind(code_hash)
        .bind(now_us)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(map_error)?;
        let Some(used) = used else {
            return Ok(None);
        };
        let grant_id: String = used.try_get("grant_id").map_err(map_error)?;
        let started = sqlx::query(concat!(
            "UPDATE hddt_grants SET refresh_generation = 1, rotated_at_us = ?
             WHERE id = ? AND refresh_generation = 0 AND revoked_at_us IS NULL AND consent_until_us > ? ",
            returning_grant!()
        ))
        .bind(now_us)
        .bind(&grant_id)
        .bind(now_us)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(map_error)?;
        // The code is spent either way: a revoked grant gets no tokens.
        transaction.commit().await.map_err(map_error)?;
        started.as_ref().map(grant).transpose()
    }

    async fn grant(&self, id: &str) -> Result<Option<GrantRowV1>, StoreError> {
        let row = sqlx::query(select_grant!("WHERE g.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(grant).transpose()
    }

    async fn rotate_refresh_token(
        &self,
        grant_id: &str,
        generation: i64,
        now: OffsetDateTime,
    ) -> Result<Option<GrantRowV1>, StoreError> {
        // One statement: the hot path of every refresh is one round trip.
        let now_us = to_unix_micros(now);
        let row = sqlx::query(concat!(
            "UPDATE hddt_grants SET refresh_generation = refresh_generation + 1, rotated_at_us = ?
             WHERE id = ? AND refresh_generation = ? AND refresh_generation > 0
               AND revoked_at_us IS NULL AND consent_until_us > ? ",
            returning_grant!()
        ))
        .bind(now_us)
        .bind(grant_id)
        .bind(generation)
        .bind(now_us)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(grant).transpose()
    }

    async fn revoke_grants(
        &self,
        selector: GrantSelector<'_>,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        let (column, value) = match selector {
            GrantSelector::Grant(id) => ("id", Some(id)),
            GrantSelector::Pairing(id) => ("pairing_id", Some(id)),
            GrantSelector::Client(id) => ("client_id", Some(id)),
            GrantSelector::All => ("", None),
        };
        let sql = match column {
            "id" => {
                "UPDATE hddt_grants SET revoked_at_us = ?, revoke_reason = ? WHERE revoked_at_us IS NULL AND id = ? RETURNING id"
            }
            "pairing_id" => {
                "UPDATE hddt_grants SET revoked_at_us = ?, revoke_reason = ? WHERE revoked_at_us IS NULL AND pairing_id = ? RETURNING id"
            }
            "client_id" => {
                "UPDATE hddt_grants SET revoked_at_us = ?, revoke_reason = ? WHERE revoked_at_us IS NULL AND client_id = ? RETURNING id"
            }
            _ => {
                "UPDATE hddt_grants SET revoked_at_us = ?, revoke_reason = ? WHERE revoked_at_us IS NULL AND ? IS NULL RETURNING id"
            }
        };
        let rows = sqlx::query(sql)
            .bind(to_unix_micros(now))
            .bind(reason)
            .bind(value)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|row| row.try_get("id").map_err(map_error))
            .collect()
    }

    async fn set_grant_scope(&self, grant_id: &str, scope: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE hddt_grants SET scope = ? WHERE id = ? AND revoked_at_us IS NULL")
                .bind(scope)
                .bind(grant_id)
                .execute(&self.pool)
                .await
                .map_err(map_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn renew_grant(
        &self,
        grant_id: &str,
        patient_uid: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE hddt_grants SET consent_until_us = ?
             WHERE id = ? AND revoked_at_us IS NULL AND consent_until_us > ? AND consent_basis = 'patient'
               AND pairing_id IN (SELECT pairing_id FROM hddt_pairings WHERE patient_uid = ?)",
        )
        .bind(to_unix_micros(until))
        .bind(grant_id)
        .bind(to_unix_micros(now))
        .bind(patient_uid)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn pairing(&self, pairing_id: &str) -> Result<Option<PairingRowV1>, StoreError> {
        let row = sqlx::query(
            "SELECT pairing_id, client_id, patient_uid, created_at_us FROM hddt_pairings WHERE pairing_id = ?",
        )
        .bind(pairing_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.map(|row| {
            Ok(PairingRowV1 {
                pairing_id: row.try_get("pairing_id").map_err(map_error)?,
                client_id: row.try_get("client_id").map_err(map_error)?,
                patient_uid: row.try_get("patient_uid").map_err(map_error)?,
                created_at: instant(&row, "created_at_us")?,
            })
        })
        .transpose()
    }

    async fn grants_of_patient(
        &self,
        patient_uid: &str,
        limit: i64,
    ) -> Result<Vec<GrantRowV1>, StoreError> {
        let rows = sqlx::query(select_grant!(
            "WHERE p.patient_uid = ? ORDER BY g.created_at_us DESC, g.id LIMIT ?"
        ))
        .bind(patient_uid)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(grant).collect()
    }

    async fn live_grants(
        &self,
        client_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<GrantRowV1>, StoreError> {
        let rows = sqlx::query(select_grant!(
            "WHERE g.revoked_at_us IS NULL AND g.consent_until_us > ? AND (? IS NULL OR g.client_id = ?)
             ORDER BY g.created_at_us, g.id"
        ))
        .bind(to_unix_micros(now))
        .bind(client_id)
        .bind(client_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(grant).collect()
    }

    async fn hddt_state(&self, name: &str) -> Result<Option<(String, OffsetDateTime)>, StoreError> {
        let row = sqlx::query("SELECT value, changed_at_us FROM hddt_state WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.map(|row| {
            Ok((
                row.try_get("value").map_err(map_error)?,
                instant(&row, "changed_at_us")?,
            ))
        })
        .transpose()
    }

    async fn set_hddt_state(
        &self,
        name: &str,
        value: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        match value {
            Some(value) => sqlx::query(
                "INSERT INTO hddt_state (name, value, changed_at_us) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, changed_at_us = excluded.changed_at_us",
            )
            .bind(name)
            .bind(value)
            .bind(to_unix_micros(now))
            .execute(&self.pool)
            .await
            .map_err(map_error)?,
            None => sqlx::query("DELETE FROM hddt_state WHERE name = ?")
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(map_error)?,
        };
        Ok(())
    }

    async fn hddt_states(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, OffsetDateTime)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, value, changed_at_us FROM hddt_state WHERE substr(name, 1, length(?)) = ? ORDER BY name",
        )
        .bind(prefix)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("name").map_err(map_error)?,
                    row.try_get("value").map_err(map_error)?,
                    instant(row, "changed_at_us")?,
                ))
            })
            .collect()
    }

    async fn purge_expired_hddt(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let before_us = to_unix_micros(before);
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        let mut removed = 0;
        for sql in [
            "DELETE FROM hddt_login_tickets WHERE expires_at_us <= ?",
            "DELETE FROM hddt_codes WHERE expires_at_us <= ?",
            "DELETE FROM hddt_authorizations WHERE expires_at_us <= ?1 AND (interaction_expires_at_us IS NULL OR interaction_expires_at_us <= ?1)",
        ] {
            removed += sqlx::query(sql)
                .bind(before_us)
                .execute(&mut *transaction)
                .await
                .map_err(map_error)?
                .rows_affected();
        }
        transaction.commit().await.map_err(map_error)?;
        Ok(removed)
    }
}
