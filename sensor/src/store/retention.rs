//! Which finished segments retention retires.
//!
//! Rules: oldest first (by sequence number), while the store (finished segments plus the
//! active one) is larger than `max_size` or the segment's newest packet is older than
//! `max_time`; it stops at the first segment that is within both. A segment `held` (one
//! the archive still waits to upload) is never too old: only the size bound retires it. Quarantined segments
//! are segments like the others here. The one rule serves the writer and the API's dry
//! run (`PATCH /api/v1/config?dryRun=true`), so what a change would retire is what it
//! retires.
use super::index::SegmentRecord;

/// The segments (sequence numbers, oldest first) that the limits retire now: `active_bytes`
/// is what the active segment takes, `horizon_ns` the time before which a segment's newest
/// packet is too old, unless `held` says the segment is kept from that.
#[must_use]
pub fn to_retire<'a>(
    records: impl IntoIterator<Item = &'a SegmentRecord>,
    active_bytes: u64,
    max_size: u64,
    horizon_ns: u64,
    held: impl Fn(&SegmentRecord) -> bool,
) -> Vec<&'a SegmentRecord> {
    let mut by_seq: Vec<&SegmentRecord> = records.into_iter().collect();
    by_seq.sort_by_key(|r| r.seq);
    let mut total = by_seq
        .iter()
        .fold(active_bytes, |sum, r| sum.saturating_add(r.bytes));
    let mut retired = Vec::new();
    for record in by_seq {
        let too_old = record.last_ns < horizon_ns && !held(record);
        if total <= max_size && !too_old {
            break;
        }
        total = total.saturating_sub(record.bytes);
        retired.push(record);
    }
    retired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, last_ns: u64, bytes: u64) -> SegmentRecord {
        SegmentRecord {
            seq,
            last_ns,
            bytes,
            ..SegmentRecord::default()
        }
    }

    #[test]
    fn oldest_first_until_within_both_limits() {
        let records = [
            record(3, 300, 10),
            record(1, 100, 10),
            record(2, 200, 10),
            record(4, 400, 10),
        ];
        let seqs = |v: Vec<&SegmentRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(to_retire(&records, 0, 100, 0, |_| false)), Vec::<u64>::new());
        assert_eq!(seqs(to_retire(&records, 5, 30, 0, |_| false)), vec![1, 2]);
        assert_eq!(seqs(to_retire(&records, 0, 100, 250, |_| false)), vec![1, 2]);
        assert_eq!(seqs(to_retire(&records, 0, 15, 250, |_| false)), vec![1, 2, 3]);
        // It stops at the first segment within both limits, even before an older one.
        let records = [record(1, 900, 10), record(2, 100, 10)];
        assert_eq!(
            seqs(to_retire(&records, 0, 100, 500, |_| false)),
            Vec::<u64>::new()
        );
        assert_eq!(seqs(to_retire(&records, 0, 10, 500, |_| false)), vec![1, 2]);
    }

    #[test]
    fn a_held_segment_is_never_too_old_but_the_size_bound_still_retires_it() {
        let records = [record(1, 100, 10), record(2, 200, 10), record(3, 300, 10)];
        let seqs = |v: Vec<&SegmentRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
        let held = |r: &SegmentRecord| r.seq == 2;
        // Age alone: 1 goes, 2 is held and stops retirement there.
        assert_eq!(seqs(to_retire(&records, 0, 100, 250, held)), vec![1]);
        // Size: 1 and 2 go whatever the hold says.
        assert_eq!(seqs(to_retire(&records, 0, 10, 0, held)), vec![1, 2]);
    }
}
