//! Kept snapshots over HTTP (`crate::store::kept::snapshots` has their rules): `GET /api/v1/snapshots`
//! lists them, `POST` makes one from a JSON body (the window and selection of a download,
//! a name, an expiry) and answers when it is made, `GET /{name}` is its manifest,
//! `GET /{name}/pcapng` its file (with its SHA-256 in `x-podcap-sha256`; a snapshot
//! holding TLS secrets gives them only with `secrets=true` and the admin token, anyone
//! else gets the file without its Decryption Secrets Blocks and that file's SHA-256),
//! `DELETE /{name}` deletes it.
use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use podcap_api::snapshots::{SnapshotListing, SnapshotManifest, SnapshotRequest};
use tokio::sync::mpsc;

use super::{
    blocking,
    slices::{check_span, pcapng_download, ChannelWriter, RangeQuery, SliceQuery},
    wire, ApiState, AppError,
};
use crate::{
    store::kept::snapshots::{self, Manifest, SelectionDoc, SnapshotError},
    sys, units,
};

fn refused(error: &SnapshotError) -> AppError {
    let status = match error {
        SnapshotError::BadName(_) => StatusCode::BAD_REQUEST,
        SnapshotError::Exists(_) | SnapshotError::Damaged { .. } => StatusCode::CONFLICT,
        SnapshotError::NotFound(_) => StatusCode::NOT_FOUND,
        SnapshotError::TooLarge { .. } => StatusCode::INSUFFICIENT_STORAGE,
        SnapshotError::Write { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        SnapshotError::Write { .. } | SnapshotError::Io(_) => {
            return AppError::Internal(format!(
                "snapshots: {error}: {:?}",
                std::error::Error::source(&error)
            ));
        }
    };
    let mut message = error.to_string();
    if let Some(source) = std::error::Error::source(error) {
        message = format!("{message}: {source}");
    }
    AppError::Refused(status, message)
}

/// Blocking snapshot work off the runtime's threads.
fn no_query(raw: Option<&str>) -> Result<(), AppError> {
    match raw.filter(|q| !q.is_empty()) {
        None => Ok(()),
        Some(_) => Err(AppError::BadRequest(
            "this endpoint takes no query parameters (a snapshot's window and selection are fixed when it is made)"
                .into(),
        )),
    }
}

pub(super) async fn list(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SnapshotListing>, AppError> {
    no_query(raw.as_deref())?;
    let store = Arc::clone(&state.snapshots);
    Ok(Json(wire::snapshot_listing(
        blocking(move || store.list(sys::realtime_ns()), refused).await?,
    )))
}

pub(super) async fn create(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, AppError> {
    no_query(raw.as_deref())?;
    let store = Arc::clone(&state.snapshots);
    let asked: SnapshotRequest = super::json_body(&body, "the request body")?;
    snapshots::check_name(&asked.name).map_err(|e| refused(&e))?;
    let now = sys::realtime_ns();
    let query = SliceQuery {
        range: RangeQuery {
            last: asked.last,
            from: asked.from,
            to: asked.to,
            iface: asked.iface.clone(),
        },
        filter: asked.filter.clone(),
        pod: asked.pod.clone(),
        namespaces: asked.namespaces.clone(),
        secrets: None,
    };
    if query.range.last.is_none() && query.range.from.is_none() {
        return Err(AppError::BadRequest(
            "give the window: last (\"10m\") or from and to (RFC 3339)".into(),
        ));
    }
    let (from, to) = query.range.range(now)?;
    check_span(&state, from, to)?;
    let selection = query.selection(&state)?;
    // A kept snapshot is immutable: it holds every packet received before the request,
    // and its window ends there.
    let (to, clamped) = super::slices::until_request(&state, (from, to), now).await?;
    let expires_ns = asked
        .expire
        .as_deref()
        .map(|text| {
            units::parse_duration(text)
                .map(|d| now.saturating_add(units::duration_ns(d)))
                .map_err(|e| AppError::BadRequest(format!("expire: {e}")))
        })
        .transpose()?;
    let request = snapshots::Request {
        name: asked.name,
        from_ns: from,
        to_ns: to,
        selection,
        described: SelectionDoc {
            iface: asked
                .iface
                .map(|list| list.split(',').map(str::to_owned).collect()),
            filter: asked.filter.filter(|f| !f.trim().is_empty()),
            pod: asked.pod,
            namespaces: asked.namespaces,
        },
        expires_ns,
        live: Vec::new(),
    };
    let permit = Arc::clone(&state.slice_permits)
        .try_acquire_owned()
        .map_err(|_| AppError::Busy("slices"))?;
    let (segments, live) = super::slices::overlapping_and_live(&state, from, to);
    let request = snapshots::Request { live, ..request };
    let data_dir = state.data_dir.clone();
    let manifest: Manifest = blocking(
        move || {
            let _permit = permit;
            store.create(&data_dir, &segments, &request, now)
        },
        refused,
    )
    .await?;
    let mut response = (StatusCode::CREATED, Json(wire::manifest(manifest))).into_response();
    if let Some((name, value)) = clamped {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

pub(super) async fn manifest(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SnapshotManifest>, AppError> {
    no_query(raw.as_deref())?;
    let store = Arc::clone(&state.snapshots);
    Ok(Json(wire::manifest(
        blocking(move || store.get(&name, sys::realtime_ns()), refused).await?,
    )))
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, AppError> {
    no_query(raw.as_deref())?;
    let store = Arc::clone(&state.snapshots);
    blocking(move || store.delete(&name), refused).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether a snapshot's download asks for its secrets: `secrets=` is its only parameter
/// (parsed as a download's: decoded, once, true or false).
fn asks_for_secrets(raw: Option<&str>) -> Result<bool, AppError> {
    let query = SliceQuery::parse(raw, true)?;
    let range = &query.range;
    let other = range.last.is_some()
        || range.from.is_some()
        || range.to.is_some()
        || range.iface.is_some()
        || query.filter.is_some()
        || query.pod.is_some()
        || !query.namespaces.is_empty();
    if other {
        return Err(AppError::BadRequest(
            "this endpoint takes only secrets= (a snapshot's window and selection are fixed when it is made)"
                .into(),
        ));
    }
    query.wants_secrets()
}

pub(super) async fn download(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let asked = asks_for_secrets(raw.as_deref())?;
    let store = Arc::clone(&state.snapshots);
    let (mut file, manifest) = {
        let name = name.clone();
        blocking(move || store.open_file(&name, sys::realtime_ns()), refused).await?
    };
    // The file as made goes only to the admin who asked; anyone else gets it with every
    // Decryption Secrets Block left out, whatever the manifest says it holds (a file that
    // holds blocks its manifest does not count then fails the digest, never leaks them).
    let whole = asked && super::authorize(&state, &headers, super::Role::Admin).is_ok();
    let digest = if whole || manifest.secrets == 0 {
        Some(manifest.sha256)
    } else {
        manifest.sha256_without_secrets
    };
    let said = (asked && manifest.secrets > 0).then_some(if whole { "included" } else { "withheld" });
    let (tx, rx) = mpsc::channel(8);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            runtime,
        };
        let sent = if whole {
            std::io::copy(&mut file, &mut out).map(|_| ())
        } else {
            snapshots::copy_without_secrets(&mut file, &mut out)
        };
        if let Err(e) = sent {
            log::debug!("snapshot download ended early: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other("the snapshot could not be sent whole")));
        }
    });
    let extra = digest
        .map(|digest| (header::HeaderName::from_static("x-podcap-sha256"), digest))
        .into_iter()
        .chain(super::slices::secrets_header(said))
        .collect();
    Ok(pcapng_download(&format!("{name}.pcapng"), extra, rx))
}
