//! What the store gives up: retention (size and age), the spare, and room on a shared
//! disk (`--min-free`); the index forgets a segment before its file goes (rules in
//! `store/mod.rs`).
use super::{name, retention, Kind, SegmentRecord, SegmentWriter, SPARE_NAME};
use std::fs;

impl SegmentWriter {
    /// Deletes the oldest finished segments while the store is over `max_size` or their
    /// newest packet is older than `max_time`. The index stops pointing to a segment (and is
    /// saved) before its file is deleted.
    pub fn apply_retention(&mut self) {
        let horizon =
            crate::sys::realtime_ns().saturating_sub(crate::units::duration_ns(self.limits.max_time));
        // The closing segment counts with its last write, which is on its way.
        let closing_bytes = self.closing().map_or(0, |c| {
            let last_write = self.in_flight.as_ref().map_or(0, |w| w.len);
            (c.segment.bytes() + last_write).max(c.segment.recycled_len)
        });
        let active_bytes = closing_bytes + self.active.as_ref().map_or(0, |a| a.bytes().max(a.recycled_len));
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

    pub(super) fn delete_spare(&mut self) {
        if self.spare.take().is_some() {
            let _ = fs::remove_file(self.dir.join(SPARE_NAME));
        }
    }

    /// Frees room on a full disk: the spare (never data) goes; with `--min-free`, also the
    /// oldest finished segment, counted as retired early.
    pub(super) fn make_room(&mut self) {
        if self.spare.is_some() {
            self.delete_spare();
        } else if self.min_free.is_some() {
            self.retire_early();
        }
    }

    /// Retires the oldest finished segment for room; false if there is none.
    pub(super) fn retire_early(&mut self) -> bool {
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
    pub(super) fn keep_room(&mut self) {
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
    pub(super) fn forget_and_delete(&mut self, seq: u64, recycle: bool) {
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
