//! The sensor's own types as the API's contract (`podcap-api`) says them. Each is a field
//! by field copy: the store's, the snapshots' and the recordings' types are also formats
//! on disk and keep their own shape; what crosses the wire is the contract's.
use podcap_api::{
    recordings::{IterationStatus, JobState, RecordingJob, RecordingJobStatus, RecordingListing},
    settings::{Origin, Origins, Retired, Settings, SettingsChange, Source},
    snapshots::{DamagedSnapshot, SnapshotFailure, SnapshotListing, SnapshotManifest, SnapshotSelection},
    status::{ArchiveFailing, ArchiveStatus, DiskState, GapToRecord, InFlight, RecoveryReport, WriteFailure},
};

use super::AppError;
use crate::{
    archive,
    config::settings,
    health,
    store::{
        kept::{recordings, snapshots},
        recover,
    },
};

pub(super) fn settings(view: settings::SettingsView) -> Settings {
    let origin = |o: settings::Origin| Origin {
        source: match o.source {
            settings::Source::Default => Source::Default,
            settings::Source::Flag => Source::Flag,
            settings::Source::TargetingFile => Source::TargetingFile,
            settings::Source::Api => Source::Api,
        },
        since: o.since,
    };
    Settings {
        enabled: view.enabled,
        max_time: view.max_time,
        max_size: view.max_size,
        sources: Origins {
            enabled: origin(view.sources.enabled),
            max_time: origin(view.sources.max_time),
            max_size: origin(view.sources.max_size),
        },
        dry_run: view.dry_run,
        would_retire: view.would_retire.map(|r| Retired {
            segments: r.segments,
            bytes: r.bytes,
            packets: r.packets,
        }),
    }
}

pub(super) fn settings_change(change: SettingsChange) -> settings::SettingsDoc {
    settings::SettingsDoc {
        enabled: change.enabled,
        max_time: change.max_time,
        max_size: change.max_size,
    }
}

pub(super) fn disk(state: health::DiskState) -> DiskState {
    DiskState {
        free_bytes: state.free_bytes,
        total_bytes: state.total_bytes,
        min_free_bytes: state.min_free_bytes,
        early_retired_segments: state.early_retired_segments,
        early_retired_bytes: state.early_retired_bytes,
        failing: state.failing.map(|f| WriteFailure {
            since: f.since,
            error: f.error,
            disk_full: f.disk_full,
        }),
        lock_lost: state.lock_lost,
    }
}

pub(super) fn recovery(report: &recover::RecoveryReport) -> RecoveryReport {
    RecoveryReport {
        repaired: report.repaired.clone(),
        quarantined: report.quarantined.clone(),
        ignored: report.ignored.clone(),
        rebuilt: report.rebuilt.clone(),
        missing: report.missing.clone(),
    }
}

pub(super) fn archive(status: archive::ArchiveStatus) -> ArchiveStatus {
    ArchiveStatus {
        url: status.url,
        node: status.node,
        segments: status.segments,
        backlog_segments: status.backlog_segments as u64,
        oldest_pending: status.oldest_pending,
        oldest_pending_age_seconds: status.oldest_pending_age_seconds,
        uploaded_objects: status.uploaded_objects,
        uploaded_bytes: status.uploaded_bytes,
        found_uploaded: status.found_uploaded,
        failures: status.failures,
        failing: status.failing.map(|f| ArchiveFailing {
            reason: f.reason,
            since: f.since,
            last: f.last,
        }),
        request: status.request.map(|r| InFlight {
            what: r.what,
            since: r.since,
            seconds: r.seconds,
        }),
        skipped_segments: status.skipped_segments,
        gaps_recorded: status.gaps_recorded,
        gaps_to_record: status.gaps_to_record as u64,
        gaps_to_record_oldest: status
            .gaps_to_record_oldest
            .into_iter()
            .map(|g| GapToRecord {
                seq: g.seq,
                first_packet: g.first_packet,
                last_packet: g.last_packet,
                packets: g.packets,
            })
            .collect(),
        request_timeout_seconds: status.request_timeout_seconds,
        drain_seconds: status.drain_seconds,
    }
}

pub(super) fn manifest(m: snapshots::Manifest) -> SnapshotManifest {
    SnapshotManifest {
        name: m.name,
        from: m.from,
        to: m.to,
        selection: SnapshotSelection {
            iface: m.selection.iface,
            filter: m.selection.filter,
            pod: m.selection.pod,
            namespaces: m.selection.namespaces,
        },
        created: m.created,
        expires: m.expires,
        packets: m.packets,
        bytes: m.bytes,
        sha256: m.sha256,
        secrets: m.secrets,
        sha256_without_secrets: m.sha256_without_secrets,
        kernel_drops: m.kernel_drops,
        sensor_drops: m.sensor_drops,
        damaged_parts: m.damaged_parts as u64,
        sensor_version: m.sensor_version,
    }
}

pub(super) fn snapshot_listing(listing: snapshots::Listing) -> SnapshotListing {
    SnapshotListing {
        snapshots: listing.snapshots.into_iter().map(manifest).collect(),
        failed: listing
            .failed
            .into_iter()
            .map(|f| SnapshotFailure {
                name: f.name,
                at: f.at,
                reason: f.reason,
            })
            .collect(),
        damaged: listing
            .damaged
            .into_iter()
            .map(|d| DamagedSnapshot {
                name: d.name,
                reason: d.reason,
            })
            .collect(),
        max_bytes: listing.max_bytes,
        used_bytes: listing.used_bytes,
    }
}

pub(super) fn job(doc: recordings::JobDoc) -> RecordingJob {
    RecordingJob {
        name: doc.name,
        filter: doc.filter,
        pod: doc.pod,
        namespaces: doc.namespaces,
        start: doc.start,
        days: doc.days,
        duration: doc.duration,
        expire: doc.expire,
        created: doc.created,
        managed_by: doc.managed_by,
    }
}

pub(super) fn job_doc(job: RecordingJob) -> recordings::JobDoc {
    recordings::JobDoc {
        name: job.name,
        filter: job.filter,
        pod: job.pod,
        namespaces: job.namespaces,
        start: job.start,
        days: job.days,
        duration: job.duration,
        expire: job.expire,
        created: job.created,
        managed_by: job.managed_by,
    }
}

pub(super) fn recording_listing(listing: recordings::Listing) -> Result<RecordingListing, AppError> {
    let jobs = listing
        .jobs
        .into_iter()
        .map(|status| {
            let state = match status.state.as_str() {
                "scheduled" => JobState::Scheduled,
                "recording" => JobState::Recording,
                "finished" => JobState::Finished,
                "expired" => JobState::Expired,
                other => return Err(AppError::Internal(format!("a recording job in state {other:?}"))),
            };
            Ok(RecordingJobStatus {
                job: job(status.job),
                state,
                next_start: status.next_start,
                iterations: status
                    .iterations
                    .into_iter()
                    .map(|i| IterationStatus {
                        iteration: i.iteration,
                        start: i.start,
                        end: i.end,
                        packets: i.packets,
                        bytes: i.bytes,
                        budget_drops: i.budget_drops,
                        missed_segments: i.missed_segments,
                        not_held_seconds: i.not_held_seconds,
                        expires: i.expires,
                    })
                    .collect(),
                packets: status.packets,
                bytes: status.bytes,
                drops: status.drops,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(RecordingListing {
        jobs,
        max_bytes: listing.max_bytes,
        used_bytes: listing.used_bytes,
    })
}
