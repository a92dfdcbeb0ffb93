//! The cost of each login kind and of sending and opening a 1 MiB sealed
//! document, end to end: the SDK against an in-process server over TLS on
//! SQLite (every login writes a session and a durable audit entry).
//! Baselines in the same run: `GET /health` over the same HTTPS client (the
//! transport floor), and bare AES-256-GCM over 1 MiB (the cipher floor of
//! sealing and opening).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    missing_docs,
    reason = "benchmark harness: iter_custom times with the wall clock"
)]

use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, RandomizedNonceKey};
use criterion::{Criterion, criterion_group, criterion_main};
use medvault_client::{NewAccount, Password};
use medvault_core::ParticipantKind;
use medvault_crypto::RootCredential;
use medvault_crypto::document::{DocumentHeader, Recipient, open_document_key, seal_document};
use medvault_testkit::TestServer;

const MIB: usize = 1024 * 1024;

fn account(email: Option<&str>, tans: u32, software_certificate: bool) -> NewAccount {
    NewAccount {
        kind: ParticipantKind::Patient,
        display_name: None,
        password: email.map(|email| (email.to_owned(), Password::new("bench passphrase"))),
        tans,
        software_certificate,
    }
}

fn logins(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let sdk = server.sdk();
    let http = server.client(None);
    let health = server.patient_url("/health");
    let registered = runtime
        .block_on(sdk.register(account(Some("bench@example.org"), 0, true)))
        .unwrap();
    let file = registered.software_certificate.as_ref().unwrap();
    let password = Password::new("bench passphrase");

    let mut group = c.benchmark_group("login");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("baseline: GET /health over HTTPS", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = http.get(&health).send().await.unwrap();
            assert!(response.status().is_success());
        });
    });
    group.bench_function("password (OPAQUE, Argon2id on the client)", |b| {
        b.to_async(&runtime).iter(|| async {
            sdk.login_password("bench@example.org", &password)
                .await
                .unwrap()
        });
    });
    group.bench_function("superpin", |b| {
        b.to_async(&runtime).iter(|| async {
            sdk.login_superpin(registered.uid, &registered.superpin)
                .await
                .unwrap()
        });
    });
    group.bench_function("software certificate (challenge signature)", |b| {
        b.to_async(&runtime)
            .iter(|| async { sdk.login_software(file).await.unwrap() });
    });
    group.bench_function("tan (consumed once)", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let sdk = &sdk;
            async move {
                // Registration is not timed: only the logins are.
                let mut batches = Vec::new();
                let mut left = iters;
                while left > 0 {
                    let count = u32::try_from(left.min(100)).unwrap();
                    batches.push(sdk.register(account(None, count, false)).await.unwrap());
                    left -= u64::from(count);
                }
                let start = Instant::now();
                for batch in &batches {
                    for (index, tan) in batch.tans.iter().enumerate() {
                        let number = u32::try_from(index + 1).unwrap();
                        sdk.login_tan(batch.uid, number, tan).await.unwrap();
                    }
                }
                start.elapsed()
            }
        });
    });
    group.finish();
}

fn documents(c: &mut Criterion) {
    let body: Vec<u8> = (0..MIB).map(|n| u8::try_from(n % 251).unwrap()).collect();
    let root = RootCredential::generate().unwrap();
    let header = DocumentHeader {
        title: "Sensorexport".into(),
        media_type: "text/csv".into(),
    };
    let recipients = [Recipient {
        uid: "recipient",
        root_public_key: root.public_key(),
    }];

    let mut group = c.benchmark_group("document 1 MiB");
    group.sample_size(30);
    group.throughput(criterion::Throughput::Bytes(MIB as u64));
    group.bench_function("baseline: AES-256-GCM seal", |b| {
        let key = RandomizedNonceKey::new(&AES_256_GCM, &[7; 32]).unwrap();
        b.iter(|| {
            let mut in_out = body.clone();
            key.seal_in_place_append_tag(Aad::empty(), &mut in_out)
                .unwrap();
            in_out
        });
    });
    group.bench_function("seal (content key, HPKE to one recipient)", |b| {
        b.iter(|| seal_document("doc", "sender", &recipients, &header, &body).unwrap());
    });
    let parts = seal_document("doc", "sender", &recipients, &header, &body).unwrap();
    group.bench_function("open (HPKE, header, body)", |b| {
        b.iter(|| {
            let key =
                open_document_key(&root, "doc", "sender", "recipient", &parts.keys[0].1).unwrap();
            key.open_header(&parts.header).unwrap();
            key.open_body(&parts.body).unwrap()
        });
    });

    // End to end: sign, upload, store; fetch, verify, open.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let sdk = server.sdk();
    let registered = runtime
        .block_on(sdk.register(account(None, 0, false)))
        .unwrap();
    let session = runtime
        .block_on(sdk.login_superpin(registered.uid, &registered.superpin))
        .unwrap();
    group.bench_function("send through HTTPS (seal, sign, upload, store)", |b| {
        b.to_async(&runtime).iter(|| async {
            session
                .send_document(&[], "Sensorexport", "text/csv", &body)
                .await
                .unwrap()
        });
    });
    let id = runtime
        .block_on(session.send_document(&[], "Sensorexport", "text/csv", &body))
        .unwrap();
    group.bench_function("open through HTTPS (fetch, verify, open)", |b| {
        b.to_async(&runtime)
            .iter(|| async { session.open_document(id).await.unwrap() });
    });
    group.finish();
}

criterion_group!(benches, logins, documents);
criterion_main!(benches);
