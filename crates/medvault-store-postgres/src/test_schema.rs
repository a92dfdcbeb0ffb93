//! Throw-away PostgreSQL schemas for tests.
//!
//! Each test gets a schema of its own (`medvault_test_<uuid>`), so tests run in
//! parallel against one database without seeing each other's rows. The schema is
//! dropped when its [`TestSchema`] guard is dropped.

use std::time::Duration;

use sqlx::Connection;

use crate::{PostgresStore, parse_url};
use medvault_store::StoreError;

/// The environment variable that names the test database.
pub const TEST_URL_VARIABLE: &str = "MEDVAULT_TEST_POSTGRES_URL";

/// A schema that exists until this guard is dropped.
#[derive(Debug)]
pub struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    /// Creates a fresh schema in the database at `url`.
    pub async fn create(url: &str) -> Result<Self, StoreError> {
        let name = format!("medvault_test_{}", uuid::Uuid::new_v4().simple());
        let mut connection = sqlx::PgConnection::connect_with(&parse_url(url)?)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut connection)
            .await
            .map_err(|error| StoreError::Database(error.to_string()))?;
        let _ = connection.close().await;
        Ok(Self {
            url: url.to_owned(),
            name,
        })
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A store whose tables live in this schema.
    pub async fn store(&self) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_in_schema(&self.url, &self.name).await
    }

    /// The database URL from [`TEST_URL_VARIABLE`], if set.
    pub fn url_from_env() -> Option<String> {
        std::env::var(TEST_URL_VARIABLE)
            .ok()
            .filter(|url| !url.is_empty())
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop may run inside an async runtime, where blocking is not allowed:
        // clean up on a thread of its own with a small runtime.
        let url = self.url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(options) = parse_url(&url) else { return };
                let connect = sqlx::PgConnection::connect_with(&options);
                if let Ok(Ok(mut connection)) =
                    tokio::time::timeout(Duration::from_secs(5), connect).await
                {
                    // Never hang a test run on a lock some leaked connection holds.
                    let drop_schema =
                        format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop_schema))
                        .execute(&mut connection)
                        .await;
                    let _ = connection.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
