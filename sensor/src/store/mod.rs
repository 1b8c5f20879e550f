//! The segment store: a directory of pcapng files the sensor writes and rotates.
//!
//! Rules:
//! - One segment is written at a time, as `podcap-<seq>.pcapng.active`; a finished segment
//!   is fsynced and renamed to `podcap-<seq>.pcapng`, and never modified again.
//! - A segment is complete pcapng on its own: Section Header, one Interface Description
//!   Block per captured interface (interface id = slot), Enhanced Packet Blocks, and at
//!   close one Interface Statistics Block per interface with the drop counts.
//! - Rotation happens when the segment reaches `segment_size` bytes or has been open for
//!   `segment_time` with at least one packet in it. The active segment is flushed to the
//!   kernel at least once a second.
//! - Retention deletes whole finished segments, oldest first, while the store is larger
//!   than `max_size` or a segment's last write is older than `max_time`.
//! - Sequence numbers only grow: a restart continues after the highest one found.
use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use crate::pcapng::{BlockWriter, Direction, InterfaceDescription, InterfaceStatistics};

const ACTIVE_SUFFIX: &str = ".pcapng.active";
const FINISHED_SUFFIX: &str = ".pcapng";
const PREFIX: &str = "podcap-";
/// Bytes gathered before a write to the file.
const WRITE_CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path} is not usable")]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write segment {path}")]
    Segment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Limits of the store.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub segment_size: u64,
    pub segment_time: Duration,
    pub max_size: u64,
    pub max_time: Duration,
}

/// A finished segment on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub modified: SystemTime,
}

/// Checks that `dir` exists (creating it) and is writable, by writing a probe file.
pub fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::DataDir {
        path: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".podcap-write-probe");
    File::create(&probe)
        .and_then(|mut f| f.write_all(b"probe"))
        .map_err(err)?;
    fs::remove_file(&probe).map_err(err)
}

fn parse_seq(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(seq) = rest.strip_suffix(ACTIVE_SUFFIX) {
        return seq.parse().ok().map(|s| (s, true));
    }
    rest.strip_suffix(FINISHED_SUFFIX)?
        .parse()
        .ok()
        .map(|s| (s, false))
}

/// Finished segments in `dir`, oldest (lowest sequence) first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some((seq, false)) = name.to_str().and_then(parse_seq) else {
            continue;
        };
        let meta = entry.metadata()?;
        segments.push(SegmentFile {
            seq,
            path: entry.path(),
            bytes: meta.len(),
            modified: meta.modified()?,
        });
    }
    segments.sort_by_key(|s| s.seq);
    Ok(segments)
}

/// Cuts a segment left `.active` by a crash back to its last complete block and gives it
/// its finished name, so readers never meet a half-written block.
fn repair_and_finish(active: &Path, finished: &Path) -> io::Result<()> {
    let bytes = fs::read(active)?;
    let keep = crate::pcapng::read::complete_prefix_len(&bytes);
    if keep < bytes.len() {
        log::warn!(
            "{}: cut {} bytes of a block the previous run did not finish",
            active.display(),
            bytes.len() - keep
        );
        let file = fs::OpenOptions::new().write(true).open(active)?;
        file.set_len(keep as u64)?;
        file.sync_all()?;
    }
    if keep == 0 {
        return fs::remove_file(active);
    }
    fs::rename(active, finished)
}

fn segment_path(dir: &Path, seq: u64, active: bool) -> PathBuf {
    dir.join(format!(
        "{PREFIX}{seq:010}{}",
        if active { ACTIVE_SUFFIX } else { FINISHED_SUFFIX }
    ))
}

struct ActiveSegment {
    seq: u64,
    file: File,
    bytes: u64,
    packets: u64,
    opened: Instant,
    start_ns: u64,
}

/// Writes packets into rotating segments.
pub struct SegmentWriter {
    dir: PathBuf,
    limits: Limits,
    interfaces: Vec<InterfaceDescription>,
    next_seq: u64,
    active: Option<ActiveSegment>,
    buf: BlockWriter,
    last_flush: Instant,
}

impl SegmentWriter {
    /// Opens the store; an `.active` segment left by a crash is finished first.
    pub fn open(
        dir: &Path,
        limits: Limits,
        interfaces: Vec<InterfaceDescription>,
    ) -> Result<Self, StoreError> {
        prepare_dir(dir)?;
        let dir_err = |source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        };
        let mut highest = 0;
        for entry in fs::read_dir(dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let Some((seq, active)) = entry.file_name().to_str().and_then(parse_seq) else {
                continue;
            };
            highest = highest.max(seq);
            if active {
                repair_and_finish(&entry.path(), &segment_path(dir, seq, false)).map_err(dir_err)?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            limits,
            interfaces,
            next_seq: highest + 1,
            active: None,
            buf: BlockWriter::with_capacity(WRITE_CHUNK * 2),
            last_flush: Instant::now(),
        })
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_segment(&mut self, now_ns: u64) -> Result<(), StoreError> {
        let seq = self.next_seq;
        let path = segment_path(&self.dir, seq, true);
        let file = File::create(&path).map_err(|source| StoreError::Segment {
            path: path.clone(),
            source,
        })?;
        self.next_seq += 1;
        self.buf.clear();
        self.buf
            .section_header(concat!("podcap-sensor ", env!("CARGO_PKG_VERSION")));
        for iface in &self.interfaces {
            self.buf.interface(iface);
        }
        self.active = Some(ActiveSegment {
            seq,
            file,
            bytes: 0,
            packets: 0,
            opened: Instant::now(),
            start_ns: now_ns,
        });
        Ok(())
    }

    /// Appends one packet (rotating first if the segment is full).
    pub fn write_packet(
        &mut self,
        interface_id: u32,
        timestamp_ns: u64,
        original_len: u32,
        data: &[u8],
        direction: Direction,
        stats: impl Fn(u32) -> InterfaceStatistics,
    ) -> Result<(), StoreError> {
        if self.active.is_none() {
            self.open_segment(timestamp_ns)?;
        }
        self.buf
            .packet(interface_id, timestamp_ns, original_len, data, direction);
        if let Some(active) = &mut self.active {
            active.packets += 1;
        }
        if self.buf.len() >= WRITE_CHUNK {
            self.write_buffer()?;
        }
        self.maybe_rotate(stats)
    }

    fn write_buffer(&mut self) -> Result<(), StoreError> {
        let Some(active) = &mut self.active else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = active.file.write_all(self.buf.bytes());
        if result.is_ok() {
            active.bytes += self.buf.len() as u64;
        }
        self.buf.clear();
        result.map_err(|source| StoreError::Segment {
            path: segment_path(&self.dir, active.seq, true),
            source,
        })
    }

    fn maybe_rotate(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        let Some(active) = &self.active else { return Ok(()) };
        let size = active.bytes + self.buf.len() as u64;
        let due = size >= self.limits.segment_size
            || (active.packets > 0 && active.opened.elapsed() >= self.limits.segment_time);
        if due {
            self.close_segment(stats)?;
        }
        Ok(())
    }

    /// Periodic work: flush at least once a second, rotate by time, apply retention.
    pub fn tick(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        if self.last_flush.elapsed() >= Duration::from_millis(500) {
            self.write_buffer()?;
            self.last_flush = Instant::now();
        }
        self.maybe_rotate(stats)
    }

    /// Writes the statistics blocks, syncs and renames the active segment to its final name.
    pub fn close_segment(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        if self.active.is_none() {
            return Ok(());
        }
        for id in 0..self.interfaces.len() as u32 {
            let s = stats(id);
            let comment = format!(
                "podcap drops by stage: kernel={} sensor={}",
                s.kernel_drops, s.sensor_drops
            );
            self.buf.statistics(id, &s, &comment);
        }
        self.write_buffer()?;
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let from = segment_path(&self.dir, active.seq, true);
        let to = segment_path(&self.dir, active.seq, false);
        let seg_err = |source| StoreError::Segment {
            path: from.clone(),
            source,
        };
        active.file.sync_all().map_err(seg_err)?;
        fs::rename(&from, &to).map_err(seg_err)?;
        let _ = active.start_ns;
        self.apply_retention();
        Ok(())
    }

    /// Deletes the oldest finished segments beyond the limits.
    pub fn apply_retention(&mut self) {
        let Ok(segments) = list_segments(&self.dir) else {
            return;
        };
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        let now = SystemTime::now();
        for segment in &segments {
            let too_old = now.duration_since(segment.modified).unwrap_or_default() > self.limits.max_time;
            if total <= self.limits.max_size && !too_old {
                break;
            }
            match fs::remove_file(&segment.path) {
                Ok(()) => total -= segment.bytes,
                Err(e) => log::warn!("retention could not delete {}: {e}", segment.path.display()),
            }
        }
    }
}
