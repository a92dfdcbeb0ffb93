//! Integration tests of the SQLite backend: the shared conformance suite plus
//! what only SQLite has (its file, its pragmas, its schema check).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "integration tests: a failed expectation must fail the test, and deadlines use the wall clock"
)]

use std::sync::Arc;

use medvault_store::conformance::Fixture;
use medvault_store::{AuditStore, Store, StoreError};
use medvault_store_sqlite::SqliteStore;

async fn fresh() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("medvault.db"))
        .await
        .unwrap();
    Some(Fixture {
        store: Arc::new(store),
        guard: Box::new(dir),
    })
}

mod conformance {
    medvault_store::store_conformance_tests!(super::fresh);
}

#[tokio::test]
async fn refuses_a_schema_newer_than_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medvault.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.close().await;

    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("INSERT INTO medvault_schema (version, description, applied_at_us) VALUES (999, 'from the future', 0)")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;

    let outcome = SqliteStore::open(&path).await;
    assert!(
        matches!(
            outcome,
            Err(StoreError::SchemaTooNew { found: 999, known }) if Some(known) == medvault_store_sqlite::MIGRATIONS.last().map(|m| m.version)
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_migrate_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medvault.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .insert_audit_entry(&medvault_store::conformance::sample_entry(1))
        .await
        .unwrap();
    store.close().await;
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        Some(store.schema_version().await.unwrap()),
        medvault_store_sqlite::MIGRATIONS.last().map(|m| m.version)
    );
    assert_eq!(
        store.last_audit_entry().await.unwrap().map(|e| e.seq),
        Some(1)
    );
}

#[tokio::test]
async fn runs_in_wal_mode_with_foreign_keys_and_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medvault.db");
    let _store = SqliteStore::open(&path).await.unwrap();
    assert!(
        dir.path().join("medvault.db-wal").exists(),
        "WAL file missing"
    );
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
}
