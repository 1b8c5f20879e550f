//! The sensor's HTTP API (axum): health, the segment list, time-sliced snapshots, the
//! recording settings, metrics.
//!
//! Rules:
//! - `router(state)` is the whole API; `serve` binds it. Every endpoint but `/healthz` and
//!   `/readyz` requires the bearer token when one is configured (compared in constant
//!   time); a sensor refuses to listen beyond loopback without one.
//! - Bad input is a 4xx with `{"error": "…"}` naming what is wrong; server faults are a
//!   500 whose details go to the log, not to the client.
//! - A snapshot streams: the store's slice is written on a blocking thread into a bounded
//!   channel, so memory does not grow with the slice, and a client that goes away closes
//!   the channel, which stops the work; a client that stops reading for `STALL_TIMEOUT`
//!   is dropped. At most `MAX_SNAPSHOTS` run at once.
//! - The live stream follows the store: every `LIVE_POLL` it slices `[cursor, now -
//!   LIVE_DELAY)` with one [`slice::Slicer`], so the stream is one pcapng section in
//!   timestamp order. `LIVE_DELAY` covers the writer's flush interval (500 ms) and the
//!   reorder window (200 ms), so a packet is in the store before its time is sliced. It
//!   costs the capture path nothing: a slow client slows only its own reader. It ends
//!   when the client goes away or the sensor stops. At most `MAX_LIVE` run at once.
//! - Every handler must produce its response head within `REQUEST_TIMEOUT` (bodies
//!   stream on without it).
use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

use crate::{
    settings::{Retired, RuntimeSettings, SettingsDoc, SettingsError, SettingsView},
    stats::Stats,
    store::{
        index::{Index, SegmentRecord},
        retention, slice, SharedView,
    },
    sys, units,
};

/// Snapshots served at once; more get 503.
pub const MAX_SNAPSHOTS: usize = 4;
/// Live streams served at once; more get 503.
pub const MAX_LIVE: usize = 8;
/// How far behind the clock the live stream runs.
pub const LIVE_DELAY: Duration = Duration::from_secs(1);
/// How often the live stream looks for new packets.
pub const LIVE_POLL: Duration = Duration::from_millis(250);
/// A streaming client that reads nothing for this long is dropped.
pub const STALL_TIMEOUT: Duration = Duration::from_mins(1);
/// Time for a handler to produce its response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub data_dir: PathBuf,
    pub interfaces: Vec<String>,
    pub ready: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    pub token: Option<Arc<str>>,
    pub snapshots: Arc<Semaphore>,
    pub live: Arc<Semaphore>,
    /// The longest time range one snapshot may span (`--max-slice`); longer ones get 400.
    pub max_slice: Option<std::time::Duration>,
    /// Why the targeting file's last change could not apply (shown by `/readyz`).
    pub config_error: Arc<std::sync::Mutex<Option<String>>>,
    /// Set when the sensor stops: live streams end so the server can shut down.
    pub stopping: Arc<AtomicBool>,
    /// The running writer's view of the store; without one, the manifest on disk is read
    /// (finished segments only).
    pub view: Option<SharedView>,
    /// The live recording settings (`/api/v1/config`); absent in tests of other endpoints.
    pub settings: Option<Arc<RuntimeSettings>>,
}

impl ApiState {
    #[must_use]
    pub fn new(data_dir: PathBuf, interfaces: Vec<String>, stats: Arc<Stats>, token: Option<String>) -> Self {
        Self {
            data_dir,
            interfaces,
            ready: Arc::new(AtomicBool::new(false)),
            stats,
            token: token.map(Arc::from),
            snapshots: Arc::new(Semaphore::new(MAX_SNAPSHOTS)),
            live: Arc::new(Semaphore::new(MAX_LIVE)),
            stopping: Arc::new(AtomicBool::new(false)),
            config_error: Arc::default(),
            max_slice: None,
            view: None,
            settings: None,
        }
    }
}

/// An error for the client.
#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    Unauthorized,
    Busy(&'static str),
    Timeout,
    Internal(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required".to_owned(),
            ),
            Self::Busy(what) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many {what} at once; retry"),
            ),
            Self::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the request took too long".to_owned(),
            ),
            Self::Internal(detail) => {
                log::error!("API: {detail}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see the sensor's log)".to_owned(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// The API.
pub fn router(state: ApiState) -> Router {
    // The token is checked before anything of the request is read: a client without one
    // gets 401 whatever its query or body.
    let protected = Router::new()
        .route("/api/v1/segments", get(segments))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/live", get(live))
        .route("/api/v1/config", get(get_config).patch(patch_config))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .layer(axum::middleware::from_fn(response_timeout))
        .with_state(state)
}

async fn require_token(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn response_timeout(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if let Ok(response) = tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        response
    } else {
        log::warn!("a request took longer than {REQUEST_TIMEOUT:?} to answer");
        AppError::Timeout.into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(token) = &state.token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(AppError::Unauthorized)
    }
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let config_error = state
        .config_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(error) = config_error {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: configuration: {error} (the last good configuration stays in force)\n"),
        )
            .into_response();
    }
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: capture not attached or store not writable\n",
        )
            .into_response()
    }
}

/// A time range from `last=DUR` or `from=RFC3339&to=RFC3339` (to defaults to now).
#[derive(Debug, Default, Deserialize)]
pub struct RangeQuery {
    pub last: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub iface: Option<String>,
}

impl RangeQuery {
    /// `[from, to)` in ns; errors name the parameter.
    pub fn range(&self, now_ns: u64) -> Result<(u64, u64), AppError> {
        let bad = |name: &str, e: units::UnitError| AppError::BadRequest(format!("{name}: {e}"));
        match (&self.last, &self.from, &self.to) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(AppError::BadRequest(
                "give either last or from/to, not both".into(),
            )),
            (Some(last), None, None) => {
                let from = units::parse_last(last, now_ns).map_err(|e| bad("last", e))?;
                Ok((from, now_ns.saturating_add(1)))
            }
            (None, from, to) => {
                let from = from
                    .as_deref()
                    .map(units::parse_rfc3339)
                    .transpose()
                    .map_err(|e| bad("from", e))?
                    .unwrap_or(0);
                let to = to
                    .as_deref()
                    .map(units::parse_rfc3339)
                    .transpose()
                    .map_err(|e| bad("to", e))?
                    .unwrap_or(now_ns.saturating_add(1));
                if from > to {
                    return Err(AppError::BadRequest("from is after to".into()));
                }
                Ok((from, to))
            }
        }
    }
}

/// A segment as the API lists it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentInfo {
    pub name: String,
    pub first_ns: u64,
    pub last_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

fn load_index(state: &ApiState) -> Result<Index, AppError> {
    Index::load(&state.data_dir)
        .map(Option::unwrap_or_default)
        .map_err(|e| AppError::Internal(format!("reading the index: {e}")))
}

/// Segments overlapping `[from, to)`, the active one included when the writer shares it.
fn overlapping(state: &ApiState, from: u64, to: u64) -> Result<Vec<SegmentRecord>, AppError> {
    if let Some(view) = &state.view {
        let view = view
            .read()
            .map_err(|_| AppError::Internal("store view poisoned".into()))?;
        return Ok(view.overlapping(from, to));
    }
    Ok(load_index(state)?
        .overlapping(from, to)
        .into_iter()
        .cloned()
        .collect())
}

async fn segments(
    State(state): State<ApiState>,
    Query(query): Query<RangeQuery>,
) -> Result<Json<Vec<SegmentInfo>>, AppError> {
    let (from, to) = if query.last.is_none() && query.from.is_none() && query.to.is_none() {
        (0, u64::MAX)
    } else {
        query.range(sys::realtime_ns())?
    };
    let list = overlapping(&state, from, to)?
        .into_iter()
        .map(|r| SegmentInfo {
            name: r.file.clone(),
            first_ns: r.first_ns,
            last_ns: r.last_ns,
            packets: r.packets,
            bytes: r.bytes,
        })
        .collect();
    Ok(Json(list))
}

/// Feeds a blocking writer into a bounded channel of chunks (used from a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    runtime: tokio::runtime::Handle,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let send = tokio::time::timeout(STALL_TIMEOUT, self.tx.send(Ok(buf.to_vec())));
        match self.runtime.block_on(send) {
            Ok(Ok(())) => Ok(buf.len()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn snapshot(
    State(state): State<ApiState>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, AppError> {
    let (from, to) = query.range(sys::realtime_ns())?;
    if let Some(max) = state.max_slice {
        let span = std::time::Duration::from_nanos(to - from);
        if span > max {
            return Err(AppError::BadRequest(format!(
                "slice too large: it spans {} s, this sensor serves at most {} s (--max-slice)",
                span.as_secs(),
                max.as_secs()
            )));
        }
    }
    let interfaces = interfaces(&state, query.iface.as_deref())?;
    let permit = Arc::clone(&state.snapshots)
        .try_acquire_owned()
        .map_err(|_| AppError::Busy("snapshots"))?;
    let segments = overlapping(&state, from, to)?;
    let (tx, rx) = mpsc::channel(8);
    let dir = state.data_dir.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChannelWriter {
            tx: tx.clone(),
            runtime,
        };
        let refs: Vec<&SegmentRecord> = segments.iter().collect();
        if let Err(e) = slice::write_segments(&dir, &refs, from, to, interfaces.as_deref(), &mut out) {
            log::warn!("snapshot [{from}, {to}) ended early: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other("the snapshot could not be completed")));
        }
    });
    let name = format!(
        "podcap-{}-{}.pcapng",
        units::format_utc_compact(from),
        units::format_utc_compact(to)
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pcapng".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

/// The `iface=a,b` parameter, checked against the captured interfaces.
fn interfaces(state: &ApiState, list: Option<&str>) -> Result<Option<Vec<String>>, AppError> {
    let Some(list) = list else { return Ok(None) };
    let names: Vec<String> = list.split(',').map(str::to_owned).collect();
    // An empty list: interfaces come and go (Kubernetes mode), nothing to check against.
    if let Some(unknown) = names
        .iter()
        .find(|n| !state.interfaces.is_empty() && !state.interfaces.contains(n))
    {
        return Err(AppError::BadRequest(format!(
            "iface: unknown interface {unknown:?}"
        )));
    }
    Ok(Some(names))
}

/// Query of `/api/v1/live`.
#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    pub iface: Option<String>,
}

async fn live(State(state): State<ApiState>, Query(query): Query<LiveQuery>) -> Result<Response, AppError> {
    let interfaces = interfaces(&state, query.iface.as_deref())?;
    let permit = Arc::clone(&state.live)
        .try_acquire_owned()
        .map_err(|_| AppError::Busy("live streams"))?;
    let (tx, rx) = mpsc::channel(8);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChannelWriter {
            tx: tx.clone(),
            runtime,
        };
        let mut slicer = slice::Slicer::default();
        let delay = units::duration_ns(LIVE_DELAY);
        let mut cursor = sys::realtime_ns().saturating_sub(delay);
        while !tx.is_closed() && !state.stopping.load(Ordering::Relaxed) && !sys::stop_requested() {
            let to = sys::realtime_ns().saturating_sub(delay).max(cursor);
            let segments = match overlapping(&state, cursor, to) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("live stream ended: {e:?}");
                    break;
                }
            };
            let refs: Vec<&SegmentRecord> = segments.iter().collect();
            if let Err(e) = slicer.write(
                &state.data_dir,
                &refs,
                cursor,
                to,
                interfaces.as_deref(),
                &mut out,
            ) {
                log::debug!("live stream ended: {e}");
                break;
            }
            cursor = to;
            std::thread::sleep(LIVE_POLL);
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-pcapng")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

fn settings(state: &ApiState) -> Result<&RuntimeSettings, AppError> {
    state
        .settings
        .as_deref()
        .ok_or_else(|| AppError::Internal("no runtime settings".into()))
}

async fn get_config(State(state): State<ApiState>) -> Result<Json<SettingsView>, AppError> {
    Ok(Json(settings(&state)?.view()))
}

/// Query of `PATCH /api/v1/config`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigQuery {
    /// Check the change and say what it would retire, without applying it.
    #[serde(default)]
    pub dry_run: bool,
}

async fn patch_config(
    State(state): State<ApiState>,
    Query(query): Query<ConfigQuery>,
    body: axum::body::Bytes,
) -> Result<Json<SettingsView>, AppError> {
    let change: SettingsDoc =
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(format!("config: {e}")))?;
    let settings = settings(&state)?;
    let invalid = |e: SettingsError| match e {
        SettingsError::Persist { .. } => {
            AppError::Internal(format!("{e}: {:?}", std::error::Error::source(&e)))
        }
        other => AppError::BadRequest(other.to_string()),
    };
    if query.dry_run {
        let (max_size, max_time) = settings.check(&change).map_err(invalid)?;
        let mut view = settings.view();
        view.enabled = change.enabled.unwrap_or(view.enabled);
        view.max_size = change.max_size.clone().unwrap_or(view.max_size);
        view.max_time = change.max_time.clone().unwrap_or(view.max_time);
        view.dry_run = Some(true);
        view.would_retire = Some(would_retire(&state, max_size, max_time)?);
        return Ok(Json(view));
    }
    let view = settings.apply_api(&change).map_err(invalid)?;
    log::info!(
        "settings changed through the API: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(Json(view))
}

/// What retention would retire now under `max_size` and `max_time`.
fn would_retire(state: &ApiState, max_size: u64, max_time: std::time::Duration) -> Result<Retired, AppError> {
    let horizon = sys::realtime_ns().saturating_sub(units::duration_ns(max_time));
    let retired = |records: &[SegmentRecord], active_bytes: u64| {
        retention::to_retire(records, active_bytes, max_size, horizon)
            .iter()
            .fold(Retired::default(), |sum, r| Retired {
                segments: sum.segments + 1,
                bytes: sum.bytes.saturating_add(r.bytes),
                packets: sum.packets.saturating_add(r.packets),
            })
    };
    if let Some(view) = &state.view {
        let view = view
            .read()
            .map_err(|_| AppError::Internal("store view poisoned".into()))?;
        let active = view.active.as_ref().map_or(0, |a| a.bytes);
        return Ok(retired(view.index.records(), active));
    }
    Ok(retired(load_index(state)?.records(), 0))
}

async fn metrics(State(state): State<ApiState>) -> Result<Response, AppError> {
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
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Serves `router(state)` on `addr` until `stop` turns true.
pub fn serve(
    addr: SocketAddr,
    mut state: ApiState,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    state.stopping = Arc::clone(&stop);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    std::thread::Builder::new()
        .name("podcap-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                let shutdown = async move {
                    while !stop.load(Ordering::Relaxed) && !sys::stop_requested() {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                };
                if let Err(e) = axum::serve(listener, router(state))
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    log::error!("API server failed: {e}");
                }
            });
        })
}
