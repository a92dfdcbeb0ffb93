-- medvault schema 6: at most one active password, SuperPIN and TAN batch per
-- participant, also when two enrolments race.
CREATE UNIQUE INDEX working_credentials_one_per_kind
    ON working_credentials (uid, kind)
    WHERE removed_at_us IS NULL AND kind IN ('password', 'superpin', 'tan');
