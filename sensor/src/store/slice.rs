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
//! - A snapshot says what was lost: the statistics blocks of the segments it reads (each
//!   counts what its segment's time lost; read from the segment's end when the slice stops
//!   early) are added up per interface and written, one per interface, before the stream
//!   ends. The live stream carries none.
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
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    io::{self, Read, Seek, Write},
    path::Path,
};

use self::secrets::SliceSecrets;
pub use super::select::Selection;
use super::{
    compress::SegmentReader,
    index::{Index, SegmentRecord},
    name::Kind,
};
use crate::pcapng::{
    read::{
        check_section_header, names_valid, next_plausible_block, options_valid, parse_packet,
        parse_packet_header, peek_block, resync, Block, ReadError, Resync, Section, PACKET_OPTIONS,
    },
    BlockWriter, BLOCK_DSB, BLOCK_EPB, BLOCK_NRB,
};
use crate::tls::hello::client_hello_random;

/// How far back in time a packet may arrive after a newer one and still be put in order.
pub const REORDER_WINDOW_NS: u64 = 200_000_000;

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

/// Opens a segment by its record: an active segment that was finished (renamed, perhaps
/// compressed) since the record was taken is found under its new name. A record that
/// names anything but one of the store's files is refused.
fn open_segment(dir: &Path, record: &SegmentRecord) -> io::Result<SegmentReader> {
    let Some((name, quarantined)) = super::name::parse_indexed(&record.file) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the index names a file that is not a segment",
        ));
    };
    let first = SegmentReader::open_limited(&dir.join(&record.file), record.bytes);
    if name.kind != Kind::Active || quarantined {
        return first;
    }
    match first {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match SegmentReader::open_limited(&name.with_kind(Kind::Finished).path_in(dir), record.bytes) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    SegmentReader::open(&name.with_kind(Kind::Gzip).path_in(dir))
                }
                other => other,
            }
        }
        other => other,
    }
}

/// A packet held back until no packet still to be read can be older: its EPB, encoded
/// for the output except for the interface id, which is set when it is written.
struct Pending {
    timestamp_ns: u64,
    arrival: u64,
    interface: usize,
    block: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.timestamp_ns, self.arrival).cmp(&(other.timestamp_ns, other.arrival))
    }
}

/// An interface of the output.
struct OutInterface {
    /// Its IDB as written: the segment's own bytes when they can be copied (native byte
    /// order, nanosecond timestamps), else re-encoded with nanosecond timestamps.
    block: Vec<u8>,
    /// Its id in the output once the IDB is written (pcapng numbers interfaces in the
    /// order their blocks appear).
    written: Option<u32>,
}

/// How a segment's interface maps to the output.
#[derive(Clone, Copy)]
struct LocalInterface {
    out: usize,
    /// The segment's EPBs of this interface can be copied as they are (only the interface
    /// id changes): native byte order and nanosecond timestamps, as the output's.
    copy: bool,
}

/// Read size once the segment's header is behind; the first read is small, because a
/// slice that starts late in a segment seeks away right after the header.
const CHUNK_BYTES: usize = 1 << 20;
const FIRST_READ_BYTES: usize = 64 << 10;
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

/// What one segment's read needs to know about the slice.
struct SegmentPlan<'a> {
    from: u64,
    to: u64,
    selection: &'a Selection,
    /// How far this segment's timestamps may step back (capped at the reorder window).
    step_back: u64,
    /// No packet of this segment is older than this.
    first_ns: u64,
    /// No packet of any later segment is older than this.
    later_first_ns: u64,
}

impl SegmentPlan<'_> {
    /// No packet still to be read is older than this, once the segment's newest packet so
    /// far is `newest`: the rest of the segment steps back at most `step_back` from it (and
    /// never below its first timestamp), later segments begin at `later_first_ns` or after.
    fn no_older_than(&self, newest: u64) -> u64 {
        newest
            .saturating_sub(self.step_back)
            .max(self.first_ns)
            .min(self.later_first_ns)
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

    /// The output id of `interface`, writing its IDB first if this is its first packet.
    fn output_id(&mut self, interface: usize) -> u32 {
        let iface = &mut self.interfaces[interface];
        if let Some(id) = iface.written {
            return id;
        }
        self.blocks.raw(&iface.block);
        let id = self.written_interfaces;
        iface.written = Some(id);
        self.written_interfaces += 1;
        id
    }

    fn count_emitted(&mut self, timestamp_ns: u64) {
        if timestamp_ns < self.emitted_up_to {
            self.stats.late += 1;
        }
        self.emitted_up_to = self.emitted_up_to.max(timestamp_ns);
        self.stats.packets += 1;
    }

    /// Whether no packet is held back.
    fn holds_nothing(&self) -> bool {
        self.in_order.is_empty() && self.heap.is_empty()
    }

    /// Writes the held-back packets no older than `up_to`, oldest first: the queue and
    /// the heap merged by (timestamp, arrival).
    fn release(&mut self, up_to: u64) {
        loop {
            let (oldest, from_queue) = match (self.in_order.front(), self.heap.peek()) {
                (Some(queued), Some(Reverse(stepped_back))) if stepped_back < queued => (stepped_back, false),
                (Some(queued), _) => (queued, true),
                (None, Some(Reverse(stepped_back))) => (stepped_back, false),
                (None, None) => break,
            };
            if oldest.timestamp_ns > up_to {
                break;
            }
            let popped = if from_queue {
                self.in_order.pop_front()
            } else {
                self.heap.pop().map(|Reverse(p)| p)
            };
            let Some(mut p) = popped else {
                break;
            };
            let id = self.output_id(p.interface);
            p.block[EPB_INTERFACE_AT..EPB_INTERFACE_AT + 4].copy_from_slice(&id.to_ne_bytes());
            self.blocks.raw(&p.block);
            self.count_emitted(p.timestamp_ns);
            self.free.push(p.block);
        }
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

    /// Opens a segment; `None` (and the reason in the slice's damage) if it cannot be:
    /// retention deleted it since the index was read, or it cannot be opened.
    fn open(&mut self, dir: &Path, record: &SegmentRecord) -> Option<SegmentReader> {
        match open_segment(dir, record) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.segments_missing += 1;
                self.note_damage(
                    record,
                    0,
                    None,
                    "retired by retention while the slice was read".into(),
                );
                None
            }
            Err(e) => {
                log::warn!("slice: cannot open {}: {e}", record.file);
                self.note_damage(record, 0, None, format!("cannot be opened: {e}"));
                None
            }
        }
    }

    /// The output interface of each interface the segment declared since the last call,
    /// or `None` for one the slice leaves out.
    fn map_interfaces(
        &mut self,
        section: &Section,
        local: &mut Vec<Option<LocalInterface>>,
        selection: &Selection,
    ) {
        for (i, iface) in section.interfaces.iter().enumerate().skip(local.len()) {
            if !selection.wants_interface(&iface.name) {
                local.push(None);
                continue;
            }
            let native_ns = !section.swapped && section.ticks_per_second[i] == 1_000_000_000;
            let out = *self
                .declared
                .entry((iface.name.clone(), iface.link_type))
                .or_insert_with(|| {
                    let block = if native_ns {
                        section.raw_interfaces[i].clone()
                    } else {
                        let mut w = BlockWriter::default();
                        w.interface(iface);
                        w.bytes().to_vec()
                    };
                    self.interfaces.push(OutInterface { block, written: None });
                    self.interfaces.len() - 1
                });
            local.push(Some(LocalInterface { out, copy: native_ns }));
        }
    }

    /// Holds a packet back: its EPB as it is when it can be copied, else re-encoded.
    fn hold(
        &mut self,
        block: &Block<'_>,
        section: &Section,
        interface: LocalInterface,
        timestamp_ns: u64,
    ) -> Result<(), ReadError> {
        let mut bytes = self.free.pop().unwrap_or_default();
        bytes.clear();
        if interface.copy {
            bytes.extend_from_slice(block.raw);
        } else if let Some(packet) = parse_packet(block, section)? {
            self.scratch.clear();
            self.scratch.packet(
                0,
                timestamp_ns,
                packet.original_len,
                packet.data,
                packet.direction,
            );
            bytes.extend_from_slice(self.scratch.bytes());
        }
        let pending = Pending {
            timestamp_ns,
            arrival: self.arrival,
            interface: interface.out,
            block: bytes,
        };
        // Arrival only grows, so a packet no older than the queue's newest sorts after it.
        if self
            .in_order
            .back()
            .is_none_or(|newest| timestamp_ns >= newest.timestamp_ns)
        {
            self.in_order.push_back(pending);
        } else {
            self.heap.push(Reverse(pending));
        }
        self.arrival += 1;
        Ok(())
    }

    /// The hot loop: extends `run` over the EPBs from `at` on that go out as they are
    /// (in the slice, wanted, in order, nothing held back), and returns where it stopped.
    /// Any block it is not sure of is left to the general path, which checks everything;
    /// so this loop only changes state for blocks it takes.
    fn copy_in_order(
        &mut self,
        chunk: &mut [u8],
        mut at: usize,
        local: &[Option<LocalInterface>],
        plan: &SegmentPlan<'_>,
        newest: &mut u64,
        run: &mut Run,
    ) -> usize {
        let word =
            |bytes: &[u8], i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if !self.holds_nothing() || (run.end != at && run.end != run.start) {
            return at;
        }
        if run.end == run.start {
            *run = Run { start: at, end: at };
        }
        while let Some(rest) = chunk.get_mut(at..).filter(|r| r.len() >= 32) {
            let total = word(rest, 4) as usize;
            if word(rest, 0) != BLOCK_EPB
                || total < 32
                || !total.is_multiple_of(4)
                || total > rest.len()
                || word(rest, total - 4) as usize != total
            {
                break;
            }
            let interface = word(rest, 8);
            let ts = (u64::from(word(rest, 12)) << 32) | u64::from(word(rest, 16));
            let captured = word(rest, 20) as usize;
            let Some(Some(target)) = local.get(interface as usize) else {
                break;
            };
            let Some(id) = self.interfaces[target.out].written else {
                break;
            };
            let safe = plan.no_older_than((*newest).max(ts));
            let options_at = 28 + captured.next_multiple_of(4);
            if options_at + 4 > total
                || !options_valid(&rest[options_at..total - 4], false, PACKET_OPTIONS)
                || !target.copy
                || ts < plan.from
                || ts >= plan.to
                || ts > safe
            {
                break;
            }
            if let Some(secrets) = &mut self.secrets {
                if let Some(random) = client_hello_random(&rest[28..28 + captured]) {
                    // Secrets go out before it: the general path writes them.
                    if secrets.waiting_for(&random) {
                        break;
                    }
                    // Nothing waits for it: nothing to write, only remembered.
                    let _ = secrets.deliver(random);
                }
            }
            *newest = (*newest).max(ts);
            rest[EPB_INTERFACE_AT..EPB_INTERFACE_AT + 4].copy_from_slice(&id.to_ne_bytes());
            at += total;
            run.end = at;
            self.stats.bytes_read += total as u64;
            self.count_emitted(ts);
        }
        if run.end == run.start {
            *run = Run::default();
        }
        at
    }

    /// Reads one segment, writing or holding back each of its packets in the slice.
    fn read_segment(
        &mut self,
        mut file: SegmentReader,
        record: &SegmentRecord,
        plan: &SegmentPlan<'_>,
        out: &mut impl Write,
    ) -> Result<(), SliceError> {
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(CHUNK_BYTES.max(chunk.len()), 0);
        let result = self.read_chunks(&mut file, &mut chunk, record, plan, out);
        self.chunk = chunk;
        result
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one pass over a segment's blocks, kept in one place"
    )]
    fn read_chunks(
        &mut self,
        file: &mut SegmentReader,
        chunk: &mut Vec<u8>,
        record: &SegmentRecord,
        plan: &SegmentPlan<'_>,
        out: &mut impl Write,
    ) -> Result<(), SliceError> {
        let mut seek = record.seek_offset(plan.from).filter(|_| file.seekable());
        let mut section = Section::default();
        let mut local: Vec<Option<LocalInterface>> = Vec::new();
        let mut newest = 0u64;
        // chunk[at..end] is read and not yet walked; chunk[0] is at `base` in the file.
        let (mut base, mut at, mut end) = (0u64, 0usize, 0usize);
        let mut run = Run::default();
        let mut read_size = FIRST_READ_BYTES;
        // Damage being skipped: where it began and why; the walk looks for the next block.
        let mut skipping: Option<(u64, &'static str)> = None;
        let mut statistics_read = false;
        // The file has no more bytes: a block header announcing more is damage, not a
        // block to wait for.
        let mut eof = false;
        loop {
            if let Some((start, reason)) = skipping {
                let found = if eof {
                    next_plausible_block(&chunk[..end], at, section.swapped)
                        .map_or(Resync::NeedMore(end), Resync::Found)
                } else {
                    resync(&chunk[..end], at, section.swapped)
                };
                match found {
                    Resync::Found(found) => {
                        let len = (base + found as u64).saturating_sub(start);
                        self.note_damage(record, start, Some(len), reason.into());
                        (at, skipping) = (found, None);
                    }
                    Resync::NeedMore(undecided) => at = undecided,
                }
            } else if seek.is_none() && !section.swapped && !plan.selection.needs_packets() {
                at = self.copy_in_order(&mut chunk[..end], at, &local, plan, &mut newest, &mut run);
            }
            let offset = base + at as u64;
            let peeked = if skipping.is_some() {
                Ok(None)
            } else {
                peek_block(&chunk[at..end], offset, section.swapped)
            };
            let (block_type, total) = match peeked {
                Ok(Some(found)) => found,
                Err(e) => {
                    self.end_run(chunk, &mut run, out)?;
                    let reason = if offset == 0 {
                        "damaged section header"
                    } else {
                        reason_of(&e)
                    };
                    skipping = Some((offset, reason));
                    at += 4;
                    continue;
                }
                Ok(None) => {
                    self.end_run(chunk, &mut run, out)?;
                    if eof {
                        // Nothing more will come: what is left cannot be a whole block.
                        if skipping.is_none() && at < end {
                            skipping = Some((offset, "a block longer than the rest of the file"));
                            at += 4;
                            continue;
                        }
                        if let Some((start, reason)) = skipping {
                            let len = (base + end as u64).saturating_sub(start);
                            self.note_damage(record, start, Some(len), reason.into());
                        }
                        if let Some(short) = file.short_by() {
                            let reason = format!("{short} bytes shorter than its index record says");
                            self.note_damage(record, base + end as u64, Some(short), reason);
                        }
                        break;
                    }
                    // The next block is not all here: keep its start, read more.
                    chunk.copy_within(at..end, 0);
                    (base, end, at) = (offset, end - at, 0);
                    if end >= 12 {
                        let total = peek_total(&chunk[..end], section.swapped);
                        if total > chunk.len() {
                            chunk.resize(total, 0);
                        }
                    }
                    let limit = (end + read_size).min(chunk.len());
                    read_size = CHUNK_BYTES;
                    let start = skipping.map_or(base, |(start, _)| start);
                    let got = match read_some(file, &mut chunk[end..limit]) {
                        Ok(got) => got,
                        Err(e) => {
                            self.note_damage(record, start, None, format!("read error: {e}"));
                            break;
                        }
                    };
                    if got == 0 {
                        eof = true;
                        continue;
                    }
                    end += got;
                    continue;
                }
            };
            let (start, stop) = (at, at + total);
            at = stop;
            let block = Block {
                block_type,
                offset,
                raw: &chunk[start..stop],
            };
            let whole = |reason: &str| (offset, Some(total as u64), reason.to_owned());
            self.stats.bytes_read += total as u64;
            if block_type != BLOCK_EPB {
                self.end_run(chunk, &mut run, out)?;
                let damage = if offset == 0 && check_section_header(block.raw).is_err() {
                    Some(whole("damaged section header"))
                } else if !READ_TYPES.contains(&block_type) {
                    Some(whole("a block of a type podcap does not write"))
                } else if section.observe(&block).is_err() {
                    Some(whole("unreadable interface block"))
                } else {
                    None
                };
                if let Some((offset, len, reason)) = damage {
                    self.note_damage(record, offset, len, reason);
                    continue;
                }
                self.map_interfaces(&section, &mut local, plan.selection);
                if block_type == crate::pcapng::BLOCK_ISB && self.statistics {
                    statistics_read = true;
                    self.note_statistics(&block, &section, &local);
                }
                if block_type == BLOCK_DSB && self.secrets.is_some() {
                    self.read_secrets(&block, &section, record);
                    continue;
                }
                if block_type == BLOCK_NRB && !names_valid(&block, section.swapped) {
                    let (offset, len, _) = whole("");
                    self.note_damage(record, offset, len, "malformed name resolution block".into());
                    continue;
                }
                if block_type == BLOCK_NRB && !section.swapped && !self.names_seen.contains(block.raw) {
                    self.names_seen.insert(block.raw.to_vec());
                    self.blocks.raw(block.raw);
                }
                continue;
            }
            // The header (section and interfaces) is read: skip what the checkpoint says
            // lies wholly before `from`.
            if let Some(target) = seek.take().filter(|&o| o > offset) {
                self.end_run(chunk, &mut run, out)?;
                if let Err(e) = file.seek(io::SeekFrom::Start(target)) {
                    self.note_damage(record, target, None, format!("cannot seek: {e}"));
                    break;
                }
                (base, at, end) = (target, 0, 0);
                continue;
            }
            let header = match parse_packet_header(&block, &section) {
                Ok(Some(header)) => header,
                Ok(None) => continue,
                Err(e) => {
                    self.end_run(chunk, &mut run, out)?;
                    let (offset, len, _) = whole("");
                    self.note_damage(record, offset, len, reason_of(&e).into());
                    continue;
                }
            };
            let ts = header.timestamp_ns;
            newest = newest.max(ts);
            if ts >= plan.to.saturating_add(plan.step_back) {
                // Nothing later in this segment is older than `to`; its statistics are at
                // its end.
                if self.statistics && !statistics_read {
                    self.end_run(chunk, &mut run, out)?;
                    self.trailing_statistics(file, record, &section, &local);
                }
                break;
            }
            let wanted = local
                .get(header.interface_id as usize)
                .copied()
                .flatten()
                .filter(|_| ts >= plan.from && ts < plan.to);
            let Some(interface) = wanted else {
                self.end_run(chunk, &mut run, out)?;
                continue;
            };
            if plan.selection.needs_packets() {
                let selected = match parse_packet(&block, &section) {
                    Ok(Some(packet)) => plan.selection.wants_packet(packet.data, packet.original_len),
                    _ => false,
                };
                if !selected {
                    self.end_run(chunk, &mut run, out)?;
                    continue;
                }
            }
            let hello = self
                .secrets
                .as_ref()
                .and_then(|_| parse_packet(&block, &section).ok().flatten())
                .and_then(|packet| client_hello_random(packet.data));
            if let Some(random) = hello {
                self.deliver_secrets(random, chunk, &mut run, out)?;
            }
            let safe = plan.no_older_than(newest);
            let written = self.interfaces[interface.out].written;
            match written {
                Some(id) if interface.copy && ts <= safe && self.holds_nothing() => {
                    chunk[start + EPB_INTERFACE_AT..start + EPB_INTERFACE_AT + 4]
                        .copy_from_slice(&id.to_ne_bytes());
                    if run.end != start {
                        self.end_run(chunk, &mut run, out)?;
                        run.start = start;
                    }
                    run.end = stop;
                    self.count_emitted(ts);
                }
                _ => {
                    self.end_run(chunk, &mut run, out)?;
                    let block = Block {
                        raw: &chunk[start..stop],
                        ..block
                    };
                    if let Err(e) = self.hold(&block, &section, interface, ts) {
                        let (offset, len, _) = whole("");
                        self.note_damage(record, offset, len, reason_of(&e).into());
                        continue;
                    }
                    self.release(safe);
                    if self.blocks.len() >= 1 << 20 {
                        self.flush(out)?;
                    }
                }
            }
        }
        self.end_run(chunk, &mut run, out)?;
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
            self.add_live_statistics();
            self.write_window_statistics(from, to);
        }
        self.write_damage_note();
        self.flush(out)?;
        out.flush().map_err(SliceError::Write)?;
        Ok(self.stats())
    }
}

/// Block types a segment holds; any other is damage (a flipped type, say).
const READ_TYPES: [u32; 6] = [
    crate::pcapng::BLOCK_SHB,
    crate::pcapng::BLOCK_IDB,
    BLOCK_NRB,
    crate::pcapng::BLOCK_ISB,
    BLOCK_EPB,
    crate::pcapng::BLOCK_DSB,
];

/// Why a block could not be read, in a few words.
fn reason_of(error: &ReadError) -> &'static str {
    match error {
        ReadError::Truncated { .. } => "ends inside a block",
        ReadError::Malformed { reason, .. } => reason,
        ReadError::Io(_) => "read error",
    }
}

/// The total length a block header announces (0 if it cannot be read).
fn peek_total(bytes: &[u8], swapped: bool) -> usize {
    let Some(field) = bytes.get(4..8) else { return 0 };
    let mut value = u32::from_ne_bytes([field[0], field[1], field[2], field[3]]);
    let shb_swapped = bytes
        .get(8..12)
        .map(|m| u32::from_ne_bytes([m[0], m[1], m[2], m[3]]));
    let is_shb = bytes.get(..4) == Some(&crate::pcapng::BLOCK_SHB.to_ne_bytes()[..]);
    let swapped = if is_shb {
        shb_swapped != Some(crate::pcapng::BYTE_ORDER_MAGIC)
    } else {
        swapped
    };
    if swapped {
        value = value.swap_bytes();
    }
    (value as usize).min(crate::pcapng::read::MAX_BLOCK_LEN)
}

/// One read, retried when interrupted; 0 at the end.
fn read_some(file: &mut SegmentReader, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
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

mod notes;
mod secrets;
#[cfg(test)]
mod tests;
