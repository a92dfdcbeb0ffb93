//! FHIR search parameters (a GET query or a POST `_search` form): reading
//! them must never panic, for Observation, Device and DeviceMetric searches
//! and the `date` parameter's ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medvault_fhir::search::{date_range, device_search, observation_search};

const BASE: &str = "https://gematik.de/fhir/hddt/ValueSet/";

fuzz_target!(|data: &[u8]| {
    let parameters: Vec<(String, String)> = url::form_urlencoded::parse(data)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let now = time::OffsetDateTime::from_unix_timestamp(1_764_000_000).expect("a time");
    let _ = observation_search(&parameters, BASE, now);
    let _ = device_search(&parameters, false);
    let _ = device_search(&parameters, true);
    for (_, value) in &parameters {
        if let Some((start, end)) = date_range(value) {
            assert!(start <= end, "{value}: {start} > {end}");
        }
    }
});
