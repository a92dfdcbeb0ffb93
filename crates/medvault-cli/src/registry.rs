//! `medvault admin diga add|list|remove|reload`: the DiGA-VZ's local-file source,
//! `<data_dir>/diga-vz.json` (format 1; see `medvault_oauth::DigaRegistry`).
//! Every change runs the registration checks (certificate validity 365–398
//! days, digitalSignature + clientAuth, TR-02102 keys and signatures; exact
//! `redirect_uri`; known MIVs) and replaces the file atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use medvault_core::{Clock, DigaClientId, Miv, SystemClock};
use medvault_oauth::{DigaRegistry, DigaRegistryEntry, DigaStatus};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The file's name in the data directory.
pub const REGISTRY_FILE: &str = "diga-vz.json";

/// `medvault admin diga ...`
#[derive(Debug, Subcommand)]
pub enum DigaCommand {
    /// Register a DiGA, or replace its entry.
    Add {
        /// `urn:diga:bfarm:NNNNN`.
        #[arg(long)]
        client_id: String,
        /// Display name (shown on the consent page).
        #[arg(long)]
        name: String,
        /// The registered redirect_uri (compared exactly).
        #[arg(long)]
        redirect_uri: String,
        /// An authorized MIV's ValueSet id, e.g. hddt-miv-continuous-glucose-measurement (repeat).
        #[arg(long = "miv")]
        mivs: Vec<String>,
        /// A client certificate (PEM; repeat for a renewal overlap).
        #[arg(long = "cert")]
        certificates: Vec<PathBuf>,
        /// Register it as inactive.
        #[arg(long)]
        inactive: bool,
    },
    /// List the registered DiGAs.
    List,
    /// Remove a DiGA.
    Remove {
        /// `urn:diga:bfarm:NNNNN`.
        client_id: String,
    },
    /// Check the file and make every running node re-read it now (instead of
    /// at its next `registry_refresh_secs`).
    Reload,
}

/// The state a `reload` sets; running nodes watch it.
pub const RELOAD_STATE: &str = medvault_server::hddt::RELOAD_STATE;

fn load(path: &Path) -> anyhow::Result<DigaRegistry> {
    match std::fs::read(path) {
        Ok(bytes) => DigaRegistry::from_json(&bytes)
            .with_context(|| format!("{} is not a usable registry", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(DigaRegistry::default()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes beside the target, then renames: a reader sees the old file or the new one.
fn save(path: &Path, registry: &DigaRegistry) -> anyhow::Result<()> {
    let temporary = path.with_extension("json.new");
    std::fs::write(&temporary, registry.to_json())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::File::open(&temporary)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("syncing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

/// Runs a `medvault admin diga` command on the registry in `data_dir`.
pub fn diga(data_dir: &Path, command: DigaCommand) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join(REGISTRY_FILE);
    let mut registry = load(&path)?;
    match command {
        DigaCommand::Add {
            client_id,
            name,
            redirect_uri,
            mivs,
            certificates,
            inactive,
        } => {
            let client_id = DigaClientId::parse(&client_id)
                .ok_or_else(|| anyhow!("--client-id must be urn:diga:bfarm: and five digits"))?;
            let mivs = mivs
                .iter()
                .map(|id| {
                    Miv::from_value_set_id(id)
                        .ok_or_else(|| anyhow!("--miv: unknown MIV ValueSet {id:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut ders = Vec::new();
            for file in &certificates {
                let der = CertificateDer::from_pem_file(file)
                    .map_err(|_| anyhow!("{} holds no PEM certificate", file.display()))?;
                ders.push(der.to_vec());
            }
            if ders.is_empty() {
                bail!("--cert: a DiGA needs at least one client certificate");
            }
            registry
                .upsert(
                    DigaRegistryEntry {
                        client_id: client_id.clone(),
                        name,
                        status: if inactive {
                            DigaStatus::Inactive
                        } else {
                            DigaStatus::Active
                        },
                        redirect_uri,
                        mivs,
                        certificates: ders,
                    },
                    SystemClock.now().unix_timestamp(),
                )
                .map_err(|error| anyhow!("{error}"))?;
            save(&path, &registry)?;
            println!("registered {client_id} in {}", path.display());
        }
        DigaCommand::List => {
            for entry in registry.entries() {
                let mivs: Vec<&str> = entry.mivs.iter().map(|miv| miv.value_set_id()).collect();
                println!(
                    "{}  {:<8} {:<30} certificates: {}  mivs: {}  redirect_uri: {}",
                    entry.client_id,
                    entry.status.as_str(),
                    entry.name,
                    entry.certificates.len(),
                    mivs.join(","),
                    entry.redirect_uri
                );
            }
        }
        DigaCommand::Reload => {
            // Checked here; the request to the nodes is made by the caller.
            println!(
                "{} is usable: {} DiGA(s)",
                path.display(),
                registry.entries().count()
            );
        }
        DigaCommand::Remove { client_id } => {
            let client_id = DigaClientId::parse(&client_id)
                .ok_or_else(|| anyhow!("the client id must be urn:diga:bfarm: and five digits"))?;
            if !registry.remove(&client_id) {
                bail!("{client_id} is not registered");
            }
            save(&path, &registry)?;
            println!("removed {client_id}");
        }
    }
    Ok(())
}

/// Where loaded ValueSets live in the data directory.
pub const VALUE_SET_DIR: &str = "valuesets";

/// `medvault admin valuesets ...`
#[derive(Debug, Subcommand)]
pub enum ValueSetCommand {
    /// Check the MIV ValueSets in DIR (the guide's package layout,
    /// `ValueSet-<id>.json`) and copy them into the data directory.
    Load {
        /// The directory, e.g. hddt-ig/ of this repository.
        dir: PathBuf,
    },
    /// Show the loaded MIV ValueSets and their codes.
    Show,
}

/// Runs a `medvault admin valuesets` command under the ValueSet `base`.
pub fn valuesets(data_dir: &Path, base: &str, command: ValueSetCommand) -> anyhow::Result<()> {
    let target = data_dir.join(VALUE_SET_DIR);
    match command {
        ValueSetCommand::Load { dir } => {
            let sets = medvault_oauth::MivValueSets::load_dir(base, &dir)
                .map_err(|error| anyhow!("{}: {error}", dir.display()))?;
            // Stage everything, then swap the directory: readers see the old
            // set or the new one.
            let staging = data_dir.join("valuesets.new");
            if staging.exists() {
                std::fs::remove_dir_all(&staging)
                    .with_context(|| format!("removing {}", staging.display()))?;
            }
            std::fs::create_dir_all(&staging)
                .with_context(|| format!("creating {}", staging.display()))?;
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("ValueSet-") && name.ends_with(".json") {
                    std::fs::copy(entry.path(), staging.join(name.as_ref()))
                        .with_context(|| format!("copying {name}"))?;
                }
            }
            if target.exists() {
                std::fs::remove_dir_all(&target)
                    .with_context(|| format!("removing {}", target.display()))?;
            }
            std::fs::rename(&staging, &target)
                .with_context(|| format!("installing {}", target.display()))?;
            for miv in Miv::ALL {
                if let Some(set) = sets.get(miv) {
                    println!(
                        "{}  version {}  {} codes",
                        set.url,
                        set.version.as_deref().unwrap_or("-"),
                        set.codes.len()
                    );
                }
            }
        }
        ValueSetCommand::Show => {
            let sets = medvault_oauth::MivValueSets::load_dir(base, &target).map_err(|error| {
                anyhow!(
                    "no usable ValueSets in {} ({error}): run `medvault admin valuesets load DIR`",
                    target.display()
                )
            })?;
            for miv in Miv::ALL {
                if let Some(set) = sets.get(miv) {
                    let served = if miv.is_supported() {
                        "served"
                    } else {
                        "not served"
                    };
                    println!("{} ({served})", set.url);
                    for (system, code) in &set.codes {
                        println!("  {system}|{code}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// `medvault admin hiis ...`
#[derive(Debug, Subcommand)]
pub enum HiisCommand {
    /// Print what the operator registers in the HIIS-VZ: the FQDN, the base
    /// URLs of the OAuth and FHIR APIs, the MIVs served and their time
    /// properties (`--json`: as the HIIS's FHIR DeviceDefinition and Endpoints).
    Show {
        /// Print a FHIR Bundle instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The per-MIV time properties medvault registers: data is readable within
/// `DELAY_SECS` of its upload, a DiGA may be `GRACE_MINUTES` late, and 30
/// days of history are kept.
const DELAY_SECS: u32 = 60;
const GRACE_MINUTES: u32 = 15;
const HISTORY_DAYS: u32 = 30;

/// Runs `medvault admin hiis show`.
pub fn hiis(config: &medvault_server::Config, command: HiisCommand) -> anyhow::Result<()> {
    let HiisCommand::Show { json } = command;
    let oauth = config.oauth_issuer.as_str().trim_end_matches('/');
    let fhir = config.fhir_base_url.as_str().trim_end_matches('/');
    let mivs: Vec<&str> = Miv::SUPPORTED
        .iter()
        .map(|miv| miv.value_set_id())
        .collect();
    if !json {
        println!("FQDN:                   {}", config.fqdn);
        println!("OAuth base URL:         {oauth}");
        println!("  metadata:             {oauth}/.well-known/oauth-authorization-server");
        println!("FHIR base URL:          {fhir}");
        println!("  capability statement: {fhir}/metadata");
        println!("MIVs served:            {}", mivs.join(", "));
        println!(
            "per MIV:                delayFromRealTime {DELAY_SECS} s, gracePeriod {GRACE_MINUTES} min, historicDataPeriod {HISTORY_DAYS} d"
        );
        return Ok(());
    }
    let endpoint = |id: &str, code: &str, address: String| {
        serde_json::json!({
            "resourceType": "Endpoint",
            "id": id,
            "status": "active",
            "connectionType": {"system": "https://fhir.bfarm.de/CodeSystem/HiisEndpointConnectionType", "code": code},
            "name": config.fqdn,
            "address": address,
            "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type", "code": "any"}]}]
        })
    };
    let bundle = serde_json::json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {
                "resourceType": "DeviceDefinition",
                "id": "medvault-device-data-recorder",
                "manufacturerString": "medvault",
                "deviceName": [{"name": "medvault Device Data Recorder", "type": "user-friendly-name"}],
                "version": [env!("CARGO_PKG_VERSION")],
                "extension": [
                    {"url": "https://fhir.bfarm.de/StructureDefinition/HiisDeviceDataRecorderEndpointLink", "valueReference": {"reference": "Endpoint/medvault-fhir"}},
                    {"url": "https://fhir.bfarm.de/StructureDefinition/HiisDeviceDataRecorderEndpointLink", "valueReference": {"reference": "Endpoint/medvault-auth"}},
                    {"url": "https://fhir.bfarm.de/StructureDefinition/HiisDeviceDefinitionMivSet", "extension": [
                        {"url": "delayFromRealTime", "valueDuration": {"value": DELAY_SECS, "unit": "s"}},
                        {"url": "gracePeriod", "valueDuration": {"value": GRACE_MINUTES, "unit": "min"}},
                        {"url": "historicDataPeriod", "valueDuration": {"value": HISTORY_DAYS, "unit": "d"}}
                    ]}
                ]
            }},
            {"resource": endpoint("medvault-fhir", "hl7-fhir-rest", fhir.to_owned())},
            {"resource": endpoint("medvault-auth", "oauth-authz-server", format!("{oauth}/.well-known/oauth-authorization-server"))}
        ]
    });
    println!("{}", serde_json::to_string_pretty(&bundle)?);
    Ok(())
}
