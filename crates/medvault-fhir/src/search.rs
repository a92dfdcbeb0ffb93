//! FHIR search parameters as HDDT uses them: parsing and checking what a
//! DiGA sends (GET query or POST `_search` form) into typed searches.
//!
//! Unknown parameters, modifiers and malformed values are refused with the
//! guide's diagnostics (`Unknown search parameter %s`, `Invalid date/time
//! format or date range: %s`, `Invalid _include parameter value: %s`); an
//! explicit `subject` or `patient` is refused too (the patient follows from
//! the access token).

use medvault_core::hddt::Miv;
use medvault_store::{RangeFilter, RangeOp, ValueFilter};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::catalogue::GlucoseUnit;
use crate::resources::{LOINC, UCUM};

/// The page size when `_count` is absent.
pub const DEFAULT_COUNT: u32 = 50;
/// The largest page.
pub const MAX_COUNT: u32 = 500;
/// The most parameters one search takes.
pub const MAX_PARAMETERS: usize = 32;
/// The most comma-separated values of one parameter.
pub const MAX_VALUES: usize = 50;

/// A search refused (HTTP 400, OperationOutcome `invalid`/`not-supported`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SearchError(pub String);

/// Quotes client input in a diagnostic: printable ASCII, bounded.
pub fn quote(text: &str) -> String {
    text.chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn unknown(name: &str) -> SearchError {
    SearchError(format!("Unknown search parameter {}", quote(name)))
}

fn bad_date(value: &str) -> SearchError {
    SearchError(format!(
        "Invalid date/time format or date range: {}",
        quote(value)
    ))
}

fn bad_include(value: &str) -> SearchError {
    SearchError(format!(
        "Invalid _include parameter value: {}",
        quote(value)
    ))
}

fn bad_value(name: &str, value: &str) -> SearchError {
    SearchError(format!(
        "Invalid value of search parameter {}: {}",
        quote(name),
        quote(value)
    ))
}

/// A token (`[system]|code`) to match against a LOINC or SNOMED code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The system, if given (`None` = any; `Some("")` = no system).
    pub system: Option<String>,
    /// The code.
    pub code: String,
}

impl Token {
    fn parse(text: &str) -> Self {
        match text.split_once('|') {
            Some((system, code)) => Self {
                system: Some(system.to_owned()),
                code: code.to_owned(),
            },
            None => Self {
                system: None,
                code: text.to_owned(),
            },
        }
    }

    /// Whether this token names `code` of `system`.
    pub fn matches(&self, system: &str, code: &str) -> bool {
        self.code == code && self.system.as_deref().is_none_or(|s| s == system)
    }
}

/// The paging position (`_cursor`): the last entry of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Its effective start (microseconds) for Observations; 0 for devices.
    pub start: i64,
    /// Its id.
    pub id: String,
}

impl Cursor {
    /// The parameter value.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.start, self.id)
    }

    fn parse(text: &str) -> Option<Self> {
        let (start, id) = text.split_once('.')?;
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        valid_id.then_some(())?;
        Some(Self {
            start: start.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// A checked Observation search.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservationSearch {
    /// `code` (OR within, AND across parameters), `code:in` as the codes of
    /// its MIV ValueSet.
    pub codes: Vec<Vec<Token>>,
    /// `_id`.
    pub ids: Option<Vec<String>>,
    /// `date`.
    pub date: Vec<RangeFilter>,
    /// `_lastUpdated`.
    pub last_updated: Vec<RangeFilter>,
    /// `value-quantity`.
    pub value: Vec<ValueFilter>,
    /// `_sort=-date`.
    pub descending: bool,
    /// `_count`.
    pub count: u32,
    /// `_include=Observation:device`.
    pub include_device: bool,
    /// `_include:iterate=DeviceMetric:source`.
    pub include_source: bool,
    /// `_cursor`.
    pub cursor: Option<Cursor>,
    /// The lowest start of any `date` range asked for (the historic-period warning).
    pub earliest_date: Option<i64>,
}

/// A checked Device or DeviceMetric search.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceSearch {
    /// `_id`.
    pub ids: Option<Vec<String>>,
    /// Device `type`.
    pub types: Vec<Vec<Token>>,
    /// Device `device-name` (lower-cased, with its modifier).
    pub names: Vec<(StringMatch, String)>,
    /// Device `manufacturer`.
    pub manufacturers: Vec<(StringMatch, String)>,
    /// DeviceMetric `source` (Device ids).
    pub sources: Option<Vec<String>>,
    /// `_include=DeviceMetric:source`.
    pub include_source: bool,
    /// `_count`.
    pub count: u32,
    /// `_cursor`.
    pub cursor: Option<Cursor>,
}

/// How a string parameter matches (FHIR string search).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatch {
    /// Starts with, case-insensitive (the default).
    Prefix,
    /// `:exact`.
    Exact,
    /// `:contains`, case-insensitive.
    Contains,
}

impl StringMatch {
    /// Whether `text` matches `wanted` (lower-cased unless exact).
    pub fn matches(self, text: &str, wanted: &str) -> bool {
        match self {
            Self::Exact => text == wanted,
            Self::Prefix => text.to_lowercase().starts_with(wanted),
            Self::Contains => text.to_lowercase().contains(wanted),
        }
    }
}

/// Parameters every search understands; `None` when `name` is not one.
fn common(
    name: &str,
    value: &str,
    count: &mut u32,
    cursor: &mut Option<Cursor>,
) -> Option<Result<(), SearchError>> {
    match name {
        "_count" => Some(
            value
                .parse::<u32>()
                .map(|n| *count = n.min(MAX_COUNT))
                .map_err(|_| bad_value(name, value)),
        ),
        "_cursor" => Some(
            Cursor::parse(value)
                .map(|c| *cursor = Some(c))
                .ok_or_else(|| bad_value(name, value)),
        ),
        // Handled by content negotiation; `_pretty` only changes whitespace.
        "_format" | "_pretty" => Some(Ok(())),
        _ => None,
    }
}

fn refuse_patient(name: &str) -> Option<SearchError> {
    let base = name.split(':').next().unwrap_or(name);
    matches!(base, "subject" | "patient").then(|| {
        SearchError(format!(
            "Search parameter {base} is not allowed: the patient follows from the access token"
        ))
    })
}

fn values(value: &str) -> Result<Vec<&str>, SearchError> {
    let parts: Vec<&str> = value.split(',').collect();
    if parts.len() > MAX_VALUES || parts.iter().any(|p| p.is_empty()) {
        return Err(SearchError(format!(
            "A search parameter holds 1 to {MAX_VALUES} non-empty values"
        )));
    }
    Ok(parts)
}

fn ids(value: &str) -> Result<Vec<String>, SearchError> {
    values(value)?
        .into_iter()
        .map(|id| {
            let valid = id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if valid {
                Ok(id.to_owned())
            } else {
                Err(bad_value("_id", id))
            }
        })
        .collect()
}

/// Reads an Observation search (parameters of a GET query or POST form).
pub fn observation_search(
    parameters: &[(String, String)],
    value_set_base: &str,
    now: OffsetDateTime,
) -> Result<ObservationSearch, SearchError> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(SearchError(format!(
            "A search takes at most {MAX_PARAMETERS} parameters"
        )));
    }
    let mut search = ObservationSearch {
        count: DEFAULT_COUNT,
        ..ObservationSearch::default()
    };
    for (name, value) in parameters {
        if let Some(error) = refuse_patient(name) {
            return Err(error);
        }
        if let Some(result) = common(name, value, &mut search.count, &mut search.cursor) {
            result?;
            continue;
        }
        match name.as_str() {
            "code" => search
                .codes
                .push(values(value)?.into_iter().map(Token::parse).collect()),
            "code:in" => {
                let miv = value
                    .strip_prefix(value_set_base)
                    .and_then(Miv::from_value_set_id)
                    .ok_or_else(|| bad_value(name, value))?;
                search.codes.push(
                    crate::valuesets::codes(miv)
                        .iter()
                        .map(|code| Token {
                            system: Some(LOINC.to_owned()),
                            code: (*code).to_owned(),
                        })
                        .collect(),
                );
            }
            "_id" => search.ids = Some(ids(value)?),
            "date" => {
                let filter = range(value, now).ok_or_else(|| bad_date(value))?;
                search.earliest_date = Some(
                    search
                        .earliest_date
                        .map_or(filter.low, |low| low.min(filter.low)),
                );
                search.date.push(filter);
            }
            "_lastUpdated" => search
                .last_updated
                .push(range(value, now).ok_or_else(|| bad_date(value))?),
            "value-quantity" => search
                .value
                .push(quantity(value).ok_or_else(|| bad_value(name, value))?),
            "_sort" => match value.as_str() {
                "date" => search.descending = false,
                "-date" => search.descending = true,
                _ => return Err(bad_value(name, value)),
            },
            "_include" => match value.as_str() {
                "Observation:device" => search.include_device = true,
                _ => return Err(bad_include(value)),
            },
            "_include:iterate" => match value.as_str() {
                "DeviceMetric:source" => search.include_source = true,
                "Observation:device" => search.include_device = true,
                _ => return Err(bad_include(value)),
            },
            _ => return Err(unknown(name)),
        }
    }
    Ok(search)
}

/// Reads a Device (`metric = false`) or DeviceMetric search.
pub fn device_search(
    parameters: &[(String, String)],
    metric: bool,
) -> Result<DeviceSearch, SearchError> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(SearchError(format!(
            "A search takes at most {MAX_PARAMETERS} parameters"
        )));
    }
    let mut search = DeviceSearch {
        count: DEFAULT_COUNT,
        ..DeviceSearch::default()
    };
    for (name, value) in parameters {
        if let Some(error) = refuse_patient(name) {
            return Err(error);
        }
        if let Some(result) = common(name, value, &mut search.count, &mut search.cursor) {
            result?;
            continue;
        }
        let (base, modifier) = match name.split_once(':') {
            Some((base, modifier)) => (base, Some(modifier)),
            None => (name.as_str(), None),
        };
        let string_match = match modifier {
            None => StringMatch::Prefix,
            Some("exact") => StringMatch::Exact,
            Some("contains") => StringMatch::Contains,
            Some(_) => return Err(unknown(name)),
        };
        let text = |v: &str| {
            if string_match == StringMatch::Exact {
                v.to_owned()
            } else {
                v.to_lowercase()
            }
        };
        match (metric, base, modifier) {
            (_, "_id", None) => search.ids = Some(ids(value)?),
            (false, "type", None) => search
                .types
                .push(values(value)?.into_iter().map(Token::parse).collect()),
            (false, "device-name", _) => search.names.push((string_match, text(value))),
            (false, "manufacturer", _) => search.manufacturers.push((string_match, text(value))),
            (true, "source", None) => {
                let sources = values(value)?
                    .into_iter()
                    .map(|v| v.strip_prefix("Device/").unwrap_or(v).to_owned())
                    .collect::<Vec<_>>();
                ids(&sources.join(","))?;
                search.sources = Some(sources);
            }
            (true, "_include", None) if value == "DeviceMetric:source" => {
                search.include_source = true;
            }
            (_, "_include" | "_include:iterate", _) => return Err(bad_include(value)),
            _ => return Err(unknown(name)),
        }
    }
    Ok(search)
}

fn prefix(value: &str) -> (RangeOp, &str) {
    let ops = [
        ("eq", RangeOp::Eq),
        ("ne", RangeOp::Ne),
        ("gt", RangeOp::Gt),
        ("lt", RangeOp::Lt),
        ("ge", RangeOp::Ge),
        ("le", RangeOp::Le),
        ("sa", RangeOp::Sa),
        ("eb", RangeOp::Eb),
        ("ap", RangeOp::Ap),
    ];
    for (text, op) in ops {
        if let Some(rest) = value.strip_prefix(text) {
            return (op, rest);
        }
    }
    (RangeOp::Eq, value)
}

/// The instants a FHIR date/dateTime value covers at its precision, in
/// microseconds (inclusive).
pub fn date_range(text: &str) -> Option<(i64, i64)> {
    let micros = |at: OffsetDateTime| medvault_store::to_unix_micros(at);
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    let day_start = |date: Date| date.with_time(Time::MIDNIGHT).assume_utc();
    match bytes.len() {
        4 => {
            let start = day_start(Date::from_calendar_date(year, Month::January, 1).ok()?);
            let end = day_start(Date::from_calendar_date(year + 1, Month::January, 1).ok()?);
            Some((micros(start), micros(end) - 1))
        }
        7 if bytes.get(4) == Some(&b'-') => {
            let month = Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
            let start = Date::from_calendar_date(year, month, 1).ok()?;
            let next = if month == Month::December {
                Date::from_calendar_date(year + 1, Month::January, 1).ok()?
            } else {
                Date::from_calendar_date(year, month.next(), 1).ok()?
            };
            Some((micros(day_start(start)), micros(day_start(next)) - 1))
        }
        10 => {
            let date = Date::parse(
                text,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .ok()?;
            let start = day_start(date);
            Some((micros(start), micros(start + time::Duration::days(1)) - 1))
        }
        _ => {
            // A time needs a zone. Minutes only: the whole minute; seconds
            // (with or without a fraction): that second or instant.
            let (head, zone) = split_zone(text)?;
            let offset = if zone == "Z" {
                UtcOffset::UTC
            } else {
                UtcOffset::parse(
                    zone,
                    time::macros::format_description!(
                        "[offset_hour sign:mandatory]:[offset_minute]"
                    ),
                )
                .ok()?
            };
            if head.len() == 16 {
                let at = PrimitiveDateTime::parse(
                    head,
                    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]"),
                )
                .ok()?
                .assume_offset(offset);
                return Some((micros(at), micros(at + time::Duration::minutes(1)) - 1));
            }
            let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
            if head.len() == 19 {
                Some((micros(at), micros(at + time::Duration::seconds(1)) - 1))
            } else {
                Some((micros(at), micros(at)))
            }
        }
    }
}

fn split_zone(text: &str) -> Option<(&str, &str)> {
    if let Some(head) = text.strip_suffix('Z') {
        return Some((head, "Z"));
    }
    let at = text.len().checked_sub(6)?;
    let zone = text.get(at..)?;
    (zone.starts_with('+') || zone.starts_with('-')).then(|| (text.get(..at).unwrap_or(""), zone))
}

fn range(value: &str, now: OffsetDateTime) -> Option<RangeFilter> {
    let (op, rest) = prefix(value);
    let (mut low, mut high) = date_range(rest)?;
    if op == RangeOp::Ap {
        // "approximately": 10 % of the distance to now, on both sides.
        let now = medvault_store::to_unix_micros(now);
        let gap = (now - low).abs() / 10;
        low = low.saturating_sub(gap);
        high = high.saturating_add(gap);
    }
    Some(RangeFilter { op, low, high })
}

/// `[prefix]number[|system|code]` of `value-quantity`.
fn quantity(value: &str) -> Option<ValueFilter> {
    let (op, rest) = prefix(value);
    let mut parts = rest.split('|');
    let number = parts.next()?;
    let system = parts.next();
    let code = parts.next();
    if parts.next().is_some() {
        return None;
    }
    let unit = match (system, code) {
        (None, None) => None,
        (Some(system), Some(code)) if system.is_empty() || system == UCUM => {
            Some(GlucoseUnit::parse(code)?.ucum().to_owned())
        }
        _ => return None,
    };
    if number.is_empty()
        || !number
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return None;
    }
    let parsed: f64 = number.parse().ok()?;
    let decimals = number.split_once('.').map_or(0, |(_, f)| f.len());
    let half = 0.5 * 10_f64.powi(-i32::try_from(decimals).ok()?);
    let (low, high) = if op == RangeOp::Ap {
        (parsed - parsed.abs() / 10.0, parsed + parsed.abs() / 10.0)
    } else {
        (parsed - half, parsed + half)
    };
    Some(ValueFilter {
        op,
        value: parsed,
        low,
        high,
        unit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const BASE: &str = "https://gematik.de/fhir/hddt/ValueSet/";

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-12-01 12:00 UTC)
    }

    #[test]
    fn dates_cover_their_precision() {
        let day = date_range("2026-12-01").expect("day");
        assert_eq!(day.1 - day.0 + 1, 86_400_000_000);
        let month = date_range("2026-02").expect("month");
        assert_eq!(month.1 - month.0 + 1, 28 * 86_400_000_000);
        let minute = date_range("2026-12-01T10:15+01:00").expect("minute");
        assert_eq!(
            minute.0,
            medvault_store::to_unix_micros(time::macros::datetime!(2026-12-01 9:15 UTC))
        );
        let second = date_range("2026-12-01T10:15:00Z").expect("second");
        assert_eq!(second.1 - second.0 + 1, 1_000_000);
        for bad in [
            "20250912",
            "2026-13",
            "2026-12-01T10:15",
            "2026-12-01T10:15:00",
            "x",
        ] {
            assert_eq!(date_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn observation_search_reads_the_digest_parameters() {
        let search = observation_search(
            &params(&[
                ("code", "http://loinc.org|99504-3,41653-7"),
                ("date", "ge2026-11-30"),
                ("date", "lt2026-12-01T00:00:00Z"),
                ("_sort", "-date"),
                ("_count", "10000"),
                ("_include", "Observation:device"),
                ("_include:iterate", "DeviceMetric:source"),
                ("value-quantity", "gt100|http://unitsofmeasure.org|mg/dL"),
            ]),
            BASE,
            now(),
        )
        .expect("valid");
        assert_eq!(search.codes.first().map(Vec::len), Some(2));
        assert_eq!(search.date.len(), 2);
        assert!(search.descending && search.include_device && search.include_source);
        assert_eq!(search.count, MAX_COUNT);
        assert_eq!(
            search.value.first().and_then(|v| v.unit.clone()).as_deref(),
            Some("mg/dL")
        );
    }

    #[test]
    fn refusals_carry_the_guide_texts() {
        let cases = [
            (("foo", "1"), "Unknown search parameter foo"),
            (
                ("date", "gt20250912"),
                "Invalid date/time format or date range: gt20250912",
            ),
            (
                ("_include", "Observation:subject"),
                "Invalid _include parameter value: Observation:subject",
            ),
            (("subject", "Patient/1"), "not allowed"),
            (("patient:identifier", "x"), "not allowed"),
            (("code:text", "x"), "Unknown search parameter code:text"),
        ];
        for ((name, value), expected) in cases {
            let error = observation_search(&params(&[(name, value)]), BASE, now()).expect_err(name);
            assert!(error.0.contains(expected), "{error}");
        }
    }

    #[test]
    fn device_searches_take_their_own_parameters() {
        let search = device_search(
            &params(&[
                ("device-name:contains", "CGM"),
                ("type", "http://snomed.info/sct|700585005"),
            ]),
            false,
        )
        .expect("valid");
        assert_eq!(
            search.names,
            vec![(StringMatch::Contains, "cgm".to_owned())]
        );
        assert!(device_search(&params(&[("source", "Device/abc")]), false).is_err());
        let metric = device_search(
            &params(&[
                ("source", "Device/abc"),
                ("_include", "DeviceMetric:source"),
            ]),
            true,
        )
        .expect("valid");
        assert_eq!(metric.sources, Some(vec!["abc".to_owned()]));
        assert!(metric.include_source);
        assert!(device_search(&params(&[("patient", "x")]), true).is_err());
    }
}
