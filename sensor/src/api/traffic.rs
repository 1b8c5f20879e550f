//! What the API itself served, for `/metrics`: requests by route and status, and the
//! bytes of each download route's bodies.
//!
//! Rules: a request is counted under the route template it matched
//! (`/api/v1/snapshots/{name}`), never its raw path, so a client cannot make a series per
//! name it tries; one that matched no route is counted under [`UNMATCHED`]. It is counted
//! once its response head is made, whatever the status: a 401 from the token check, a 408
//! from the body's deadline and a 503 from the response timeout are requests too. Bytes
//! are counted as each piece of a download's body is handed to the connection, so a live
//! stream's bytes show while it runs (and a body the client stops reading counts only what
//! was handed on).
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, PoisonError,
    },
};

use axum::{
    body::Body,
    extract::{MatchedPath, State},
    response::Response,
};
use http_body_util::BodyExt as _;

use super::ApiState;

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// The routes whose bodies are downloads (pcapng), counted in bytes.
const DOWNLOAD_ROUTES: [&str; 4] = [
    "/api/v1/snapshot",
    "/api/v1/live",
    "/api/v1/snapshots/{name}/pcapng",
    "/api/v1/recordings/{name}/pcapng",
];

/// The API's own counters, kept for the sensor's life.
#[derive(Debug, Default)]
pub struct ApiTraffic {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    served_bytes: Mutex<BTreeMap<&'static str, Arc<AtomicU64>>>,
}

impl ApiTraffic {
    /// Requests so far: (route, status) and how many.
    #[must_use]
    pub fn requests(&self) -> Vec<((String, u16), u64)> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests
            .iter()
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }

    /// Bytes of download bodies handed to connections so far, by route.
    #[must_use]
    pub fn served_bytes(&self) -> Vec<(&'static str, u64)> {
        let served = self.served_bytes.lock().unwrap_or_else(PoisonError::into_inner);
        // Relaxed: a statistic read on its own; nothing is published through it.
        served
            .iter()
            .map(|(route, bytes)| (*route, bytes.load(Relaxed)))
            .collect()
    }

    fn count_request(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests.entry((route.to_owned(), status)).or_default() += 1;
    }

    /// The counter of `route`'s bytes, if it is a download route.
    fn download_counter(&self, route: &str) -> Option<Arc<AtomicU64>> {
        let route = DOWNLOAD_ROUTES.into_iter().find(|r| *r == route)?;
        let mut served = self.served_bytes.lock().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(served.entry(route).or_default()))
    }
}

/// Counts the request under its route template once its response head is made, and a
/// download's body bytes as they are handed on (the rules above).
pub(super) async fn count_requests(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    state.traffic.count_request(&route, response.status().as_u16());
    match state.traffic.download_counter(&route) {
        None => response,
        Some(bytes) => response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    // Relaxed: a statistic; the scrape reads it on its own.
                    bytes.fetch_add(data.len() as u64, Relaxed);
                }
                frame
            }))
        }),
    }
}
