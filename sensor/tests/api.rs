//! The HTTP API through `router(state).oneshot(request)`, every endpoint and every bad
//! input, plus one real listener on port 0 (axum's testing pattern). No privileges needed:
//! the store is written by the real `SegmentWriter` into a temporary directory.
mod common;

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};
use http_body_util::BodyExt;
use podcap_sensor::{
    api::{router, ApiState, SegmentInfo},
    config::settings::{Floors, RuntimeSettings, StartInputs},
    pcapng::{
        read::packets_with_names, Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET,
    },
    stats::Stats,
    store::{Limits, SegmentWriter},
    sys::realtime_ns,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const SECOND: u64 = 1_000_000_000;

/// A segment writer in `dir` for eth0 and eth1 with segments of `segment_size` bytes.
fn writer(dir: &tempfile::TempDir, segment_size: u64) -> SegmentWriter {
    let ifaces = common::ethernet_interfaces(&["eth0", "eth1"]);
    let limits = Limits {
        compress: false,
        segment_size,
        segment_time: Duration::from_hours(1),
        max_size: 100_000_000,
        max_time: Duration::from_hours(1),
    };
    SegmentWriter::open(dir.path(), limits, ifaces).unwrap()
}

/// A store with 300 packets on eth0 and eth1, one per 100 ms, ending now.
fn store() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir, 4_000);
    let start = realtime_ns() - 30 * SECOND;
    for i in 0..300u64 {
        let ts = start + i * SECOND / 10;
        w.write_packet(
            (i % 2) as u32,
            ts,
            100,
            &ts.to_be_bytes(),
            Direction::Inbound,
            |_| InterfaceStatistics::default(),
        )
        .unwrap();
        // On disk before the next packet: rotation (which waits for a write in flight
        // rather than the capture) then falls on every 4 kB.
        w.flush_now();
    }
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    (dir, start)
}

fn state(dir: &tempfile::TempDir, token: Option<&str>) -> ApiState {
    let s = ApiState::builder(dir.path())
        .interfaces(["eth0", "eth1"])
        .token(token)
        .build()
        .unwrap();
    s.health.set_attached(true);
    s
}

async fn get(
    state: &ApiState,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::get(uri);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes().to_vec(),
    )
}

fn packets(bytes: &[u8]) -> Vec<(String, u64)> {
    packets_with_names(bytes)
        .unwrap()
        .into_iter()
        .map(|(name, p)| (name, p.timestamp_ns))
        .collect()
}

fn error_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn readiness_tells_the_truth_and_status_says_why() {
    let (dir, _) = store();
    let mut s = state(&dir, None);
    let settings = settings_in(&dir, Floors::DEFAULT);
    s.settings = Arc::clone(&settings);
    let readyz = |s: &ApiState| {
        let s = s.clone();
        async move {
            let (status, _, body) = get(&s, "/readyz", None).await;
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let recording = |s: &ApiState| {
        let s = s.clone();
        async move {
            let (_, _, body) = get(&s, "/api/v1/status", None).await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (v["recording"].as_str().unwrap().to_owned(), v)
        }
    };
    assert_eq!(get(&s, "/healthz", None).await.0, StatusCode::OK);
    assert_eq!(readyz(&s).await.0, StatusCode::OK);
    let (state_now, body) = recording(&s).await;
    assert_eq!(state_now, "recording", "{body}");
    assert!(body["store"]["segments"].as_u64().unwrap() > 2, "{body}");

    settings
        .apply_api(&podcap_sensor::config::settings::SettingsDoc {
            enabled: Some(false),
            ..Default::default()
        })
        .unwrap();
    let (status, text) = readyz(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("recording is disabled"), "{text}");
    assert_eq!(recording(&s).await.0, "disabled");
    settings
        .apply_api(&podcap_sensor::config::settings::SettingsDoc {
            enabled: Some(true),
            ..Default::default()
        })
        .unwrap();

    let full = podcap_sensor::health::DiskState {
        failing: Some(podcap_sensor::health::WriteFailure {
            since: "2026-11-30T10:00:00Z".into(),
            error: "No space left on device (os error 28)".into(),
            disk_full: true,
        }),
        ..Default::default()
    };
    s.health.set_disk(&full);
    let (status, text) = readyz(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        text.contains("the disk is full") && text.contains("--min-free"),
        "{text}"
    );
    let (state_now, body) = recording(&s).await;
    assert_eq!(state_now, "disk-full", "{body}");
    assert_eq!(body["disk"]["failing"]["since"], "2026-11-30T10:00:00Z", "{body}");
    let (_, _, metrics) = get(&s, "/metrics", None).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("\npodcap_ready 0\n") && metrics.contains("\npodcap_write_failing 1\n"),
        "{metrics}"
    );
    s.health.set_disk(&podcap_sensor::health::DiskState::default());
    assert_eq!(
        readyz(&s).await.0,
        StatusCode::OK,
        "ready again once writes succeed"
    );

    s.health.set_attached(false);
    assert_eq!(readyz(&s).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn segments_list_the_index() {
    let (dir, start) = store();
    let s = state(&dir, None);
    let (status, _, body) = get(&s, "/api/v1/segments", None).await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<SegmentInfo> = serde_json::from_slice(&body).unwrap();
    assert!(list.len() > 2);
    assert_eq!(list.iter().map(|s| s.packets).sum::<u64>(), 300);
    assert_eq!(list.iter().map(|s| s.first_ns).min(), Some(start));
    let (_, _, body) = get(&s, "/api/v1/segments?last=5s", None).await;
    let recent: Vec<SegmentInfo> = serde_json::from_slice(&body).unwrap();
    assert!(!recent.is_empty() && recent.len() < list.len());
}

#[tokio::test]
async fn snapshot_holds_exactly_the_slice_in_order() {
    let (dir, start) = store();
    let s = state(&dir, None);
    let from = podcap_sensor::units::format_utc_compact(start);
    assert_eq!(from.len(), 16);
    // [start + 10 s, start + 20 s): packets 100..200.
    let to_rfc = |ns: u64| {
        let secs = ns / SECOND;
        let frac = ns % SECOND;
        let c = podcap_sensor::units::format_utc_compact(secs * SECOND);
        format!(
            "{}-{}-{}T{}:{}:{}.{frac:09}Z",
            &c[0..4],
            &c[4..6],
            &c[6..8],
            &c[9..11],
            &c[11..13],
            &c[13..15]
        )
    };
    let uri = format!(
        "/api/v1/snapshot?from={}&to={}",
        to_rfc(start + 10 * SECOND),
        to_rfc(start + 20 * SECOND)
    );
    let (status, headers, body) = get(&s, &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-pcapng");
    assert!(headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("filename=\"podcap-"));
    let got = packets(&body);
    assert_eq!(got.len(), 100);
    assert!(got.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(got[0].1, start + 10 * SECOND);

    let (_, _, body) = get(&s, &format!("{uri}&iface=eth1"), None).await;
    let got = packets(&body);
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|(name, _)| name == "eth1"));
    // The name a merged file shows (`SENSOR/eth1`) selects the same.
    let (_, _, shown) = get(&s, &format!("{uri}&iface=node-a:9090/eth1"), None).await;
    assert_eq!(packets(&shown), got);

    let (_, _, body) = get(&s, "/api/v1/snapshot?last=1h", None).await;
    assert_eq!(packets(&body).len(), 300);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_problem() {
    let (dir, _) = store();
    let s = state(&dir, None);
    for (uri, needle) in [
        ("/api/v1/snapshot?last=5x", "last: invalid duration"),
        ("/api/v1/snapshot?last=0s", "last:"),
        (
            "/api/v1/snapshot?last=213504d",
            "last: \"213504d\" reaches back before 1970",
        ),
        ("/api/v1/snapshot?last=5", "last: \"5\" has no unit"),
        ("/api/v1/snapshot?from=yesterday", "from: invalid time"),
        (
            "/api/v1/snapshot?from=2026-11-23T10:00:00Z&to=2026-11-23T09:00:00Z",
            "from is after to",
        ),
        (
            "/api/v1/snapshot?last=5m&from=2026-11-23T10:00:00Z",
            "either last or from/to",
        ),
        (
            "/api/v1/snapshot?last=5m&iface=eth9",
            "unknown interface \"eth9\"; this sensor records eth0, eth1",
        ),
        (
            "/api/v1/snapshot?last=5m&iface=node-a:9090/eth9",
            "unknown interface \"node-a:9090/eth9\"",
        ),
        ("/api/v1/segments?to=soon", "to: invalid time"),
        ("/api/v1/segments?foo=bar", "unknown field `foo`"),
        ("/api/v1/snapshot?last=5m&lst=1h", "unknown parameter \"lst\""),
        ("/api/v1/snapshot?last=5m&last=1h", "last: given twice"),
        ("/api/v1/snapshot?last=5m&filter=tcp%20prot%2080", "filter: "),
        ("/api/v1/snapshot?last=5m&pod=web-(", "pod: regex parse error"),
        ("/api/v1/live?last=5m", "unknown parameter \"last\""),
        (
            "/api/v1/snapshot?last=5m&secrets=yes",
            "secrets: \"yes\" is neither true nor false",
        ),
        (
            "/api/v1/snapshot?last=5m&secrets=true&secrets=true",
            "secrets: given twice",
        ),
        ("/api/v1/live?secrets=true", "unknown parameter \"secrets\""),
    ] {
        let (status, _, body) = get(&s, uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        let message = error_of(&body);
        assert!(message.contains(needle), "{uri}: {message}");
    }
    // A sensor with --max-slice 10s refuses a longer slice, serves a shorter one.
    let limited = ApiState {
        max_slice: Some(Duration::from_secs(10)),
        ..s
    };
    let (status, _, body) = get(&limited, "/api/v1/snapshot?last=1m", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("slice too large"), "{}", error_of(&body));
    assert_eq!(
        get(&limited, "/api/v1/snapshot?last=5s", None).await.0,
        StatusCode::OK
    );
}

/// TLS secrets go only to the admin token; the read token is told they were withheld by a
/// sensor that collects them, and one that does not says nothing.
#[tokio::test]
async fn secrets_are_the_admins_and_a_withheld_answer_says_so() {
    let (dir, _) = store();
    let s = ApiState {
        admin_token: Some(Arc::from("adm1n")),
        tls: Some(podcap_sensor::tls::TlsCounters {
            collector: Arc::default(),
            written: Arc::default(),
        }),
        ..state(&dir, Some("r3ad"))
    };
    let said = |headers: &axum::http::HeaderMap| {
        headers
            .get("x-podcap-secrets")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let uri = "/api/v1/snapshot?last=1h&secrets=true";
    let (status, headers, _) = get(&s, uri, Some("adm1n")).await;
    assert_eq!(
        (status, said(&headers).as_deref()),
        (StatusCode::OK, Some("included"))
    );
    let (status, headers, body) = get(&s, uri, Some("r3ad")).await;
    assert_eq!(
        (status, said(&headers).as_deref()),
        (StatusCode::OK, Some("withheld"))
    );
    assert!(!packets(&body).is_empty(), "the packets still come");
    let (_, headers, _) = get(&s, "/api/v1/snapshot?last=1h", Some("r3ad")).await;
    assert_eq!(said(&headers), None, "not asked, nothing said");
    let quiet = ApiState {
        tls: None,
        ..s.clone()
    };
    assert_eq!(said(&get(&quiet, uri, Some("r3ad")).await.1), None);
}

/// With `--tls-secrets`, `/api/v1/status` names the TLS libraries it found but does not
/// probe, by release, beside what it probes and writes; without, it says nothing of TLS.
#[tokio::test]
async fn status_names_the_tls_libraries_it_does_not_probe() {
    let (dir, _) = store();
    let counters = podcap_sensor::tls::TlsCounters {
        collector: Arc::default(),
        written: Arc::default(),
    };
    counters
        .collector
        .probed
        .store(2, std::sync::atomic::Ordering::Relaxed);
    counters
        .collector
        .unsupported
        .lock()
        .unwrap()
        .insert("OpenSSL 3.1.4".into(), 1);
    let s = ApiState {
        tls: Some(counters),
        ..state(&dir, None)
    };
    let (status, _, body) = get(&s, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["tls"]["probed"], 2, "{status}");
    assert_eq!(status["tls"]["unsupported"]["OpenSSL 3.1.4"], 1, "{status}");
    let (_, _, body) = get(&state(&dir, None), "/api/v1/status", None).await;
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(status["tls"].is_null(), "{status}");
}

#[tokio::test]
async fn a_token_guards_everything_but_health() {
    let (dir, _) = store();
    let s = state(&dir, Some("s3cret"));
    assert_eq!(get(&s, "/healthz", None).await.0, StatusCode::OK);
    assert_eq!(get(&s, "/readyz", None).await.0, StatusCode::OK);
    assert_eq!(get(&s, "/api/v1/live", None).await.0, StatusCode::UNAUTHORIZED);
    for uri in ["/api/v1/segments", "/api/v1/snapshot?last=1m", "/metrics"] {
        assert_eq!(get(&s, uri, None).await.0, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            get(&s, uri, Some("wrong!")).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        assert_eq!(get(&s, uri, Some("s3cret")).await.0, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn metrics_are_openmetrics_with_conventional_names() {
    let (dir, _) = store();
    let s = state(&dir, None);
    s.stats.slots[1]
        .received
        .store(7, std::sync::atomic::Ordering::Relaxed);
    s.stats.slots[1]
        .ring_drops
        .store(3, std::sync::atomic::Ordering::Relaxed);
    let (status, headers, body) = get(&s, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let text = String::from_utf8(body).unwrap();
    let samples = common::parse_openmetrics(&text);
    let has = |sample: &str| {
        assert!(
            samples.iter().any(|s| s == sample),
            "no {sample} in {samples:#?}\n{text}"
        );
    };
    has("podcap_captured_packets_total{interface=eth1} 7.0");
    has("podcap_captured_bytes_total{interface=eth0} 0.0");
    has("podcap_dropped_packets_total{interface=eth1,stage=ring} 3.0");
    has("podcap_dropped_packets_total{interface=eth0,stage=disk} 0.0");
    has(&format!(
        "podcap_build_info{{version={}}} 1.0",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(
        samples
            .iter()
            .any(|s| s.starts_with("podcap_store_segments{} ") && !s.ends_with(" 0.0")),
        "{samples:#?}"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.starts_with("podcap_store_window_seconds{} ")),
        "{samples:#?}"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.starts_with("podcap_store_oldest_packet_timestamp_seconds{} ")),
        "{samples:#?}"
    );
}

/// In Kubernetes mode each pod's interface is a series of its own, counted from when the
/// pod got its slot; names that need escaping arrive whole.
#[tokio::test]
async fn pods_have_series_of_their_own() {
    let (dir, _) = store();
    let s = ApiState {
        stats: Arc::new(Stats::new(8)),
        ..state(&dir, None)
    };
    let (slot, relaxed) = (5, std::sync::atomic::Ordering::Relaxed);
    // What the slot counted for an earlier pod.
    s.stats.slots[slot].received.store(100, relaxed);
    s.stats
        .set_pod(slot, Some(("shop".into(), "web-1".into(), "eth\\\"0\n".into())));
    s.stats.slots[slot].received.store(104, relaxed);
    let (_, _, body) = get(&s, "/metrics", None).await;
    let text = String::from_utf8(body).unwrap();
    let samples = common::parse_openmetrics(&text);
    let pod = r#"namespace=shop,pod=web-1,interface=eth\"0\n"#;
    assert!(
        samples
            .iter()
            .any(|s| *s == format!("podcap_captured_packets_total{{{pod}}} 4.0")),
        "{samples:#?}\n{text}"
    );
    s.stats.set_pod(slot, None);
    let (_, _, body) = get(&s, "/metrics", None).await;
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("web-1"), "a pod gone keeps no series:\n{text}");
}

#[tokio::test]
async fn a_real_listener_serves_the_router() {
    let (dir, _) = store();
    let s = state(&dir, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(s)).await.unwrap() });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
}

async fn send(state: &ApiState, method: &str, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn settings_in(
    dir: &tempfile::TempDir,
    floors: podcap_sensor::config::settings::Floors,
) -> Arc<RuntimeSettings> {
    Arc::new(RuntimeSettings::start(dir.path(), StartInputs::flags("500MB", "1h"), floors).unwrap())
}

#[tokio::test]
async fn config_shows_changes_validates_and_persists() {
    let (dir, _) = store();
    let mut s = state(&dir, None);
    let settings = settings_in(&dir, Floors::DEFAULT);
    s.settings = Arc::clone(&settings);
    let (status, body) = send(&s, "GET", "/api/v1/config", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&body["enabled"], &body["maxTime"], &body["maxSize"]),
        (
            &serde_json::json!(true),
            &serde_json::json!("1h"),
            &serde_json::json!("500MB")
        )
    );
    assert_eq!(body["sources"]["maxSize"]["source"], "flag", "{body}");
    assert_eq!(body["sources"]["enabled"]["source"], "default", "{body}");

    let (status, body) = send(
        &s,
        "PATCH",
        "/api/v1/config",
        r#"{"enabled": false, "maxTime": "2h"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["maxTime"], "2h");
    assert_eq!(body["sources"]["maxTime"]["source"], "api", "{body}");
    assert!(!settings.enabled());
    assert_eq!(settings.max_time(), Duration::from_hours(2));
    let reloaded =
        RuntimeSettings::start(dir.path(), StartInputs::flags("500MB", "1h"), Floors::DEFAULT).unwrap();
    assert!(!reloaded.enabled(), "persisted");

    for (bad, needle) in [
        (r#"{"maxSize": "lots"}"#, "maxSize: invalid size"),
        (r#"{"maxTime": "0s"}"#, "maxTime:"),
        (r#"{"maxsize": "1GB"}"#, "unknown field `maxsize`"),
        (r#"{"maxSize": "1"}"#, "maxSize: \"1\" has no unit"),
        (
            r#"{"maxSize": "5MB"}"#,
            "maxSize: 5MB keeps fewer than 4 segments",
        ),
        (
            r#"{"maxTime": "1ms"}"#,
            "maxTime: 1ms keeps fewer than 4 segments",
        ),
        ("not json", "config:"),
    ] {
        let (status, body) = send(&s, "PATCH", "/api/v1/config", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{bad}: {body}");
    }
    let (status, body) = send(&s, "PATCH", "/api/v1/config?force=yes", r#"{"maxTime": "3h"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown parameter: {body}");
    assert_eq!(settings.max_size(), 500_000_000, "a bad change applied nothing");
    assert_eq!(settings.max_time(), Duration::from_hours(2));
}

#[tokio::test]
async fn a_dry_run_says_what_a_shrink_would_retire_and_changes_nothing() {
    let (dir, _) = store();
    let mut s = state(&dir, None);
    // Floors of tiny segments.
    let floors = Floors {
        segment_size: 1_000,
        segment_time: Duration::from_secs(1),
    };
    let settings = settings_in(&dir, floors);
    s.settings = Arc::clone(&settings);
    let index = podcap_sensor::store::index::Index::load(dir.path())
        .unwrap()
        .unwrap();
    let stored = index.total_bytes();
    let (status, body) = send(&s, "PATCH", "/api/v1/config?dryRun=true", r#"{"maxSize": "6kB"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dryRun"], true);
    assert_eq!(body["maxSize"], "6kB");
    let retired = &body["wouldRetire"];
    let bytes = retired["bytes"].as_u64().unwrap();
    assert!(stored > 10_000, "{stored}");
    assert!(retired["segments"].as_u64().unwrap() > 0, "{body}");
    assert!(
        stored - bytes <= 6_000 && stored - bytes > 1_000,
        "{stored} {body}"
    );
    assert!(retired["packets"].as_u64().unwrap() > 0);
    assert_eq!(settings.max_size(), 500_000_000, "a dry run changes nothing");
    // Growing retires nothing.
    let (_, body) = send(&s, "PATCH", "/api/v1/config?dryRun=true", r#"{"maxSize": "1GB"}"#).await;
    assert_eq!(body["wouldRetire"]["segments"], 0, "{body}");
}

/// Reads frames of a streaming body into `bytes` until `enough` says stop, the body ends
/// or 15 s pass.
async fn read_stream(body: &mut Body, bytes: &mut Vec<u8>, enough: impl Fn(&[u8]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !enough(bytes) {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => {
                if let Ok(data) = frame.unwrap().into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_new_packets_in_order_and_ends_with_the_sensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer(&dir, 1_000);
    let old = realtime_ns() - 10 * SECOND;
    writer
        .write_packet(0, old, 100, b"old", Direction::Inbound, |_| {
            InterfaceStatistics::default()
        })
        .unwrap();
    let mut s = state(&dir, None);
    s.view = writer.view();

    let (status, _, _) = get(&s, "/api/v1/live?iface=eth7", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let response = router(s.clone())
        .oneshot(
            Request::get("/api/v1/live?iface=eth1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/x-pcapng");
    let mut body = response.into_body();
    let mut stream = Vec::new();
    read_stream(&mut body, &mut stream, |b| !b.is_empty()).await;
    assert_eq!(
        &stream[..4],
        &0x0A0D_0D0Au32.to_le_bytes(),
        "a section header comes first"
    );

    // New packets on both interfaces, some across segment rotations, slightly out of order.
    let now = realtime_ns();
    let stamps: Vec<u64> = (0..20u64).map(|i| now + (i ^ 1) * 10_000_000).collect();
    for (i, &ts) in stamps.iter().enumerate() {
        writer
            .write_packet(
                (i % 2) as u32,
                ts,
                100,
                &ts.to_be_bytes(),
                Direction::Outbound,
                |_| InterfaceStatistics::default(),
            )
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    writer.tick(|_| InterfaceStatistics::default()).unwrap();
    // The periodic write went to the disk thread; the writer publishes it when it next
    // looks (every pass of the sensor's loop), here at once.
    writer.flush_now();

    read_stream(&mut body, &mut stream, |b| packets(b).len() >= 10).await;
    let got = packets(&stream);
    let mut want: Vec<u64> = stamps
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, &t)| t)
        .collect();
    want.sort_unstable();
    assert_eq!(
        got.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        want,
        "eth1's new packets, in order, not the old one"
    );
    assert!(got.iter().all(|(name, _)| name == "eth1"));

    // The stream ends when the sensor stops.
    s.stopping.request();
    read_stream(&mut body, &mut stream, |_| false).await;
    assert_eq!(packets(&stream).len(), 10, "nothing twice");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), body.frame())
            .await
            .is_ok_and(|f| f.is_none()),
        "the body is finished"
    );
    writer.finish(|_| InterfaceStatistics::default()).unwrap();
}

async fn request_with(
    state: &ApiState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn the_token_is_checked_before_anything_of_the_request_is_read() {
    let (dir, _) = store();
    let mut s = state(&dir, Some("reader"));
    s.settings = settings_in(&dir, Floors::DEFAULT);
    for (method, uri, body) in [
        ("GET", "/api/v1/snapshot?last=bogus", Vec::new()),
        ("GET", "/api/v1/segments?foo=bar", Vec::new()),
        ("PATCH", "/api/v1/config", vec![b'x'; 3 << 20]),
        ("PATCH", "/api/v1/config?dryRun=maybe", b"not json".to_vec()),
        ("GET", "/api/v1/status", Vec::new()),
    ] {
        let (status, text) = request_with(&s, method, uri, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {text}");
    }
}

#[tokio::test]
async fn the_read_token_reads_and_only_the_admin_token_changes_the_settings() {
    let (dir, _) = store();
    let mut s = state(&dir, Some("reader"));
    let settings = settings_in(&dir, Floors::DEFAULT);
    s.settings = Arc::clone(&settings);
    let change = br#"{"enabled": false}"#.to_vec();
    // A read token and no admin token: nobody changes the settings.
    let (status, text) = request_with(&s, "PATCH", "/api/v1/config", Some("reader"), change.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("admin token"), "{text}");
    s.admin_token = Some(Arc::from("admin"));
    for uri in [
        "/api/v1/segments",
        "/api/v1/snapshot?last=1h",
        "/api/v1/config",
        "/api/v1/status",
        "/metrics",
    ] {
        assert_eq!(
            request_with(&s, "GET", uri, Some("reader"), Vec::new()).await.0,
            StatusCode::OK,
            "{uri}"
        );
        assert_eq!(
            request_with(&s, "GET", uri, Some("admin"), Vec::new()).await.0,
            StatusCode::OK,
            "{uri}"
        );
        assert_eq!(
            request_with(&s, "GET", uri, Some("guess"), Vec::new()).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, _) = request_with(&s, "PATCH", "/api/v1/config", Some("reader"), change.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(settings.enabled(), "the read token changed nothing");
    let (status, text) = request_with(&s, "PATCH", "/api/v1/config", Some("admin"), change).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!settings.enabled());
}

#[tokio::test]
async fn downloads_select_packets_by_filter_and_pods_by_their_interfaces() {
    // A store of three pods' interfaces, as Kubernetes mode names them.
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir, 2_000);
    let pods = ["shop/web-1/eth0", "shop/db-1/eth0", "blog/web-2/eth0"];
    for (slot, name) in pods.iter().enumerate() {
        w.set_interface(
            slot as u32,
            InterfaceDescription {
                name: (*name).into(),
                description: String::new(),
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65535,
            },
        );
    }
    let start = realtime_ns() - 10 * SECOND;
    for i in 0..90u64 {
        let ts = start + i * SECOND / 10;
        w.write_packet(
            (i % 3) as u32,
            ts,
            100,
            &ts.to_be_bytes(),
            Direction::Inbound,
            |_| InterfaceStatistics::default(),
        )
        .unwrap();
    }
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    let s = state(&dir, None);
    let names = |body: &[u8]| {
        packets_with_names(body)
            .unwrap()
            .into_iter()
            .map(|(name, p)| (name, p.timestamp_ns))
            .collect::<Vec<_>>()
    };
    let (status, _, body) = get(&s, "/api/v1/snapshot?last=1m&pod=%5Eweb-&namespace=shop", None).await;
    assert_eq!(status, StatusCode::OK);
    let got = names(&body);
    assert_eq!(got.len(), 30, "web-1 only: {got:?}");
    assert!(got.iter().all(|(n, _)| n == "shop/web-1/eth0"));
    let (_, _, body) = get(
        &s,
        "/api/v1/snapshot?last=1m&namespace=shop&namespace=blog&pod=web",
        None,
    )
    .await;
    assert_eq!(names(&body).len(), 60, "web-1 and web-2");
    // A filter runs on each packet as recorded: the last byte of these is the timestamp's.
    let (_, _, body) = get(
        &s,
        "/api/v1/snapshot?last=1m&filter=ether%5B6%5D%20%26%201%20%3D%201",
        None,
    )
    .await;
    let odd = names(&body);
    let expect = (0..90u64)
        .filter(|i| ((start + i * SECOND / 10) >> 8) & 1 == 1)
        .count();
    assert!(
        (10..80).contains(&expect),
        "the filter must select some and not all: {expect}"
    );
    assert_eq!(odd.len(), expect);
    assert!(odd.iter().all(|(_, ts)| (ts >> 8) & 1 == 1));
    // A standalone interface belongs to no pod.
    let (dir2, _) = store();
    let (_, _, body) = get(&state(&dir2, None), "/api/v1/snapshot?last=1h&pod=.", None).await;
    assert!(names(&body).is_empty());
}

fn with_snapshots(mut s: ApiState, dir: &tempfile::TempDir, budget: u64) -> ApiState {
    s.snapshots =
        Arc::new(podcap_sensor::store::kept::snapshots::Snapshots::open(dir.path(), budget).unwrap());
    s
}

#[tokio::test]
async fn a_snapshot_keeps_its_slice_byte_for_byte_past_the_window_and_a_restart() {
    let (dir, start) = store();
    let s = with_snapshots(state(&dir, None), &dir, 10_000_000);
    let (from, to) = (
        podcap_sensor::units::format_rfc3339_ns(start + 5 * SECOND),
        podcap_sensor::units::format_rfc3339_ns(start + 15 * SECOND),
    );
    let body = serde_json::json!({
        "name": "incident-1", "from": from, "to": to,
        "filter": "ether[6] & 2 = 2", "iface": "eth0", "expire": "1h",
    });
    let (status, made) = send(&s, "POST", "/api/v1/snapshots", &body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    // The same slice downloaded from the store: the snapshot holds exactly it.
    let query = format!("from={from}&to={to}&iface=eth0&filter=ether%5B6%5D%20%26%202%20%3D%202");
    let (status, _, expected) = get(&s, &format!("/api/v1/snapshot?{query}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let wanted = packets(&expected);
    assert!(!wanted.is_empty());
    assert!(wanted
        .iter()
        .all(|(name, ts)| name == "eth0" && (ts >> 9) & 1 == 1));
    assert_eq!(made["packets"].as_u64(), Some(wanted.len() as u64), "{made}");
    assert_eq!(made["selection"]["filter"], "ether[6] & 2 = 2");
    assert!(made["expires"].as_str().is_some(), "{made}");
    let (status, headers, kept) = get(&s, "/api/v1/snapshots/incident-1/pcapng", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kept, expected, "the snapshot is the slice, byte for byte");
    let sha = headers["x-podcap-sha256"].to_str().unwrap().to_owned();
    assert_eq!(made["sha256"], sha.as_str());
    // The rolling store retires everything (here: every segment and the index go).
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let (_, _, now_empty) = get(&s, &format!("/api/v1/snapshot?{query}"), None).await;
    assert!(packets(&now_empty).is_empty());
    // A restart: the snapshot is still there, the same bytes.
    let s = with_snapshots(state(&dir, None), &dir, 10_000_000);
    let (status, _, again) = get(&s, "/api/v1/snapshots/incident-1/pcapng", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, expected);
    let (status, listing) = send(&s, "GET", "/api/v1/snapshots", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listing["snapshots"][0], made);
    assert_eq!(listing["usedBytes"], made["bytes"]);
    let (status, manifest) = send(&s, "GET", "/api/v1/snapshots/incident-1", "").await;
    assert_eq!((status, manifest), (StatusCode::OK, made));
    // Deleted by name only.
    assert_eq!(
        send(&s, "DELETE", "/api/v1/snapshots/incident-1", "").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&s, "DELETE", "/api/v1/snapshots/incident-1", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&s, "/api/v1/snapshots/incident-1/pcapng", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_snapshot_requests_are_refused_by_name_and_change_nothing() {
    let (dir, _) = store();
    let s = with_snapshots(state(&dir, None), &dir, 10_000_000);
    let post = |body: serde_json::Value| {
        let s = s.clone();
        async move { send(&s, "POST", "/api/v1/snapshots", &body.to_string()).await }
    };
    let cases = [
        (
            serde_json::json!({"name": "../x", "last": "1m"}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            serde_json::json!({"name": "a/b", "last": "1m"}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            serde_json::json!({"name": ".hidden", "last": "1m"}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            serde_json::json!({"name": "x"}),
            StatusCode::BAD_REQUEST,
            "window",
        ),
        (
            serde_json::json!({"name": "x", "last": "10"}),
            StatusCode::BAD_REQUEST,
            "last",
        ),
        (
            serde_json::json!({"name": "x", "last": "1m", "expire": "7"}),
            StatusCode::BAD_REQUEST,
            "expire",
        ),
        (
            serde_json::json!({"name": "x", "last": "1m", "filter": "tcp prot 80"}),
            StatusCode::BAD_REQUEST,
            "filter",
        ),
        (
            serde_json::json!({"name": "x", "last": "1m", "pod": "(["}),
            StatusCode::BAD_REQUEST,
            "pod",
        ),
        (
            serde_json::json!({"name": "x", "last": "1m", "iface": "eth9"}),
            StatusCode::BAD_REQUEST,
            "iface",
        ),
        (
            serde_json::json!({"name": "x", "last": "1m", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
    ];
    for (body, status, named) in cases {
        let (got, answer) = post(body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(named),
            "{body}: {answer}"
        );
    }
    let (status, answer) = send(&s, "POST", "/api/v1/snapshots", "not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let listing = send(&s, "GET", "/api/v1/snapshots", "").await.1;
    assert_eq!(
        listing["snapshots"],
        serde_json::json!([]),
        "nothing made: {listing}"
    );
    assert_eq!(
        listing["failed"],
        serde_json::json!([]),
        "nothing to remember: {listing}"
    );
}

#[tokio::test]
async fn a_snapshot_name_is_taken_once_and_unknown_names_are_not_found() {
    let (dir, _) = store();
    let s = with_snapshots(state(&dir, None), &dir, 10_000_000);
    let post = |body: serde_json::Value| {
        let s = s.clone();
        async move { send(&s, "POST", "/api/v1/snapshots", &body.to_string()).await }
    };
    // A name is taken once; the first stays as it was.
    assert_eq!(
        post(serde_json::json!({"name": "x", "last": "1m"})).await.0,
        StatusCode::CREATED
    );
    let first = send(&s, "GET", "/api/v1/snapshots/x", "").await.1;
    let (status, answer) = post(serde_json::json!({"name": "x", "last": "5s"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(send(&s, "GET", "/api/v1/snapshots/x", "").await.1, first);
    // Unknown names, and paths that are not names.
    assert_eq!(
        send(&s, "GET", "/api/v1/snapshots/nope", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(send(&s, "GET", "/api/v1/snapshots/..", "")
        .await
        .0
        .is_client_error());
    assert_eq!(
        send(&s, "GET", "/api/v1/snapshots/x/pcapng?filter=tcp", "")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_snapshot_over_the_budget_is_refused_remembered_and_deletes_no_other() {
    let (dir, _) = store();
    let s = with_snapshots(state(&dir, None), &dir, 6_000);
    let (status, small) = send(&s, "POST", "/api/v1/snapshots", r#"{"name":"small","last":"2s"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{small}");
    let (status, answer) = send(&s, "POST", "/api/v1/snapshots", r#"{"name":"big","last":"1m"}"#).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("--snapshot-max-size"),
        "{answer}"
    );
    let listing = send(&s, "GET", "/api/v1/snapshots", "").await.1;
    assert_eq!(listing["snapshots"][0], small);
    assert_eq!(listing["failed"][0]["name"], "big");
    assert!(listing["failed"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("does not fit"));
}

#[tokio::test]
async fn only_the_admin_makes_and_deletes_snapshots() {
    let (dir, _) = store();
    let mut s = with_snapshots(state(&dir, Some("reader")), &dir, 10_000_000);
    s.admin_token = Some(Arc::from("admin"));
    let body = br#"{"name":"x","last":"1m"}"#.to_vec();
    let (status, text) = request_with(&s, "POST", "/api/v1/snapshots", Some("reader"), body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert_eq!(
        request_with(&s, "POST", "/api/v1/snapshots", Some("admin"), body)
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        request_with(
            &s,
            "GET",
            "/api/v1/snapshots/x/pcapng",
            Some("reader"),
            Vec::new()
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        request_with(&s, "DELETE", "/api/v1/snapshots/x", Some("reader"), Vec::new())
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        request_with(&s, "DELETE", "/api/v1/snapshots/x", None, Vec::new())
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        request_with(&s, "DELETE", "/api/v1/snapshots/x", Some("admin"), Vec::new())
            .await
            .0,
        StatusCode::NO_CONTENT
    );
}

/// An Ethernet + IPv4 + UDP frame from `src` to 198.18.9.1, its payload `tag`.
fn udp_frame(src: [u8; 4], tag: u8) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 20 + 8 + 1];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    frame[16..18].copy_from_slice(&29u16.to_be_bytes());
    frame[22] = 64;
    frame[23] = 17;
    frame[26..30].copy_from_slice(&src);
    frame[30..34].copy_from_slice(&[198, 18, 9, 1]);
    frame[34..36].copy_from_slice(&4000u16.to_be_bytes());
    frame[36..38].copy_from_slice(&9u16.to_be_bytes());
    frame[38..40].copy_from_slice(&9u16.to_be_bytes());
    frame[42] = tag;
    frame
}

#[tokio::test]
async fn a_pod_is_selected_by_its_interface_even_when_another_pod_reuses_its_ip() {
    // web-1 had 198.18.9.9 and went; web-2 got the same address later (as a CNI reuses it).
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir, 2_000);
    for (slot, name) in ["shop/web-1/eth0", "shop/web-2/eth0"].iter().enumerate() {
        w.set_interface(
            slot as u32,
            InterfaceDescription {
                name: (*name).into(),
                description: String::new(),
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65535,
            },
        );
    }
    let start = realtime_ns() - 20 * SECOND;
    for i in 0..40u64 {
        let (slot, tag) = if i < 20 { (0, 1) } else { (1, 2) };
        let frame = udp_frame([198, 18, 9, 9], tag);
        let ts = start + i * SECOND / 10;
        w.write_packet(slot, ts, frame.len() as u32, &frame, Direction::Outbound, |_| {
            InterfaceStatistics::default()
        })
        .unwrap();
    }
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    let s = state(&dir, None);
    let tags = |body: &[u8]| {
        packets_with_names(body)
            .unwrap()
            .into_iter()
            .map(|(name, p)| (name, p.data[42]))
            .collect::<Vec<_>>()
    };
    // By address, the two pods are one.
    let (_, _, body) = get(
        &s,
        "/api/v1/snapshot?last=1m&filter=src%20host%20198.18.9.9",
        None,
    )
    .await;
    assert_eq!(tags(&body).len(), 40);
    // By pod, each is itself, however its address was reused.
    for (pod, tag) in [("web-1", 1u8), ("web-2", 2u8)] {
        let (status, _, body) = get(
            &s,
            &format!("/api/v1/snapshot?last=1m&pod=%5E{pod}%24&namespace=shop"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let got = tags(&body);
        assert_eq!(got.len(), 20, "{pod}: {got:?}");
        assert!(
            got.iter()
                .all(|(name, t)| name == &format!("shop/{pod}/eth0") && *t == tag),
            "{pod}: {got:?}"
        );
    }
    // A pod and a filter together: both must hold.
    let (_, _, body) = get(
        &s,
        "/api/v1/snapshot?last=1m&pod=web-2&filter=udp%20port%209",
        None,
    )
    .await;
    assert_eq!(tags(&body).len(), 20);
    let (_, _, body) = get(&s, "/api/v1/snapshot?last=1m&pod=web-2&filter=tcp", None).await;
    assert!(tags(&body).is_empty());
}
