//! The store's time index: the format and its rules are `podcap_format::index`'s; here, what
//! needs the store's files: reading a segment (plain or compressed, damaged or not) into
//! its record.
use std::{fs, io, path::Path};

pub use podcap_format::index::*;

use crate::pcapng::read::{parse_packet, parse_statistics, Piece, SalvagedBlocks, Section};

/// Builds the record of a finished segment by reading it. Damage does not stop it: the
/// readable blocks are counted and what could not be read is listed in `damaged`.
pub fn scan(path: &Path, seq: u64) -> io::Result<SegmentRecord> {
    let (bytes, unreadable_rest) = super::compress::SegmentReader::read_readable(path)?;
    let compressed = path.to_string_lossy().ends_with(super::name::GZIP_SUFFIX);
    let mut record = SegmentRecord {
        seq,
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes: bytes.len() as u64,
        first_ns: u64::MAX,
        ..SegmentRecord::default()
    };
    let mut section = Section::default();
    let mut last_checkpoint = 0;
    // Checkpoints lie past every statistics block that could count time after them.
    let mut statistics_end = 0u64;
    for piece in SalvagedBlocks::new(&bytes) {
        let block = match piece {
            Piece::Block(block) => block,
            Piece::Damaged(damage) => {
                record.damaged.push((damage.offset, damage.len));
                continue;
            }
        };
        let whole = (block.offset, block.raw.len() as u64);
        if section.observe(&block).is_err() {
            record.damaged.push(whole);
            continue;
        }
        if record.packets > 0 && block.offset >= last_checkpoint + CHECKPOINT_BYTES {
            record
                .checkpoints
                .push((block.offset, record.last_ns.max(statistics_end)));
            last_checkpoint = block.offset;
        }
        match parse_packet(&block, &section) {
            Ok(Some(packet)) => record.note_packet(packet.interface_id, packet.timestamp_ns),
            Ok(None) => match parse_statistics(&block, &section) {
                Ok(Some(stats)) if stats.segment_totals => {}
                Ok(Some(stats)) => {
                    statistics_end = statistics_end.max(stats.end_ns.unwrap_or(0));
                    record.drops = record
                        .drops
                        .saturating_add(stats.interface_drops.unwrap_or(0))
                        .saturating_add(stats.os_drops.unwrap_or(0));
                }
                Ok(None) => {}
                Err(_) => record.damaged.push(whole),
            },
            Err(_) => record.damaged.push(whole),
        }
    }
    if unreadable_rest {
        record.damaged.push((bytes.len() as u64, 0));
    }
    if record.packets == 0 {
        record.first_ns = 0;
    }
    if compressed {
        record.bytes = fs::metadata(path)?.len();
        record.checkpoints.clear();
    }
    Ok(record)
}
