-- medvault schema 4: connections between participants and sealed documents.
CREATE TABLE connections (
    uid_low          TEXT    NOT NULL REFERENCES participants (uid),
    uid_high         TEXT    NOT NULL REFERENCES participants (uid),
    format           INTEGER NOT NULL DEFAULT 1,
    inviter          TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'active')),
    created_at_us    INTEGER NOT NULL,
    accepted_at_us   INTEGER,
    PRIMARY KEY (uid_low, uid_high),
    CHECK (uid_low < uid_high),
    CHECK (inviter IN (uid_low, uid_high))
) STRICT;
CREATE INDEX connections_by_high ON connections (uid_high);

-- Ciphertexts only: title, media type and body are encrypted by the sender.
CREATE TABLE documents (
    id                    TEXT    PRIMARY KEY NOT NULL,
    format                INTEGER NOT NULL DEFAULT 1,
    sender_uid            TEXT    NOT NULL REFERENCES participants (uid),
    sender_credential_id  TEXT    NOT NULL REFERENCES working_credentials (id),
    sender_certificate    BLOB    NOT NULL,
    signature             BLOB    NOT NULL,
    sealed_header         BLOB    NOT NULL,
    sealed_body           BLOB    NOT NULL,
    size                  INTEGER NOT NULL,
    created_at_us         INTEGER NOT NULL
) STRICT;

CREATE TABLE document_recipients (
    document_id    TEXT NOT NULL REFERENCES documents (id),
    recipient_uid  TEXT NOT NULL REFERENCES participants (uid),
    sealed_key     BLOB NOT NULL,
    PRIMARY KEY (document_id, recipient_uid)
) STRICT;
CREATE INDEX document_recipients_by_recipient ON document_recipients (recipient_uid);
