-- medvault schema 3: working credentials, their wrapped keys, passwords,
-- sessions, login challenges and the login throttle.
CREATE TABLE working_credentials (
    id               TEXT    PRIMARY KEY NOT NULL,
    format           BIGINT NOT NULL DEFAULT 1,
    uid              TEXT    NOT NULL REFERENCES participants (uid),
    kind             TEXT    NOT NULL CHECK (kind IN ('password', 'superpin', 'tan', 'software-certificate', 'smartcard')),
    public_key       BYTEA    NOT NULL,
    certificate      BYTEA    NOT NULL,
    created_at_us    BIGINT NOT NULL,
    removed_at_us    BIGINT
);
CREATE INDEX working_credentials_by_uid ON working_credentials (uid, created_at_us);

-- One wrapped copy of the participant's keys per credential slot; deleted
-- with the credential's removal.
CREATE TABLE credential_keys (
    credential_id       TEXT    NOT NULL REFERENCES working_credentials (id),
    slot                BIGINT NOT NULL CHECK (slot >= 0),
    format              BIGINT NOT NULL DEFAULT 1,
    proof_hash          BYTEA,
    wrapped_root_key    BYTEA    NOT NULL,
    wrapped_signing_key BYTEA,
    ecdh_public_key     BYTEA,
    used_at_us          BIGINT,
    PRIMARY KEY (credential_id, slot)
);

-- The OPAQUE record of a password credential; the email is normalized.
CREATE TABLE passwords (
    email          TEXT    PRIMARY KEY NOT NULL,
    credential_id  TEXT    NOT NULL UNIQUE REFERENCES working_credentials (id),
    format         BIGINT NOT NULL DEFAULT 1,
    suite          BIGINT NOT NULL,
    password_file  BYTEA    NOT NULL
);

-- Sessions by the SHA-256 of their bearer token.
CREATE TABLE sessions (
    token_hash     BYTEA    PRIMARY KEY NOT NULL,
    format         BIGINT NOT NULL DEFAULT 1,
    uid            TEXT    NOT NULL REFERENCES participants (uid),
    credential_id  TEXT    NOT NULL REFERENCES working_credentials (id),
    created_at_us  BIGINT NOT NULL,
    expires_at_us  BIGINT NOT NULL
);
CREATE INDEX sessions_by_credential ON sessions (credential_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at_us);

-- The pending half of a two-message login; taken (deleted) once.
CREATE TABLE login_challenges (
    id             TEXT    PRIMARY KEY NOT NULL,
    format         BIGINT NOT NULL DEFAULT 1,
    credential_id  TEXT,
    purpose        TEXT    NOT NULL CHECK (purpose IN ('signature', 'opaque')),
    throttle_key   TEXT    NOT NULL,
    state          BYTEA    NOT NULL,
    expires_at_us  BIGINT NOT NULL
);
CREATE INDEX login_challenges_by_expiry ON login_challenges (expires_at_us);

-- Failed logins per account and per source address.
CREATE TABLE login_throttle (
    key               TEXT    PRIMARY KEY NOT NULL,
    failures          BIGINT NOT NULL,
    last_failure_us   BIGINT NOT NULL,
    locked_until_us   BIGINT NOT NULL
);
