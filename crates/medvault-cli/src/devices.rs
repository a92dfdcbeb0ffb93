//! `medvault devices|readings|simulate|export` (patients): personal health
//! devices from the catalogue, reading upload from CSV or JSON files (in
//! batches the server stores whole or not at all; a re-run of the same file
//! is acknowledged, not stored twice), realistic simulated CGM data, and the
//! FHIR export of all device data.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use medvault_fhir::catalogue::{self, GlucoseUnit, ModelKind};
use medvault_proto::devices::{DeviceUpdate, Limit, NewDevice, Reading, UploadBatch};

use crate::user::{ProfileArgs, Profiled};

/// `medvault devices ...`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// The models you can register.
    Models,
    /// Register a device.
    Add {
        /// The catalogue model (see `devices models`).
        model: String,
        /// The serial number printed on the device.
        #[arg(long)]
        serial: String,
        /// Your preferred unit: mg/dL or mmol/L.
        #[arg(long, default_value = "mg/dL")]
        unit: String,
    },
    /// Your devices.
    List,
    /// Record a calibration of a device that needs one.
    Calibrate {
        /// The device id.
        device: String,
        /// calibrated, calibration-required, not-calibrated or unspecified.
        #[arg(long, default_value = "calibrated")]
        state: String,
        /// When (RFC 3339; default now).
        #[arg(long)]
        time: Option<String>,
    },
    /// Take a device out of use (a replaced sensor).
    Retire {
        /// The device id.
        device: String,
    },
}

/// `medvault readings ...`.
#[derive(Debug, Subcommand)]
pub enum ReadingsCommand {
    /// Upload readings from a CSV (`device,time,value,unit[,limit]` with a
    /// header line) or JSON file (a batch or a list of readings).
    Upload {
        /// The file.
        file: PathBuf,
    },
}

/// `medvault simulate ...`.
#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// A realistic CGM series (5-minute readings) up to now.
    Cgm {
        /// How many days.
        #[arg(long, default_value_t = 14)]
        days: u32,
        /// The CGM (default: your first active CGM; one is registered if
        /// you have none).
        #[arg(long)]
        device: Option<String>,
        /// Write a CSV file instead of uploading.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The random seed (the same seed gives the same series).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// `medvault portal ...`.
#[derive(Debug, Subcommand)]
pub enum PortalCommand {
    /// A one-time login ticket for the portal page (a few minutes).
    Ticket,
}

/// The most readings sent in one request.
const BATCH: usize = 10_000;

/// `medvault devices ...`.
pub async fn devices(args: ProfileArgs, command: DevicesCommand) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    match command {
        DevicesCommand::Models => {
            for model in session.device_models().await? {
                println!(
                    "{:<20} {:<10} {} ({}){}",
                    model.id,
                    model.kind,
                    model.name,
                    model.manufacturer,
                    if model.needs_calibration {
                        ", needs calibration"
                    } else {
                        ""
                    }
                );
            }
        }
        DevicesCommand::Add {
            model,
            serial,
            unit,
        } => {
            let device = session
                .register_device(&NewDevice {
                    model,
                    serial_number: serial,
                    unit,
                })
                .await?;
            println!(
                "registered {} ({}): {}",
                device.name, device.kind, device.id
            );
        }
        DevicesCommand::List => {
            for device in session.devices().await? {
                println!(
                    "{}  {:<14} {:<10} {:<8} {}  calibration {}  last data {}",
                    device.id,
                    device.name,
                    device.kind,
                    device.status,
                    device.unit,
                    device.calibration_state,
                    device.last_sync_at.as_deref().unwrap_or("never")
                );
            }
        }
        DevicesCommand::Calibrate {
            device,
            state,
            time,
        } => {
            let updated = session
                .update_device(
                    &device,
                    &DeviceUpdate {
                        calibration_state: Some(state),
                        calibration_time: time,
                        retire: false,
                    },
                )
                .await?;
            println!(
                "{}: calibration {} at {}",
                updated.id,
                updated.calibration_state,
                updated.calibration_time.as_deref().unwrap_or("-")
            );
        }
        DevicesCommand::Retire { device } => {
            let updated = session
                .update_device(
                    &device,
                    &DeviceUpdate {
                        calibration_state: None,
                        calibration_time: None,
                        retire: true,
                    },
                )
                .await?;
            println!("{}: {}", updated.id, updated.status);
        }
    }
    Ok(())
}

/// Reads a CSV file of readings.
fn parse_csv(text: &str) -> anyhow::Result<Vec<Reading>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| anyhow!("the file is empty"))?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    if columns.get(..4) != Some(&["device", "time", "value", "unit"][..]) {
        bail!("the header must be device,time,value,unit[,limit]");
    }
    lines
        .map(|(number, line)| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let at = || format!("line {}", number + 1);
            let field = |i: usize| fields.get(i).copied().unwrap_or("");
            let limit = match field(4) {
                "" => None,
                "low" | "LO" => Some(Limit::Low),
                "high" | "HI" => Some(Limit::High),
                _ => bail!("{}: limit must be low or high", at()),
            };
            let value = match field(2) {
                "" => None,
                text => Some(text.parse::<f64>().with_context(at)?),
            };
            Ok(Reading {
                device: field(0).to_owned(),
                time: field(1).to_owned(),
                value,
                unit: field(3).to_owned(),
                limit,
            })
        })
        .collect()
}

/// Reads a JSON file: a batch or a list of readings.
fn parse_json(text: &str) -> anyhow::Result<Vec<Reading>> {
    if let Ok(batch) = serde_json::from_str::<UploadBatch>(text) {
        return Ok(batch.readings);
    }
    serde_json::from_str::<Vec<Reading>>(text)
        .context("expected an upload batch or a list of readings")
}

/// Uploads `readings` in batches named after `name` (a re-run with the same
/// name and readings is acknowledged without storing anything twice).
async fn upload(
    session: &medvault_client::Session,
    name: &str,
    readings: &[Reading],
) -> anyhow::Result<(i64, usize)> {
    let mut stored = 0;
    let mut replayed = 0;
    let total = readings.len().div_ceil(BATCH);
    for (index, part) in readings.chunks(BATCH).enumerate() {
        let receipt = session
            .upload_readings(&UploadBatch {
                batch_id: format!("{name}-{index}"),
                readings: part.to_vec(),
            })
            .await
            .with_context(|| format!("batch {} of {total}", index + 1))?;
        if receipt.replayed {
            replayed += 1;
        } else {
            stored += receipt.readings;
        }
        eprint!("\ruploaded batch {} of {total}", index + 1);
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    Ok((stored, replayed))
}

/// `medvault readings upload FILE`.
pub async fn readings(args: ProfileArgs, command: ReadingsCommand) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    let ReadingsCommand::Upload { file } = command;
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
    let readings = if text.trim_start().starts_with(['{', '[']) {
        parse_json(&text)?
    } else {
        parse_csv(&text)?
    };
    if readings.is_empty() {
        bail!("{} holds no readings", file.display());
    }
    // The batch names come from the file's content: uploading the same file
    // again changes nothing.
    let digest = medvault_crypto::sha256(text.as_bytes());
    let name = format!("file-{}", hex::encode(digest.get(..8).unwrap_or_default()));
    let (stored, replayed) = upload(&session, &name, &readings).await?;
    println!(
        "{stored} readings stored{}",
        if replayed > 0 {
            format!(", {replayed} batch(es) had been stored before")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `medvault simulate cgm`.
pub async fn simulate(args: ProfileArgs, command: SimulateCommand) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    let SimulateCommand::Cgm {
        days,
        device,
        out,
        seed,
    } = command;
    if !(1..=90).contains(&days) {
        bail!("--days must be between 1 and 90");
    }
    let devices = session.devices().await?;
    let chosen = match device {
        Some(id) => devices
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| anyhow!("no device {id} (see `medvault devices list`)"))?,
        None => match devices
            .into_iter()
            .find(|d| d.kind == "cgm" && d.status == "active")
        {
            Some(device) => device,
            None => {
                let device = session
                    .register_device(&NewDevice {
                        model: "glukko-cgm-18".to_owned(),
                        serial_number: format!("SIM-{seed}"),
                        unit: "mg/dL".to_owned(),
                    })
                    .await?;
                eprintln!("registered a simulated CGM: {}", device.id);
                device
            }
        },
    };
    let model = catalogue::model(&chosen.model)
        .filter(|m| m.kind == ModelKind::Cgm)
        .ok_or_else(|| anyhow!("{} is not a CGM", chosen.id))?;
    let unit = GlucoseUnit::parse(&chosen.unit).unwrap_or(GlucoseUnit::MgPerDl);
    // Up to a minute ago: a device's clock runs a little behind the server's.
    let now = medvault_core::Clock::now(&medvault_core::SystemClock) - time::Duration::minutes(1);
    let series = medvault_fhir::simulate::cgm_series(&chosen.id, model, unit, now, days, seed);
    match out {
        Some(path) => {
            let mut csv = String::from("device,time,value,unit,limit\n");
            for reading in &series {
                let limit = match reading.limit {
                    Some(Limit::Low) => "low",
                    Some(Limit::High) => "high",
                    None => "",
                };
                let value = reading
                    .value
                    .map(|v| medvault_fhir::ingest::format_value(v, unit))
                    .unwrap_or_default();
                csv.push_str(&format!(
                    "{},{},{value},{},{limit}\n",
                    reading.device, reading.time, reading.unit
                ));
            }
            std::fs::write(&path, csv).with_context(|| format!("{}", path.display()))?;
            println!("{} readings written to {}", series.len(), path.display());
        }
        None => {
            let name = format!("sim-{}-{seed}-{}", chosen.id, now.unix_timestamp());
            let (stored, _) = upload(&session, &name, &series).await?;
            println!(
                "{stored} simulated CGM readings over {days} days stored for {}",
                chosen.id
            );
        }
    }
    Ok(())
}

/// `medvault export`: all device data as a FHIR R4 Bundle (JSON).
pub async fn export(args: ProfileArgs, out: Option<PathBuf>) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    let bundle = session.export_device_data().await?;
    let text = serde_json::to_string_pretty(&bundle)?;
    let count = bundle
        .get("entry")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    match out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
            eprintln!("{count} resources written to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// `medvault portal ticket`.
pub async fn portal(args: ProfileArgs, command: PortalCommand) -> anyhow::Result<()> {
    let context = Profiled::new(&args)?;
    let session = context.session()?;
    let PortalCommand::Ticket = command;
    let ticket = session.portal_ticket().await?;
    println!("portal ticket: {}", ticket.ticket);
    println!("valid until:   {}", ticket.expires_at);
    println!("open {}portal and enter it", session.server_url());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_readings_and_bad_rows_name_their_line() {
        let readings = parse_csv(
            "device,time,value,unit,limit\nd1,2026-12-01T08:00:00Z,120,mg/dL,\nd1,2026-12-01T08:05:00Z,,mg/dL,low\n",
        )
        .expect("valid");
        assert_eq!(readings.len(), 2);
        assert_eq!(readings.get(1).and_then(|r| r.limit), Some(Limit::Low));
        let error = parse_csv("device,time,value,unit\nd1,x,abc,mg/dL\n").expect_err("bad value");
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(parse_csv("a,b\n").is_err());
    }
}
