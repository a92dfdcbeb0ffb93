//! The participant's commands: `account`, `credentials`, `documents`,
//! `connections`, over the SDK.
//!
//! State lives in a per-user profile directory (`--profile DIR`, default
//! `~/.medvault`, mode 0700): `profile.json` (server URL, the server's TLS CA
//! if given, the pinned participant CA key) and, while logged in,
//! `session.json` (the session token and the unlocked keys, so that later
//! commands can open and sign documents; mode 0600, deleted at logout). Secrets
//! (password, SuperPIN, TAN, passphrase, PIN) are read from the terminal
//! without echo, or with `--password-stdin` one per line from standard input;
//! never from arguments.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use medvault_client::smartcard::Pkcs11Module;
use medvault_client::{Client, NewAccount, Password, Session, SessionState};
use medvault_core::{ParticipantKind, Uid};
use medvault_crypto::{CodeKind, PinnedCa, RecoveryCode, SoftwareCredentialFile};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Where the profile lives and how secrets are read.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Profile directory [default: ~/.medvault].
    #[arg(long, env = "MEDVAULT_PROFILE", global = true)]
    profile: Option<PathBuf>,
    /// Read secrets from standard input, one per line, instead of the terminal.
    #[arg(long, global = true)]
    password_stdin: bool,
}

/// `medvault account ...`
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Register a participant; prints the UID, the SuperPIN and the TANs once.
    Register(RegisterArgs),
    /// Log in with one working credential.
    Login(LoginArgs),
    /// End the session.
    Logout,
    /// Show who is logged in.
    Whoami,
    /// Write everything the server holds about you to a file (JSON, mode
    /// 0600). A holder of a Patient Credential needs an IAL2 session.
    Export {
        /// The file to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Approve the code a medvault login or registration page shows, letting
    /// the app that sent you there know who you are.
    Approve {
        /// The code on the page.
        code: String,
        /// Approve without asking (after checking the app's host some other way).
        #[arg(long)]
        yes: bool,
    },
}

/// `medvault account register`
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The server's base URL, e.g. https://localhost:8443/.
    #[arg(long)]
    server: String,
    /// PEM file of the CA that signed the server's TLS certificate (development).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Expected participant CA key (base64url); without it the key the server
    /// shows now is pinned (trust on first use).
    #[arg(long)]
    pin_ca: Option<String>,
    /// patient, institution:practice, institution:hospital, institution:pharmacy or hcp.
    #[arg(long)]
    kind: String,
    /// Display name (institutions and HCPs only).
    #[arg(long)]
    name: Option<String>,
    /// Email for a password credential (the password is asked for).
    #[arg(long)]
    email: Option<String>,
    /// How many TANs to print.
    #[arg(long, default_value_t = 0)]
    tans: u32,
    /// Write a software-certificate credential to this file (passphrase asked for).
    #[arg(long)]
    software_certificate: Option<PathBuf>,
}

/// `medvault account login`: exactly one way in.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("method").required(true).multiple(false).args(["email", "superpin", "tan", "certificate", "smartcard"])))]
pub struct LoginArgs {
    /// Email of a password credential.
    #[arg(long)]
    email: Option<String>,
    /// Log in with the SuperPIN (needs --uid).
    #[arg(long, requires = "uid")]
    superpin: bool,
    /// Log in with TAN number N (needs --uid).
    #[arg(long, requires = "uid", value_name = "N")]
    tan: Option<u32>,
    /// Log in with a software-certificate file.
    #[arg(long)]
    certificate: Option<PathBuf>,
    /// Log in with a smartcard key (needs --module, --token).
    #[arg(long, requires_all = ["module", "token"], value_name = "KEY_LABEL")]
    smartcard: Option<String>,
    /// The account's UID (SuperPIN and TAN logins).
    #[arg(long)]
    uid: Option<String>,
    /// PKCS#11 module path (smartcard).
    #[arg(long)]
    module: Option<PathBuf>,
    /// Token label (smartcard).
    #[arg(long)]
    token: Option<String>,
    /// Then present the profile's Patient Credential: an IAL2 session.
    #[arg(long)]
    patient_credential: bool,
}

/// `medvault credentials ...`
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// List the working credentials.
    List,
    /// Enrol a working credential (needs a session).
    Add(AddArgs),
    /// Remove a working credential (the last one is refused).
    Remove {
        /// The credential's id.
        id: String,
    },
}

/// `medvault credentials add`: exactly one kind.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).multiple(false).args(["email", "tans", "software_certificate", "smartcard"])))]
pub struct AddArgs {
    /// A password credential for this email.
    #[arg(long)]
    email: Option<String>,
    /// A batch of N TANs.
    #[arg(long, value_name = "N")]
    tans: Option<u32>,
    /// A software certificate, written to this file.
    #[arg(long)]
    software_certificate: Option<PathBuf>,
    /// A smartcard key generated on the token under this label.
    #[arg(long, requires_all = ["module", "token"], value_name = "KEY_LABEL")]
    smartcard: Option<String>,
    /// PKCS#11 module path (smartcard).
    #[arg(long)]
    module: Option<PathBuf>,
    /// Token label (smartcard).
    #[arg(long)]
    token: Option<String>,
}

/// `medvault documents ...`
#[derive(Debug, Subcommand)]
pub enum DocumentsCommand {
    /// Seal a file for connected participants (and yourself) and send it.
    Send {
        /// Recipient UID (repeat for several; omit to keep it for yourself).
        #[arg(long = "to")]
        to: Vec<String>,
        /// Title shown to recipients.
        #[arg(long)]
        title: String,
        /// Media type of the file.
        #[arg(long, default_value = "application/octet-stream")]
        media_type: String,
        /// Sign on this smartcard key (a session opened with the card; needs --module, --token).
        #[arg(long, value_name = "KEY_LABEL", requires_all = ["module", "token"])]
        smartcard: Option<String>,
        /// PKCS#11 module path (smartcard).
        #[arg(long)]
        module: Option<PathBuf>,
        /// Token label (smartcard).
        #[arg(long)]
        token: Option<String>,
        /// The file.
        file: PathBuf,
    },
    /// List documents for you.
    List,
    /// Verify and open a document.
    Open {
        /// The document's id.
        id: String,
        /// Write the content here (mode 0600) instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// `medvault pairing ...`
pub async fn pairing(args: ProfileArgs, command: PairingCommand) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    match command {
        PairingCommand::Ticket => {
            let ticket = session.pairing_ticket().await?;
            println!("login ticket: {}", ticket.ticket);
            println!("valid until:  {}", ticket.expires_at);
        }
        PairingCommand::List => {
            for pairing in session.pairings().await? {
                let name = pairing
                    .diga_name
                    .as_deref()
                    .unwrap_or("(not in the registry)");
                let reason = pairing
                    .revoke_reason
                    .as_deref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default();
                println!(
                    "{}  {} {name}  {}{reason}  until {}",
                    pairing.pairing_id, pairing.client_id, pairing.status, pairing.consent_until
                );
                println!("    {}", pairing.scope);
                if pairing.expires_soon {
                    println!(
                        "    ENDS SOON: renew with `medvault pairing renew {}`",
                        pairing.pairing_id
                    );
                }
            }
        }
        PairingCommand::Renew { pairing_id, days } => {
            let renewed = session.renew_pairing(&pairing_id, days).await?;
            println!("renewed {pairing_id} until {}", renewed.consent_until);
        }
        PairingCommand::Revoke { pairing_id } => {
            session.unpair(&pairing_id).await?;
            println!("revoked {pairing_id}");
        }
    }
    Ok(())
}

/// `medvault proofing ...` (institutions).
#[derive(Debug, Subcommand)]
pub enum ProofingCommand {
    /// Record that you proofed a connected patient's identity (IAL2) and show
    /// the one-time code for their credential request, as text and QR code.
    Record {
        /// The patient's UID.
        #[arg(long)]
        patient: String,
        /// in-person, supervised-remote or eid.
        #[arg(long)]
        method: String,
        /// id-card, passport, residence-permit or eid (the type only; never the document).
        #[arg(long)]
        evidence: String,
        /// Also write the QR code as a PNG image to this file (mode 0600), to
        /// print or show on another screen.
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
    },
    /// A new code for a proofing whose code was lost or expired (the old one
    /// stops working); refused once the patient holds the credential.
    Code {
        /// The proofing's id (printed by `proofing record`).
        proofing: String,
        /// Also write the QR code as a PNG image to this file (mode 0600).
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
    },
}

/// `medvault connections ...`
#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Invite a participant.
    Invite {
        /// Their UID.
        uid: String,
    },
    /// Accept an invitation.
    Accept {
        /// The inviter's UID.
        uid: String,
    },
    /// Remove a connection or invitation.
    Remove {
        /// The other participant's UID.
        uid: String,
    },
    /// List connections and invitations.
    List,
}

/// Which audit entries `medvault audit list|export` reads.
#[derive(Debug, Args)]
pub struct AuditFilterArgs {
    /// Only this event type (e.g. hddt.pairing).
    #[arg(long)]
    event_type: Option<String>,
    /// Auditors: every participant's entries.
    #[arg(long)]
    all: bool,
    /// Auditors: only entries about this UID.
    #[arg(long)]
    subject: Option<String>,
    /// Entries after this seq.
    #[arg(long)]
    after: Option<i64>,
    /// At most this many (list only; default 100).
    #[arg(long)]
    limit: Option<u32>,
}

/// `medvault audit list|export`: prints one page, or writes every page as
/// JSON Lines to `output`.
pub async fn audit_list(
    args: ProfileArgs,
    filter: AuditFilterArgs,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    let mut options = medvault_client::AuditOptions {
        after: filter.after,
        limit: filter.limit,
        event_type: filter.event_type,
        all: filter.all,
        subject: filter.subject,
    };
    let Some(output) = output else {
        let page = session.audit(&options).await?;
        for entry in &page.entries {
            println!(
                "{:>8}  {}  {:<28} {:<8} actor {}  {}",
                entry.seq,
                entry.recorded_at,
                entry.event_type,
                entry.outcome,
                entry.actor,
                entry.detail
            );
        }
        if let Some(next) = page.next_after {
            println!("(more: --after {next})");
        }
        return Ok(());
    };
    options.limit = Some(1000);
    let mut lines = String::new();
    let mut count = 0usize;
    loop {
        let page = session.audit(&options).await?;
        for entry in &page.entries {
            lines.push_str(&serde_json::to_string(entry)?);
            lines.push('\n');
            count += 1;
        }
        match page.next_after {
            Some(next) => options.after = Some(next),
            None => break,
        }
    }
    write_private(&output, lines.as_bytes())?;
    println!("wrote {count} entries to {}", output.display());
    Ok(())
}

/// `medvault pairing ...` (patients): HDDT pairings with DiGAs.
#[derive(Debug, Subcommand)]
pub enum PairingCommand {
    /// A one-time login ticket for a DiGA's consent page (5 minutes): type it
    /// into the page, which never asks for your password.
    Ticket,
    /// Every pairing (consent) with a DiGA, newest first.
    List,
    /// Renew a pairing's consent before it ends (same Pairing ID and data).
    Renew {
        /// The Pairing ID.
        pairing_id: String,
        /// Days from now (at most 365).
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// End a pairing at once: the DiGA's tokens stop working.
    Revoke {
        /// The Pairing ID (64 hex characters, from `pairing list`).
        pairing_id: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_ca_pem: Option<String>,
    participant_ca: medvault_proto::Bytes,
}

/// A profile directory and how to read secrets.
pub(crate) struct Profiled {
    pub(crate) dir: PathBuf,
    stdin_secrets: bool,
    lines: Option<std::io::Lines<std::io::StdinLock<'static>>>,
}

impl Profiled {
    pub(crate) fn new(args: &ProfileArgs) -> anyhow::Result<Self> {
        let dir = match &args.profile {
            Some(dir) => dir.clone(),
            None => PathBuf::from(
                std::env::var_os("HOME").ok_or_else(|| anyhow!("set --profile or HOME"))?,
            )
            .join(".medvault"),
        };
        Ok(Self {
            dir,
            stdin_secrets: args.password_stdin,
            lines: None,
        })
    }

    /// One secret: the next line of standard input, or a prompt without echo.
    pub(crate) fn secret(&mut self, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
        if self.stdin_secrets {
            let lines = self
                .lines
                .get_or_insert_with(|| std::io::stdin().lock().lines());
            let line = lines
                .next()
                .ok_or_else(|| anyhow!("standard input ended before the {prompt}"))?
                .context("reading standard input")?;
            return Ok(Zeroizing::new(line.trim_end_matches('\r').to_owned()));
        }
        rpassword::prompt_password(format!("{prompt}: "))
            .map(Zeroizing::new)
            .context("reading from the terminal")
    }

    pub(crate) fn ensure_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        set_mode(&self.dir, 0o700)
    }

    fn profile(&self) -> anyhow::Result<Profile> {
        let path = self.dir.join("profile.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no profile in {}: register first", self.dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
    }

    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let profile = self.profile()?;
        let pinned = PinnedCa::from_public_key(profile.participant_ca.as_slice())
            .map_err(|_| anyhow!("the pinned participant CA key is malformed"))?;
        Ok(Client::new(
            http_client(profile.tls_ca_pem.as_deref())?,
            url::Url::parse(&profile.server).context("server URL")?,
            pinned,
        ))
    }

    pub(crate) fn save_session(&self, session: &Session) -> anyhow::Result<()> {
        let state = session.export();
        let json = Zeroizing::new(serde_json::to_vec(&state)?);
        write_private(&self.dir.join("session.json"), &json)
    }

    pub(crate) fn session(&self) -> anyhow::Result<Session> {
        let path = self.dir.join("session.json");
        let bytes = Zeroizing::new(
            std::fs::read(&path).map_err(|_| anyhow!("not logged in (medvault account login)"))?,
        );
        let state: SessionState = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is malformed", path.display()))?;
        Ok(self.client()?.resume(&state)?)
    }

    fn forget_session(&self) -> anyhow::Result<()> {
        let path = self.dir.join("session.json");
        if path.exists() {
            // Overwrite before unlinking: the file held unlocked keys.
            let length = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::write(&path, vec![0u8; usize::try_from(length).unwrap_or(0)]);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Writes a profile directory for `session` on `server` (as `account
/// register` and `account login` leave it), so that the commands that read
/// a profile work with it: the demo's `--keep`.
pub(crate) fn write_profile(
    dir: &Path,
    server: &url::Url,
    tls_ca_pem: Option<&str>,
    ca: &PinnedCa,
    session: &Session,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir, 0o700)?;
    let profile = Profile {
        server: server.to_string(),
        tls_ca_pem: tls_ca_pem.map(str::to_owned),
        participant_ca: ca.public_key().into(),
    };
    write_private(
        &dir.join("profile.json"),
        &serde_json::to_vec_pretty(&profile)?,
    )?;
    let json = Zeroizing::new(serde_json::to_vec(&session.export())?);
    write_private(&dir.join("session.json"), &json)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    Ok(())
}

/// Writes a file only the user can read (0600), replacing it.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, 0o600)?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

fn http_client(tls_ca_pem: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
    if let Some(pem) = tls_ca_pem {
        builder = builder.tls_certs_only([
            reqwest::Certificate::from_pem(pem.as_bytes()).context("TLS CA certificate")?
        ]);
    }
    builder.build().context("HTTP client")
}

pub(crate) fn parse_uid(text: &str) -> anyhow::Result<Uid> {
    text.parse()
        .map_err(|_| anyhow!("{text:?} is not a UID (a UUID v4, lower case)"))
}

/// `medvault account ...`
pub async fn account(args: ProfileArgs, command: AccountCommand) -> anyhow::Result<()> {
    let mut context = Profiled::new(&args)?;
    match command {
        AccountCommand::Register(register) => register_account(&mut context, register).await,
        AccountCommand::Login(login) => {
            let present = login.patient_credential;
            let mut session = log_in(&mut context, login).await?;
            context.ensure_dir()?;
            context.save_session(&session)?;
            println!(
                "logged in as {} until {}",
                session.uid(),
                session.expires_at()
            );
            if present {
                crate::patient::present(&mut context, &mut session).await?;
            }
            Ok(())
        }
        AccountCommand::Logout => {
            let outcome = match context.session() {
                Ok(session) => session.logout().await.map_err(anyhow::Error::from),
                Err(error) => Err(error),
            };
            context.forget_session()?;
            outcome?;
            println!("logged out");
            Ok(())
        }
        AccountCommand::Approve { code, yes } => {
            let session = context.session()?;
            let (purpose, host) = session.inspect_account_request(&code).await?;
            println!("{host} asks who you are ({purpose}).");
            if !yes {
                eprint!("Approve? [y/N] ");
                let mut answer = String::new();
                std::io::stdin()
                    .read_line(&mut answer)
                    .context("reading the answer")?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("not approved");
                }
            }
            let host = session.approve_account_request(&code).await?;
            println!("approved: {host} now learns your UID");
            Ok(())
        }
        AccountCommand::Export { output } => {
            let session = context.session()?;
            let export = session.export_account().await?;
            write_private(&output, &serde_json::to_vec_pretty(&export)?)?;
            println!(
                "exported {} documents, {} audit entries to {}",
                export
                    .get("documents")
                    .and_then(serde_json::Value::as_array)
                    .map_or(0, Vec::len),
                export
                    .get("audit")
                    .and_then(serde_json::Value::as_array)
                    .map_or(0, Vec::len),
                output.display()
            );
            Ok(())
        }
        AccountCommand::Whoami => {
            let session = context.session()?;
            let view = session.whoami().await?;
            println!("uid: {}", view.uid);
            println!("credential: {}", view.credential_id);
            println!("expires: {}", view.expires_at);
            println!("assurance: {}", view.assurance);
            Ok(())
        }
    }
}

async fn register_account(context: &mut Profiled, args: RegisterArgs) -> anyhow::Result<()> {
    let kind = ParticipantKind::parse(&args.kind)
        .ok_or_else(|| anyhow!("--kind: unknown participant kind {:?}", args.kind))?;
    let tls_ca_pem = args
        .tls_ca
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        })
        .transpose()?;
    let base = url::Url::parse(&args.server).context("--server")?;
    let http = http_client(tls_ca_pem.as_deref())?;
    let fetched = Client::fetch_ca(&http, &base).await?;
    if let Some(expected) = &args.pin_ca {
        let shown = medvault_proto::Bytes::from(fetched.public_key());
        let shown = serde_json::to_value(&shown)?;
        if shown.as_str() != Some(expected.as_str()) {
            bail!("the server's participant CA key is not the one given with --pin-ca");
        }
    }
    let password = match &args.email {
        Some(email) => Some((
            email.clone(),
            Password::new(context.secret("password")?.as_str()),
        )),
        None => None,
    };
    let passphrase = match &args.software_certificate {
        Some(_) => Some(context.secret("passphrase for the certificate file")?),
        None => None,
    };
    let client = Client::new(http, base.clone(), fetched.clone());
    let registered = client
        .register(NewAccount {
            kind,
            display_name: args.name,
            password,
            tans: args.tans,
            software_certificate: args.software_certificate.is_some(),
        })
        .await?;
    context.ensure_dir()?;
    let profile = Profile {
        server: base.to_string(),
        tls_ca_pem,
        participant_ca: fetched.public_key().into(),
    };
    write_private(
        &context.dir.join("profile.json"),
        &serde_json::to_vec_pretty(&profile)?,
    )?;
    if let (Some(path), Some(file)) = (&args.software_certificate, &registered.software_certificate)
    {
        let passphrase = passphrase.filter(|p| !p.is_empty());
        let pem = file.to_pem(passphrase.as_ref().map(|p| p.as_bytes()))?;
        write_private(path, pem.as_bytes())?;
        println!("software certificate: {}", path.display());
    }
    println!("uid: {}", registered.uid);
    println!(
        "SuperPIN (write it down; it is shown only now): {}",
        registered.superpin.display().as_str()
    );
    for (number, tan) in registered.tans.iter().enumerate() {
        println!("TAN {:>3}: {}", number + 1, tan.display().as_str());
    }
    Ok(())
}

async fn log_in(context: &mut Profiled, args: LoginArgs) -> anyhow::Result<Session> {
    let client = context.client()?;
    if let Some(email) = &args.email {
        let password = Password::new(context.secret("password")?.as_str());
        return Ok(client.login_password(email, &password).await?);
    }
    if args.superpin || args.tan.is_some() {
        let uid = parse_uid(args.uid.as_deref().unwrap_or_default())?;
        let (kind, prompt) = if args.superpin {
            (CodeKind::SuperPin, "SuperPIN")
        } else {
            (CodeKind::Tan, "TAN")
        };
        let text = context.secret(prompt)?;
        let code =
            RecoveryCode::parse(kind, &text).map_err(|_| anyhow!("that is not a {prompt}"))?;
        return Ok(match args.tan {
            Some(number) => client.login_tan(uid, number, &code).await?,
            None => client.login_superpin(uid, &code).await?,
        });
    }
    if let Some(path) = &args.certificate {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let file = if text.contains("ENCRYPTED PRIVATE KEY") {
            let passphrase = context.secret("passphrase of the certificate file")?;
            SoftwareCredentialFile::from_pem(&text, Some(passphrase.as_bytes()))
        } else {
            SoftwareCredentialFile::from_pem(&text, None)
        }
        .map_err(|_| anyhow!("cannot read the certificate file (wrong passphrase?)"))?;
        return Ok(client.login_software(&file).await?);
    }
    if let Some(key_label) = &args.smartcard {
        let mut card = open_card(context, args.module.as_deref(), args.token.as_deref())?;
        card.use_key(key_label)?;
        return Ok(client.login_smartcard(&card).await?);
    }
    bail!("choose a way to log in")
}

pub(crate) fn open_card(
    context: &mut Profiled,
    module: Option<&Path>,
    token: Option<&str>,
) -> anyhow::Result<medvault_client::smartcard::Smartcard> {
    let module = Pkcs11Module::load(module.ok_or_else(|| anyhow!("--module is required"))?)?;
    let pin = context.secret("token PIN")?;
    Ok(module.open(token.ok_or_else(|| anyhow!("--token is required"))?, &pin)?)
}

/// `medvault credentials ...`
pub async fn credentials(args: ProfileArgs, command: CredentialsCommand) -> anyhow::Result<()> {
    let mut context = Profiled::new(&args)?;
    let session = context.session()?;
    match command {
        CredentialsCommand::List => {
            for credential in session.credentials().await? {
                let remaining = credential
                    .remaining
                    .map(|n| format!(" ({n} left)"))
                    .unwrap_or_default();
                let current = if credential.id == session.credential_id() {
                    " *"
                } else {
                    ""
                };
                println!(
                    "{}  {:<21} {}{remaining}{current}",
                    credential.id, credential.kind, credential.created_at
                );
            }
            Ok(())
        }
        CredentialsCommand::Add(add) => {
            if let Some(email) = &add.email {
                let password = Password::new(context.secret("new password")?.as_str());
                let view = session.add_password(email, &password).await?;
                println!("added password credential {}", view.id);
            } else if let Some(count) = add.tans {
                let (view, codes) = session.add_tans(count).await?;
                println!("added TAN batch {}", view.id);
                for (number, tan) in codes.iter().enumerate() {
                    println!("TAN {:>3}: {}", number + 1, tan.display().as_str());
                }
            } else if let Some(path) = &add.software_certificate {
                let passphrase = context.secret("passphrase for the certificate file")?;
                let file = session.add_software_certificate().await?;
                let pem = file.to_pem(Some(passphrase.as_bytes()).filter(|p| !p.is_empty()))?;
                write_private(path, pem.as_bytes())?;
                println!("added software certificate: {}", path.display());
            } else if let Some(label) = &add.smartcard {
                let mut card =
                    open_card(&mut context, add.module.as_deref(), add.token.as_deref())?;
                let view = session.add_smartcard(&mut card, label).await?;
                println!("added smartcard credential {}", view.id);
            }
            Ok(())
        }
        CredentialsCommand::Remove { id } => {
            session.remove_credential(&id).await?;
            println!("removed {id}");
            Ok(())
        }
    }
}

/// `medvault documents ...`
pub async fn documents(args: ProfileArgs, command: DocumentsCommand) -> anyhow::Result<()> {
    let mut context = Profiled::new(&args)?;
    let session = context.session()?;
    match command {
        DocumentsCommand::Send {
            to,
            title,
            media_type,
            smartcard,
            module,
            token,
            file,
        } => {
            let recipients = to
                .iter()
                .map(|uid| parse_uid(uid))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = Zeroizing::new(
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
            );
            let id = match &smartcard {
                Some(label) => {
                    let mut card = open_card(&mut context, module.as_deref(), token.as_deref())?;
                    card.use_key(label)?;
                    session
                        .send_document_with(&card, &recipients, &title, &media_type, &body)
                        .await?
                }
                None => {
                    session
                        .send_document(&recipients, &title, &media_type, &body)
                        .await?
                }
            };
            println!("{id}");
            Ok(())
        }
        DocumentsCommand::List => {
            for document in session.documents().await? {
                println!(
                    "{}  {}  from {}  {}  {} ({} bytes)",
                    document.id,
                    document.created_at,
                    document.sender,
                    document.media_type,
                    document.title,
                    document.size
                );
            }
            Ok(())
        }
        DocumentsCommand::Open { id, output } => {
            let opened = session.open_document(parse_uid(&id)?).await?;
            eprintln!(
                "verified: {} from {} (signed by credential {}), {}",
                opened.title, opened.sender, opened.signed_by, opened.media_type
            );
            match output {
                Some(path) => write_private(&path, &opened.body)?,
                None => std::io::stdout()
                    .write_all(&opened.body)
                    .context("writing standard output")?,
            }
            Ok(())
        }
    }
}

/// `medvault connections ...`
pub async fn connections(args: ProfileArgs, command: ConnectionsCommand) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    match command {
        ConnectionsCommand::Invite { uid } => {
            session.invite(parse_uid(&uid)?).await?;
            println!("invited {uid}");
        }
        ConnectionsCommand::Accept { uid } => {
            session.accept(parse_uid(&uid)?).await?;
            println!("connected with {uid}");
        }
        ConnectionsCommand::Remove { uid } => {
            session.remove_connection(parse_uid(&uid)?).await?;
            println!("removed {uid}");
        }
        ConnectionsCommand::List => {
            for connection in session.connections().await? {
                println!(
                    "{}  {:<7} {:<8} {}",
                    connection.uid, connection.state, connection.direction, connection.created_at
                );
            }
        }
    }
    Ok(())
}

/// `medvault proofing ...`
pub async fn proofing(args: ProfileArgs, command: ProofingCommand) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    match command {
        ProofingCommand::Record {
            patient,
            method,
            evidence,
            png,
        } => {
            let issued = session
                .record_proofing(parse_uid(&patient)?, &method, &evidence)
                .await?;
            show_code(&issued, png.as_deref())
        }
        ProofingCommand::Code { proofing, png } => {
            let issued = session.reissue_proofing_code(&proofing).await?;
            show_code(&issued, png.as_deref())
        }
    }
}

/// Prints a proofing's code as a terminal QR code and text (and writes a PNG).
fn show_code(issued: &medvault_client::ProofingCode, png: Option<&Path>) -> anyhow::Result<()> {
    let qr = qrcode::QrCode::new(issued.code.as_bytes()).context("QR code")?;
    let picture = qr
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build();
    println!("{picture}");
    if let Some(path) = png {
        write_private(path, &qr_png(&qr)?)?;
        println!("QR code image: {}", path.display());
    }
    println!("code: {}", issued.code.as_str());
    println!("valid until: {}", issued.expires_at);
    println!("proofing: {}", issued.proofing_id);
    Ok(())
}

/// A QR code as a grey-scale PNG: 8 pixels per module, a 4-module quiet zone.
fn qr_png(qr: &qrcode::QrCode) -> anyhow::Result<Vec<u8>> {
    const SCALE: usize = 8;
    const QUIET: usize = 4;
    let modules = qr.width();
    let side = (modules + 2 * QUIET) * SCALE;
    let colors = qr.to_colors();
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (row, column) = (index / modules + QUIET, index % modules + QUIET);
        for y in row * SCALE..(row + 1) * SCALE {
            if let Some(line) =
                pixels.get_mut(y * side + column * SCALE..y * side + (column + 1) * SCALE)
            {
                line.fill(0);
            }
        }
    }
    let mut out = Vec::new();
    let side = u32::try_from(side).context("QR code size")?;
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("PNG")?;
    writer.write_image_data(&pixels).context("PNG")?;
    writer.finish().context("PNG")?;
    Ok(out)
}
