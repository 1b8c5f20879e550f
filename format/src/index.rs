//! The store's time index: one record per finished segment, kept in `index.tsv` beside
//! the segments.
//!
//! Rules:
//! - A segment's time range is that of its packets (first and last timestamp), never its
//!   file name or mtime: a segment that began before a cut but holds later packets is found.
//! - The manifest is rewritten whole, atomically: write `index.tsv.tmp`, fsync, rename,
//!   fsync the directory. Its last line carries the record count and a CRC-32 of every line
//!   before it; a manifest that fails that check is rebuilt by scanning the segments.
//! - Lookups of the segments overlapping `[from, to)` cost O(log n + k): records are kept
//!   sorted by first timestamp, with a running maximum of last timestamps, so two binary
//!   searches bound the candidates.
//!
//! Layout of `index.tsv` (fields separated by one tab, shown here as `→`):
//! ```text
//! podcap-index → 1
//! seg → <seq> → <file> → <first_ns> → <last_ns> → <packets> → <bytes> → <drops> → <if:packets,...>
//!     → <offset@ts,...> → <max_step_back_ns> → <offset+len,...>
//! end → <records> → <crc32 of the lines above, hex>
//! ```
use std::{
    fs,
    io::{self, Write},
    path::Path,
};

/// File name of the manifest.
pub const MANIFEST: &str = "index.tsv";
const HEADER: &str = "podcap-index\t1";

/// What the index knows about one finished segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentRecord {
    pub seq: u64,
    pub file: String,
    pub first_ns: u64,
    pub last_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Drops reported by the segment's statistics blocks (all stages).
    pub drops: u64,
    /// Packets per interface id of the segment.
    pub per_interface: Vec<u64>,
    /// Sparse offset index, about one entry per [`CHECKPOINT_BYTES`]: `(offset of a block,
    /// largest timestamp of every packet, and end time of every statistics block, before
    /// it)`. A slice starting at `from` may seek
    /// to the last offset whose timestamp is below `from`.
    pub checkpoints: Vec<(u64, u64)>,
    /// The most any packet's timestamp lies below the largest timestamp before it in the
    /// segment (0 when the segment is in timestamp order). A slice holds a packet back only
    /// as long as this says an older one may still follow. [`STEP_BACK_UNKNOWN`] for records
    /// from a manifest written before the field existed.
    pub max_step_back_ns: u64,
    /// Byte ranges `(offset, len)` of the file that could not be read as blocks (only in
    /// quarantined files; `len` 0: from `offset` to the end of a compressed file).
    pub damaged: Vec<(u64, u64)>,
}

/// `max_step_back_ns` of a record that does not know it.
pub const STEP_BACK_UNKNOWN: u64 = u64::MAX;

/// Spacing of the sparse offset index.
pub const CHECKPOINT_BYTES: u64 = 1 << 20;

impl SegmentRecord {
    fn encode(&self) -> String {
        let per_if: Vec<String> = self
            .per_interface
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i}:{n}"))
            .collect();
        let checkpoints: Vec<String> = self.checkpoints.iter().map(|(o, t)| format!("{o}@{t}")).collect();
        let damaged: Vec<String> = self.damaged.iter().map(|(o, l)| format!("{o}+{l}")).collect();
        format!(
            "seg\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.seq,
            self.file,
            self.first_ns,
            self.last_ns,
            self.packets,
            self.bytes,
            self.drops,
            per_if.join(","),
            checkpoints.join(","),
            self.max_step_back_ns,
            damaged.join(",")
        )
    }

    fn decode(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split('\t').collect();
        // Ten fields before `max_step_back_ns` was added, eleven before `damaged`, twelve since.
        if !(10..=12).contains(&f.len()) || f[0] != "seg" {
            return None;
        }
        let seq: u64 = f[1].parse().ok()?;
        // The file must be one of the store's names for this very segment: a record is
        // never a way to open another path.
        let (name, _) = crate::segment_name::parse_indexed(f[2])?;
        if name.seq != seq || name.kind == crate::segment_name::Kind::Active {
            return None;
        }
        let mut per_interface = Vec::new();
        for (i, pair) in f[8].split(',').filter(|p| !p.is_empty()).enumerate() {
            let (id, n) = pair.split_once(':')?;
            if id.parse::<usize>().ok()? != i {
                return None;
            }
            per_interface.push(n.parse().ok()?);
        }
        let mut checkpoints = Vec::new();
        for pair in f[9].split(',').filter(|p| !p.is_empty()) {
            let (offset, ts) = pair.split_once('@')?;
            checkpoints.push((offset.parse().ok()?, ts.parse().ok()?));
        }
        let mut damaged = Vec::new();
        for pair in f
            .get(11)
            .copied()
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let (offset, len) = pair.split_once('+')?;
            damaged.push((offset.parse().ok()?, len.parse().ok()?));
        }
        Some(Self {
            seq,
            file: f[2].to_owned(),
            first_ns: f[3].parse().ok()?,
            last_ns: f[4].parse().ok()?,
            packets: f[5].parse().ok()?,
            bytes: f[6].parse().ok()?,
            drops: f[7].parse().ok()?,
            per_interface,
            checkpoints,
            max_step_back_ns: match f.get(10) {
                Some(field) => field.parse().ok()?,
                None => STEP_BACK_UNKNOWN,
            },
            damaged,
        })
    }

    /// Where a slice that starts at `from` may begin reading (after the header blocks).
    #[must_use]
    pub fn seek_offset(&self, from: u64) -> Option<u64> {
        let usable = self
            .checkpoints
            .partition_point(|&(_, max_before)| max_before < from);
        usable.checked_sub(1).map(|i| self.checkpoints[i].0)
    }

    /// Counts one packet.
    pub fn note_packet(&mut self, interface_id: u32, timestamp_ns: u64) {
        if self.packets > 0 {
            self.max_step_back_ns = self
                .max_step_back_ns
                .max(self.last_ns.saturating_sub(timestamp_ns));
        }
        self.first_ns = self.first_ns.min(timestamp_ns);
        self.last_ns = self.last_ns.max(timestamp_ns);
        self.packets += 1;
        let id = interface_id as usize;
        if self.per_interface.len() <= id {
            self.per_interface.resize(id + 1, 0);
        }
        self.per_interface[id] += 1;
    }

    /// Whether any packet lies in `[from, to)`.
    #[must_use]
    pub fn overlaps(&self, from: u64, to: u64) -> bool {
        self.packets > 0 && self.first_ns < to && self.last_ns >= from
    }
}

/// The in-memory index.
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Sorted by `first_ns` (then `seq`).
    records: Vec<SegmentRecord>,
    /// `max_last[i]` = the largest `last_ns` among `records[..=i]`.
    max_last: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {0} is damaged")]
    Damaged(String),
    #[error("cannot read or write the manifest")]
    Io(#[from] io::Error),
}

impl Index {
    #[must_use]
    pub fn from_records(mut records: Vec<SegmentRecord>) -> Self {
        records.sort_by_key(|r| (r.first_ns, r.seq));
        let mut index = Self {
            records,
            max_last: Vec::new(),
        };
        index.rebuild_max();
        index
    }

    fn rebuild_max(&mut self) {
        let mut max = 0;
        self.max_last = self
            .records
            .iter()
            .map(|r| {
                max = max.max(r.last_ns);
                max
            })
            .collect();
    }

    #[must_use]
    pub fn records(&self) -> &[SegmentRecord] {
        &self.records
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.records.iter().map(|r| r.bytes).sum()
    }

    pub fn insert(&mut self, record: SegmentRecord) {
        let at = self
            .records
            .partition_point(|r| (r.first_ns, r.seq) <= (record.first_ns, record.seq));
        let appended = at == self.records.len();
        self.records.insert(at, record);
        if appended {
            let prev = self.max_last.last().copied().unwrap_or(0);
            self.max_last.push(prev.max(self.records[at].last_ns));
        } else {
            self.rebuild_max();
        }
    }

    /// Points segment `seq` at another file (its compressed form) of `bytes` bytes.
    pub fn replace_file(&mut self, seq: u64, file: String, bytes: u64) -> bool {
        let Some(record) = self.records.iter_mut().find(|r| r.seq == seq) else {
            return false;
        };
        record.file = file;
        record.bytes = bytes;
        // Offsets of the plain file mean nothing in the compressed one.
        record.checkpoints.clear();
        true
    }

    /// Removes the record of segment `seq`.
    pub fn remove(&mut self, seq: u64) -> Option<SegmentRecord> {
        let at = self.records.iter().position(|r| r.seq == seq)?;
        let record = self.records.remove(at);
        self.rebuild_max();
        Some(record)
    }

    /// Segments holding packets in `[from, to)`, in first-timestamp order.
    #[must_use]
    pub fn overlapping(&self, from: u64, to: u64) -> Vec<&SegmentRecord> {
        // Candidates start where some segment so far reaches `from`, and end before the
        // first segment that begins at or after `to`.
        let lo = self.max_last.partition_point(|&max| max < from);
        let hi = self.records.partition_point(|r| r.first_ns < to);
        self.records
            .get(lo..hi.max(lo))
            .unwrap_or_default()
            .iter()
            .filter(|r| r.overlaps(from, to))
            .collect()
    }

    /// The oldest segment (lowest sequence number).
    #[must_use]
    pub fn oldest(&self) -> Option<&SegmentRecord> {
        self.records.iter().min_by_key(|r| r.seq)
    }

    /// Writes the manifest atomically into `dir`.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let mut by_seq: Vec<&SegmentRecord> = self.records.iter().collect();
        by_seq.sort_by_key(|r| r.seq);
        let mut body = String::with_capacity(64 + by_seq.len() * 96);
        body.push_str(HEADER);
        body.push('\n');
        for record in by_seq {
            body.push_str(&record.encode());
            body.push('\n');
        }
        let crc = crc32fast::hash(body.as_bytes());
        let end = format!("end\t{}\t{crc:08x}\n", self.records.len());
        body.push_str(&end);
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(body.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(MANIFEST))?;
        fs::File::open(dir)?.sync_all()
    }

    /// Reads the manifest of `dir`: `Ok(None)` if there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, ManifestError> {
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(ManifestError::Damaged(path.display().to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|_| ManifestError::Damaged(path.display().to_string()))
    }

    /// Parses a manifest's text; any flaw (a record, the count, the checksum) is damage.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let damaged = || ManifestError::Damaged(MANIFEST.to_owned());
        let body_end = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
        let (body, end) = text.split_at(body_end);
        let end: Vec<&str> = end.trim_end().split('\t').collect();
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) || end.len() != 3 || end[0] != "end" {
            return Err(damaged());
        }
        if u32::from_str_radix(end[2], 16).ok() != Some(crc32fast::hash(body.as_bytes())) {
            return Err(damaged());
        }
        let records: Vec<SegmentRecord> = lines
            .map(SegmentRecord::decode)
            .collect::<Option<_>>()
            .ok_or_else(damaged)?;
        if end[1].parse::<usize>().ok() != Some(records.len()) {
            return Err(damaged());
        }
        Ok(Self::from_records(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, first: u64, last: u64) -> SegmentRecord {
        SegmentRecord {
            seq,
            file: format!("podcap-{seq:010}.pcapng"),
            first_ns: first,
            last_ns: last,
            packets: 1,
            bytes: 100,
            drops: 0,
            per_interface: vec![1],
            checkpoints: vec![(1 << 20, first)],
            max_step_back_ns: seq % 3,
            damaged: if seq.is_multiple_of(4) {
                vec![(64, 128)]
            } else {
                Vec::new()
            },
        }
    }

    /// A tiny deterministic generator (xorshift), so the property test needs no crate.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn lookups_match_a_full_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..50 {
            let mut records = Vec::new();
            let mut t = 1_000;
            for seq in 1..=200 {
                // Mostly increasing, sometimes overlapping the previous segments.
                let first = t - rng(&mut seed) % 300;
                let last = first + rng(&mut seed) % 2_000;
                t += rng(&mut seed) % 1_000;
                records.push(record(seq, first, last));
            }
            let mut index = Index::default();
            for r in &records {
                index.insert(r.clone());
            }
            for _ in 0..100 {
                let from = rng(&mut seed) % (t + 3_000);
                let to = from + rng(&mut seed) % 5_000;
                let mut expect: Vec<u64> = records
                    .iter()
                    .filter(|r| r.overlaps(from, to))
                    .map(|r| r.seq)
                    .collect();
                let mut got: Vec<u64> = index.overlapping(from, to).iter().map(|r| r.seq).collect();
                expect.sort_unstable();
                got.sort_unstable();
                assert_eq!(got, expect, "[{from}, {to})");
            }
        }
    }

    #[test]
    fn a_segment_that_began_before_the_cut_is_found() {
        let index = Index::from_records(vec![record(1, 100, 900), record(2, 200, 300)]);
        let found: Vec<u64> = index.overlapping(500, 600).iter().map(|r| r.seq).collect();
        assert_eq!(found, vec![1]);
    }

    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Index::load(dir.path()).unwrap().is_none());
        let index = Index::from_records(vec![record(1, 10, 20), record(2, 15, 40)]);
        index.save(dir.path()).unwrap();
        let loaded = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.records(), index.records());
        let path = dir.path().join(MANIFEST);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("\t20\t", "\t21\t")).unwrap();
        assert!(matches!(Index::load(dir.path()), Err(ManifestError::Damaged(_))));
        fs::write(&path, &text[..text.len() - 10]).unwrap();
        assert!(matches!(Index::load(dir.path()), Err(ManifestError::Damaged(_))));
    }

    #[test]
    fn records_measure_how_far_timestamps_step_back() {
        let mut r = SegmentRecord {
            seq: 1,
            file: "podcap-0000000001.pcapng".into(),
            first_ns: u64::MAX,
            ..SegmentRecord::default()
        };
        for ts in [1_000, 1_200, 1_150, 1_300, 900, 1_400] {
            r.note_packet(0, ts);
        }
        assert_eq!((r.first_ns, r.last_ns, r.max_step_back_ns), (900, 1_400, 400));
        // A line from before the field existed: the step back is unknown, not zero.
        let line = r.encode();
        let old = line.rsplit_once('\t').unwrap().0.rsplit_once('\t').unwrap().0;
        assert_eq!(SegmentRecord::decode(&line), Some(r.clone()));
        let decoded = SegmentRecord::decode(old).unwrap();
        assert_eq!(decoded.max_step_back_ns, STEP_BACK_UNKNOWN);
        assert_eq!(SegmentRecord::decode(&format!("{line}\tx")), None);
    }

    #[test]
    fn removal_keeps_lookups_right() {
        let mut index = Index::from_records(vec![
            record(1, 0, 1_000),
            record(2, 100, 200),
            record(3, 300, 400),
        ]);
        assert_eq!(index.overlapping(500, 600).len(), 1);
        index.remove(1);
        assert!(index.overlapping(500, 600).is_empty());
        assert_eq!(index.overlapping(150, 350).len(), 2);
    }
}
