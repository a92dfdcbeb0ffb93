//! `medvault credential ...`: the Patient Credential on the patient's device
//! (request, show, present) and at the issuing institution (list, revoke,
//! suspend, reinstate).
//!
//! The device key is a P-256 key made on first request and kept in the
//! profile as `device-key.p8` (PKCS#8, mode 0600; `key_protection` is
//! `software`); the credential is kept as `patient-credential.jwt` (0600).
//! The one-time code is a secret: it is read from the terminal or
//! `--password-stdin`, never from the arguments.

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Subcommand;
use medvault_client::Session;
use medvault_crypto::SoftwareKey;
use zeroize::Zeroizing;

use crate::user::{ProfileArgs, Profiled, write_private};

const DEVICE_KEY: &str = "device-key.p8";
const CREDENTIAL: &str = "patient-credential.jwt";

/// `medvault credential ...`
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Request a Patient Credential with the code your practice gave you
    /// (asked for; needs a session); binds it to this device's key.
    Request,
    /// Show the stored credential, checked against its issuer's did:web
    /// document and the server's verifier.
    Show,
    /// Present the stored credential: the session becomes IAL2.
    Present,
    /// List credentials you hold, or (an institution) have issued.
    List,
    /// Revoke a credential you issued (institutions): final, effective at once.
    Revoke {
        /// The credential's id (from `medvault credential list`).
        id: String,
        /// Suspend instead (reversible with --reinstate).
        #[arg(long, conflicts_with = "reinstate")]
        suspend: bool,
        /// Reinstate a suspended credential.
        #[arg(long)]
        reinstate: bool,
    },
}

fn device_key(context: &Profiled, create: bool) -> anyhow::Result<SoftwareKey> {
    let path = context.dir.join(DEVICE_KEY);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            SoftwareKey::from_pkcs8(&bytes)
                .map_err(|_| anyhow!("{} is not a P-256 PKCS#8 key", path.display()))
        }
        Err(_) if create => {
            let key = SoftwareKey::generate().map_err(|_| anyhow!("making the device key"))?;
            write_private(&path, key.pkcs8())?;
            Ok(key)
        }
        Err(_) => bail!("no device key in the profile: run `medvault credential request` first"),
    }
}

fn stored_credential(context: &Profiled) -> anyhow::Result<String> {
    let path = context.dir.join(CREDENTIAL);
    std::fs::read_to_string(&path)
        .map(|text| text.trim().to_owned())
        .map_err(|_| {
            anyhow!("no Patient Credential in the profile: run `medvault credential request`")
        })
}

/// Presents the stored credential in `session` and saves the IAL2 session.
pub(crate) async fn present(context: &Profiled, session: &mut Session) -> anyhow::Result<()> {
    let key = device_key(context, false)?;
    let credential = stored_credential(context)?;
    let presented = session
        .present_patient_credential(&key, &credential)
        .await?;
    context.save_session(session)?;
    println!(
        "session is {} (credential {}) until {}",
        presented.assurance, presented.patient_credential_id, presented.expires_at
    );
    Ok(())
}

/// `medvault credential ...`
pub async fn credential(args: ProfileArgs, command: CredentialCommand) -> anyhow::Result<()> {
    let mut context = Profiled::new(&args)?;
    match command {
        CredentialCommand::Request => {
            let session = context.session()?;
            let code = context.secret("code from your practice")?;
            let key = device_key(&context, true)?;
            let issued = session
                .request_patient_credential(&key, code.trim(), "software")
                .await?;
            write_private(&context.dir.join(CREDENTIAL), issued.credential.as_bytes())?;
            println!(
                "Patient Credential {} issued by {}",
                issued.id, issued.institution_uid
            );
            println!("valid until {}", issued.expires_at);
            println!("device key: {}", medvault_client::device_did(&key)?);
        }
        CredentialCommand::Show => {
            let credential = stored_credential(&context)?;
            let payload = credential
                .split('.')
                .nth(1)
                .ok_or_else(|| anyhow!("the stored credential is not a JWT"))?;
            let claims: serde_json::Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(payload)
                    .context("the stored credential is not a JWT")?,
            )?;
            println!("{}", serde_json::to_string_pretty(&claims)?);
            let sdk = context.client()?;
            let checked = sdk.check_patient_credential(&credential).await?;
            println!(
                "signature: verified with a key in {}'s DID document",
                checked.issuer
            );
            let verdict = sdk.verify_patient_credential(&credential).await?;
            match verdict.error {
                None if verdict.valid => println!("status: valid"),
                error => println!("status: NOT valid: {}", error.unwrap_or_default()),
            }
        }
        CredentialCommand::Present => {
            let mut session = context.session()?;
            present(&context, &mut session).await?;
        }
        CredentialCommand::List => {
            let session = context.session()?;
            for credential in session.patient_credentials().await? {
                println!(
                    "{}  {:<9} issuer {}  holder {}  until {}",
                    credential.id,
                    credential.status,
                    credential.institution_uid,
                    credential.patient_uid,
                    credential.expires_at
                );
            }
        }
        CredentialCommand::Revoke {
            id,
            suspend,
            reinstate,
        } => {
            let session = context.session()?;
            let status = match (suspend, reinstate) {
                (true, _) => "suspended",
                (_, true) => "active",
                _ => "revoked",
            };
            session.set_patient_credential_status(&id, status).await?;
            println!("{id}: {status}");
        }
    }
    Ok(())
}
