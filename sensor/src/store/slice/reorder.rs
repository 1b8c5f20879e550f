//! The reorder window of a slice: packets that cannot go out as soon as they are read
//! wait here, and go out oldest first once no packet still to be read can be older.
//!
//! Rules:
//! - A held packet is its EPB encoded for the output, all but the interface id, which is
//!   set when it is written (the output declares an interface just before its first
//!   packet).
//! - Packets no older than the newest one held wait in a queue in arrival order (no heap
//!   operations: most held packets are these); those that step back behind it wait in a
//!   min-heap by (timestamp, arrival). Both are released merged, so ties keep arrival
//!   order.
//! - Buffers of written packets are kept for the next ones (`free`).
use std::cmp::Reverse;

use super::{LocalInterface, Slicer, EPB_INTERFACE_AT};
use crate::pcapng::read::{parse_packet, Block, ReadError, Section};

/// A packet held back until no packet still to be read can be older: its EPB, encoded
/// for the output except for the interface id, which is set when it is written.
pub(super) struct Pending {
    pub(super) timestamp_ns: u64,
    pub(super) arrival: u64,
    pub(super) interface: usize,
    pub(super) block: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.timestamp_ns, self.arrival).cmp(&(other.timestamp_ns, other.arrival))
    }
}

impl Slicer {
    /// Whether no packet is held back.
    pub(super) fn holds_nothing(&self) -> bool {
        self.in_order.is_empty() && self.heap.is_empty()
    }

    /// Writes the held-back packets no older than `up_to`, oldest first: the queue and
    /// the heap merged by (timestamp, arrival).
    pub(super) fn release(&mut self, up_to: u64) {
        loop {
            let (oldest, from_queue) = match (self.in_order.front(), self.heap.peek()) {
                (Some(queued), Some(Reverse(stepped_back))) if stepped_back < queued => (stepped_back, false),
                (Some(queued), _) => (queued, true),
                (None, Some(Reverse(stepped_back))) => (stepped_back, false),
                (None, None) => break,
            };
            if oldest.timestamp_ns > up_to {
                break;
            }
            let popped = if from_queue {
                self.in_order.pop_front()
            } else {
                self.heap.pop().map(|Reverse(p)| p)
            };
            let Some(mut p) = popped else {
                break;
            };
            let id = self.output_id(p.interface);
            p.block[EPB_INTERFACE_AT..EPB_INTERFACE_AT + 4].copy_from_slice(&id.to_ne_bytes());
            self.blocks.raw(&p.block);
            self.count_emitted(p.timestamp_ns);
            self.free.push(p.block);
        }
    }

    /// Holds a packet back: its EPB as it is when it can be copied, else re-encoded.
    pub(super) fn hold(
        &mut self,
        block: &Block<'_>,
        section: &Section,
        interface: LocalInterface,
        timestamp_ns: u64,
    ) -> Result<(), ReadError> {
        let mut bytes = self.free.pop().unwrap_or_default();
        bytes.clear();
        if interface.copy {
            bytes.extend_from_slice(block.raw);
        } else if let Some(packet) = parse_packet(block, section)? {
            self.scratch.clear();
            self.scratch.packet(
                0,
                timestamp_ns,
                packet.original_len,
                packet.data,
                packet.direction,
            );
            bytes.extend_from_slice(self.scratch.bytes());
        }
        let pending = Pending {
            timestamp_ns,
            arrival: self.arrival,
            interface: interface.out,
            block: bytes,
        };
        // Arrival only grows, so a packet no older than the queue's newest sorts after it.
        if self
            .in_order
            .back()
            .is_none_or(|newest| timestamp_ns >= newest.timestamp_ns)
        {
            self.in_order.push_back(pending);
        } else {
            self.heap.push(Reverse(pending));
        }
        self.arrival += 1;
        Ok(())
    }
}
