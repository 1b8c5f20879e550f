//! Writing segments: the active segment, rotation and each segment's statistics (the rules
//! are the store's, in `mod.rs`). Beside it: the segment's file and names
//! (`segment_files.rs`), the writes handed to the disk thread (`handover.rs`, `disk.rs`),
//! how bytes reach the disk (`file.rs`), and what the store gives up for size, age and room
//! (`room.rs`).
mod disk;
mod file;
mod handover;
mod room;
mod segment_files;
mod statistics;

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use self::file::SegmentFile;
pub use self::file::WriteMode;
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
/// the writer's memory for writes stays under three times this. 64 MiB, the ring buffer's
/// default size: a disk that stalls now and then (a throttled one serves in bursts) needs
/// that much slack; with 16 MiB, 1500 B frames paced to 0.5 and 0.9 of a 50 MB/s disk
/// kept 91 % and 50 %, with 64 MiB 100 % and 100 % (`cargo xtask bench disk-rates`).
const MAX_BUFFERED: usize = 64 << 20;

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
    /// The newest end time of the statistics blocks in the file: checkpoints lie past
    /// every block that could count time in a window after them.
    statistics_end_ns: u64,
    /// Drops the statistics blocks in the file count, for the index.
    statistics_drops: u64,
    /// Per slot, the counters when the segment began: its totals block counts from there.
    start_counters: statistics::SlotCounters,
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
    /// Where each slot's statistics blocks stand (`write/statistics.rs`).
    statistics: statistics::SegmentStatistics,
    /// Segments the archive still waits for (`--archive-segments`): retention keeps them
    /// from age retirement and tells it what it gives up.
    archive_hold: Option<Arc<dyn super::hold::SegmentHold>>,
    /// This process's hold on the data directory, checked with retention.
    lock: super::lock::DirLock,
    /// Readers' requests to flush, served by whoever drives this writer.
    flush: Arc<super::flush::FlushGate>,
    /// The thread that writes the active segment's file (`write/disk.rs`).
    disk_thread: disk::DiskThread,
    /// The write the disk thread has (at most one), and the buffer it gives back.
    in_flight: Option<InFlight>,
    /// Why the last segment handed over for closing could not be finished, for
    /// [`SegmentWriter::close_segment`]'s caller.
    close_failure: Option<StoreError>,
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
    /// The segment this write closes (its last packets and statistics blocks): finished
    /// when the write is done, while the next segment fills the buffer.
    closing: Option<Box<Closing>>,
    /// The groups of statistics blocks it holds, readable once it succeeds.
    statistics: Option<statistics::BufferedGroups>,
}

/// A segment whose last write is in flight (`close_segment`).
struct Closing {
    segment: ActiveSegment,
    /// Drops its statistics blocks count, for the index.
    drops: u64,
    /// Per slot, the counters of the closing segment's last readable statistics blocks:
    /// readers' live counts start there until its last blocks are readable.
    since: statistics::SlotCounters,
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
            statistics: statistics::SegmentStatistics::new(),
            archive_hold: None,
            lock,
            flush: Arc::default(),
            disk_thread: disk::DiskThread::start().map_err(dir_err)?,
            in_flight: None,
            close_failure: None,
            spare_buf: None,
            active: None,
            buf: {
                let mut buf = BlockWriter::with_capacity(WRITE_CHUNK * 2);
                buf.clear_placed(super::layout::ALIGN, 0);
                buf
            },
            last_flush: Instant::now(),
            last_retention: Instant::now(),
            view: Arc::new(RwLock::new(StoreView {
                index: index.clone(),
                active: None,
                closing: None,
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
    pub fn set_archive_hold(&mut self, hold: Arc<dyn super::hold::SegmentHold>) {
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
        if self.closing().is_none() {
            view.closing = None;
        }
    }

    /// The segment whose last write is in flight, if one is.
    fn closing(&self) -> Option<&Closing> {
        self.in_flight.as_ref()?.closing.as_deref()
    }

    /// Publishes how much of the active segment is whole on disk.
    fn publish_active(&self) {
        let readable = |a: &ActiveSegment| {
            (a.record.packets > 0).then(|| SegmentRecord {
                file: SegmentName::active(a.seq).file_name(),
                bytes: a.bytes(),
                ..a.record.clone()
            })
        };
        let active = self.active.as_ref().and_then(readable);
        let closing = self.closing().and_then(|c| readable(&c.segment));
        // Until the closing segment's last statistics blocks are readable, live counts
        // start where its readable ones end.
        let since = self.closing().map_or(&self.statistics.readable, |c| &c.since);
        let started_ns = self.statistics.started_ns();
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
                    since: statistics::SegmentStatistics::readable_at(since, slot, started_ns),
                })
            })
            .collect();
        let mut view = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.active = active;
        view.closing = closing;
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
        // The disk is behind and the buffer full, or the file went with a disk thread that
        // died: this packet is the disk's loss.
        let file_lost = |w: &Self| w.active.as_ref().is_some_and(|a| a.file.is_none());
        if self.buf.len() >= MAX_BUFFERED && (!self.settle(false) || file_lost(self)) {
            if let Some(n) = self.lost.get_mut(slot as usize) {
                *n += 1;
            }
            return Ok(());
        }
        self.buffered.push((slot, id, timestamp_ns));
        self.buf.packet(id, timestamp_ns, original_len, data, direction);
        // A due rotation goes before the next write: the segment's closing takes the buffer.
        if !self.maybe_rotate(stats) && self.buf.len() >= WRITE_CHUNK && self.settle(false) {
            self.write_out();
        }
        Ok(())
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

    /// Rotation: when the active segment is due, its closing is handed to the disk thread
    /// and the next packet opens the next segment; the capture thread does not wait. With a
    /// write in flight it waits for the next packet or tick instead (the segment grows past
    /// its size by at most what is buffered meanwhile).
    /// Whether rotation is due (handed over or waiting for the write in flight).
    fn maybe_rotate(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> bool {
        let Some(active) = &self.active else { return false };
        let in_flight = self.in_flight.as_ref().map_or(0, |w| w.len);
        let size = active.bytes() + in_flight + self.buf.len() as u64;
        let due = size >= self.limits.segment_size
            || (active.record.packets > 0 && active.opened.elapsed() >= self.limits.segment_time);
        if due && self.settle(false) {
            self.hand_over_close(stats);
        }
        due
    }

    /// Periodic work: flush at least once a second, rotate by time, apply retention.
    pub fn tick(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        // The write in flight's result is published as soon as it is known; the periodic
        // write waits for it without blocking (the next tick tries again).
        let settled = self.settle(false);
        let since = self.last_flush.elapsed();
        let held = Instant::now() < self.flush_held_until && since < Duration::from_secs(1);
        // A due rotation goes first: the closing write takes the buffer.
        let rotating = self.maybe_rotate(&stats);
        if !rotating {
            self.maybe_write_statistics(&stats);
        }
        if since >= Duration::from_millis(500) && !held && settled && !rotating {
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
        Ok(())
    }

    /// Closes the active segment and waits until it is finished: statistics blocks written,
    /// synced, renamed to its final name and in the index (at stop; rotation does not wait,
    /// see [`SegmentWriter::maybe_rotate`]).
    pub fn close_segment(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        self.settle(true);
        self.hand_over_close(stats);
        self.settle(true);
        self.close_failure.take().map_or(Ok(()), Err)
    }

    /// Hands the active segment's last bytes (its statistics blocks after the buffered
    /// packets) to the disk thread, which writes, cuts and syncs its file; the segment is
    /// finished when the result comes back (`handover.rs`). Nothing may be in flight.
    fn hand_over_close(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) {
        if self.in_flight.is_some() {
            return;
        }
        let Some(mut segment) = self.active.take() else {
            return;
        };
        let since = self.statistics.readable.clone();
        let drops = segment
            .statistics_drops
            .saturating_add(self.write_statistics_group(stats, true));
        self.write_segment_totals(&segment.start_counters);
        // The next segment's readers start from the last group.
        self.statistics.readable = self.statistics.written.clone();
        let file = segment.file.take();
        let next = self
            .spare_buf
            .take()
            .unwrap_or_else(|| BlockWriter::with_capacity(WRITE_CHUNK * 2));
        let buf = std::mem::replace(&mut self.buf, next);
        let seq = segment.seq;
        self.in_flight = Some(InFlight {
            packets: std::mem::take(&mut self.buffered),
            ids_declared: self.ids.owners.len() as u32,
            len: buf.len() as u64,
            closing: Some(Box::new(Closing {
                segment,
                drops,
                since,
            })),
            statistics: None,
        });
        self.clear_buffer();
        self.ids = SegmentIds::default();
        // Room for the next segment, counting the closing one whole.
        self.apply_retention();
        self.publish_active();
        let Some(file) = file else {
            // The disk thread stopped with the file: the segment stays `.active` on disk,
            // finished by the next start's recovery; its last packets are lost, counted.
            for (slot, _, _) in self.in_flight.take().map(|w| w.packets).unwrap_or_default() {
                if let Some(n) = self.lost.get_mut(slot as usize) {
                    *n += 1;
                }
            }
            let path = SegmentName::active(seq).path_in(&self.dir);
            let error = StoreError::Segment {
                path,
                source: io::Error::other("the disk thread stopped with the file"),
            };
            self.note_write_failure(crate::error_chain(&error), false);
            self.close_failure = Some(error);
            self.publish_active();
            return;
        };
        let job = self.disk_thread.submit(disk::Job {
            file,
            buf,
            close: true,
        });
        if let Err(job) = job {
            let job = *job;
            let error = || Some(Err(io::Error::other("the disk thread stopped")));
            self.apply_done(disk::Done {
                written_from: job.file.len(),
                file: job.file,
                buf: job.buf,
                result: Err(io::Error::other("the disk thread stopped")),
                cut: error(),
                closed: error(),
            });
        }
    }

    /// Closes the active segment and waits for queued compression (at stop); from then on
    /// readers asking for a flush are answered at once.
    pub fn finish(&mut self, stats: impl Fn(u32) -> InterfaceStatistics) -> Result<(), StoreError> {
        let closed = self.close_segment(stats);
        if let Some(mut compressor) = self.compressor.take() {
            let done = compressor.drain();
            self.adopt_compressed(done);
        }
        self.flush.writer_stopped();
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
}

#[cfg(test)]
pub(super) mod tests;
