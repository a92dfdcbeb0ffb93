-- medvault schema 10: the HDDT authorization server (pairing issue).
-- The server's own keys: the token signing key and the Pairing ID secret, wrapped.
CREATE TABLE server_keys (
    kid               TEXT    PRIMARY KEY NOT NULL,
    format            BIGINT NOT NULL DEFAULT 1,
    purpose           TEXT    NOT NULL CHECK (purpose IN ('oauth-signing', 'pairing-secret')),
    public_jwk        TEXT,
    wrapped_secret    BYTEA    NOT NULL,
    created_at_us     BIGINT NOT NULL,
    retired_at_us     BIGINT,
    publish_until_us  BIGINT NOT NULL
);
CREATE UNIQUE INDEX server_keys_one_current ON server_keys (purpose) WHERE retired_at_us IS NULL;

-- Pushed authorization requests and their consent interaction.
CREATE TABLE hddt_authorizations (
    request_uri                TEXT    PRIMARY KEY NOT NULL,
    format                     BIGINT NOT NULL DEFAULT 1,
    client_id                  TEXT    NOT NULL,
    request                    TEXT    NOT NULL,
    created_at_us              BIGINT NOT NULL,
    expires_at_us              BIGINT NOT NULL,
    opened_at_us               BIGINT,
    csrf_hash                  BYTEA,
    interaction_expires_at_us  BIGINT,
    patient_uid                TEXT    REFERENCES participants (uid),
    finished_at_us             BIGINT,
    outcome                    TEXT    CHECK (outcome IN ('approved', 'denied'))
);
CREATE INDEX hddt_authorizations_expiry ON hddt_authorizations (expires_at_us);

-- One-time tickets that log a patient in on the consent page (one per patient).
CREATE TABLE hddt_login_tickets (
    ticket_hash    BYTEA    PRIMARY KEY NOT NULL,
    format         BIGINT NOT NULL DEFAULT 1,
    patient_uid    TEXT    NOT NULL UNIQUE REFERENCES participants (uid),
    created_at_us  BIGINT NOT NULL,
    expires_at_us  BIGINT NOT NULL
);

-- Pairings: never deleted, so a Pairing ID stays stable.
CREATE TABLE hddt_pairings (
    pairing_id     TEXT    PRIMARY KEY NOT NULL,
    format         BIGINT NOT NULL DEFAULT 1,
    client_id      TEXT    NOT NULL,
    patient_uid    TEXT    NOT NULL REFERENCES participants (uid),
    created_at_us  BIGINT NOT NULL,
    UNIQUE (client_id, patient_uid)
);
CREATE INDEX hddt_pairings_patient ON hddt_pairings (patient_uid);

-- Grants: one consent each, and the refresh token generation issued under it.
CREATE TABLE hddt_grants (
    id                  TEXT    PRIMARY KEY NOT NULL,
    format              BIGINT NOT NULL DEFAULT 1,
    pairing_id          TEXT    NOT NULL REFERENCES hddt_pairings (pairing_id),
    client_id           TEXT    NOT NULL,
    scope               TEXT    NOT NULL,
    consent_until_us    BIGINT NOT NULL,
    consent_basis       TEXT    NOT NULL CHECK (consent_basis IN ('prescription', 'patient')),
    created_at_us       BIGINT NOT NULL,
    refresh_generation  BIGINT NOT NULL DEFAULT 0,
    rotated_at_us       BIGINT,
    revoked_at_us       BIGINT,
    revoke_reason       TEXT
);
CREATE INDEX hddt_grants_pairing ON hddt_grants (pairing_id);
CREATE INDEX hddt_grants_client ON hddt_grants (client_id);

-- Authorization codes, stored hashed.
CREATE TABLE hddt_codes (
    code_hash       BYTEA    PRIMARY KEY NOT NULL,
    format          BIGINT NOT NULL DEFAULT 1,
    grant_id        TEXT    NOT NULL REFERENCES hddt_grants (id),
    client_id       TEXT    NOT NULL,
    redirect_uri    TEXT    NOT NULL,
    code_challenge  TEXT    NOT NULL,
    expires_at_us   BIGINT NOT NULL,
    used_at_us      BIGINT
);

-- Small shared state: the retired switch, DiGAs missing from the registry.
CREATE TABLE hddt_state (
    name           TEXT    PRIMARY KEY NOT NULL,
    value          TEXT    NOT NULL,
    changed_at_us  BIGINT NOT NULL
);
