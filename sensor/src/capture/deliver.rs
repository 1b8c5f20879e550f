//! Delivery: a packet from either channel, checked, counted for its slot, filtered and
//! handed to a [`PacketSink`] (`ring.rs`).
//!
//! Rules:
//! - A frame or record without podcap's header (magic) is never trusted: an AF_XDP frame
//!   without it is a kernel drop of its queue's slot; a ring record without it belongs to
//!   no slot and is only logged (it cannot happen short of a bug).
//! - Lengths come from the header and are checked against the bytes there are: a record
//!   claiming more than it holds is not delivered.
//! - Every packet of a slot is counted once as received; then either filtered, refused by
//!   the sink (a ring-stage drop) or accepted.
//! - Timestamps arrive in `CLOCK_MONOTONIC` and leave in wall-clock time, by the offset the
//!   capture loop keeps fresh; a sum below the epoch is 0, never a wrap.
use std::sync::atomic::Ordering::Relaxed;

use podcap_common::{slot_of_queue, CopyHeader, FrameMeta, COPY_MAGIC, FRAME_META_MAGIC};

use crate::{
    filter::Filter,
    ring::{PacketSink, RecordHeader},
    stats::Stats,
};

const META_LEN: usize = std::mem::size_of::<FrameMeta>();

/// A packet on its way from a channel to the ring.
struct Arrival<'a> {
    queue: u32,
    /// `CLOCK_MONOTONIC`.
    timestamp_ns: u64,
    original_len: u32,
    data: &'a [u8],
}

/// Hands one AF_XDP frame with its metadata to the sink, counting it (or its loss) for
/// its slot.
pub(super) fn push_frame(
    sink: &mut impl PacketSink,
    stats: &Stats,
    clock_offset_ns: i128,
    filter: Option<&Filter>,
    queue: u32,
    frame: &[u8],
) {
    let Some((meta, data)) = split_meta(frame) else {
        let (slot, _) = slot_of_queue(queue);
        if let Some(slot_stats) = stats.slots.get(slot as usize) {
            slot_stats.kernel_drops.fetch_add(1, Relaxed);
        }
        return;
    };
    let copy = Arrival {
        queue,
        timestamp_ns: meta.timestamp_ns,
        original_len: meta.original_len,
        data,
    };
    push(sink, stats, clock_offset_ns, filter, &copy);
}

/// Hands one ring-channel record to the sink (a record that is not ours is a kernel
/// drop of no slot: it cannot happen short of a bug, and is not trusted).
pub(super) fn push_copy(
    sink: &mut impl PacketSink,
    stats: &Stats,
    clock_offset_ns: i128,
    filter: Option<&Filter>,
    record: &[u8],
) {
    let Some((header, data)) = split_copy(record) else {
        log::debug!("a ring record of {} bytes without a podcap header", record.len());
        return;
    };
    let copy = Arrival {
        queue: header.queue,
        timestamp_ns: header.timestamp_ns,
        original_len: header.original_len,
        data,
    };
    push(sink, stats, clock_offset_ns, filter, &copy);
}

fn split_copy(record: &[u8]) -> Option<(CopyHeader, &[u8])> {
    let (head, rest) = record.split_at_checked(std::mem::size_of::<CopyHeader>())?;
    let u32_at = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&head[0..8]);
    let header = CopyHeader {
        timestamp_ns: u64::from_ne_bytes(ts),
        original_len: u32_at(8),
        captured_len: u32_at(12),
        queue: u32_at(16),
        magic: u32_at(20),
    };
    if header.magic != COPY_MAGIC {
        return None;
    }
    Some((header, rest.get(..header.captured_len as usize)?))
}

/// Counts a packet for its slot, applies the filter and hands it to the sink.
fn push(
    sink: &mut impl PacketSink,
    stats: &Stats,
    clock_offset_ns: i128,
    filter: Option<&Filter>,
    copy: &Arrival<'_>,
) {
    let (slot, _) = slot_of_queue(copy.queue);
    let Some(slot_stats) = stats.slots.get(slot as usize) else {
        return;
    };
    slot_stats.received.fetch_add(1, Relaxed);
    slot_stats
        .received_bytes
        .fetch_add(u64::from(copy.original_len), Relaxed);
    if filter.is_some_and(|f| !f.matches(copy.data, copy.original_len)) {
        slot_stats.filtered.fetch_add(1, Relaxed);
        return;
    }
    let header = RecordHeader {
        timestamp_ns: u64::try_from(i128::from(copy.timestamp_ns) + clock_offset_ns).unwrap_or(0),
        original_len: copy.original_len,
        captured_len: copy.data.len() as u32,
        queue: copy.queue,
    };
    if !sink.accept(&header, copy.data) {
        slot_stats.ring_drops.fetch_add(1, Relaxed);
    }
}

fn split_meta(frame: &[u8]) -> Option<(FrameMeta, &[u8])> {
    let (meta, data) = frame.split_at_checked(META_LEN)?;
    let u32_at = |i: usize| u32::from_ne_bytes([meta[i], meta[i + 1], meta[i + 2], meta[i + 3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&meta[0..8]);
    let meta = FrameMeta {
        timestamp_ns: u64::from_ne_bytes(ts),
        original_len: u32_at(8),
        magic: u32_at(12),
    };
    (meta.magic == FRAME_META_MAGIC).then_some((meta, data))
}

#[cfg(test)]
mod tests {
    use podcap_common::{queue_for, DIRECTION_INBOUND, DIRECTION_OUTBOUND};

    use super::*;

    /// Keeps what it accepts, up to `room` packets.
    #[derive(Default)]
    struct Kept {
        room: usize,
        packets: Vec<(RecordHeader, Vec<u8>)>,
    }

    impl PacketSink for Kept {
        fn accept(&mut self, header: &RecordHeader, data: &[u8]) -> bool {
            if self.packets.len() == self.room {
                return false;
            }
            self.packets.push((*header, data.to_vec()));
            true
        }
    }

    fn record(timestamp_ns: u64, original_len: u32, queue: u32, magic: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(timestamp_ns.to_ne_bytes());
        out.extend(original_len.to_ne_bytes());
        out.extend((data.len() as u32).to_ne_bytes());
        out.extend(queue.to_ne_bytes());
        out.extend(magic.to_ne_bytes());
        out.extend(data);
        out
    }

    fn frame(timestamp_ns: u64, original_len: u32, magic: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(timestamp_ns.to_ne_bytes());
        out.extend(original_len.to_ne_bytes());
        out.extend(magic.to_ne_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn ring_records_are_counted_for_their_slot_and_stamped_in_wall_clock_time() {
        let stats = Stats::new(3);
        let mut sink = Kept {
            room: 10,
            ..Kept::default()
        };
        let queue = queue_for(2, DIRECTION_OUTBOUND);
        push_copy(
            &mut sink,
            &stats,
            1_000,
            None,
            &record(5, 1500, queue, COPY_MAGIC, b"abc"),
        );
        assert_eq!(sink.packets.len(), 1);
        let (header, data) = &sink.packets[0];
        assert_eq!(
            (header.timestamp_ns, header.original_len, header.captured_len),
            (1_005, 1500, 3)
        );
        assert_eq!(header.queue, queue);
        assert_eq!(data, b"abc");
        let slot = stats.snapshot(2);
        assert_eq!((slot.received, slot.received_bytes), (1, 1500));
        assert_eq!(stats.totals().received, 1, "no other slot counts it");
    }

    #[test]
    fn a_record_that_is_not_podcaps_or_claims_more_than_it_holds_is_not_delivered() {
        let stats = Stats::new(1);
        let mut sink = Kept {
            room: 10,
            ..Kept::default()
        };
        push_copy(
            &mut sink,
            &stats,
            0,
            None,
            &record(5, 64, 0, COPY_MAGIC ^ 1, b"abc"),
        );
        let mut short = record(5, 64, 0, COPY_MAGIC, b"abcdef");
        short.truncate(short.len() - 2);
        push_copy(&mut sink, &stats, 0, None, &short);
        push_copy(&mut sink, &stats, 0, None, b"tiny");
        assert!(sink.packets.is_empty());
        assert_eq!(stats.totals().received, 0);
    }

    #[test]
    fn an_xdp_frame_without_metadata_is_a_kernel_drop_of_its_slot() {
        let stats = Stats::new(2);
        let mut sink = Kept {
            room: 10,
            ..Kept::default()
        };
        let queue = queue_for(1, DIRECTION_INBOUND);
        push_frame(
            &mut sink,
            &stats,
            0,
            None,
            queue,
            &frame(7, 60, FRAME_META_MAGIC ^ 1, b"xy"),
        );
        push_frame(&mut sink, &stats, 0, None, queue, b"short");
        assert!(sink.packets.is_empty());
        assert_eq!(stats.snapshot(1).kernel_drops, 2);
        push_frame(
            &mut sink,
            &stats,
            0,
            None,
            queue,
            &frame(7, 60, FRAME_META_MAGIC, b"xy"),
        );
        assert_eq!(sink.packets.len(), 1);
        assert_eq!(sink.packets[0].0.original_len, 60);
    }

    #[test]
    fn a_full_sink_costs_a_ring_drop_and_a_negative_wall_clock_stamps_zero() {
        let stats = Stats::new(1);
        let mut sink = Kept::default();
        push_copy(
            &mut sink,
            &stats,
            -10,
            None,
            &record(5, 64, 0, COPY_MAGIC, b"abc"),
        );
        let slot = stats.snapshot(0);
        assert_eq!((slot.received, slot.ring_drops), (1, 1));
        let mut sink = Kept {
            room: 1,
            ..Kept::default()
        };
        push_copy(
            &mut sink,
            &stats,
            -10,
            None,
            &record(5, 64, 0, COPY_MAGIC, b"abc"),
        );
        assert_eq!(sink.packets[0].0.timestamp_ns, 0);
    }

    #[test]
    fn the_filter_decides_and_what_it_refuses_is_counted_as_filtered_not_dropped() {
        let stats = Stats::new(1);
        let mut sink = Kept {
            room: 10,
            ..Kept::default()
        };
        let filter = Filter::compile("arp", 65_535).unwrap();
        let mut arp = vec![0xff; 12];
        arp.extend([0x08, 0x06]);
        arp.extend([0; 28]);
        let mut ipv4 = vec![0xff; 12];
        ipv4.extend([0x08, 0x00]);
        ipv4.extend([0; 20]);
        for data in [&arp, &ipv4] {
            let len = data.len() as u32;
            push_copy(
                &mut sink,
                &stats,
                0,
                Some(&filter),
                &record(1, len, 0, COPY_MAGIC, data),
            );
        }
        assert_eq!(sink.packets.len(), 1);
        assert_eq!(sink.packets[0].1, arp);
        let slot = stats.snapshot(0);
        assert_eq!((slot.received, slot.filtered, slot.ring_drops), (2, 1, 0));
    }
}
