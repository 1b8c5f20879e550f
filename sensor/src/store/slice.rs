//! Time slices of the store: one pcapng stream holding exactly the packets with
//! `from <= ts < to` (optionally of some interfaces), in timestamp order.
//!
//! Rules:
//! - Only segments the index says overlap the slice are read; packets are streamed, so
//!   memory depends on the reorder window, not on the slice's size.
//! - Segments hold packets in arrival order per capture queue, so timestamps may step back
//!   by a few milliseconds; packets pass through a heap and leave once they are
//!   [`REORDER_WINDOW_NS`] older than the newest packet read. A packet that arrives later
//!   still is written anyway (nothing is dropped) and counted in [`SliceStats::late`].
//! - Interfaces are identified by name and link type across segments: the output declares
//!   each one once, just before its first packet. Name Resolution Blocks are passed on,
//!   each distinct one once.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    io::{self, Write},
    path::Path,
};

use super::{
    compress::SegmentReader,
    index::{Index, SegmentRecord},
};
use crate::pcapng::{
    read::{parse_packet, BlockReader, ReadError, Section},
    BlockWriter, Direction,
};

/// How far back in time a packet may arrive after a newer one and still be put in order.
pub const REORDER_WINDOW_NS: u64 = 200_000_000;

#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error("cannot read segment {file}")]
    Read {
        file: String,
        #[source]
        source: ReadError,
    },
    #[error("cannot open segment {file}")]
    Open {
        file: String,
        #[source]
        source: io::Error,
    },
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
}

/// Opens a segment by its record: an active segment that was finished (renamed, perhaps
/// compressed) since the record was taken is found under its new name.
fn open_segment(dir: &Path, record: &SegmentRecord) -> io::Result<SegmentReader> {
    let first = SegmentReader::open_limited(&dir.join(&record.file), record.bytes);
    let Some(finished) = record.file.strip_suffix(".active") else {
        return first;
    };
    match first {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match SegmentReader::open_limited(&dir.join(finished), record.bytes) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    SegmentReader::open(&dir.join(format!("{finished}.gz")))
                }
                other => other,
            }
        }
        other => other,
    }
}

struct Pending {
    interface: usize,
    original_len: u32,
    direction: Direction,
    data: Vec<u8>,
}

/// A slicer: writes slices of the store as one pcapng section, one call after another.
///
/// The section header goes out with the first call and each interface is declared once,
/// so consecutive calls for adjacent ranges (the live stream) form one valid stream.
pub struct Slicer {
    blocks: BlockWriter,
    header_written: bool,
    /// Raw IDB of each interface found, and its id in the output once written (pcapng
    /// numbers interfaces in the order their blocks appear).
    interfaces: Vec<(Vec<u8>, Option<u32>)>,
    /// (name, link type) → index in `interfaces`.
    declared: HashMap<(String, u16), usize>,
    written_interfaces: u32,
    stats: SliceStats,
    emitted_up_to: u64,
    free: Vec<Vec<u8>>,
    /// Name Resolution Blocks already passed on (segments repeat them).
    names_seen: std::collections::HashSet<Vec<u8>>,
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
        }
    }
}

impl Slicer {
    /// What was written so far.
    #[must_use]
    pub fn stats(&self) -> SliceStats {
        self.stats
    }

    fn emit(&mut self, ts: u64, p: &Pending) {
        let Some((idb, written)) = self.interfaces.get_mut(p.interface) else {
            return;
        };
        let id = if let Some(id) = *written {
            id
        } else {
            self.blocks.raw(idb);
            let id = self.written_interfaces;
            *written = Some(id);
            self.written_interfaces += 1;
            id
        };
        if ts < self.emitted_up_to {
            self.stats.late += 1;
        }
        self.emitted_up_to = self.emitted_up_to.max(ts);
        self.blocks.packet(id, ts, p.original_len, &p.data, p.direction);
        self.stats.packets += 1;
    }

    fn flush(&mut self, out: &mut impl Write) -> Result<(), SliceError> {
        out.write_all(self.blocks.bytes()).map_err(SliceError::Write)?;
        self.stats.bytes_written += self.blocks.len() as u64;
        self.blocks.clear();
        Ok(())
    }

    /// Opens a segment; `None` if retention deleted it since the index was read.
    fn open(&mut self, dir: &Path, record: &SegmentRecord) -> Result<Option<SegmentReader>, SliceError> {
        match open_segment(dir, record) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.segments_missing += 1;
                Ok(None)
            }
            Err(source) => Err(SliceError::Open {
                file: record.file.clone(),
                source,
            }),
        }
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
        interfaces: Option<&[String]>,
        out: &mut impl Write,
    ) -> Result<SliceStats, SliceError> {
        if !self.header_written {
            self.blocks
                .section_header(concat!("podcap-sensor ", env!("CARGO_PKG_VERSION"), " slice"));
            self.header_written = true;
        }
        // Packets waiting for the reorder window, keyed by (timestamp, arrival number).
        let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let (mut arrival, mut newest) = (0u64, 0u64);

        for record in segments {
            let Some(file) = self.open(dir, record)? else {
                continue;
            };
            let seekable = file.seekable();
            let read_err = |source| SliceError::Read {
                file: record.file.clone(),
                source,
            };
            let mut reader = BlockReader::new(file);
            let mut section = Section::default();
            let mut local_to_out: Vec<Option<usize>> = Vec::new();
            self.stats.segments_read += 1;
            let mut seek = record.seek_offset(from).filter(|_| seekable);
            while let Some(block) = reader.next_block().map_err(read_err)? {
                let block_type = block.block_type;
                self.stats.bytes_read += block.raw.len() as u64;
                section.observe(&block).map_err(read_err)?;
                for (i, iface) in section.interfaces.iter().enumerate().skip(local_to_out.len()) {
                    let wanted = interfaces.is_none_or(|names| names.contains(&iface.name));
                    local_to_out.push(wanted.then(|| {
                        *self
                            .declared
                            .entry((iface.name.clone(), iface.link_type))
                            .or_insert_with(|| {
                                self.interfaces.push((section.raw_interfaces[i].clone(), None));
                                self.interfaces.len() - 1
                            })
                    }));
                }
                if block_type == crate::pcapng::BLOCK_NRB && !self.names_seen.contains(block.raw) {
                    self.names_seen.insert(block.raw.to_vec());
                    self.blocks.raw(block.raw);
                }
                // The header (section and interfaces) is read: skip what the checkpoint
                // says lies wholly before `from`.
                if block_type == crate::pcapng::BLOCK_EPB {
                    if let Some(offset) = seek.take().filter(|&o| o > block.offset) {
                        reader.seek_to(offset).map_err(read_err)?;
                        continue;
                    }
                }
                let Some(packet) = parse_packet(&block, &section).map_err(read_err)? else {
                    continue;
                };
                if packet.timestamp_ns >= to.saturating_add(REORDER_WINDOW_NS) {
                    // Nothing later in this segment is older than `to`, given the window.
                    break;
                }
                if packet.timestamp_ns < from || packet.timestamp_ns >= to {
                    continue;
                }
                let Some(Some(interface)) = local_to_out.get(packet.interface_id as usize).copied() else {
                    continue;
                };
                let mut data = self.free.pop().unwrap_or_default();
                data.clear();
                data.extend_from_slice(packet.data);
                let p = Pending {
                    interface,
                    original_len: packet.original_len,
                    direction: packet.direction,
                    data,
                };
                pending.insert(arrival, p);
                heap.push(Reverse((packet.timestamp_ns, arrival)));
                arrival += 1;
                newest = newest.max(packet.timestamp_ns);
                while let Some(&Reverse((ts, key))) = heap.peek() {
                    if ts.saturating_add(REORDER_WINDOW_NS) > newest {
                        break;
                    }
                    heap.pop();
                    if let Some(p) = pending.remove(&key) {
                        self.emit(ts, &p);
                        self.free.push(p.data);
                    }
                }
                if self.blocks.len() >= 1 << 20 {
                    self.flush(out)?;
                }
            }
        }
        while let Some(Reverse((ts, key))) = heap.pop() {
            if let Some(p) = pending.remove(&key) {
                self.emit(ts, &p);
                self.free.push(p.data);
            }
        }
        self.flush(out)?;
        out.flush().map_err(SliceError::Write)?;
        Ok(self.stats)
    }
}

/// Writes the slice `[from, to)` of the finished segments in `index` to `out`.
pub fn write_slice(
    dir: &Path,
    index: &Index,
    from: u64,
    to: u64,
    interfaces: Option<&[String]>,
    out: &mut impl Write,
) -> Result<SliceStats, SliceError> {
    write_segments(dir, &index.overlapping(from, to), from, to, interfaces, out)
}

/// Writes the slice `[from, to)` of `segments` as one complete pcapng stream.
pub fn write_segments(
    dir: &Path,
    segments: &[&SegmentRecord],
    from: u64,
    to: u64,
    interfaces: Option<&[String]>,
    out: &mut impl Write,
) -> Result<SliceStats, SliceError> {
    Slicer::default().write(dir, segments, from, to, interfaces, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcapng::{read::Blocks, InterfaceDescription, LINKTYPE_ETHERNET};

    fn segment(dir: &Path, seq: u64, ifaces: &[&str], packets: &[(u32, u64)]) -> SegmentRecord {
        let mut w = BlockWriter::default();
        w.section_header("test");
        for name in ifaces {
            w.interface(&InterfaceDescription {
                name: (*name).into(),
                description: String::new(),
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65535,
            });
        }
        for &(iface, ts) in packets {
            w.packet(iface, ts, 60, &ts.to_be_bytes(), Direction::Inbound);
        }
        let path = dir.join(format!("podcap-{seq:010}.pcapng"));
        std::fs::write(&path, w.bytes()).unwrap();
        SegmentRecord::scan(&path, seq).unwrap()
    }

    fn read_back(bytes: &[u8]) -> Vec<(String, u64)> {
        let mut section = Section::default();
        let mut out = Vec::new();
        for block in Blocks::new(bytes) {
            let block = block.unwrap();
            section.observe(&block).unwrap();
            if let Some(p) = parse_packet(&block, &section).unwrap() {
                assert_eq!(p.data, &p.timestamp_ns.to_be_bytes()[..]);
                out.push((
                    section.interfaces[p.interface_id as usize].name.clone(),
                    p.timestamp_ns,
                ));
            }
        }
        out
    }

    #[test]
    fn slice_is_exact_ordered_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let ms = 1_000_000;
        // Arrival order steps back inside and across segments, as capture queues do.
        let a = segment(
            dir.path(),
            1,
            &["eth0", "eth1"],
            &[(0, 100 * ms), (1, 95 * ms), (0, 300 * ms), (1, 290 * ms)],
        );
        let b = segment(
            dir.path(),
            2,
            &["eth0", "eth1"],
            &[(1, 280 * ms), (0, 400 * ms), (0, 900 * ms)],
        );
        let c = segment(dir.path(), 3, &["eth1"], &[(0, 2_000 * ms)]);
        let index = Index::from_records(vec![a, b, c]);

        let mut out = Vec::new();
        let stats = write_slice(dir.path(), &index, 95 * ms, 900 * ms, None, &mut out).unwrap();
        let got = read_back(&out);
        let ts: Vec<u64> = got.iter().map(|(_, t)| t / ms).collect();
        assert_eq!(
            ts,
            vec![95, 100, 280, 290, 300, 400],
            "exactly [from, to), in order"
        );
        assert_eq!(stats.segments_read, 2, "the segment after `to` is not read");
        assert_eq!(stats.late, 0);

        let mut out = Vec::new();
        write_slice(
            dir.path(),
            &index,
            0,
            u64::MAX,
            Some(&["eth1".to_owned()]),
            &mut out,
        )
        .unwrap();
        let got = read_back(&out);
        assert!(got.iter().all(|(name, _)| name == "eth1"));
        assert_eq!(
            got.iter().map(|(_, t)| t / ms).collect::<Vec<_>>(),
            vec![95, 280, 290, 2_000]
        );
    }

    #[test]
    fn adjacent_calls_of_one_slicer_form_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let ms = 1_000_000;
        let a = segment(
            dir.path(),
            1,
            &["eth0", "eth1"],
            &[(0, 100 * ms), (1, 95 * ms), (1, 300 * ms)],
        );
        let b = segment(dir.path(), 2, &["eth1", "eth0"], &[(1, 280 * ms), (0, 400 * ms)]);
        let index = Index::from_records(vec![a, b]);
        let mut whole = Vec::new();
        write_slice(dir.path(), &index, 0, u64::MAX, None, &mut whole).unwrap();
        let mut pieces = Vec::new();
        let mut slicer = Slicer::default();
        for (from, to) in [
            (0, 99 * ms),
            (99 * ms, 99 * ms),
            (99 * ms, 290 * ms),
            (290 * ms, u64::MAX),
        ] {
            let list = index.overlapping(from, to);
            slicer
                .write(dir.path(), &list, from, to, None, &mut pieces)
                .unwrap();
        }
        assert_eq!(read_back(&pieces), read_back(&whole));
        let sections = Blocks::new(&pieces)
            .filter(|b| b.as_ref().unwrap().block_type == crate::pcapng::BLOCK_SHB)
            .count();
        let idbs = Blocks::new(&pieces)
            .filter(|b| b.as_ref().unwrap().block_type == crate::pcapng::BLOCK_IDB)
            .count();
        assert_eq!(
            (sections, idbs),
            (1, 2),
            "one header, each interface declared once"
        );
        assert_eq!(slicer.stats().packets, 5);
    }

    #[test]
    fn slices_seek_past_what_lies_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let ms = 1_000_000;
        // ~6 MB of 1000-byte packets, one per ms, slightly out of order in pairs.
        let packets: Vec<(u32, u64)> = (0..6_000u64).map(|i| (0, (i ^ 1) * ms + ms)).collect();
        let mut w = BlockWriter::default();
        w.section_header("test");
        w.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        for &(_, ts) in &packets {
            w.packet(0, ts, 1000, &[0u8; 1000], Direction::Inbound);
        }
        let path = dir.path().join("podcap-0000000001.pcapng");
        std::fs::write(&path, w.bytes()).unwrap();
        let record = SegmentRecord::scan(&path, 1).unwrap();
        assert!(record.checkpoints.len() >= 5, "{:?}", record.checkpoints);
        let index = Index::from_records(vec![record]);

        let mut out = Vec::new();
        let stats = write_slice(dir.path(), &index, 5_000 * ms, 5_100 * ms, None, &mut out).unwrap();
        assert_eq!(stats.packets, 100);
        assert!(stats.bytes_read < 2 << 20, "read {} of ~6 MB", stats.bytes_read);
        let mut section = Section::default();
        let mut ts = Vec::new();
        for block in Blocks::new(&out) {
            let block = block.unwrap();
            section.observe(&block).unwrap();
            if let Some(p) = parse_packet(&block, &section).unwrap() {
                ts.push(p.timestamp_ns / ms);
            }
        }
        assert_eq!(ts, (5_000..5_100).collect::<Vec<_>>());
    }

    #[test]
    fn an_empty_slice_is_still_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let stats = write_slice(dir.path(), &Index::default(), 0, 10, None, &mut out).unwrap();
        assert_eq!(stats.packets, 0);
        assert_eq!(Blocks::new(&out).count(), 1, "a section header alone");
    }
}
