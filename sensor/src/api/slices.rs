//! The store's contents over HTTP: the segment list, time-sliced snapshots and the live
//! stream (their rules are the module rules of `api`).
use std::sync::Arc;

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    Json,
};
use podcap_api::Segment;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{ApiState, AppError, Params, LIVE_DELAY, LIVE_POLL, STALL_TIMEOUT};
use crate::{
    store::{
        index::SegmentRecord,
        slice::{self, Selection},
    },
    sys, units,
};

/// A time range from `last=DUR` or `from=RFC3339&to=RFC3339` (to defaults to now).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// A window's end as "until the request" (`store/flush.rs`): a window reaching into the
/// present waits for the writer to write what it had received when the request arrived
/// (`now`); one reaching past the request ends at it. A window that starts after the
/// request is refused. Returns the end, and the header that says it was cut, if it was.
pub(super) async fn until_request(
    state: &ApiState,
    (from, to): (u64, u64),
    now: u64,
) -> Result<(u64, Option<(header::HeaderName, String)>), AppError> {
    if from > now {
        return Err(AppError::BadRequest(format!(
            "from: {} is after this sensor's clock ({}): nothing is recorded there yet",
            units::format_rfc3339(from),
            units::format_rfc3339(now)
        )));
    }
    let reach = units::duration_ns(crate::store::flush::FLUSH_REACH);
    if to > now.saturating_sub(reach) {
        let gate = Arc::clone(&state.flush);
        let flushed = tokio::task::spawn_blocking(move || gate.flush(crate::store::flush::FLUSH_WAIT))
            .await
            .unwrap_or(false);
        if !flushed {
            log::warn!(
                "the writer did not flush within {:?}: a window until now gets what is on disk",
                crate::store::flush::FLUSH_WAIT
            );
        }
    }
    // `[from, to)`: the request's own nanosecond is in the window.
    let end = now.saturating_add(1);
    if to <= end {
        return Ok((to, None));
    }
    Ok((
        end,
        Some((
            header::HeaderName::from_static("x-podcap-window-clamped"),
            format!("to={}", units::format_rfc3339(now)),
        )),
    ))
}

/// The query of a download: a time range and what it selects (`store::select` has the
/// rules): `last` or `from`/`to`, `iface=a,b`, `filter=EXPR`, `pod=REGEX`, `namespace=NS`
/// (repeatable), `secrets=true|false` (a download only: the TLS secrets of the sessions it
/// delivers, for the admin token). Every other parameter, or one given twice, is a 400
/// naming it.
#[derive(Debug, Default)]
pub struct SliceQuery {
    pub range: RangeQuery,
    pub filter: Option<String>,
    pub pod: Option<String>,
    pub namespaces: Vec<String>,
    pub secrets: Option<String>,
}

impl SliceQuery {
    /// Parses a raw query string; `ranged`: whether `last`, `from` and `to` belong here.
    pub fn parse(raw: Option<&str>, ranged: bool) -> Result<Self, AppError> {
        let mut query = Self::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let value = value.into_owned();
            let slot = match key.as_ref() {
                "last" if ranged => &mut query.range.last,
                "from" if ranged => &mut query.range.from,
                "to" if ranged => &mut query.range.to,
                "iface" => &mut query.range.iface,
                "filter" => &mut query.filter,
                "pod" => &mut query.pod,
                "secrets" if ranged => &mut query.secrets,
                "namespace" => {
                    query.namespaces.push(value);
                    continue;
                }
                other => return Err(AppError::BadRequest(format!("unknown parameter {other:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(AppError::BadRequest(format!("{key}: given twice")));
            }
        }
        Ok(query)
    }

    /// Whether the TLS secrets are asked for (`secrets=true`).
    pub fn wants_secrets(&self) -> Result<bool, AppError> {
        match self.secrets.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(AppError::BadRequest(format!(
                "secrets: {other:?} is neither true nor false"
            ))),
        }
    }

    /// The selection it asks for, compiled; errors name the parameter.
    pub fn selection(&self, state: &ApiState) -> Result<Selection, AppError> {
        let pod = self
            .pod
            .as_deref()
            .map(|text| regex::Regex::new(text).map_err(|e| AppError::BadRequest(format!("pod: {e}"))))
            .transpose()?;
        let filter = self
            .filter
            .as_deref()
            .filter(|text| !text.trim().is_empty())
            .map(|text| {
                crate::filter::Filter::compile(text, 262_144)
                    .map(Arc::new)
                    .map_err(|e| AppError::BadRequest(format!("filter: {e}")))
            })
            .transpose()?;
        Ok(Selection {
            interfaces: interfaces(state, self.range.iface.as_deref())?,
            pod,
            namespaces: self.namespaces.clone(),
            filter,
        })
    }
}

/// The store as the writer last published it. A poisoned lock is read through, as the
/// writer itself writes through it: `/metrics` and status stay answerable.
pub(super) fn read_view(state: &ApiState) -> std::sync::RwLockReadGuard<'_, crate::store::StoreView> {
    state
        .view
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Segments overlapping `[from, to)` (the active one included) and, when
/// they hold an unfinished segment, what its interfaces counted since their last
/// statistics blocks that segment's readable part holds: the counters now minus those the
/// view names. Both come from one look at the view, so no block is counted twice or
/// missed; a window inside the active segment gets statistics blocks too.
pub(super) fn overlapping_and_live(
    state: &ApiState,
    from: u64,
    to: u64,
) -> (Vec<SegmentRecord>, Vec<slice::LiveStatistics>) {
    let view = read_view(state);
    let segments = view.overlapping(from, to);
    if !view
        .unfinished()
        .any(|unfinished| segments.iter().any(|s| s.seq == unfinished.seq))
    {
        return (segments, Vec::new());
    }
    let now_ns = sys::realtime_ns();
    let live = view
        .active_interfaces
        .iter()
        .map(|interface| {
            let now = state.stats.snapshot(interface.slot as usize);
            let since = interface.since;
            (
                interface.name.clone(),
                crate::pcapng::InterfaceStatistics {
                    start_ns: since.end_ns,
                    end_ns: now_ns,
                    received: now.interface_received().saturating_sub(since.received),
                    kernel_drops: now.kernel_drops.saturating_sub(since.kernel_drops),
                    sensor_drops: now.sensor_drops().saturating_sub(since.sensor_drops),
                },
            )
        })
        .collect();
    (segments, live)
}

/// Segments overlapping `[from, to)`, the active one included.
pub(super) fn overlapping(state: &ApiState, from: u64, to: u64) -> Vec<SegmentRecord> {
    read_view(state).overlapping(from, to)
}

pub(super) async fn segments(
    State(state): State<ApiState>,
    Params(query): Params<RangeQuery>,
) -> Result<Json<Vec<Segment>>, AppError> {
    let (from, to) = if query.last.is_none() && query.from.is_none() && query.to.is_none() {
        (0, u64::MAX)
    } else {
        query.range(sys::realtime_ns())?
    };
    let list = overlapping(&state, from, to)
        .into_iter()
        .map(|r| Segment {
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
pub(super) struct ChannelWriter {
    pub(super) tx: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    pub(super) runtime: tokio::runtime::Handle,
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

/// Whether a download asked for the TLS secrets gets them: only with the admin token (or
/// no token at all, on loopback). Withheld, the answer says so when this sensor collects
/// secrets (`x-podcap-secrets: withheld`).
pub(super) fn secrets_allowed(
    state: &ApiState,
    headers: &HeaderMap,
    asked: bool,
) -> (slice::Secrets, Option<&'static str>) {
    if !asked {
        return (slice::Secrets::LeftOut, None);
    }
    if super::authorize(state, headers, super::Role::Admin).is_ok() {
        return (slice::Secrets::Delivered, Some("included"));
    }
    (slice::Secrets::LeftOut, state.tls.is_some().then_some("withheld"))
}

/// The `x-podcap-secrets` header saying what became of the secrets asked for.
pub(super) fn secrets_header(said: Option<&'static str>) -> Option<(header::HeaderName, String)> {
    said.map(|said| {
        (
            header::HeaderName::from_static("x-podcap-secrets"),
            said.to_owned(),
        )
    })
}

pub(super) async fn snapshot(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let query = SliceQuery::parse(raw.as_deref(), true)?;
    let now = sys::realtime_ns();
    let (from, to) = query.range.range(now)?;
    check_span(&state, from, to)?;
    let (to, clamped) = until_request(&state, (from, to), now).await?;
    let selection = query.selection(&state)?;
    let (secrets, said) = secrets_allowed(&state, &headers, query.wants_secrets()?);
    let permit = Arc::clone(&state.slice_permits)
        .try_acquire_owned()
        .map_err(|_| AppError::Busy("snapshots"))?;
    let (segments, live) = overlapping_and_live(&state, from, to);
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
        if let Err(e) = slice::write_segments(&dir, &refs, (from, to), &selection, (secrets, &live), &mut out)
        {
            log::warn!("snapshot [{from}, {to}) ended early: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other("the snapshot could not be completed")));
        }
    });
    let name = format!(
        "podcap-{}-{}.pcapng",
        units::format_utc_compact(from),
        units::format_utc_compact(to)
    );
    Ok(pcapng_download(
        &name,
        secrets_header(said).into_iter().chain(clamped).collect(),
        rx,
    ))
}

/// The chunks of a pcapng stream as a download named `file_name`, with `extra` headers.
pub(super) fn pcapng_download(
    file_name: &str,
    extra: Vec<(header::HeaderName, String)>,
    rx: mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/x-pcapng".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response();
    for (name, value) in extra {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Refuses a range longer than `--max-slice`.
pub(super) fn check_span(state: &ApiState, from: u64, to: u64) -> Result<(), AppError> {
    if let Some(max) = state.max_slice {
        let span = std::time::Duration::from_nanos(to.saturating_sub(from));
        if span > max {
            return Err(AppError::BadRequest(format!(
                "slice too large: it spans {} s, this sensor serves at most {} s (--max-slice)",
                span.as_secs(),
                max.as_secs()
            )));
        }
    }
    Ok(())
}

/// The `iface=a,b` parameter, checked against the captured interfaces.
fn interfaces(state: &ApiState, list: Option<&str>) -> Result<Option<Vec<String>>, AppError> {
    let Some(list) = list else { return Ok(None) };
    // An empty list: interfaces come and go (Kubernetes mode), nothing to check against.
    if state.interfaces.is_empty() {
        return Ok(Some(list.split(',').map(str::to_owned).collect()));
    }
    // A name as a merged file shows it (`SENSOR/eth0`) is this sensor's `eth0`.
    list.split(',')
        .map(|name| {
            let known = |n: &str| state.interfaces.iter().any(|i| i == n);
            match name.rsplit_once('/') {
                _ if known(name) => Ok(name.to_owned()),
                Some((_, own)) if known(own) => Ok(own.to_owned()),
                _ => Err(AppError::BadRequest(format!(
                    "iface: unknown interface {name:?}; this sensor records {}",
                    state.interfaces.join(", ")
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

pub(super) async fn live(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let selection = SliceQuery::parse(raw.as_deref(), false)?.selection(&state)?;
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
        while !tx.is_closed() && !state.stopping.requested() {
            let to = sys::realtime_ns().saturating_sub(delay).max(cursor);
            let segments = overlapping(&state, cursor, to);
            let refs: Vec<&SegmentRecord> = segments.iter().collect();
            if let Err(e) = slicer.write(&state.data_dir, &refs, cursor, to, &selection, &mut out) {
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
