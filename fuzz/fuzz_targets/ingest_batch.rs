//! Ingestion batches (`POST /api/v1/readings/batches`): decoding and the
//! batch checks must never panic, and an accepted batch holds only readings
//! of the patient's own devices.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medvault_fhir::ingest::{ChunkPolicy, new_device, prepare_batch};
use medvault_proto::devices::{NewDevice, UploadBatch};
use medvault_store::DeviceRowV1 as DeviceRow;

const PATIENT: &str = "6f1c1a52-3b7e-4c1e-9a43-5b3b4d0c2e11";

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_764_000_000).expect("a time")
}

fn devices() -> &'static [DeviceRow] {
    static DEVICES: OnceLock<Vec<DeviceRow>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        ["glukko-cgm-18", "glukko-meter-5"]
            .iter()
            .enumerate()
            .map(|(index, model)| {
                let mut row = new_device(
                    PATIENT,
                    &NewDevice {
                        model: (*model).to_owned(),
                        serial_number: format!("FUZZ-{index}"),
                        unit: "mg/dL".to_owned(),
                    },
                    now(),
                )
                .expect("a device");
                row.id = format!("{index:032x}");
                row
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(upload) = serde_json::from_slice::<UploadBatch>(data) else {
        return;
    };
    if let Ok(batch) = prepare_batch(PATIENT, devices(), &upload, ChunkPolicy::default(), now()) {
        let _ = batch;
        assert!(
            upload
                .readings
                .iter()
                .all(|reading| devices().iter().any(|device| device.id == reading.device))
        );
    }
});
