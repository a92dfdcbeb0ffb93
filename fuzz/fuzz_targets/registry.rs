//! Registry files: the local DiGA-VZ file and a page of BfArM's FHIR API.
//! Reading must never panic; a registry that reads writes back to one that
//! reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medvault_oauth::{DigaRegistry, read_bfarm_page};

const BASE: &str = "https://gematik.de/fhir/hddt/ValueSet/";

fuzz_target!(|data: &[u8]| {
    if let Ok(registry) = DigaRegistry::from_json(data) {
        let again = DigaRegistry::from_json(&registry.to_json()).expect("written registry reads");
        assert_eq!(registry.entries().count(), again.entries().count());
        assert_eq!(registry.to_json(), again.to_json());
    }
    let mut registry = DigaRegistry::default();
    let _ = read_bfarm_page(data, &mut registry, BASE, 1_764_000_000);
});
