//! The sensor's HTTP API (axum): health, the segment list, time slices of the store
//! (`/api/v1/snapshot`), kept snapshots (`/api/v1/snapshots`), the recording settings,
//! metrics.
//!
//! Rules:
//! - `router(state)` is the whole API; `serve` binds it (`server.rs`: connection limits,
//!   timeouts, TLS, stopping). Every endpoint but `/healthz` and `/readyz` requires a
//!   bearer token when one is configured (compared in constant time by `subtle`), checked before
//!   anything else of the request is read. Two roles: the read token (`--token-file`)
//!   reads (segments, slices, snapshots, live, status, metrics, the settings); changing
//!   the settings, making and deleting snapshots need the admin token (`--admin-token-file`), which also reads. With a read
//!   token and no admin token, nobody can change the settings through the API. Without
//!   any token (only on loopback) everything is open. A sensor refuses to listen beyond
//!   loopback without a token.
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
//! - A request's body (every one the API takes is a small JSON document) must arrive whole
//!   within `ApiState::body_timeout` ([`BODY_TIMEOUT`], as the head must within the
//!   server's header timeout) and be at most [`MAX_BODY`] bytes: a client that sends a
//!   head and then stalls gets a 408 and its connection is not held. It is read after the
//!   token is checked.
//! - Every handler must produce its response head within `REQUEST_TIMEOUT` (bodies
//!   stream on without it); making a snapshot, which answers when it is made, within
//!   `CREATE_TIMEOUT` (the snapshot is still made if the client goes away).
//! - Query parameters a handler does not know are a 400, like bad values.
//! - Every request body, query, answer and error body is a type of the contract crate
//!   (`podcap-api`); the handlers answer with those (`wire.rs` turns the sensor's own into
//!   them), never with a JSON document of their own. `/api/v1/openapi.json` is the
//!   document generated from them; schemathesis checks the API answers as it says.
//! - The role each route needs (none, read, admin) is `podcap_api::ROUTES`'s, looked up by
//!   the route a request matched; a route the table does not know needs the admin token.
//!   [`routes`] is every route the router has (a test holds it to the table).
//! - Every request is counted by the route it matched and its status, and downloads by
//!   the bytes they served (`traffic.rs`), for `/metrics`.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::shutdown::Shutdown;
use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, MethodRouter},
    Json, Router,
};

mod config;
mod health;
mod metrics;
mod recordings;
pub mod server;
mod slices;
mod snapshots;
mod state;
mod traffic;
mod wire;

pub use podcap_api::{settings::ConfigQuery, Role, Segment as SegmentInfo};

pub use self::{
    slices::{RangeQuery, SliceQuery},
    state::{ApiState, ApiStateBuilder, ApiStateError, DEFAULT_KEPT_BUDGET},
    traffic::{ApiTraffic, UNMATCHED},
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
/// Time to make a snapshot and answer.
pub const CREATE_TIMEOUT: Duration = Duration::from_mins(15);
/// Time a client has to send a request's whole body once its head is in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body (axum's own limit for JSON).
pub const MAX_BODY: usize = 2 << 20;

/// An error for the client.
#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    /// Any other refusal, with its status and message for the client.
    Refused(StatusCode, String),
    Unauthorized,
    /// A valid token of a role that may not do this.
    Forbidden(&'static str),
    Busy(&'static str),
    Timeout,
    Internal(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::Refused(status, m) => (status, m),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required".to_owned(),
            ),
            Self::Forbidden(what) => (StatusCode::FORBIDDEN, what.to_owned()),
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
        (status, Json(podcap_api::ErrorBody { error: message })).into_response()
    }
}

/// Every route of the API: its method, its path template and its handler. Each must be in
/// `podcap_api::ROUTES` (the role table); `router` serves exactly these.
#[must_use]
pub fn routes() -> Vec<(podcap_api::routes::Method, &'static str, MethodRouter<ApiState>)> {
    use axum::routing::{delete, patch, post};
    use podcap_api::routes::Method::{Delete, Get, Patch, Post};
    vec![
        (Get, "/healthz", get(|| async { "ok\n" })),
        (Get, "/readyz", get(health::readyz)),
        (Get, "/api/v1/openapi.json", get(openapi)),
        (Get, "/api/v1/segments", get(slices::segments)),
        (Get, "/api/v1/snapshot", get(slices::snapshot)),
        (Get, "/api/v1/live", get(slices::live)),
        (Get, "/api/v1/config", get(config::get_config)),
        (Patch, "/api/v1/config", patch(config::patch_config)),
        (Get, "/api/v1/status", get(health::status)),
        (Get, "/api/v1/snapshots", get(snapshots::list)),
        (Post, "/api/v1/snapshots", post(snapshots::create)),
        (Get, "/api/v1/snapshots/{name}", get(snapshots::manifest)),
        (Delete, "/api/v1/snapshots/{name}", delete(snapshots::delete)),
        (Get, "/api/v1/snapshots/{name}/pcapng", get(snapshots::download)),
        (Get, "/api/v1/recordings", get(recordings::list)),
        (Post, "/api/v1/recordings", post(recordings::create)),
        (Delete, "/api/v1/recordings/{name}", delete(recordings::delete)),
        (Get, "/api/v1/recordings/{name}/pcapng", get(recordings::download)),
        (Get, "/metrics", get(metrics::metrics)),
    ]
}

/// The API.
pub fn router(state: ApiState) -> Router {
    // The token is checked before anything of the request is read: a client without one
    // gets 401 whatever its query or body. Open routes skip the check (and have no body).
    let mut open = Router::new();
    let mut protected = Router::new();
    for (method, path, handler) in routes() {
        let role = podcap_api::routes::role_of(method.as_str(), path);
        if role == Some(Role::Open) {
            open = open.route(path, handler);
        } else {
            protected = protected.route(path, handler);
        }
    }
    let protected = protected
        // The last layer runs first: the token, then the body.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), body_in_time))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token));
    open.merge(protected)
        .layer(axum::middleware::from_fn(response_timeout))
        // Outermost: every answer is counted, the token check's and the timeouts' too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            traffic::count_requests,
        ))
        .with_state(state)
}

/// Runs blocking store work off the runtime's threads; its error becomes the client's
/// answer through `refuse`.
pub(super) async fn blocking<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
    refuse: fn(&E) -> AppError,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::Internal(format!("a blocking task failed: {e}")))?
        .map_err(|e| refuse(&e))
}

/// A request's JSON body read into `T` (one of the contract's request bodies): it must be
/// a JSON object (serde would also read a struct from an array), and anything else about
/// it that is wrong is a 400 saying `what` it was.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, AppError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("{what}: {e}")))?;
    if !value.is_object() {
        return Err(AppError::BadRequest(format!("{what}: a JSON object is expected")));
    }
    serde_json::from_value(value).map_err(|e| AppError::BadRequest(format!("{what}: {e}")))
}

/// A query string read into `T`: any problem with it (an unknown parameter, a value of the
/// wrong kind) is a 400 naming it, as JSON like every error of the API.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| AppError::BadRequest(rejection.body_text()))
    }
}

/// The API described for tools: `OpenAPI` 3.1, generated from the contract's types
/// (`podcap_api::openapi`; schemathesis runs against it in `cargo xtask test`).
#[must_use]
pub fn openapi_json() -> &'static str {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(podcap_api::openapi::json);
    &DOCUMENT
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

async fn require_token(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The role table's; a route it does not know needs the admin token.
    let role = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|path| podcap_api::routes::role_of(request.method().as_str(), path.as_str()))
        .unwrap_or(Role::Admin);
    match authorize(&state, request.headers(), role) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Reads the request's body whole within `state.body_timeout` (see the rules), then hands
/// the request on with it.
async fn body_in_time(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::body::HttpBody;
    if request.body().size_hint().exact() == Some(0) {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return AppError::Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request's body is larger than {MAX_BODY} bytes"),
        )
        .into_response();
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Ok(Err(e)) => AppError::BadRequest(format!(
            "the request's body could not be read (at most {MAX_BODY} bytes): {e}"
        ))
        .into_response(),
        Err(_) => {
            log::info!(
                "API: {} {}: the body did not arrive within {:?}; refused",
                parts.method,
                parts.uri.path(),
                state.body_timeout
            );
            AppError::Refused(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request's body did not arrive within {:?}",
                    state.body_timeout
                ),
            )
            .into_response()
        }
    }
}

async fn response_timeout(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let limit = if request.method() == axum::http::Method::POST && request.uri().path() == "/api/v1/snapshots"
    {
        CREATE_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    if let Ok(response) = tokio::time::timeout(limit, next.run(request)).await {
        response
    } else {
        log::warn!("a request took longer than {limit:?} to answer");
        AppError::Timeout.into_response()
    }
}

pub(super) fn authorize(state: &ApiState, headers: &HeaderMap, role: Role) -> Result<(), AppError> {
    if state.token.is_none() && state.admin_token.is_none() {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    let matches = |token: &Option<Arc<str>>| {
        token
            .as_ref()
            .is_some_and(|t| bool::from(subtle::ConstantTimeEq::ct_eq(given, t.as_bytes())))
    };
    if matches(&state.admin_token) {
        return Ok(());
    }
    match (matches(&state.token), role) {
        (_, Role::Open) | (true, Role::Read) => Ok(()),
        (true, Role::Admin) => Err(AppError::Forbidden(
            "this changes the sensor (its settings, its snapshots) and needs the admin token (the sensor's --admin-token-file)",
        )),
        (false, _) => Err(AppError::Unauthorized),
    }
}

/// Serves `router(state)` on `addr` (TLS with `tls`) until a stop is requested, on a thread
/// of its own (rules in `server.rs`).
pub fn serve(
    addr: SocketAddr,
    mut state: ApiState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    state.stopping = stop.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    std::thread::Builder::new()
        .name("podcap-api".into())
        .spawn(move || {
            runtime.block_on(server::run(
                listener,
                router(state),
                tls,
                server::ServerLimits::default(),
                stop,
            ));
        })
}

#[cfg(test)]
mod tests;
