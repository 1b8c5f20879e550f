//! The API's `OpenAPI` document, generated (utoipa) from the types of this crate: every
//! operation below is declared on a function with no body of its own, next to the types it
//! takes and answers, and [`document`] gathers them with the schemas. The sensor serves it
//! at `/api/v1/openapi.json`; schemathesis tests the sensor against it (`cargo xtask test`);
//! a test here checks it names exactly the routes of [`crate::routes::ROUTES`], with the
//! role of each in its security.
#![expect(
    dead_code,
    reason = "the operations are functions only utoipa's derive reads: they have no body to call"
)]
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        OpenApi as Document,
    },
    Modify, OpenApi,
};

use crate::{
    error::ErrorBody,
    recordings::{RecordingJob, RecordingListing},
    segments::{RangeQuery, SecretsQuery, Segment, SelectionQuery},
    settings::{ConfigQuery, Settings, SettingsChange},
    snapshots::{SnapshotListing, SnapshotManifest, SnapshotRequest},
    status::Status,
};

/// The document, as JSON.
#[must_use]
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The document as the sensor serves it.
#[must_use]
pub fn json() -> String {
    // A document of plain structures always serializes.
    document().to_pretty_json().unwrap_or_default()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "podcap sensor API",
        version = "1",
        description = "One podcap sensor's store over HTTP: health, status, the segment list, time slices as pcapng, snapshots kept past the rolling window, the live stream, the recording settings, recording jobs and metrics. Every endpoint but /healthz, /readyz and this document needs a bearer token when the sensor has one: the read token reads, only the admin token changes the settings and makes or deletes snapshots and recording jobs. The token is checked before anything else of a request is read.",
        license(name = "Apache-2.0")
    ),
    paths(
        healthz, readyz, openapi, status, segments, snapshot, live, get_config, change_config, metrics,
        list_snapshots, create_snapshot, get_snapshot, delete_snapshot, download_snapshot,
        list_recordings, create_recording, delete_recording, download_recording
    ),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", security(()),
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
fn healthz() {}

/// Readiness, with the reason when not ready.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", security(()),
    responses(
        (status = 200, description = "Recording and able to write", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready, and why", body = String, content_type = "text/plain"),
    ))]
fn readyz() {}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi", security(()),
    responses((status = 200, description = "This document", body = Object)))]
fn openapi() {}

/// What the sensor is doing and why.
#[utoipa::path(get, path = "/api/v1/status", operation_id = "status",
    responses(
        (status = 200, description = "The sensor's state", body = Status),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn status() {}

/// The segments of the store (all, or those overlapping the range).
#[utoipa::path(get, path = "/api/v1/segments", operation_id = "segments", params(RangeQuery),
    responses(
        (status = 200, description = "The segments, oldest first", body = Vec<Segment>),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn segments() {}

/// A time slice of the store as one pcapng file.
#[utoipa::path(get, path = "/api/v1/snapshot", operation_id = "snapshot",
    params(RangeQuery, SelectionQuery, SecretsQuery),
    responses(
        (status = 200, description = "Exactly the packets of the range, time-ordered, as pcapng", body = String,
            content_type = "application/x-pcapng",
            headers(("x-podcap-secrets" = String, description = "When secrets were asked for: included, or withheld"),
                    ("x-podcap-window-clamped" = String, description = "The window reached past the request: to= where it was cut"))),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn snapshot() {}

/// The live stream: one pcapng section, packets as the store gets them.
#[utoipa::path(get, path = "/api/v1/live", operation_id = "live", params(SelectionQuery),
    responses(
        (status = 200, description = "A pcapng stream that ends when the client goes away", body = String,
            content_type = "application/x-pcapng"),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn live() {}

/// The recording settings and where each came from.
#[utoipa::path(get, path = "/api/v1/config", operation_id = "getConfig",
    responses(
        (status = 200, description = "The settings", body = Settings),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn get_config() {}

/// Changes the settings (or, with dryRun, says what the change would retire). Needs the
/// admin token.
#[utoipa::path(patch, path = "/api/v1/config", operation_id = "changeConfig", params(ConfigQuery),
    request_body = SettingsChange,
    responses(
        (status = 200, description = "The settings now (or, in a dry run, as they would be)", body = Settings),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 408, description = "The request's body did not arrive whole within 10 s of its head", body = ErrorBody),
        (status = 413, description = "The request's body is larger than 2 MiB", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn change_config() {}

/// The sensor's counters (Prometheus scrapes them).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics",
    responses(
        (status = 200, description = "The OpenMetrics text format", body = String, content_type = "application/openmetrics-text"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn metrics() {}

/// The snapshots this node keeps, its failed creations and damaged folders.
#[utoipa::path(get, path = "/api/v1/snapshots", operation_id = "listSnapshots",
    responses(
        (status = 200, description = "This node's snapshots", body = SnapshotListing),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn list_snapshots() {}

/// Copies a window of the store, with its selection, into a snapshot kept apart from the
/// rolling store; answers when it is made. Needs the admin token.
#[utoipa::path(post, path = "/api/v1/snapshots", operation_id = "createSnapshot",
    request_body = SnapshotRequest,
    responses(
        (status = 201, description = "Made", body = SnapshotManifest),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token: this needs the admin token", body = ErrorBody),
        (status = 408, description = "The request's body did not arrive whole within 10 s of its head", body = ErrorBody),
        (status = 409, description = "The name is taken on this node", body = ErrorBody),
        (status = 413, description = "The request's body is larger than 2 MiB", body = ErrorBody),
        (status = 500, description = "Writing it failed (see the sensor's log)", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
        (status = 507, description = "It does not fit the snapshots' budget, or the disk is full", body = ErrorBody),
    ))]
fn create_snapshot() {}

/// A snapshot's manifest.
#[utoipa::path(get, path = "/api/v1/snapshots/{name}", operation_id = "getSnapshot",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The snapshot's name")),
    responses(
        (status = 200, description = "Its manifest", body = SnapshotManifest),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No snapshot of that name here", body = ErrorBody),
        (status = 409, description = "It is damaged (the reason says how)", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn get_snapshot() {}

/// Deletes a snapshot. Needs the admin token.
#[utoipa::path(delete, path = "/api/v1/snapshots/{name}", operation_id = "deleteSnapshot",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The snapshot's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 404, description = "No snapshot of that name here", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn delete_snapshot() {}

/// The snapshot's file as it was made; its SHA-256 in `x-podcap-sha256`. TLS secrets only
/// with `secrets=true` and the admin token.
#[utoipa::path(get, path = "/api/v1/snapshots/{name}/pcapng", operation_id = "downloadSnapshot",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The snapshot's name"), SecretsQuery),
    responses(
        (status = 200, description = "The pcapng file", body = String, content_type = "application/x-pcapng",
            headers(("x-podcap-sha256" = String, description = "The SHA-256 of the file sent"),
                    ("x-podcap-secrets" = String, description = "When secrets were asked for: included, or withheld"))),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No snapshot of that name here", body = ErrorBody),
        (status = 409, description = "It is damaged (the reason says how)", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn download_snapshot() {}

/// The recording jobs of this node.
#[utoipa::path(get, path = "/api/v1/recordings", operation_id = "listRecordings",
    responses(
        (status = 200, description = "This node's jobs", body = RecordingListing),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn list_recordings() {}

/// Makes a recording job. Needs the admin token.
#[utoipa::path(post, path = "/api/v1/recordings", operation_id = "createRecording",
    request_body = RecordingJob,
    responses(
        (status = 201, description = "Made", body = RecordingJob),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 408, description = "The request's body did not arrive whole within 10 s of its head", body = ErrorBody),
        (status = 409, description = "The name is taken on this node", body = ErrorBody),
        (status = 413, description = "The request's body is larger than 2 MiB", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn create_recording() {}

/// Deletes a recording job and what it recorded. Needs the admin token.
#[utoipa::path(delete, path = "/api/v1/recordings/{name}", operation_id = "deleteRecording",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The job's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A read token", body = ErrorBody),
        (status = 404, description = "No job of that name here", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn delete_recording() {}

/// What a job recorded, its iterations merged, as one pcapng file.
#[utoipa::path(get, path = "/api/v1/recordings/{name}/pcapng", operation_id = "downloadRecording",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The job's name"), RangeQuery, SelectionQuery, SecretsQuery),
    responses(
        (status = 200, description = "The pcapng file", body = String, content_type = "application/x-pcapng",
            headers(("x-podcap-secrets" = String, description = "When secrets were asked for: included, or withheld"))),
        (status = 400, description = "Bad input, named", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No job of that name here", body = ErrorBody),
        (status = 503, description = "Too many at once, or too slow; retry", body = ErrorBody),
    ))]
fn download_recording() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Role, ROUTES};

    #[test]
    fn the_document_names_exactly_the_routes_of_the_table_with_their_roles() {
        let doc: serde_json::Value = serde_json::from_str(&json()).unwrap();
        let mut documented = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let route = ROUTES
                    .iter()
                    .find(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method))
                    .unwrap_or_else(|| panic!("{method} {path} is documented but not in ROUTES"));
                let open = operation["security"] == serde_json::json!([{}]);
                assert_eq!(open, route.role == Role::Open, "{method} {path}: security");
                documented += 1;
            }
        }
        assert_eq!(documented, ROUTES.len(), "every route of ROUTES is documented");
    }
}
