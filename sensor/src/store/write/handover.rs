//! Writes handed to the disk thread (`disk.rs`): the buffer moves there with the file,
//! its result comes back in order and is published, or lost and counted (rules in
//! `disk.rs`).
use super::{
    disk, index, ActiveSegment, BlockWriter, Closing, InFlight, SegmentName, SegmentWriter, StoreError,
    WriteFailure, ERROR_LOG_INTERVAL, WRITE_CHUNK,
};
use std::{io, time::Instant};

impl SegmentWriter {
    /// Writes the buffer to the active segment and waits for the write (and the one in
    /// flight before it). On failure the file is cut back to its last whole block, the
    /// packets are counted as lost, and on a full disk room is made for the next attempt.
    pub(in crate::store) fn write_buffer(&mut self) {
        self.settle(true);
        self.write_out();
        self.settle(true);
    }

    /// Hands the buffer to the disk thread (the caller has settled the write before it).
    pub(super) fn write_out(&mut self) {
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
            closing: None,
            statistics: self.statistics.buffered.take(),
        });
        self.clear_buffer();
        if let Err(job) = self.disk_thread.submit(disk::Job {
            file,
            buf,
            close: false,
        }) {
            // The disk thread is gone: the write fails here, as a disk error would.
            let error = io::Error::other("the disk thread stopped");
            let job = *job;
            self.apply_done(disk::Done {
                written_from: job.file.len(),
                file: job.file,
                buf: job.buf,
                result: Err(error),
                cut: None,
                closed: None,
            });
        }
    }

    /// Empties the buffer after its bytes reached the file (or were given up), placed for
    /// a direct write from the buffer itself (`write/file.rs`): its first byte at the
    /// address that matches where in a block of the file it will land.
    pub(super) fn clear_buffer(&mut self) {
        let lands_at = self.active.as_ref().map_or(0, |active| {
            let in_flight = self
                .in_flight
                .as_ref()
                .filter(|w| w.closing.is_none())
                .map_or(0, |w| w.len);
            active.written + in_flight
        });
        self.buf.clear_placed(
            crate::store::layout::ALIGN,
            (lands_at % crate::store::layout::ALIGN as u64) as usize,
        );
        self.buffered.clear();
        self.statistics.buffered = None;
        self.unflushed_since = Instant::now();
        self.header_end = 0;
    }

    /// Takes the result of the write in flight, waiting for it if `wait`; whether no write
    /// is in flight any more.
    pub(super) fn settle(&mut self, wait: bool) -> bool {
        if self.in_flight.is_none() {
            return true;
        }
        let done = if wait {
            self.disk_thread.wait()
        } else {
            match self.disk_thread.try_done() {
                Ok(done) => Some(done),
                Err(std::sync::mpsc::TryRecvError::Empty) => return false,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            }
        };
        if let Some(done) = done {
            self.apply_done(done);
        } else {
            // The thread died with the file: nothing more can be written to it, and
            // readiness says so.
            self.in_flight = None;
            self.note_write_failure("the disk thread stopped".into(), false);
        }
        true
    }

    /// Applies a write's result: published, or lost with the packets buffered meanwhile
    /// (they may name interfaces declared in the lost bytes). A closing write finishes its
    /// segment instead.
    pub(super) fn apply_done(&mut self, done: disk::Done) {
        let Some(mut in_flight) = self.in_flight.take() else {
            return;
        };
        let mut buf = done.buf;
        buf.clear();
        self.spare_buf = Some(buf);
        let mut file = done.file;
        if let Some(reason) = file.take_fallback() {
            self.direct_io_refused(&reason);
        }
        if let Some(closing) = in_flight.closing.take() {
            let outcome = Outcome {
                written_from: done.written_from,
                result: done.result,
                cut: done.cut,
                closed: done.closed,
            };
            self.finish_closing(*closing, &in_flight, file, outcome);
            return;
        }
        let Some(active) = &mut self.active else { return };
        match done.result {
            Ok(()) => {
                active.note_written(done.written_from, &in_flight.packets, file.len());
                if let Some(groups) = in_flight.statistics {
                    active.statistics_end_ns = active.statistics_end_ns.max(groups.end_ns);
                    active.statistics_drops = active.statistics_drops.saturating_add(groups.drops);
                    self.statistics.readable = groups.counters;
                }
                active.file = Some(file);
                self.ids.on_disk = in_flight.ids_declared;
                self.publish_active();
                self.writes_succeed();
            }
            Err(error) => {
                let cut = file.cut_back();
                active.written = file.len();
                active.file = Some(file);
                let path = SegmentName::active(active.seq).path_in(&self.dir);
                let empty = active.bytes() == 0;
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
                // The lost statistics blocks' counts go into the next group.
                self.statistics.written = self.statistics.readable.clone();
                self.log_lost_write(&path, &error, lost_packets);
                if let Err(e) = cut {
                    log::error!("could not cut the segment back after a failed write: {e}");
                }
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

    /// Finishes a segment whose last write came back: its packets counted (or lost), its
    /// file renamed to its finished name and put in the index, retention applied.
    fn finish_closing(
        &mut self,
        closing: Closing,
        in_flight: &InFlight,
        file: super::SegmentFile,
        outcome: Outcome,
    ) {
        let Closing {
            mut segment, drops, ..
        } = closing;
        let from = SegmentName::active(segment.seq).path_in(&self.dir);
        match outcome.result {
            Ok(()) => {
                segment.note_written(outcome.written_from, &in_flight.packets, file.len());
                self.writes_succeed();
            }
            Err(error) => {
                // Only its own packets: the next segment's are in a file of their own.
                for &(slot, _, _) in &in_flight.packets {
                    if let Some(n) = self.lost.get_mut(slot as usize) {
                        *n += 1;
                    }
                }
                segment.written = file.len();
                let full = error.raw_os_error() == Some(libc::ENOSPC);
                self.log_lost_write(&from, &error, in_flight.packets.len());
                if let Some(Err(e)) = outcome.cut {
                    log::error!("could not cut the segment back after a failed write: {e}");
                }
                self.note_write_failure(error.to_string(), full);
                if full {
                    self.make_room();
                }
            }
        }
        drop(file);
        let finished = match outcome.closed {
            Some(Err(source)) => Err(StoreError::Segment {
                path: from.clone(),
                source,
            }),
            _ => self.rename_finished(&mut segment, &from),
        };
        if let Err(error) = finished {
            // Left `.active`: the next start's recovery finishes it.
            log::error!("{}", crate::error_chain(&error));
            self.note_write_failure(crate::error_chain(&error), false);
            self.close_failure = Some(error);
            self.publish_index();
            self.publish_active();
            return;
        }
        let bytes = segment.bytes();
        let mut record = segment.record;
        record.bytes = bytes;
        record.drops = drops;
        if record.packets == 0 {
            let now = crate::sys::realtime_ns();
            (record.first_ns, record.last_ns) = (now, now);
        }
        let seq = record.seq;
        self.index.insert(record);
        if let Err(e) = self.index.save(&self.dir) {
            log::warn!("could not save the index of {}: {e}", self.dir.display());
        }
        if let Some(compressor) = &self.compressor {
            compressor.submit(seq, SegmentName::finished(seq).path_in(&self.dir));
        }
        self.apply_retention();
        self.publish_index();
        self.publish_active();
    }

    /// A write succeeded: if writes were failing, they no longer are.
    fn writes_succeed(&mut self) {
        if self.disk.failing.is_some() {
            log::info!("writes to {} succeed again", self.dir.display());
            self.disk.failing = None;
        }
    }

    /// Logs a failed write (at most once per [`ERROR_LOG_INTERVAL`]).
    fn log_lost_write(&mut self, path: &std::path::Path, error: &io::Error, lost_packets: usize) {
        if self
            .last_error_log
            .is_some_and(|t| t.elapsed() < ERROR_LOG_INTERVAL)
        {
            return;
        }
        let full = error.raw_os_error() == Some(libc::ENOSPC);
        log::error!(
            "cannot write segment {}: {error}; {lost_packets} packets lost (stage disk){}",
            path.display(),
            match (full, self.min_free) {
                (true, Some(_)) => "; retiring the oldest segment early (--min-free)",
                (true, None) => "; no segment is deleted for room without --min-free",
                _ => "",
            }
        );
        self.last_error_log = Some(Instant::now());
    }

    /// Writes fail (readiness and status say so until one succeeds): since when, the
    /// last error.
    pub(super) fn note_write_failure(&mut self, error: String, disk_full: bool) {
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

    /// Writes what the buffer holds now, whatever holds the periodic write back: a reader
    /// asked for everything received so far (`flush.rs`).
    pub fn flush_now(&mut self) {
        self.write_buffer();
        self.last_flush = Instant::now();
    }
}

/// A closing write's results, from [`disk::Done`].
struct Outcome {
    written_from: u64,
    result: io::Result<()>,
    cut: Option<io::Result<()>>,
    closed: Option<io::Result<()>>,
}

impl ActiveSegment {
    /// A write of `packets` that began at `written_from` succeeded; the file is `len` long.
    fn note_written(&mut self, written_from: u64, packets: &[(u32, u32, u64)], len: u64) {
        let last_checkpoint = self.record.checkpoints.last().map_or(0, |c| c.0);
        if self.record.packets > 0 && written_from >= last_checkpoint + index::CHECKPOINT_BYTES {
            let newest = self.record.last_ns.max(self.statistics_end_ns);
            self.record.checkpoints.push((written_from, newest));
        }
        for &(_, interface_id, ts) in packets {
            self.record.note_packet(interface_id, ts);
        }
        self.written = len;
    }
}
