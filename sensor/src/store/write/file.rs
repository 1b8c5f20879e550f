//! The active segment's file: how its bytes reach the disk.
//!
//! Rules:
//! - By default the file is written with `O_DIRECT`: the page cache is bypassed, so the
//!   kernel spends a fraction of the CPU of buffered writes and the sensor's memory cgroup
//!   is not charged for dirty pages (`docs/design/store.md`, "Direct writes").
//! - Direct writes go from one buffer aligned to [`ALIGN`], at offsets and lengths that
//!   are multiples of it: each write starts at the block that holds the end of the
//!   previous one (those bytes are kept in memory and written again) and is padded with
//!   zeros to a whole block. So while a segment is written its file is longer than
//!   [`SegmentFile::len`], all zeros (up to `ALIGN - 1` bytes of padding, and the blocks
//!   allocated ahead, below): readers never read past the length the writer published,
//!   crash recovery cuts the zeros, and [`SegmentFile::close`] cuts the file to its length.
//! - Where the file system refuses `O_DIRECT` (when it is asked for, or at a write), or
//!   keeps files in memory anyway (tmpfs, ramfs), the file is written through the page
//!   cache from then on, and the reason is kept for the writer to say once
//!   ([`SegmentFile::take_fallback`]).
//! - The Section Header carries the length of the segment's section
//!   ([`SegmentFile::keep_section_length`]), rewritten after every write: a direct write
//!   that covers the first block carries the new length itself, else the first block is
//!   written again after the write. So on disk it never counts bytes not yet written
//!   whole: neither a recycled file's old bytes nor a write a crash interrupted.
//! - A large direct write (two [`PIECE`]s or more) is split in two halves written side by
//!   side (two writes in flight: the disk's queue holds more than one), into blocks
//!   allocated beforehand: ext4 lets direct writes inside a file's allocated size run at
//!   once, but makes each write that extends the file wait for the one before. So at the
//!   first large write the file's blocks are allocated ahead (`fallocate`) up to the
//!   segment's size ([`SegmentFile::allocate_up_to`]); they read as zeros until written.
//!   A file system that refuses is not asked again for that file, and its writes go
//!   whole, one at a time.
//! - A write either completes, advancing `len`, or fails with `len` unchanged (a write
//!   in pieces that fails halfway is taken back whole); what the file holds past `len` is
//!   then undefined (with halves in flight at a crash, the second may have landed and the
//!   first not), and [`SegmentFile::cut_back`] removes it. The Section Header's length
//!   never counts it, so neither does recovery.
use std::{
    fs::File,
    io::{self, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
};

use crate::store::layout::{ALIGN, SECTION_LENGTH_AT};

/// The most a write through the staging buffer takes at once, so that buffer stays small
/// whatever the size of what is appended; also the least each half of a write split in
/// two holds.
const PIECE: usize = 1 << 20;
/// Blocks allocated ahead at a time, up to the segment's size.
const ALLOCATE_STEP: u64 = 64 << 20;

/// How a segment's file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// `O_DIRECT`, where the file system allows it.
    Direct,
    /// Through the page cache.
    Buffered,
}

pub(in crate::store) struct SegmentFile {
    file: File,
    /// Bytes written: the segment's length.
    len: u64,
    /// `Some` while writes are direct.
    direct: Option<Direct>,
    /// For a recycled file: the Section Header's length, to keep its section length
    /// (the bytes after it) current.
    section_header_len: Option<u64>,
    /// Why direct writes stopped, until the writer takes it.
    fallback: Option<io::Error>,
}

struct Direct {
    /// The bytes of the last partly written block at its start, then room for the next
    /// write.
    staging: AlignedBuf,
    /// The file's first block as last written, for rewriting a recycled file's section
    /// length.
    first_block: Option<AlignedBuf>,
    /// Bytes of the file whose blocks are allocated (ahead, or an old segment's).
    allocated: u64,
    /// How far ahead blocks may be allocated (the segment's size); 0: not at all, or no
    /// more after the file system refused.
    allocate_to: u64,
}

impl Direct {
    /// Allocates the file's blocks up to `end` if they are not yet, ahead by
    /// [`ALLOCATE_STEP`] up to `allocate_to`; after a refusal, never again for this file.
    fn allocate(&mut self, file: &File, end: u64) {
        if end <= self.allocated || self.allocate_to == 0 {
            return;
        }
        let ahead = self.allocate_to.min(self.allocated.saturating_add(ALLOCATE_STEP));
        let target = end.max(ahead).next_multiple_of(ALIGN as u64);
        match crate::sys::allocate(file, self.allocated, target - self.allocated) {
            Ok(()) => self.allocated = target,
            Err(e) => {
                log::debug!("no blocks allocated ahead for a segment: {e}");
                self.allocate_to = 0;
            }
        }
    }
}

impl SegmentFile {
    /// Wraps a file opened for writing at offset 0 (a new one, or a recycled one to be
    /// overwritten).
    pub(in crate::store) fn new(file: File, mode: WriteMode) -> Self {
        let mut segment = Self {
            file,
            len: 0,
            direct: None,
            section_header_len: None,
            fallback: None,
        };
        if mode == WriteMode::Direct {
            match crate::sys::enable_direct_io(&segment.file) {
                Ok(()) => {
                    segment.direct = Some(Direct {
                        staging: AlignedBuf::with_capacity(2 << 20),
                        first_block: None,
                        allocated: segment.file.metadata().map_or(0, |m| m.len()),
                        allocate_to: 0,
                    });
                }
                Err(e) => segment.fallback = Some(e),
            }
        }
        segment
    }

    /// Lets direct writes allocate the file's blocks ahead, up to `limit` bytes (the
    /// segment's size).
    pub(in crate::store) fn allocate_up_to(&mut self, limit: u64) {
        if let Some(direct) = &mut self.direct {
            direct.allocate_to = limit;
        }
    }

    /// Bytes written.
    pub(in crate::store) fn len(&self) -> u64 {
        self.len
    }

    /// Whether writes bypass the page cache.
    #[cfg(test)]
    pub(in crate::store) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Why direct writes were refused, once.
    pub(in crate::store) fn take_fallback(&mut self) -> Option<io::Error> {
        self.fallback.take()
    }

    /// Keeps the Section Header's section length (at [`SECTION_LENGTH_AT`]) equal to the
    /// bytes written after the header's `header_len` bytes, from the next write on.
    pub(in crate::store) fn keep_section_length(&mut self, header_len: u64) {
        self.section_header_len = Some(header_len);
    }

    /// Appends a buffer of any size: a direct write goes from the buffer itself where it
    /// is placed for it (see [`SegmentFile::append_in_place`]), else in pieces of at most
    /// [`PIECE`] through the staging buffer.
    pub(in crate::store) fn append_all(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(result) = self.append_in_place(data) {
            return match result.map(|_| ()) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.stop_direct(e)?;
                    self.append(&[data])
                }
                other => other,
            };
        }
        // A write in pieces either completes or is taken back whole: the length and the
        // staged head of the last block as they were before its first piece.
        let len = self.len;
        let staged = self.direct.as_mut().map(|direct| {
            let tail = (len % ALIGN as u64) as usize;
            direct.staging.as_mut_slice()[..tail].to_vec()
        });
        let written = data.chunks(PIECE).try_for_each(|piece| self.append(&[piece]));
        if written.is_err() {
            self.len = len;
            if let (Some(direct), Some(staged)) = (self.direct.as_mut(), staged) {
                direct.staging.as_mut_slice()[..staged.len()].copy_from_slice(&staged);
            }
        }
        written
    }

    /// A direct write from `data` itself, without copying it: `None` where it does not
    /// apply, which is when writes are not direct, when `data` is shorter than a whole
    /// block past the partly written one, when the first block of a recycled file is in it
    /// (its section length is patched in a copy), or when `data` does not lie where its
    /// whole blocks are aligned in memory (`BlockWriter::clear_placed` puts it there; a
    /// buffer that grew since moved). The partly written block before it and the partial
    /// block after it go from the staging buffer (at most two blocks copied); the whole
    /// blocks between from `data`. Returns how many writes went side by side (two halves
    /// of a large one, one otherwise).
    fn append_in_place(&mut self, data: &[u8]) -> Option<io::Result<usize>> {
        let direct = self.direct.as_mut()?;
        let tail = (self.len % ALIGN as u64) as usize;
        let from = self.len - tail as u64;
        let head_len = (ALIGN - tail) % ALIGN;
        let placed = data.as_ptr().addr() % ALIGN == tail;
        let first_block_patched = self.section_header_len.is_some() && from == 0;
        if !placed || first_block_patched || data.len() < head_len + ALIGN {
            return None;
        }
        let new_len = self.len.checked_add(data.len() as u64)?;
        let (head, rest) = data.split_at(head_len);
        let whole_len = rest.len() / ALIGN * ALIGN;
        let (whole, rest) = rest.split_at(whole_len);
        let blocks_around = usize::from(tail > 0) + usize::from(!rest.is_empty());
        let end = from + (blocks_around * ALIGN + whole.len()) as u64;
        let large = whole.len() >= 2 * PIECE;
        if large {
            direct.allocate(&self.file, end);
        }
        direct.staging.reserve(2 * ALIGN, tail);
        let (head_block, rest_block) = direct.staging.as_mut_slice().split_at_mut(ALIGN);
        head_block[tail..tail + head.len()].copy_from_slice(head);
        rest_block[..rest.len()].copy_from_slice(rest);
        rest_block[rest.len()..ALIGN].fill(0);
        let head_block: &[u8] = if tail > 0 { head_block } else { &[] };
        let rest_block: &[u8] = if rest.is_empty() {
            &[]
        } else {
            &rest_block[..ALIGN]
        };
        // Halves side by side only where neither extends the file (see the rules).
        let halves = large && end <= direct.allocated;
        let split = if halves {
            whole.len() / 2 / ALIGN * ALIGN
        } else {
            whole.len()
        };
        let (first, second) = whole.split_at(split);
        let second_at = from + (head_block.len() + first.len()) as u64;
        let written = write_side_by_side(
            &self.file,
            (&[head_block, first], from),
            (&[second, rest_block], second_at),
            halves,
        );
        if written.is_ok() {
            // The new last block's written head stays staged for the next write.
            direct
                .staging
                .as_mut_slice()
                .copy_within(ALIGN..ALIGN + rest.len(), 0);
            self.rewrite_section_length(new_len);
            self.len = new_len;
        }
        Some(written)
    }

    /// Appends `parts`, in order.
    pub(in crate::store) fn append(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let total = parts.iter().map(|p| p.len() as u64).sum::<u64>();
        if total == 0 {
            return Ok(());
        }
        let new_len = self.len.checked_add(total).ok_or(io::ErrorKind::FileTooLarge)?;
        if self.direct.is_some() {
            match self.append_direct(parts, new_len) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.stop_direct(e)?,
                other => return other,
            }
        }
        write_all_vectored(&mut self.file, parts)?;
        self.len = new_len;
        if let Some(header_len) = self.section_header_len {
            let section = self.len.saturating_sub(header_len);
            if let Err(e) = self.file.write_all_at(&section.to_ne_bytes(), SECTION_LENGTH_AT) {
                log::warn!("could not note the length of a recycled segment: {e}");
            }
        }
        Ok(())
    }

    fn append_direct(&mut self, parts: &[&[u8]], new_len: u64) -> io::Result<()> {
        let Some(direct) = &mut self.direct else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let too_large = || io::Error::from(io::ErrorKind::FileTooLarge);
        // The block holding the end of what is written: its head is already staged.
        let tail = usize::try_from(self.len % ALIGN as u64).map_err(|_| too_large())?;
        let from = self.len - tail as u64;
        let end = usize::try_from(new_len - from).map_err(|_| too_large())?;
        let padded = end.checked_next_multiple_of(ALIGN).ok_or_else(too_large)?;
        direct.staging.reserve(padded, tail);
        let buf = direct.staging.as_mut_slice();
        let mut at = tail;
        for part in parts {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        buf[end..padded].fill(0);
        if let Some(header_len) = self.section_header_len.filter(|_| from == 0) {
            let section = new_len.saturating_sub(header_len).to_ne_bytes();
            let at = SECTION_LENGTH_AT as usize;
            if let Some(field) = buf.get_mut(at..at + section.len()) {
                field.copy_from_slice(&section);
            }
        }
        self.file.write_all_at(&buf[..padded], from)?;
        if from == 0 {
            let mut first = AlignedBuf::with_capacity(ALIGN);
            first.as_mut_slice().copy_from_slice(&buf[..ALIGN]);
            direct.first_block = Some(first);
        }
        // The new last block's written head stays staged for the next write.
        let kept = end % ALIGN;
        buf.copy_within(end - kept..end, 0);
        if from != 0 {
            self.rewrite_section_length(new_len);
        }
        self.len = new_len;
        Ok(())
    }

    /// For a recycled file written directly: its first block, as last written, written
    /// again with the section length `new_len` bytes make.
    fn rewrite_section_length(&mut self, new_len: u64) {
        let first = self.direct.as_mut().and_then(|d| d.first_block.as_mut());
        let (Some(header_len), Some(first)) = (self.section_header_len, first) else {
            return;
        };
        let section = new_len.saturating_sub(header_len).to_ne_bytes();
        let at = SECTION_LENGTH_AT as usize;
        first.as_mut_slice()[at..at + section.len()].copy_from_slice(&section);
        if let Err(e) = self.file.write_all_at(first.as_mut_slice(), 0) {
            log::warn!("could not note the length of a recycled segment: {e}");
        }
    }

    /// Goes on through the page cache after a refused direct write.
    fn stop_direct(&mut self, reason: io::Error) -> io::Result<()> {
        self.direct = None;
        self.fallback = Some(reason);
        crate::sys::set_direct_io(&self.file, false)?;
        self.file.seek(SeekFrom::Start(self.len))?;
        Ok(())
    }

    /// Cuts the file back to what was written, after a failed write (blocks allocated
    /// ahead included).
    pub(in crate::store) fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        if let Some(direct) = &mut self.direct {
            direct.allocated = direct.allocated.min(self.len);
        }
        if self.direct.is_none() {
            self.file.seek(SeekFrom::Start(self.len))?;
        }
        Ok(())
    }

    /// Cuts the file to its length (a recycled file's old bytes, direct writes' padding,
    /// blocks allocated ahead) and syncs it; the file stays open.
    pub(in crate::store) fn close(&mut self) -> io::Result<()> {
        if self.file.metadata()?.len() != self.len {
            self.file.set_len(self.len)?;
        }
        self.file.sync_all()
    }
}

/// A byte buffer whose start is aligned to [`ALIGN`], in safe code: a `Vec` one
/// alignment larger, used from its first aligned byte.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl AlignedBuf {
    fn with_capacity(capacity: usize) -> Self {
        let raw = vec![0u8; capacity + ALIGN];
        let start = (ALIGN - raw.as_ptr().addr() % ALIGN) % ALIGN;
        Self { raw, start, capacity }
    }

    /// Makes room for `needed` bytes, keeping the first `keep`.
    fn reserve(&mut self, needed: usize, keep: usize) {
        if needed <= self.capacity {
            return;
        }
        let mut grown = Self::with_capacity(needed.next_power_of_two());
        grown.as_mut_slice()[..keep].copy_from_slice(&self.as_mut_slice()[..keep]);
        *self = grown;
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.capacity]
    }
}

/// Writes two runs of slices, each at its offset: side by side (the second on a thread of
/// its own) if `side_by_side`, else in turn; returns how many went at once.
fn write_side_by_side(
    file: &File,
    first: (&[&[u8]], u64),
    second: (&[&[u8]], u64),
    side_by_side: bool,
) -> io::Result<usize> {
    let write = |(parts, at): (&[&[u8]], u64)| {
        let mut slices: Vec<io::IoSlice<'_>> = parts
            .iter()
            .filter(|part| !part.is_empty())
            .map(|part| io::IoSlice::new(part))
            .collect();
        write_all_vectored_at(file, &mut slices, at)
    };
    std::thread::scope(|scope| {
        let beside = side_by_side
            .then(|| {
                std::thread::Builder::new()
                    .name("podcap-disk-2".into())
                    .spawn_scoped(scope, || write(second))
                    .ok()
            })
            .flatten();
        let first_written = write(first);
        match beside {
            Some(beside) => {
                let second_written = beside
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the second write's thread panicked")));
                first_written.and(second_written).map(|()| 2)
            }
            None => first_written.and_then(|()| write(second)).map(|()| 1),
        }
    })
}

/// Writes every slice at `offset` on, with as few `pwritev` calls as it takes.
fn write_all_vectored_at(file: &File, mut slices: &mut [io::IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    while !slices.is_empty() {
        match crate::sys::write_vectored_at(file, slices, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                io::IoSlice::advance_slices(&mut slices, n);
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes every part with as few `writev` calls as it takes.
fn write_all_vectored(file: &mut File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| io::IoSlice::new(part))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
