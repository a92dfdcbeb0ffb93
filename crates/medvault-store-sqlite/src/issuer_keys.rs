//! [`IssuerKeyStore`] over SQLite.

use async_trait::async_trait;
use medvault_store::{
    IssuerKeyRowV1, IssuerKeyStore, StoreError, from_unix_micros, to_unix_micros,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::{SqliteStore, map_error};

const COLUMNS: &str = "kid, institution_uid, public_jwk, wrapped_private_key, created_at_us, retired_at_us, publish_until_us";

fn key(row: &SqliteRow) -> Result<IssuerKeyRowV1, StoreError> {
    Ok(IssuerKeyRowV1 {
        kid: row.try_get("kid").map_err(map_error)?,
        institution_uid: row.try_get("institution_uid").map_err(map_error)?,
        public_jwk: row.try_get("public_jwk").map_err(map_error)?,
        wrapped_private_key: row.try_get("wrapped_private_key").map_err(map_error)?,
        created_at: from_unix_micros(row.try_get("created_at_us").map_err(map_error)?)?,
        retired_at: row
            .try_get::<Option<i64>, _>("retired_at_us")
            .map_err(map_error)?
            .map(from_unix_micros)
            .transpose()?,
        publish_until: from_unix_micros(row.try_get("publish_until_us").map_err(map_error)?)?,
    })
}

#[async_trait]
impl IssuerKeyStore for SqliteStore {
    async fn rotate_issuer_key(
        &self,
        new: &IssuerKeyRowV1,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        sqlx::query(
            "UPDATE issuer_keys SET retired_at_us = ? WHERE institution_uid = ? AND retired_at_us IS NULL",
        )
        .bind(to_unix_micros(at))
        .bind(&new.institution_uid)
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        sqlx::query(
            "INSERT INTO issuer_keys (kid, format, institution_uid, public_jwk, wrapped_private_key, created_at_us, retired_at_us, publish_until_us)
             VALUES (?, 1, ?, ?, ?, ?, NULL, ?)",
        )
        .bind(&new.kid)
        .bind(&new.institution_uid)
        .bind(&new.public_jwk)
        .bind(&new.wrapped_private_key)
        .bind(to_unix_micros(new.created_at))
        .bind(to_unix_micros(new.publish_until))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)
    }

    async fn current_issuer_key(
        &self,
        institution_uid: &str,
    ) -> Result<Option<IssuerKeyRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM issuer_keys WHERE institution_uid = ? AND retired_at_us IS NULL"
        )))
        .bind(institution_uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(key).transpose()
    }

    async fn extend_issuer_key(
        &self,
        kid: &str,
        publish_until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE issuer_keys SET publish_until_us = MAX(publish_until_us, ?) WHERE kid = ?",
        )
        .bind(to_unix_micros(publish_until))
        .bind(kid)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn published_issuer_keys(
        &self,
        institution_uid: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<IssuerKeyRowV1>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM issuer_keys
             WHERE (retired_at_us IS NULL OR publish_until_us > ?) AND (? IS NULL OR institution_uid = ?)
             ORDER BY created_at_us, kid"
        )))
        .bind(to_unix_micros(now))
        .bind(institution_uid)
        .bind(institution_uid)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(key).collect()
    }
}
