//! What the archive is doing, as `/metrics` and `/api/v1/status` say it.
//!
//! Rules:
//! - Every figure is true at the moment it is read, whatever the uploader is doing: the
//!   backlog is read from the store's index and the ledger (a segment is pending from the
//!   moment the writer publishes it, even while the uploader waits for an answer), a
//!   segment the store gave up is counted when it is retired, and the request in flight is
//!   shown with the time it has waited.
//! - Counters are written by the uploader alone and read on their own, so `Relaxed` is
//!   enough for each of them; the states that go together (a failure's reason and since
//!   when, the request and since when) sit behind one mutex each.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use serde::Serialize;

use super::{ledger::Ledger, ArchiveConfig};
use crate::{store::SharedView, units};

/// How many of the gaps not yet recorded `/api/v1/status` names (the oldest).
pub const GAPS_NAMED: usize = 32;

/// The archive's counters and state, shared by the uploader and the API.
#[derive(Debug)]
pub struct ArchiveStats {
    pub config: ArchiveConfig,
    pub uploaded_objects: AtomicU64,
    /// Bytes stored (compressed).
    pub uploaded_bytes: AtomicU64,
    /// Objects found already uploaded (after a crash or a restart).
    pub already_there: AtomicU64,
    /// Requests that failed (an error, or no answer within `--archive-timeout`).
    pub failures: AtomicU64,
    /// Gaps written into the archive.
    pub gaps_recorded: AtomicU64,
    failing: Mutex<Option<Failing>>,
    request: Mutex<Option<Request>>,
    pub ledger: Arc<Ledger>,
    /// The store's view, when segments are archived (`--archive-segments`).
    view: Option<SharedView>,
}

/// Why the archive fails, since when.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failing {
    pub reason: String,
    /// The first failure of this run of failures (RFC 3339).
    pub since: String,
    /// The latest one.
    pub last: String,
}

/// The request the uploader waits for.
#[derive(Clone, Debug)]
struct Request {
    what: String,
    since_ns: u64,
}

/// A request in flight, for the status.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub what: String,
    pub since: String,
    pub seconds: f64,
}

/// A segment the store gave up that is not recorded in the archive yet.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GapToRecord {
    pub seq: u64,
    pub first_packet: String,
    pub last_packet: String,
    pub packets: u64,
}

/// `/api/v1/status`'s `archive` section.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    pub url: String,
    pub node: String,
    /// Finished segments are archived (`--archive-segments`).
    pub segments: bool,
    pub backlog_segments: usize,
    /// The first packet of the oldest segment waiting for upload.
    pub oldest_pending: Option<String>,
    pub oldest_pending_age_seconds: f64,
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
    pub found_uploaded: u64,
    pub failures: u64,
    /// Set while requests fail; cleared when a pass succeeds.
    pub failing: Option<Failing>,
    /// The request the uploader waits for, if any.
    pub request: Option<InFlight>,
    /// Segments the store retired before they were uploaded, since the start.
    pub skipped_segments: u64,
    pub gaps_recorded: u64,
    /// Given-up segments whose gap is not in the archive yet.
    pub gaps_to_record: usize,
    /// The oldest of them (at most [`GAPS_NAMED`]).
    pub gaps_to_record_oldest: Vec<GapToRecord>,
    pub request_timeout_seconds: f64,
    pub drain_seconds: f64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ArchiveStats {
    #[must_use]
    pub fn new(config: ArchiveConfig, ledger: Arc<Ledger>, view: Option<SharedView>) -> Self {
        Self {
            config,
            uploaded_objects: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
            already_there: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            gaps_recorded: AtomicU64::new(0),
            failing: Mutex::new(None),
            request: Mutex::new(None),
            ledger,
            view,
        }
    }

    /// Finished segments waiting for upload, and the age of the oldest one's first packet
    /// (zero when none waits).
    #[must_use]
    pub fn backlog(&self, now_ns: u64) -> (usize, Duration) {
        let (count, oldest) = self.pending();
        let age = oldest.map_or(0, |first| now_ns.saturating_sub(first));
        (count, Duration::from_nanos(age))
    }

    /// Pending segments and the oldest one's first packet.
    fn pending(&self) -> (usize, Option<u64>) {
        let Some(view) = &self.view else {
            return (0, None);
        };
        // The view's lock, then the ledger's: the order the uploader takes them in too.
        let view = view.read().unwrap_or_else(PoisonError::into_inner);
        self.ledger.pending(view.index.records())
    }

    /// Segments the store gave up before upload, since the start.
    #[must_use]
    pub fn skipped_segments(&self) -> u64 {
        self.ledger.given_up_total()
    }

    /// A request failed with `reason` at `now_ns`.
    pub(super) fn failed(&self, reason: String, now_ns: u64) {
        // Relaxed: a counter read on its own.
        self.failures.fetch_add(1, Relaxed);
        let now = units::format_rfc3339_ns(now_ns);
        let mut failing = lock(&self.failing);
        let since = failing.as_ref().map_or_else(|| now.clone(), |f| f.since.clone());
        *failing = Some(Failing {
            reason,
            since,
            last: now,
        });
    }

    /// A pass went through: nothing fails.
    pub(super) fn answered(&self) {
        *lock(&self.failing) = None;
    }

    /// The uploader waits for `what` from `now_ns` (`None`: for nothing); what it waited
    /// for before.
    pub(super) fn requesting(&self, what: Option<String>, now_ns: u64) -> Option<String> {
        let next = what.map(|what| Request {
            what,
            since_ns: now_ns,
        });
        std::mem::replace(&mut *lock(&self.request), next).map(|r| r.what)
    }

    /// The `archive` section of `/api/v1/status` at `now_ns`.
    #[must_use]
    pub fn status(&self, now_ns: u64) -> ArchiveStatus {
        let (backlog, oldest) = self.pending();
        let gaps = self.ledger.gaps_to_record();
        let request = lock(&self.request).clone().map(|r| InFlight {
            what: r.what,
            since: units::format_rfc3339_ns(r.since_ns),
            seconds: Duration::from_nanos(now_ns.saturating_sub(r.since_ns)).as_secs_f64(),
        });
        // Relaxed: counters, each read on its own.
        ArchiveStatus {
            url: self.config.url.clone(),
            node: self.config.node.clone(),
            segments: self.config.segments,
            backlog_segments: backlog,
            oldest_pending: oldest.map(units::format_rfc3339_ns),
            oldest_pending_age_seconds: oldest.map_or(0.0, |first| {
                Duration::from_nanos(now_ns.saturating_sub(first)).as_secs_f64()
            }),
            uploaded_objects: self.uploaded_objects.load(Relaxed),
            uploaded_bytes: self.uploaded_bytes.load(Relaxed),
            found_uploaded: self.already_there.load(Relaxed),
            failures: self.failures.load(Relaxed),
            failing: lock(&self.failing).clone(),
            request,
            skipped_segments: self.skipped_segments(),
            gaps_recorded: self.gaps_recorded.load(Relaxed),
            gaps_to_record: gaps.len(),
            gaps_to_record_oldest: gaps
                .iter()
                .take(GAPS_NAMED)
                .map(|r| GapToRecord {
                    seq: r.seq,
                    first_packet: units::format_rfc3339_ns(r.first_ns),
                    last_packet: units::format_rfc3339_ns(r.last_ns),
                    packets: r.packets,
                })
                .collect(),
            request_timeout_seconds: self.config.request_timeout.as_secs_f64(),
            drain_seconds: self.config.drain.as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use super::*;
    use crate::store::{index::SegmentRecord, StoreView};

    const SECOND: u64 = 1_000_000_000;
    const NOW: u64 = 1_800_000_000 * SECOND;

    fn archive_stats(view: &SharedView) -> ArchiveStats {
        let config = ArchiveConfig {
            url: "s3://bucket/prefix".into(),
            cluster: "prod".into(),
            node: "node-a".into(),
            segments: true,
            rate: None,
            drain: Duration::from_secs(20),
            request_timeout: Duration::from_mins(1),
        };
        ArchiveStats::new(config, Arc::default(), Some(Arc::clone(view)))
    }

    fn record(seq: u64, first_ns: u64) -> SegmentRecord {
        SegmentRecord {
            seq,
            first_ns,
            last_ns: first_ns + SECOND,
            packets: 10,
            ..SegmentRecord::default()
        }
    }

    #[test]
    fn the_status_is_true_while_the_uploader_waits() {
        let view: SharedView = Arc::new(RwLock::new(StoreView::default()));
        let archive = archive_stats(&view);
        assert_eq!(archive.status(NOW).backlog_segments, 0);
        // Two segments finish while the uploader waits for its first answer.
        let _ = archive.requesting(Some("checking s3://bucket/prefix".into()), NOW - 40 * SECOND);
        view.write().unwrap().index = crate::store::index::Index::from_records(vec![
            record(1, NOW - 30 * SECOND),
            record(2, NOW - 20 * SECOND),
        ]);
        let status = archive.status(NOW);
        assert_eq!(status.backlog_segments, 2, "pending from the moment they finish");
        assert!((status.oldest_pending_age_seconds - 30.0).abs() < 1e-9);
        let request = status.request.expect("the request waited for");
        assert!((request.seconds - 40.0).abs() < 1e-9 && request.what.starts_with("checking"));
        assert_eq!(archive.backlog(NOW), (2, Duration::from_secs(30)));
        // Failures keep the first moment of the run; a pass that goes through clears them.
        archive.failed("no answer".into(), NOW - 5 * SECOND);
        archive.failed("no answer again".into(), NOW);
        let failing = archive.status(NOW).failing.expect("failing");
        assert_eq!(failing.reason, "no answer again");
        assert_eq!(failing.since, units::format_rfc3339_ns(NOW - 5 * SECOND));
        assert_eq!(archive.status(NOW).failures, 2);
        archive.answered();
        assert!(archive.status(NOW).failing.is_none());
        // The store gives segment 1 up before it went: counted and named at once.
        archive.ledger.retired(&record(1, NOW - 30 * SECOND));
        view.write().unwrap().index =
            crate::store::index::Index::from_records(vec![record(2, NOW - 20 * SECOND)]);
        let status = archive.status(NOW);
        assert_eq!(
            (
                status.skipped_segments,
                status.gaps_to_record,
                status.backlog_segments
            ),
            (1, 1, 1)
        );
        assert_eq!(status.gaps_to_record_oldest[0].seq, 1);
        assert_eq!(
            archive.requesting(None, NOW).as_deref(),
            Some("checking s3://bucket/prefix")
        );
        assert!(archive.status(NOW).request.is_none());
    }
}
