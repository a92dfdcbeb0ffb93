//! SMART scope strings (PAR `scope`): parsing must never panic, and what
//! parses must print back to text that parses to the same set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medvault_core::ScopeSet;

const BASE: &str = "https://gematik.de/fhir/hddt/ValueSet/";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = ScopeSet::parse(text, BASE) {
        let printed = set.to_text(BASE);
        let again = ScopeSet::parse(&printed, BASE).expect("printed scopes parse");
        assert_eq!(set, again);
    }
});
