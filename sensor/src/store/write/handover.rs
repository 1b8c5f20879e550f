//! Writes handed to the disk thread (`disk.rs`): the buffer moves there with the file,
//! its result comes back in order and is published, or lost and counted (rules in
//! `disk.rs`).
use super::{
    disk, index, BlockWriter, InFlight, SegmentName, SegmentWriter, WriteFailure, ERROR_LOG_INTERVAL,
    WRITE_CHUNK,
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
    pub(super) fn settle(&mut self, wait: bool) -> bool {
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
    pub(super) fn apply_done(&mut self, done: disk::Done) {
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
