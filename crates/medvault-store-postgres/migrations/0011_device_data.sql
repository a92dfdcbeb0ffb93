-- medvault schema 11: personal health devices and their readings (HDDT data issue).
-- A device (FHIR Device) with its calibration state (FHIR DeviceMetric).
CREATE TABLE hddt_devices (
    id                   TEXT    PRIMARY KEY NOT NULL,
    format               BIGINT NOT NULL DEFAULT 1,
    patient_uid          TEXT    NOT NULL REFERENCES participants (uid),
    model                TEXT    NOT NULL,
    serial_number        TEXT    NOT NULL,
    unit                 TEXT    NOT NULL CHECK (unit IN ('mg/dL', 'mmol/L')),
    status               TEXT    NOT NULL CHECK (status IN ('active', 'inactive')),
    version              BIGINT NOT NULL,
    created_at_us        BIGINT NOT NULL,
    updated_at_us        BIGINT NOT NULL,
    last_sync_at_us      BIGINT,
    metric_id            TEXT    UNIQUE,
    metric_version       BIGINT NOT NULL,
    calibration_state    TEXT    NOT NULL,
    calibration_time_us  BIGINT,
    calibration_epoch    BIGINT NOT NULL
);
CREATE INDEX hddt_devices_patient ON hddt_devices (patient_uid, id);
CREATE UNIQUE INDEX hddt_devices_serial ON hddt_devices (patient_uid, model, serial_number);

-- Every version of every device (vread of Device and DeviceMetric).
CREATE TABLE hddt_device_history (
    id                   TEXT    NOT NULL REFERENCES hddt_devices (id),
    version              BIGINT NOT NULL,
    metric_version       BIGINT NOT NULL,
    patient_uid          TEXT    NOT NULL,
    model                TEXT    NOT NULL,
    serial_number        TEXT    NOT NULL,
    unit                 TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    created_at_us        BIGINT NOT NULL,
    updated_at_us        BIGINT NOT NULL,
    last_sync_at_us      BIGINT,
    metric_id            TEXT,
    calibration_state    TEXT    NOT NULL,
    calibration_time_us  BIGINT,
    calibration_epoch    BIGINT NOT NULL,
    PRIMARY KEY (id, version, metric_version)
);

-- One FHIR Observation: a single reading or a CGM chunk.
CREATE TABLE hddt_observations (
    id                  TEXT    PRIMARY KEY NOT NULL,
    format              BIGINT NOT NULL DEFAULT 1,
    patient_uid         TEXT    NOT NULL,
    device_id           TEXT    NOT NULL REFERENCES hddt_devices (id),
    metric_id           TEXT,
    kind                TEXT    NOT NULL CHECK (kind IN ('single', 'chunk')),
    code                TEXT    NOT NULL,
    effective_start_us  BIGINT NOT NULL,
    effective_end_us    BIGINT NOT NULL,
    value               DOUBLE PRECISION,
    comparator          TEXT    CHECK (comparator IN ('<', '>')),
    unit                TEXT    NOT NULL,
    period_ms           BIGINT,
    samples             TEXT,
    status              TEXT    NOT NULL CHECK (status IN ('final', 'preliminary')),
    version             BIGINT NOT NULL,
    last_updated_us     BIGINT NOT NULL,
    epoch               BIGINT NOT NULL
);
CREATE UNIQUE INDEX hddt_observations_series ON hddt_observations (device_id, kind, effective_start_us, epoch);
CREATE INDEX hddt_observations_search ON hddt_observations (patient_uid, effective_start_us, id);
CREATE INDEX hddt_observations_open ON hddt_observations (device_id, status, effective_end_us);

-- Accepted upload batches (idempotency by the client's batch id).
CREATE TABLE hddt_batches (
    patient_uid    TEXT    NOT NULL REFERENCES participants (uid),
    batch_id       TEXT    NOT NULL,
    digest         BYTEA    NOT NULL,
    reading_count  BIGINT NOT NULL,
    stored_at_us   BIGINT NOT NULL,
    PRIMARY KEY (patient_uid, batch_id)
);
