//! A participant's export of everything the server holds about them (GDPR
//! Art. 15 and 20): the directory entry, working credentials (public parts),
//! connections, the documents they can read (sealed headers, their sealed
//! keys, signatures; bodies are fetched one by one from the documents API),
//! identity proofings and Patient Credentials, and the audit trail about them.
//!
//! A patient who holds an active Patient Credential exports only from an
//! IAL2 session: the export is the one request that hands out all of a
//! person's records at once.

use medvault_store::{
    AuditEntryRowV1, AuditFilter, ConnectionRowV1, ParticipantRowV1, PatientCredentialRowV1,
    ProofingRowV1, ReceivedDocumentV1, WorkingCredentialRowV1,
};

use crate::login::{Accounts, CredentialError, Session};

/// The most documents an export lists.
pub const MAX_EXPORT_DOCUMENTS: i64 = 10_000;
/// The most audit entries an export holds (`audit_complete` says whether
/// there were more).
pub const MAX_EXPORT_AUDIT: usize = 100_000;

/// Everything about one participant.
#[derive(Debug, Clone)]
pub struct Export {
    /// The directory entry.
    pub participant: ParticipantRowV1,
    /// Active working credentials (public key and certificate only).
    pub credentials: Vec<WorkingCredentialRowV1>,
    /// Connections and invitations.
    pub connections: Vec<ConnectionRowV1>,
    /// Documents for them, without bodies, newest first.
    pub documents: Vec<ReceivedDocumentV1>,
    /// Identity proofings of them (patients).
    pub proofings: Vec<ProofingRowV1>,
    /// Patient Credentials held (patients) or issued (institutions).
    pub patient_credentials: Vec<PatientCredentialRowV1>,
    /// Audit entries about them, oldest first.
    pub audit: Vec<AuditEntryRowV1>,
    /// Whether `audit` holds every entry about them.
    pub audit_complete: bool,
}

impl Accounts {
    /// The session owner's export (IAL2 for a holder of a Patient Credential).
    pub async fn export(&self, session: &Session) -> Result<Export, CredentialError> {
        self.require_ial2_if_proofed(session).await?;
        let store = self.store();
        let uid = session.uid.to_string();
        let participant = store
            .participant(&uid)
            .await?
            .ok_or(CredentialError::NotFound)?;
        let institution = participant.kind.starts_with("institution:");
        let mut audit = Vec::new();
        let mut audit_complete = false;
        let mut after_seq = None;
        while audit.len() < MAX_EXPORT_AUDIT {
            let page = store
                .audit_entries(&AuditFilter {
                    subject: Some(uid.clone()),
                    after_seq,
                    limit: 1000,
                    ..AuditFilter::default()
                })
                .await?;
            after_seq = page.last().map(|entry| entry.seq);
            let last_page = page.len() < 1000;
            audit.extend(page);
            if last_page {
                audit_complete = true;
                break;
            }
        }
        audit.truncate(MAX_EXPORT_AUDIT);
        Ok(Export {
            credentials: store.working_credentials(&uid).await?,
            connections: store.connections(&uid).await?,
            documents: store.received_documents(&uid, MAX_EXPORT_DOCUMENTS).await?,
            proofings: store.proofings_of_patient(&uid).await?,
            patient_credentials: if institution {
                store.patient_credentials(None, Some(&uid)).await?
            } else {
                store.patient_credentials(Some(&uid), None).await?
            },
            audit,
            audit_complete,
            participant,
        })
    }
}
