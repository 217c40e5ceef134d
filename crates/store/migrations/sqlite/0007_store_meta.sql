-- Facts about how the stored data was built, e.g. `phone_index:contact` = the phone rules
-- (`PhoneNormalizer::index_rules`) and phone fields its index keys were computed with: when
-- they differ from the running ones the index is rebuilt from the records' fields.
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
