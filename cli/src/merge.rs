//! Streaming k-way merge of pcapng inputs by timestamp.
//!
//! Rules: each input is read block by block (memory does not grow with the inputs); each
//! input's interfaces are declared again in the output with the input's label in front of
//! their names (`node-a/eth0`), so every packet keeps its interface; Name Resolution
//! Blocks pass through (each distinct one once); packets leave in
//! timestamp order (ties keep input order). Inputs are expected in timestamp order, as
//! sensors serve them.
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io::{Read, Write},
};

use anyhow::{Context, Result};
use podcap_sensor::pcapng::{
    read::{parse_packet, BlockReader, Section},
    BlockWriter, Direction, InterfaceDescription,
};

/// One input: a label for its interfaces and its bytes.
pub struct Input<R> {
    pub label: String,
    pub reader: R,
}

struct Cursor<R> {
    label: String,
    reader: BlockReader<R>,
    section: Section,
    /// Output id of each of this input's interfaces.
    ids: Vec<u32>,
    /// The packet waiting to be merged.
    head: Option<Head>,
}

struct Head {
    ts: u64,
    interface: u32,
    original_len: u32,
    direction: Direction,
    data: Vec<u8>,
}

/// What the merge wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct MergeStats {
    pub packets: u64,
    pub bytes: u64,
}

impl<R: Read> Cursor<R> {
    /// Reads up to the next packet, declaring new interfaces into `out` as they come.
    fn advance(
        &mut self,
        out: &mut BlockWriter,
        next_id: &mut u32,
        names_seen: &mut std::collections::HashSet<Vec<u8>>,
    ) -> Result<()> {
        // The previous packet's buffer is reused for the next one.
        let mut data = self.head.take().map(|h| h.data).unwrap_or_default();
        while let Some(block) = self
            .reader
            .next_block()
            .with_context(|| format!("reading {}", self.label))?
        {
            self.section.observe(&block)?;
            if block.block_type == podcap_sensor::pcapng::BLOCK_NRB && names_seen.insert(block.raw.to_vec()) {
                out.raw(block.raw);
            }
            while self.ids.len() < self.section.interfaces.len() {
                let iface = &self.section.interfaces[self.ids.len()];
                out.interface(&InterfaceDescription {
                    name: format!("{}/{}", self.label, iface.name),
                    description: iface.description.clone(),
                    link_type: iface.link_type,
                    snaplen: iface.snaplen,
                });
                self.ids.push(*next_id);
                *next_id += 1;
            }
            if let Some(p) = parse_packet(&block, &self.section)? {
                let Some(&interface) = self.ids.get(p.interface_id as usize) else {
                    continue;
                };
                data.clear();
                data.extend_from_slice(p.data);
                self.head = Some(Head {
                    ts: p.timestamp_ns,
                    interface,
                    original_len: p.original_len,
                    direction: p.direction,
                    data,
                });
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Merges `inputs` into one pcapng section written to `out`.
pub fn merge<R: Read>(inputs: Vec<Input<R>>, out: &mut impl Write) -> Result<MergeStats> {
    let mut blocks = BlockWriter::with_capacity(2 << 20);
    blocks.section_header(concat!("podcap ", env!("CARGO_PKG_VERSION"), " merge"));
    let mut next_id = 0;
    let mut cursors: Vec<Cursor<R>> = inputs
        .into_iter()
        .map(|i| Cursor {
            label: i.label,
            reader: BlockReader::new(i.reader),
            section: Section::default(),
            ids: Vec::new(),
            head: None,
        })
        .collect();
    let mut heap = BinaryHeap::new();
    let mut names_seen = std::collections::HashSet::new();
    for (n, cursor) in cursors.iter_mut().enumerate() {
        cursor.advance(&mut blocks, &mut next_id, &mut names_seen)?;
        if let Some(h) = &cursor.head {
            heap.push(Reverse((h.ts, n)));
        }
    }
    let mut stats = MergeStats::default();
    while let Some(Reverse((_, n))) = heap.pop() {
        let cursor = &mut cursors[n];
        if let Some(h) = &cursor.head {
            blocks.packet(h.interface, h.ts, h.original_len, &h.data, h.direction);
            stats.packets += 1;
        }
        cursor.advance(&mut blocks, &mut next_id, &mut names_seen)?;
        if let Some(h) = &cursor.head {
            heap.push(Reverse((h.ts, n)));
        }
        if blocks.len() >= 1 << 20 {
            out.write_all(blocks.bytes())?;
            stats.bytes += blocks.len() as u64;
            blocks.clear();
        }
    }
    out.write_all(blocks.bytes())?;
    stats.bytes += blocks.len() as u64;
    out.flush()?;
    Ok(stats)
}
