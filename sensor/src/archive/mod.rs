//! The archive stage, beside the store: uploads what the node keeps to object storage
//! (`--archive URL`), so that it outlives the node's disk, the node and the cluster.
//!
//! Rules:
//! - What goes up: every snapshot once it is made, every recording job's iteration once it
//!   is copied to its end and, with `--archive-segments`, every finished segment of the
//!   rolling store (oldest first). Each is compressed with zstd,
//!   with its manifest, at the keys `podcap-archive`'s layout gives (`docs/design/archive.md`).
//! - Exactly once: keys come from what an object is, the manifest goes last, and a manifest
//!   already in the bucket is an upload done (see `podcap_archive::client`). A crash at any
//!   moment costs one lookup at the next start, never a duplicate or a gap.
//! - Capture never waits for the archive: uploads run on their own thread. While the bucket
//!   cannot be reached the sensor records as always, the backlog grows, and retention keeps
//!   the waiting segments from age retirement ([`ledger`]); the size bound still retires
//!   them, and each segment given up that way is counted and recorded in the archive as a
//!   gap, so an offline reader sees a hole, not silence.
//! - Failures are retried with backoff (1 s doubling to 60 s); the first of a run and every
//!   change of the reason are logged, and the start says clearly what is wrong with the
//!   bucket (no such bucket, access denied, endpoint unreachable). A request that gets no
//!   answer within `--archive-timeout` is a failure like any other (`podcap_archive::client`).
//! - What the archive is doing is true at every moment ([`stats`]): the backlog counts a
//!   segment from the moment it finishes, a segment given up is counted when the store
//!   retires it, and `/api/v1/status` names the request in flight and the gaps to record.
//! - `--archive-rate` caps the bytes sent per second.
//! - At a stop the writer closes its segment first; then the uploader goes on for at most
//!   `--archive-drain`, whatever the server does: a request still waiting then is
//!   abandoned. What is left stays on disk and goes up at the next start (or is recorded
//!   as a gap if retention gives it up before).
//!
//! Layout: this file (configuration, start, stop), `uploader.rs` (the thread and its
//! passes), `ledger.rs` (what retention must keep), `stats.rs` (counters and status).
pub mod ledger;
pub mod stats;
mod uploader;

use std::{
    path::PathBuf,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use podcap_archive::{Archive, ArchiveError};
use tokio::sync::watch;

pub use self::stats::{ArchiveStats, ArchiveStatus};
use self::{ledger::Ledger, uploader::Uploader};
use crate::store::{
    kept::{recordings::Recordings, snapshots::Snapshots},
    SharedView,
};

/// What `--archive` and its flags say.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    pub url: String,
    pub cluster: String,
    pub node: String,
    /// Upload the rolling store's segments too (`--archive-segments`).
    pub segments: bool,
    /// Bytes per second at most (`--archive-rate`).
    pub rate: Option<u64>,
    /// How long the uploader goes on after a stop (`--archive-drain`).
    pub drain: Duration,
    /// How long one request may take (`--archive-timeout`).
    pub request_timeout: Duration,
}

/// The running uploader.
pub struct ArchiveHandle {
    /// When the uploader must have stopped (`None`: it runs on).
    deadline: watch::Sender<Option<Instant>>,
    thread: Option<thread::JoinHandle<()>>,
    pub stats: Arc<ArchiveStats>,
}

impl ArchiveHandle {
    /// Lets the uploader go on for at most `drain` (the writer has closed its segment),
    /// then waits for it: it stops by then whatever the server does.
    pub fn finish(mut self, drain: Duration) {
        let _ = self.deadline.send(Some(Instant::now() + drain));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ArchiveHandle {
    fn drop(&mut self) {
        let _ = self.deadline.send(Some(Instant::now()));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the archive (a bad URL is refused here, before anything is captured) and starts
/// the uploader; the bucket itself is checked by the uploader, without holding capture up.
pub fn start(
    config: ArchiveConfig,
    data_dir: PathBuf,
    view: SharedView,
    ledger: Arc<Ledger>,
    snapshots: Option<Arc<Snapshots>>,
    recordings: Option<Arc<Recordings>>,
) -> Result<ArchiveHandle, ArchiveError> {
    let archive = Archive::open_with_timeout(&config.url, &config.cluster, config.request_timeout)?;
    podcap_archive::layout::check_name("node", &config.node)?;
    let segments_view = config.segments.then(|| view.clone());
    let stats = Arc::new(ArchiveStats::new(config.clone(), ledger, segments_view));
    let (deadline, deadline_rx) = watch::channel(None);
    let uploader = Uploader::new(
        archive,
        config,
        data_dir,
        view,
        snapshots,
        recordings,
        Arc::clone(&stats),
    );
    let thread = thread::Builder::new()
        .name("podcap-archive".into())
        .spawn(move || uploader.run(deadline_rx))
        .map_err(|e| ArchiveError::Local(format!("cannot start the uploader thread: {e}")))?;
    Ok(ArchiveHandle {
        deadline,
        thread: Some(thread),
        stats,
    })
}
