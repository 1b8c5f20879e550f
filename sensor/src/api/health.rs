//! `/readyz` and `/api/v1/status`: readiness that tells the truth, and the state behind it
//! (rules in `crate::health`).
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use podcap_api::status::{Drops, Mode, RecordingState, Status, StoreSummary, TlsStatus};

use super::{slices::read_view, wire, ApiState, AppError};
use crate::units;

/// Why the sensor is not ready, if it is not (see `health.rs`).
pub(super) fn not_ready(state: &ApiState) -> Option<String> {
    let config_error = state
        .config_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(error) = config_error {
        return Some(format!(
            "configuration: {error} (the last good configuration stays in force)"
        ));
    }
    if !state.health.attached() {
        return Some("capture not attached".into());
    }
    if !state.settings.enabled() {
        return Some("recording is disabled (podcap config --enable true)".into());
    }
    let disk = state.health.disk();
    if let Some(lost) = disk.lock_lost {
        return Some(lost);
    }
    if let Some(failing) = disk.failing {
        return Some(format!(
            "writes to the store fail since {}: {}{}",
            failing.since,
            failing.error,
            if failing.disk_full {
                " (the disk is full; --min-free lets the sensor retire old segments for room)"
            } else {
                ""
            }
        ));
    }
    None
}

pub(super) async fn readyz(State(state): State<ApiState>) -> Response {
    match not_ready(&state) {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

/// `GET /api/v1/status`: what the sensor is doing and why.
pub(super) async fn status(State(state): State<ApiState>) -> Result<Json<Status>, AppError> {
    let reason = not_ready(&state);
    let disk = state.health.disk();
    let recording = match (&reason, &disk.failing) {
        _ if disk.lock_lost.is_some() => RecordingState::LockLost,
        (_, Some(f)) if f.disk_full => RecordingState::DiskFull,
        (_, Some(_)) => RecordingState::WriteFailing,
        _ if !state.settings.enabled() => RecordingState::Disabled,
        _ if !state.health.attached() => RecordingState::Starting,
        _ => RecordingState::Recording,
    };
    let (index, active) = {
        let view = read_view(&state);
        let unfinished: Vec<crate::store::index::SegmentRecord> = view.unfinished().cloned().collect();
        (view.index.clone(), unfinished)
    };
    let quarantined = index
        .records()
        .iter()
        .filter(|r| r.file.starts_with(crate::store::name::QUARANTINE_DIR))
        .count();
    let oldest = index
        .records()
        .iter()
        .chain(&active)
        .filter(|r| r.packets > 0)
        .map(|r| r.first_ns)
        .min();
    let newest = index
        .records()
        .iter()
        .chain(&active)
        .filter(|r| r.packets > 0)
        .map(|r| r.last_ns)
        .max();
    let totals = state.stats.totals();
    let tls = state.tls.as_ref().map(|tls| {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: statistics, each read on its own.
        let unsupported = tls
            .collector
            .unsupported
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        TlsStatus {
            probed: tls.collector.probed.load(Relaxed),
            unsupported,
            secrets_written: tls.written.get().written,
        }
    });
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: if state.kubernetes {
            Mode::Kubernetes
        } else {
            Mode::Standalone
        },
        interfaces: recorded_interfaces(&state),
        settings: Some(wire::settings(state.settings.view())),
        recording,
        ready: reason.is_none(),
        not_ready_because: reason,
        store: StoreSummary {
            segments: index.len() as u64,
            bytes: index.total_bytes(),
            quarantined_segments: quarantined as u64,
            oldest_packet: oldest.map(units::format_rfc3339),
            newest_packet: newest.map(units::format_rfc3339),
        },
        disk: wire::disk(disk),
        drops: Drops {
            kernel: totals.kernel_drops,
            ring: totals.ring_drops,
            disk: totals.writer_drops,
        },
        recovery: wire::recovery(&state.recovery),
        tls,
        archive: state
            .archive
            .as_ref()
            .map(|a| wire::archive(a.status(crate::sys::realtime_ns()))),
    }))
}

/// The interfaces the sensor records now, as its files name them: those given at start,
/// and in Kubernetes mode each targeted pod's (`namespace/pod/eth0`).
fn recorded_interfaces(state: &ApiState) -> Vec<String> {
    let pods = state
        .stats
        .pods()
        .into_iter()
        .map(|(_, pod)| format!("{}/{}/{}", pod.namespace, pod.pod, pod.interface));
    state.recorded_interfaces.iter().cloned().chain(pods).collect()
}
