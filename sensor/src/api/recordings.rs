//! Recording jobs over HTTP (`crate::store::kept::recordings` has their rules): `GET /api/v1/recordings`
//! lists the jobs and where each stands, `POST` adds one (a JSON job), `DELETE /{name}`
//! stops one and deletes what it recorded, `GET /{name}/pcapng` downloads what it recorded
//! (every iteration, or the range of `last`/`from`/`to`), with any selection of a download.
use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use tokio::sync::mpsc;

use super::{
    blocking,
    slices::{pcapng_download, ChannelWriter, SliceQuery},
    wire, ApiState, AppError,
};
use crate::{
    store::kept::recordings::RecordingError,
    store::{index::SegmentRecord, slice::Slicer},
    sys,
};
use podcap_api::recordings::{RecordingJob, RecordingListing};

fn refused(error: &RecordingError) -> AppError {
    let status = match error {
        RecordingError::Name(_) | RecordingError::Invalid { .. } | RecordingError::Schedule(_) => {
            StatusCode::BAD_REQUEST
        }
        RecordingError::Exists(_) => StatusCode::CONFLICT,
        RecordingError::NotFound(_) => StatusCode::NOT_FOUND,
        RecordingError::Io(e) => return AppError::Internal(format!("recordings: {e}")),
    };
    AppError::Refused(status, error.to_string())
}

pub(super) async fn list(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<RecordingListing>, AppError> {
    if raw.is_some_and(|q| !q.is_empty()) {
        return Err(AppError::BadRequest(
            "this endpoint takes no query parameters".into(),
        ));
    }
    let jobs = Arc::clone(&state.recordings);
    let listing = blocking(move || Ok(jobs.list(sys::realtime_ns())), refused).await?;
    Ok(Json(wire::recording_listing(listing)?))
}

pub(super) async fn create(State(state): State<ApiState>, body: Bytes) -> Result<Response, AppError> {
    let jobs = Arc::clone(&state.recordings);
    let doc: RecordingJob = super::json_body(&body, "the request body")?;
    if doc.created.is_some() || doc.managed_by.is_some() {
        return Err(AppError::BadRequest(
            "created, managedBy: set by the sensor".into(),
        ));
    }
    let doc = wire::job_doc(doc);
    let made = blocking(move || jobs.create(doc, sys::realtime_ns()), refused).await?;
    Ok((StatusCode::CREATED, Json(wire::job(made))).into_response())
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let jobs = Arc::clone(&state.recordings);
    blocking(move || jobs.delete(&name), refused).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn download(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let jobs = Arc::clone(&state.recordings);
    let query = SliceQuery::parse(raw.as_deref(), true)?;
    // A recording keeps the secrets of the sessions it holds; they go out as from the
    // store's window: asked for, to the admin only.
    let (secrets, said) = super::slices::secrets_allowed(&state, &headers, query.wants_secrets()?);
    let (from, to) = if query.range.last.is_none() && query.range.from.is_none() && query.range.to.is_none() {
        (0, u64::MAX)
    } else {
        query.range.range(sys::realtime_ns())?
    };
    let selection = query.selection(&state)?;
    let iterations = {
        let name = name.clone();
        blocking(move || jobs.slices(&name, from, to), refused).await?
    };
    let permit = Arc::clone(&state.slice_permits)
        .try_acquire_owned()
        .map_err(|_| AppError::Busy("slices"))?;
    let (tx, rx) = mpsc::channel(8);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChannelWriter {
            tx: tx.clone(),
            runtime,
        };
        // Iterations are apart in time and in order: one slicer makes one stream of them.
        let mut slicer = Slicer::default().secrets(secrets);
        for (dir, records) in &iterations {
            let refs: Vec<&SegmentRecord> = records.iter().collect();
            if let Err(e) = slicer.write(dir, &refs, from, to, &selection, &mut out) {
                log::debug!("recording download ended early: {e}");
                let _ = tx.blocking_send(Err(std::io::Error::other(
                    "the recording could not be sent whole",
                )));
                return;
            }
        }
        if iterations.is_empty() {
            // Still a valid (empty) pcapng.
            let _ = slicer.write(std::path::Path::new("."), &[], from, to, &selection, &mut out);
        }
    });
    Ok(pcapng_download(
        &format!("podcap-recording-{name}.pcapng"),
        super::slices::secrets_header(said).into_iter().collect(),
        rx,
    ))
}
