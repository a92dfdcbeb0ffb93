//! [`DeviceDataStore`] over PostgreSQL: chunk rows are locked (`FOR UPDATE`)
//! while a batch merges its samples into them, so two nodes never lose a sample.

use async_trait::async_trait;
use medvault_store::devicedata::{
    DEVICE_COLUMNS, OBSERVATION_COLUMNS, device_search_sql, merge_samples, observation_search_sql,
};
use medvault_store::{
    AccessCountV1, DeviceDataStore, DeviceQuery, DeviceRowV1, IngestBatch, IngestOutcome,
    ObservationKind, ObservationQuery, ObservationRowV1, SqlValue, StoreError, from_unix_micros,
    to_unix_micros,
};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Postgres, Row};
use time::OffsetDateTime;

use crate::{PostgresStore, map_error};

fn numbered(n: usize) -> String {
    format!("${n}")
}

fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column).map_err(map_error)
}

fn optional_instant(row: &PgRow, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    get::<Option<i64>>(row, column)?
        .map(from_unix_micros)
        .transpose()
}

fn device(row: &PgRow) -> Result<DeviceRowV1, StoreError> {
    Ok(DeviceRowV1 {
        id: get(row, "id")?,
        patient_uid: get(row, "patient_uid")?,
        model: get(row, "model")?,
        serial_number: get(row, "serial_number")?,
        unit: get(row, "unit")?,
        status: get(row, "status")?,
        version: get(row, "version")?,
        created_at: from_unix_micros(get(row, "created_at_us")?)?,
        updated_at: from_unix_micros(get(row, "updated_at_us")?)?,
        last_sync_at: optional_instant(row, "last_sync_at_us")?,
        metric_id: get(row, "metric_id")?,
        metric_version: get(row, "metric_version")?,
        calibration_state: get(row, "calibration_state")?,
        calibration_time: optional_instant(row, "calibration_time_us")?,
        calibration_epoch: get(row, "calibration_epoch")?,
    })
}

fn observation(row: &PgRow) -> Result<ObservationRowV1, StoreError> {
    Ok(ObservationRowV1 {
        id: get(row, "id")?,
        patient_uid: get(row, "patient_uid")?,
        device_id: get(row, "device_id")?,
        metric_id: get(row, "metric_id")?,
        kind: ObservationKind::parse(&get::<String>(row, "kind")?)?,
        code: get(row, "code")?,
        effective_start: from_unix_micros(get(row, "effective_start_us")?)?,
        effective_end: from_unix_micros(get(row, "effective_end_us")?)?,
        value: get(row, "value")?,
        comparator: get(row, "comparator")?,
        unit: get(row, "unit")?,
        period_ms: get(row, "period_ms")?,
        samples: get(row, "samples")?,
        status: get(row, "status")?,
        version: get(row, "version")?,
        last_updated: from_unix_micros(get(row, "last_updated_us")?)?,
        epoch: get(row, "epoch")?,
    })
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Postgres, PgArguments>,
    values: Vec<SqlValue>,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    for value in values {
        query = match value {
            SqlValue::Int(v) => query.bind(v),
            SqlValue::Real(v) => query.bind(v),
            SqlValue::Text(v) => query.bind(v),
        };
    }
    query
}

async fn insert_history(
    connection: &mut sqlx::PgConnection,
    device: &DeviceRowV1,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO hddt_device_history (id, version, metric_version, patient_uid, model, serial_number, unit, status, created_at_us, updated_at_us, last_sync_at_us, metric_id, calibration_state, calibration_time_us, calibration_epoch)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&device.id)
    .bind(device.version)
    .bind(device.metric_version)
    .bind(&device.patient_uid)
    .bind(&device.model)
    .bind(&device.serial_number)
    .bind(&device.unit)
    .bind(&device.status)
    .bind(to_unix_micros(device.created_at))
    .bind(to_unix_micros(device.updated_at))
    .bind(device.last_sync_at.map(to_unix_micros))
    .bind(&device.metric_id)
    .bind(&device.calibration_state)
    .bind(device.calibration_time.map(to_unix_micros))
    .bind(device.calibration_epoch)
    .execute(connection)
    .await
    .map_err(map_error)?;
    Ok(())
}

async fn insert_observation(
    connection: &mut sqlx::PgConnection,
    row: &ObservationRowV1,
    samples: Option<&str>,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO hddt_observations (id, patient_uid, device_id, metric_id, kind, code, effective_start_us, effective_end_us, value, comparator, unit, period_ms, samples, status, version, last_updated_us, epoch)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1, $15, $16)
         ON CONFLICT (device_id, kind, effective_start_us, epoch) DO NOTHING",
    )
    .bind(&row.id)
    .bind(&row.patient_uid)
    .bind(&row.device_id)
    .bind(&row.metric_id)
    .bind(row.kind.as_str())
    .bind(&row.code)
    .bind(to_unix_micros(row.effective_start))
    .bind(to_unix_micros(row.effective_end))
    .bind(row.value)
    .bind(&row.comparator)
    .bind(&row.unit)
    .bind(row.period_ms)
    .bind(samples)
    .bind(&row.status)
    .bind(to_unix_micros(row.last_updated))
    .bind(row.epoch)
    .execute(connection)
    .await
    .map_err(map_error)?;
    Ok(done.rows_affected())
}

/// Stores a batch inside `transaction`; `Err(outcome)` rolls back.
async fn ingest_in(
    connection: &mut sqlx::PgConnection,
    batch: &IngestBatch,
) -> Result<Result<IngestOutcome, IngestOutcome>, StoreError> {
    let now_us = to_unix_micros(batch.received_at);
    let previous = sqlx::query(
        "SELECT digest, reading_count, stored_at_us FROM hddt_batches WHERE patient_uid = $1 AND batch_id = $2",
    )
    .bind(&batch.patient_uid)
    .bind(&batch.batch_id)
    .fetch_optional(&mut *connection)
    .await
    .map_err(map_error)?;
    if let Some(previous) = previous {
        let digest: Vec<u8> = get(&previous, "digest")?;
        return Ok(Err(if digest == batch.digest {
            IngestOutcome::Replayed {
                readings: get(&previous, "reading_count")?,
                stored_at: from_unix_micros(get(&previous, "stored_at_us")?)?,
            }
        } else {
            IngestOutcome::BatchConflict
        }));
    }
    for single in &batch.singles {
        if insert_observation(connection, single, None).await? == 1 {
            continue;
        }
        // The same device and time is stored: a replay of the same reading
        // is fine, another value is a conflict.
        let stored = sqlx::query(
            "SELECT value, comparator, unit, code FROM hddt_observations
             WHERE device_id = $1 AND kind = 'single' AND effective_start_us = $2 AND epoch = 0",
        )
        .bind(&single.device_id)
        .bind(to_unix_micros(single.effective_start))
        .fetch_one(&mut *connection)
        .await
        .map_err(map_error)?;
        let same = get::<Option<f64>>(&stored, "value")? == single.value
            && get::<Option<String>>(&stored, "comparator")? == single.comparator
            && get::<String>(&stored, "unit")? == single.unit
            && get::<String>(&stored, "code")? == single.code;
        if !same {
            return Ok(Err(IngestOutcome::ReadingConflict {
                device_id: single.device_id.clone(),
                at: single.effective_start,
            }));
        }
    }
    // CGM chunks, a few statements per device instead of two per chunk:
    // the batch's existing chunks are read and locked at once, merged here,
    // then new ones inserted and changed ones updated with array parameters.
    let mut by_device: std::collections::BTreeMap<(&str, i64), Vec<&medvault_store::ChunkSamples>> =
        std::collections::BTreeMap::new();
    for chunk in &batch.chunks {
        by_device
            .entry((chunk.chunk.device_id.as_str(), chunk.chunk.epoch))
            .or_default()
            .push(chunk);
    }
    for ((device_id, epoch), chunks) in by_device {
        let starts: Vec<i64> = chunks
            .iter()
            .map(|c| to_unix_micros(c.chunk.effective_start))
            .collect();
        let rows = sqlx::query(
            "SELECT id, effective_start_us, samples, unit, period_ms FROM hddt_observations
             WHERE device_id = $1 AND kind = 'chunk' AND epoch = $2 AND effective_start_us = ANY($3)
             ORDER BY effective_start_us FOR UPDATE",
        )
        .bind(device_id)
        .bind(epoch)
        .bind(&starts)
        .fetch_all(&mut *connection)
        .await
        .map_err(map_error)?;
        let mut stored = std::collections::HashMap::new();
        for row in &rows {
            stored.insert(get::<i64>(row, "effective_start_us")?, row);
        }
        let mut inserts: Vec<(&ObservationRowV1, String)> = Vec::new();
        let (mut update_ids, mut update_samples) = (Vec::new(), Vec::new());
        for chunk in chunks {
            let key = &chunk.chunk;
            let slots = usize::try_from(
                (key.effective_end - key.effective_start).whole_milliseconds()
                    / i128::from(key.period_ms.unwrap_or(1).max(1)),
            )
            .unwrap_or(0);
            let conflict = || IngestOutcome::ReadingConflict {
                device_id: key.device_id.clone(),
                at: key.effective_start,
            };
            match stored.get(&to_unix_micros(key.effective_start)) {
                None => {
                    let Ok(Some(samples)) = merge_samples(None, &chunk.samples, slots) else {
                        return Ok(Err(conflict()));
                    };
                    inserts.push((key, samples));
                }
                Some(row) => {
                    if get::<String>(row, "unit")? != key.unit
                        || get::<Option<i64>>(row, "period_ms")? != key.period_ms
                    {
                        return Ok(Err(conflict()));
                    }
                    let existing: Option<String> = get(row, "samples")?;
                    match merge_samples(existing.as_deref(), &chunk.samples, slots) {
                        Err(_) => return Ok(Err(conflict())),
                        Ok(None) => {}
                        Ok(Some(samples)) => {
                            update_ids.push(get::<String>(row, "id")?);
                            update_samples.push(samples);
                        }
                    }
                }
            }
        }
        if !update_ids.is_empty() {
            sqlx::query(
                "UPDATE hddt_observations AS o SET samples = v.samples, version = o.version + 1, last_updated_us = $1
                 FROM UNNEST($2::text[], $3::text[]) AS v(id, samples) WHERE o.id = v.id",
            )
            .bind(now_us)
            .bind(&update_ids)
            .bind(&update_samples)
            .execute(&mut *connection)
            .await
            .map_err(map_error)?;
        }
        if !inserts.is_empty() {
            let column = |f: &dyn Fn(&ObservationRowV1) -> Option<String>| -> Vec<Option<String>> {
                inserts.iter().map(|(row, _)| f(row)).collect()
            };
            let ids = column(&|r| Some(r.id.clone()));
            let patients = column(&|r| Some(r.patient_uid.clone()));
            let metrics = column(&|r| r.metric_id.clone());
            let codes = column(&|r| Some(r.code.clone()));
            let units = column(&|r| Some(r.unit.clone()));
            let statuses = column(&|r| Some(r.status.clone()));
            let samples: Vec<String> = inserts.iter().map(|(_, s)| s.clone()).collect();
            let starts: Vec<i64> = inserts
                .iter()
                .map(|(r, _)| to_unix_micros(r.effective_start))
                .collect();
            let ends: Vec<i64> = inserts
                .iter()
                .map(|(r, _)| to_unix_micros(r.effective_end))
                .collect();
            let periods: Vec<Option<i64>> = inserts.iter().map(|(r, _)| r.period_ms).collect();
            let updated: Vec<i64> = inserts
                .iter()
                .map(|(r, _)| to_unix_micros(r.last_updated))
                .collect();
            let done = sqlx::query(
                "INSERT INTO hddt_observations (id, patient_uid, device_id, metric_id, kind, code, effective_start_us, effective_end_us, unit, period_ms, samples, status, version, last_updated_us, epoch)
                 SELECT v.id, v.patient_uid, $1, v.metric_id, 'chunk', v.code, v.start_us, v.end_us, v.unit, v.period_ms, v.samples, v.status, 1, v.updated_us, $2
                 FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::bigint[])
                   AS v(id, patient_uid, metric_id, code, start_us, end_us, unit, period_ms, samples, status, updated_us)
                 ON CONFLICT (device_id, kind, effective_start_us, epoch) DO NOTHING",
            )
            .bind(device_id)
            .bind(epoch)
            .bind(&ids)
            .bind(&patients)
            .bind(&metrics)
            .bind(&codes)
            .bind(&starts)
            .bind(&ends)
            .bind(&units)
            .bind(&periods)
            .bind(&samples)
            .bind(&statuses)
            .bind(&updated)
            .execute(&mut *connection)
            .await
            .map_err(map_error)?;
            if done.rows_affected() != u64::try_from(inserts.len()).unwrap_or(u64::MAX) {
                // Another node created one of these chunks since the
                // lookup: the caller retries the batch and merges into it.
                return Err(StoreError::Conflict("observation chunk"));
            }
        }
    }
    for sync in &batch.syncs {
        sqlx::query(
            "UPDATE hddt_observations SET status = 'final', version = version + 1, last_updated_us = $1
             WHERE device_id = $2 AND status = 'preliminary' AND effective_end_us <= $3",
        )
        .bind(now_us)
        .bind(&sync.device_id)
        .bind(to_unix_micros(sync.latest_reading))
        .execute(&mut *connection)
        .await
        .map_err(map_error)?;
        sqlx::query("UPDATE hddt_devices SET last_sync_at_us = $1 WHERE id = $2")
            .bind(now_us)
            .bind(&sync.device_id)
            .execute(&mut *connection)
            .await
            .map_err(map_error)?;
    }
    sqlx::query(
        "INSERT INTO hddt_batches (patient_uid, batch_id, digest, reading_count, stored_at_us) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&batch.patient_uid)
    .bind(&batch.batch_id)
    .bind(&batch.digest)
    .bind(batch.reading_count)
    .bind(now_us)
    .execute(&mut *connection)
    .await
    .map_err(map_error)?;
    Ok(Ok(IngestOutcome::Stored {
        readings: batch.reading_count,
    }))
}

#[async_trait]
impl DeviceDataStore for PostgresStore {
    async fn record_accesses(&self, counts: &[AccessCountV1]) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut transaction = self.pool.begin().await.map_err(map_error)?;
        for count in counts {
            sqlx::query(
                "INSERT INTO hddt_accesses (pairing_id, day, interaction, count, last_at_us) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (pairing_id, day, interaction) DO UPDATE
                 SET count = hddt_accesses.count + excluded.count,
                     last_at_us = GREATEST(hddt_accesses.last_at_us, excluded.last_at_us)",
            )
            .bind(&count.pairing_id)
            .bind(&count.day)
            .bind(&count.interaction)
            .bind(count.count)
            .bind(to_unix_micros(count.last_at))
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        }
        transaction.commit().await.map_err(map_error)
    }

    async fn accesses_of_patient(
        &self,
        patient_uid: &str,
        since: &str,
        limit: u32,
    ) -> Result<Vec<(String, AccessCountV1)>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.client_id, a.pairing_id, a.day, a.interaction, a.count, a.last_at_us
             FROM hddt_accesses a JOIN hddt_pairings p ON p.pairing_id = a.pairing_id
             WHERE p.patient_uid = $1 AND a.day >= $2
             ORDER BY a.last_at_us DESC LIMIT $3",
        )
        .bind(patient_uid)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    get(row, "client_id")?,
                    AccessCountV1 {
                        pairing_id: get(row, "pairing_id")?,
                        day: get(row, "day")?,
                        interaction: get(row, "interaction")?,
                        count: get(row, "count")?,
                        last_at: from_unix_micros(get(row, "last_at_us")?)?,
                    },
                ))
            })
            .collect()
    }

    async fn purge_accesses(&self, before: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM hddt_accesses WHERE day < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(map_error)?
            .rows_affected())
    }

    async fn insert_device(&self, device: &DeviceRowV1) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(map_error)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO hddt_devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        )))
        .bind(&device.id)
        .bind(&device.patient_uid)
        .bind(&device.model)
        .bind(&device.serial_number)
        .bind(&device.unit)
        .bind(&device.status)
        .bind(device.version)
        .bind(to_unix_micros(device.created_at))
        .bind(to_unix_micros(device.updated_at))
        .bind(device.last_sync_at.map(to_unix_micros))
        .bind(&device.metric_id)
        .bind(device.metric_version)
        .bind(&device.calibration_state)
        .bind(device.calibration_time.map(to_unix_micros))
        .bind(device.calibration_epoch)
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        insert_history(&mut transaction, device).await?;
        transaction.commit().await.map_err(map_error)
    }

    async fn devices_of_patient(&self, patient_uid: &str) -> Result<Vec<DeviceRowV1>, StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM hddt_devices WHERE patient_uid = $1 ORDER BY created_at_us, id"
        )))
        .bind(patient_uid)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?
        .iter()
        .map(device)
        .collect()
    }

    async fn device(&self, id: &str, metric: bool) -> Result<Option<DeviceRowV1>, StoreError> {
        let column = if metric { "metric_id" } else { "id" };
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM hddt_devices WHERE {column} = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?
        .as_ref()
        .map(device)
        .transpose()
    }

    async fn update_device(
        &self,
        next: &DeviceRowV1,
        expected: (i64, i64),
    ) -> Result<bool, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(map_error)?;
        let updated = sqlx::query(
            "UPDATE hddt_devices SET status = $1, version = $2, updated_at_us = $3, metric_version = $4, calibration_state = $5, calibration_time_us = $6, calibration_epoch = $7
             WHERE id = $8 AND version = $9 AND metric_version = $10",
        )
        .bind(&next.status)
        .bind(next.version)
        .bind(to_unix_micros(next.updated_at))
        .bind(next.metric_version)
        .bind(&next.calibration_state)
        .bind(next.calibration_time.map(to_unix_micros))
        .bind(next.calibration_epoch)
        .bind(&next.id)
        .bind(expected.0)
        .bind(expected.1)
        .execute(&mut *transaction)
        .await
        .map_err(map_error)?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        if next.metric_version != expected.1 {
            sqlx::query(
                "UPDATE hddt_observations SET status = 'final', version = version + 1, last_updated_us = $1
                 WHERE device_id = $2 AND status = 'preliminary'",
            )
            .bind(to_unix_micros(next.updated_at))
            .bind(&next.id)
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
        }
        insert_history(&mut transaction, next).await?;
        transaction.commit().await.map_err(map_error)?;
        Ok(true)
    }

    async fn device_version(
        &self,
        id: &str,
        metric: bool,
        version: i64,
    ) -> Result<Option<DeviceRowV1>, StoreError> {
        let sql = if metric {
            "SELECT h.* FROM hddt_device_history h
             WHERE h.metric_id = $1 AND h.metric_version = $2 ORDER BY h.version DESC LIMIT 1"
        } else {
            "SELECT h.* FROM hddt_device_history h
             WHERE h.id = $1 AND h.version = $2 ORDER BY h.metric_version DESC LIMIT 1"
        };
        sqlx::query(sql)
            .bind(id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?
            .as_ref()
            .map(device)
            .transpose()
    }

    async fn ingest(&self, batch: &IngestBatch) -> Result<IngestOutcome, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(map_error)?;
        match ingest_in(&mut transaction, batch).await? {
            Ok(outcome) => {
                transaction.commit().await.map_err(map_error)?;
                Ok(outcome)
            }
            Err(outcome) => {
                transaction.rollback().await.map_err(map_error)?;
                Ok(outcome)
            }
        }
    }

    async fn observation(&self, id: &str) -> Result<Option<ObservationRowV1>, StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {OBSERVATION_COLUMNS} FROM hddt_observations WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?
        .as_ref()
        .map(observation)
        .transpose()
    }

    async fn search_observations(
        &self,
        query: &ObservationQuery,
    ) -> Result<Vec<ObservationRowV1>, StoreError> {
        let (sql, values) = observation_search_sql(query, numbered);
        bind_all(sqlx::query(AssertSqlSafe(sql)), values)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?
            .iter()
            .map(observation)
            .collect()
    }

    async fn search_devices(&self, query: &DeviceQuery) -> Result<Vec<DeviceRowV1>, StoreError> {
        let (sql, values) = device_search_sql(query, numbered);
        bind_all(sqlx::query(AssertSqlSafe(sql)), values)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?
            .iter()
            .map(device)
            .collect()
    }

    async fn observations_of_patient(
        &self,
        patient_uid: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ObservationRowV1>, StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {OBSERVATION_COLUMNS} FROM hddt_observations
             WHERE patient_uid = $1 AND effective_start_us >= $2 AND effective_start_us < $3
             ORDER BY effective_start_us, id LIMIT $4"
        )))
        .bind(patient_uid)
        .bind(to_unix_micros(from))
        .bind(to_unix_micros(to))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?
        .iter()
        .map(observation)
        .collect()
    }
}
