-- medvault schema 1: audit trail and registered client certificates.
CREATE TABLE audit_entries (
    seq            INTEGER PRIMARY KEY NOT NULL,
    format         INTEGER NOT NULL DEFAULT 1,
    recorded_at_us INTEGER NOT NULL,
    actor          TEXT    NOT NULL,
    subject        TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    prev_hash      BLOB    NOT NULL,
    entry_hash     BLOB    NOT NULL
) STRICT;
CREATE INDEX audit_entries_subject ON audit_entries (subject, seq);
CREATE INDEX audit_entries_event_type ON audit_entries (event_type, seq);
CREATE INDEX audit_entries_recorded_at ON audit_entries (recorded_at_us);

CREATE TABLE audit_checkpoints (
    number        INTEGER PRIMARY KEY NOT NULL,
    format        INTEGER NOT NULL DEFAULT 1,
    kind          TEXT    NOT NULL CHECK (kind IN ('head', 'retention')),
    seq           INTEGER NOT NULL,
    entry_hash    BLOB NOT NULL,
    created_at_us INTEGER NOT NULL,
    prev_hash     BLOB NOT NULL,
    key_id        TEXT    NOT NULL,
    signature     BLOB NOT NULL
) STRICT;
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

CREATE TABLE client_certificates (
    fingerprint      BLOB    PRIMARY KEY NOT NULL,
    format           INTEGER NOT NULL DEFAULT 1,
    der              BLOB    NOT NULL,
    owner            TEXT    NOT NULL,
    registered_at_us INTEGER NOT NULL
) STRICT;
