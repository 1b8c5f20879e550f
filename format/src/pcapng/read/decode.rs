//! Decoding pcapng blocks whose framing `read.rs` checked: a section's interfaces,
//! options, name records, packets and statistics.
//!
//! Rules: never trust a length inside a block either: an option, a record or a packet
//! that does not fit its block is an error naming the block's offset. Blocks that are
//! passed on byte for byte (interface, packet and name blocks) are checked whole, their
//! options and records included: a block another reader would refuse is refused here too.
//! Timestamps are turned into nanoseconds by the interface's resolution, checked.
use super::{u16_at, u32_at, Block, Blocks, ReadError};
use crate::pcapng::{Direction, InterfaceDescription, BLOCK_EPB, BLOCK_IDB, BLOCK_SHB, BYTE_ORDER_MAGIC};

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
    /// A segment's totals block ([`crate::pcapng::SEGMENT_TOTALS_COMMENT`]): it repeats
    /// what the blocks before it count.
    pub segment_totals: bool,
}

/// Parses an ISB; `Ok(None)` for any other block.
pub fn parse_statistics(block: &Block<'_>, section: &Section) -> Result<Option<Statistics>, ReadError> {
    if block.block_type != crate::pcapng::BLOCK_ISB {
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
            1 => {
                stats.segment_totals |= v.starts_with(crate::pcapng::SEGMENT_TOTALS_COMMENT.as_bytes());
            }
            _ => {}
        }
    }
    Ok(Some(stats))
}
