//! [`AccountRequestStore`] over PostgreSQL.

use async_trait::async_trait;
use medvault_store::{
    AccountRequestRowV1, AccountRequestStore, StoreError, from_unix_micros, to_unix_micros,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use crate::{PostgresStore, map_error};

const COLUMNS: &str = "id, purpose, code_hash, return_to, state, status, uid, credential_id, result_hash, created_at_us, expires_at_us";

fn request(row: &PgRow) -> Result<AccountRequestRowV1, StoreError> {
    Ok(AccountRequestRowV1 {
        id: row.try_get("id").map_err(map_error)?,
        purpose: row.try_get("purpose").map_err(map_error)?,
        code_hash: row.try_get("code_hash").map_err(map_error)?,
        return_to: row.try_get("return_to").map_err(map_error)?,
        state: row.try_get("state").map_err(map_error)?,
        status: row.try_get("status").map_err(map_error)?,
        uid: row.try_get("uid").map_err(map_error)?,
        credential_id: row.try_get("credential_id").map_err(map_error)?,
        result_hash: row.try_get("result_hash").map_err(map_error)?,
        created_at: from_unix_micros(row.try_get("created_at_us").map_err(map_error)?)?,
        expires_at: from_unix_micros(row.try_get("expires_at_us").map_err(map_error)?)?,
    })
}

#[async_trait]
impl AccountRequestStore for PostgresStore {
    async fn insert_account_request(
        &self,
        request: &AccountRequestRowV1,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO account_requests (id, format, purpose, code_hash, return_to, state, status, uid, credential_id, result_hash, created_at_us, expires_at_us)
             VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&request.id)
        .bind(&request.purpose)
        .bind(&request.code_hash)
        .bind(&request.return_to)
        .bind(&request.state)
        .bind(&request.status)
        .bind(&request.uid)
        .bind(&request.credential_id)
        .bind(&request.result_hash)
        .bind(to_unix_micros(request.created_at))
        .bind(to_unix_micros(request.expires_at))
        .execute(&self.pool)
        .await
        .map_err(|error| match map_error(error) {
            StoreError::Conflict(_) => StoreError::Conflict("account request"),
            other => other,
        })?;
        Ok(())
    }

    async fn account_request(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AccountRequestRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM account_requests WHERE id = $1 AND expires_at_us > $2"
        )))
        .bind(id)
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(request).transpose()
    }

    async fn pending_account_request(
        &self,
        code_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<AccountRequestRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM account_requests WHERE code_hash = $1 AND status = 'pending' AND expires_at_us > $2"
        )))
        .bind(code_hash)
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(request).transpose()
    }

    async fn approve_account_request(
        &self,
        code_hash: &[u8],
        uid: &str,
        credential_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AccountRequestRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE account_requests SET status = 'approved', uid = $1, credential_id = $2
             WHERE code_hash = $3 AND status = 'pending' AND expires_at_us > $4
             RETURNING {COLUMNS}"
        )))
        .bind(uid)
        .bind(credential_id)
        .bind(code_hash)
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(request).transpose()
    }

    async fn redirect_account_request(
        &self,
        id: &str,
        result_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE account_requests SET status = 'redirected', result_hash = $1
             WHERE id = $2 AND status = 'approved' AND expires_at_us > $3",
        )
        .bind(result_hash)
        .bind(id)
        .bind(to_unix_micros(now))
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(result.rows_affected() == 1)
    }

    async fn take_account_result(
        &self,
        result_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<AccountRequestRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE account_requests SET status = 'done'
             WHERE result_hash = $1 AND status = 'redirected' AND expires_at_us > $2
             RETURNING {COLUMNS}"
        )))
        .bind(result_hash)
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(request).transpose()
    }
}
