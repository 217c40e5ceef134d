-- The PostgreSQL twin of migrations/sqlite/0001_initial.sql: the same tables and columns.
-- Timestamps stay BIGINT unix ms (as in SQLite) so both backends share one row mapping;
-- record fields are JSONB so field matches and text search run in the database.

-- Conversations: indexed columns for the queries the hub runs, the rest as JSON.
CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    state         TEXT NOT NULL,
    last_event_at BIGINT NOT NULL, -- unix ms
    ended_at      BIGINT,          -- unix ms
    revision      BIGINT NOT NULL,
    body          TEXT NOT NULL    -- serde_json of the domain's Conversation
);
CREATE INDEX conversations_by_state_last_event ON conversations (state, last_event_at);
CREATE INDEX conversations_by_state_ended ON conversations (state, ended_at);

-- Every id a source knows a conversation by: its stable id and each leg's id.
CREATE TABLE conversation_keys (
    source          TEXT NOT NULL,
    key             TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    PRIMARY KEY (source, key)
);

-- Which agents a conversation concerns, for reconnects.
CREATE TABLE conversation_agents (
    agent           TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    PRIMARY KEY (agent, conversation_id)
);

-- Deduplication of inbound events by a key derived from the source's own ids.
CREATE TABLE events (
    dedup_key       TEXT PRIMARY KEY,
    conversation_id TEXT,
    received_at     BIGINT NOT NULL
);

-- Pending writes to external systems. One row per idempotency key.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    state           TEXT NOT NULL,    -- pending | delivered | dead
    generation      BIGINT NOT NULL,  -- bumped whenever new data must be (re)delivered
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,  -- unix ms
    claimed_until   BIGINT,           -- unix ms; a worker's lease
    last_error      TEXT,
    crm_ref         TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
-- outbox_for_conversation; SQLite scans for it, a shared database with many nodes should not.
CREATE INDEX outbox_by_conversation ON outbox (conversation_id);

-- The built-in CRM.
CREATE TABLE crm_records (
    entity     TEXT NOT NULL,
    id         TEXT NOT NULL,
    fields     JSONB NOT NULL, -- object of strings
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (entity, id)
);

-- Phone numbers of records, normalized once on write. Identification reads only this.
CREATE TABLE crm_phone_index (
    e164      TEXT NOT NULL,
    entity    TEXT NOT NULL,
    record_id TEXT NOT NULL,
    field     TEXT NOT NULL,
    PRIMARY KEY (e164, entity, record_id, field)
);
CREATE INDEX crm_phone_index_by_record ON crm_phone_index (entity, record_id);

CREATE TABLE crm_activities (
    id         TEXT PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    fields     TEXT NOT NULL, -- serde_json of the activity's fields, stored as given
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE crm_activity_links (
    activity_id TEXT NOT NULL,
    entity      TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    is_primary  BOOLEAN NOT NULL,
    PRIMARY KEY (activity_id, entity, record_id)
);
CREATE INDEX crm_activity_links_by_record ON crm_activity_links (entity, record_id);
