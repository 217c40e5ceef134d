-- Every record a verification attempt was checked against: a number shared by several
-- records counts against each of them, so no caller dodges the per-record limit that way.
CREATE TABLE ivr_verification_records (
    verification_id BIGINT NOT NULL REFERENCES ivr_verifications (id) ON DELETE CASCADE,
    entity          TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    at              BIGINT NOT NULL, -- unix ms, the attempt's
    PRIMARY KEY (verification_id, entity, record_id)
);
CREATE INDEX ivr_verification_records_by_record ON ivr_verification_records (entity, record_id, at);
INSERT INTO ivr_verification_records (verification_id, entity, record_id, at)
    SELECT id, entity, record_id, at FROM ivr_verifications WHERE entity IS NOT NULL AND record_id IS NOT NULL;
-- The limit over all numbers counts the last minute's attempts.
CREATE INDEX ivr_verifications_by_time ON ivr_verifications (at);
