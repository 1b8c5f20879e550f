//! The ledger between the store and the uploader: which finished segments still wait for
//! their upload, so that retention keeps them, and which the store had to give up.
//!
//! Rules:
//! - A segment the uploader has not looked at yet, or has looked at and not uploaded, is
//!   held: retention does not retire it for age (`--max-time`). The size bound and
//!   `--min-free` still retire it, oldest first: then it is given up at that moment:
//!   counted, logged with its sequence number and time range, and kept as a gap to record,
//!   which the uploader writes into the archive when the bucket answers.
//! - What is pending is every finished segment of the store's index that is held, from the
//!   moment the writer publishes it: [`Ledger::pending`] reads the index itself, so the
//!   backlog never waits for the uploader (which may be stuck in a request) to look.
//! - The bucket is the truth, the ledger only memory: it starts empty (everything held)
//!   and the uploader finds each segment's manifest in the bucket before it uploads, so a
//!   crash between an upload and this bookkeeping costs one lookup, never a duplicate.
use std::{collections::BTreeMap, sync::Mutex};

use crate::store::{hold::SegmentHold, index::SegmentRecord};

#[derive(Debug, Default)]
struct State {
    /// The highest sequence number the uploader has taken in; newer ones are held too.
    seen_up_to: u64,
    /// Segments taken in and not uploaded yet, by sequence number: first packet time.
    waiting: BTreeMap<u64, u64>,
    /// Held segments the store retired: gaps to record.
    given_up: Vec<SegmentRecord>,
    /// Held segments the store retired since the start (recorded as gaps or not yet).
    given_up_total: u64,
}

/// Shared by the writer (retention, through [`SegmentHold`]) and the uploader.
#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
}

/// The store's view of the ledger: what it must keep, and what it gave up.
impl SegmentHold for Ledger {
    fn holds(&self, seq: u64) -> bool {
        Ledger::holds(self, seq)
    }

    fn retired(&self, record: &SegmentRecord) {
        Ledger::retired(self, record);
    }
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether retention must keep segment `seq` from age retirement.
    #[must_use]
    pub fn holds(&self, seq: u64) -> bool {
        let state = self.lock();
        seq > state.seen_up_to || state.waiting.contains_key(&seq)
    }

    /// The store retired `record`; if it was held it becomes a gap, counted and said now.
    pub fn retired(&self, record: &SegmentRecord) {
        let held = {
            let mut state = self.lock();
            let held = record.seq > state.seen_up_to || state.waiting.remove(&record.seq).is_some();
            if held {
                state.given_up.push(record.clone());
                state.given_up_total += 1;
            }
            held
        };
        if held {
            log::warn!(
                "archive: segment {} ({} packets, {} to {}) was retired by the store before it was uploaded: a gap in the archive (recorded there when the bucket answers)",
                record.seq,
                record.packets,
                crate::units::format_rfc3339(record.first_ns),
                crate::units::format_rfc3339(record.last_ns)
            );
        }
    }

    /// Segments given up since the start.
    #[must_use]
    pub fn given_up_total(&self) -> u64 {
        self.lock().given_up_total
    }

    /// The gaps not recorded in the archive yet, oldest first.
    #[must_use]
    pub fn gaps_to_record(&self) -> Vec<SegmentRecord> {
        let mut gaps = self.lock().given_up.clone();
        gaps.sort_by_key(|r| r.seq);
        gaps
    }

    /// The finished segments of `records` (the store's index) that wait for upload, and
    /// the first packet time of the oldest: those the uploader holds, and those it has
    /// not taken in yet.
    #[must_use]
    pub fn pending(&self, records: &[SegmentRecord]) -> (usize, Option<u64>) {
        let state = self.lock();
        let unseen = records.iter().filter(|r| r.seq > state.seen_up_to);
        let count = state.waiting.len() + unseen.clone().count();
        let oldest = state
            .waiting
            .values()
            .copied()
            .chain(unseen.map(|r| r.first_ns))
            .min();
        (count, oldest)
    }

    /// Takes in the store's finished segments: the new ones wait for upload. Returns the
    /// waiting ones, oldest first.
    pub(super) fn take_in<'a>(&self, records: impl IntoIterator<Item = &'a SegmentRecord>) -> Vec<u64> {
        let mut state = self.lock();
        let seen = state.seen_up_to;
        let mut highest = seen;
        for record in records {
            if record.seq > seen {
                state.waiting.insert(record.seq, record.first_ns);
                highest = highest.max(record.seq);
            }
        }
        state.seen_up_to = highest;
        state.waiting.keys().copied().collect()
    }

    /// Segment `seq` is in the archive.
    pub(super) fn uploaded(&self, seq: u64) {
        self.lock().waiting.remove(&seq);
    }

    /// Segment `seq` is no longer in the store's index (retired by another path): nothing
    /// to upload.
    pub(super) fn forget(&self, seq: u64) {
        self.lock().waiting.remove(&seq);
    }

    /// The gap of segment `seq` is in the archive.
    pub(super) fn gap_recorded(&self, seq: u64) {
        self.lock().given_up.retain(|r| r.seq != seq);
    }

    /// How many gaps are not recorded yet.
    #[must_use]
    pub fn gaps_to_record_count(&self) -> usize {
        self.lock().given_up.len()
    }

    /// Segments taken in and waiting, and the first packet time of the oldest.
    #[cfg(test)]
    fn backlog(&self) -> (usize, Option<u64>) {
        let state = self.lock();
        (state.waiting.len(), state.waiting.values().min().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> SegmentRecord {
        SegmentRecord {
            seq,
            first_ns: seq * 10,
            ..SegmentRecord::default()
        }
    }

    #[test]
    fn segments_are_held_until_uploaded_and_a_held_one_retired_is_a_gap() {
        let ledger = Ledger::default();
        assert!(
            ledger.holds(1) && ledger.holds(99),
            "nothing seen: everything held"
        );
        let records = [record(1), record(2), record(3)];
        assert_eq!(ledger.take_in(&records), vec![1, 2, 3]);
        assert_eq!(ledger.backlog(), (3, Some(10)));
        ledger.uploaded(1);
        assert!(!ledger.holds(1) && ledger.holds(2) && ledger.holds(4));
        ledger.retired(&record(1));
        ledger.retired(&record(2));
        ledger.retired(&record(7));
        let gaps: Vec<u64> = ledger.gaps_to_record().iter().map(|r| r.seq).collect();
        assert_eq!(gaps, vec![2, 7], "uploaded ones are no gap; unseen ones are");
        ledger.gap_recorded(2);
        ledger.gap_recorded(7);
        assert_eq!(ledger.backlog(), (1, Some(30)));
        assert_eq!(
            ledger.take_in(&records[2..]),
            vec![3],
            "seen ones are not taken twice"
        );
        assert_eq!(ledger.gaps_to_record_count(), 0);
    }

    #[test]
    fn a_finished_segment_is_pending_before_the_uploader_looks() {
        let ledger = Ledger::default();
        let index = [record(1), record(2)];
        assert_eq!(
            ledger.pending(&index),
            (2, Some(10)),
            "nothing taken in yet: both pending"
        );
        assert_eq!(ledger.take_in(&index), vec![1, 2]);
        ledger.uploaded(1);
        let index = [record(2), record(3)];
        assert_eq!(ledger.pending(&index), (2, Some(20)), "2 waits, 3 finished since");
        ledger.uploaded(2);
        assert_eq!(ledger.pending(&index), (1, Some(30)));
        assert_eq!(ledger.pending(&[]), (0, None), "3 was retired meanwhile");
    }

    #[test]
    fn a_held_segment_retired_is_counted_as_a_gap_at_once() {
        let ledger = Ledger::default();
        ledger.take_in(&[record(1), record(2)]);
        ledger.uploaded(1);
        ledger.retired(&record(1));
        assert_eq!(ledger.given_up_total(), 0, "uploaded: no gap");
        ledger.retired(&record(2));
        ledger.retired(&record(4));
        assert_eq!(ledger.given_up_total(), 2, "counted when retired");
        let gaps: Vec<u64> = ledger.gaps_to_record().iter().map(|r| r.seq).collect();
        assert_eq!(gaps, vec![2, 4], "named before they are recorded");
        ledger.gap_recorded(4);
        assert_eq!(ledger.gaps_to_record().len(), 1, "2 is still to record");
        ledger.gap_recorded(2);
        assert_eq!(ledger.gaps_to_record_count(), 0);
        assert_eq!(ledger.given_up_total(), 2, "a total, not a gauge");
    }
}
