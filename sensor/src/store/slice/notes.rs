//! What a slice says besides its packets: the damage it skipped (a note, as a new section)
//! and what was lost in its window (statistics blocks, added up per interface).
//! The rules are the slice's (`store/slice.rs`); the segments' blocks tile each
//! interface's time, one group a second (`store/write/statistics.rs`), so a window counts
//! the blocks whose time meets it and says the time they cover: the window widened to
//! whole blocks, never narrowed.
use std::io::{self, Read, Seek};

use super::{LocalInterface, Slicer, DAMAGE_PREFIX};
use crate::{
    pcapng::read::{Block, Section},
    store::{compress::SegmentReader, index::SegmentRecord},
};

/// A part of a segment a slice could not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub file: String,
    pub offset: u64,
    /// Bytes skipped (`None`: the rest of the segment, its length unknown).
    pub len: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.len {
            Some(len) => write!(
                f,
                "{DAMAGE_PREFIX}{} bytes {}..{} ({len} bytes) skipped: {}",
                self.file,
                self.offset,
                self.offset.saturating_add(len),
                self.reason
            ),
            None => write!(
                f,
                "{DAMAGE_PREFIX}{} from byte {} on skipped: {}",
                self.file, self.offset, self.reason
            ),
        }
    }
}

/// What the statistics blocks that meet a slice's window add up to for one interface, and
/// the time they cover.
#[derive(Clone, Copy, Debug)]
pub(super) struct WindowStatistics {
    received: u64,
    interface_drops: u64,
    os_drops: u64,
    start_ns: u64,
    end_ns: u64,
}

impl Default for WindowStatistics {
    fn default() -> Self {
        Self {
            received: 0,
            interface_drops: 0,
            os_drops: 0,
            start_ns: u64::MAX,
            end_ns: 0,
        }
    }
}

impl WindowStatistics {
    fn add(&mut self, start_ns: u64, end_ns: u64, counts: (u64, u64, u64)) {
        self.received = self.received.saturating_add(counts.0);
        self.interface_drops = self.interface_drops.saturating_add(counts.1);
        self.os_drops = self.os_drops.saturating_add(counts.2);
        self.start_ns = self.start_ns.min(start_ns);
        self.end_ns = self.end_ns.max(end_ns);
    }
}

/// Whether a block counting `[start, end]` meets the window `[from, to)`.
fn meets(start_ns: u64, end_ns: u64, from: u64, to: u64) -> bool {
    start_ns < to && end_ns > from
}

impl Slicer {
    /// Adds what the active segment's interfaces counted since their last readable
    /// statistics blocks to the window's statistics of the output interfaces of those names,
    /// if that time meets the window.
    pub(super) fn add_live_statistics(&mut self, from: u64, to: u64) {
        for (name, live) in std::mem::take(&mut self.live) {
            if !meets(live.start_ns, live.end_ns, from, to) {
                continue;
            }
            let outs: Vec<usize> = self
                .declared
                .iter()
                .filter(|((declared, _), _)| *declared == name)
                .map(|(_, &out)| out)
                .collect();
            for out in outs {
                if self.window.len() <= out {
                    self.window.resize(out + 1, None);
                }
                self.window[out].get_or_insert_default().add(
                    live.start_ns,
                    live.end_ns,
                    (live.received, live.kernel_drops, live.sensor_drops),
                );
            }
        }
    }

    /// Adds a statistics block of a segment to its interface's window statistics if its
    /// time meets the window `[from, to)`; returns the time it starts counting (`None`: not
    /// a readable statistics block). A block without a start counts from the beginning,
    /// one without an end to the end of time.
    pub(super) fn note_statistics(
        &mut self,
        block: &Block<'_>,
        section: &Section,
        local: &[Option<LocalInterface>],
        (from, to): (u64, u64),
    ) -> Option<u64> {
        let Ok(Some(stats)) = crate::pcapng::read::parse_statistics(block, section) else {
            return None;
        };
        if stats.segment_totals {
            // It repeats the blocks before it.
            return None;
        }
        let (start, end) = (stats.start_ns.unwrap_or(0), stats.end_ns.unwrap_or(u64::MAX));
        let Some(Some(interface)) = local.get(stats.interface_id as usize) else {
            return Some(start);
        };
        if !meets(start, end, from, to) {
            return Some(start);
        }
        if self.window.len() <= interface.out {
            self.window.resize(interface.out + 1, None);
        }
        self.window[interface.out].get_or_insert_default().add(
            start,
            end,
            (
                stats.received.unwrap_or(0),
                stats.interface_drops.unwrap_or(0),
                stats.os_drops.unwrap_or(0),
            ),
        );
        Some(start)
    }

    /// The statistics blocks at the end of a plain segment the slice stopped reading early,
    /// walked backwards by their trailing lengths.
    pub(super) fn trailing_statistics(
        &mut self,
        file: &mut SegmentReader,
        record: &SegmentRecord,
        section: &Section,
        local: &[Option<LocalInterface>],
        window: (u64, u64),
    ) {
        if !file.seekable() || record.file.ends_with(".active") {
            return;
        }
        let mut end = record.bytes;
        let (mut word, mut raw) = ([0u8; 4], Vec::new());
        let order = |b: [u8; 4]| {
            let v = u32::from_ne_bytes(b);
            if section.swapped {
                v.swap_bytes()
            } else {
                v
            }
        };
        // Statistics blocks are small; a segment has one per interface.
        while end >= 12 {
            let read = file
                .seek(io::SeekFrom::Start(end - 4))
                .and_then(|_| file.read_exact(&mut word));
            let len = u64::from(order(word));
            if read.is_err() || len < 12 || len > end || len % 4 != 0 || len > 1 << 16 {
                return;
            }
            raw.resize(len as usize, 0);
            if file
                .seek(io::SeekFrom::Start(end - len))
                .and_then(|_| file.read_exact(&mut raw))
                .is_err()
            {
                return;
            }
            let block_type = order([raw[0], raw[1], raw[2], raw[3]]);
            if block_type != crate::pcapng::BLOCK_ISB
                || order([raw[4], raw[5], raw[6], raw[7]]) as usize != raw.len()
            {
                return;
            }
            let block = Block {
                block_type,
                offset: end - len,
                raw: &raw,
            };
            self.note_statistics(&block, section, local, window);
            end -= len;
        }
    }

    /// One statistics block per interface of the output that statistics met the window
    /// for, covering the time of the blocks it added up (the window, widened to them).
    pub(super) fn write_window_statistics(&mut self) {
        for (out, sum) in self.window.iter().enumerate() {
            let (Some(sum), Some(id)) = (sum, self.interfaces.get(out).and_then(|i| i.written)) else {
                continue;
            };
            let stats = crate::pcapng::InterfaceStatistics {
                start_ns: sum.start_ns,
                end_ns: sum.end_ns,
                received: sum.received,
                kernel_drops: sum.interface_drops,
                sensor_drops: sum.os_drops,
            };
            let comment = format!(
                "podcap: lost from {} to {} (the window widened to the statistics kept, one block a second): kernel={} sensor={}",
                crate::units::format_rfc3339_ns(sum.start_ns),
                crate::units::format_rfc3339_ns(sum.end_ns),
                sum.interface_drops,
                sum.os_drops
            );
            self.blocks.statistics(id, &stats, &comment);
            self.stats.kernel_drops = self.stats.kernel_drops.saturating_add(sum.interface_drops);
            self.stats.sensor_drops = self.stats.sensor_drops.saturating_add(sum.os_drops);
        }
    }

    /// Remembers a part of `record` the slice skips, for the next note.
    pub(super) fn note_damage(
        &mut self,
        record: &SegmentRecord,
        offset: u64,
        len: Option<u64>,
        reason: String,
    ) {
        self.stats.damaged += 1;
        self.damage.push(Damage {
            file: record.file.clone(),
            offset,
            len,
            reason,
        });
    }

    /// Writes a note naming the damage met since the last one, as a new section (see the
    /// module rules); the interfaces are declared again before their next packet.
    pub(super) fn write_damage_note(&mut self) {
        if self.damage.is_empty() {
            return;
        }
        let comments: Vec<String> = self.damage.drain(..).map(|d| d.to_string()).collect();
        for comment in &comments {
            log::warn!("slice: {comment}");
        }
        self.blocks.section_header_with_comments(
            concat!("podcap-sensor ", env!("CARGO_PKG_VERSION"), " slice"),
            &comments,
        );
        for iface in &mut self.interfaces {
            iface.written = None;
        }
        self.written_interfaces = 0;
        self.names_seen.clear();
    }
}
