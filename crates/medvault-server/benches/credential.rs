//! The cost of issuing and verifying a Patient Credential, next to the raw
//! ES256 sign and verify of the crypto provider (aws-lc-rs) in the same run.
//!
//! * issue (in-process): request checks, code lookup, issuer key unwrap,
//!   signing, and the one transaction (code, `jti`, credential) plus the
//!   audit entry, on SQLite;
//! * verify (in-process): parse, issuer trust, key lookup, signature, claims
//!   and status from the database;
//! * verify over HTTPS: the same through `POST /api/v1/patient-credentials/verify`;
//! * IAL2 login over HTTPS: nonce, presentation signing on the client,
//!   verification and the session swap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    missing_docs,
    reason = "benchmark harness: iter_custom times with the wall clock"
)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use medvault_client::{NewAccount, Password, credential_request};
use medvault_core::{InstitutionKind, ParticipantKind};
use medvault_credential::{EvidenceType, ProofingMethod};
use medvault_crypto::SoftwareKey;
use medvault_crypto::did::P256PublicKey;
use medvault_testkit::TestServer;

fn account(kind: ParticipantKind, name: Option<&str>, email: Option<&str>) -> NewAccount {
    NewAccount {
        kind,
        display_name: name.map(str::to_owned),
        password: email.map(|email| (email.to_owned(), Password::new("bench passphrase"))),
        tans: 0,
        software_certificate: false,
    }
}

fn credential(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let sdk = server.sdk();
    let (patient, practice) = runtime.block_on(async {
        let patient = sdk
            .register(account(
                ParticipantKind::Patient,
                None,
                Some("bench@example.org"),
            ))
            .await
            .unwrap();
        let practice = sdk
            .register(account(
                ParticipantKind::Institution(InstitutionKind::Practice),
                Some("Praxis Bench"),
                None,
            ))
            .await
            .unwrap();
        (patient, practice)
    });
    let (mut p, i) = runtime.block_on(async {
        let p = sdk
            .login_password("bench@example.org", &Password::new("bench passphrase"))
            .await
            .unwrap();
        let i = sdk
            .login_superpin(practice.uid, &practice.superpin)
            .await
            .unwrap();
        p.invite(practice.uid).await.unwrap();
        i.accept(patient.uid).await.unwrap();
        (p, i)
    });
    let state = server.state().clone();
    let patient_session = runtime
        .block_on(state.accounts.authenticate(p.token()))
        .unwrap();
    let practice_session = runtime
        .block_on(state.accounts.authenticate(i.token()))
        .unwrap();
    let device = SoftwareKey::generate().unwrap();
    let code = runtime
        .block_on(i.record_proofing(patient.uid, "in-person", "id-card"))
        .unwrap()
        .code;
    let issued = runtime
        .block_on(p.request_patient_credential(&device, &code))
        .unwrap();
    let jwt = issued.credential.clone();

    let mut group = c.benchmark_group("patient credential");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(8));
    let message = jwt.as_bytes();
    let public = P256PublicKey::from_uncompressed(&device.public_key()).unwrap();
    let signature = device.sign_jose(message).unwrap();
    group.bench_function("baseline: raw ES256 sign (aws-lc-rs)", |b| {
        b.iter(|| device.sign_jose(message).unwrap());
    });
    group.bench_function("baseline: raw ES256 verify (aws-lc-rs)", |b| {
        b.iter(|| public.verify_es256(message, &signature).unwrap());
    });
    group.bench_function("issue (in-process, SQLite, audited)", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let state = state.clone();
            let (patient_session, practice_session) =
                (patient_session.clone(), practice_session.clone());
            let device = &device;
            let clock = server.clock.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // The test server's clock is manual: keep it at the wall
                    // clock, which the client's iat/exp use.
                    clock.set(medvault_testkit::wall_clock_now());
                    let code = state
                        .proofing
                        .record(
                            &practice_session,
                            patient_session.uid,
                            ProofingMethod::InPerson,
                            EvidenceType::IdCard,
                        )
                        .await
                        .unwrap();
                    let (request, _) =
                        credential_request(device, &code.code, medvault_client::USER_AGENT_ID)
                            .unwrap();
                    let start = Instant::now();
                    state
                        .issuer
                        .issue(&patient_session, &request)
                        .await
                        .unwrap();
                    total += start.elapsed();
                }
                total
            }
        });
    });
    group.bench_function("verify (in-process, SQLite)", |b| {
        b.to_async(&runtime)
            .iter(|| async { state.verifier.verify(&jwt).await.unwrap() });
    });
    group.bench_function("verify over HTTPS (POST .../verify)", |b| {
        b.to_async(&runtime).iter(|| async {
            assert!(sdk.verify_patient_credential(&jwt).await.unwrap().valid);
        });
    });
    group.bench_function("IAL2 login over HTTPS (nonce + presentation)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                server.clock.set(medvault_testkit::wall_clock_now());
                runtime
                    .block_on(p.present_patient_credential(&device, &jwt))
                    .unwrap();
            }
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, credential);
criterion_main!(benches);
