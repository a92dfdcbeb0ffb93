//! The HDDT operational request log (guide §operational-requirements): one
//! JSON line per request and response on the HDDT listener with the 13
//! fields the guide names (`checksum`, `data_volume_bytes`, `error_code`,
//! `error_description`, `event_type`, `interface_id`, `message`,
//! `pairing_id`, `partner_id`, `response_time_ms`, `status`, `timestamp`,
//! `transaction_id`), in a file per UTC day under `<data_dir>/request-log/`.
//!
//! Integrity: each line's `checksum` is SHA-256 over the previous line's
//! checksum and this line's other fields (canonical JSON, keys sorted), the
//! first line of a file chains from SHA-256 of the file's name. Changing,
//! removing or reordering a line breaks the chain from there on
//! ([`verify_file`]); whole days are removed only by the retention purge.
//!
//! Lines go through the OS page cache and are synced to disk every second
//! (and at shutdown).
//!
//! The log names no patient: `pairing_id` is the Pairing ID, `partner_id`
//! the DiGA's `client_id`; never a query string, token or body.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

/// What a handler adds to its response for the request log.
#[derive(Debug, Clone, Default)]
pub struct LogNote {
    /// The OAuth or FHIR error code, if the request failed.
    pub error_code: Option<String>,
    /// Its description.
    pub error_description: Option<String>,
    /// The Pairing ID the request concerned.
    pub pairing_id: Option<String>,
}

/// One request and its response.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// When the request arrived.
    pub timestamp: OffsetDateTime,
    /// The request id (`x-request-id`).
    pub transaction_id: String,
    /// What kind of request (`oauth.par`, `oauth.token`, `fhir.read`, ...).
    pub event_type: &'static str,
    /// The endpoint (path, no query).
    pub interface_id: String,
    /// Method and path.
    pub message: String,
    /// The DiGA (`client_id`), `-` when unauthenticated.
    pub partner_id: String,
    /// HTTP status.
    pub status: u16,
    /// Milliseconds from request to response head.
    pub response_time_ms: u64,
    /// Response body bytes, when known.
    pub data_volume_bytes: u64,
    /// The handler's note.
    pub note: LogNote,
}

/// The event type of a path on the HDDT listener.
pub fn event_type(method: &str, path: &str) -> &'static str {
    match path {
        "/par" => "oauth.par",
        "/token" => "oauth.token",
        "/revoke" => "oauth.revoke",
        "/.well-known/oauth-authorization-server" => "oauth.metadata",
        "/health" | "/ready" => "health",
        _ if path.starts_with("/fhir") => {
            if method == "POST" || path.ends_with("/_search") {
                "fhir.search"
            } else {
                "fhir.read"
            }
        }
        _ => "other",
    }
}

struct OpenFile {
    day: Date,
    file: File,
    last: String,
}

/// The append side of the log (one per process).
pub struct RequestLog {
    dir: PathBuf,
    open: Mutex<Option<OpenFile>>,
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLog")
            .field("dir", &self.dir)
            .finish()
    }
}

fn file_name(day: Date) -> String {
    format!("requests-{day}.jsonl")
}

fn genesis(name: &str) -> String {
    hex::encode(medvault_crypto::sha256(name.as_bytes()))
}

fn chain(previous: &str, fields: &BTreeMap<&str, Value>) -> String {
    let canonical = serde_json::to_string(fields).unwrap_or_default();
    let mut input = Vec::with_capacity(previous.len() + canonical.len() + 1);
    input.extend_from_slice(previous.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(canonical.as_bytes());
    hex::encode(medvault_crypto::sha256(&input))
}

fn optional(value: Option<&String>) -> Value {
    value.map_or(Value::Null, |text| Value::String(text.clone()))
}

impl RequestLog {
    /// A log writing into `dir` (made if missing, mode 0700).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            open: Mutex::new(None),
        })
    }

    fn file_for(&self, day: Date) -> std::io::Result<OpenFile> {
        let name = file_name(day);
        let path = self.dir.join(&name);
        // Continue the chain of a file this or an earlier process began. A
        // last line without its newline was cut off by a crash: it goes, so
        // the next line does not merge into it.
        let mut last = genesis(&name);
        if let Ok(existing) = std::fs::read(&path) {
            let complete = existing
                .iter()
                .rposition(|byte| *byte == b'\n')
                .map_or(0, |end| end + 1);
            if complete < existing.len() {
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(u64::try_from(complete).unwrap_or(u64::MAX))?;
            }
            for line in existing
                .get(..complete)
                .unwrap_or_default()
                .split(|byte| *byte == b'\n')
            {
                if let Ok(value) = serde_json::from_slice::<Value>(line)
                    && let Some(checksum) = value.get("checksum").and_then(Value::as_str)
                {
                    last = checksum.to_owned();
                }
            }
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        Ok(OpenFile {
            day,
            file: options.open(path)?,
            last,
        })
    }

    /// Appends one record (the chain continues from the day's last line).
    pub fn append(&self, record: &RequestRecord) -> std::io::Result<()> {
        let day = record.timestamp.date();
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.as_ref().is_none_or(|current| current.day != day) {
            *open = Some(self.file_for(day)?);
        }
        let Some(current) = open.as_mut() else {
            return Ok(());
        };
        let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
        fields.insert("data_volume_bytes", record.data_volume_bytes.into());
        fields.insert("error_code", optional(record.note.error_code.as_ref()));
        fields.insert(
            "error_description",
            optional(record.note.error_description.as_ref()),
        );
        fields.insert("event_type", record.event_type.into());
        fields.insert("interface_id", record.interface_id.clone().into());
        fields.insert("message", record.message.clone().into());
        fields.insert("pairing_id", optional(record.note.pairing_id.as_ref()));
        fields.insert("partner_id", record.partner_id.clone().into());
        fields.insert("response_time_ms", record.response_time_ms.into());
        fields.insert("status", record.status.into());
        fields.insert(
            "timestamp",
            record.timestamp.format(&Rfc3339).unwrap_or_default().into(),
        );
        fields.insert("transaction_id", record.transaction_id.clone().into());
        let checksum = chain(&current.last, &fields);
        fields.insert("checksum", checksum.clone().into());
        let mut line = serde_json::to_string(&fields).unwrap_or_default();
        line.push('\n');
        current.file.write_all(line.as_bytes())?;
        current.last = checksum;
        Ok(())
    }

    /// Makes the lines written so far durable (called every second, and at
    /// shutdown): a crash loses at most the last second's lines.
    pub fn sync(&self) -> std::io::Result<()> {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match open.as_ref() {
            Some(current) => current.file.sync_data(),
            None => Ok(()),
        }
    }

    /// Deletes the files of days before `keep_from`; returns how many went.
    pub fn purge_before(&self, keep_from: Date) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(day) = name
                .strip_prefix("requests-")
                .and_then(|rest| rest.strip_suffix(".jsonl"))
                .and_then(|day| {
                    Date::parse(day, &time::format_description::well_known::Iso8601::DATE).ok()
                })
            else {
                continue;
            };
            if day < keep_from {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Where a file's chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {reason}")]
pub struct LogBreak {
    /// The file.
    pub file: String,
    /// The line (from 1).
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// Checks one day's file; returns how many lines it holds.
pub fn verify_file(path: &Path) -> Result<usize, LogBreak> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let broken = |line, reason| LogBreak {
        file: name.clone(),
        line,
        reason,
    };
    let bytes = std::fs::read(path).map_err(|_| broken(0, "cannot be read"))?;
    let mut previous = genesis(&name);
    let mut count = 0;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    for (index, line) in body.split(|byte| *byte == b'\n').enumerate() {
        if line.is_empty() && bytes.is_empty() {
            break;
        }
        let value: BTreeMap<String, Value> =
            serde_json::from_slice(line).map_err(|_| broken(index + 1, "not JSON"))?;
        let stored = value
            .get("checksum")
            .and_then(Value::as_str)
            .ok_or_else(|| broken(index + 1, "no checksum"))?
            .to_owned();
        let fields: BTreeMap<&str, Value> = value
            .iter()
            .filter(|(key, _)| key.as_str() != "checksum")
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        if chain(&previous, &fields) != stored {
            return Err(broken(
                index + 1,
                "checksum does not match (changed, removed or reordered)",
            ));
        }
        previous = stored;
        count += 1;
    }
    Ok(count)
}

/// Which lines [`read`] returns (every condition that is set must hold).
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// At or after.
    pub from: Option<OffsetDateTime>,
    /// Before.
    pub until: Option<OffsetDateTime>,
    /// `partner_id`.
    pub client: Option<String>,
    /// `interface_id`.
    pub endpoint: Option<String>,
    /// `status`.
    pub status: Option<u16>,
    /// `transaction_id`.
    pub transaction: Option<String>,
}

/// The matching lines of every file in `dir`, oldest first.
pub fn read(dir: &Path, filter: &LogFilter) -> std::io::Result<Vec<Value>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        for line in std::fs::read(&path)?.split(|byte| *byte == b'\n') {
            let Ok(value) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let at = value
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok());
            let keep = filter
                .from
                .is_none_or(|from| at.is_some_and(|at| at >= from))
                && filter
                    .until
                    .is_none_or(|until| at.is_some_and(|at| at < until))
                && filter.client.as_deref().is_none_or(|client| {
                    value.get("partner_id").and_then(Value::as_str) == Some(client)
                })
                && filter.endpoint.as_deref().is_none_or(|endpoint| {
                    value.get("interface_id").and_then(Value::as_str) == Some(endpoint)
                })
                && filter.status.is_none_or(|status| {
                    value.get("status").and_then(Value::as_u64) == Some(u64::from(status))
                })
                && filter.transaction.as_deref().is_none_or(|transaction| {
                    value.get("transaction_id").and_then(Value::as_str) == Some(transaction)
                });
            if keep {
                out.push(value);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use time::macros::datetime;

    use super::*;

    fn record(at: OffsetDateTime, path: &str, status: u16) -> RequestRecord {
        RequestRecord {
            timestamp: at,
            transaction_id: format!("tx-{status}"),
            event_type: event_type("POST", path),
            interface_id: path.to_owned(),
            message: format!("POST {path}"),
            partner_id: "urn:diga:bfarm:12345".to_owned(),
            status,
            response_time_ms: 3,
            data_volume_bytes: 120,
            note: LogNote {
                error_code: (status >= 400).then(|| "invalid_grant".to_owned()),
                error_description: None,
                pairing_id: Some("ab".repeat(32)),
            },
        }
    }

    #[test]
    fn lines_chain_filter_and_detect_tampering() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let log = RequestLog::open(dir.path()).unwrap();
        let day = datetime!(2026-12-03 10:00 UTC);
        log.append(&record(day, "/par", 201)).unwrap();
        log.append(&record(day, "/token", 400)).unwrap();
        // A second process continues the same file's chain.
        let again = RequestLog::open(dir.path()).unwrap();
        again.append(&record(day, "/token", 200)).unwrap();
        again
            .append(&record(datetime!(2026-12-04 00:00:01 UTC), "/revoke", 200))
            .unwrap();
        again.sync().unwrap();
        let first = dir.path().join("requests-2026-12-03.jsonl");
        assert_eq!(verify_file(&first), Ok(3));
        // A line cut off by a crash is dropped when the next process opens the
        // day, and the chain goes on.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&first)
            .unwrap()
            .write_all(b"{\"status\":2")
            .unwrap();
        let after_crash = RequestLog::open(dir.path()).unwrap();
        after_crash.append(&record(day, "/par", 201)).unwrap();
        assert_eq!(verify_file(&first), Ok(4));
        let lines = read(dir.path(), &LogFilter::default()).unwrap();
        assert_eq!(lines.len(), 5);
        for field in [
            "checksum",
            "data_volume_bytes",
            "error_code",
            "error_description",
            "event_type",
            "interface_id",
            "message",
            "pairing_id",
            "partner_id",
            "response_time_ms",
            "status",
            "timestamp",
            "transaction_id",
        ] {
            assert!(lines[0].get(field).is_some(), "{field}");
        }
        let failed = read(
            dir.path(),
            &LogFilter {
                status: Some(400),
                endpoint: Some("/token".to_owned()),
                ..LogFilter::default()
            },
        )
        .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["error_code"], "invalid_grant");
        let later = read(
            dir.path(),
            &LogFilter {
                from: Some(datetime!(2026-12-04 00:00 UTC)),
                ..LogFilter::default()
            },
        )
        .unwrap();
        assert_eq!(later.len(), 1);

        // Changing a line, or removing one, breaks the chain there.
        let text = std::fs::read_to_string(&first).unwrap();
        std::fs::write(&first, text.replacen("\"status\":400", "\"status\":200", 1)).unwrap();
        assert_eq!(verify_file(&first).unwrap_err().line, 2);
        let without_first: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        std::fs::write(&first, without_first).unwrap();
        assert_eq!(verify_file(&first).unwrap_err().line, 1);

        // Retention removes whole days.
        assert_eq!(
            log.purge_before(datetime!(2026-12-04 00:00 UTC).date())
                .unwrap(),
            1
        );
        assert_eq!(read(dir.path(), &LogFilter::default()).unwrap().len(), 1);
    }
}
