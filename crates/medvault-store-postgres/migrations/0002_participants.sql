-- medvault schema 2: participants and their directory entries.
-- Rows are never deleted: a UID is never handed out twice.
CREATE TABLE participants (
    uid              TEXT    PRIMARY KEY NOT NULL,
    format           SMALLINT NOT NULL DEFAULT 1,
    kind             TEXT    NOT NULL CHECK (kind IN ('patient', 'institution:practice', 'institution:hospital', 'institution:pharmacy', 'hcp')),
    display_name     TEXT,
    root_public_key  BYTEA  NOT NULL,
    -- The CA's certificate binding root_public_key to uid (a compact JWS).
    root_key_certificate TEXT NOT NULL,
    registered_at_us BIGINT NOT NULL,
    -- A patient's directory entry names nothing; everyone else's names them.
    CHECK ((kind = 'patient') = (display_name IS NULL))
);
