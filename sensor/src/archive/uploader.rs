//! The uploader thread: passes over what waits (gaps, segments, snapshots, recording
//! iterations), retried with backoff, until the stop's deadline.
//!
//! Rules:
//! - One current-thread runtime; each pass races the stop's deadline, so a request the
//!   server never answers holds the stop up until the deadline at most (the request is
//!   dropped, which an exactly-once upload survives: the next start finds what went up).
//! - The request waited for is published in [`ArchiveStats`] with its start, so the status
//!   shows how long the server has been silent before the request times out.
use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use bytes::Bytes;
use podcap_archive::{Archive, ArchiveError, Kind, Manifest, Stored};
use tokio::sync::watch;

use super::{ArchiveConfig, ArchiveStats};
use crate::{
    store::kept::{recordings::Recordings, snapshots::Snapshots},
    store::{compress::SegmentReader, index::SegmentRecord, SharedView},
    sys, units,
};

/// The stop's deadline, as the uploader receives it (`None`: no stop yet).
type Deadline = watch::Receiver<Option<Instant>>;

/// How long the runtime's leftovers (a connection's tasks, a blocking file operation of a
/// request abandoned at the deadline) are given at the end before the thread goes.
const LEFTOVERS_GRACE: Duration = Duration::from_millis(500);

/// The longest wait between two tries after a failure.
const MAX_BACKOFF: Duration = Duration::from_mins(1);

/// What one pass did.
enum Pass {
    /// Nothing was waiting.
    Idle,
    /// Something went up (or was found up).
    Progress,
}

pub(super) struct Uploader {
    archive: Archive,
    config: ArchiveConfig,
    data_dir: PathBuf,
    view: SharedView,
    snapshots: Option<Arc<Snapshots>>,
    recordings: Option<Arc<Recordings>>,
    stats: Arc<ArchiveStats>,
    /// Snapshots known to be in the archive.
    snapshots_done: HashSet<String>,
    /// Recording iterations (job, iteration) known to be in the archive.
    iterations_done: HashSet<(String, u32)>,
    /// Whether the bucket answered since the start.
    checked: bool,
    /// The last failure logged (the next is logged only if it differs).
    logged: Option<String>,
}

impl Uploader {
    pub(super) fn new(
        archive: Archive,
        config: ArchiveConfig,
        data_dir: PathBuf,
        view: SharedView,
        snapshots: Option<Arc<Snapshots>>,
        recordings: Option<Arc<Recordings>>,
        stats: Arc<ArchiveStats>,
    ) -> Self {
        Self {
            archive,
            config,
            data_dir,
            view,
            snapshots,
            recordings,
            stats,
            snapshots_done: HashSet::new(),
            iterations_done: HashSet::new(),
            checked: false,
            logged: None,
        }
    }

    pub(super) fn run(mut self, mut stop: Deadline) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                log::error!("archive: cannot start the uploader's runtime: {e}; nothing is uploaded");
                return;
            }
        };
        log::info!(
            "archive: uploading {} to {} as node {:?} of cluster {:?}",
            if self.config.segments {
                "snapshots, recording iterations and every finished segment"
            } else {
                "snapshots and recording iterations"
            },
            self.archive.url(),
            self.config.node,
            self.config.cluster
        );
        let abandoned = runtime.block_on(self.upload_until(&mut stop));
        runtime.shutdown_timeout(LEFTOVERS_GRACE);
        let (left, _) = self.stats.backlog(sys::realtime_ns());
        if let Some(what) = abandoned {
            log::warn!(
                "archive: the drain (--archive-drain {:?}) ended while waiting for the archive ({what}); the request was abandoned",
                self.config.drain
            );
        }
        if left > 0 {
            log::warn!(
                "archive: {left} segments not uploaded at the stop; they stay in the store and go up at the next start"
            );
        }
    }

    /// Passes until the stop's deadline; what was waited for when it came, if anything.
    async fn upload_until(&mut self, stop: &mut Deadline) -> Option<String> {
        let mut backoff = Duration::from_secs(1);
        let mut retry_at = Instant::now();
        loop {
            // A sender gone without a deadline is a stop without a drain (the run ended).
            let gone = stop.has_changed().is_err();
            let deadline = (*stop.borrow_and_update()).or(gone.then(Instant::now));
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            // Even while the archive cannot be reached: retention knows what waits.
            self.take_in_segments();
            if now < retry_at {
                wait(stop, retry_at - now).await;
                continue;
            }
            let outcome = tokio::select! {
                outcome = self.pass(deadline) => Some(outcome),
                () = reached(stop) => None,
            };
            let waited_for = self.stats.requesting(None, sys::realtime_ns());
            match outcome {
                None => return waited_for,
                Some(Ok(Pass::Progress)) => backoff = Duration::from_secs(1),
                Some(Ok(Pass::Idle)) if deadline.is_some() => return None,
                Some(Ok(Pass::Idle)) => wait(stop, Duration::from_secs(1)).await,
                Some(Err(e)) => {
                    self.failed(&e);
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Says which request the uploader waits for now.
    fn requesting(&self, what: String) {
        let _ = self.stats.requesting(Some(what), sys::realtime_ns());
    }

    fn failed(&mut self, error: &ArchiveError) {
        let text = error.to_string();
        self.stats.failed(text.clone(), sys::realtime_ns());
        if self.logged.as_deref() != Some(text.as_str()) {
            if self.checked {
                log::warn!("archive: {text}; retrying (capture goes on)");
            } else {
                log::error!("archive: {text}; capture goes on, uploads wait for the archive");
            }
            self.logged = Some(text);
        }
    }

    /// One pass: the bucket checked (once), gaps recorded, waiting segments and new
    /// snapshots uploaded; stops early at the deadline.
    async fn pass(&mut self, deadline: Option<Instant>) -> Result<Pass, ArchiveError> {
        if !self.checked {
            self.requesting(format!("checking {}", self.archive.url()));
            self.archive.check().await?;
            self.checked = true;
            if self.logged.take().is_some() {
                log::info!("archive: {} answers now", self.archive.url());
            }
        }
        let mut progress = self.record_gaps().await?;
        if self.config.segments {
            progress |= self.upload_segments(deadline).await?;
        }
        progress |= self.upload_snapshots(deadline).await?;
        progress |= self.upload_iterations(deadline).await?;
        self.stats.answered();
        self.logged = None;
        Ok(if progress { Pass::Progress } else { Pass::Idle })
    }

    /// Records the gaps the store left; each leaves the ledger once it is in the archive,
    /// so a pass cut short (a failure, the stop's deadline) loses none.
    async fn record_gaps(&mut self) -> Result<bool, ArchiveError> {
        let mut progress = false;
        for record in self.stats.ledger.gaps_to_record() {
            self.record_gap(&record).await?;
            self.stats.ledger.gap_recorded(record.seq);
            progress = true;
        }
        Ok(progress)
    }

    /// Records that segment `record` was given up, unless it is in the archive after all.
    async fn record_gap(&self, record: &SegmentRecord) -> Result<(), ArchiveError> {
        let layout = self.archive.layout();
        let node = &self.config.node;
        let keys = layout.segment(node, record.first_ns, record.seq);
        self.requesting(format!("recording the gap of segment {}", record.seq));
        if self.archive.manifest(&keys.manifest).await?.is_some() {
            log::info!(
                "archive: segment {} was in the archive after all (uploaded before this start): no gap",
                record.seq
            );
            return Ok(());
        }
        let mut gap = Manifest::new(Kind::Gap, layout.cluster(), node, record.first_ns, record.last_ns);
        gap.seq = Some(record.seq);
        gap.packets = record.packets;
        gap.bytes = record.bytes;
        gap.reason =
            Some("the node's store retired this segment (its size bound) before it could be uploaded".into());
        let key = layout.gap(node, record.first_ns, record.seq);
        self.archive.put_new(&key, Bytes::from(gap.to_bytes())).await?;
        // Relaxed: a counter read on its own.
        self.stats.gaps_recorded.fetch_add(1, Relaxed);
        log::info!("archive: the gap of segment {} is recorded as {key}", record.seq);
        Ok(())
    }

    /// Takes the store's new finished segments into the ledger; returns those waiting.
    fn take_in_segments(&self) -> Vec<u64> {
        if !self.config.segments {
            return Vec::new();
        }
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.stats.ledger.take_in(view.index.records())
    }

    /// The store's record of segment `seq`, if it still holds it.
    fn record_of(&self, seq: u64) -> Option<SegmentRecord> {
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.index.records().iter().find(|r| r.seq == seq).cloned()
    }

    async fn upload_segments(&mut self, deadline: Option<Instant>) -> Result<bool, ArchiveError> {
        let waiting = self.take_in_segments();
        let mut progress = false;
        for seq in waiting {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let Some(record) = self.record_of(seq) else {
                // Retired while waiting (and recorded as a gap by the ledger if it was held).
                self.stats.ledger.forget(seq);
                continue;
            };
            let path = self.data_dir.join(&record.file);
            let pcapng = match SegmentReader::read_all(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ArchiveError::Local(format!(
                        "cannot read segment {}: {e}",
                        path.display()
                    )))
                }
            };
            let layout = self.archive.layout();
            let keys = layout.segment(&self.config.node, record.first_ns, record.seq);
            self.requesting(format!("uploading segment {}", record.seq));
            let mut manifest = Manifest::new(
                Kind::Segment,
                layout.cluster(),
                &self.config.node,
                record.first_ns,
                record.last_ns,
            );
            manifest.seq = Some(record.seq);
            manifest.packets = record.packets;
            manifest.drops = record.drops;
            self.send(&keys, &pcapng, manifest).await?;
            self.stats.ledger.uploaded(seq);
            progress = true;
        }
        Ok(progress)
    }

    async fn upload_snapshots(&mut self, deadline: Option<Instant>) -> Result<bool, ArchiveError> {
        let Some(snapshots) = self.snapshots.clone() else {
            return Ok(false);
        };
        let now = sys::realtime_ns();
        let Ok(listing) = snapshots.list(now) else {
            return Ok(false);
        };
        let mut progress = false;
        for kept in listing.snapshots {
            if self.snapshots_done.contains(&kept.name) || deadline.is_some_and(|d| Instant::now() >= d) {
                continue;
            }
            let layout = self.archive.layout();
            let keys = layout.snapshot(&kept.name, &self.config.node);
            self.requesting(format!("uploading snapshot {}", kept.name));
            if self.archive.manifest(&keys.manifest).await?.is_some() {
                self.snapshots_done.insert(kept.name);
                continue;
            }
            let Ok((mut file, _)) = snapshots.open_file(&kept.name, now) else {
                continue;
            };
            let mut pcapng = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut file, &mut pcapng) {
                log::warn!("archive: cannot read snapshot {}: {e}", kept.name);
                continue;
            }
            let first = units::parse_rfc3339(&kept.from).unwrap_or(0);
            let last = units::parse_rfc3339(&kept.to)
                .unwrap_or(first)
                .saturating_sub(1)
                .max(first);
            let mut manifest =
                Manifest::new(Kind::Snapshot, layout.cluster(), &self.config.node, first, last);
            manifest.name = Some(kept.name.clone());
            manifest.packets = kept.packets;
            manifest.drops = kept.kernel_drops.saturating_add(kept.sensor_drops);
            self.send(&keys, &pcapng, manifest).await?;
            self.snapshots_done.insert(kept.name);
            progress = true;
        }
        Ok(progress)
    }

    async fn upload_iterations(&mut self, deadline: Option<Instant>) -> Result<bool, ArchiveError> {
        let Some(recordings) = self.recordings.clone() else {
            return Ok(false);
        };
        let mut progress = false;
        for (job, dir, doc) in recordings.finished_iterations() {
            let done = (job.clone(), doc.iteration);
            if self.iterations_done.contains(&done) || deadline.is_some_and(|d| Instant::now() >= d) {
                continue;
            }
            let layout = self.archive.layout();
            let label = units::format_utc_compact(doc.start_ns);
            let keys = layout.recording(&job, &label, &self.config.node);
            self.requesting(format!("uploading iteration {label} of recording job {job}"));
            if self.archive.manifest(&keys.manifest).await?.is_some() {
                self.iterations_done.insert(done);
                continue;
            }
            let pcapng = match Recordings::iteration_bytes(&dir, &doc) {
                Ok(bytes) => bytes,
                Err(e) => {
                    log::warn!("archive: cannot read iteration {label} of {job}: {e}");
                    self.iterations_done.insert(done);
                    continue;
                }
            };
            let last = doc.end_ns.saturating_sub(1).max(doc.start_ns);
            let mut manifest = Manifest::new(
                Kind::Recording,
                layout.cluster(),
                &self.config.node,
                doc.start_ns,
                last,
            );
            manifest.name = Some(job.clone());
            manifest.iteration = Some(label);
            manifest.packets = doc.packets;
            manifest.drops = doc.budget_drops;
            self.send(&keys, &pcapng, manifest).await?;
            self.iterations_done.insert(done);
            progress = true;
        }
        Ok(progress)
    }

    /// Compresses, describes and uploads one object; waits as `--archive-rate` says.
    async fn send(
        &self,
        keys: &podcap_archive::ObjectKeys,
        pcapng: &[u8],
        mut manifest: Manifest,
    ) -> Result<(), ArchiveError> {
        let stored = podcap_archive::compress(pcapng)
            .map_err(|e| ArchiveError::Local(format!("cannot compress {}: {e}", keys.data)))?;
        podcap_archive::describe(&mut manifest, pcapng, &stored);
        manifest.object = Some(keys.data.to_string());
        let size = stored.len() as u64;
        match self.archive.upload(keys, Bytes::from(stored), &manifest).await? {
            Stored::Created => {
                // Relaxed: counters read on their own.
                self.stats.uploaded_objects.fetch_add(1, Relaxed);
                self.stats.uploaded_bytes.fetch_add(size, Relaxed);
                if let Some(rate) = self.config.rate.filter(|r| *r > 0) {
                    // The time `size` bytes take at `rate` (whole milliseconds: exact enough).
                    let millis = size.saturating_mul(1000) / rate;
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                }
            }
            Stored::AlreadyThere => {
                self.stats.already_there.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }
}

/// Sleeps up to `at_most` (at most a second), woken early by a change of the deadline.
async fn wait(stop: &mut Deadline, at_most: Duration) {
    let _ = tokio::time::timeout(at_most.min(Duration::from_secs(1)), stop.changed()).await;
}

/// Returns when the stop's deadline has come (at once when the sender is gone).
async fn reached(stop: &mut Deadline) {
    loop {
        let deadline = *stop.borrow_and_update();
        let changed = match deadline {
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(at.into()) => return,
                changed = stop.changed() => changed,
            },
            None => stop.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}
