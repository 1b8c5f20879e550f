//! `/metrics`: Prometheus text.
use std::{fmt::Write as _, sync::atomic::Ordering::Relaxed};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};

use super::{health::not_ready, slices::load_index, ApiState, AppError};

pub(super) async fn metrics(State(state): State<ApiState>) -> Result<Response, AppError> {
    let mut text = String::new();
    let mut family = |name: &str, help: &str, values: &mut dyn Iterator<Item = (String, u64)>| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in values {
            let _ = writeln!(text, "{name}{{{labels}}} {v}");
        }
    };
    let per_iface = |f: fn(&crate::stats::SlotSnapshot) -> u64| {
        let state = state.clone();
        (0..state.interfaces.len()).map(move |i| {
            (
                format!("interface=\"{}\"", state.interfaces[i]),
                f(&state.stats.snapshot(i)),
            )
        })
    };
    family(
        "podcap_packets_captured_total",
        "Packets that reached user space.",
        &mut per_iface(|s| s.received),
    );
    family(
        "podcap_bytes_captured_total",
        "Bytes (original lengths) that reached user space.",
        &mut per_iface(|s| s.received_bytes),
    );
    family(
        "podcap_packets_filtered_total",
        "Packets the capture filter rejected (not recorded, not drops).",
        &mut per_iface(|s| s.filtered),
    );
    family(
        "podcap_packets_written_total",
        "Packets written into segments.",
        &mut per_iface(|s| s.written),
    );
    let totals = state.stats.totals();
    family(
        "podcap_drops_total",
        "Packets lost, by stage.",
        &mut [
            ("kernel", totals.kernel_drops),
            ("ring", totals.ring_drops),
            ("disk", totals.writer_drops),
        ]
        .into_iter()
        .map(|(stage, v)| (format!("stage=\"{stage}\""), v)),
    );
    let index = load_index(&state)?;
    let _ = write!(
        text,
        "# HELP podcap_store_bytes Bytes of finished segments.\n# TYPE podcap_store_bytes gauge\npodcap_store_bytes {}\n# HELP podcap_store_segments Finished segments.\n# TYPE podcap_store_segments gauge\npodcap_store_segments {}\n",
        index.total_bytes(),
        index.len()
    );
    health_metrics(&state, &index, &mut text);
    if let Some(archive) = &state.archive {
        archive_metrics(archive, &mut text);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// The archive's uploads, failures, gaps and backlog.
fn archive_metrics(archive: &crate::archive::ArchiveStats, text: &mut String) {
    let (backlog, age) = archive.backlog(crate::sys::realtime_ns());
    // Relaxed: counters read on their own.
    for (name, kind, help, value) in [
        (
            "podcap_archive_uploaded_objects_total",
            "counter",
            "Objects uploaded to the archive (segments, snapshots; not manifests).",
            archive.uploaded_objects.load(Relaxed).to_string(),
        ),
        (
            "podcap_archive_uploaded_bytes_total",
            "counter",
            "Bytes uploaded to the archive (compressed).",
            archive.uploaded_bytes.load(Relaxed).to_string(),
        ),
        (
            "podcap_archive_found_uploaded_total",
            "counter",
            "Objects found already in the archive (an upload done before a restart or crash).",
            archive.already_there.load(Relaxed).to_string(),
        ),
        (
            "podcap_archive_failures_total",
            "counter",
            "Archive requests that failed (each is retried).",
            archive.failures.load(Relaxed).to_string(),
        ),
        (
            "podcap_archive_skipped_segments_total",
            "counter",
            "Segments the store retired before they were uploaded, recorded in the archive as gaps.",
            archive.skipped_segments.load(Relaxed).to_string(),
        ),
        (
            "podcap_archive_backlog_segments",
            "gauge",
            "Finished segments waiting for upload.",
            backlog.to_string(),
        ),
        (
            "podcap_archive_oldest_pending_age_seconds",
            "gauge",
            "Age of the first packet of the oldest segment waiting for upload (0: none waits).",
            if backlog == 0 {
                "0".to_owned()
            } else {
                format!("{:.3}", age.as_secs_f64())
            },
        ),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// The sensor's own health: readiness, writes, the disk, early retirements, quarantine.
fn health_metrics(state: &ApiState, index: &crate::store::index::Index, text: &mut String) {
    let disk = state.health.disk();
    let quarantined = index
        .records()
        .iter()
        .filter(|r| r.file.starts_with(crate::store::name::QUARANTINE_DIR))
        .count();
    for (name, kind, help, value) in [
        (
            "podcap_ready",
            "gauge",
            "1 when the sensor records and can write (see /readyz).",
            u64::from(not_ready(state).is_none()),
        ),
        (
            "podcap_write_failing",
            "gauge",
            "1 while writes to the store fail.",
            u64::from(disk.failing.is_some()),
        ),
        (
            "podcap_disk_free_bytes",
            "gauge",
            "Bytes free on the store's file system.",
            disk.free_bytes,
        ),
        (
            "podcap_disk_min_free_bytes",
            "gauge",
            "Bytes --min-free keeps free (0: none).",
            disk.min_free_bytes,
        ),
        (
            "podcap_store_early_retired_segments_total",
            "counter",
            "Segments retired before retention's limits to keep --min-free.",
            disk.early_retired_segments,
        ),
        (
            "podcap_store_early_retired_bytes_total",
            "counter",
            "Bytes of segments retired to keep --min-free.",
            disk.early_retired_bytes,
        ),
        (
            "podcap_store_quarantined_segments",
            "gauge",
            "Damaged segments kept in quarantine (their readable packets are served).",
            quarantined as u64,
        ),
    ] {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
}
