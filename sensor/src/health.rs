//! What the sensor knows of its own health, for `/readyz`, `/api/v1/status` and metrics.
//!
//! Rules:
//! - Readiness tells the truth at every request: not ready while the capture is not
//!   attached, the targeting file's last change could not apply, recording is disabled,
//!   writes to the store fail (a full disk, a segment that cannot be opened, segment
//!   numbers used up), or the data directory's lock was lost; ready again as soon as that
//!   ends.
//! - The writer owns the store's state and publishes it here after every pass
//!   ([`DiskState`]); readers take a copy. The attached flag is `Relaxed`: it stands alone.
use std::sync::{
    atomic::{AtomicBool, Ordering::Relaxed},
    Mutex,
};

use serde::Serialize;

/// Writes to the store are failing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteFailure {
    /// When the first write of this run of failures failed (RFC 3339).
    pub since: String,
    /// The last error.
    pub error: String,
    /// The file system is full (`ENOSPC`).
    pub disk_full: bool,
}

/// The store's file system and what the store did about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskState {
    /// Bytes free on the store's file system (for the sensor's user), and its size.
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// What `--min-free` keeps free, in bytes (0: nothing; segments are never retired for
    /// space).
    pub min_free_bytes: u64,
    /// Segments (and their bytes) retired before retention's limits because the file
    /// system had less free than `--min-free`.
    pub early_retired_segments: u64,
    pub early_retired_bytes: u64,
    /// Set while writes fail.
    pub failing: Option<WriteFailure>,
    /// Set while this sensor does not hold the data directory's lock (`store/lock.rs`):
    /// why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_lost: Option<String>,
}

/// The sensor's health, shared by the writer, the capture and the API.
#[derive(Debug, Default)]
pub struct Health {
    attached: AtomicBool,
    disk: Mutex<DiskState>,
}

impl Health {
    /// The capture programs are attached (or detached again).
    pub fn set_attached(&self, attached: bool) {
        self.attached.store(attached, Relaxed);
    }

    #[must_use]
    pub fn attached(&self) -> bool {
        self.attached.load(Relaxed)
    }

    /// The writer's latest view of the store's file system.
    pub fn set_disk(&self, disk: &DiskState) {
        let mut current = self
            .disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != *disk {
            current.clone_from(disk);
        }
    }

    #[must_use]
    pub fn disk(&self) -> DiskState {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
