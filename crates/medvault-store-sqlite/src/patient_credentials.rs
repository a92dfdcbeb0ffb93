//! [`PatientCredentialStore`] over SQLite.

use async_trait::async_trait;
use medvault_store::{
    CredentialIssue, PatientCredentialRowV1, PatientCredentialStore, ProofingRowV1, SessionRowV1,
    StoreError, from_unix_micros, to_unix_micros,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::proofing::proofing;
use crate::{SqliteStore, map_error};

/// `SELECT` of every column of `patient_credentials`, then `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!("SELECT id, institution_uid, patient_uid, proofing_id, subject, jti, kid, status_index, key_protection, client_id, issued_at_us, expires_at_us, status, status_changed_at_us FROM patient_credentials ", $rest)
    };
}

fn credential(row: &SqliteRow) -> Result<PatientCredentialRowV1, StoreError> {
    let changed: Option<i64> = row.try_get("status_changed_at_us").map_err(map_error)?;
    Ok(PatientCredentialRowV1 {
        id: row.try_get("id").map_err(map_error)?,
        institution_uid: row.try_get("institution_uid").map_err(map_error)?,
        patient_uid: row.try_get("patient_uid").map_err(map_error)?,
        proofing_id: row.try_get("proofing_id").map_err(map_error)?,
        subject: row.try_get("subject").map_err(map_error)?,
        jti: row.try_get("jti").map_err(map_error)?,
        kid: row.try_get("kid").map_err(map_error)?,
        status_index: row.try_get("status_index").map_err(map_error)?,
        key_protection: row.try_get("key_protection").map_err(map_error)?,
        client_id: row.try_get("client_id").map_err(map_error)?,
        issued_at: from_unix_micros(row.try_get("issued_at_us").map_err(map_error)?)?,
        expires_at: from_unix_micros(row.try_get("expires_at_us").map_err(map_error)?)?,
        status: row.try_get("status").map_err(map_error)?,
        status_changed_at: changed.map(from_unix_micros).transpose()?,
    })
}

#[async_trait]
impl PatientCredentialStore for SqliteStore {
    async fn peek_credential_code(
        &self,
        code_hash: &[u8],
        patient_uid: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ProofingRowV1>, StoreError> {
        let row = sqlx::query(
            "SELECT p.id, p.institution_uid, p.patient_uid, p.assurance, p.method, p.evidence_type, p.proofed_by, p.proofed_at_us
             FROM credential_codes c JOIN identity_proofings p ON p.id = c.proofing_id
             WHERE c.code_hash = ? AND c.patient_uid = ? AND c.used_at_us IS NULL AND c.expires_at_us > ?",
        )
        .bind(code_hash)
        .bind(patient_uid)
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(proofing).transpose()
    }

    async fn issue_patient_credential(
        &self,
        code_hash: &[u8],
        credential: &PatientCredentialRowV1,
        jti_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<CredentialIssue, StoreError> {
        let now_us = to_unix_micros(now);
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        // The proofing row first (locked on PostgreSQL): a new code for it
        // (reissue) and this issuance take turns, and a proofing gets one
        // credential.
        let open = sqlx::query(
            "SELECT 1 FROM identity_proofings p WHERE p.id = ? AND p.patient_uid = ?
               AND NOT EXISTS (SELECT 1 FROM patient_credentials c WHERE c.proofing_id = p.id)",
        )
        .bind(&credential.proofing_id)
        .bind(&credential.patient_uid)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(map_error)?;
        if open.is_none() {
            return Ok(CredentialIssue::CodeRefused);
        }
        let used = sqlx::query(
            "UPDATE credential_codes SET used_at_us = ?
             WHERE code_hash = ? AND patient_uid = ? AND proofing_id = ?
               AND used_at_us IS NULL AND expires_at_us > ?",
        )
        .bind(now_us)
        .bind(code_hash)
        .bind(&credential.patient_uid)
        .bind(&credential.proofing_id)
        .bind(now_us)
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        if used.rows_affected() != 1 {
            return Ok(CredentialIssue::CodeRefused);
        }
        let recorded = sqlx::query(
            "INSERT INTO credential_request_jtis (jti, expires_at_us) VALUES (?, ?)
             ON CONFLICT (jti) DO UPDATE SET expires_at_us = excluded.expires_at_us
             WHERE credential_request_jtis.expires_at_us <= ?",
        )
        .bind(&credential.jti)
        .bind(to_unix_micros(jti_expires_at))
        .bind(now_us)
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        if recorded.rows_affected() != 1 {
            return Ok(CredentialIssue::Replay);
        }
        let taken = sqlx::query(
            "SELECT 1 FROM patient_credentials WHERE institution_uid = ? AND status_index = ?",
        )
        .bind(&credential.institution_uid)
        .bind(credential.status_index)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(map_error)?;
        if taken.is_some() {
            return Ok(CredentialIssue::IndexTaken);
        }
        sqlx::query(
            "INSERT INTO patient_credentials (id, format, institution_uid, patient_uid, proofing_id, subject, jti, kid, status_index, key_protection, client_id, issued_at_us, expires_at_us, status, status_changed_at_us)
             VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&credential.id)
        .bind(&credential.institution_uid)
        .bind(&credential.patient_uid)
        .bind(&credential.proofing_id)
        .bind(&credential.subject)
        .bind(&credential.jti)
        .bind(&credential.kid)
        .bind(credential.status_index)
        .bind(&credential.key_protection)
        .bind(&credential.client_id)
        .bind(to_unix_micros(credential.issued_at))
        .bind(to_unix_micros(credential.expires_at))
        .bind(&credential.status)
        .bind(credential.status_changed_at.map(to_unix_micros))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)?;
        Ok(CredentialIssue::Issued)
    }

    async fn patient_credential_at(
        &self,
        institution_uid: &str,
        status_index: i64,
    ) -> Result<Option<PatientCredentialRowV1>, StoreError> {
        let row = sqlx::query(select!("WHERE institution_uid = ? AND status_index = ?"))
            .bind(institution_uid)
            .bind(status_index)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(credential).transpose()
    }

    async fn patient_credential(
        &self,
        id: &str,
    ) -> Result<Option<PatientCredentialRowV1>, StoreError> {
        let row = sqlx::query(select!("WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(credential).transpose()
    }

    async fn patient_credentials(
        &self,
        patient_uid: Option<&str>,
        institution_uid: Option<&str>,
    ) -> Result<Vec<PatientCredentialRowV1>, StoreError> {
        let rows = sqlx::query(select!(
            "WHERE (? IS NULL OR patient_uid = ?) AND (? IS NULL OR institution_uid = ?)
             ORDER BY issued_at_us DESC, id"
        ))
        .bind(patient_uid)
        .bind(patient_uid)
        .bind(institution_uid)
        .bind(institution_uid)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(credential).collect()
    }

    async fn set_patient_credential_status(
        &self,
        id: &str,
        institution_uid: &str,
        status: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        let result = sqlx::query(
            "UPDATE patient_credentials SET status = ?, status_changed_at_us = ?
             WHERE id = ? AND institution_uid = ? AND status <> 'revoked'",
        )
        .bind(status)
        .bind(to_unix_micros(at))
        .bind(id)
        .bind(institution_uid)
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        if status != "active" {
            // The IAL2 sessions resting on it end now; reinstating does not
            // bring them back.
            sqlx::query("DELETE FROM sessions WHERE patient_credential_id = ?")
                .bind(id)
                .execute(&mut *transaction)
                .await
                .map_err(map_error)?;
        }
        transaction.commit().await.map_err(map_error)?;
        Ok(true)
    }

    async fn patient_credential_indexes(
        &self,
        institution_uid: &str,
        status: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT status_index FROM patient_credentials
             WHERE institution_uid = ? AND status = ? AND expires_at_us > ?
             ORDER BY status_index",
        )
        .bind(institution_uid)
        .bind(status)
        .bind(to_unix_micros(now))
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter()
            .map(|row| row.try_get("status_index").map_err(map_error))
            .collect()
    }

    async fn holds_patient_credential(
        &self,
        patient_uid: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM patient_credentials
             WHERE patient_uid = ? AND status IN ('active', 'suspended') AND expires_at_us > ? LIMIT 1",
        )
        .bind(patient_uid)
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(row.is_some())
    }

    async fn insert_presentation_nonce(
        &self,
        nonce_hash: &[u8],
        uid: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        sqlx::query("DELETE FROM presentation_nonces WHERE uid = ?")
            .bind(uid)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        sqlx::query(
            "INSERT INTO presentation_nonces (nonce_hash, uid, expires_at_us) VALUES (?, ?, ?)",
        )
        .bind(nonce_hash)
        .bind(uid)
        .bind(to_unix_micros(expires_at))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)
    }

    async fn open_presented_session(
        &self,
        nonce_hash: &[u8],
        replaces: &[u8],
        session: &SessionRowV1,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        let taken = sqlx::query(
            "DELETE FROM presentation_nonces WHERE nonce_hash = ? AND uid = ? AND expires_at_us > ?",
        )
        .bind(nonce_hash)
        .bind(&session.uid)
        .bind(to_unix_micros(now))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        if taken.rows_affected() != 1 {
            return Ok(false);
        }
        let ended = sqlx::query("DELETE FROM sessions WHERE token_hash = ? AND uid = ?")
            .bind(replaces)
            .bind(&session.uid)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        if ended.rows_affected() != 1 {
            return Ok(false);
        }
        crate::accounts::insert_session(&mut *transaction, session).await?;
        transaction.commit().await.map_err(map_error)?;
        Ok(true)
    }

    async fn purge_expired_presentation_state(
        &self,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let now = to_unix_micros(now);
        let mut purged = 0;
        for statement in [
            "DELETE FROM presentation_nonces WHERE expires_at_us <= ?",
            "DELETE FROM credential_request_jtis WHERE expires_at_us <= ?",
        ] {
            purged += sqlx::query(statement)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(map_error)?
                .rows_affected();
        }
        Ok(purged)
    }
}
