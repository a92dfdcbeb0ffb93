-- medvault schema 12: what each DiGA read, per pairing, day and interaction
-- (counts, for the patient's view; the request log holds every request).
CREATE TABLE hddt_accesses (
    pairing_id   TEXT    NOT NULL REFERENCES hddt_pairings (pairing_id),
    day          TEXT    NOT NULL,
    interaction  TEXT    NOT NULL,
    count        BIGINT NOT NULL,
    last_at_us   BIGINT NOT NULL,
    PRIMARY KEY (pairing_id, day, interaction)
);
CREATE INDEX hddt_accesses_day ON hddt_accesses (day);
