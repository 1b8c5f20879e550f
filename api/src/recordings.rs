//! `/api/v1/recordings`: recording jobs (Kubeshark's Traffic Recorder): make, list, delete,
//! download what an iteration recorded.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A recording job. Durations take units; `start` is `HH:MM` (UTC, daily) or an RFC 3339
/// time. `created` and `managedBy` are the sensor's to set: a `POST` that sets them is a 400.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordingJob {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// `HH:MM` UTC, or an RFC 3339 time; absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Iterations, one a day: 0 every day, forever; 1 once (the default).
    #[serde(default = "once")]
    #[schema(default = 1)]
    pub days: u32,
    pub duration: String,
    /// Each iteration's folder is deleted this long after it ends; absent: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<String>,
    /// When the job was made (RFC 3339); set by the sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `targeting` for the targeting document's jobs; set by the sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

const fn once() -> u32 {
    1
}

/// A job's state on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Scheduled,
    Recording,
    Finished,
    Expired,
}

impl JobState {
    /// The name on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Recording => "recording",
            Self::Finished => "finished",
            Self::Expired => "expired",
        }
    }
}

/// What a node says of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingJobStatus {
    pub job: RecordingJob,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start: Option<String>,
    pub iterations: Vec<IterationStatus>,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

/// One iteration of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IterationStatus {
    pub iteration: u32,
    pub start: String,
    pub end: String,
    pub packets: u64,
    pub bytes: u64,
    pub budget_drops: u64,
    pub missed_segments: u64,
    /// Seconds of the window the store no longer held when they were copied.
    pub not_held_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What one node records for jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingListing {
    pub jobs: Vec<RecordingJobStatus>,
    pub max_bytes: u64,
    pub used_bytes: u64,
}
