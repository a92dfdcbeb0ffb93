//! Integration tests of the PostgreSQL backend: the shared conformance suite plus
//! what only PostgreSQL has. They run when `MEDVAULT_TEST_POSTGRES_URL` is set,
//! each test in a schema of its own, and say that they were skipped otherwise.
//! When the variable is set and the database cannot be reached, they fail.
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
use medvault_store_postgres::test_schema::TestSchema;

async fn fresh() -> Option<Fixture> {
    let url = TestSchema::url_from_env()?;
    let schema = TestSchema::create(&url)
        .await
        .expect("MEDVAULT_TEST_POSTGRES_URL is set but the database cannot be reached");
    let store = schema.store().await.unwrap();
    Some(Fixture {
        store: Arc::new(store),
        guard: Box::new(schema),
    })
}

mod conformance {
    medvault_store::store_conformance_tests!(super::fresh);
}

#[tokio::test]
async fn refuses_a_schema_newer_than_it_knows() {
    let Some(url) = TestSchema::url_from_env() else {
        medvault_store::conformance::report_skipped("refuses_a_schema_newer_than_it_knows");
        return;
    };
    let schema = TestSchema::create(&url).await.unwrap();
    let store = schema.store().await.unwrap();
    let raw = store_pool(&url, schema.name()).await;
    sqlx::query("INSERT INTO medvault_schema (version, description, applied_at_us) VALUES (999, 'from the future', 0)")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    store.close().await;
    let outcome = schema.store().await;
    assert!(
        matches!(
            outcome,
            Err(StoreError::SchemaTooNew { found: 999, known }) if Some(known) == medvault_store_postgres::MIGRATIONS.last().map(|m| m.version)
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn nodes_starting_together_migrate_once() {
    let Some(url) = TestSchema::url_from_env() else {
        medvault_store::conformance::report_skipped("nodes_starting_together_migrate_once");
        return;
    };
    let schema = TestSchema::create(&url).await.unwrap();
    let (a, b, c) = tokio::join!(schema.store(), schema.store(), schema.store());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        Some(a.schema_version().await.unwrap()),
        medvault_store_postgres::MIGRATIONS
            .last()
            .map(|m| m.version)
    );
    a.insert_audit_entry(&medvault_store::conformance::sample_entry(1))
        .await
        .unwrap();
    assert_eq!(b.last_audit_entry().await.unwrap().map(|e| e.seq), Some(1));
    for store in [a, b, c] {
        store.close().await;
    }
}

#[tokio::test]
async fn a_bad_url_is_refused_without_echoing_it() {
    let outcome =
        medvault_store_postgres::PostgresStore::connect("postgres://user:s3cret@[::1").await;
    let message = outcome.unwrap_err().to_string();
    assert!(!message.contains("s3cret"), "{message}");
}

async fn store_pool(url: &str, schema: &str) -> sqlx::PgPool {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .unwrap()
        .options([("search_path", schema)]);
    sqlx::PgPool::connect_with(options).await.unwrap()
}
