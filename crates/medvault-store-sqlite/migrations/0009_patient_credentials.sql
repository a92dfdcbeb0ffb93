-- medvault schema 9: issued Patient Credentials and their status, IAL2
-- presentation nonces, and the assurance level of sessions.
CREATE TABLE patient_credentials (
    id                    TEXT    PRIMARY KEY NOT NULL,
    format                INTEGER NOT NULL DEFAULT 1,
    institution_uid       TEXT    NOT NULL REFERENCES participants (uid),
    patient_uid           TEXT    NOT NULL REFERENCES participants (uid),
    proofing_id           TEXT    NOT NULL REFERENCES identity_proofings (id),
    subject               TEXT    NOT NULL,
    jti                   TEXT    NOT NULL,
    kid                   TEXT    NOT NULL REFERENCES issuer_keys (kid),
    status_index          INTEGER NOT NULL CHECK (status_index >= 0),
    key_protection        TEXT    NOT NULL CHECK (key_protection IN ('software', 'pkcs11', 'secure-element')),
    client_id             TEXT    NOT NULL,
    issued_at_us          INTEGER NOT NULL,
    expires_at_us         INTEGER NOT NULL,
    status                TEXT    NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    status_changed_at_us  INTEGER
) STRICT;
CREATE UNIQUE INDEX patient_credentials_by_status_index ON patient_credentials (institution_uid, status_index);
CREATE UNIQUE INDEX patient_credentials_one_per_proofing ON patient_credentials (proofing_id);
CREATE INDEX patient_credentials_by_patient ON patient_credentials (patient_uid);

CREATE TABLE presentation_nonces (
    nonce_hash     BLOB    PRIMARY KEY NOT NULL,
    uid            TEXT    NOT NULL REFERENCES participants (uid),
    expires_at_us  INTEGER NOT NULL
) STRICT;
CREATE INDEX presentation_nonces_by_expiry ON presentation_nonces (expires_at_us);

ALTER TABLE sessions ADD COLUMN assurance TEXT NOT NULL DEFAULT 'IAL1' CHECK (assurance IN ('IAL1', 'IAL2'));
ALTER TABLE sessions ADD COLUMN patient_credential_id TEXT REFERENCES patient_credentials (id);
