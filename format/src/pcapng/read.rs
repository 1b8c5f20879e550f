//! Reading pcapng: block framing (this file) and decoding (`read/decode.rs`: interface
//! tables, options, names, packets, statistics).
//!
//! Rules: never trust a length. A block shorter than 12 bytes, longer than the input, not a
//! multiple of 4 or whose trailing length disagrees is an error naming its offset; a file
//! that ends inside a block is `Truncated`, which repair tells apart from corruption.
//! Blocks that are passed on byte for byte (interface, packet and name blocks) are checked
//! whole first, their options and records included: a block another reader would refuse
//! is an error here too.
//!
//! Framing here: a block's length checked against the input and its trailer, the search
//! for the next plausible block past damage ([`resync`], [`SalvagedBlocks`]), and block
//! iteration over a buffer ([`Blocks`]) or a reader ([`BlockReader`]).
use std::io::{self, Read};

mod decode;

pub use self::decode::{
    names_valid, options_valid, packets_with_names, parse_packet, parse_packet_header, parse_statistics,
    section_comments, Packet, PacketHeader, Section, Statistics, INTERFACE_OPTIONS, PACKET_OPTIONS,
};

use super::{BLOCK_DSB, BLOCK_EPB, BLOCK_IDB, BLOCK_SHB, BYTE_ORDER_MAGIC};

/// Largest block accepted (a 256 KiB packet plus options, with room to spare).
pub const MAX_BLOCK_LEN: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("pcapng input ends inside a block at offset {offset}")]
    Truncated { offset: u64 },
    #[error("malformed pcapng block at offset {offset}: {reason}")]
    Malformed { offset: u64, reason: &'static str },
    #[error("reading pcapng input failed")]
    Io(#[from] io::Error),
}

/// One block: its type and its whole encoding (header and trailer included).
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    pub block_type: u32,
    pub offset: u64,
    pub raw: &'a [u8],
}

impl Block<'_> {
    /// The block body (without type, length and trailing length).
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.raw[8..self.raw.len() - 4]
    }
}

fn u32_at(bytes: &[u8], at: usize, swapped: bool) -> Option<u32> {
    let v = u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
    Some(if swapped { v.swap_bytes() } else { v })
}

fn u16_at(bytes: &[u8], at: usize, swapped: bool) -> Option<u16> {
    let v = u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
    Some(if swapped { v.swap_bytes() } else { v })
}

/// Checks the framing of the block starting at `bytes[0]`; returns its total length.
fn frame(bytes: &[u8], offset: u64, swapped: bool) -> Result<usize, ReadError> {
    let malformed = |reason| ReadError::Malformed { offset, reason };
    if bytes.len() < 12 {
        return Err(ReadError::Truncated { offset });
    }
    let block_type = u32_at(bytes, 0, false).unwrap_or(0);
    // An SHB announces its own byte order, so its length is read in that order.
    let swapped = if block_type == BLOCK_SHB {
        match u32_at(bytes, 8, false) {
            Some(BYTE_ORDER_MAGIC) => false,
            Some(m) if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
            _ => return Err(malformed("bad byte-order magic")),
        }
    } else {
        swapped
    };
    let total = u32_at(bytes, 4, swapped).unwrap_or(0) as usize;
    if total < 12 || !total.is_multiple_of(4) || total > MAX_BLOCK_LEN {
        return Err(malformed("bad block length"));
    }
    if total > bytes.len() {
        return Err(ReadError::Truncated { offset });
    }
    if u32_at(bytes, total - 4, swapped) != Some(total as u32) {
        return Err(malformed("trailing length differs"));
    }
    Ok(total)
}

/// Whether `bytes` starts with a well-framed block of a type podcap reads (SHB, IDB, NRB,
/// ISB, EPB, DSB) whose fixed fields fit; its total length if so. What resynchronisation
/// after damage accepts as the next block.
fn plausible_block(bytes: &[u8], swapped: bool) -> Option<usize> {
    // The SHB's type reads the same in both byte orders; `frame` checks its magic.
    let block_type = u32_at(bytes, 0, swapped)?;
    let total = frame(bytes, 0, swapped).ok()?;
    let body = total - 12;
    let fits = match block_type {
        BLOCK_SHB => body >= 16,
        BLOCK_IDB => body >= 8,
        BLOCK_EPB => {
            let captured = u32_at(bytes, 20, swapped)? as usize;
            body >= 20 && captured <= body - 20
        }
        super::BLOCK_NRB | BLOCK_DSB => body >= 4,
        super::BLOCK_ISB => body >= 12,
        _ => false,
    };
    fits.then_some(total)
}

/// How far a search for the next block got in a buffer that may not hold the whole file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    /// A plausible block begins here.
    Found(usize),
    /// Nothing before this offset can begin a block; from here on, more bytes are needed
    /// to tell (a block header announcing more than the buffer holds, or too few bytes).
    NeedMore(usize),
}

/// Searches `bytes` from `from` for the next plausible block, in steps of 4 (blocks are
/// multiples of 4 long, so every block of a file starts 4-aligned). The way past damage:
/// what lies between is skipped, and said to be.
#[must_use]
pub fn resync(bytes: &[u8], from: usize, swapped: bool) -> Resync {
    let mut at = from.saturating_add(3) & !3;
    while at.saturating_add(12) <= bytes.len() {
        let rest = &bytes[at..];
        if plausible_block(rest, swapped).is_some() {
            return Resync::Found(at);
        }
        let announced = u32_at(rest, 4, swapped).unwrap_or(0) as usize;
        let known_type = matches!(
            u32_at(rest, 0, swapped),
            Some(BLOCK_SHB | BLOCK_IDB | BLOCK_EPB | BLOCK_DSB | super::BLOCK_NRB | super::BLOCK_ISB)
        );
        if known_type && announced > rest.len() && announced <= MAX_BLOCK_LEN && announced.is_multiple_of(4) {
            return Resync::NeedMore(at);
        }
        at += 4;
    }
    Resync::NeedMore(at.min(bytes.len()))
}

/// Where the next plausible block begins in the whole input `bytes` at or after `from`;
/// `None` if none does.
#[must_use]
pub fn next_plausible_block(bytes: &[u8], from: usize, swapped: bool) -> Option<usize> {
    let mut at = from;
    loop {
        match resync(bytes, at, swapped) {
            Resync::Found(found) => return Some(found),
            // A header announcing more than the input holds is not a block of it.
            Resync::NeedMore(undecided) if undecided.saturating_add(12) <= bytes.len() => at = undecided + 4,
            Resync::NeedMore(_) => return None,
        }
    }
}

/// Checks that `bytes` begins with a whole Section Header Block of pcapng version 1.
pub fn check_section_header(bytes: &[u8]) -> Result<(), ReadError> {
    let malformed = |reason| ReadError::Malformed { offset: 0, reason };
    if u32_at(bytes, 0, false) != Some(BLOCK_SHB) {
        return Err(malformed("no section header at the start"));
    }
    let total = frame(bytes, 0, false)?;
    let swapped = u32_at(bytes, 8, false) != Some(BYTE_ORDER_MAGIC);
    if total < 28 {
        return Err(malformed("section header too short"));
    }
    if u16_at(bytes, 12, swapped) != Some(1) {
        return Err(malformed("section header of an unknown pcapng version"));
    }
    Ok(())
}

/// A piece of a damaged file: a block, or a run of bytes that holds none.
#[derive(Clone, Copy, Debug)]
pub enum Piece<'a> {
    Block(Block<'a>),
    Damaged(Damage),
}

/// Bytes of a file that could not be read as blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub len: u64,
    pub reason: &'static str,
}

/// Iterates the blocks of an in-memory pcapng file that may be damaged: past a block that
/// cannot be read it goes on at the next plausible block, and yields what it skipped as
/// [`Piece::Damaged`]. A file that does not begin with a section header is read in this
/// machine's byte order.
pub struct SalvagedBlocks<'a> {
    bytes: &'a [u8],
    offset: usize,
    swapped: bool,
}

impl<'a> SalvagedBlocks<'a> {
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            offset: 0,
            swapped: false,
        }
    }
}

impl<'a> Iterator for SalvagedBlocks<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.offset..).filter(|r| !r.is_empty())?;
        let offset = self.offset;
        let damaged_shb = offset == 0 && check_section_header(rest).is_err();
        match frame(rest, offset as u64, self.swapped) {
            Ok(total) if !damaged_shb => {
                let raw = &rest[..total];
                let block_type = u32_at(raw, 0, self.swapped).unwrap_or(0);
                if block_type == BLOCK_SHB {
                    self.swapped = u32_at(raw, 8, false) != Some(BYTE_ORDER_MAGIC);
                }
                self.offset += total;
                Some(Piece::Block(Block {
                    block_type,
                    offset: offset as u64,
                    raw,
                }))
            }
            result => {
                let reason = match result {
                    _ if damaged_shb => "damaged section header",
                    Err(ReadError::Truncated { .. }) => "ends inside a block",
                    Err(ReadError::Malformed { reason, .. }) => reason,
                    _ => "unreadable",
                };
                let next =
                    next_plausible_block(self.bytes, offset + 4, self.swapped).unwrap_or(self.bytes.len());
                self.offset = next;
                Some(Piece::Damaged(Damage {
                    offset: offset as u64,
                    len: (next - offset) as u64,
                    reason,
                }))
            }
        }
    }
}

/// The block at the start of `bytes`, its framing checked: `(type, total length)`, or
/// `None` when `bytes` ends inside it (read more and ask again). `offset` only names the
/// block in errors.
pub fn peek_block(bytes: &[u8], offset: u64, swapped: bool) -> Result<Option<(u32, usize)>, ReadError> {
    match frame(bytes, offset, swapped) {
        Ok(total) => Ok(Some((u32_at(bytes, 0, swapped).unwrap_or(0), total))),
        Err(ReadError::Truncated { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Iterates the blocks of an in-memory pcapng file.
pub struct Blocks<'a> {
    bytes: &'a [u8],
    offset: usize,
    swapped: bool,
}

impl<'a> Blocks<'a> {
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            offset: 0,
            swapped: false,
        }
    }
}

impl<'a> Iterator for Blocks<'a> {
    type Item = Result<Block<'a>, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let offset = self.offset as u64;
        match frame(rest, offset, self.swapped) {
            Ok(total) => {
                let raw = &rest[..total];
                let block_type = u32_at(raw, 0, self.swapped).unwrap_or(0);
                if block_type == BLOCK_SHB {
                    self.swapped = u32_at(raw, 8, false) != Some(BYTE_ORDER_MAGIC);
                }
                self.offset += total;
                Some(Ok(Block {
                    block_type,
                    offset,
                    raw,
                }))
            }
            Err(e) => {
                self.offset = self.bytes.len();
                Some(Err(e))
            }
        }
    }
}

/// Reads blocks one at a time from a stream into a reused buffer.
pub struct BlockReader<R> {
    inner: R,
    buf: Vec<u8>,
    offset: u64,
    swapped: bool,
}

impl<R: Read> BlockReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(1 << 16),
            offset: 0,
            swapped: false,
        }
    }

    /// Offset of the next block.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next block, `None` at a clean end of input.
    pub fn next_block(&mut self) -> Result<Option<Block<'_>>, ReadError> {
        let offset = self.offset;
        self.buf.clear();
        self.buf.resize(12, 0);
        let got = read_full(&mut self.inner, &mut self.buf)?;
        if got == 0 {
            return Ok(None);
        }
        if got < 12 {
            return Err(ReadError::Truncated { offset });
        }
        let block_type = u32_at(&self.buf, 0, false).unwrap_or(0);
        let swapped = if block_type == BLOCK_SHB {
            match u32_at(&self.buf, 8, false) {
                Some(BYTE_ORDER_MAGIC) => false,
                Some(m) if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
                _ => {
                    return Err(ReadError::Malformed {
                        offset,
                        reason: "bad byte-order magic",
                    })
                }
            }
        } else {
            self.swapped
        };
        let total = u32_at(&self.buf, 4, swapped).unwrap_or(0) as usize;
        if total < 12 || !total.is_multiple_of(4) || total > MAX_BLOCK_LEN {
            return Err(ReadError::Malformed {
                offset,
                reason: "bad block length",
            });
        }
        self.buf.resize(total, 0);
        if read_full(&mut self.inner, &mut self.buf[12..])? < total - 12 {
            return Err(ReadError::Truncated { offset });
        }
        frame(&self.buf, offset, swapped)?;
        self.swapped = swapped;
        self.offset += total as u64;
        let block_type = u32_at(&self.buf, 0, swapped).unwrap_or(0);
        Ok(Some(Block {
            block_type,
            offset,
            raw: &self.buf,
        }))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Length of the longest prefix of `bytes` made of whole, well-formed blocks.
#[must_use]
pub fn complete_prefix_len(bytes: &[u8]) -> usize {
    let mut end = 0;
    for block in Blocks::new(bytes) {
        match block {
            Ok(b) => end = b.offset as usize + b.raw.len(),
            Err(_) => break,
        }
    }
    end
}

#[cfg(test)]
mod tests;
