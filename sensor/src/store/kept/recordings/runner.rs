//! The runner: every [`POLL`](super::POLL) each job copies what the store received since
//! its iteration's cursor into the iteration's files, and expired iterations go.
//!
//! Rules:
//! - A copy stays [`DELAY`](super::DELAY) behind the clock and goes through the store's
//!   own slicer; `iteration.json` is rewritten atomically after each copy, naming only the
//!   bytes that are whole.
//! - A full budget records nothing: what would have been recorded is counted as
//!   `budgetDrops`. Time the store no longer held is counted (`notHeldNs`), segments gone
//!   or unreadable too (`missedSegments`).
//! - A new file is begun per sensor run and past [`FILE_SIZE`](super::FILE_SIZE); a file
//!   is synced when its iteration ends or it is full.
use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use super::{
    schedule::{Phase, Schedule},
    IterationDoc, Job, RecordingError, RecordingFile, Recordings, DELAY, FILE_SIZE, ITERATION_FILE,
};
use crate::{
    store::{
        index::SegmentRecord,
        name::{Kind, SegmentName},
        slice::Slicer,
        SharedView,
    },
    units,
};

/// The iteration being written.
pub(super) struct Writing {
    pub(super) iteration: u32,
    pub(super) dir: PathBuf,
    pub(super) doc: IterationDoc,
    /// The open file, its slicer, and what the slicer had written when the file began.
    pub(super) file: Option<(BufWriter<File>, Slicer)>,
}

impl std::fmt::Debug for Writing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writing")
            .field("iteration", &self.iteration)
            .field("dir", &self.dir)
            .field("doc", &self.doc)
            .field("file_open", &self.file.is_some())
            .finish()
    }
}

impl Recordings {
    /// One round of the runner: every job copies what is due, expired iterations go.
    pub fn poll(&self, view: &SharedView, now_ns: u64) {
        let copy_to = now_ns.saturating_sub(units::duration_ns(DELAY));
        let mut jobs = self.jobs();
        let names: Vec<String> = jobs.keys().cloned().collect();
        let mut used = self.used_bytes(names.into_iter());
        for job in jobs.values_mut() {
            if let Err(e) = self.expire(job, now_ns) {
                log::warn!("recording {:?}: expiring: {e}", job.doc.name);
            }
            let iteration = match job.schedule.phase(copy_to) {
                Phase::Recording {
                    iteration,
                    start_ns,
                    end_ns,
                } => Some((iteration, start_ns, end_ns)),
                // The iteration that ended last may still have time to copy.
                Phase::Scheduled { iteration, .. } if iteration > 0 => {
                    let previous = iteration - 1;
                    job.schedule
                        .start_of(previous)
                        .map(|start| (previous, start, start.saturating_add(job.schedule.duration_ns)))
                }
                Phase::Scheduled { .. } => None,
                Phase::Finished => last_iteration(&job.schedule, copy_to),
            };
            let Some((k, start, end)) = iteration else {
                continue;
            };
            if job.schedule.expiry_of(k).is_some_and(|at| at <= now_ns) {
                continue;
            }
            match self.copy(job, view, (k, start, end), copy_to.min(end), &mut used) {
                Ok(()) => {}
                Err(e) => log::warn!("recording {:?}: {e}", job.doc.name),
            }
        }
    }

    /// Copies `[cursor, to)` of iteration `k` of `job` from the store.
    fn copy(
        &self,
        job: &mut Job,
        view: &SharedView,
        (k, start, end): (u32, u64, u64),
        to: u64,
        used: &mut u64,
    ) -> Result<(), RecordingError> {
        if job.writing.as_ref().is_none_or(|w| w.iteration != k) {
            job.writing = Some(self.resume(&job.doc.name, k, start, end)?);
        }
        let Some(writing) = job.writing.as_mut() else {
            return Ok(());
        };
        let from = writing.doc.cursor_ns;
        if from >= to {
            return Ok(());
        }
        let (segments, oldest) = view
            .read()
            .map(|v| (v.overlapping(from, to), v.oldest_ns()))
            .unwrap_or_default();
        if let Some(oldest) = oldest.filter(|&oldest| from < oldest) {
            let not_held = to.min(oldest).saturating_sub(from);
            writing.doc.not_held_ns = writing.doc.not_held_ns.saturating_add(not_held);
        }
        let refs: Vec<&SegmentRecord> = segments.iter().collect();
        if *used >= self.max_bytes {
            // Full: what would have been recorded is counted, not written.
            let stats = Slicer::default()
                .write(&self.data_dir, &refs, from, to, &job.selection, &mut io::sink())
                .map_err(|e| io::Error::other(e.to_string()))?;
            writing.doc.budget_drops = writing.doc.budget_drops.saturating_add(stats.packets);
            writing.doc.cursor_ns = to;
            return write_iteration(&writing.dir, &writing.doc);
        }
        if writing.file.is_none() {
            writing.file = Some(new_file(&mut writing.doc, &writing.dir, from)?);
        }
        let Some((out, slicer)) = writing.file.as_mut() else {
            return Ok(());
        };
        let before = slicer_totals(slicer);
        let stats = slicer
            .write(&self.data_dir, &refs, from, to, &job.selection, out)
            .map_err(|e| io::Error::other(e.to_string()))?;
        out.flush()?;
        let packets = stats.packets.saturating_sub(before.0);
        let bytes = stats.bytes_written.saturating_sub(before.1);
        let missed = u64::try_from(stats.segments_missing.saturating_add(stats.damaged))
            .unwrap_or(u64::MAX)
            .saturating_sub(before.2);
        let doc = &mut writing.doc;
        doc.packets = doc.packets.saturating_add(packets);
        doc.bytes = doc.bytes.saturating_add(bytes);
        doc.missed_segments = doc.missed_segments.saturating_add(missed);
        if let Some(file) = doc.files.last_mut() {
            file.bytes = stats.bytes_written;
            file.packets = stats.packets;
            file.to_ns = to;
        }
        doc.cursor_ns = to;
        *used = used.saturating_add(bytes);
        let full = stats.bytes_written >= FILE_SIZE;
        if to >= end || full {
            if let Some((out, _)) = writing.file.take() {
                out.into_inner()
                    .map_err(io::IntoInnerError::into_error)?
                    .sync_all()?;
            }
        }
        write_iteration(&writing.dir, &writing.doc)
    }

    /// Iteration `k` of job `name` as found on disk (or new), ready to go on.
    fn resume(&self, name: &str, k: u32, start: u64, end: u64) -> Result<Writing, RecordingError> {
        let dir = self.dir.folder(name).join(k.to_string());
        fs::create_dir_all(&dir)?;
        let doc = match fs::read(dir.join(ITERATION_FILE)) {
            Ok(text) => serde_json::from_slice(&text).map_err(|e| RecordingError::Invalid {
                field: "iteration.json",
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => IterationDoc {
                iteration: k,
                start_ns: start,
                end_ns: end,
                cursor_ns: start,
                ..IterationDoc::default()
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Writing {
            iteration: k,
            dir,
            doc,
            file: None,
        })
    }

    /// Deletes the iterations of `job` whose expiry has come.
    fn expire(&self, job: &mut Job, now_ns: u64) -> io::Result<()> {
        for (dir, doc) in self.iterations(&job.doc.name) {
            if job
                .schedule
                .expiry_of(doc.iteration)
                .is_some_and(|at| at <= now_ns)
            {
                if job.writing.as_ref().is_some_and(|w| w.iteration == doc.iteration) {
                    job.writing = None;
                }
                self.dir
                    .within(&job.doc.name)
                    .delete(&dir.file_name().unwrap_or_default().to_string_lossy())?;
                log::info!(
                    "recording {:?}: iteration {} expired",
                    job.doc.name,
                    doc.iteration
                );
            }
        }
        Ok(())
    }
}

/// The last iteration of a finished schedule, if it ended before `at`.
fn last_iteration(schedule: &Schedule, at: u64) -> Option<(u32, u64, u64)> {
    if schedule.days == 0 {
        return None;
    }
    let k = schedule.days - 1;
    let start = schedule.start_of(k)?;
    (start < at).then(|| (k, start, start.saturating_add(schedule.duration_ns)))
}

/// (packets, bytes written, missing + damaged) the slicer has counted so far.
fn slicer_totals(slicer: &Slicer) -> (u64, u64, u64) {
    let stats = slicer.stats();
    (
        stats.packets,
        stats.bytes_written,
        u64::try_from(stats.segments_missing.saturating_add(stats.damaged)).unwrap_or(u64::MAX),
    )
}

/// A new file for an iteration, named after the highest one it has.
fn new_file(doc: &mut IterationDoc, dir: &Path, from: u64) -> io::Result<(BufWriter<File>, Slicer)> {
    let seq = doc
        .files
        .iter()
        .filter_map(|f| SegmentName::parse(&f.name).map(|n| n.seq))
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let name = SegmentName {
        seq,
        kind: Kind::Finished,
    }
    .file_name();
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(dir.join(&name))?;
    doc.files.push(RecordingFile {
        name,
        bytes: 0,
        packets: 0,
        from_ns: from,
        to_ns: from,
    });
    // The secrets of the sessions the iteration holds go with them (served to the admin
    // only, `api/recordings.rs`).
    Ok((
        BufWriter::with_capacity(1 << 20, file),
        Slicer::default().with_secrets(),
    ))
}

fn write_iteration(dir: &Path, doc: &IterationDoc) -> Result<(), RecordingError> {
    let tmp = dir.join(format!(".{ITERATION_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut file, doc).map_err(io::Error::from)?;
    file.sync_data()?;
    fs::rename(&tmp, dir.join(ITERATION_FILE))?;
    Ok(())
}
