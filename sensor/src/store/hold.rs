//! A hold on finished segments: what another part of the sensor (the archive, today) asks
//! the store to keep, defined here so the store depends on no one who holds.
//!
//! Rules (the store's side; `store/retention.rs` applies them):
//! - A segment the hold [`holds`](SegmentHold::holds) is never retired for age
//!   (`--max-time`).
//! - The size bound and `--min-free` still retire it, oldest first; the hold is told at
//!   that moment ([`retired`](SegmentHold::retired)), so what it gives up is counted when
//!   it happens.
use super::index::SegmentRecord;

/// What keeps finished segments from age retirement (the archive's ledger implements it).
pub trait SegmentHold: Send + Sync + std::fmt::Debug {
    /// Whether retention must keep segment `seq` from age retirement.
    fn holds(&self, seq: u64) -> bool;

    /// The store retired `record` (for size or room): if it was held it is given up now.
    fn retired(&self, record: &SegmentRecord);
}
