//! Realistic simulated glucose data for demos, tests and benchmarks: a CGM
//! series (a daily rhythm, three meals with their rise and fall, sensor
//! noise, the odd night-time low and values beyond the sensor's range as
//! `LO`/`HI`) and a few finger-stick meter readings a day.
//!
//! Deterministic for a seed (a small non-cryptographic generator: this is
//! test data, never a secret).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalogue::{DeviceModel, GlucoseUnit};
use crate::ingest::{Limit, Reading};

/// SplitMix64: a tiny, well-known generator, enough for test data.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    /// A generator for `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        #[allow(clippy::cast_precision_loss)]
        let unit = (z >> 11) as f64 / (1_u64 << 53) as f64;
        unit
    }

    /// Roughly normal noise with standard deviation `sd` (sum of uniforms).
    pub fn gaussian(&mut self, sd: f64) -> f64 {
        let sum: f64 = (0..6).map(|_| self.next_unit()).sum();
        (sum - 3.0) * sd * std::f64::consts::SQRT_2
    }
}

/// The glucose of a simulated person at `minute_of_day` (mg/dL), before noise.
fn profile(minute_of_day: f64, day_offset: f64) -> f64 {
    let hours = minute_of_day / 60.0;
    // A gentle daily rhythm: dawn rise, afternoon dip.
    let rhythm = 12.0 * ((hours - 6.0) / 24.0 * std::f64::consts::TAU).sin();
    let meal = |at: f64, rise: f64| {
        let since = hours - at;
        if since < 0.0 {
            0.0
        } else {
            // Peaks about 45 minutes after the meal, back within ~3 hours.
            rise * (since / 0.75) * (1.0 - since / 0.75).exp()
        }
    };
    105.0
        + rhythm
        + meal(7.5, 70.0 + day_offset)
        + meal(12.75, 85.0 - day_offset)
        + meal(19.0, 95.0 + day_offset / 2.0)
}

fn reading(
    device: &str,
    at: OffsetDateTime,
    mg_dl: f64,
    model: &DeviceModel,
    unit: GlucoseUnit,
) -> Reading {
    let limit = if mg_dl < model.low_mg_dl {
        Some(Limit::Low)
    } else if mg_dl > model.high_mg_dl {
        Some(Limit::High)
    } else {
        None
    };
    Reading {
        device: device.to_owned(),
        time: at.format(&Rfc3339).unwrap_or_default(),
        value: limit.is_none().then(|| unit.from_mg_dl(mg_dl)),
        unit: unit.ucum().to_owned(),
        limit,
    }
}

/// A CGM series of `model` for `days` days ending at `end`, one reading per
/// sampling period, in `unit`.
pub fn cgm_series(
    device: &str,
    model: &DeviceModel,
    unit: GlucoseUnit,
    end: OffsetDateTime,
    days: u32,
    seed: u64,
) -> Vec<Reading> {
    let period = i64::from(model.period_secs.max(60));
    let count = i64::from(days) * 86_400 / period;
    let start = end - time::Duration::seconds(count * period);
    let mut noise = Noise::new(seed);
    let mut low_until = None::<i64>;
    let mut readings = Vec::new();
    for index in 0..count {
        let at = start + time::Duration::seconds(index * period);
        let minute = f64::from(u16::from(at.hour()) * 60 + u16::from(at.minute()));
        let day = f64::from(u32::try_from(index * period / 86_400).unwrap_or(0) % 7) * 4.0;
        let mut value = profile(minute, day) + noise.gaussian(6.0);
        // About one night in five, a low around 3 a.m. for an hour.
        if at.hour() == 2 && at.minute() < 5 && noise.next_unit() < 0.2 {
            low_until = Some(index + 3600 / period);
        }
        if low_until.is_some_and(|until| index < until) {
            value -= 60.0;
        }
        readings.push(reading(device, at, value, model, unit));
    }
    readings
}

/// `per_day` meter readings a day for `days` days ending at `end`.
pub fn meter_readings(
    device: &str,
    model: &DeviceModel,
    unit: GlucoseUnit,
    end: OffsetDateTime,
    days: u32,
    per_day: u32,
    seed: u64,
) -> Vec<Reading> {
    let mut noise = Noise::new(seed);
    let start = end - time::Duration::days(i64::from(days));
    let mut readings = Vec::new();
    for day in 0..days {
        for slot in 0..per_day {
            let minute = 6 * 60
                + i64::from(slot) * (16 * 60) / i64::from(per_day.max(1))
                + i64::from(u32::try_from((noise.next_unit() * 30.0) as i64).unwrap_or(0));
            let at = start + time::Duration::days(i64::from(day)) + time::Duration::minutes(minute);
            if at > end {
                continue;
            }
            #[allow(clippy::cast_precision_loss)]
            let value = profile(minute as f64, 0.0) + noise.gaussian(8.0);
            readings.push(reading(device, at, value, model, unit));
        }
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;

    #[test]
    fn a_cgm_series_is_regular_plausible_and_deterministic() {
        let model = catalogue::model("glukko-cgm-18").expect("model");
        let end = time::macros::datetime!(2026-12-01 12:00 UTC);
        let series = cgm_series("d", model, GlucoseUnit::MgPerDl, end, 14, 7);
        assert_eq!(series.len(), 14 * 288);
        assert_eq!(
            series,
            cgm_series("d", model, GlucoseUnit::MgPerDl, end, 14, 7)
        );
        let values: Vec<f64> = series.iter().filter_map(|r| r.value).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((100.0..170.0).contains(&mean), "{mean}");
        assert!(values.iter().all(|v| (40.0..=400.0).contains(v)));
    }
}
