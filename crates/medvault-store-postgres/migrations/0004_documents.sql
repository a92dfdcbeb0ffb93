-- medvault schema 4: connections between participants and sealed documents.
CREATE TABLE connections (
    uid_low          TEXT    NOT NULL REFERENCES participants (uid),
    uid_high         TEXT    NOT NULL REFERENCES participants (uid),
    format           BIGINT NOT NULL DEFAULT 1,
    inviter          TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'active')),
    created_at_us    BIGINT NOT NULL,
    accepted_at_us   BIGINT,
    PRIMARY KEY (uid_low, uid_high),
    CHECK (uid_low COLLATE "C" < uid_high COLLATE "C"),
    CHECK (inviter IN (uid_low, uid_high))
);
CREATE INDEX connections_by_high ON connections (uid_high);

-- Ciphertexts only: title, media type and body are encrypted by the sender.
CREATE TABLE documents (
    id                    TEXT    PRIMARY KEY NOT NULL,
    format                BIGINT NOT NULL DEFAULT 1,
    sender_uid            TEXT    NOT NULL REFERENCES participants (uid),
    sender_credential_id  TEXT    NOT NULL REFERENCES working_credentials (id),
    sender_certificate    BYTEA    NOT NULL,
    signature             BYTEA    NOT NULL,
    sealed_header         BYTEA    NOT NULL,
    sealed_body           BYTEA    NOT NULL,
    size                  BIGINT NOT NULL,
    created_at_us         BIGINT NOT NULL
);

CREATE TABLE document_recipients (
    document_id    TEXT NOT NULL REFERENCES documents (id),
    recipient_uid  TEXT NOT NULL REFERENCES participants (uid),
    sealed_key     BYTEA NOT NULL,
    PRIMARY KEY (document_id, recipient_uid)
);
CREATE INDEX document_recipients_by_recipient ON document_recipients (recipient_uid);
