//! `GET /api/v1/status`: what the sensor is doing and why. Sections that only some sensors
//! have (`settings`, `tls`, `archive`) are `null` when absent, as they always were.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::settings::Settings;

/// The sensor's state, true at the moment of the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The sensor's version.
    pub version: String,
    pub mode: Mode,
    /// The interfaces recorded now, as the files name them: those given at start, and in
    /// Kubernetes mode each targeted pod's (`namespace/pod/eth0`).
    pub interfaces: Vec<String>,
    /// The recording settings in force (as `GET /api/v1/config` shows them).
    pub settings: Option<Settings>,
    pub recording: RecordingState,
    pub ready: bool,
    pub not_ready_because: Option<String>,
    pub store: StoreSummary,
    pub disk: DiskState,
    pub drops: Drops,
    pub recovery: RecoveryReport,
    /// With `--tls-secrets`.
    pub tls: Option<TlsStatus>,
    /// With `--archive`.
    pub archive: Option<ArchiveStatus>,
}

/// The one field of a status every sensor can be asked whatever its version: what
/// `podcap version` reads, so that a sensor older or newer than the client (whose status
/// may not read as [`Status`]) still says which it is. Absent in sensors from before the
/// status named its version. Not a schema of its own: a reading of [`Status`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SensorVersion {
    #[serde(default)]
    pub version: Option<String>,
}

/// Standalone (interfaces named at start) or Kubernetes (the pods of a node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Standalone,
    Kubernetes,
}

/// What the recording is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingState {
    Recording,
    Disabled,
    DiskFull,
    WriteFailing,
    LockLost,
    Starting,
}

impl RecordingState {
    /// The name on the wire (`disk-full`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Disabled => "disabled",
            Self::DiskFull => "disk-full",
            Self::WriteFailing => "write-failing",
            Self::LockLost => "lock-lost",
            Self::Starting => "starting",
        }
    }
}

impl Mode {
    /// The name on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Kubernetes => "kubernetes",
        }
    }
}

/// The store's extent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreSummary {
    /// Finished segments.
    pub segments: u64,
    pub bytes: u64,
    pub quarantined_segments: u64,
    /// RFC 3339; `null` while nothing is recorded.
    pub oldest_packet: Option<String>,
    pub newest_packet: Option<String>,
}

/// The store's file system and what the store did about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskState {
    /// Bytes free on the store's file system (for the sensor's user), and its size.
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// What `--min-free` keeps free (0: nothing; segments are never retired for room).
    pub min_free_bytes: u64,
    /// Segments (and their bytes) retired early because less than `--min-free` was free.
    pub early_retired_segments: u64,
    pub early_retired_bytes: u64,
    /// Set while writes fail.
    pub failing: Option<WriteFailure>,
    /// Set while this sensor does not hold the data directory's lock: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_lost: Option<String>,
}

/// Writes to the store are failing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteFailure {
    /// When the first write of this run of failures failed (RFC 3339).
    pub since: String,
    /// The last error.
    pub error: String,
    /// The file system is full.
    pub disk_full: bool,
}

/// Packets lost, by stage, since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Drops {
    pub kernel: u64,
    pub ring: u64,
    pub disk: u64,
}

impl Drops {
    /// All stages together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.kernel.saturating_add(self.ring).saturating_add(self.disk)
    }
}

/// What start-up recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecoveryReport {
    /// Segments a crash left unfinished, cut back to their last whole block.
    pub repaired: Vec<String>,
    /// Files moved to quarantine, with why.
    pub quarantined: Vec<String>,
    /// Names that look like the store's but are not (left alone).
    pub ignored: Vec<String>,
    /// Index records rebuilt because their file disagreed with them.
    pub rebuilt: Vec<String>,
    /// Index records whose file is gone.
    pub missing: Vec<String>,
}

/// With `--tls-secrets`: programs and libraries probed, TLS libraries whose release is not
/// known here (files, by release: never probed), secrets written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    pub probed: u64,
    pub unsupported: BTreeMap<String, u64>,
    pub secrets_written: u64,
}

/// With `--archive`: what the uploader is doing, true at the moment of the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    pub url: String,
    pub node: String,
    /// Finished segments are archived (`--archive-segments`).
    pub segments: bool,
    /// Finished segments waiting for upload.
    pub backlog_segments: u64,
    /// The first packet of the oldest segment waiting (RFC 3339).
    pub oldest_pending: Option<String>,
    #[schema(minimum = 0)]
    pub oldest_pending_age_seconds: f64,
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
    pub found_uploaded: u64,
    /// Requests that failed or got no answer within `--archive-timeout`.
    pub failures: u64,
    /// Set while requests fail; cleared when a pass goes through.
    pub failing: Option<ArchiveFailing>,
    /// The request the uploader waits for, and since when.
    pub request: Option<InFlight>,
    /// Segments the store retired before they were uploaded, counted when retired.
    pub skipped_segments: u64,
    pub gaps_recorded: u64,
    /// Given-up segments whose gap is not written into the archive yet.
    pub gaps_to_record: u64,
    /// The oldest of them (at most 32).
    #[schema(max_items = 32)]
    pub gaps_to_record_oldest: Vec<GapToRecord>,
    #[schema(minimum = 0)]
    pub request_timeout_seconds: f64,
    #[schema(minimum = 0)]
    pub drain_seconds: f64,
}

/// Why the archive fails, since when (RFC 3339).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArchiveFailing {
    pub reason: String,
    pub since: String,
    pub last: String,
}

/// A request in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InFlight {
    pub what: String,
    pub since: String,
    #[schema(minimum = 0)]
    pub seconds: f64,
}

/// A segment the store gave up that is not recorded in the archive yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GapToRecord {
    pub seq: u64,
    pub first_packet: String,
    pub last_packet: String,
    pub packets: u64,
}
