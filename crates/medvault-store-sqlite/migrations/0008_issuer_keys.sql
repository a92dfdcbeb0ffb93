-- medvault schema 8: institutions' credential issuer keys (Patient Credential).
CREATE TABLE issuer_keys (
    kid                  TEXT    PRIMARY KEY NOT NULL,
    format               INTEGER NOT NULL DEFAULT 1,
    institution_uid      TEXT    NOT NULL REFERENCES participants (uid),
    public_jwk           TEXT    NOT NULL,
    wrapped_private_key  BLOB    NOT NULL,
    created_at_us        INTEGER NOT NULL,
    retired_at_us        INTEGER,
    publish_until_us     INTEGER NOT NULL
) STRICT;
-- One signing key per institution at a time.
CREATE UNIQUE INDEX issuer_keys_one_current ON issuer_keys (institution_uid) WHERE retired_at_us IS NULL;
