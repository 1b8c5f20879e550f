//! Each segment's statistics blocks: what every interface received and lost, one group of
//! blocks a second while the counters move and a last group when the segment closes.
//!
//! Rules:
//! - A block counts what happened to its interface since the interface's previous block
//!   (in this segment or an earlier one; the first since the sensor started) up to its end
//!   time: the blocks of a slot tile time without gaps or overlaps, so any set of them adds
//!   up, and a window's counts are those of the blocks whose time meets it (exact to the
//!   second, `store/slice/notes.rs`).
//! - A group goes into the buffer at most once a [`STATISTICS_INTERVAL`]: one block, in a
//!   row, per interface of the segment whose counters moved (an idle interface writes none,
//!   an idle store does not grow; one that did not move has had nothing happen since its
//!   last block, so a reader past a group that starts after its window misses nothing);
//!   the last group at close has every interface, and after it
//!   the segment's totals, one block per interface from the segment's start, for readers
//!   that show an interface's last block (Wireshark's capture file properties). Its comment
//!   ([`crate::pcapng::SEGMENT_TOTALS_COMMENT`]) tells podcap's readers to skip it.
//! - Readers count what no readable block holds yet from the counters "readable" names:
//!   those the last group that reached the file left. A group becomes readable when its
//!   write succeeds; a failed write loses its group with its packets, and the counts go
//!   into the next group instead. A failed closing write is the exception: the next
//!   segment's groups count from the lost last group's end (its packets are counted as
//!   `disk` drops all the same).
use std::time::{Duration, Instant};

use super::SegmentWriter;
use crate::pcapng::InterfaceStatistics;

/// How often the active segment gets a group of statistics blocks while counters move.
pub(super) const STATISTICS_INTERVAL: Duration = Duration::from_secs(1);

/// Per slot, cumulative counters at statistics blocks (`None`: the slot has none yet, its
/// counts run from the sensor's start).
pub(super) type SlotCounters = Vec<Option<InterfaceStatistics>>;

/// What the groups of statistics blocks in the buffer say, for when they reach the file.
pub(super) struct BufferedGroups {
    /// `written` as the last of them left it.
    pub(super) counters: SlotCounters,
    /// The newest end time of their blocks.
    pub(super) end_ns: u64,
    /// The drops they count.
    pub(super) drops: u64,
}

/// Where each slot's statistics blocks stand.
pub(super) struct SegmentStatistics {
    /// At each slot's last block, buffered or written.
    pub(super) written: SlotCounters,
    /// At each slot's last block readable in the active segment's file.
    pub(super) readable: SlotCounters,
    /// The groups in the buffer, if it holds any.
    pub(super) buffered: Option<BufferedGroups>,
    /// When the last group went into the buffer.
    last_group: Instant,
    /// When the writer started: a slot without a block counts from here.
    started_ns: u64,
}

impl SegmentStatistics {
    pub(super) fn new() -> Self {
        Self {
            written: Vec::new(),
            readable: Vec::new(),
            buffered: None,
            last_group: Instant::now(),
            started_ns: crate::sys::realtime_ns(),
        }
    }

    /// A slot's counters where readers start counting what no readable block holds.
    pub(super) fn readable_at(counters: &SlotCounters, slot: usize, started_ns: u64) -> InterfaceStatistics {
        counters
            .get(slot)
            .copied()
            .flatten()
            .unwrap_or(InterfaceStatistics {
                end_ns: started_ns,
                ..InterfaceStatistics::default()
            })
    }

    pub(super) fn started_ns(&self) -> u64 {
        self.started_ns
    }

    /// Whether `now` differs from the slot's last block in any count.
    fn moved(&self, slot: usize, now: &InterfaceStatistics) -> bool {
        let before = self.written.get(slot).copied().flatten().unwrap_or_default();
        (before.received, before.kernel_drops, before.sensor_drops)
            != (now.received, now.kernel_drops, now.sensor_drops)
    }
}

impl SegmentWriter {
    /// Puts a group of statistics blocks into the buffer if one is due (see the rules);
    /// `stats` gives each slot's cumulative counters.
    pub(super) fn maybe_write_statistics(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) {
        if self.active.is_none() || self.statistics.last_group.elapsed() < STATISTICS_INTERVAL {
            return;
        }
        let moved = self
            .current_ids()
            .iter()
            .any(|&(slot, _)| self.statistics.moved(slot as usize, &stats(slot)));
        if moved {
            self.write_statistics_group(stats, false);
        }
        self.statistics.last_group = Instant::now();
    }

    /// Puts a statistics block for each interface of the active segment whose counters
    /// moved (each of them when `closing`: the segment's last group, whose blocks say what
    /// they count in a comment) into the buffer; returns the drops the buffer's groups
    /// count.
    pub(super) fn write_statistics_group(
        &mut self,
        stats: impl Fn(u32) -> InterfaceStatistics,
        closing: bool,
    ) -> u64 {
        let mut drops = 0u64;
        let mut end_ns = 0;
        for (slot, id) in self.current_ids() {
            let now = stats(slot);
            if !closing && !self.statistics.moved(slot as usize, &now) {
                // Its next block counts from its last: nothing happened in between.
                continue;
            }
            let s = self.slot_statistics(slot, now);
            drops = drops
                .saturating_add(s.kernel_drops)
                .saturating_add(s.sensor_drops);
            end_ns = end_ns.max(s.end_ns);
            let comment = if closing {
                format!(
                    "podcap drops by stage since the interface's previous statistics: kernel={} sensor={}",
                    s.kernel_drops, s.sensor_drops
                )
            } else {
                String::new()
            };
            self.buf.statistics(id, &s, &comment);
        }
        let earlier = self.statistics.buffered.take();
        let (end_ns, drops) = earlier.map_or((end_ns, drops), |e| {
            (e.end_ns.max(end_ns), e.drops.saturating_add(drops))
        });
        self.statistics.buffered = Some(BufferedGroups {
            counters: self.statistics.written.clone(),
            end_ns,
            drops,
        });
        drops
    }

    /// Puts the segment's totals into the buffer: per interface, what it counted since
    /// `start` (the counters when the segment began), after its last group.
    pub(super) fn write_segment_totals(&mut self, start: &SlotCounters) {
        for (slot, id) in self.current_ids() {
            let Some(now) = self.statistics.written.get(slot as usize).copied().flatten() else {
                continue;
            };
            let totals = match start.get(slot as usize).copied().flatten() {
                Some(before) => InterfaceStatistics {
                    start_ns: before.end_ns,
                    end_ns: now.end_ns,
                    received: now.received.saturating_sub(before.received),
                    kernel_drops: now.kernel_drops.saturating_sub(before.kernel_drops),
                    sensor_drops: now.sensor_drops.saturating_sub(before.sensor_drops),
                },
                None => now,
            };
            let comment = format!(
                "{}what the interface received and lost while this segment was written: kernel={} sensor={} (the blocks before count it second by second)",
                crate::pcapng::SEGMENT_TOTALS_COMMENT,
                totals.kernel_drops,
                totals.sensor_drops
            );
            self.buf.statistics(id, &totals, &comment);
        }
    }

    /// (slot, interface id) of every interface the active segment declared.
    fn current_ids(&self) -> Vec<(u32, u32)> {
        self.ids
            .by_slot
            .iter()
            .enumerate()
            .filter_map(|(slot, id)| id.map(|id| (slot as u32, id)))
            .collect()
    }

    /// A slot's block from its cumulative counters: what happened since its previous
    /// block (or since the start), so each block says what was lost in its own time.
    fn slot_statistics(&mut self, slot: u32, now: InterfaceStatistics) -> InterfaceStatistics {
        let index = slot as usize;
        let written = &mut self.statistics.written;
        if written.len() <= index {
            written.resize(index + 1, None);
        }
        let before = written[index].replace(now);
        let Some(before) = before else { return now };
        InterfaceStatistics {
            start_ns: before.end_ns,
            end_ns: now.end_ns,
            received: now.received.saturating_sub(before.received),
            kernel_drops: now.kernel_drops.saturating_sub(before.kernel_drops),
            sensor_drops: now.sensor_drops.saturating_sub(before.sensor_drops),
        }
    }
}

#[cfg(test)]
mod tests;
