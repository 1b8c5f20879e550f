//! What `/metrics` and `/api/v1/status` say about the sensor itself: the process as every
//! Prometheus client describes it, the API's requests and download bytes, the retention
//! settings and the snapshots' and recordings' budgets; the version, mode and interfaces.
//! Through `router(state).oneshot(request)`, no privileges needed.
mod common;

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};
use http_body_util::BodyExt;
use podcap_sensor::{
    api::{router, ApiState},
    config::settings::{Floors, RuntimeSettings, StartInputs},
    pcapng::{Direction, InterfaceStatistics},
    store::{Limits, SegmentWriter},
    sys::realtime_ns,
};
use tower::ServiceExt;

const TOKEN: &str = "read-8d1e";
const ADMIN_TOKEN: &str = "admin-51c0";

/// A sensor's API state over a store of 100 packets on eth0 and eth1 (the last 10 s), with
/// settings, snapshots and recording jobs.
fn state(dir: &tempfile::TempDir) -> ApiState {
    let ifaces = common::ethernet_interfaces(&["eth0", "eth1"]);
    let limits = Limits {
        compress: false,
        segment_size: 4_000,
        segment_time: Duration::from_hours(1),
        max_size: 100_000_000,
        max_time: Duration::from_hours(1),
    };
    let mut writer = SegmentWriter::open(dir.path(), limits, ifaces).unwrap();
    let start = realtime_ns() - 10_000_000_000;
    for i in 0..100u64 {
        let ts = start + i * 100_000_000;
        writer
            .write_packet(
                (i % 2) as u32,
                ts,
                100,
                &ts.to_be_bytes(),
                Direction::Inbound,
                |_| InterfaceStatistics::default(),
            )
            .unwrap();
    }
    writer.finish(|_| InterfaceStatistics::default()).unwrap();
    let s = ApiState::builder(dir.path())
        .interfaces(["eth0", "eth1"])
        .token(Some(TOKEN))
        .admin_token(Some(ADMIN_TOKEN))
        .settings(Arc::new(
            RuntimeSettings::start(dir.path(), StartInputs::flags("500MB", "2h"), Floors::DEFAULT).unwrap(),
        ))
        .snapshots(Arc::new(
            podcap_sensor::store::kept::snapshots::Snapshots::open(dir.path(), 40_000_000).unwrap(),
        ))
        .recordings(Arc::new(
            podcap_sensor::store::kept::recordings::Recordings::open(dir.path(), 30_000_000, 65535).unwrap(),
        ))
        .build()
        .unwrap();
    s.health.set_attached(true);
    s
}

async fn get(state: &ApiState, uri: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut request = Request::get(uri);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, body.collect().await.unwrap().to_bytes().to_vec())
}

/// `/metrics`, parsed by the Prometheus project's strict `OpenMetrics` parser: each sample
/// as `name{labels} value`.
async fn scrape(state: &ApiState) -> (String, Vec<String>) {
    let (status, body) = get(state, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let samples = common::parse_openmetrics(&text);
    (text, samples)
}

fn value_of(samples: &[String], series: &str) -> f64 {
    let prefix = format!("{series} ");
    let found: Vec<&String> = samples.iter().filter(|s| s.starts_with(&prefix)).collect();
    assert_eq!(found.len(), 1, "one {series}: {samples:#?}");
    found[0][prefix.len()..].parse().unwrap()
}

/// A series whose value is a whole number (the parser writes it as `N.0`).
fn whole_value_of(samples: &[String], series: &str) -> u64 {
    let prefix = format!("{series} ");
    let found: Vec<&String> = samples.iter().filter(|s| s.starts_with(&prefix)).collect();
    assert_eq!(found.len(), 1, "one {series}: {samples:#?}");
    let value = &found[0][prefix.len()..];
    value
        .strip_suffix(".0")
        .and_then(|whole| whole.parse().ok())
        .unwrap_or_else(|| panic!("{series} is {value}, not a whole number"))
}

#[tokio::test]
async fn the_process_is_described_as_every_prometheus_client_describes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (text, samples) = scrape(&state(&dir)).await;
    let now = f64::from(u32::try_from(realtime_ns() / 1_000_000_000).unwrap());
    let started = value_of(&samples, "process_start_time_seconds{}");
    assert!(
        started > now - 24.0 * 3600.0 && started <= now + 1.0,
        "{started} {now}\n{text}"
    );
    assert!(
        value_of(&samples, "process_resident_memory_bytes{}") > 1e6,
        "{text}"
    );
    assert!(value_of(&samples, "process_open_fds{}") >= 3.0, "{text}");
    assert!(value_of(&samples, "process_cpu_seconds_total{}") >= 0.0, "{text}");
    // The families are the client libraries' own: no podcap_ prefix, and typed as theirs.
    for line in [
        "# TYPE process_start_time_seconds gauge",
        "# TYPE process_cpu_seconds counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status_and_downloads_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir);
    let (status, slice) = get(&s, "/api/v1/snapshot?last=1m", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(slice.len() > 1_000, "{} bytes", slice.len());
    for name in ["a", "b", "c"] {
        let (status, _) = get(&s, &format!("/api/v1/snapshots/{name}"), Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        get(&s, "/api/v1/segments", Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&s, "/api/v1/segments", Some(TOKEN)).await.0, StatusCode::OK);
    assert_eq!(
        get(&s, "/no/such/thing", Some(TOKEN)).await.0,
        StatusCode::NOT_FOUND
    );
    let (text, samples) = scrape(&s).await;
    let requests = |route: &str, status: u16| {
        whole_value_of(
            &samples,
            &format!("podcap_api_requests_total{{route={route},status={status}}}"),
        )
    };
    assert_eq!(requests("/api/v1/snapshot", 200), 1, "{text}");
    assert_eq!(requests("/api/v1/snapshots/{name}", 404), 3, "{text}");
    assert_eq!(requests("/api/v1/segments", 401), 1, "{text}");
    assert_eq!(requests("/api/v1/segments", 200), 1, "{text}");
    assert_eq!(requests("unmatched", 404), 1, "{text}");
    assert!(
        !samples
            .iter()
            .any(|s| s.contains("snapshots/a") || s.contains("/no/such")),
        "a raw path is never a label: {text}"
    );
    assert_eq!(
        whole_value_of(&samples, "podcap_api_served_bytes_total{route=/api/v1/snapshot}"),
        slice.len() as u64,
        "{text}"
    );
}

#[tokio::test]
async fn retention_and_the_budgets_in_use_are_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir);
    let (text, samples) = scrape(&s).await;
    assert_eq!(
        whole_value_of(&samples, "podcap_retention_max_bytes{}"),
        500_000_000,
        "{text}"
    );
    assert_eq!(
        whole_value_of(&samples, "podcap_retention_max_seconds{}"),
        7200,
        "{text}"
    );
    assert_eq!(
        whole_value_of(&samples, "podcap_snapshots_max_bytes{}"),
        40_000_000,
        "{text}"
    );
    assert_eq!(whole_value_of(&samples, "podcap_snapshots_bytes{}"), 0, "{text}");
    assert_eq!(
        whole_value_of(&samples, "podcap_recordings_max_bytes{}"),
        30_000_000,
        "{text}"
    );
    assert_eq!(whole_value_of(&samples, "podcap_recordings_bytes{}"), 0, "{text}");
    // A kept snapshot uses its budget.
    let response = router(s.clone())
        .oneshot(
            Request::post("/api/v1/snapshots")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"name":"kept-1","last":"1m"}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{response:?}");
    let (text, samples) = scrape(&s).await;
    assert!(
        whole_value_of(&samples, "podcap_snapshots_bytes{}") > 1_000,
        "{text}"
    );
}

#[tokio::test]
async fn status_names_the_version_mode_interfaces_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir);
    let (status, body) = get(&s, "/api/v1/status", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["mode"], "standalone", "{v}");
    assert_eq!(v["interfaces"], serde_json::json!(["eth0", "eth1"]), "{v}");
    assert_eq!(v["settings"]["maxTime"], "2h", "{v}");
    assert_eq!(v["settings"]["enabled"], true, "{v}");
    let kubernetes = ApiState {
        kubernetes: true,
        ..s.clone()
    };
    let (_, body) = get(&kubernetes, "/api/v1/status", Some(TOKEN)).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["mode"], "kubernetes", "{v}");
}
