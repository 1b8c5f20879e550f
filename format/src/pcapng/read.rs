//! Reading pcapng: block framing, interface tables and packets.
//!
//! Rules: never trust a length. A block shorter than 12 bytes, longer than the input, not a
//! multiple of 4 or whose trailing length disagrees is an error naming its offset; a file
//! that ends inside a block is `Truncated`, which repair tells apart from corruption.
//! Blocks that are passed on byte for byte (interface, packet and name blocks) are checked
//! whole first, their options and records included: a block another reader would refuse
//! is an error here too.
use std::io::{self, Read};

use super::{Direction, InterfaceDescription, BLOCK_DSB, BLOCK_EPB, BLOCK_IDB, BLOCK_SHB, BYTE_ORDER_MAGIC};

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

/// The comments (`opt_comment`) of a Section Header Block; empty for any other block.
#[must_use]
pub fn section_comments(block: &Block<'_>) -> Vec<String> {
    if block.block_type != BLOCK_SHB {
        return Vec::new();
    }
    let swapped = u32_at(block.raw, 8, false) != Some(BYTE_ORDER_MAGIC);
    options(block.body().get(16..).unwrap_or_default(), swapped)
        .filter(|(code, _)| *code == 1)
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .collect()
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

/// What a section has declared so far: its byte order and interfaces.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub swapped: bool,
    pub interfaces: Vec<InterfaceDescription>,
    /// Per interface: ticks per second of its timestamps.
    pub ticks_per_second: Vec<u64>,
    /// The raw IDB of each interface, for copying into another file.
    pub raw_interfaces: Vec<Vec<u8>>,
}

impl Section {
    /// Updates the section state from a block (SHB resets it, IDB adds an interface).
    pub fn observe(&mut self, block: &Block<'_>) -> Result<(), ReadError> {
        match block.block_type {
            BLOCK_SHB => {
                *self = Section {
                    swapped: u32_at(block.raw, 8, false) != Some(BYTE_ORDER_MAGIC),
                    ..Section::default()
                };
            }
            BLOCK_IDB => {
                let (iface, ticks) = parse_interface(block, self.swapped)?;
                self.interfaces.push(iface);
                self.ticks_per_second.push(ticks);
                self.raw_interfaces.push(block.raw.to_vec());
            }
            _ => {}
        }
        Ok(())
    }
}

fn options(body: &[u8], swapped: bool) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let code = u16_at(body, at, swapped)?;
        let len = usize::from(u16_at(body, at + 2, swapped)?);
        if code == 0 {
            return None;
        }
        let value = body.get(at + 4..at + 4 + len)?;
        at += 4 + len + (4 - len % 4) % 4;
        Some((code, value))
    })
}

/// Options of a packet block whose length the format fixes (code, length): flags, drop
/// count, packet id, queue.
pub const PACKET_OPTIONS: &[(u16, u16)] = &[(2, 4), (4, 8), (5, 8), (6, 4)];
/// Options of an interface block whose length the format fixes: addresses, speed, time
/// resolution and zone, FCS length, time offset, tx and rx speed.
pub const INTERFACE_OPTIONS: &[(u16, u16)] = &[
    (4, 8),
    (5, 17),
    (6, 6),
    (7, 8),
    (8, 8),
    (9, 1),
    (10, 4),
    (13, 1),
    (14, 8),
    (15, 8),
    (16, 8),
];

/// Whether an options area is well formed: every option fits with its padding, options
/// of a fixed length (`fixed`: code, length) have it, and an end-of-options, if there, is
/// the last thing in it.
#[must_use]
pub fn options_valid(mut area: &[u8], swapped: bool, fixed: &[(u16, u16)]) -> bool {
    while !area.is_empty() {
        let (Some(code), Some(len)) = (u16_at(area, 0, swapped), u16_at(area, 2, swapped)) else {
            return false;
        };
        if code == 0 {
            return len == 0 && area.len() == 4;
        }
        if fixed.iter().any(|&(c, l)| c == code && l != len) {
            return false;
        }
        let padded = (usize::from(len) + 3) & !3;
        let Some(rest) = area.get(4 + padded..) else {
            return false;
        };
        area = rest;
    }
    true
}

/// Whether a Name Resolution Block is well formed: its records, each fitting with its
/// padding, up to the end-of-records, then valid options.
#[must_use]
pub fn names_valid(block: &Block<'_>, swapped: bool) -> bool {
    let mut area = block.body();
    loop {
        let (Some(kind), Some(len)) = (u16_at(area, 0, swapped), u16_at(area, 2, swapped)) else {
            return false;
        };
        let padded = (usize::from(len) + 3) & !3;
        let Some(rest) = area.get(4 + padded..) else {
            return false;
        };
        area = rest;
        if kind == 0 {
            return len == 0 && options_valid(area, swapped, &[]);
        }
    }
}

fn parse_interface(block: &Block<'_>, swapped: bool) -> Result<(InterfaceDescription, u64), ReadError> {
    let body = block.body();
    let malformed = || ReadError::Malformed {
        offset: block.offset,
        reason: "short interface block",
    };
    if !options_valid(body.get(8..).unwrap_or_default(), swapped, INTERFACE_OPTIONS) {
        return Err(ReadError::Malformed {
            offset: block.offset,
            reason: "malformed interface options",
        });
    }
    let link_type = u16_at(body, 0, swapped).ok_or_else(malformed)?;
    let snaplen = u32_at(body, 4, swapped).ok_or_else(malformed)?;
    let mut iface = InterfaceDescription {
        name: String::new(),
        description: String::new(),
        link_type,
        snaplen,
    };
    let mut ticks = 1_000_000;
    for (code, value) in options(body.get(8..).unwrap_or_default(), swapped) {
        match code {
            2 => iface.name = String::from_utf8_lossy(value).into_owned(),
            3 => iface.description = String::from_utf8_lossy(value).into_owned(),
            9 => {
                let r = value.first().copied().unwrap_or(6);
                ticks = if r & 0x80 == 0 {
                    10u64.checked_pow(u32::from(r)).unwrap_or(1_000_000_000)
                } else {
                    1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(1_000_000_000)
                };
            }
            _ => {}
        }
    }
    Ok((iface, ticks))
}

/// A packet from an EPB, timestamp converted to ns.
#[derive(Debug)]
pub struct Packet<'a> {
    pub interface_id: u32,
    pub timestamp_ns: u64,
    pub original_len: u32,
    pub data: &'a [u8],
    pub direction: Direction,
}

/// Where and when an EPB's packet was captured, read without touching its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    pub interface_id: u32,
    pub timestamp_ns: u64,
    pub captured_len: u32,
    pub original_len: u32,
}

/// Reads an EPB's header and checks its lengths; `Ok(None)` for any other block.
pub fn parse_packet_header(block: &Block<'_>, section: &Section) -> Result<Option<PacketHeader>, ReadError> {
    if block.block_type != BLOCK_EPB {
        return Ok(None);
    }
    let malformed = |reason| ReadError::Malformed {
        offset: block.offset,
        reason,
    };
    let raw = block.raw;
    let body = &raw[8..raw.len() - 4];
    let s = section.swapped;
    let (Some(interface_id), Some(high), Some(low), Some(captured_len), Some(original_len)) = (
        u32_at(body, 0, s),
        u32_at(body, 4, s),
        u32_at(body, 8, s),
        u32_at(body, 12, s),
        u32_at(body, 16, s),
    ) else {
        return Err(malformed("short packet block"));
    };
    if body.len() < 20 + captured_len as usize {
        return Err(malformed("packet longer than its block"));
    }
    let options_at = 20 + (captured_len as usize).next_multiple_of(4);
    if !body
        .get(options_at..)
        .is_some_and(|options| options_valid(options, s, PACKET_OPTIONS))
    {
        return Err(malformed("malformed packet options"));
    }
    let ticks = *section
        .ticks_per_second
        .get(interface_id as usize)
        .ok_or_else(|| malformed("packet names an undeclared interface"))?;
    let raw_ts = (u64::from(high) << 32) | u64::from(low);
    let timestamp_ns = if ticks == 1_000_000_000 {
        raw_ts
    } else {
        ((u128::from(raw_ts) * 1_000_000_000) / u128::from(ticks)) as u64
    };
    Ok(Some(PacketHeader {
        interface_id,
        timestamp_ns,
        captured_len,
        original_len,
    }))
}

/// Parses an EPB; `Ok(None)` for any other block.
pub fn parse_packet<'a>(block: &Block<'a>, section: &Section) -> Result<Option<Packet<'a>>, ReadError> {
    let Some(header) = parse_packet_header(block, section)? else {
        return Ok(None);
    };
    let raw = block.raw;
    let body = &raw[8..raw.len() - 4];
    let captured = header.captured_len as usize;
    let data = &body[20..20 + captured];
    let options_at = 20 + captured + (4 - captured % 4) % 4;
    let direction = options(body.get(options_at..).unwrap_or_default(), section.swapped)
        .find(|(code, v)| *code == 2 && v.len() == 4)
        .and_then(|(_, v)| u32_at(v, 0, section.swapped))
        .map_or(Direction::Unknown, Direction::from_epb_flags);
    Ok(Some(Packet {
        interface_id: header.interface_id,
        timestamp_ns: header.timestamp_ns,
        original_len: header.original_len,
        data,
        direction,
    }))
}

/// Every packet of an in-memory pcapng file, in file order, with the name of its interface.
pub fn packets_with_names(bytes: &[u8]) -> Result<Vec<(String, Packet<'_>)>, ReadError> {
    let mut section = Section::default();
    let mut out = Vec::new();
    for block in Blocks::new(bytes) {
        let block = block?;
        section.observe(&block)?;
        if let Some(packet) = parse_packet(&block, &section)? {
            // parse_packet has checked that the interface is declared.
            let name = section
                .interfaces
                .get(packet.interface_id as usize)
                .map(|i| i.name.clone())
                .unwrap_or_default();
            out.push((name, packet));
        }
    }
    Ok(out)
}

/// Statistics from an Interface Statistics Block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    pub interface_id: u32,
    /// `isb_starttime` and `isb_endtime`, in ns.
    pub start_ns: Option<u64>,
    pub end_ns: Option<u64>,
    pub received: Option<u64>,
    pub interface_drops: Option<u64>,
    pub os_drops: Option<u64>,
}

/// Parses an ISB; `Ok(None)` for any other block.
pub fn parse_statistics(block: &Block<'_>, section: &Section) -> Result<Option<Statistics>, ReadError> {
    if block.block_type != super::BLOCK_ISB {
        return Ok(None);
    }
    let s = section.swapped;
    let body = block.body();
    let interface_id = u32_at(body, 0, s).ok_or(ReadError::Malformed {
        offset: block.offset,
        reason: "short statistics block",
    })?;
    let mut stats = Statistics {
        interface_id,
        ..Statistics::default()
    };
    let value = |v: &[u8]| {
        let v = u64::from_ne_bytes(v.try_into().ok()?);
        Some(if s { v.swap_bytes() } else { v })
    };
    let ticks = section
        .ticks_per_second
        .get(interface_id as usize)
        .copied()
        .unwrap_or(1_000_000);
    let time = |v: &[u8]| {
        let high = u64::from(u32_at(v, 0, s)?);
        let low = u64::from(u32_at(v, 4, s)?);
        let raw = (high << 32) | low;
        Some(if ticks == 1_000_000_000 {
            raw
        } else {
            ((u128::from(raw) * 1_000_000_000) / u128::from(ticks.max(1))) as u64
        })
    };
    for (code, v) in options(body.get(12..).unwrap_or_default(), s) {
        match code {
            2 => stats.start_ns = time(v),
            3 => stats.end_ns = time(v),
            4 => stats.received = value(v),
            5 => stats.interface_drops = value(v),
            7 => stats.os_drops = value(v),
            _ => {}
        }
    }
    Ok(Some(stats))
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
mod tests {
    use super::*;
    use crate::pcapng::{BlockWriter, LINKTYPE_ETHERNET};

    /// A segment: SHB, IDB, ten EPBs; and the offset of each EPB.
    fn segment() -> (Vec<u8>, Vec<usize>) {
        let mut w = BlockWriter::default();
        w.section_header("test");
        w.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        let mut offsets = Vec::new();
        for i in 0..10u64 {
            offsets.push(w.len());
            w.packet(0, 1_000 + i, 100, &[i as u8; 100], Direction::Inbound);
        }
        (w.bytes().to_vec(), offsets)
    }

    /// (packet timestamps, damage) of a salvaged read.
    fn salvage(bytes: &[u8]) -> (Vec<u64>, Vec<Damage>) {
        let mut section = Section::default();
        let (mut packets, mut damage) = (Vec::new(), Vec::new());
        for piece in SalvagedBlocks::new(bytes) {
            match piece {
                Piece::Block(block) => {
                    section.observe(&block).unwrap();
                    if let Some(p) = parse_packet(&block, &section).unwrap() {
                        packets.push(p.timestamp_ns);
                    }
                }
                Piece::Damaged(d) => damage.push(d),
            }
        }
        (packets, damage)
    }

    #[test]
    fn damage_is_skipped_to_the_next_block_and_said() {
        let (clean, epb) = segment();
        let all: Vec<u64> = (1_000..1_010).collect();
        assert_eq!(salvage(&clean), (all.clone(), Vec::new()));

        // A flipped first byte: the section header is damage, everything after it reads.
        let mut bytes = clean.clone();
        bytes[0] ^= 0xff;
        let (packets, damage) = salvage(&bytes);
        assert_eq!(packets, all);
        assert_eq!(damage.len(), 1);
        assert_eq!(
            (damage[0].offset, damage[0].reason),
            (0, "damaged section header")
        );

        // The header's length flipped: the same.
        let mut bytes = clean.clone();
        bytes[4] ^= 0x40;
        let (packets, damage) = salvage(&bytes);
        assert_eq!((packets, damage.len()), (all.clone(), 1));

        // A packet's length field damaged: that packet is lost, the rest read.
        let mut bytes = clean.clone();
        bytes[epb[3] + 4] ^= 0x13;
        let (packets, damage) = salvage(&bytes);
        let expect: Vec<u64> = all.iter().copied().filter(|&t| t != 1_003).collect();
        assert_eq!(packets, expect);
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].offset, epb[3] as u64);
        assert_eq!(damage[0].len, (epb[4] - epb[3]) as u64);

        // Zeros over two packets (a lost write): skipped, said, the rest read.
        let mut bytes = clean.clone();
        bytes[epb[5]..epb[7] + 8].fill(0);
        let (packets, damage) = salvage(&bytes);
        assert_eq!(packets, vec![1_000, 1_001, 1_002, 1_003, 1_004, 1_008, 1_009]);
        assert_eq!(damage[0].offset, epb[5] as u64);

        // Cut inside a packet: everything before it, and the torn tail said.
        let bytes = &clean[..epb[8] + 30];
        let (packets, damage) = salvage(bytes);
        assert_eq!(packets, all[..8].to_vec());
        assert_eq!((damage.len(), damage[0].reason), (1, "ends inside a block"));
        assert_eq!(damage[0].offset + damage[0].len, bytes.len() as u64);
    }

    #[test]
    fn resync_asks_for_more_rather_than_guessing() {
        let (clean, epb) = segment();
        // Only the head of the block at epb[2] is here: undecided, not "nothing".
        let cut = &clean[..epb[2] + 40];
        assert_eq!(resync(cut, epb[1] + 4, false), Resync::NeedMore(epb[2]));
        assert_eq!(resync(&clean, epb[1] + 4, false), Resync::Found(epb[2]));
        // Unaligned starts round up to the next multiple of four.
        assert_eq!(resync(&clean, epb[1] + 1, false), Resync::Found(epb[2]));
        assert_eq!(next_plausible_block(cut, epb[1] + 4, false), None);
    }

    #[test]
    fn section_headers_are_checked_and_carry_comments() {
        let (clean, _) = segment();
        assert!(check_section_header(&clean).is_ok());
        for at in [0, 4, 8, 12] {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x55;
            assert!(check_section_header(&bytes).is_err(), "byte {at} flipped");
        }
        let mut w = BlockWriter::default();
        w.section_header_with_comments("t", &["one".into(), "two, longer".into()]);
        let block = Blocks::new(w.bytes()).next().unwrap().unwrap();
        assert_eq!(section_comments(&block), vec!["one", "two, longer"]);
    }

    #[test]
    fn blocks_passed_on_byte_for_byte_are_checked_whole() {
        let option = |code: u16, value: &[u8]| {
            let mut o = code.to_ne_bytes().to_vec();
            o.extend_from_slice(&(value.len() as u16).to_ne_bytes());
            o.extend_from_slice(value);
            o.resize(o.len().next_multiple_of(4), 0);
            o
        };
        let end = [0u8; 4];
        let flags = option(2, &1u32.to_ne_bytes());
        assert!(options_valid(&[], false, PACKET_OPTIONS), "no options");
        assert!(options_valid(
            &[flags.clone(), end.to_vec()].concat(),
            false,
            PACKET_OPTIONS
        ));
        assert!(
            options_valid(&flags, false, PACKET_OPTIONS),
            "the block may end the list"
        );
        assert!(
            !options_valid(&option(2, &[1, 0]), false, PACKET_OPTIONS),
            "flags of 2 bytes"
        );
        assert!(
            !options_valid(&[&end[..], &flags].concat(), false, PACKET_OPTIONS),
            "after the end"
        );
        let mut long = flags.clone();
        long[2] = 200;
        assert!(
            !options_valid(&long, false, PACKET_OPTIONS),
            "longer than the block"
        );
        assert!(
            !options_valid(&[1, 0], false, PACKET_OPTIONS),
            "a torn option header"
        );

        let mut w = BlockWriter::default();
        w.names(&[("198.18.0.1".parse().unwrap(), "web-1.shop".into())]);
        let block = Blocks::new(w.bytes()).next().unwrap().unwrap();
        assert!(names_valid(&block, false));
        let mut raw = block.raw.to_vec();
        raw[10] = 0xff; // the first record's length
        let damaged = Block { raw: &raw, ..block };
        assert!(!names_valid(&damaged, false));
    }
}
