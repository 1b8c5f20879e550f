//! The ledger between the store and the uploader: which finished segments still wait for
//! their upload, so that retention keeps them, and which the store had to give up.
//!
//! Rules:
//! - A segment the uploader has not looked at yet, or has looked at and not uploaded, is
//!   held: retention does not retire it for age (`--max-time`). The size bound and
//!   `--min-free` still retire it, oldest first: then it is given up, and the uploader
//!   records it in the archive as a gap and counts it.
//! - The bucket is the truth, the ledger only memory: it starts empty (everything held)
//!   and the uploader finds each segment's manifest in the bucket before it uploads, so a
//!   crash between an upload and this bookkeeping costs one lookup, never a duplicate.
use std::{collections::BTreeMap, sync::Mutex};

use crate::store::index::SegmentRecord;

#[derive(Debug, Default)]
struct State {
    /// The highest sequence number the uploader has taken in; newer ones are held too.
    seen_up_to: u64,
    /// Segments taken in and not uploaded yet, by sequence number: first packet time.
    waiting: BTreeMap<u64, u64>,
    /// Held segments the store retired: gaps to record.
    given_up: Vec<SegmentRecord>,
}

/// Shared by the writer (retention) and the uploader.
#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
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

    /// The store retired `record`; if it was held it becomes a gap.
    pub fn retired(&self, record: &SegmentRecord) {
        let mut state = self.lock();
        let held = record.seq > state.seen_up_to || state.waiting.remove(&record.seq).is_some();
        if held {
            state.given_up.push(record.clone());
        }
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

    /// The gaps to record.
    pub(super) fn take_given_up(&self) -> Vec<SegmentRecord> {
        std::mem::take(&mut self.lock().given_up)
    }

    /// Gaps not recorded yet go back (the archive could not take them).
    pub(super) fn give_back(&self, gaps: Vec<SegmentRecord>) {
        let mut state = self.lock();
        let mut gaps = gaps;
        gaps.append(&mut state.given_up);
        state.given_up = gaps;
    }

    /// Segments waiting, and the first packet time of the oldest.
    #[must_use]
    pub fn backlog(&self) -> (usize, Option<u64>) {
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
        let gaps: Vec<u64> = ledger.take_given_up().iter().map(|r| r.seq).collect();
        assert_eq!(gaps, vec![2, 7], "uploaded ones are no gap; unseen ones are");
        assert_eq!(ledger.backlog(), (1, Some(30)));
        assert_eq!(
            ledger.take_in(&records[2..]),
            vec![3],
            "seen ones are not taken twice"
        );
        ledger.give_back(vec![record(5)]);
        assert_eq!(ledger.take_given_up().len(), 1);
    }
}
