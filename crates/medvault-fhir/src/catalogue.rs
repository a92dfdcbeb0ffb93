//! The device catalogue: the manufacturer's models a patient can register.
//!
//! A Device's name, type, manufacturer and model number come from here, never
//! from text a person typed, so nothing a patient enters can reach a DiGA and
//! identify them. The LOINC codes of the readings and the units follow from
//! the model's kind (glucometer or CGM) and the reading's unit.

/// What a model measures and how its readings become Observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A blood-glucose meter: one Observation per reading
    /// (profile `hddt-blood-glucose-measurement`).
    Glucometer,
    /// A continuous glucose monitor: chunked `valueSampledData`
    /// (profile `hddt-continuous-glucose-measurement`).
    Cgm,
}

/// A glucose unit (UCUM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlucoseUnit {
    /// `mg/dL`.
    MgPerDl,
    /// `mmol/L`.
    MmolPerL,
}

/// mg/dL per mmol/L for glucose (molar mass 180.156 g/mol).
pub const MG_DL_PER_MMOL_L: f64 = 18.0156;

impl GlucoseUnit {
    /// The UCUM code.
    pub const fn ucum(self) -> &'static str {
        match self {
            Self::MgPerDl => "mg/dL",
            Self::MmolPerL => "mmol/L",
        }
    }

    /// The unit of a UCUM code (exact spelling).
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "mg/dL" => Some(Self::MgPerDl),
            "mmol/L" => Some(Self::MmolPerL),
            _ => None,
        }
    }

    /// `mg_dl` in this unit.
    pub fn from_mg_dl(self, mg_dl: f64) -> f64 {
        match self {
            Self::MgPerDl => mg_dl,
            Self::MmolPerL => mg_dl / MG_DL_PER_MMOL_L,
        }
    }

    /// A value of this unit in mg/dL.
    pub fn to_mg_dl(self, value: f64) -> f64 {
        match self {
            Self::MgPerDl => value,
            Self::MmolPerL => value * MG_DL_PER_MMOL_L,
        }
    }

    /// Decimal places a reading of this unit carries.
    pub const fn decimals(self) -> usize {
        match self {
            Self::MgPerDl => 0,
            Self::MmolPerL => 1,
        }
    }
}

/// A LOINC code with its display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loinc {
    /// The code.
    pub code: &'static str,
    /// Its display (LOINC 2.82 long common name).
    pub display: &'static str,
}

/// The LOINC code of a reading of `kind` in `unit` (digest §4 / issue:
/// meter 41653-7 / 14743-9, CGM 99504-3 / 105272-9).
pub const fn reading_code(kind: ModelKind, unit: GlucoseUnit) -> Loinc {
    match (kind, unit) {
        (ModelKind::Glucometer, GlucoseUnit::MgPerDl) => Loinc {
            code: "41653-7",
            display: "Glucose [Mass/volume] in Capillary blood by Glucometer",
        },
        (ModelKind::Glucometer, GlucoseUnit::MmolPerL) => Loinc {
            code: "14743-9",
            display: "Glucose [Moles/volume] in Capillary blood by Glucometer",
        },
        (ModelKind::Cgm, GlucoseUnit::MgPerDl) => Loinc {
            code: "99504-3",
            display: "Glucose [Mass/volume] in Interstitial fluid",
        },
        (ModelKind::Cgm, GlucoseUnit::MmolPerL) => Loinc {
            code: "105272-9",
            display: "Glucose [Moles/volume] in Interstitial fluid",
        },
    }
}

/// The display of a LOINC code this server produces or searches for.
pub fn loinc_display(code: &str) -> Option<&'static str> {
    [
        (ModelKind::Glucometer, GlucoseUnit::MgPerDl),
        (ModelKind::Glucometer, GlucoseUnit::MmolPerL),
        (ModelKind::Cgm, GlucoseUnit::MgPerDl),
        (ModelKind::Cgm, GlucoseUnit::MmolPerL),
    ]
    .into_iter()
    .map(|(kind, unit)| reading_code(kind, unit))
    .find(|loinc| loinc.code == code)
    .map(|loinc| loinc.display)
}

/// A SNOMED CT (German edition) concept of the `hddt-device-type` ValueSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snomed {
    /// The concept id.
    pub code: &'static str,
    /// Its display.
    pub display: &'static str,
}

/// The SNOMED CT edition the guide's ValueSet uses.
pub const SNOMED_VERSION: &str = "http://snomed.info/sct/11000274103/version/20251115";

/// An ISO/IEEE 11073-10101 metric type (DeviceMetric.type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdcCode {
    /// The numeric code.
    pub code: &'static str,
    /// The reference id.
    pub display: &'static str,
}

/// One model of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceModel {
    /// The catalogue id patients register with.
    pub id: &'static str,
    /// Glucometer or CGM.
    pub kind: ModelKind,
    /// Device.manufacturer.
    pub manufacturer: &'static str,
    /// Device.deviceName (user-friendly-name).
    pub name: &'static str,
    /// Device.modelNumber.
    pub model_number: &'static str,
    /// Device.type.
    pub device_type: Snomed,
    /// DeviceMetric.type.
    pub metric_type: MdcCode,
    /// Whether the model needs calibration: its Observations reference its
    /// DeviceMetric (calibration state and time) instead of the Device.
    pub needs_calibration: bool,
    /// The sampling period of a CGM, in seconds (0 for a glucometer).
    pub period_secs: u32,
    /// The lowest value the device measures, in mg/dL (below: `LO`).
    pub low_mg_dl: f64,
    /// The highest value the device measures, in mg/dL (above: `HI`).
    pub high_mg_dl: f64,
    /// Days a sensor lasts (Device.expirationDate from registration; 0 for none).
    pub sensor_days: u32,
}

const METER: Snomed = Snomed {
    code: "337414009",
    display: "Blood glucose meter (physical object)",
};
const INVASIVE_ISF: Snomed = Snomed {
    code: "700585005",
    display: "Invasive interstitial-fluid glucose monitoring system (physical object)",
};
const CAPILLARY: MdcCode = MdcCode {
    code: "160184",
    display: "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD",
};
const ISF: MdcCode = MdcCode {
    code: "160212",
    display: "MDC_CONC_GLU_ISF",
};

/// The built-in catalogue (the guide's example devices and their kin).
pub const CATALOGUE: &[DeviceModel] = &[
    DeviceModel {
        id: "glukko-cgm-18",
        kind: ModelKind::Cgm,
        manufacturer: "Glukko Inc.",
        name: "GlukkoCGM 18",
        model_number: "GCGMA98765",
        device_type: INVASIVE_ISF,
        metric_type: ISF,
        needs_calibration: true,
        period_secs: 300,
        low_mg_dl: 40.0,
        high_mg_dl: 400.0,
        sensor_days: 14,
    },
    DeviceModel {
        id: "glukko-cgm-20",
        kind: ModelKind::Cgm,
        manufacturer: "Glukko Inc.",
        name: "GlukkoCGM 20",
        model_number: "GCGMB20001",
        device_type: INVASIVE_ISF,
        metric_type: ISF,
        needs_calibration: false,
        period_secs: 60,
        low_mg_dl: 40.0,
        high_mg_dl: 400.0,
        sensor_days: 15,
    },
    DeviceModel {
        id: "glukko-meter-5",
        kind: ModelKind::Glucometer,
        manufacturer: "Glukko Inc.",
        name: "Glukko Meter 5",
        model_number: "GM5-2024",
        device_type: METER,
        metric_type: CAPILLARY,
        needs_calibration: false,
        period_secs: 0,
        low_mg_dl: 20.0,
        high_mg_dl: 600.0,
        sensor_days: 0,
    },
    DeviceModel {
        id: "glukko-meter-7-cal",
        kind: ModelKind::Glucometer,
        manufacturer: "Glukko Inc.",
        name: "Glukko Meter 7",
        model_number: "GM7-2025",
        device_type: METER,
        metric_type: CAPILLARY,
        needs_calibration: true,
        period_secs: 0,
        low_mg_dl: 20.0,
        high_mg_dl: 600.0,
        sensor_days: 0,
    },
];

/// The model with catalogue id `id`.
pub fn model(id: &str) -> Option<&'static DeviceModel> {
    CATALOGUE.iter().find(|model| model.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_ids_are_unique_and_kinds_consistent() {
        for (index, model) in CATALOGUE.iter().enumerate() {
            assert!(
                CATALOGUE
                    .iter()
                    .skip(index + 1)
                    .all(|other| other.id != model.id)
            );
            assert_eq!(model.kind == ModelKind::Cgm, model.period_secs > 0);
            assert!(model.low_mg_dl < model.high_mg_dl);
        }
    }

    #[test]
    fn unit_conversion_round_trips() {
        let mmol = GlucoseUnit::MmolPerL.from_mg_dl(180.156);
        assert!((mmol - 10.0).abs() < 1e-3);
        assert!((GlucoseUnit::MmolPerL.to_mg_dl(mmol) - 180.156).abs() < 1e-9);
    }
}
