//! [`DocumentStore`] over SQLite.

use async_trait::async_trait;
use medvault_store::{
    ConnectionChange, ConnectionRowV1, DocumentInsert, DocumentRowV1, DocumentStore,
    ReceivedDocumentV1, StoreError, connection_pair, from_unix_micros, to_unix_micros,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::{SqliteStore, map_error};

const CONNECTION_COLUMNS: &str = "uid_low, uid_high, inviter, state, created_at_us, accepted_at_us";

fn connection(row: &SqliteRow) -> Result<ConnectionRowV1, StoreError> {
    Ok(ConnectionRowV1 {
        uid_low: row.try_get("uid_low").map_err(map_error)?,
        uid_high: row.try_get("uid_high").map_err(map_error)?,
        inviter: row.try_get("inviter").map_err(map_error)?,
        state: row.try_get("state").map_err(map_error)?,
        created_at: from_unix_micros(row.try_get("created_at_us").map_err(map_error)?)?,
        accepted_at: row
            .try_get::<Option<i64>, _>("accepted_at_us")
            .map_err(map_error)?
            .map(from_unix_micros)
            .transpose()?,
    })
}

fn received(row: &SqliteRow, with_body: bool) -> Result<ReceivedDocumentV1, StoreError> {
    let recipients: String = row.try_get("recipients").map_err(map_error)?;
    Ok(ReceivedDocumentV1 {
        document: DocumentRowV1 {
            id: row.try_get("id").map_err(map_error)?,
            sender_uid: row.try_get("sender_uid").map_err(map_error)?,
            sender_credential_id: row.try_get("sender_credential_id").map_err(map_error)?,
            sender_certificate: row.try_get("sender_certificate").map_err(map_error)?,
            signature: row.try_get("signature").map_err(map_error)?,
            sealed_header: row.try_get("sealed_header").map_err(map_error)?,
            sealed_body: if with_body {
                row.try_get("sealed_body").map_err(map_error)?
            } else {
                Vec::new()
            },
            size: row.try_get("size").map_err(map_error)?,
            created_at: from_unix_micros(row.try_get("created_at_us").map_err(map_error)?)?,
        },
        recipients: recipients.split(',').map(str::to_owned).collect(),
        sealed_key: row.try_get("sealed_key").map_err(map_error)?,
    })
}

/// The columns of a received document; `{body}` is `d.sealed_body` or an empty blob.
fn received_query(body: &str, filter: &str) -> String {
    format!(
        "SELECT d.id, d.sender_uid, d.sender_credential_id, d.sender_certificate, d.signature,
                d.sealed_header, {body} AS sealed_body, d.size, d.created_at_us, r.sealed_key,
                (SELECT GROUP_CONCAT(recipient_uid, ',') FROM
                    (SELECT recipient_uid FROM document_recipients WHERE document_id = d.id ORDER BY recipient_uid))
                    AS recipients
         FROM document_recipients r JOIN documents d ON d.id = r.document_id
         WHERE r.recipient_uid = ? {filter}"
    )
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn insert_connection(&self, connection: &ConnectionRowV1) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connections (uid_low, uid_high, format, inviter, state, created_at_us, accepted_at_us)
             VALUES (?, ?, 1, ?, ?, ?, ?)",
        )
        .bind(&connection.uid_low)
        .bind(&connection.uid_high)
        .bind(&connection.inviter)
        .bind(&connection.state)
        .bind(to_unix_micros(connection.created_at))
        .bind(connection.accepted_at.map(to_unix_micros))
        .execute(&self.pool)
        .await
        .map_err(|error| match map_error(error) {
            StoreError::Conflict(_) => StoreError::Conflict("connection"),
            other => other,
        })?;
        Ok(())
    }

    async fn accept_connection(
        &self,
        uid_low: &str,
        uid_high: &str,
        accepter: &str,
        at: OffsetDateTime,
    ) -> Result<ConnectionChange, StoreError> {
        let result = sqlx::query(
            "UPDATE connections SET state = 'active', accepted_at_us = ?
             WHERE uid_low = ? AND uid_high = ? AND state = 'pending' AND inviter <> ?",
        )
        .bind(to_unix_micros(at))
        .bind(uid_low)
        .bind(uid_high)
        .bind(accepter)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(if result.rows_affected() == 1 {
            ConnectionChange::Done
        } else {
            ConnectionChange::NotFound
        })
    }

    async fn delete_connection(
        &self,
        uid_low: &str,
        uid_high: &str,
    ) -> Result<ConnectionChange, StoreError> {
        let result = sqlx::query("DELETE FROM connections WHERE uid_low = ? AND uid_high = ?")
            .bind(uid_low)
            .bind(uid_high)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(if result.rows_affected() == 1 {
            ConnectionChange::Done
        } else {
            ConnectionChange::NotFound
        })
    }

    async fn connection(
        &self,
        uid_low: &str,
        uid_high: &str,
    ) -> Result<Option<ConnectionRowV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE uid_low = ? AND uid_high = ?"
        )))
        .bind(uid_low)
        .bind(uid_high)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(connection).transpose()
    }

    async fn connections(&self, uid: &str) -> Result<Vec<ConnectionRowV1>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE uid_low = ? OR uid_high = ?
             ORDER BY created_at_us, uid_low, uid_high"
        )))
        .bind(uid)
        .bind(uid)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(connection).collect()
    }

    async fn insert_document(
        &self,
        document: &DocumentRowV1,
        keys: &[(String, Vec<u8>)],
    ) -> Result<DocumentInsert, StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        // Inside BEGIN IMMEDIATE: no connection changes until this commits.
        for (recipient, _) in keys {
            if *recipient == document.sender_uid {
                continue;
            }
            let (low, high) = connection_pair(&document.sender_uid, recipient);
            let active: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM connections WHERE uid_low = ? AND uid_high = ? AND state = 'active'",
            )
            .bind(low)
            .bind(high)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(map_error)?;
            if active.is_none() {
                return Ok(DocumentInsert::NotConnected);
            }
        }
        sqlx::query(
            "INSERT INTO documents (id, format, sender_uid, sender_credential_id, sender_certificate, signature, sealed_header, sealed_body, size, created_at_us)
             VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&document.id)
        .bind(&document.sender_uid)
        .bind(&document.sender_credential_id)
        .bind(&document.sender_certificate)
        .bind(&document.signature)
        .bind(&document.sealed_header)
        .bind(&document.sealed_body)
        .bind(document.size)
        .bind(to_unix_micros(document.created_at))
        .execute(&mut *transaction)
        .await
        .map_err(|error| match map_error(error) {
            StoreError::Conflict(_) => StoreError::Conflict("document"),
            other => other,
        })?;
        for (recipient, sealed_key) in keys {
            sqlx::query(
                "INSERT INTO document_recipients (document_id, recipient_uid, sealed_key) VALUES (?, ?, ?)",
            )
            .bind(&document.id)
            .bind(recipient)
            .bind(sealed_key)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        }
        transaction.commit().await.map_err(map_error)?;
        Ok(DocumentInsert::Stored)
    }

    async fn received_documents(
        &self,
        recipient: &str,
        limit: i64,
    ) -> Result<Vec<ReceivedDocumentV1>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(received_query(
            "X''",
            "ORDER BY d.created_at_us DESC, d.id LIMIT ?",
        )))
        .bind(recipient)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(|row| received(row, false)).collect()
    }

    async fn received_document(
        &self,
        recipient: &str,
        id: &str,
    ) -> Result<Option<ReceivedDocumentV1>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(received_query(
            "d.sealed_body",
            "AND d.id = ?",
        )))
        .bind(recipient)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(|row| received(row, true)).transpose()
    }
}
