//! Writing segments: the active segment, rotation, recycled files, the disk policy and
//! each segment's statistics (the rules are the store's, in `mod.rs`).
mod disk;
mod file;

use std::{
    fs::{self, File},
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use self::file::SegmentFile;
pub use self::file::WriteMode;
pub(in crate::store) use self::file::ALIGN;
use super::{
    compress,
    index::{self, Index, SegmentRecord},
    name::{self, Kind, SegmentName, SPARE_NAME},
    prepare_dir, recover,
    recover::RecoveryReport,
    retention, Limits, MinFree, SharedView, StoreError, StoreView,
};
use crate::{
    health::{DiskState, WriteFailure},
    pcapng::{BlockWriter, Direction, InterfaceDescription, InterfaceStatistics},
};

/// Retention runs at every rotation and at least this often.
const RETENTION_INTERVAL: Duration = Duration::from_secs(2);
/// Write errors are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_mins(1);
/// Segment names in a row a stray file may take before opening a segment fails.
const MAX_SKIPPED_NAMES: u64 = 64;
/// Mode of every file the store creates: segments may hold TLS secrets, and whoever reads
/// a segment reads the pods' traffic.
pub(in crate::store) const FILE_MODE: u32 = 0o600;
/// Bytes gathered before a write to the file.
const WRITE_CHUNK: usize = 1 << 20;

/// While a write is in flight, the writer fills its other buffer up to this many bytes;
/// past it a packet is dropped and counted at the `disk` stage: the disk is slower than
/// the traffic (`write/disk.rs`). With the buffer in flight and the file's staging buffer,
/// the writer's memory for writes stays under three times this.
const MAX_BUFFERED: usize = 16 << 20;

pub(in crate::store) struct ActiveSegment {
    pub(in crate::store) seq: u64,
    /// The file, or `None` while the disk thread writes it.
    file: Option<SegmentFile>,
    /// Bytes of the segment in its file: what the last successful write left.
    written: u64,
    opened: Instant,
    record: SegmentRecord,
    /// Bytes of an old segment the file held when it was recycled (0: a new file); they
    /// count in the store's size until overwritten, and are cut off at close.
    recycled_len: u64,
}

impl ActiveSegment {
    /// Bytes of the segment in its file: what the last successful write left.
    pub(in crate::store) fn bytes(&self) -> u64 {
        self.written
    }
}

/// Interface ids of one segment: pcapng numbers interfaces in the order of their blocks,
/// so a slot that changes hands (a new pod) gets a new id and the old block keeps naming
/// the packets before.
#[derive(Debug, Default)]
struct SegmentIds {
    /// Slot → its current id in the segment.
    by_slot: Vec<Option<u32>>,
    /// Id → slot.
    owners: Vec<u32>,
    /// Ids whose block reached the file; later ones are only in the buffer.
    on_disk: u32,
}

/// Writes packets into rotating segments.
pub struct SegmentWriter {
    dir: PathBuf,
    limits: Limits,
    /// What each capture slot is now (`None`: not assigned yet).
    slots: Vec<Option<InterfaceDescription>>,
    /// Names for addresses, written as a Name Resolution Block.
    names: Vec<(std::net::IpAddr, String)>,
    /// When the buffer last became empty: what was written since is still in it.
    unflushed_since: Instant,
    /// The periodic write waits until then (at most a second after the last one), so the
    /// secrets of a session just begun can still go in before its packets.
    flush_held_until: Instant,
    /// Where the section's header blocks end in the buffer (0: not in it): secrets go in
    /// after them, before the packets.
    header_end: usize,
    /// The active segment's interface ids.
    ids: SegmentIds,
    next_seq: u64,
    pub(in crate::store) active: Option<ActiveSegment>,
    buf: BlockWriter,
    last_flush: Instant,
    last_retention: Instant,
    index: Index,
    /// What readers (the API) see: the index and the active segment's whole part.
    view: SharedView,
    /// (slot, interface id, timestamp) of each packet in `buf`, for the index and for loss
    /// counts.
    buffered: Vec<(u32, u32, u64)>,
    /// Packets per interface that could not be written.
    lost: Vec<u64>,
    last_error_log: Option<Instant>,
    compressor: Option<compress::Compressor>,
    /// Bytes of the spare file, if retention kept one.
    spare: Option<u64>,
    /// Whether retention keeps a spare: not with compression, nor after recycling failed
    /// (a file system without leases, say), which is said once.
    recycling: bool,
    /// What start-up recovery found.
    recovery: RecoveryReport,
    /// `--min-free`, if the store may retire segments early to keep room on the disk.
    min_free: Option<MinFree>,
    /// How segments are written: direct until a file system refuses it.
    write_mode: WriteMode,
    /// The file system and the writes, as last seen.
    disk: DiskState,
    /// Per slot, its cumulative statistics when a segment last closed: a segment's
    /// statistics blocks count only what happened since (see `segment_statistics`).
    closed_statistics: Vec<Option<InterfaceStatistics>>,
    /// Segments the archive still waits for (`--archive-segments`): retention keeps them
    /// from age retirement and tells it what it gives up.
    archive_hold: Option<Arc<crate::archive::ledger::Ledger>>,
    /// This process's hold on the data directory, checked with retention.
    lock: super::lock::DirLock,
    /// Readers' requests to flush, served by whoever drives this writer.
    flush: Arc<super::flush::FlushGate>,
    /// The thread that writes the active segment's file (`write/disk.rs`).
    disk_thread: disk::DiskThread,
    /// The write the disk thread has (at most one), and the buffer it gives back.
    in_flight: Option<InFlight>,
    spare_buf: Option<BlockWriter>,
}

/// What the writer keeps of a write in flight, to apply its result.
struct InFlight {
    /// (slot, interface id, timestamp) of each packet it holds.
    packets: Vec<(u32, u32, u64)>,
    /// Interface ids declared up to the end of its bytes.
    ids_declared: u32,
    /// Its length.
    len: u64,
}

impl SegmentWriter {
    /// Opens the store; an `.active` segment left by a crash is finished first.
    pub fn open(
        dir: &Path,
        limits: Limits,
        interfaces: Vec<InterfaceDescription>,
    ) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        // Before anything reads or repairs the store.
        let lock = super::lock::DirLock::acquire(dir)?;
        prepare_dir(dir)?;
        let dir_err = |source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        };
        // A spare left by the previous run is not worth a lease check of its history:
        // recovery deletes it.
        let recovered = recover::recover(dir).map_err(dir_err)?;
        if !recovered.report.is_empty() {
            log::warn!("store recovery: {:?}", recovered.report);
        }
        let next_seq = name::next_seq(recovered.highest_seq).ok_or(StoreError::SequenceExhausted {
            highest: recovered.highest_seq,
        })?;
        let index = recovered.index;
        let interface_count = interfaces.len();
        Ok(Self {
            dir: dir.to_owned(),
            limits,
            slots: interfaces.into_iter().map(Some).collect(),
            names: Vec::new(),
            unflushed_since: Instant::now(),
            flush_held_until: Instant::now(),
            header_end: 0,
            ids: SegmentIds::default(),
            next_seq,
            recovery: recovered.report,
            min_free: None,
            write_mode: WriteMode::Direct,
            disk: DiskState::default(),
            closed_statistics: Vec::new(),
            archive_hold: None,
            lock,
            flush: Arc::default(),
            disk_thread: disk::DiskThread::start().map_err(dir_err)?,
            in_flight: None,
            spare_buf: None,
            active: None,
            buf: BlockWriter::with_capacity(WRITE_CHUNK * 2),
            last_flush: Instant::now(),
            last_retention: Instant::now(),
            view: Arc::new(RwLock::new(StoreView {
                index: index.clone(),
                active: None,
                active_interfaces: Vec::new(),
            })),
            index,
            buffered: Vec::with_capacity(16_384),
            lost: vec![0; interface_count],
            last_error_log: None,
            compressor: if limits.compress {
                Some(compress::Compressor::start().map_err(dir_err)?)
            } else {
                None
            },
            spare: None,
            recycling: !limits.compress,
        })
    }

    /// What start-up recovery found and did.
    #[must_use]
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Lets the store retire segments early to leave `min_free` free (see the rules).
    /// Keeps the segments `hold` says the archive waits for from age retirement, and
    /// tells it which of them the size bound (or `--min-free`) retires.
    pub fn set_archive_hold(&mut self, hold: Arc<crate::archive::ledger::Ledger>) {
        self.archive_hold = Some(hold);
    }

    /// Writes segments through the page cache (`--buffered-writes`) instead of directly.
    pub fn set_write_mode(&mut self, mode: WriteMode) {
        self.write_mode = mode;
    }

    pub fn set_min_free(&mut self, min_free: Option<MinFree>) {
        self.min_free = min_free;
        self.disk.min_free_bytes = 0;
        self.keep_room();
    }

    /// The file system and the writes, as last seen.
    #[must_use]
    pub fn disk(&self) -> &DiskState {
        &self.disk
    }

    /// The time index of the finished segments.
    #[must_use]
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// A handle on what readers may slice, kept current by this writer.
    #[must_use]
    pub fn view(&self) -> SharedView {
        Arc::clone(&self.view)
    }

    /// Where readers ask this writer to flush (`flush.rs`).
    #[must_use]
    pub fn flush_gate(&self) -> Arc<super::flush::FlushGate> {
        Arc::clone(&self.flush)
    }

    /// Publishes the index after a change (rotation, retention, compression).
    fn publish_index(&self) {
        let mut view = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.index = self.index.clone();
        if self.active.is_none() {
            view.active = None;
        }
    }

    /// Publishes how much of the active segment is whole on disk.
    fn publish_active(&self) {
        let active = self
            .active
            .as_ref()
            .filter(|a| a.record.packets > 0)
            .map(|a| SegmentRecord {
                file: SegmentName::active(a.seq).file_name(),
                bytes: a.bytes(),
                ..a.record.clone()
            });
        let interfaces = self
            .ids
            .by_slot
            .iter()
            .enumerate()
            .filter(|(_, id)| id.is_some())
            .filter_map(|(slot, _)| {
                Some(super::ActiveInterface {
                    slot: slot as u32,
                    name: self.slots.get(slot)?.as_ref()?.name.clone(),
                    since: self
                        .closed_statistics
                        .get(slot)
                        .copied()
                        .flatten()
                        .unwrap_or_default(),
                })
            })
            .collect();
        let mut view = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.active = active;
        view.active_interfaces = interfaces;
    }

    /// Changes the retention limits; they apply at once.
    pub fn set_retention(&mut self, max_size: u64, max_time: Duration) {
        self.limits.max_size = max_size;
        self.limits.max_time = max_time;
        self.apply_retention();
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the next segment; a failure is a write failure (readiness says so) until a
    /// write succeeds.
    fn open_segment(&mut self) -> Result<(), StoreError> {
        let opened = self.open_segment_file();
        if let Err(error) = &opened {
            let full = matches!(error, StoreError::Segment { source, .. } if source.raw_os_error() == Some(libc::ENOSPC));
            self.note_write_failure(crate::error_chain(error), full);
        }
        opened
    }

    /// Whether a file of the store's naming for segment `seq` exists in any state (a stray
    /// one, not the store's: the writer never takes its number).
    fn name_taken(&self, seq: u64) -> bool {
        let quarantine = self.dir.join(name::QUARANTINE_DIR);
        [Kind::Active, Kind::Finished, Kind::Gzip]
            .into_iter()
            .any(|kind| {
                let name = SegmentName { seq, kind };
                fs::symlink_metadata(name.path_in(&self.dir)).is_ok()
                    || fs::symlink_metadata(name.path_in(&quarantine)).is_ok()
            })
    }

    /// The next sequence number whose names are all free, from `self.next_seq`: a number
    /// a stray file took is skipped, said once, and the file left alone.
    fn free_seq(&mut self) -> Result<u64, StoreError> {
        let mut seq = self.next_seq;
        for _ in 0..=MAX_SKIPPED_NAMES {
            if seq > name::MAX_SEQ {
                break;
            }
            if !self.name_taken(seq) {
                return Ok(seq);
            }
            log::warn!(
                "{}: a file the store did not write has segment {seq}'s name; left alone, and segment {seq} skipped",
                self.dir.display()
            );
            seq += 1;
            self.next_seq = seq;
        }
        if seq > name::MAX_SEQ {
            return Err(StoreError::SequenceExhausted {
                highest: name::MAX_SEQ,
            });
        }
        Err(StoreError::Segment {
            path: SegmentName::active(seq).path_in(&self.dir),
            source: io::Error::other(format!(
                "{MAX_SKIPPED_NAMES} segment names in a row are taken by files the store did not write"
            )),
        })
    }

    fn open_segment_file(&mut self) -> Result<(), StoreError> {
        let (seq, file, recycled_len) = loop {
            let seq = self.free_seq()?;
            let path = SegmentName::active(seq).path_in(&self.dir);
            if let Some((file, len)) = self.take_spare(&path) {
                break (seq, file, len);
            }
            // Exclusively: a file of that name is not the store's to overwrite.
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&path)
            {
                Ok(file) => break (seq, file, 0),
                // Taken between the check and now: the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.next_seq = seq + 1,
                Err(source) => return Err(StoreError::Segment { path, source }),
            }
        };
        self.next_seq = seq + 1;
        self.clear_buffer();
        self.write_header();
        let mut file = SegmentFile::new(file, self.write_mode);
        if let Some(reason) = file.take_fallback() {
            self.direct_io_refused(&reason);
        }
        if recycled_len > 0 {
            let header_len = self
                .buf
                .bytes()
                .get(4..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, |b| u64::from(u32::from_ne_bytes(b)));
            file.keep_section_length(header_len);
        }
        self.active = Some(ActiveSegment {
            seq,
            file: Some(file),
            written: 0,
            recycled_len,
            opened: Instant::now(),
            record: SegmentRecord {
                seq,
                file: SegmentName::finished(seq).file_name(),
                first_ns: u64::MAX,
                ..SegmentRecord::default()
            },
        });
        Ok(())
    }

    /// Says once that the store's file system refused direct writes; later segments are
    /// written through the page cache.
    fn direct_io_refused(&mut self, reason: &io::Error) {
        if self.write_mode == WriteMode::Direct {
            log::info!(
                "no direct writes into {} ({reason}): segments are written through the page cache",
                self.dir.display()
            );
            self.write_mode = WriteMode::Buffered;
        }
    }

    /// The spare, renamed to `path` and open for overwriting, with its length; `None` (and
    /// the spare deleted) if a reader still has it open or anything fails.
    fn take_spare(&mut self, path: &Path) -> Option<(File, u64)> {
        let len = self.spare.take()?;
        let spare = self.dir.join(SPARE_NAME);
        let reusable = fs::OpenOptions::new()
            .write(true)
            .open(&spare)
            .and_then(|file| Ok((crate::sys::is_only_opener(&file)?, file)));
        match reusable {
            Ok((true, file)) => match crate::sys::rename_noreplace(&spare, path) {
                Ok(()) => return Some((file, len)),
                Err(e) => log::warn!("could not recycle {}: {e}", spare.display()),
            },
            Ok((false, _)) => log::debug!("{SPARE_NAME} is still being read: deleted, not recycled"),
            Err(e) => {
                log::warn!(
                    "could not recycle {}: {e}; segments are written into new files from now on",
                    spare.display()
                );
                self.recycling = false;
            }
        }
        let _ = fs::remove_file(&spare);
        None
    }

    /// Appends one packet (rotating first if the segment is full). A packet that cannot be
    /// written is counted in [`SegmentWriter::take_lost`], never left half in the file.
    pub fn write_packet(
        &mut self,
        slot: u32,
        timestamp_ns: u64,
        original_len: u32,
        data: &[u8],
        direction: Direction,
        stats: impl Fn(u32) -> InterfaceStatistics,
    ) -> Result<(), StoreError> {
        if self.active.is_none() {
            self.open_segment()?;
        }
        let id = match self.ids.by_slot.get(slot as usize).copied().flatten() {
            Some(id) => id,
            None => self.declare(slot),
        };
        if self.buf.len() >= MAX_BUFFERED && !self.settle(false) {
            // The disk is behind and the buffer full: this packet is the disk's loss.
            if let Some(n) = self.lost.get_mut(slot as usize) {
                *n += 1;
            }
            return Ok(());
        }
        self.buffered.push((slot, id, timestamp_ns));
        self.buf.packet(id, timestamp_ns, original_len, data, direction);
        if self.buf.len() >= WRITE_CHUNK && self.settle(false) {
            self.write_out();
        }
        self.maybe_rotate(stats)
    }

    /// Packets per interface id that could not be written since the last call.
    pub fn take_lost(&mut self) -> Vec<u64> {
        let lost = std::mem::take(&mut self.lost);
        self.lost = vec![0; self.slots.len()];
        lost
    }

    /// Gives `slot` a new interface description (a pod's interface): it applies to the
    /// slot's next packets, in this segment (a new Interface Description Block) and after.
    pub fn set_interface(&mut self, slot: u32, description: InterfaceDescription) {
        let index = slot as usize;
        if self.slots.len() <= index {
            self.slots.resize(index + 1, None);
            self.lost.resize(index + 1, 0);
        }
        self.slots[index] = Some(description);
        if self.active.is_some() {
            self.declare(slot);
        }
    }

    /// Sets the names for addresses (written now if they changed, and in every segment).
    pub fn set_names(&mut self, names: Vec<(std::net::IpAddr, String)>) {
        if names == self.names {
            return;
        }
        self.names = names;
        if self.active.is_some() {
            self.buf.names(&self.names);
        }
    }

    /// Writes TLS secrets (key log lines) into the active segment as a Decryption Secrets
    /// Block, before the packets of their sessions when the earliest of their ClientHellos
    /// (`hello_at`) is still in the buffer (a reader decrypting in one pass needs the
    /// secrets first), else after them; returns whether they went before. Without an
    /// active segment (none is open yet) they are not written: no packet of theirs is.
    pub fn write_secrets(&mut self, key_log: &[u8], hello_at: Instant) -> bool {
        if self.active.is_none() || key_log.is_empty() {
            return true;
        }
        let mut block = BlockWriter::with_capacity(key_log.len() + 32);
        block.decryption_secrets(crate::pcapng::secrets::SECRETS_TLS_KEY_LOG, key_log);
        if hello_at >= self.unflushed_since {
            // After the header blocks, before every packet in the buffer: a block boundary.
            self.buf.insert_raw(self.header_end, block.bytes());
            true
        } else {
            self.buf.raw(block.bytes());
            false
        }
    }

    /// Holds the periodic write back until `until` (never past a second after the last
    /// write): a session's ClientHello was just buffered, its secrets are on their way.
    pub fn hold_flush_until(&mut self, until: Instant) {
        self.flush_held_until = self.flush_held_until.max(until);
    }

    /// Empties the buffer after its bytes reached the file (or were given up).
    fn clear_buffer(&mut self) {
        self.buf.clear();
        self.buffered.clear();
        self.unflushed_since = Instant::now();
        self.header_end = 0;
    }

    /// Declares `slot`'s interface in the active segment; returns its id.
    fn declare(&mut self, slot: u32) -> u32 {
        let placeholder = InterfaceDescription {
            name: format!("slot-{slot}"),
            description: "podcap: an interface no longer known".into(),
            link_type: crate::pcapng::LINKTYPE_ETHERNET,
            snaplen: 262_144,
        };
        let description = self
            .slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .unwrap_or(&placeholder);
        self.buf.interface(description);
        let id = self.ids.owners.len() as u32;
        self.ids.owners.push(slot);
        if self.ids.by_slot.len() <= slot as usize {
            self.ids.by_slot.resize(slot as usize + 1, None);
        }
        self.ids.by_slot[slot as usize] = Some(id);
        id
    }

    fn write_header(&mut self) {
        self.ids = SegmentIds::default();
        self.buf
            .section_header(concat!("podcap-sensor ", env!("CARGO_PKG_VERSION")));
        for slot in 0..self.slots.len() as u32 {
            if self.slots[slot as usize].is_some() {
                self.declare(slot);
            }
        }
        self.buf.names(&self.names);
        self.header_end = self.buf.len();
    }

    /// Writes the buffer to the active segment and waits for the write (and the one in
    /// flight before it). On failure the file is cut back to its last whole block, the
    /// packets are counted as lost, and on a full disk room is made for the next attempt.
    pub(in crate::store) fn write_buffer(&mut self) {
        self.settle(true);
        self.write_out();
        self.settle(true);
    }

    /// Hands the buffer to the disk thread (the caller has settled the write before it).
    fn write_out(&mut self) {
        if self.buf.is_empty() || self.in_flight.is_some() {
            return;
        }
        let Some(file) = self.active.as_mut().and_then(|a| a.file.take()) else {
            return;
        };
        let next = self
            .spare_buf
            .take()
            .unwrap_or_else(|| BlockWriter::with_capacity(WRITE_CHUNK * 2));
        let buf = std::mem::replace(&mut self.buf, next);
        self.in_flight = Some(InFlight {
            packets: std::mem::take(&mut self.buffered),
            ids_declared: self.ids.owners.len() as u32,
            len: buf.len() as u64,
        });
        self.clear_buffer();
        if let Err(job) = self.disk_thread.submit(disk::Job { file, buf }) {
            // The disk thread is gone: the write fails here, as a disk error would.
            let error = io::Error::other("the disk thread stopped");
            let job = *job;
            self.apply_done(disk::Done {
                written_from: job.file.len(),
                file: job.file,
                buf: job.buf,
                result: Err(error),
            });
        }
    }

    /// Takes the result of the write in flight, waiting for it if `wait`; whether no write
    /// is in flight any more.
    fn settle(&mut self, wait: bool) -> bool {
        if self.in_flight.is_none() {
            return true;
        }
        let done = if wait {
            self.disk_thread.wait()
        } else {
            self.disk_thread.try_done()
        };
        match done {
            Some(done) => {
                self.apply_done(done);
                true
            }
            None if wait => {
                // The thread died with the file: nothing more can be written to it.
                self.in_flight = None;
                self.note_write_failure("the disk thread stopped".into(), false);
                true
            }
            None => false,
        }
    }

    /// Applies a write's result: published, or lost with the packets buffered meanwhile
    /// (they may name interfaces declared in the lost bytes).
    fn apply_done(&mut self, done: disk::Done) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let mut buf = done.buf;
        buf.clear();
        self.spare_buf = Some(buf);
        let mut file = done.file;
        if let Some(reason) = file.take_fallback() {
            self.direct_io_refused(&reason);
        }
        let Some(active) = &mut self.active else { return };
        match done.result {
            Ok(()) => {
                let last_checkpoint = active.record.checkpoints.last().map_or(0, |c| c.0);
                if active.record.packets > 0 && done.written_from >= last_checkpoint + index::CHECKPOINT_BYTES
                {
                    active
                        .record
                        .checkpoints
                        .push((done.written_from, active.record.last_ns));
                }
                for &(_, interface_id, ts) in &in_flight.packets {
                    active.record.note_packet(interface_id, ts);
                }
                active.written = file.len();
                active.file = Some(file);
                self.ids.on_disk = in_flight.ids_declared;
                self.publish_active();
                if self.disk.failing.is_some() {
                    log::info!("writes to {} succeed again", self.dir.display());
                    self.disk.failing = None;
                }
            }
            Err(error) => {
                let cut = file.cut_back();
                active.written = file.len();
                active.file = Some(file);
                let lost_packets = in_flight.packets.len() + self.buffered.len();
                for &(slot, _, _) in in_flight.packets.iter().chain(&self.buffered) {
                    if let Some(n) = self.lost.get_mut(slot as usize) {
                        *n += 1;
                    }
                }
                // Interfaces declared in the lost bytes are declared again when needed.
                let on_disk = self.ids.on_disk;
                self.ids.owners.truncate(on_disk as usize);
                for id in &mut self.ids.by_slot {
                    if id.is_some_and(|id| id >= on_disk) {
                        *id = None;
                    }
                }
                let full = error.raw_os_error() == Some(libc::ENOSPC);
                if self
                    .last_error_log
                    .is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL)
                {
                    log::error!(
                        "cannot write segment {}: {error}; {lost_packets} packets lost (stage disk){}",
                        SegmentName::active(active.seq).path_in(&self.dir).display(),
                        match (full, self.min_free) {
                            (true, Some(_)) => "; retiring the oldest segment early (--min-free)",
                            (true, None) => "; no segment is deleted for room without --min-free",
                            _ => "",
                        }
                    );
                    self.last_error_log = Some(Instant::now());
                }
                if let Err(e) = cut {
                    log::error!("could not cut the segment back after a failed write: {e}");
                }
                let empty = active.bytes() == 0;
                self.note_write_failure(error.to_string(), full);
                self.clear_buffer();
                if full {
                    self.make_room();
                }
                if empty {
                    // The section header never reached the file: it goes first next time.
                    self.write_header();
                }
            }
        }
    }

    /// Writes fail (readiness and status say so until one succeeds): since when, the
    /// last error.
    fn note_write_failure(&mut self, error: String, disk_full: bool) {
        let since = self.disk.failing.take().map_or_else(
            || crate::units::format_rfc3339(crate::sys::realtime_ns()),
            |f| f.since,
        );
        self.disk.failing = Some(WriteFailure {
            since,
            error,
            disk_full,
        });
    }

    fn maybe_rotate(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        let Some(active) = &self.active else { return Ok(()) };
        let in_flight = self.in_flight.as_ref().map_or(0, |w| w.len);
        let size = active.bytes() + in_flight + self.buf.len() as u64;
        let due = size >= self.limits.segment_size
            || (active.record.packets > 0 && active.opened.elapsed() >= self.limits.segment_time);
        if due {
            self.close_segment(stats)?;
        }
        Ok(())
    }

    /// Writes what the buffer holds now, whatever holds the periodic write back: a reader
    /// asked for everything received so far (`flush.rs`).
    pub fn flush_now(&mut self) {
        self.write_buffer();
        self.last_flush = Instant::now();
    }

    /// Periodic work: flush at least once a second, rotate by time, apply retention.
    pub fn tick(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        // The write in flight's result is published as soon as it is known; the periodic
        // write waits for it without blocking (the next tick tries again).
        let settled = self.settle(false);
        let since = self.last_flush.elapsed();
        let held = Instant::now() < self.flush_held_until && since < Duration::from_secs(1);
        if since >= Duration::from_millis(500) && !held && settled {
            self.write_out();
            self.last_flush = Instant::now();
        }
        if let Some(done) = self.compressor.as_ref().map(compress::Compressor::finished) {
            self.adopt_compressed(done);
        }
        if self.last_retention.elapsed() >= RETENTION_INTERVAL {
            self.apply_retention();
            self.disk.lock_lost = self.lock.check().err();
            self.last_retention = Instant::now();
        }
        self.maybe_rotate(stats)
    }

    /// Writes the statistics blocks, syncs and renames the active segment to its final name.
    pub fn close_segment(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        if self.active.is_none() {
            return Ok(());
        }
        // The statistics blocks go after what is in flight, which must be whole first.
        self.settle(true);
        let current: Vec<(u32, u32)> = self
            .ids
            .by_slot
            .iter()
            .enumerate()
            .filter_map(|(slot, id)| id.map(|id| (slot as u32, id)))
            .collect();
        let mut segment_drops = 0u64;
        for &(slot, id) in &current {
            let s = self.segment_statistics(slot, stats(slot));
            segment_drops = segment_drops
                .saturating_add(s.kernel_drops)
                .saturating_add(s.sensor_drops);
            let comment = format!(
                "podcap drops by stage since the interface's previous statistics: kernel={} sensor={}",
                s.kernel_drops, s.sensor_drops
            );
            self.buf.statistics(id, &s, &comment);
        }
        self.write_buffer();
        let Some(mut active) = self.active.take() else {
            return Ok(());
        };
        let from = SegmentName::active(active.seq).path_in(&self.dir);
        let finished = self.finish_file(&mut active, &from);
        if let Err(error) = &finished {
            self.note_write_failure(crate::error_chain(error), false);
        }
        finished?;
        let bytes = active.bytes();
        let record = &mut active.record;
        record.bytes = bytes;
        record.drops = segment_drops;
        if record.packets == 0 {
            let now = crate::sys::realtime_ns();
            (record.first_ns, record.last_ns) = (now, now);
        }
        self.index.insert(active.record);
        if let Err(e) = self.index.save(&self.dir) {
            log::warn!("could not save the index of {}: {e}", self.dir.display());
        }
        if let Some(compressor) = &self.compressor {
            compressor.submit(active.seq, SegmentName::finished(active.seq).path_in(&self.dir));
        }
        self.apply_retention();
        self.publish_index();
        Ok(())
    }

    /// Closes the active segment's file and gives it its finished name; if a stray file
    /// took that name meanwhile, the segment takes the next free number (said once).
    fn finish_file(&mut self, active: &mut ActiveSegment, from: &Path) -> Result<(), StoreError> {
        let seg_err = |source| StoreError::Segment {
            path: from.to_owned(),
            source,
        };
        let file = active
            .file
            .as_mut()
            .ok_or_else(|| seg_err(io::Error::other("the disk thread stopped with the file")))?;
        file.close().map_err(seg_err)?;
        let to = SegmentName::finished(active.seq).path_in(&self.dir);
        match crate::sys::rename_noreplace(from, &to) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let seq = self.free_seq()?;
                let renamed = SegmentName::finished(seq);
                log::warn!(
                    "{}: a file the store did not write took this name; segment {} is finished as {} instead",
                    to.display(),
                    active.seq,
                    renamed.file_name()
                );
                crate::sys::rename_noreplace(from, &renamed.path_in(&self.dir)).map_err(seg_err)?;
                self.next_seq = seq + 1;
                active.seq = seq;
                active.record.seq = seq;
                active.record.file = renamed.file_name();
                Ok(())
            }
            done => done.map_err(seg_err),
        }
    }

    /// A slot's statistics for the segment being closed, from its cumulative ones: what
    /// happened since the slot's statistics were last written (or since the start), so
    /// each file says what was lost while it was written, and slices can add them up.
    fn segment_statistics(&mut self, slot: u32, now: InterfaceStatistics) -> InterfaceStatistics {
        let index = slot as usize;
        if self.closed_statistics.len() <= index {
            self.closed_statistics.resize(index + 1, None);
        }
        let before = self.closed_statistics[index].replace(now);
        let Some(before) = before else { return now };
        InterfaceStatistics {
            start_ns: before.end_ns,
            end_ns: now.end_ns,
            received: now.received.saturating_sub(before.received),
            kernel_drops: now.kernel_drops.saturating_sub(before.kernel_drops),
            sensor_drops: now.sensor_drops.saturating_sub(before.sensor_drops),
        }
    }

    /// Closes the active segment and waits for queued compression (at stop).
    pub fn finish(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        let closed = self.close_segment(stats);
        if let Some(mut compressor) = self.compressor.take() {
            let done = compressor.drain();
            self.adopt_compressed(done);
        }
        closed
    }

    /// Points the index at compressed segments, then deletes their originals.
    fn adopt_compressed(&mut self, done: Vec<Result<compress::Compressed, (u64, io::Error)>>) {
        for result in done {
            match result {
                Ok(c) => {
                    if !self.index.replace_file(c.seq, c.file.clone(), c.bytes) {
                        // Retention deleted the segment meanwhile: the copy goes too.
                        let _ = fs::remove_file(self.dir.join(&c.file));
                        continue;
                    }
                    if let Err(e) = self.index.save(&self.dir) {
                        log::warn!("could not save the index of {}: {e}", self.dir.display());
                    }
                    if let Err(e) = fs::remove_file(&c.original) {
                        log::warn!(
                            "could not delete {} after compressing it: {e}",
                            c.original.display()
                        );
                    }
                }
                Err((seq, e)) => log::warn!("could not compress segment {seq}: {e}; it stays uncompressed"),
            }
        }
    }

    /// Deletes the oldest finished segments while the store is over `max_size` or their
    /// newest packet is older than `max_time`. The index stops pointing to a segment (and is
    /// saved) before its file is deleted.
    pub fn apply_retention(&mut self) {
        let horizon =
            crate::sys::realtime_ns().saturating_sub(crate::units::duration_ns(self.limits.max_time));
        let active_bytes = self.active.as_ref().map_or(0, |a| a.bytes().max(a.recycled_len));
        // The spare is the next active segment's file: like the active segment, it takes the
        // store past `max_size` by at most one segment, and it is not counted twice.
        let ledger = self.archive_hold.clone();
        let held = |r: &SegmentRecord| ledger.as_ref().is_some_and(|l| l.holds(r.seq));
        let doomed: Vec<u64> = retention::to_retire(
            self.index.records(),
            active_bytes,
            self.limits.max_size,
            horizon,
            held,
        )
        .iter()
        .map(|r| r.seq)
        .collect();
        for seq in doomed {
            let recycle = self.recycling && self.spare.is_none();
            self.forget_and_delete(seq, recycle);
        }
        self.keep_room();
    }

    fn delete_spare(&mut self) {
        if self.spare.take().is_some() {
            let _ = fs::remove_file(self.dir.join(SPARE_NAME));
        }
    }

    /// Frees room on a full disk: the spare (never data) goes; with `--min-free`, also the
    /// oldest finished segment, counted as retired early.
    fn make_room(&mut self) {
        if self.spare.is_some() {
            self.delete_spare();
        } else if self.min_free.is_some() {
            self.retire_early();
        }
    }

    /// Retires the oldest finished segment for room; false if there is none.
    fn retire_early(&mut self) -> bool {
        let Some((seq, bytes)) = self.index.oldest().map(|r| (r.seq, r.bytes)) else {
            return false;
        };
        log::warn!(
            "retiring segment {seq} early: the disk has less free than --min-free ({} free)",
            crate::units::format_size(self.disk.free_bytes)
        );
        self.forget_and_delete(seq, false);
        self.disk.early_retired_segments += 1;
        self.disk.early_retired_bytes = self.disk.early_retired_bytes.saturating_add(bytes);
        true
    }

    /// Measures the file system; with `--min-free`, retires the oldest segments while it
    /// has less free than that.
    fn keep_room(&mut self) {
        loop {
            match crate::sys::fs_space(&self.dir) {
                Ok((free, total)) => {
                    self.disk.free_bytes = free;
                    self.disk.total_bytes = total;
                    self.disk.min_free_bytes = self.min_free.map_or(0, |m| m.bytes_of(total));
                }
                Err(e) => {
                    log::warn!("cannot measure the file system of {}: {e}", self.dir.display());
                    return;
                }
            }
            if self.disk.free_bytes >= self.disk.min_free_bytes {
                return;
            }
            if self.spare.is_some() {
                self.delete_spare();
            } else if !self.retire_early() {
                return;
            }
        }
    }

    /// Removes segment `seq` from the index, saves the index, then deletes the file (or, with
    /// `recycle`, keeps it as the spare). If the
    /// disk is too full to save the index, the file is deleted anyway (the index in memory
    /// no longer names it, and a restart drops records of missing files) and the save is
    /// tried again with the room it freed.
    fn forget_and_delete(&mut self, seq: u64, recycle: bool) {
        let Some(record) = self.index.remove(seq) else {
            return;
        };
        if let Some(hold) = &self.archive_hold {
            hold.retired(&record);
        }
        let saved = self.index.save(&self.dir);
        // Readers stop seeing the segment before it goes.
        self.publish_index();
        let path = self.dir.join(&record.file);
        // Only a plain segment of the store's own is worth overwriting: not a compressed
        // one, not one from quarantine.
        let plain = name::parse_indexed(&record.file).is_some_and(|(n, q)| n.kind == Kind::Finished && !q);
        let kept =
            recycle && plain && crate::sys::rename_noreplace(&path, &self.dir.join(SPARE_NAME)).is_ok();
        if kept {
            self.spare = Some(record.bytes);
        } else if let Err(e) = fs::remove_file(&path) {
            log::warn!("could not delete {}: {e}", record.file);
        }
        if saved.is_err() {
            if let Err(e) = self.index.save(&self.dir) {
                log::warn!("could not save the index of {}: {e}", self.dir.display());
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
