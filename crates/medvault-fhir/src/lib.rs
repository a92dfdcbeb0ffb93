//! HDDT device data (§ 374a SGB V, gematik guide 1.0.1): the device
//! catalogue, the ingestion of readings, the FHIR R4 resources and searches
//! the resource server answers, and the [`ResourceServer`] that applies a
//! DiGA's grant to every read and search. HTTP, tokens and content
//! negotiation live in the server; this crate is unit-tested without them.

pub mod capability;
pub mod catalogue;
pub mod ingest;
pub mod resources;
pub mod search;
pub mod service;
pub mod simulate;
pub mod status;
pub mod summary;
pub mod valuesets;
pub mod xml;

pub use service::{FhirError, FhirPolicy, Reader, ResourceServer};
