//! Connections and sealed documents end to end through the SDK, on SQLite and
//! on PostgreSQL.

use medvault_client::{ClientError, NewAccount, Password, Registered, Session};
use medvault_core::{InstitutionKind, ParticipantKind, Uid};
use medvault_proto::documents::DocumentView;
use medvault_testkit::{Backend, TestServer};

on_both_backends!(
    documents_flow_only_between_connected_participants,
    a_changed_ciphertext_signature_or_certificate_is_refused,
);

fn account(kind: ParticipantKind, name: Option<&str>, email: Option<&str>) -> NewAccount {
    NewAccount {
        kind,
        display_name: name.map(str::to_owned),
        password: email.map(|email| (email.to_owned(), Password::new("a long passphrase"))),
        tans: 0,
        software_certificate: false,
    }
}

async fn login(server: &TestServer, registered: &Registered) -> Session {
    server
        .sdk()
        .login_superpin(registered.uid, &registered.superpin)
        .await
        .unwrap()
}

fn status(error: &ClientError) -> Option<u16> {
    error.status()
}

async fn documents_flow_only_between_connected_participants(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let sdk = server.sdk();
    let patient = sdk
        .register(account(
            ParticipantKind::Patient,
            None,
            Some("p@example.org"),
        ))
        .await
        .unwrap();
    let practice = sdk
        .register(account(
            ParticipantKind::Institution(InstitutionKind::Practice),
            Some("Praxis Nord"),
            None,
        ))
        .await
        .unwrap();
    let doctor = sdk
        .register(account(
            ParticipantKind::HealthCareProfessional,
            Some("Dr. A"),
            None,
        ))
        .await
        .unwrap();
    let other_patient = sdk
        .register(account(ParticipantKind::Patient, None, None))
        .await
        .unwrap();
    let (p, i, d, q) = (
        login(&server, &patient).await,
        login(&server, &practice).await,
        login(&server, &doctor).await,
        login(&server, &other_patient).await,
    );

    // Patients do not connect with patients, nobody with themselves.
    assert_eq!(status(&q.invite(patient.uid).await.unwrap_err()), Some(403));
    assert_eq!(status(&p.invite(patient.uid).await.unwrap_err()), Some(403));
    assert_eq!(
        status(&p.invite(Uid::generate()).await.unwrap_err()),
        Some(404)
    );

    // Not connected yet: nothing can be sent.
    let refused = p
        .send_document(&[practice.uid], "Blutzucker", "text/csv", b"t,mg/dl\n")
        .await
        .unwrap_err();
    assert_eq!(status(&refused), Some(403), "{refused}");

    // Invite, accept (only the invited side), then send.
    p.invite(practice.uid).await.unwrap();
    assert_eq!(
        status(&p.invite(practice.uid).await.unwrap_err()),
        Some(409)
    );
    assert_eq!(status(&i.invite(patient.uid).await.unwrap_err()), Some(409));
    assert_eq!(
        status(&p.accept(practice.uid).await.unwrap_err()),
        Some(404)
    );
    let incoming = i.connections().await.unwrap();
    assert_eq!(incoming.len(), 1);
    assert_eq!(
        (
            incoming[0].uid.as_str(),
            incoming[0].direction.as_str(),
            incoming[0].state.as_str()
        ),
        (patient.uid.to_string().as_str(), "incoming", "pending")
    );
    let pending = p
        .send_document(&[practice.uid], "Blutzucker", "text/csv", b"x")
        .await
        .unwrap_err();
    assert_eq!(
        status(&pending),
        Some(403),
        "a pending invitation does not connect"
    );
    i.accept(patient.uid).await.unwrap();
    // Institutions and professionals connect among themselves.
    d.invite(practice.uid).await.unwrap();
    i.accept(doctor.uid).await.unwrap();

    let body: Vec<u8> = (0..1024 * 1024)
        .map(|n| u8::try_from(n % 251).unwrap())
        .collect();
    let id = p
        .send_document(&[practice.uid], "Blutzucker November", "text/csv", &body)
        .await
        .unwrap();

    // The practice lists and opens it; the patient reads their own copy.
    let listed = i.documents().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].title, "Blutzucker November");
    assert_eq!(listed[0].sender, patient.uid);
    let opened = i.open_document(id).await.unwrap();
    assert_eq!(opened.body.as_slice(), body.as_slice());
    assert_eq!(
        (opened.sender, opened.media_type.as_str()),
        (patient.uid, "text/csv")
    );
    assert_eq!(opened.signed_by, p.credential_id());
    assert_eq!(
        p.open_document(id).await.unwrap().body.as_slice(),
        body.as_slice()
    );

    // Any of the recipient's credentials opens it: the patient's password too.
    let by_password = sdk
        .login_password("p@example.org", &Password::new("a long passphrase"))
        .await
        .unwrap();
    assert_eq!(
        by_password.open_document(id).await.unwrap().body.as_slice(),
        body.as_slice()
    );
    // Nobody else's: not the doctor, not the other patient.
    assert_eq!(status(&d.open_document(id).await.unwrap_err()), Some(404));
    assert_eq!(status(&q.open_document(id).await.unwrap_err()), Some(404));
    assert!(d.documents().await.unwrap().is_empty());

    // The practice sends to the doctor and the patient at once.
    let both = i
        .send_document(
            &[doctor.uid, patient.uid],
            "Überweisung",
            "application/pdf",
            b"%PDF",
        )
        .await
        .unwrap();
    assert_eq!(
        d.open_document(both).await.unwrap().body.as_slice(),
        b"%PDF"
    );
    assert_eq!(p.open_document(both).await.unwrap().title, "Überweisung");

    // After removal nothing more goes through.
    p.remove_connection(practice.uid).await.unwrap();
    let removed = i
        .send_document(&[patient.uid], "x", "text/plain", b"x")
        .await
        .unwrap_err();
    assert_eq!(status(&removed), Some(403));
    server.state().audit.verify().await.unwrap();
}

async fn a_changed_ciphertext_signature_or_certificate_is_refused(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let sdk = server.sdk();
    let patient = sdk
        .register(account(ParticipantKind::Patient, None, None))
        .await
        .unwrap();
    let practice = sdk
        .register(account(
            ParticipantKind::Institution(InstitutionKind::Hospital),
            Some("Klinikum"),
            None,
        ))
        .await
        .unwrap();
    let (p, i) = (
        login(&server, &patient).await,
        login(&server, &practice).await,
    );
    i.invite(patient.uid).await.unwrap();
    p.accept(practice.uid).await.unwrap();
    let id = i
        .send_document(
            &[patient.uid],
            "Entlassbrief",
            "application/pdf",
            b"%PDF-1.7 brief",
        )
        .await
        .unwrap();
    let view: DocumentView = server
        .client(None)
        .get(server.patient_url(&format!("/api/v1/documents/{id}")))
        .bearer_auth(p.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        p.open_document_view(id, &view).unwrap().body.as_slice(),
        b"%PDF-1.7 brief"
    );
    let flip = |bytes: &mut Vec<u8>, at: usize| bytes[at] ^= 0x01;
    let mut cases: Vec<(&str, DocumentView)> = Vec::new();
    let mut changed = view.clone();
    flip(&mut changed.sealed_body.0, 20);
    cases.push(("body", changed));
    let mut changed = view.clone();
    flip(&mut changed.summary.sealed_header.0, 20);
    cases.push(("header", changed));
    let mut changed = view.clone();
    let last = changed.signature.0.len() - 1;
    flip(&mut changed.signature.0, last);
    cases.push(("signature", changed));
    let mut changed = view.clone();
    flip(&mut changed.sender_certificate.0, 200);
    cases.push(("certificate", changed));
    let mut changed = view.clone();
    changed.summary.sender_uid = patient.uid.to_string();
    cases.push(("claimed sender", changed));
    let mut changed = view.clone();
    changed.summary.recipients.push(Uid::generate().to_string());
    cases.push(("recipient list", changed));
    let mut changed = view.clone();
    flip(&mut changed.summary.sealed_key.0, 40);
    cases.push(("sealed key", changed));
    // A certificate from another participant's credential, valid in itself.
    let own = p.credentials().await.unwrap();
    let mut changed = view.clone();
    changed.sender_certificate = own[0].certificate.clone();
    cases.push(("someone else's certificate", changed));
    for (case, tampered) in cases {
        let outcome = p.open_document_view(id, &tampered);
        assert!(
            matches!(outcome, Err(ClientError::Verification(_))),
            "{case}: {outcome:?}"
        );
    }
    // Another participant cannot open the patient's copy even holding it.
    let stranger = sdk
        .register(account(ParticipantKind::Patient, None, None))
        .await
        .unwrap();
    let s = login(&server, &stranger).await;
    assert!(matches!(
        s.open_document_view(id, &view),
        Err(ClientError::Verification(_))
    ));
}
