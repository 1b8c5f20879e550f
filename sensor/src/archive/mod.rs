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
//!   bucket (no such bucket, access denied, endpoint unreachable).
//! - `--archive-rate` caps the bytes sent per second.
//! - At a stop the writer closes its segment first; then the uploader goes on for at most
//!   `--archive-drain`. What is left stays on disk and goes up at the next start (or is
//!   recorded as a gap if retention gives it up before).
pub mod ledger;

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use podcap_archive::{Archive, ArchiveError, Kind, Manifest, Stored};

use self::ledger::Ledger;
use crate::{
    recordings::Recordings,
    snapshots::Snapshots,
    store::{compress::SegmentReader, index::SegmentRecord, SharedView},
    sys, units,
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

/// The archive's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ArchiveStats {
    pub uploaded_objects: AtomicU64,
    /// Bytes stored (compressed).
    pub uploaded_bytes: AtomicU64,
    /// Objects found already uploaded (after a crash or a restart).
    pub already_there: AtomicU64,
    pub failures: AtomicU64,
    /// Segments given up before they were uploaded (recorded as gaps).
    pub skipped_segments: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub ledger: Arc<Ledger>,
}

impl ArchiveStats {
    /// Segments waiting for upload, and the age of the oldest one's first packet.
    #[must_use]
    pub fn backlog(&self, now_ns: u64) -> (usize, Duration) {
        let (count, oldest) = self.ledger.backlog();
        let age = oldest.map_or(0, |first| now_ns.saturating_sub(first));
        (count, Duration::from_nanos(age))
    }
}

/// The running uploader.
pub struct ArchiveHandle {
    finish: mpsc::Sender<Instant>,
    thread: Option<thread::JoinHandle<()>>,
    pub stats: Arc<ArchiveStats>,
}

impl ArchiveHandle {
    /// Lets the uploader go on for at most `drain` (the writer has closed its segment),
    /// then waits for it.
    pub fn finish(mut self, drain: Duration) {
        let _ = self.finish.send(Instant::now() + drain);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ArchiveHandle {
    fn drop(&mut self) {
        let _ = self.finish.send(Instant::now());
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
    let stats = Arc::new(ArchiveStats {
        ledger,
        ..ArchiveStats::default()
    });
    let (finish, finish_rx) = mpsc::channel();
    let mut uploader = Uploader {
        archive,
        config,
        data_dir,
        view,
        snapshots,
        recordings,
        stats: Arc::clone(&stats),
        snapshots_done: HashSet::new(),
        iterations_done: HashSet::new(),
        checked: false,
        logged: None,
    };
    let thread = thread::Builder::new()
        .name("podcap-archive".into())
        .spawn(move || uploader.run(&finish_rx))
        .map_err(|e| ArchiveError::Local(format!("cannot start the uploader thread: {e}")))?;
    Ok(ArchiveHandle {
        finish,
        thread: Some(thread),
        stats,
    })
}

/// The longest wait between two tries after a failure.
const MAX_BACKOFF: Duration = Duration::from_mins(1);

/// What one pass did.
enum Pass {
    /// Nothing was waiting.
    Idle,
    /// Something went up (or was found up).
    Progress,
}

struct Uploader {
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
    fn run(&mut self, finish: &mpsc::Receiver<Instant>) {
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
        let mut deadline: Option<Instant> = None;
        let mut backoff = Duration::from_secs(1);
        let mut retry_at = Instant::now();
        loop {
            // A closed channel is a stop without a drain (the run ended on an error).
            match finish.try_recv() {
                Ok(at) => deadline = Some(at),
                Err(mpsc::TryRecvError::Disconnected) => {
                    deadline = Some(deadline.unwrap_or_else(Instant::now));
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            // Even while the archive cannot be reached: the backlog counts them, and
            // retention knows what waits.
            self.take_in_segments();
            if now < retry_at {
                Self::wait(finish, &mut deadline, retry_at - now);
                continue;
            }
            match runtime.block_on(self.pass(deadline)) {
                Ok(Pass::Progress) => backoff = Duration::from_secs(1),
                Ok(Pass::Idle) if deadline.is_some() => break,
                Ok(Pass::Idle) => Self::wait(finish, &mut deadline, Duration::from_secs(1)),
                Err(e) => {
                    self.failed(&e);
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let (left, _) = self.stats.backlog(sys::realtime_ns());
        if left > 0 {
            log::warn!(
                "archive: {left} segments not uploaded at the stop; they stay in the store and go up at the next start"
            );
        }
    }

    /// Sleeps up to `at_most`, woken by a finish message.
    fn wait(finish: &mpsc::Receiver<Instant>, deadline: &mut Option<Instant>, at_most: Duration) {
        if let Ok(at) = finish.recv_timeout(at_most.min(Duration::from_secs(1))) {
            *deadline = Some(at);
        }
    }

    fn failed(&mut self, error: &ArchiveError) {
        // Relaxed: counters read on their own by /metrics.
        self.stats.failures.fetch_add(1, Relaxed);
        let text = error.to_string();
        if self.logged.as_deref() != Some(text.as_str()) {
            if self.checked {
                log::warn!("archive: {text}; retrying (capture goes on)");
            } else {
                log::error!("archive: {text}; capture goes on, uploads wait for the archive");
            }
            self.logged = Some(text.clone());
        }
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text);
    }

    /// One pass: the bucket checked (once), gaps recorded, waiting segments and new
    /// snapshots uploaded; stops early at the deadline.
    async fn pass(&mut self, deadline: Option<Instant>) -> Result<Pass, ArchiveError> {
        if !self.checked {
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
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.logged = None;
        Ok(if progress { Pass::Progress } else { Pass::Idle })
    }

    async fn record_gaps(&mut self) -> Result<bool, ArchiveError> {
        let gaps = self.stats.ledger.take_given_up();
        let mut rest = gaps.into_iter();
        let mut progress = false;
        while let Some(record) = rest.next() {
            if let Err(e) = self.record_gap(&record).await {
                let mut back = vec![record];
                back.extend(rest);
                self.stats.ledger.give_back(back);
                return Err(e);
            }
            progress = true;
        }
        Ok(progress)
    }

    /// Records that segment `record` was given up, unless it is in the archive after all.
    async fn record_gap(&self, record: &SegmentRecord) -> Result<(), ArchiveError> {
        let layout = self.archive.layout();
        let node = &self.config.node;
        let keys = layout.segment(node, record.first_ns, record.seq);
        if self.archive.manifest(&keys.manifest).await?.is_some() {
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
        self.stats.skipped_segments.fetch_add(1, Relaxed);
        log::warn!(
            "archive: segment {} ({} packets from {}) was retired before it was uploaded; recorded as a gap",
            record.seq,
            record.packets,
            units::format_rfc3339_ns(record.first_ns)
        );
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
