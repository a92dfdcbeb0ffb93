//! Enrolment of a working credential: what a client sends, how it is checked,
//! and the rows (with the CA's certificate) it becomes.
//!
//! The client does all key handling: it makes the credential's P-256 signing
//! key (or uses the one in the file or on the card), wraps the Root
//! Credential's private key under the credential's KEK, and signs an
//! enrolment message with the signing key (proof of possession). The server
//! checks the shapes and the proof, certifies the key, and stores what it
//! cannot open.

use medvault_core::{Email, Uid, WorkingCredentialKind};
use medvault_crypto::{
    CredentialSubject, EnrolmentSlot, ParticipantCa, WrappedKey, check_p256_public_key,
    enrolment_message, password, verify_challenge,
};
use medvault_store::{
    CredentialKeyRowV1, NewWorkingCredential, PasswordRowV1, WorkingCredentialRowV1,
};
use time::OffsetDateTime;

/// The most TANs one batch may hold.
pub const MAX_TANS: u32 = 100;

/// The OPAQUE suite and key-stretching parameters of new password records
/// (ristretto255, Argon2id with the crate's defaults; see `medvault_crypto::password`).
pub const PASSWORD_SUITE: i64 = 1;

/// How long a working-credential certificate is valid (five years).
const CERTIFICATE_LIFETIME_SECONDS: i64 = 5 * 365 * 86_400;

/// A working credential as a client enrols it.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The credential's id: a random UUID the client chose (it is bound into the
    /// wrapping before the server sees anything).
    pub id: Uid,
    /// Its kind.
    pub kind: WorkingCredentialKind,
    /// Its P-256 signing key (uncompressed point).
    pub public_key: Vec<u8>,
    /// A signature by that key over [`enrolment_message`].
    pub proof_of_possession: Vec<u8>,
    /// The wrapped keys: one slot, or one per TAN.
    pub slots: Vec<EnrolmentSlot>,
    /// Password only: the login email and the OPAQUE registration upload.
    pub password: Option<PasswordEnrolment>,
}

/// The password part of an enrolment.
#[derive(Debug, Clone)]
pub struct PasswordEnrolment {
    /// The (normalized) email.
    pub email: Email,
    /// The OPAQUE registration upload (the client's last registration message).
    pub registration_upload: Vec<u8>,
}

/// Why an enrolment was refused. Each names the field at fault and never echoes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolmentError {
    /// A field is missing, superfluous or malformed for this kind.
    #[error("invalid working credential: {0}")]
    Invalid(&'static str),
    /// The proof of possession does not verify.
    #[error("the proof of possession of the signing key does not verify")]
    ProofOfPossession,
    /// The CA could not certify the key.
    #[error("the working credential's certificate could not be issued")]
    Certificate,
}

impl Enrolment {
    /// Checks the enrolment for participant `uid` and turns it into rows, with
    /// the CA's certificate of the signing key, at `now`.
    pub fn into_rows(
        self,
        uid: Uid,
        ca: &ParticipantCa,
        now: OffsetDateTime,
    ) -> Result<NewWorkingCredential, EnrolmentError> {
        let uid_text = uid.to_string();
        let id_text = self.id.to_string();
        check_p256_public_key(&self.public_key)
            .map_err(|_| EnrolmentError::Invalid("public_key"))?;
        let message = enrolment_message(&uid_text, &id_text, self.kind.as_str(), &self.public_key);
        verify_challenge(&self.public_key, &message, &self.proof_of_possession)
            .map_err(|_| EnrolmentError::ProofOfPossession)?;
        self.check_slots()?;
        let password = match (self.kind, self.password) {
            (WorkingCredentialKind::Password, Some(enrolment)) => {
                let file = password::server_registration_finish(&enrolment.registration_upload)
                    .map_err(|_| EnrolmentError::Invalid("registration_upload"))?;
                Some(PasswordRowV1 {
                    email: enrolment.email.as_str().to_owned(),
                    credential_id: id_text.clone(),
                    suite: PASSWORD_SUITE,
                    password_file: file.as_bytes().to_vec(),
                })
            }
            (WorkingCredentialKind::Password, None) => {
                return Err(EnrolmentError::Invalid("password"));
            }
            (_, Some(_)) => return Err(EnrolmentError::Invalid("password")),
            (_, None) => None,
        };
        let issued_at = now.unix_timestamp();
        let certificate = ca
            .certify_working_credential(
                &CredentialSubject {
                    uid: uid_text.clone(),
                    working_credential_id: id_text.clone(),
                    kind: self.kind.as_str().to_owned(),
                },
                &self.public_key,
                issued_at,
                issued_at.saturating_add(CERTIFICATE_LIFETIME_SECONDS),
            )
            .map_err(|_| EnrolmentError::Certificate)?;
        let keys = self
            .slots
            .into_iter()
            .map(|slot| CredentialKeyRowV1 {
                credential_id: id_text.clone(),
                slot: i64::from(slot.slot),
                proof_hash: slot.proof.as_deref().map(medvault_crypto::stored_proof),
                wrapped_root_key: slot.wrapped_root_key,
                wrapped_signing_key: slot.wrapped_signing_key,
                ecdh_public_key: slot.ecdh_public_key,
                used_at: None,
            })
            .collect();
        Ok(NewWorkingCredential {
            credential: WorkingCredentialRowV1 {
                id: id_text,
                uid: uid_text,
                kind: self.kind.as_str().to_owned(),
                public_key: self.public_key,
                certificate,
                created_at: now,
                removed_at: None,
            },
            keys,
            password,
        })
    }

    /// Each kind's slots have exactly the fields the kind needs.
    fn check_slots(&self) -> Result<(), EnrolmentError> {
        let expected_numbers: Vec<u32> = match self.kind {
            WorkingCredentialKind::Tan => {
                let count = u32::try_from(self.slots.len())
                    .map_err(|_| EnrolmentError::Invalid("slots"))?;
                if count == 0 || count > MAX_TANS {
                    return Err(EnrolmentError::Invalid("slots"));
                }
                (1..=count).collect()
            }
            _ => vec![0],
        };
        let numbers: Vec<u32> = self.slots.iter().map(|slot| slot.slot).collect();
        if numbers != expected_numbers {
            return Err(EnrolmentError::Invalid("slots"));
        }
        let holds_key = self.kind.holds_key();
        let has_code = matches!(
            self.kind,
            WorkingCredentialKind::SuperPin | WorkingCredentialKind::Tan
        );
        for slot in &self.slots {
            WrappedKey::from_bytes(&slot.wrapped_root_key)
                .map_err(|_| EnrolmentError::Invalid("wrapped_root_key"))?;
            match (&slot.wrapped_signing_key, holds_key) {
                (Some(wrapped), false) => {
                    WrappedKey::from_bytes(wrapped)
                        .map_err(|_| EnrolmentError::Invalid("wrapped_signing_key"))?;
                }
                (None, true) => {}
                _ => return Err(EnrolmentError::Invalid("wrapped_signing_key")),
            }
            match (&slot.ecdh_public_key, holds_key) {
                (Some(ephemeral), true) => check_p256_public_key(ephemeral)
                    .map_err(|_| EnrolmentError::Invalid("ecdh_public_key"))?,
                (None, false) => {}
                _ => return Err(EnrolmentError::Invalid("ecdh_public_key")),
            }
            match (&slot.proof, has_code) {
                (Some(proof), true) if proof.len() == 32 => {}
                (None, false) => {}
                _ => return Err(EnrolmentError::Invalid("proof")),
            }
        }
        Ok(())
    }
}
