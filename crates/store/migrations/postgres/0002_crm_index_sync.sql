-- Where the local phone index of an external CRM stands, per entity: the change feed's
-- cursor (a Dataverse delta link, a Salesforce high-water mark) advances in the same
-- transaction as the records it brought.
CREATE TABLE crm_sync_state (
    entity     TEXT PRIMARY KEY,
    cursor     TEXT,
    complete   BOOLEAN NOT NULL DEFAULT FALSE, -- the first full sync has finished
    synced_at  BIGINT,                         -- unix ms of the last successful page
    last_error TEXT
);
