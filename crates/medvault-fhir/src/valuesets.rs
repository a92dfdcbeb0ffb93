//! The MIV ValueSets of guide 1.0.1, expanded (LOINC 2.82): which
//! Observation codes a MIV grants. Checked against `hddt-ig/` in the tests.

use medvault_core::hddt::Miv;

/// The codes of `miv`'s ValueSet (empty for MIVs medvault does not serve).
pub const fn codes(miv: Miv) -> &'static [&'static str] {
    match miv {
        Miv::BloodGlucose => &[
            "2339-0", "15074-8", "2345-7", "14749-6", "41653-7", "14743-9",
        ],
        Miv::ContinuousGlucose => &["99504-3", "105272-9"],
        Miv::BloodPressure | Miv::LungFunction => &[],
    }
}

/// The MIV whose ValueSet holds `code`.
pub fn miv_of(code: &str) -> Option<Miv> {
    Miv::ALL.into_iter().find(|miv| codes(*miv).contains(&code))
}
