//! `/metrics`: the sensor's counters in the `OpenMetrics` text format, encoded by
//! `prometheus-client` (Prometheus scrapes it as it scrapes its own text format).
//!
//! Rules: names follow Prometheus' conventions — `podcap_` and what is counted, base units
//! (bytes, seconds) named last, `_total` on counters — and one family per quantity, what
//! it is about in labels: the interface (in Kubernetes mode also the pod's namespace and
//! name, so a pod's traffic is a series of its own), the stage a drop happened at.
//! Every value is read at scrape time from the counters the capture path, the store and
//! the archive keep; nothing is counted twice. Label values are escaped here
//! ([`LabelValue`]), because the crate writes them as given.
use std::{fmt::Write as _, sync::atomic::Ordering::Relaxed};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::{EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::{Registry, Unit},
};

use super::{health::not_ready, slices::read_view, ApiState, AppError};
use crate::stats::SlotSnapshot;

/// What Prometheus is told the body is.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) async fn metrics(State(state): State<ApiState>) -> Result<Response, AppError> {
    let mut root = Registry::default();
    process_metrics(&mut root);
    let registry = root.sub_registry_with_prefix("podcap");
    registry.register(
        "build",
        "The sensor's version",
        Info::new(vec![("version", LabelValue::from(env!("CARGO_PKG_VERSION")))]),
    );
    capture_metrics(&state, registry);
    let (index, oldest_ns) = {
        let view = read_view(&state);
        (view.index.clone(), view.oldest_ns())
    };
    store_metrics(&index, oldest_ns, registry);
    health_metrics(&state, &index, registry);
    budget_metrics(&state, registry);
    api_metrics(&state.traffic, registry);
    if let Some(archive) = &state.archive {
        archive_metrics(archive, registry);
    }
    if let Some(tls) = &state.tls {
        tls_metrics(tls, registry);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &root)
        .map_err(|e| AppError::Internal(format!("encoding the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// A label value, escaped as the text format asks (`\`, `"` and line feeds).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct LabelValue(String);

impl From<&str> for LabelValue {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels = Vec<(&'static str, LabelValue)>;

/// Registers `metric` as `name`, with its unit when it has one.
fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: impl prometheus_client::registry::Metric,
) {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric),
        None => registry.register(name, help, metric),
    }
}

/// One counter family, labelled.
fn counters(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    register(registry, name, help, unit, family.clone());
    family
}

/// One gauge family, labelled.
fn gauges(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    register(registry, name, help, None, family.clone());
    family
}

/// One gauge without labels, set to `value`.
fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: i64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    register(registry, name, help, unit, gauge);
}

/// One gauge of seconds without labels, set to `seconds`.
fn seconds_gauge(registry: &mut Registry, name: &str, help: &str, seconds: f64) {
    let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    gauge.set(seconds);
    register(registry, name, help, Some(Unit::Seconds), gauge);
}

/// One counter without labels, at `value`.
fn counter(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    register(registry, name, help, unit, counter);
}

/// The process as the Prometheus client libraries describe every program, under their
/// names (no `podcap_` prefix: dashboards and alerts written for any process work).
/// Absent, and logged, when `/proc` cannot be read.
fn process_metrics(registry: &mut Registry) {
    let stats = match crate::sys::process::process_stats() {
        Ok(stats) => stats,
        Err(e) => {
            log::warn!("/metrics: the process_* families are left out: /proc: {e}");
            return;
        }
    };
    seconds_gauge(
        registry,
        "process_start_time",
        "Start time of the process since unix epoch in seconds",
        stats.start_time_seconds,
    );
    let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    cpu.inc_by(stats.cpu_seconds);
    registry.register_with_unit(
        "process_cpu",
        "Total user and system CPU time spent in seconds",
        Unit::Seconds,
        cpu,
    );
    gauge(
        registry,
        "process_resident_memory",
        "Resident memory size in bytes",
        Some(Unit::Bytes),
        saturating_i64(stats.resident_memory_bytes),
    );
    gauge(
        registry,
        "process_open_fds",
        "Number of open file descriptors",
        None,
        saturating_i64(stats.open_fds),
    );
}

/// Requests by the route they matched and their status, and the bytes downloads served.
fn api_metrics(traffic: &super::ApiTraffic, registry: &mut Registry) {
    let requests = counters(
        registry,
        "api_requests",
        "API requests answered, by route template (unmatched: no route) and HTTP status",
        None,
    );
    for ((route, status), count) in traffic.requests() {
        requests
            .get_or_create(&vec![
                ("route", LabelValue(route)),
                ("status", LabelValue(status.to_string())),
            ])
            .inc_by(count);
    }
    let served = counters(
        registry,
        "api_served",
        "Bytes of download bodies (pcapng) handed to clients, by route template",
        Some(Unit::Bytes),
    );
    for (route, bytes) in traffic.served_bytes() {
        served
            .get_or_create(&vec![("route", LabelValue::from(route))])
            .inc_by(bytes);
    }
}

/// The retention settings in force, and how much of the snapshots' and recording jobs'
/// budgets is used.
fn budget_metrics(state: &ApiState, registry: &mut Registry) {
    let settings = &state.settings;
    gauge(
        registry,
        "retention_max",
        "The store's size limit in force (--max-size, or its change through the API or the targeting file)",
        Some(Unit::Bytes),
        saturating_i64(settings.max_size()),
    );
    gauge(
        registry,
        "retention_max",
        "The store's time limit in force (--max-time, or its change through the API or the targeting file)",
        Some(Unit::Seconds),
        saturating_i64(settings.max_time().as_secs()),
    );

    let now_ns = crate::sys::realtime_ns();
    let snapshots = &state.snapshots;
    match snapshots.list(now_ns) {
        Ok(listing) => {
            gauge(
                registry,
                "snapshots",
                "Bytes the kept snapshots use of their budget",
                Some(Unit::Bytes),
                saturating_i64(listing.used_bytes),
            );
            gauge(
                registry,
                "snapshots_max",
                "The kept snapshots' budget (--snapshot-max-size)",
                Some(Unit::Bytes),
                saturating_i64(listing.max_bytes),
            );
        }
        Err(e) => log::warn!("/metrics: the snapshots' budget is left out: {e}"),
    }

    let recordings = &state.recordings;
    let listing = recordings.list(now_ns);
    gauge(
        registry,
        "recordings",
        "Bytes the recording jobs' iterations use of their budget",
        Some(Unit::Bytes),
        saturating_i64(listing.used_bytes),
    );
    gauge(
        registry,
        "recordings_max",
        "The recording jobs' budget (--recordings-max-size)",
        Some(Unit::Bytes),
        saturating_i64(listing.max_bytes),
    );
}

/// What became of the TLS secrets (`--tls-secrets`).
fn tls_metrics(tls: &crate::tls::TlsCounters, registry: &mut Registry) {
    use std::sync::atomic::Ordering::Relaxed;
    // Relaxed: statistics, each read on its own; nothing is published through them.
    let (collector, written) = (&tls.collector, tls.written.get());
    counter(
        registry,
        "tls_programs_probed",
        "Go programs and OpenSSL libraries whose TLS secrets are read",
        None,
        collector.probed.load(Relaxed),
    );
    counter(
        registry,
        "tls_secrets_read",
        "TLS secrets the probes read and handed to the writer",
        None,
        collector.read.load(Relaxed),
    );
    counter(
        registry,
        "tls_secrets_written",
        "TLS secrets written into the store (those of recorded sessions)",
        None,
        written.written,
    );
    counter(
        registry,
        "tls_secrets_written_late",
        "TLS secrets written after their session's first packets (also in written)",
        None,
        written.late,
    );
    let dropped = counters(
        registry,
        "tls_secrets_dropped",
        "TLS secrets not written, by reason: not_recorded (their session was not recorded), too_long (a field longer than the probe carries), unreadable (the probe could not read the process), ring_full (the probe's ring buffer was full), writer_behind (the writer had not taken the secrets before them), not_in_pod (probe hits of a process outside the targeted pods, Kubernetes mode)",
        None,
    );
    let unsupported = gauges(
        registry,
        "tls_libraries_unsupported",
        "TLS libraries found but not probed, by release: their layout is not known to this sensor (files)",
    );
    if let Ok(found) = collector.unsupported.lock() {
        for (release, files) in found.iter() {
            unsupported
                .get_or_create(&vec![("release", LabelValue::from(release.as_str()))])
                .set(saturating_i64(*files));
        }
    }
    for (reason, value) in [
        ("not_recorded", written.not_recorded),
        ("too_long", collector.too_long.load(Relaxed)),
        ("unreadable", collector.unreadable.load(Relaxed)),
        ("ring_full", collector.ring_full.load(Relaxed)),
        ("writer_behind", collector.writer_behind.load(Relaxed)),
        ("not_in_pod", collector.not_in_pod.load(Relaxed)),
    ] {
        dropped
            .get_or_create(&vec![("reason", LabelValue::from(reason))])
            .inc_by(value);
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Each recorded interface's counters: the interfaces given at start, and in Kubernetes
/// mode each pod's interfaces with the pod's namespace and name (counted since the pod got
/// its slot).
fn series(state: &ApiState) -> Vec<(Labels, SlotSnapshot)> {
    let mut series: Vec<(Labels, SlotSnapshot)> = state
        .recorded_interfaces
        .iter()
        .enumerate()
        .map(|(slot, name)| {
            (
                vec![("interface", LabelValue::from(name.as_str()))],
                state.stats.snapshot(slot),
            )
        })
        .collect();
    for (slot, pod) in state.stats.pods() {
        series.push((
            vec![
                ("namespace", LabelValue(pod.namespace)),
                ("pod", LabelValue(pod.pod)),
                ("interface", LabelValue(pod.interface)),
            ],
            state.stats.snapshot(slot).since(&pod.baseline),
        ));
    }
    series
}

/// Packets and bytes captured, filtered, written and dropped, per interface.
fn capture_metrics(state: &ApiState, registry: &mut Registry) {
    let captured = counters(
        registry,
        "captured_packets",
        "Packets that reached user space",
        None,
    );
    let captured_bytes = counters(
        registry,
        "captured",
        "Bytes (original lengths) of the packets that reached user space",
        Some(Unit::Bytes),
    );
    let filtered = counters(
        registry,
        "filtered_packets",
        "Packets the capture filter rejected (not recorded, not drops)",
        None,
    );
    let written = counters(registry, "written_packets", "Packets written into segments", None);
    let dropped = counters(
        registry,
        "dropped_packets",
        "Packets lost, by interface and stage: kernel (the ring channel: the BPF ring buffer was full; AF_XDP: clone, capture veth, XDP, AF_XDP ring), ring (the user-space ring was full), disk (not written: a write failed, or the disk fell behind the traffic)",
        None,
    );
    for (labels, s) in series(state) {
        captured.get_or_create(&labels).inc_by(s.received);
        captured_bytes.get_or_create(&labels).inc_by(s.received_bytes);
        filtered.get_or_create(&labels).inc_by(s.filtered);
        written.get_or_create(&labels).inc_by(s.written);
        for (stage, count) in [
            ("kernel", s.kernel_drops),
            ("ring", s.ring_drops),
            ("disk", s.writer_drops),
        ] {
            let mut labels = labels.clone();
            labels.push(("stage", LabelValue::from(stage)));
            dropped.get_or_create(&labels).inc_by(count);
        }
    }
}

/// What the store holds, and the window a user can still download.
fn store_metrics(index: &crate::store::index::Index, oldest_ns: Option<u64>, registry: &mut Registry) {
    gauge(
        registry,
        "store",
        "Bytes of finished segments",
        Some(Unit::Bytes),
        saturating_i64(index.total_bytes()),
    );
    gauge(
        registry,
        "store_segments",
        "Finished segments",
        None,
        saturating_i64(index.len() as u64),
    );
    // Absent while the store holds nothing: there is no window to speak of.
    if let Some(oldest_ns) = oldest_ns {
        seconds_gauge(
            registry,
            "store_oldest_packet_timestamp",
            "Time of the oldest packet the store holds (Unix time): the start of what can still be downloaded",
            nanoseconds_as_seconds(oldest_ns),
        );
        seconds_gauge(
            registry,
            "store_window",
            "How far back the store reaches from now",
            nanoseconds_as_seconds(crate::sys::realtime_ns().saturating_sub(oldest_ns)),
        );
    }
}

#[expect(clippy::cast_precision_loss, reason = "a gauge's value: microseconds suffice")]
fn nanoseconds_as_seconds(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1e6
}

/// The archive's uploads, failures, gaps and backlog.
fn archive_metrics(archive: &crate::archive::ArchiveStats, registry: &mut Registry) {
    let (backlog, age) = archive.backlog(crate::sys::realtime_ns());
    // Relaxed: counters read on their own.
    counter(
        registry,
        "archive_uploaded_objects",
        "Objects uploaded to the archive (segments, snapshots; not manifests)",
        None,
        archive.uploaded_objects.load(Relaxed),
    );
    counter(
        registry,
        "archive_uploaded",
        "Bytes uploaded to the archive (compressed)",
        Some(Unit::Bytes),
        archive.uploaded_bytes.load(Relaxed),
    );
    counter(
        registry,
        "archive_found_uploaded",
        "Objects found already in the archive (an upload done before a restart or crash)",
        None,
        archive.already_there.load(Relaxed),
    );
    counter(
        registry,
        "archive_failures",
        "Archive requests that failed or got no answer within --archive-timeout (each is retried)",
        None,
        archive.failures.load(Relaxed),
    );
    counter(
        registry,
        "archive_skipped_segments",
        "Segments the store retired before they were uploaded (gaps), counted when retired",
        None,
        archive.skipped_segments(),
    );
    gauge(
        registry,
        "archive_gaps_to_record",
        "Gaps not recorded in the archive yet (it has not answered since they were given up)",
        None,
        saturating_i64(archive.ledger.gaps_to_record_count() as u64),
    );
    gauge(
        registry,
        "archive_backlog_segments",
        "Finished segments waiting for upload",
        None,
        saturating_i64(backlog as u64),
    );
    seconds_gauge(
        registry,
        "archive_oldest_pending_age",
        "Age of the first packet of the oldest segment waiting for upload (0: none waits)",
        if backlog == 0 { 0.0 } else { age.as_secs_f64() },
    );
}

/// The sensor's own health: readiness, writes, the disk, early retirements, quarantine.
fn health_metrics(state: &ApiState, index: &crate::store::index::Index, registry: &mut Registry) {
    let disk = state.health.disk();
    let quarantined = index
        .records()
        .iter()
        .filter(|r| r.file.starts_with(crate::store::name::QUARANTINE_DIR))
        .count();
    gauge(
        registry,
        "ready",
        "1 when the sensor records and can write (see /readyz)",
        None,
        i64::from(not_ready(state).is_none()),
    );
    gauge(
        registry,
        "write_failing",
        "1 while writes to the store fail",
        None,
        i64::from(disk.failing.is_some()),
    );
    gauge(
        registry,
        "disk_free",
        "Bytes free on the store's file system",
        Some(Unit::Bytes),
        saturating_i64(disk.free_bytes),
    );
    gauge(
        registry,
        "disk_min_free",
        "Bytes --min-free keeps free (0: none)",
        Some(Unit::Bytes),
        saturating_i64(disk.min_free_bytes),
    );
    counter(
        registry,
        "store_early_retired_segments",
        "Segments retired before retention's limits to keep --min-free",
        None,
        disk.early_retired_segments,
    );
    counter(
        registry,
        "store_early_retired",
        "Bytes of segments retired to keep --min-free",
        Some(Unit::Bytes),
        disk.early_retired_bytes,
    );
    gauge(
        registry,
        "store_quarantined_segments",
        "Damaged segments kept in quarantine (their readable packets are served)",
        None,
        saturating_i64(quarantined as u64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &str) -> String {
        let mut registry = Registry::default();
        let family = Family::<Labels, Counter>::default();
        registry.register("t", "t", family.clone());
        family
            .get_or_create(&vec![("interface", LabelValue::from(value))])
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn label_values_are_escaped() {
        let text = encoded("a\"b\\c\nd");
        assert!(text.contains(r#"t_total{interface="a\"b\\c\nd"} 1"#), "{text}");
        assert_eq!(text.lines().count(), 4, "one line per sample:\n{text}");
    }
}
