-- medvault schema 7: identity proofing, one-time credential codes and the
-- replay cache of credential requests (Patient Credential).
CREATE TABLE identity_proofings (
    id               TEXT    PRIMARY KEY NOT NULL,
    format           BIGINT NOT NULL DEFAULT 1,
    institution_uid  TEXT    NOT NULL REFERENCES participants (uid),
    patient_uid      TEXT    NOT NULL REFERENCES participants (uid),
    assurance        TEXT    NOT NULL CHECK (assurance IN ('IAL2')),
    method           TEXT    NOT NULL CHECK (method IN ('in-person', 'supervised-remote', 'eid')),
    evidence_type    TEXT    NOT NULL CHECK (evidence_type IN ('id-card', 'passport', 'residence-permit', 'eid')),
    proofed_by       TEXT    NOT NULL,
    proofed_at_us    BIGINT NOT NULL
);
CREATE INDEX identity_proofings_by_patient ON identity_proofings (patient_uid);

CREATE TABLE credential_codes (
    code_hash      BYTEA    PRIMARY KEY NOT NULL,
    format         BIGINT NOT NULL DEFAULT 1,
    proofing_id    TEXT    NOT NULL REFERENCES identity_proofings (id),
    patient_uid    TEXT    NOT NULL REFERENCES participants (uid),
    expires_at_us  BIGINT NOT NULL,
    used_at_us     BIGINT
);

CREATE TABLE credential_request_jtis (
    jti            TEXT    PRIMARY KEY NOT NULL,
    expires_at_us  BIGINT NOT NULL
);
CREATE INDEX credential_request_jtis_by_expiry ON credential_request_jtis (expires_at_us);
