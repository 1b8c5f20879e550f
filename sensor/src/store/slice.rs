//! Time slices of the store: one pcapng stream holding exactly the packets with
//! `from <= ts < to` (optionally of some interfaces), in timestamp order.
//!
//! Rules:
//! - Only segments the index says overlap the slice are read; packets are streamed, so
//!   memory depends on the reorder window, not on the slice's size.
//! - Segments hold packets in arrival order per capture queue, so timestamps may step back
//!   by a few milliseconds. Each segment's record says how far at most
//!   ([`SegmentRecord::max_step_back_ns`]); a packet is held back only until no
//!   packet still to be read can be older: neither the rest of its segment (by that bound)
//!   nor a later segment (by their first timestamps). The bound is capped at
//!   [`REORDER_WINDOW_NS`]; a packet later still is written anyway (nothing is dropped) and
//!   counted in [`SliceStats::late`].
//! - Packets that can go out at once (the common case: a segment in timestamp order) are
//!   not re-encoded: their EPBs go from the read buffer to `out` as they are, in runs, with
//!   only the interface id rewritten. A segment in another byte order or timestamp unit is
//!   re-encoded, in nanoseconds.
//! - Interfaces are identified by name and link type across segments: the output declares
//!   each one once, just before its first packet. Name Resolution Blocks are passed on,
//!   each distinct one once.
//! - A snapshot says what was lost: the segments' statistics blocks whose time meets the
//!   window (one group a second, each counting since the one before; a slice reads past
//!   `to` until a group starts at or after it, at most [`STATISTICS_LOOKAHEAD_NS`], then
//!   the segment's last group from its end), with what the active segment counted since
//!   its last readable group, are added up per interface and written, one per interface,
//!   before the stream ends, naming the time they cover. The live stream carries none.
//! - TLS secrets go out only in a slice asked for them ([`Slicer::with_secrets`]): those
//!   of the sessions whose ClientHello it delivers, before it (`secrets.rs` has the rules).
//!   Any other slice leaves the segments' Decryption Secrets Blocks out.
//! - Damage never ends a slice and is never hidden: a block that cannot be read is skipped
//!   up to the next plausible block (a read error, the rest of the segment), a file shorter
//!   than its index record is damage too, and so is a segment retention retired while the
//!   slice ran. The stream then carries a note: a Section Header Block whose comments
//!   ([`DAMAGE_PREFIX`]) name each segment and byte range, at the end of a slice (each call
//!   of the live stream). Packets after a note are in its new section, their interfaces
//!   declared again. Only a failure to write the output ends a slice.
//!
//! Layout: this file is the slicer's state and its calls; `segment.rs` walks one segment,
//! `reorder.rs` holds packets back, `interfaces.rs` declares the output's interfaces,
//! `notes.rs` writes damage notes and window statistics, `secrets.rs` the TLS secrets.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    io::{self, Write},
    path::Path,
};

use self::{
    interfaces::{LocalInterface, OutInterface},
    reorder::Pending,
    secrets::SliceSecrets,
    segment::{reason_of, SegmentPlan},
};
use super::index::{Index, SegmentRecord};
pub use super::select::Selection;
use crate::pcapng::BlockWriter;

/// How far back in time a packet may arrive after a newer one and still be put in order.
pub const REORDER_WINDOW_NS: u64 = 200_000_000;

/// How far past a window's end a slice with statistics reads for the group of statistics
/// blocks that ends the window's time (they come once a second), before it takes the
/// segment's last group instead.
pub const STATISTICS_LOOKAHEAD_NS: u64 = 3_000_000_000;

pub use self::notes::Damage;
use self::notes::WindowStatistics;
pub use crate::pcapng::DAMAGE_PREFIX;

/// Why a slice ended early: only its output can make it (damage in the store is skipped
/// and noted instead).
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error("writing the slice failed")]
    Write(#[source] io::Error),
}

/// What a slice held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SliceStats {
    pub segments_read: usize,
    /// Bytes of segment data read (seeking skips the rest).
    pub bytes_read: u64,
    pub packets: u64,
    pub bytes_written: u64,
    /// Packets written out of order because they arrived after the reorder window.
    pub late: u64,
    /// Segments deleted by retention between the index lookup and the read.
    pub segments_missing: usize,
    /// Damaged parts skipped (each named in the stream's notes).
    pub damaged: usize,
    /// What the statistics blocks of the window's segments say was lost, summed over its
    /// interfaces (gathered by [`Slicer::with_statistics`] only): by the kernel, by podcap.
    pub kernel_drops: u64,
    pub sensor_drops: u64,
    /// TLS key log lines written (a slice with secrets only).
    pub secrets_written: u64,
}

/// Runs of packets copied straight from the read buffer at least this long are written
/// to `out` directly; shorter ones are gathered first, so `out` sees few, large writes.
const DIRECT_WRITE_BYTES: usize = 64 << 10;

/// Offset of the interface id in an EPB.
const EPB_INTERFACE_AT: usize = 8;

/// A slicer: writes slices of the store as one pcapng section, one call after another.
///
/// The section header goes out with the first call and each interface is declared once,
/// so consecutive calls for adjacent ranges (the live stream) form one valid stream.
///
/// Packets that can go out as soon as they are read (nothing older can follow: see
/// [`SegmentRecord::max_step_back_ns`]) are copied from the read buffer as they are, in
/// runs, with the interface id patched; only the others wait: those in timestamp order
/// in a queue, those that step back in a heap, and both are released merged.
pub struct Slicer {
    blocks: BlockWriter,
    header_written: bool,
    interfaces: Vec<OutInterface>,
    /// (name, link type) → index in `interfaces`.
    declared: HashMap<(String, u16), usize>,
    written_interfaces: u32,
    stats: SliceStats,
    emitted_up_to: u64,
    free: Vec<Vec<u8>>,
    /// Name Resolution Blocks already passed on (segments repeat them).
    names_seen: std::collections::HashSet<Vec<u8>>,
    /// Packets waiting for the reorder window that arrived no older than the newest
    /// packet held before them: in order by (timestamp, arrival), oldest at the front.
    /// Most held packets are these, and they cost no heap operations.
    in_order: VecDeque<Pending>,
    /// Packets waiting for the reorder window that stepped back behind a held one: a
    /// min-heap by timestamp, then arrival.
    heap: BinaryHeap<Reverse<Pending>>,
    arrival: u64,
    /// The read buffer, kept between segments and calls.
    chunk: Vec<u8>,
    /// Encodes EPBs that cannot be copied as they are.
    scratch: BlockWriter,
    /// Damage met since the last note.
    damage: Vec<Damage>,
    /// Whether the window's statistics are gathered and written (snapshots).
    statistics: bool,
    /// Per output interface: the statistics of the segments read.
    window: Vec<Option<WindowStatistics>>,
    /// What the active segment's interfaces counted since its statistics began (no block
    /// holds it yet), by interface name: added to the window's statistics.
    live: Vec<LiveStatistics>,
    /// The secrets to deliver, in a slice asked for them.
    secrets: Option<SliceSecrets>,
}

impl Default for Slicer {
    fn default() -> Self {
        Self {
            blocks: BlockWriter::with_capacity(2 << 20),
            header_written: false,
            interfaces: Vec::new(),
            declared: HashMap::new(),
            written_interfaces: 0,
            stats: SliceStats::default(),
            emitted_up_to: 0,
            free: Vec::new(),
            names_seen: std::collections::HashSet::new(),
            in_order: VecDeque::new(),
            heap: BinaryHeap::new(),
            arrival: 0,
            chunk: Vec::new(),
            scratch: BlockWriter::default(),
            damage: Vec::new(),
            statistics: false,
            window: Vec::new(),
            live: Vec::new(),
            secrets: None,
        }
    }
}

/// A run of EPBs in the read buffer that go out as they are.
#[derive(Clone, Copy, Default)]
struct Run {
    start: usize,
    end: usize,
}

impl Slicer {
    /// A slicer for a snapshot: the window's statistics are written at its end.
    #[must_use]
    pub fn with_statistics() -> Self {
        Self {
            statistics: true,
            ..Self::default()
        }
    }

    /// This slicer delivers the TLS secrets of the sessions whose ClientHello it delivers.
    #[must_use]
    pub fn with_secrets(self) -> Self {
        Self {
            secrets: Some(SliceSecrets::default()),
            ..self
        }
    }

    /// Adds what the active segment's interfaces counted since its statistics began to
    /// the window's statistics (a window reaching into the active segment).
    #[must_use]
    pub fn live_statistics(mut self, live: &[LiveStatistics]) -> Self {
        self.live = live.to_vec();
        self
    }

    /// This slicer delivers the TLS secrets or leaves them out, as `secrets` says.
    #[must_use]
    pub fn secrets(self, secrets: Secrets) -> Self {
        match secrets {
            Secrets::LeftOut => self,
            Secrets::Delivered => self.with_secrets(),
        }
    }

    /// What was written so far.
    #[must_use]
    pub fn stats(&self) -> SliceStats {
        self.stats
    }

    fn count_emitted(&mut self, timestamp_ns: u64) {
        if timestamp_ns < self.emitted_up_to {
            self.stats.late += 1;
        }
        self.emitted_up_to = self.emitted_up_to.max(timestamp_ns);
        self.stats.packets += 1;
    }

    fn flush(&mut self, out: &mut impl Write) -> Result<(), SliceError> {
        out.write_all(self.blocks.bytes()).map_err(SliceError::Write)?;
        self.stats.bytes_written += self.blocks.len() as u64;
        self.blocks.clear();
        Ok(())
    }

    /// Ends `run`: its blocks go out after everything gathered before them.
    fn end_run(&mut self, chunk: &[u8], run: &mut Run, out: &mut impl Write) -> Result<(), SliceError> {
        let bytes = &chunk[run.start..run.end];
        *run = Run::default();
        if bytes.len() < DIRECT_WRITE_BYTES {
            self.blocks.raw(bytes);
            return Ok(());
        }
        self.flush(out)?;
        out.write_all(bytes).map_err(SliceError::Write)?;
        self.stats.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// Writes the packets of `[from, to)` in `segments` (in first-timestamp order; each
    /// read up to its recorded byte count, so an active segment is read only as far as it
    /// is whole), then flushes `out`.
    pub fn write(
        &mut self,
        dir: &Path,
        segments: &[&SegmentRecord],
        from: u64,
        to: u64,
        selection: &Selection,
        out: &mut impl Write,
    ) -> Result<SliceStats, SliceError> {
        if !self.header_written {
            self.blocks
                .section_header(concat!("podcap-sensor ", env!("CARGO_PKG_VERSION"), " slice"));
            self.header_written = true;
            // At once: a client that waits for its first byte (`--request-timeout`) knows
            // the slice is under way while a selective filter reads on.
            self.flush(out)?;
        }
        // later_first[i]: no packet of segments[i..] is older than this.
        let mut later_first = vec![u64::MAX; segments.len() + 1];
        for (i, record) in segments.iter().enumerate().rev() {
            later_first[i] = later_first[i + 1].min(record.first_ns);
        }
        for (i, record) in segments.iter().enumerate() {
            // Everything held back that no packet still to come can precede goes now.
            self.release(later_first[i]);
            let Some(file) = self.open(dir, record) else {
                continue;
            };
            self.stats.segments_read += 1;
            let plan = SegmentPlan {
                from,
                to,
                selection,
                step_back: record.max_step_back_ns.min(REORDER_WINDOW_NS),
                first_ns: record.first_ns,
                later_first_ns: later_first[i + 1],
            };
            self.read_segment(file, record, &plan, out)?;
        }
        self.release(u64::MAX);
        if self.statistics {
            self.add_live_statistics(from, to);
            self.write_window_statistics();
        }
        self.write_damage_note();
        self.flush(out)?;
        out.flush().map_err(SliceError::Write)?;
        Ok(self.stats())
    }
}

/// Writes the slice `[from, to)` of the finished segments in `index` to `out`.
pub fn write_slice(
    dir: &Path,
    index: &Index,
    from: u64,
    to: u64,
    selection: &Selection,
    out: &mut impl Write,
) -> Result<SliceStats, SliceError> {
    write_segments(
        dir,
        &index.overlapping(from, to),
        (from, to),
        selection,
        (Secrets::LeftOut, &[]),
        out,
    )
}

/// What an interface of the active segment counted since its statistics began, by name.
pub type LiveStatistics = (String, crate::pcapng::InterfaceStatistics);

/// Whether a slice carries the TLS secrets of the sessions it delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrets {
    /// The segments' Decryption Secrets Blocks stay out (every slice but the admin's).
    LeftOut,
    /// Those of the sessions whose ClientHello the slice delivers go out, before it.
    Delivered,
}

/// Writes the slice `[from, to)` of `segments` as one complete pcapng stream, with the
/// window's statistics (with what the active segment's interfaces counted so far, `live`)
/// and, when asked, its sessions' secrets.
pub fn write_segments(
    dir: &Path,
    segments: &[&SegmentRecord],
    (from, to): (u64, u64),
    selection: &Selection,
    (secrets, live): (Secrets, &[LiveStatistics]),
    out: &mut impl Write,
) -> Result<SliceStats, SliceError> {
    let mut slicer = Slicer::with_statistics().secrets(secrets).live_statistics(live);
    slicer.write(dir, segments, from, to, selection, out)
}

mod interfaces;
mod notes;
mod reorder;
mod secrets;
mod segment;
#[cfg(test)]
mod tests;
