//! `medvault credential ...`: the Patient Credential on the patient's device
//! (request, show, present) and at the issuing institution (list, revoke,
//! suspend, reinstate).
//!
//! The device key is a P-256 key made on first request: in software, kept in
//! the profile as `device-key.p8` (PKCS#8, mode 0600; `key_protection`
//! `software`), or with `--smartcard LABEL --module M --token T` generated on
//! a PKCS#11 token, where it stays (`pkcs11`; the profile's
//! `device-key.json` says where; every use asks for the token PIN). The
//! credential is kept as `patient-credential.jwt` (0600).
//! The one-time code is a secret: it is read from the terminal or
//! `--password-stdin`, never from the arguments.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Subcommand;
use medvault_client::smartcard::Smartcard;
use medvault_client::{DeviceKey, Session};
use medvault_crypto::SoftwareKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::user::{ProfileArgs, Profiled, open_card, write_private};

const DEVICE_KEY: &str = "device-key.p8";
const CREDENTIAL: &str = "patient-credential.jwt";
const TOKEN_KEY: &str = "device-key.json";

/// Where a device key on a PKCS#11 token is.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenKey {
    module: PathBuf,
    token: String,
    label: String,
}

/// The profile's device key, in software or on a token.
enum Device {
    Software(SoftwareKey),
    Token(Smartcard),
}

impl Device {
    fn key(&self) -> &dyn DeviceKey {
        match self {
            Self::Software(key) => key,
            Self::Token(card) => card,
        }
    }
}

/// The profile's device key (asks for the token PIN when it is on a token).
fn load_device(context: &mut Profiled) -> anyhow::Result<Device> {
    let path = context.dir.join(TOKEN_KEY);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let at: TokenKey = serde_json::from_str(&text)
            .with_context(|| format!("{} is malformed", path.display()))?;
        let mut card = open_card(context, Some(&at.module), Some(&at.token))?;
        card.use_key(&at.label)?;
        return Ok(Device::Token(card));
    }
    Ok(Device::Software(device_key(context, false)?))
}

/// `medvault credential ...`
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Request a Patient Credential with the code your practice gave you
    /// (asked for; needs a session); binds it to this device's key.
    Request {
        /// Make the device key on a PKCS#11 token under this label (needs
        /// --module, --token) instead of in the profile.
        #[arg(long, value_name = "KEY_LABEL", requires_all = ["module", "token"])]
        smartcard: Option<String>,
        /// PKCS#11 module path.
        #[arg(long)]
        module: Option<PathBuf>,
        /// Token label.
        #[arg(long)]
        token: Option<String>,
    },
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
pub(crate) async fn present(context: &mut Profiled, session: &mut Session) -> anyhow::Result<()> {
    let credential = stored_credential(context)?;
    let device = load_device(context)?;
    let presented = session
        .present_patient_credential(device.key(), &credential)
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
        CredentialCommand::Request {
            smartcard,
            module,
            token,
        } => {
            let session = context.session()?;
            let code = context.secret("code from your practice")?;
            let device = match smartcard {
                Some(label) => {
                    let mut card = open_card(&mut context, module.as_deref(), token.as_deref())?;
                    if card.use_key(&label).is_err() {
                        card.generate_key(&label)?;
                    }
                    let at = TokenKey {
                        module: module.ok_or_else(|| anyhow!("--module is required"))?,
                        token: token.ok_or_else(|| anyhow!("--token is required"))?,
                        label,
                    };
                    write_private(&context.dir.join(TOKEN_KEY), &serde_json::to_vec(&at)?)?;
                    Device::Token(card)
                }
                None => {
                    if context.dir.join(TOKEN_KEY).exists() {
                        load_device(&mut context)?
                    } else {
                        Device::Software(device_key(&context, true)?)
                    }
                }
            };
            let issued = session
                .request_patient_credential(device.key(), code.trim())
                .await?;
            write_private(&context.dir.join(CREDENTIAL), issued.credential.as_bytes())?;
            println!(
                "Patient Credential {} issued by {}",
                issued.id, issued.institution_uid
            );
            println!("valid until {}", issued.expires_at);
            println!(
                "device key ({}): {}",
                device.key().key_protection(),
                medvault_client::device_did(device.key())?
            );
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
            present(&mut context, &mut session).await?;
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
