-- Every caller verification attempt of the IVR (PIN, order number…): the audit trail, and
-- what the attempt limits per caller number and per record are counted from.
CREATE TABLE ivr_verifications (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL, -- unix ms
    number     TEXT NOT NULL,   -- the caller's number, E.164 when it has one
    entity     TEXT,            -- the record checked, if one was identified
    record_id  TEXT,
    kind       TEXT NOT NULL,   -- what was checked: pin, order, …
    outcome    TEXT NOT NULL    -- verified | refused | locked
);
CREATE INDEX ivr_verifications_by_number ON ivr_verifications (number, at);
CREATE INDEX ivr_verifications_by_record ON ivr_verifications (entity, record_id, at);
