//! No insurance number, ever: after a session of every kind of use in which
//! the patient's KVNR passes through every input that could carry it, no
//! table of the database holds a KVNR-shaped value.

use medvault_client::{NewAccount, Password};
use medvault_core::{InstitutionKind, ParticipantKind};
use medvault_testkit::{Backend, TestServer};
use sqlx::{Column, Connection, Row, TypeInfo};

/// The patient's KVNR (a letter and nine digits, the last a check digit).
const KVNR: &str = "X987654321";

/// Every KVNR-shaped run in `bytes`: an upper-case letter and nine digits,
/// not inside a longer run of letters or digits.
fn kvnr_shaped(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for start in 0..bytes.len().saturating_sub(9) {
        let window = &bytes[start..start + 10];
        let before = start.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(start + 10).copied();
        if window[0].is_ascii_uppercase()
            && window[1..].iter().all(u8::is_ascii_digit)
            && !before.is_some_and(|b| b.is_ascii_alphanumeric())
            && !after.is_some_and(|b| b.is_ascii_digit())
        {
            found.push(String::from_utf8_lossy(window).into_owned());
        }
    }
    found
}

#[test]
fn the_scanner_finds_kvnr_shaped_values() {
    assert_eq!(kvnr_shaped(b"id=X987654321;"), vec![KVNR.to_owned()]);
    assert_eq!(kvnr_shaped(KVNR.as_bytes()), vec![KVNR.to_owned()]);
    assert!(kvnr_shaped(b"AX9876543210").is_empty());
    assert!(kvnr_shaped(b"X98765432").is_empty());
}

on_both_backends!(no_table_holds_an_insurance_number);

async fn no_table_holds_an_insurance_number(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    let sdk = server.sdk();
    // The KVNR goes into every input a patient controls.
    let patient = sdk
        .register(NewAccount {
            kind: ParticipantKind::Patient,
            display_name: None,
            password: Some(("kvnr-user@example.org".into(), Password::new(KVNR))),
            tans: 3,
            software_certificate: true,
        })
        .await
        .unwrap();
    let practice = sdk
        .register(NewAccount {
            kind: ParticipantKind::Institution(InstitutionKind::Practice),
            display_name: Some("Praxis am Markt".into()),
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
    let p = sdk
        .login_password("kvnr-user@example.org", &Password::new(KVNR))
        .await
        .unwrap();
    let i = sdk
        .login_superpin(practice.uid, &practice.superpin)
        .await
        .unwrap();
    p.invite(practice.uid).await.unwrap();
    i.accept(patient.uid).await.unwrap();
    let id = p
        .send_document(
            &[practice.uid],
            &format!("Versichertenkarte {KVNR}"),
            "text/plain",
            format!("KVNR: {KVNR}").as_bytes(),
        )
        .await
        .unwrap();
    i.open_document(id).await.unwrap();
    sdk.login_tan(patient.uid, 1, &patient.tans[0])
        .await
        .unwrap();
    assert!(
        sdk.login_password("kvnr-user@example.org", &Password::new("wrong"))
            .await
            .is_err()
    );
    p.add_password("second@example.org", &Password::new(KVNR))
        .await
        .unwrap_err();
    p.logout().await.unwrap();

    // Scan every column of every table.
    let cells = match server.database_url() {
        None => {
            let path = server.data_dir.path().join("medvault.db");
            scan_sqlite(&format!("sqlite://{}?mode=ro", path.display())).await
        }
        Some(url) => scan_postgres(url).await,
    };
    let mut hits = Vec::new();
    let mut saw_plain_text = false;
    for (place, bytes) in &cells {
        if bytes.windows(15).any(|w| w == b"Praxis am Markt") {
            saw_plain_text = true;
        }
        for hit in kvnr_shaped(bytes) {
            hits.push(format!("{place}: {hit}"));
        }
    }
    assert!(cells.len() > 50, "the scan read only {} cells", cells.len());
    assert!(saw_plain_text, "the scan must read text columns too");
    assert!(hits.is_empty(), "KVNR-shaped values stored: {hits:?}");
}

/// Every text and binary cell of every table, with its place.
async fn scan_sqlite(url: &str) -> Vec<(String, Vec<u8>)> {
    let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    assert!(tables.len() >= 10, "{tables:?}");
    let mut cells = Vec::new();
    for table in &tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
            .fetch_all(&mut connection)
            .await
            .unwrap();
        for row in rows {
            for column in row.columns() {
                let bytes: Option<Vec<u8>> = match column.type_info().name() {
                    "INTEGER" | "REAL" | "NULL" => None,
                    "TEXT" => row
                        .try_get::<Option<String>, _>(column.ordinal())
                        .unwrap()
                        .map(String::into_bytes),
                    _ => row.try_get::<Option<Vec<u8>>, _>(column.ordinal()).unwrap(),
                };
                if let Some(bytes) = bytes {
                    cells.push((format!("{table}.{}", column.name()), bytes));
                }
            }
        }
    }
    cells
}

/// Every text and binary cell of every table in the test's schema.
async fn scan_postgres(url: &str) -> Vec<(String, Vec<u8>)> {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    assert!(tables.len() >= 10, "{tables:?}");
    let mut cells = Vec::new();
    for table in &tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
            .fetch_all(&mut connection)
            .await
            .unwrap();
        for row in rows {
            for column in row.columns() {
                let bytes: Option<Vec<u8>> = match column.type_info().name() {
                    "TEXT" | "VARCHAR" => row
                        .try_get::<Option<String>, _>(column.ordinal())
                        .unwrap()
                        .map(String::into_bytes),
                    "BYTEA" => row.try_get::<Option<Vec<u8>>, _>(column.ordinal()).unwrap(),
                    _ => None,
                };
                if let Some(bytes) = bytes {
                    cells.push((format!("{table}.{}", column.name()), bytes));
                }
            }
        }
    }
    cells
}
