-- The row the health check writes to prove the database takes writes (a full disk or a
-- read-only server refuse it).
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at BIGINT NOT NULL
);

-- Deliveries made, counted when they happen: the health check reads this row instead of
-- counting an outbox that grows by every conversation (pruning removes rows, not deliveries).
CREATE TABLE outbox_totals (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    delivered BIGINT NOT NULL
);
INSERT INTO outbox_totals (id, delivered) SELECT 1, COUNT(*) FROM outbox WHERE state = 'delivered';

-- What the pruning job walks: old delivered items and old events (old audit rows: by the
-- index on ivr_verifications (at) of 0006).
CREATE INDEX outbox_by_state_updated ON outbox (state, updated_at);
CREATE INDEX events_by_received ON events (received_at);
