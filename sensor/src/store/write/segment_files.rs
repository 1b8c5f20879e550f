//! The active segment's file: the next free name (a number a stray file took is skipped),
//! a new or recycled file opened exclusively, and the finished name it gets at close
//! (rules in `store/mod.rs` and `store/recover.rs`).
use super::{
    name, ActiveSegment, Kind, SegmentFile, SegmentName, SegmentRecord, SegmentWriter, StoreError, WriteMode,
    FILE_MODE, MAX_SKIPPED_NAMES, SPARE_NAME,
};
use std::{
    fs::{self, File},
    io,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::Instant,
};

impl SegmentWriter {
    /// Opens the next segment; a failure is a write failure (readiness says so) until a
    /// write succeeds.
    pub(super) fn open_segment(&mut self) -> Result<(), StoreError> {
        let opened = self.open_segment_file();
        if let Err(error) = &opened {
            let full = matches!(error, StoreError::Segment { source, .. } if source.raw_os_error() == Some(libc::ENOSPC));
            self.note_write_failure(crate::error_chain(error), full);
        }
        opened
    }

    /// Whether a file of the store's naming for segment `seq` exists in any state (a stray
    /// one, not the store's: the writer never takes its number).
    pub(super) fn name_taken(&self, seq: u64) -> bool {
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
    pub(super) fn free_seq(&mut self) -> Result<u64, StoreError> {
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

    pub(super) fn open_segment_file(&mut self) -> Result<(), StoreError> {
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
        file.allocate_up_to(self.limits.segment_size);
        if let Some(reason) = file.take_fallback() {
            self.direct_io_refused(&reason);
        }
        // Every segment's Section Header says how much of the file is its section, after
        // every write: after a crash, recovery knows what was written whole (and a
        // recycled file's old bytes are not this segment's).
        let header_len = self
            .buf
            .bytes()
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u64::from(u32::from_ne_bytes(b)));
        file.keep_section_length(header_len);
        self.active = Some(ActiveSegment {
            seq,
            file: Some(file),
            written: 0,
            recycled_len,
            opened: Instant::now(),
            statistics_end_ns: 0,
            statistics_drops: 0,
            start_counters: self.statistics.written.clone(),
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
    pub(super) fn direct_io_refused(&mut self, reason: &io::Error) {
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
    pub(super) fn take_spare(&mut self, path: &Path) -> Option<(File, u64)> {
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

    /// Gives a closed segment's file its finished name; if a stray file took that name
    /// meanwhile, the segment takes the next free number (said once).
    pub(super) fn rename_finished(
        &mut self,
        active: &mut ActiveSegment,
        from: &Path,
    ) -> Result<(), StoreError> {
        let seg_err = |source| StoreError::Segment {
            path: from.to_owned(),
            source,
        };
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
}
