-- medvault schema 5: Account App requests (login and registration pages).
CREATE TABLE account_requests (
    id             TEXT    PRIMARY KEY NOT NULL,
    format         INTEGER NOT NULL DEFAULT 1,
    purpose        TEXT    NOT NULL CHECK (purpose IN ('login', 'register')),
    code_hash      BLOB    NOT NULL UNIQUE,
    return_to      TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'redirected', 'done')),
    uid            TEXT    REFERENCES participants (uid),
    credential_id  TEXT,
    result_hash    BLOB    UNIQUE,
    created_at_us  INTEGER NOT NULL,
    expires_at_us  INTEGER NOT NULL
) STRICT;
CREATE INDEX account_requests_by_expiry ON account_requests (expires_at_us);
