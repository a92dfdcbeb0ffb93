//! One fresh store per test, with raw SQL access to tamper with it.

use std::str::FromStr;
use std::sync::Arc;

use medvault_audit::{AuditTrail, CheckpointKey};
use medvault_core::ManualClock;
use medvault_store::Store;
use medvault_store_postgres::test_schema::TestSchema;
use medvault_store_sqlite::SqliteStore;
use time::macros::datetime;

/// Which database a harness runs on.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct Harness {
    pub store: Arc<dyn Store>,
    pub clock: Arc<ManualClock>,
    pub key: Arc<CheckpointKey>,
    raw: Raw,
    _guard: Box<dyn std::any::Any + Send>,
}

enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Harness {
    /// `None` when the backend is not available here (it says so).
    pub async fn new(kind: Kind) -> Option<Self> {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 00:00 UTC)));
        let (key, _) = CheckpointKey::generate().unwrap();
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("medvault.db");
                let store = SqliteStore::open(&path).await.unwrap();
                let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
                Some(Self {
                    store: Arc::new(store),
                    clock,
                    key: Arc::new(key),
                    raw: Raw::Sqlite(raw),
                    _guard: Box::new(dir),
                })
            }
            Kind::Postgres => {
                let Some(url) = TestSchema::url_from_env() else {
                    medvault_store::conformance::report_skipped("audit trail on PostgreSQL");
                    return None;
                };
                let schema = TestSchema::create(&url)
                    .await
                    .expect("PostgreSQL unreachable");
                let store = schema.store().await.unwrap();
                let options = sqlx::postgres::PgConnectOptions::from_str(&url)
                    .unwrap()
                    .options([("search_path", schema.name())]);
                let raw = sqlx::PgPool::connect_with(options).await.unwrap();
                Some(Self {
                    store: Arc::new(store),
                    clock,
                    key: Arc::new(key),
                    raw: Raw::Postgres(raw),
                    _guard: Box::new(schema),
                })
            }
        }
    }

    pub fn trail(&self) -> AuditTrail {
        AuditTrail::new(self.store.clone(), self.clock.clone(), self.key.clone())
    }

    /// Runs SQL on the database directly, as an attacker with file or DB access would.
    pub async fn raw(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.raw {
            Raw::Sqlite(pool) => {
                sqlx::raw_sql(sql).execute(pool).await.unwrap();
            }
            Raw::Postgres(pool) => {
                sqlx::raw_sql(sql).execute(pool).await.unwrap();
            }
        }
    }

    pub async fn close(self) {
        match &self.raw {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
        self.store.close().await;
    }
}

/// Expands `$body` (an `async fn(Harness)`) into one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(harness) = $crate::harness::Harness::new($crate::harness::Kind::Sqlite).await {
                        super::$name(&harness).await;
                        harness.close().await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(harness) = $crate::harness::Harness::new($crate::harness::Kind::Postgres).await {
                        super::$name(&harness).await;
                        harness.close().await;
                    }
                }
            }
        )+
    };
}
