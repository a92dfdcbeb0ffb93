-- medvault schema 1: audit trail and registered client certificates.
CREATE TABLE audit_entries (
    seq            BIGINT PRIMARY KEY,
    format         SMALLINT NOT NULL DEFAULT 1,
    recorded_at_us BIGINT   NOT NULL,
    actor          TEXT     NOT NULL,
    subject        TEXT     NOT NULL,
    event_type     TEXT     NOT NULL,
    outcome        TEXT     NOT NULL,
    detail         TEXT     NOT NULL,
    prev_hash      BYTEA    NOT NULL,
    entry_hash     BYTEA    NOT NULL
);
CREATE INDEX audit_entries_subject ON audit_entries (subject, seq);
CREATE INDEX audit_entries_event_type ON audit_entries (event_type, seq);
CREATE INDEX audit_entries_recorded_at ON audit_entries (recorded_at_us);

CREATE TABLE audit_checkpoints (
    number        BIGINT PRIMARY KEY,
    format        SMALLINT NOT NULL DEFAULT 1,
    kind          TEXT    NOT NULL CHECK (kind IN ('head', 'retention')),
    seq           BIGINT NOT NULL,
    entry_hash    BYTEA NOT NULL,
    created_at_us BIGINT NOT NULL,
    prev_hash     BYTEA NOT NULL,
    key_id        TEXT    NOT NULL,
    signature     BYTEA NOT NULL
);
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

CREATE TABLE client_certificates (
    fingerprint      BYTEA    PRIMARY KEY,
    format           SMALLINT NOT NULL DEFAULT 1,
    der              BYTEA    NOT NULL,
    owner            TEXT     NOT NULL,
    registered_at_us BIGINT   NOT NULL
);
