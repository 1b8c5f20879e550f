//! The contract of the sensor's HTTP API (`/api/v1`): one set of types for every request
//! body, query, answer and error, shared by the sensor (which serializes them) and the CLI
//! (which reads them), the role each route needs, and the `OpenAPI` document generated
//! from both.
//!
//! Rules:
//! - Nobody reads the API's JSON by key: the sensor answers with these types and the CLI
//!   deserializes them. A field added here is added for both sides at once.
//! - The wire format is the API's as it always was: field names and their case (camelCase,
//!   but `first_ns`-style names of the segment list stay as they are), optional fields
//!   left out rather than `null` where they always were, `null` where they always were.
//!   Request bodies refuse unknown fields; answers are read leniently by the CLI (a newer
//!   sensor may add a field).
//! - Every route is in [`routes::ROUTES`] with the role its token needs; the sensor's
//!   token check asks that table, and a test checks the router has no route outside it.
//! - The `OpenAPI` document ([`openapi::document`]) is generated from these types and the
//!   route table: it cannot describe a field the code does not have.
//! - This crate depends on neither the sensor nor the CLI: serde and utoipa only.
//!
//! Layout: `error.rs` (the error body), `segments.rs` (the segment list and the queries of
//! downloads), `settings.rs` (`/api/v1/config`), `status.rs` (`/api/v1/status`),
//! `snapshots.rs`, `recordings.rs`, `routes.rs` (the role table), `openapi.rs`.
pub mod error;
pub mod openapi;
pub mod recordings;
pub mod routes;
pub mod segments;
pub mod settings;
pub mod snapshots;
pub mod status;

pub use self::{
    error::ErrorBody,
    recordings::{IterationStatus, RecordingJob, RecordingJobStatus, RecordingListing},
    routes::{Role, Route, ROUTES},
    segments::Segment,
    settings::{ConfigQuery, Origin, Origins, Retired, Settings, SettingsChange, Source},
    snapshots::{
        DamagedSnapshot, SnapshotFailure, SnapshotListing, SnapshotManifest, SnapshotRequest,
        SnapshotSelection,
    },
    status::{SensorVersion, Status},
};

#[cfg(test)]
mod tests;
