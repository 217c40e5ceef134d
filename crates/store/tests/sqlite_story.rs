//! The conformance story on a real SQLite file.

mod conformance;

use cxbridge_domain::crm::EntitySpec;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_store::sqlite::{CrmSchema, Durability};
use cxbridge_store::SqliteStore;

#[tokio::test]
async fn sqlite_passes_the_conformance_story() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = CrmSchema {
        entities: EntitySpec::builtin_defaults(),
        normalizer: PhoneNormalizer::new(Some("DE"), &[]).expect("region"),
    };
    let store = SqliteStore::open(&dir.path().join("cxbridge.sqlite"), schema.clone(), Durability::Full).await.expect("open");
    conformance::story(&store).await;

    // Reopening runs migrations again (no-op) and sees the data.
    drop(store);
    let store = SqliteStore::open(&dir.path().join("cxbridge.sqlite"), schema, Durability::Full).await.expect("reopen");
    use cxbridge_store::CrmStore;
    assert_eq!(store.count_records("lead").await.expect("count"), 2);
}

#[tokio::test]
async fn sqlite_passes_the_retention_story() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = CrmSchema { entities: EntitySpec::builtin_defaults(), normalizer: PhoneNormalizer::new(Some("DE"), &[]).expect("region") };
    let store = SqliteStore::open(&dir.path().join("cxbridge.sqlite"), schema, Durability::Full).await.expect("open");
    conformance::retention_story(&store).await;
}

#[tokio::test]
async fn sqlite_rebuilds_the_phone_index_when_the_phone_rules_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cxbridge.sqlite");
    let schema = |region: &str| CrmSchema { entities: EntitySpec::builtin_defaults(), normalizer: PhoneNormalizer::new(Some(region), &[]).expect("region") };
    let store = SqliteStore::open(&path, schema("DE"), Durability::Full).await.expect("open");
    let ids = conformance::reindex_story_before(&store).await;
    drop(store);
    let store = SqliteStore::open(&path, schema("AT"), Durability::Full).await.expect("reopen");
    conformance::reindex_story_after(&store, &ids).await;
}
