//! How a segment file is laid out on disk, for the modules that write it (`write/`) and
//! the one that checks it at start (`recover.rs`): one place, so neither imports the
//! other for a number.
//!
//! Rules:
//! - Direct writes go in blocks of [`ALIGN`] bytes: an active file's length is a multiple
//!   of it, padded with zeros after the last written byte (fewer than `ALIGN`, and the
//!   blocks allocated ahead of the writes, which read as zeros).
//! - A segment's Section Header carries the section's length at [`SECTION_LENGTH_AT`]
//!   (`-1`: unknown, in segments of sensors before 2026-12-08 that were not recycled),
//!   rewritten after every write, so a crash never leaves readable the bytes of a write it
//!   interrupted (the two halves of a direct write land in any order) nor a recycled
//!   file's old bytes after the new ones.

/// Offsets, lengths and memory of direct writes are multiples of this: the largest
/// logical block size of the disks a node has (512 or 4096 bytes).
pub(crate) const ALIGN: usize = 4096;

/// Offset 16 of a Section Header Block: the section's length after the block, -1 unknown.
pub(crate) const SECTION_LENGTH_AT: u64 = 16;
