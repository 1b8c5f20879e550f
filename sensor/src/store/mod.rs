//! The segment store: a directory of pcapng files the sensor writes and rotates.
//!
//! Rules:
//! - One segment is written at a time, as `podcap-<seq>.pcapng.active`; a finished segment
//!   is fsynced and renamed to `podcap-<seq>.pcapng`, and never modified while the store
//!   holds it. Closing runs on the disk thread while the next segment fills the buffer, so
//!   at most two segments are `.active` at once: the one closing and the next (recovery
//!   finishes both after a crash).
//! - Files are recycled (not with `--compress`): the first segment retention removes is kept
//!   as the spare (`podcap-spare.recycle`, out of the index; it stands for the next active
//!   segment in the size limit) and overwritten as the next active segment, which then
//!   costs the page cache no new pages (`docs/design/store.md`, "Recycled files"). Only
//!   when no reader has it open: a write lease proves that; else it is deleted. A recycled
//!   segment's Section Header carries the length written so far (rewritten after every
//!   write), so a crash never leaves the old file's bytes after the new ones; at close the
//!   file is cut to its length.
//! - A segment is complete pcapng on its own: Section Header, one Interface Description
//!   Block per captured interface (interface id = slot), Enhanced Packet Blocks, and at
//!   close one Interface Statistics Block per interface with the drop counts.
//! - Rotation happens when the segment reaches `segment_size` bytes or has been open for
//!   `segment_time` with at least one packet in it; while a write of it is in flight, at
//!   the first packet or tick after that write (the segment grows by what was buffered
//!   meanwhile: the capture never waits for the disk). Writes run on the store's disk thread,
//!   overlapping the capture (`write/disk.rs` has its rules). The active segment is flushed
//!   to the file at least once a second: with `O_DIRECT` by default (to the disk, bypassing the
//!   page cache; `write/file.rs` has its rules), through the page cache where the file
//!   system refuses it or with `--buffered-writes`.
//! - Every finished segment has a record in the time index (`index.rs`, `index.tsv`):
//!   first/last packet timestamp, packets, bytes, packets per interface, drops. At start
//!   `recover.rs` checks the files and the index against each other before anything is
//!   written (its rules: crash repair, quarantine, stray names).
//! - Retention deletes whole finished segments, oldest first, at every rotation, while the
//!   store (finished segments plus the active one) is larger than `max_size` or a segment's
//!   newest packet is older than `max_time`; the store exceeds `max_size` by at most the
//!   active segment (or the spare waiting to become it). The index forgets a segment
//!   before its file is deleted.
//! - The file system is shared: with `--min-free` ([`MinFree`]) the store retires its oldest
//!   segments early to leave that much free (checked with retention, and at once when a
//!   write finds the disk full), counted and shown (`DiskState`). Without it the store never
//!   deletes a segment for space: a full disk costs the new packets (counted as drops,
//!   readiness fails) until room comes back. The spare is never data and goes first.
//! - Sequence numbers only grow: a restart continues after the highest one found, and a
//!   name is never reused: new files are created exclusively and renamed without
//!   replacing (`name.rs` owns the naming).
//! - What the node keeps past the rolling window (snapshots, recording jobs' iterations)
//!   is the store's too, in folders of its own with their own budgets (`kept/`): never a
//!   file shared with the segments, made and deleted by one protocol (`kept/mod.rs`).
pub mod compress;
pub mod flush;
pub mod hold;
pub mod index;
pub mod kept;
mod layout;
pub mod lock;
pub use podcap_format::segment_name as name;
pub mod recover;
pub mod retention;
pub mod select;
pub mod slice;
mod write;

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use self::index::{Index, SegmentRecord};
pub use self::write::{SegmentWriter, WriteMode};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path} is not usable")]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("segment numbers are used up: the store holds segment {highest}, the largest a name can carry; move the files away to start again at 1")]
    SequenceExhausted { highest: u64 },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("cannot write segment {path}")]
    Segment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What readers may slice: finished segments and the whole part of the active one.
#[derive(Debug, Default)]
pub struct StoreView {
    pub index: Index,
    pub active: Option<SegmentRecord>,
    /// The segment being closed (its last write in flight): not in the index yet, read
    /// like the active segment, as far as its file is whole.
    pub closing: Option<SegmentRecord>,
    /// The interfaces of the active segment, for the part of a window's statistics that
    /// no statistics block holds yet.
    pub active_interfaces: Vec<ActiveInterface>,
}

/// An interface of the active segment: its slot, its name, and the slot's counters when
/// the active segment's statistics began (the previous segment's close; zero: the start).
/// What happened since is the slot's counters now minus these.
#[derive(Clone, Debug)]
pub struct ActiveInterface {
    pub slot: u32,
    pub name: String,
    pub since: crate::pcapng::InterfaceStatistics,
}

/// Shared between the writer (which updates it) and readers.
pub type SharedView = Arc<RwLock<StoreView>>;

impl StoreView {
    /// Segments holding packets in `[from, to)`, the active one last.
    #[must_use]
    pub fn overlapping(&self, from: u64, to: u64) -> Vec<SegmentRecord> {
        let mut list: Vec<SegmentRecord> = self.index.overlapping(from, to).into_iter().cloned().collect();
        list.extend(self.unfinished().filter(|a| a.overlaps(from, to)).cloned());
        list
    }

    /// The segments not in the index yet, oldest first: the one being closed, the active.
    pub fn unfinished(&self) -> impl Iterator<Item = &SegmentRecord> {
        self.closing.iter().chain(&self.active)
    }

    /// The first packet time the store still holds (`None`: it holds nothing).
    #[must_use]
    pub fn oldest_ns(&self) -> Option<u64> {
        self.index
            .records()
            .first()
            .or_else(|| self.unfinished().next())
            .map(|r| r.first_ns)
    }
}

/// Limits of the store.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Gzip finished segments (`--compress gzip`).
    pub compress: bool,
    pub segment_size: u64,
    pub segment_time: Duration,
    pub max_size: u64,
    pub max_time: Duration,
}

/// Checks that `dir` exists (creating it) and is writable, by writing a probe file.
pub fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::DataDir {
        path: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    restrict_to_owner(dir).map_err(err)?;
    let probe = dir.join(".podcap-write-probe");
    File::create(&probe)
        .and_then(|mut f| f.write_all(b"probe"))
        .map_err(err)?;
    fs::remove_file(&probe).map_err(err)
}

/// Takes group and other permissions off the data directory: whoever reads the store
/// reads the pods' traffic (and TLS secrets, with `--tls-secrets`).
fn restrict_to_owner(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        log::info!(
            "{}: mode {:o} -> 700 (the store holds the pods' traffic)",
            dir.display(),
            mode & 0o777
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

/// How much of its file system the store leaves free (`--min-free`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinFree {
    Bytes(u64),
    /// A percentage of the file system's size (1 to 99).
    Percent(u8),
}

impl MinFree {
    /// Bytes to leave free on a file system of `total` bytes.
    #[must_use]
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes,
            Self::Percent(percent) => total / 100 * u64::from(percent),
        }
    }
}
