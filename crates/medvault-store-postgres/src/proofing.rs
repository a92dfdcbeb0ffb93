//! [`ProofingStore`] over PostgreSQL.

use async_trait::async_trait;
use medvault_store::{
    CredentialCodeRowV1, ProofingRowV1, ProofingStore, StoreError, from_unix_micros, to_unix_micros,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use crate::{PostgresStore, map_error};

#[async_trait]
impl ProofingStore for PostgresStore {
    async fn insert_proofing(
        &self,
        proofing: &ProofingRowV1,
        code: &CredentialCodeRowV1,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(map_error)?;
        sqlx::query(
            "INSERT INTO identity_proofings (id, format, institution_uid, patient_uid, assurance, method, evidence_type, proofed_by, proofed_at_us)
             VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&proofing.id)
        .bind(&proofing.institution_uid)
        .bind(&proofing.patient_uid)
        .bind(&proofing.assurance)
        .bind(&proofing.method)
        .bind(&proofing.evidence_type)
        .bind(&proofing.proofed_by)
        .bind(to_unix_micros(proofing.proofed_at))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        sqlx::query(
            "INSERT INTO credential_codes (code_hash, format, proofing_id, patient_uid, expires_at_us, used_at_us)
             VALUES ($1, 1, $2, $3, $4, NULL)",
        )
        .bind(&code.code_hash)
        .bind(&code.proofing_id)
        .bind(&code.patient_uid)
        .bind(to_unix_micros(code.expires_at))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)
    }

    async fn consume_credential_code(
        &self,
        code_hash: &[u8],
        patient_uid: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ProofingRowV1>, StoreError> {
        let row = sqlx::query(
            "UPDATE credential_codes SET used_at_us = $1
             WHERE code_hash = $2 AND patient_uid = $3 AND used_at_us IS NULL AND expires_at_us > $4
             RETURNING proofing_id",
        )
        .bind(to_unix_micros(now))
        .bind(code_hash)
        .bind(patient_uid)
        .bind(to_unix_micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let proofing_id: String = row.try_get("proofing_id").map_err(map_error)?;
        let row = sqlx::query(
            "SELECT id, institution_uid, patient_uid, assurance, method, evidence_type, proofed_by, proofed_at_us
             FROM identity_proofings WHERE id = $1",
        )
        .bind(&proofing_id)
        .fetch_one(&self.pool)
        .await
        .map_err(map_error)?;
        proofing(&row).map(Some)
    }

    async fn reissue_credential_code(
        &self,
        institution_uid: &str,
        proofing_id: &str,
        code_hash: &[u8],
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(map_error)?;
        let found = sqlx::query(
            "SELECT p.patient_uid FROM identity_proofings p
             JOIN connections k ON k.uid_low = LEAST(p.institution_uid COLLATE \"C\", p.patient_uid COLLATE \"C\")
                               AND k.uid_high = GREATEST(p.institution_uid COLLATE \"C\", p.patient_uid COLLATE \"C\")
             WHERE p.id = $1 AND p.institution_uid = $2 AND k.state = 'active'
               AND NOT EXISTS (SELECT 1 FROM patient_credentials c WHERE c.proofing_id = p.id)
             FOR UPDATE OF p",
        )
        .bind(proofing_id)
        .bind(institution_uid)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(map_error)?;
        let Some(found) = found else {
            return Ok(None);
        };
        let patient_uid: String = found.try_get("patient_uid").map_err(map_error)?;
        sqlx::query("UPDATE credential_codes SET used_at_us = $1 WHERE proofing_id = $2 AND used_at_us IS NULL")
            .bind(to_unix_micros(now))
            .bind(proofing_id)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        sqlx::query(
            "INSERT INTO credential_codes (code_hash, format, proofing_id, patient_uid, expires_at_us, used_at_us)
             VALUES ($1, 1, $2, $3, $4, NULL)",
        )
        .bind(code_hash)
        .bind(proofing_id)
        .bind(&patient_uid)
        .bind(to_unix_micros(expires_at))
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        transaction.commit().await.map_err(map_error)?;
        Ok(Some(patient_uid))
    }

    async fn proofings_of_patient(
        &self,
        patient_uid: &str,
    ) -> Result<Vec<ProofingRowV1>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, institution_uid, patient_uid, assurance, method, evidence_type, proofed_by, proofed_at_us
             FROM identity_proofings WHERE patient_uid = $1 ORDER BY proofed_at_us DESC, id",
        )
        .bind(patient_uid)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(proofing).collect()
    }

    async fn record_jti(
        &self,
        jti: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // An expired entry may be taken over; a live one is a replay.
        let result = sqlx::query(
            "INSERT INTO credential_request_jtis (jti, expires_at_us) VALUES ($1, $2)
             ON CONFLICT (jti) DO UPDATE SET expires_at_us = EXCLUDED.expires_at_us
             WHERE credential_request_jtis.expires_at_us <= $3",
        )
        .bind(jti)
        .bind(to_unix_micros(expires_at))
        .bind(to_unix_micros(now))
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(result.rows_affected() == 1)
    }
}

/// Reads an `identity_proofings` row.
pub(crate) fn proofing(row: &PgRow) -> Result<ProofingRowV1, StoreError> {
    Ok(ProofingRowV1 {
        id: row.try_get("id").map_err(map_error)?,
        institution_uid: row.try_get("institution_uid").map_err(map_error)?,
        patient_uid: row.try_get("patient_uid").map_err(map_error)?,
        assurance: row.try_get("assurance").map_err(map_error)?,
        method: row.try_get("method").map_err(map_error)?,
        evidence_type: row.try_get("evidence_type").map_err(map_error)?,
        proofed_by: row.try_get("proofed_by").map_err(map_error)?,
        proofed_at: from_unix_micros(row.try_get("proofed_at_us").map_err(map_error)?)?,
    })
}
