//! One segment's walk in a slice: open it by its record, read it in chunks, and copy,
//! hold back, skip or note each block.
//!
//! Rules:
//! - A record names one of the store's files or nothing is opened; an active segment
//!   finished since the record was taken is found under its new name.
//! - The first read is small (a slice that starts late seeks away right after the
//!   header); the checkpoint of the record says where to seek.
//! - The hot loop ([`Slicer::copy_in_order`]) only takes blocks it is sure of; anything
//!   else goes through the general path, which checks every block and notes damage
//!   (never ends the slice for it).
use std::{
    io::{self, Read, Seek, Write},
    path::Path,
};

use podcap_format::client_hello::client_hello_random;

use super::{LocalInterface, Run, Selection, SliceError, Slicer, EPB_INTERFACE_AT, STATISTICS_LOOKAHEAD_NS};
use crate::{
    pcapng::{
        read::{
            check_section_header, names_valid, next_plausible_block, options_valid, parse_packet,
            parse_packet_header, peek_block, resync, Block, ReadError, Resync, Section, PACKET_OPTIONS,
        },
        BLOCK_DSB, BLOCK_EPB, BLOCK_NRB,
    },
    store::{
        compress::SegmentReader,
        index::SegmentRecord,
        name::{self, Kind},
    },
};

/// Opens a segment by its record: an active segment that was finished (renamed, perhaps
/// compressed) since the record was taken is found under its new name. A record that
/// names anything but one of the store's files is refused.
pub(super) fn open_segment(dir: &Path, record: &SegmentRecord) -> io::Result<SegmentReader> {
    let Some((name, quarantined)) = name::parse_indexed(&record.file) else {
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

/// Read size once the segment's header is behind; the first read is small, because a
/// slice that starts late in a segment seeks away right after the header.
const CHUNK_BYTES: usize = 1 << 20;
const FIRST_READ_BYTES: usize = 64 << 10;

/// What one segment's read needs to know about the slice.
pub(super) struct SegmentPlan<'a> {
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) selection: &'a Selection,
    /// How far this segment's timestamps may step back (capped at the reorder window).
    pub(super) step_back: u64,
    /// No packet of this segment is older than this.
    pub(super) first_ns: u64,
    /// No packet of any later segment is older than this.
    pub(super) later_first_ns: u64,
}

impl SegmentPlan<'_> {
    /// No packet still to be read is older than this, once the segment's newest packet so
    /// far is `newest`: the rest of the segment steps back at most `step_back` from it (and
    /// never below its first timestamp), later segments begin at `later_first_ns` or after.
    pub(super) fn no_older_than(&self, newest: u64) -> u64 {
        newest
            .saturating_sub(self.step_back)
            .max(self.first_ns)
            .min(self.later_first_ns)
    }
}

impl Slicer {
    /// Opens a segment; `None` (and the reason in the slice's damage) if it cannot be:
    /// retention deleted it since the index was read, or it cannot be opened.
    pub(super) fn open(&mut self, dir: &Path, record: &SegmentRecord) -> Option<SegmentReader> {
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

    /// The hot loop: extends `run` over the EPBs from `at` on that go out as they are
    /// (in the slice, wanted, in order, nothing held back), and returns where it stopped.
    /// Any block it is not sure of is left to the general path, which checks everything;
    /// so this loop only changes state for blocks it takes.
    pub(super) fn copy_in_order(
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
    pub(super) fn read_segment(
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
    pub(super) fn read_chunks(
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
        // Past the window's packets, a slice with statistics reads on for the group of
        // statistics blocks that ends the window's time; a block starting at or after `to`
        // says it was read.
        let (mut past_window, mut group_after_window) = (false, false);
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
                if past_window && group_after_window && block_type != crate::pcapng::BLOCK_ISB {
                    break;
                }
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
                    let start = self.note_statistics(&block, &section, &local, (plan.from, plan.to));
                    group_after_window |= start.is_some_and(|start| start >= plan.to);
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
                // Nothing later in this segment is older than `to`: only statistics blocks
                // may still count the window's time (see the slice's rules).
                if !self.statistics || group_after_window {
                    break;
                }
                self.end_run(chunk, &mut run, out)?;
                past_window = true;
                if ts >= plan.to.saturating_add(STATISTICS_LOOKAHEAD_NS) {
                    self.trailing_statistics(file, record, &section, &local, (plan.from, plan.to));
                    break;
                }
                continue;
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
pub(super) fn reason_of(error: &ReadError) -> &'static str {
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
