//! Start-up recovery: the store trusts nothing it did not just write.
//!
//! Rules:
//! - Only the store's own names count ([`super::name`]); anything else is listed in the
//!   report and left alone: never read, renamed, deleted or used to pick a sequence number.
//! - Nor does a file with the store's name that cannot be the store's (a copy, a file
//!   numbered where the writer never wrote, an `.active` file older than the newest
//!   segment but the one being closed: [`set_strays_aside`] has the rules). It is set aside the same way before
//!   anything is repaired, and the writer skips its number.
//! - A segment left `.active` by a crash is cut back to its last whole block when only its
//!   tail is torn (the write the crash interrupted: past the length its Section Header
//!   declares, whatever landed of it) and finished; the zeros of direct writes after it
//!   (padding, blocks allocated ahead) go without a word. One whose Section Header
//!   is damaged, or that holds damage with readable blocks after it, is moved to
//!   quarantine whole: never cut, never deleted.
//! - Every index record is checked against its file (length; for plain files the Section
//!   Header and the framing of the last block); a record that disagrees is rebuilt by
//!   reading the file.
//! - A finished file with damage in it is moved to `quarantine/`. Its readable packets stay
//!   in the index (served, with the damage said), it counts in the store's size and
//!   retention retires it like any segment.
//! - Deleted here, and only these: an empty `.active` file, the spare, and a second copy
//!   of a segment (plain beside compressed, left by a stop between compressing and deleting
//!   the original) that the index does not name.
use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use super::{
    index::{self, Index, SegmentRecord},
    name::{self, Kind, SegmentName, QUARANTINE_DIR, SPARE_NAME},
};
use crate::pcapng::read::{check_section_header, complete_prefix_len, next_plausible_block};

/// What recovery found and did, for the log and `/api/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Segments a crash left unfinished, cut back to their last whole block.
    pub repaired: Vec<String>,
    /// Files moved to quarantine, with why.
    pub quarantined: Vec<String>,
    /// Names that look like the store's but are not (left alone).
    pub ignored: Vec<String>,
    /// Index records rebuilt because their file disagreed with them.
    pub rebuilt: Vec<String>,
    /// Index records whose file is gone.
    pub missing: Vec<String>,
}

impl RecoveryReport {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The store as recovery leaves it.
#[derive(Debug)]
pub struct Recovered {
    pub index: Index,
    /// The highest sequence number any of the store's files carries (0: none).
    pub highest_seq: u64,
    pub report: RecoveryReport,
}

/// A file of the store found on disk.
#[derive(Clone, Debug)]
struct Found {
    name: SegmentName,
    quarantined: bool,
    path: PathBuf,
}

impl Found {
    /// How the index names it.
    fn indexed_name(&self) -> String {
        if self.quarantined {
            name::quarantined(&self.name)
        } else {
            self.name.file_name()
        }
    }
}

/// Recovers the store in `dir` (which exists): see the module rules.
pub fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut report = RecoveryReport::default();
    let mut found = list(dir, false, &mut report)?;
    let quarantine = dir.join(QUARANTINE_DIR);
    if quarantine.is_dir() {
        found.extend(list(&quarantine, true, &mut report)?);
    }
    match fs::remove_file(dir.join(SPARE_NAME)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let (mut index, had_index) = match Index::load(dir) {
        Ok(Some(index)) => (index, true),
        Ok(None) => (Index::default(), false),
        Err(e) => {
            log::warn!("{e}; rebuilding it from the segments");
            (Index::default(), false)
        }
    };
    let found = set_strays_aside(&index, had_index, found, &mut report);
    let highest_seq = found
        .iter()
        .map(|f| f.name.seq)
        .chain(index.records().iter().map(|r| r.seq))
        .max()
        .unwrap_or(0);
    let mut kept = Vec::with_capacity(found.len());
    for mut f in found {
        if f.name.kind == Kind::Active {
            let path = f.path.clone();
            let finished = finish_active(dir, &mut f, &mut report)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            if !finished {
                continue;
            }
        }
        kept.push(f);
    }
    let changed = reconcile(dir, &mut index, kept, &mut report)?;
    if changed || !dir.join(index::MANIFEST).exists() {
        index.save(dir)?;
    }
    Ok(Recovered {
        index,
        highest_seq,
        report,
    })
}

/// How far above the index's newest segment a file not in it may be numbered and still be
/// the store's: a crash leaves at most a few finished segments the index does not name yet,
/// right above it, and the writer skips a number only for a stray file.
const UNINDEXED_SEQ_REACH: u64 = 10_000;

/// Sets aside the files that carry the store's names but cannot be the store's own (left
/// alone, named in the report; never read again, renamed, deleted, served or used to pick
/// a sequence number):
/// - with an index: a file the index does not name whose number is not above the index's
///   newest (the writer only ever adds segments above it), except the plain twin of a
///   segment the index names compressed; and one numbered more than
///   [`UNINDEXED_SEQ_REACH`] above it;
/// - an `.active` file that is not the newest of the store's files, nor the one below a
///   newest `.active` (only the segment being written when the sensor stopped is
///   `.active`, and the one before it if it was still being closed);
/// - a file the index does not name whose first packet is the first packet of a segment
///   kept before it: a copy.
fn set_strays_aside(
    index: &Index,
    had_index: bool,
    found: Vec<Found>,
    report: &mut RecoveryReport,
) -> Vec<Found> {
    let newest_indexed = index.records().iter().map(|r| r.seq).max();
    let indexed = |f: &Found| {
        index.records().iter().any(|r| {
            r.seq == f.name.seq
                && (r.file == f.indexed_name()
                    || (f.name.kind == Kind::Finished
                        && !f.quarantined
                        && r.file == f.name.with_kind(Kind::Gzip).file_name()))
        })
    };
    let mut aside = |f: &Found, why: String| {
        log::warn!(
            "{}: {why}; not the store's: left alone, not served",
            f.path.display()
        );
        report.ignored.push(format!("{}: {why}", f.path.display()));
    };
    let mut candidates = Vec::with_capacity(found.len());
    for f in found {
        if indexed(&f) {
            candidates.push(f);
            continue;
        }
        match newest_indexed.filter(|_| had_index) {
            Some(newest) if f.name.seq <= newest => {
                aside(
                    &f,
                    format!("not in the index, and not newer than its newest segment ({newest})"),
                );
            }
            Some(newest) if f.name.seq - newest > UNINDEXED_SEQ_REACH => {
                aside(
                    &f,
                    format!("numbered far above the index's newest segment ({newest})"),
                );
            }
            _ => candidates.push(f),
        }
    }
    let candidates_seqs: Vec<u64> = candidates.iter().map(|f| f.name.seq).collect();
    let newest = candidates_seqs.iter().copied().max();
    // The writer closes a segment while it writes the next: with the newest `.active`,
    // the one below it may be `.active` too.
    let newest_is_active = candidates
        .iter()
        .any(|f| Some(f.name.seq) == newest && f.name.kind == Kind::Active);
    let closing = candidates_seqs
        .iter()
        .copied()
        .filter(|&seq| Some(seq) != newest)
        .max()
        .filter(|_| newest_is_active);
    // The first packet of each segment as its file now holds it: the index's word where
    // the file still matches its record, else the file's.
    let first_packet = |f: &Found| {
        let record = index
            .records()
            .iter()
            .find(|r| r.seq == f.name.seq && r.file == f.indexed_name());
        match record {
            Some(r) if matches_file(r, &f.path).unwrap_or(false) => (r.packets > 0).then_some(r.first_ns),
            _ => index::scan(&f.path, f.name.seq)
                .ok()
                .filter(|r| r.packets > 0)
                .map(|r| r.first_ns),
        }
    };
    let mut firsts: Vec<(u64, u64)> = candidates
        .iter()
        .filter(|f| indexed(f))
        .filter_map(|f| Some((first_packet(f)?, f.name.seq)))
        .collect();
    let mut kept = Vec::with_capacity(candidates.len());
    for f in candidates {
        if indexed(&f) {
            kept.push(f);
            continue;
        }
        let twins = candidates_seqs.iter().filter(|&&seq| seq == f.name.seq).count();
        let unfinished = Some(f.name.seq) == newest || Some(f.name.seq) == closing;
        if f.name.kind == Kind::Active && (!unfinished || twins > 1) {
            aside(&f, "an unfinished segment that is not the newest one".into());
            continue;
        }
        let first = first_packet(&f);
        if let Some((_, of)) = first.and_then(|first| firsts.iter().find(|(ns, _)| *ns == first)) {
            aside(&f, format!("a copy of segment {of} (the same first packet)"));
            continue;
        }
        firsts.extend(first.map(|first| (first, f.name.seq)));
        kept.push(f);
    }
    kept
}

/// The store's files in `dir`; names that only look like the store's go to the report.
fn list(dir: &Path, quarantined: bool, report: &mut RecoveryReport) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let text = file_name.to_string_lossy();
        match SegmentName::parse(&text) {
            Some(name) if entry.file_type()?.is_file() => found.push(Found {
                name,
                quarantined,
                path: entry.path(),
            }),
            parsed => {
                let temporary = text.ends_with(".tmp") || text == SPARE_NAME;
                if (parsed.is_some() || text.starts_with(name::PREFIX)) && !temporary {
                    log::warn!(
                        "{}: not one of the store's segment names; left alone",
                        entry.path().display()
                    );
                    report.ignored.push(entry.path().display().to_string());
                }
            }
        }
    }
    found.sort_by_key(|f| (f.name.seq, f.name.kind != Kind::Finished));
    Ok(found)
}

/// Where the first section of `bytes` (a segment in this machine's byte order) ends by its
/// Section Header's own account, if it gives one.
pub(super) fn declared_section_end(bytes: &[u8]) -> Option<usize> {
    let u32_at = |at: usize| Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    if u32_at(0)? != crate::pcapng::BLOCK_SHB || u32_at(8)? != crate::pcapng::BYTE_ORDER_MAGIC {
        return None;
    }
    let header_len = u32_at(4)? as usize;
    let section = i64::from_ne_bytes(bytes.get(16..24)?.try_into().ok()?);
    usize::try_from(section).ok()?.checked_add(header_len)
}

/// The zeros a direct writer left at the end of an active file (`write/file.rs`): the
/// padding of its last write and the blocks allocated ahead, ending a file whose length is
/// a multiple of the block. Written bytes end with a whole block, whose last four bytes
/// are its length (not zero) at an offset that is a multiple of four; so the written part
/// ends at the first multiple of four after the last byte that is not zero.
#[must_use]
pub fn direct_write_padding(bytes: &[u8]) -> usize {
    let align = super::layout::ALIGN;
    if bytes.is_empty() || !bytes.len().is_multiple_of(align) {
        return 0;
    }
    let written = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| (last + 1).next_multiple_of(4));
    bytes.len().saturating_sub(written)
}

/// Finishes a segment a crash left `.active`: cut back and renamed, or quarantined whole;
/// false if it was empty and is gone.
fn finish_active(dir: &Path, f: &mut Found, report: &mut RecoveryReport) -> io::Result<bool> {
    let mut bytes = fs::read(&f.path)?;
    let padding = direct_write_padding(&bytes);
    if padding > 0 {
        // Not the segment's bytes, nor damage: gone before anything is judged.
        bytes.truncate(bytes.len() - padding);
        fs::OpenOptions::new()
            .write(true)
            .open(&f.path)?
            .set_len(bytes.len() as u64)?;
    }
    if bytes.is_empty() && !f.quarantined {
        log::info!("{}: empty, removed", f.path.display());
        fs::remove_file(&f.path)?;
        return Ok(false);
    }
    // A recycled file says how much of it is this segment's; the rest is an old one's.
    let own_len = declared_section_end(&bytes).map_or(bytes.len(), |end| end.min(bytes.len()));
    let own = &bytes[..own_len];
    let keep = complete_prefix_len(own);
    let torn_tail_only = check_section_header(own).is_ok()
        && next_plausible_block(own, keep.saturating_add(4), false).is_none();
    let file = fs::OpenOptions::new().write(true).open(&f.path)?;
    if torn_tail_only && !f.quarantined {
        if keep < bytes.len() {
            log::warn!(
                "{}: cut {} bytes of a block the previous run did not finish",
                f.path.display(),
                bytes.len() - keep
            );
            report.repaired.push(format!(
                "{}: cut {} bytes of an unfinished block",
                f.name.file_name(),
                bytes.len() - keep
            ));
            file.set_len(keep as u64)?;
        }
        file.sync_all()?;
        let finished = f.name.with_kind(Kind::Finished);
        crate::sys::rename_noreplace(&f.path, &finished.path_in(dir))?;
        *f = Found {
            name: finished,
            quarantined: false,
            path: finished.path_in(dir),
        };
        return Ok(true);
    }
    // The old segment's bytes behind a recycled one are not this segment's damage.
    if own_len < bytes.len() {
        file.set_len(own_len as u64)?;
    }
    file.sync_all()?;
    let reason = if check_section_header(own).is_err() {
        "damaged section header"
    } else {
        "damaged blocks before readable ones"
    };
    let finished = f.name.with_kind(Kind::Finished);
    let target = move_to_quarantine(dir, &f.path, &finished, reason, report)?;
    *f = Found {
        name: finished,
        quarantined: true,
        path: target,
    };
    Ok(true)
}

/// Moves `path` into quarantine as `name`; returns where it is now.
fn move_to_quarantine(
    dir: &Path,
    path: &Path,
    name: &SegmentName,
    reason: &str,
    report: &mut RecoveryReport,
) -> io::Result<PathBuf> {
    let quarantine = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&quarantine)?;
    let target = name.path_in(&quarantine);
    crate::sys::rename_noreplace(path, &target)?;
    fs::File::open(&quarantine)?.sync_all()?;
    fs::File::open(dir)?.sync_all()?;
    log::warn!(
        "{}: {reason}; moved to {} (its readable packets are still served)",
        path.display(),
        target.display()
    );
    report
        .quarantined
        .push(format!("{}: {reason}", name::quarantined(name)));
    Ok(target)
}

/// Makes `index` agree with the files found; returns whether it changed.
fn reconcile(
    dir: &Path,
    index: &mut Index,
    found: Vec<Found>,
    report: &mut RecoveryReport,
) -> io::Result<bool> {
    let mut by_seq: BTreeMap<u64, Vec<Found>> = BTreeMap::new();
    for f in found {
        by_seq.entry(f.name.seq).or_default().push(f);
    }
    let mut changed = false;
    // Records whose file is gone.
    let gone: Vec<u64> = index
        .records()
        .iter()
        .filter(|r| {
            by_seq
                .get(&r.seq)
                .is_none_or(|files| !files.iter().any(|f| f.indexed_name() == r.file))
        })
        .map(|r| r.seq)
        .collect();
    for seq in gone {
        if let Some(record) = index.remove(seq) {
            log::warn!("{}: in the index but not on disk; forgotten", record.file);
            report.missing.push(record.file);
            changed = true;
        }
    }
    for (seq, files) in by_seq {
        // The file the index names, else a plain one, else any.
        let indexed = index
            .records()
            .iter()
            .find(|r| r.seq == seq)
            .map(|r| r.file.clone());
        let keep = files
            .iter()
            .position(|f| Some(f.indexed_name()) == indexed)
            .or_else(|| {
                files
                    .iter()
                    .position(|f| f.name.kind == Kind::Finished && !f.quarantined)
            })
            .unwrap_or(0);
        for (i, other) in files.iter().enumerate() {
            if i == keep {
                continue;
            }
            if other.quarantined || files[keep].quarantined {
                log::warn!(
                    "{}: a second file of segment {seq}; left alone",
                    other.path.display()
                );
                report.ignored.push(other.path.display().to_string());
            } else {
                log::warn!(
                    "{}: a second copy of segment {seq}; deleted",
                    other.path.display()
                );
                fs::remove_file(&other.path)?;
            }
        }
        let file = &files[keep];
        if let Some(record) = index.records().iter().find(|r| r.seq == seq) {
            if matches_file(record, &file.path)? {
                continue;
            }
            log::warn!("{}: differs from its index record; read again", record.file);
            report.rebuilt.push(record.file.clone());
            index.remove(seq);
        }
        index.insert(adopt(dir, file, report)?);
        changed = true;
    }
    Ok(changed)
}

/// Reads a file into a record; a finished file with damage goes to quarantine first.
fn adopt(dir: &Path, file: &Found, report: &mut RecoveryReport) -> io::Result<SegmentRecord> {
    let mut record = index::scan(&file.path, file.name.seq)?;
    if !record.damaged.is_empty() && !file.quarantined {
        let ranges: Vec<String> = record
            .damaged
            .iter()
            .map(|(offset, len)| format!("{offset}+{len}"))
            .collect();
        let reason = format!("damaged at bytes {}", ranges.join(","));
        move_to_quarantine(dir, &file.path, &file.name, &reason, report)?;
    }
    if !record.damaged.is_empty() || file.quarantined {
        record.file = name::quarantined(&file.name);
        // Offsets in a damaged file are only safe where a whole read found them.
        record.checkpoints.clear();
    }
    Ok(record)
}

/// Whether `path` still is what `record` says: its length, and for a plain segment its
/// Section Header and the framing of its last block.
fn matches_file(record: &SegmentRecord, path: &Path) -> io::Result<bool> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len != record.bytes {
        return Ok(false);
    }
    let Some((name, quarantined)) = name::parse_indexed(&record.file) else {
        return Ok(false);
    };
    if quarantined || name.kind != Kind::Finished {
        return Ok(true);
    }
    // A Section Header of the store's writer is well under 4 KiB.
    let mut head = vec![0u8; usize::try_from(len.min(4096)).unwrap_or(4096)];
    file.read_exact(&mut head)?;
    if check_section_header(&head).is_err() {
        return Ok(false);
    }
    // The last 4 bytes are the last block's length, which its first 4 after the type repeat.
    if len < 12 {
        return Ok(false);
    }
    let mut tail = [0u8; 4];
    file.seek(SeekFrom::Start(len - 4))?;
    file.read_exact(&mut tail)?;
    let last_len = u64::from(u32::from_ne_bytes(tail));
    if last_len < 12 || last_len > len || last_len % 4 != 0 {
        return Ok(false);
    }
    let mut lead = [0u8; 4];
    file.seek(SeekFrom::Start(len - last_len + 4))?;
    file.read_exact(&mut lead)?;
    Ok(lead == tail)
}

#[cfg(test)]
mod tests;
