//! What a recording job leaves on disk and what the API says of it: an iteration's
//! record (`iteration.json`, [`IterationDoc`]) and the node's listing ([`Listing`]).
//!
//! Rules: `iteration.json` names only whole bytes of each file (readers read no further);
//! every count in it only grows, saturating; the listing sums them per job.
use serde::{Deserialize, Serialize};

use super::JobDoc;

/// An iteration's `iteration.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IterationDoc {
    pub iteration: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Copied up to here (exclusive).
    pub cursor_ns: u64,
    pub files: Vec<RecordingFile>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets not recorded because the budget was full.
    pub budget_drops: u64,
    /// Segments of the store that were gone (or unreadable) when their time was copied.
    pub missed_segments: u64,
    /// Time of the window before the store's oldest packet when it was copied: not
    /// recorded.
    #[serde(default)]
    pub not_held_ns: u64,
}

/// One file of an iteration: its name, whole bytes, and the time it covers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordingFile {
    pub name: String,
    pub bytes: u64,
    pub packets: u64,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// What `list` says of a job on this node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub job: JobDoc,
    /// `scheduled`, `recording`, `finished` or `expired`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_start: Option<String>,
    pub iterations: Vec<IterationStatus>,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What this node records for jobs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    pub jobs: Vec<JobStatus>,
    pub max_bytes: u64,
    pub used_bytes: u64,
}
