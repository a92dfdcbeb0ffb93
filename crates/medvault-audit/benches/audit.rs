//! Audit trail throughput on the embedded SQLite backend: one durable append
//! (WAL, synchronous = FULL), and verification of a 1000-entry chain.
//! Baseline in the same run: a bare SQLite insert of the same row size through
//! the store, without the chain (read head, hash, retry loop).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark harness"
)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use medvault_audit::{AuditDetail, AuditEvent, AuditTrail, CheckpointKey, Outcome};
use medvault_core::{Clock, SystemClock};
use medvault_store::{AuditEntryRowV1, AuditStore, Store};
use medvault_store_sqlite::SqliteStore;

fn event() -> AuditEvent {
    AuditEvent::new(
        "urn:diga:bfarm:00294",
        "pairing-1",
        "fhir.read",
        Outcome::Success,
    )
    .with_detail(AuditDetail::new().with("resource", "Observation").unwrap())
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        runtime
            .block_on(SqliteStore::open(&dir.path().join("bench.db")))
            .unwrap(),
    );
    let (key, _) = CheckpointKey::generate().unwrap();
    let trail = AuditTrail::new(store.clone(), Arc::new(SystemClock), Arc::new(key));

    let mut seq = 1_000_000_000_i64;
    let baseline_store = runtime
        .block_on(SqliteStore::open(&dir.path().join("baseline.db")))
        .unwrap();
    c.bench_function("baseline: bare SQLite insert (no chain)", |b| {
        b.to_async(&runtime).iter(|| {
            seq += 1;
            let row = AuditEntryRowV1 {
                seq,
                recorded_at: SystemClock.now(),
                actor: "urn:diga:bfarm:00294".into(),
                subject: "pairing-1".into(),
                event_type: "fhir.read".into(),
                outcome: "success".into(),
                detail: "{\"resource\":\"Observation\"}".into(),
                prev_hash: vec![0; 32],
                entry_hash: vec![1; 32],
            };
            let store = &baseline_store;
            async move { store.insert_audit_entry(&row).await.unwrap() }
        });
    });
    c.bench_function("audit append (chained, durable)", |b| {
        b.to_async(&runtime).iter(|| trail.append(event()));
    });

    let dir2 = tempfile::tempdir().unwrap();
    let store2: Arc<dyn Store> = Arc::new(
        runtime
            .block_on(SqliteStore::open(&dir2.path().join("verify.db")))
            .unwrap(),
    );
    let (key2, _) = CheckpointKey::generate().unwrap();
    let trail2 = AuditTrail::new(store2, Arc::new(SystemClock), Arc::new(key2));
    runtime.block_on(async {
        for _ in 0..1000 {
            trail2.append(event()).await.unwrap();
        }
    });
    c.bench_function("verify 1000-entry chain", |b| {
        b.to_async(&runtime).iter(|| trail2.verify());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
