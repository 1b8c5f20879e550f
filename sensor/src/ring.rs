//! The bounded lock-free ring between the capture thread and the writer thread.
//!
//! Rules:
//! - Single producer (capture), single consumer (writer); no lock and no allocation per
//!   packet: records are copied into one preallocated byte ring (`rtrb`, whose atomics pair a
//!   release store of the write index with the consumer's acquire load, and the reverse for
//!   the read index).
//! - A record is a fixed [`RecordHeader`] followed by the captured bytes; it is pushed whole
//!   or not at all. When the ring is full the producer drops the packet and the caller counts
//!   it (stage "ring"), so the capture path never waits on the disk.
use rtrb::{Consumer, Producer, RingBuffer};

/// Where the capture loop delivers packets: the ring to the writer thread
/// ([`RecordProducer`]), or the writer itself when the capture thread writes (the ring
/// channel without `--tap`).
pub(crate) trait PacketSink {
    /// Takes one packet; `false` if there was no room (counted as a ring-stage drop).
    fn accept(&mut self, header: &RecordHeader, data: &[u8]) -> bool;

    /// Called after every pass of the capture loop (at least every 100 ms).
    fn after_pass(&mut self) {}
}

impl PacketSink for RecordProducer {
    fn accept(&mut self, header: &RecordHeader, data: &[u8]) -> bool {
        self.push(header, data)
    }
}

/// Bytes of an encoded [`RecordHeader`].
pub const HEADER_LEN: usize = 24;

/// What the writer needs to know about a packet besides its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// Wall-clock time in ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Length on the wire before the snap length cut.
    pub original_len: u32,
    /// Bytes that follow the header.
    pub captured_len: u32,
    /// Capture-veth queue (interface slot and direction).
    pub queue: u32,
}

impl RecordHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.timestamp_ns.to_ne_bytes());
        b[8..12].copy_from_slice(&self.original_len.to_ne_bytes());
        b[12..16].copy_from_slice(&self.captured_len.to_ne_bytes());
        b[16..20].copy_from_slice(&self.queue.to_ne_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Self {
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        Self {
            timestamp_ns: u64::from_ne_bytes(ts),
            original_len: u32_at(8),
            captured_len: u32_at(12),
            queue: u32_at(16),
        }
    }
}

/// Creates a ring of `capacity` bytes.
#[must_use]
pub fn record_ring(capacity: usize) -> (RecordProducer, RecordConsumer) {
    let (producer, consumer) = RingBuffer::new(capacity.max(HEADER_LEN * 2));
    (
        RecordProducer { inner: producer },
        RecordConsumer { inner: consumer },
    )
}

pub struct RecordProducer {
    inner: Producer<u8>,
}

impl RecordProducer {
    /// Pushes one record; `false` if the ring has no room (the caller counts a drop).
    #[must_use]
    pub fn push(&mut self, header: &RecordHeader, data: &[u8]) -> bool {
        debug_assert_eq!(header.captured_len as usize, data.len());
        let len = HEADER_LEN + data.len();
        // `write_chunk` zeroes the slots first (a vectorised fill) so the copy below stays in
        // safe code; two slices because the chunk may wrap.
        let Ok(mut chunk) = self.inner.write_chunk(len) else {
            return false;
        };
        let encoded = header.encode();
        let (first, second) = chunk.as_mut_slices();
        let mut source = encoded.iter().chain(data);
        if first.len() >= len {
            first[..HEADER_LEN].copy_from_slice(&encoded);
            first[HEADER_LEN..len].copy_from_slice(data);
        } else {
            for (slot, byte) in first.iter_mut().chain(second.iter_mut()).zip(&mut source) {
                *slot = *byte;
            }
        }
        chunk.commit_all();
        true
    }
}

pub struct RecordConsumer {
    inner: Consumer<u8>,
}

impl RecordConsumer {
    /// Pops the next record, copying its bytes into `data` (cleared first).
    pub fn pop(&mut self, data: &mut Vec<u8>) -> Option<RecordHeader> {
        let mut encoded = [0u8; HEADER_LEN];
        {
            let chunk = self.inner.read_chunk(HEADER_LEN).ok()?;
            let (first, second) = chunk.as_slices();
            encoded[..first.len()].copy_from_slice(first);
            encoded[first.len()..].copy_from_slice(second);
            // Dropped without commit: a peek.
        }
        let header = RecordHeader::decode(&encoded);
        let len = HEADER_LEN + header.captured_len as usize;
        // The producer commits a record whole, so the rest is there once the header is.
        let chunk = self.inner.read_chunk(len).ok()?;
        let (first, second) = chunk.as_slices();
        data.clear();
        if first.len() >= HEADER_LEN {
            data.extend_from_slice(&first[HEADER_LEN..]);
            data.extend_from_slice(second);
        } else {
            data.extend_from_slice(&second[HEADER_LEN - first.len()..]);
        }
        chunk.commit_all();
        Some(header)
    }

    /// Whether the producer is gone and nothing is left.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.inner.is_abandoned() && self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_across_the_wrap() {
        let (mut p, mut c) = record_ring(1000);
        let mut data = Vec::new();
        for i in 0..500u32 {
            let payload: Vec<u8> = (0..(i % 97)).map(|b| (b as u8) ^ (i as u8)).collect();
            let h = RecordHeader {
                timestamp_ns: u64::from(i) << 20,
                original_len: i * 3,
                captured_len: payload.len() as u32,
                queue: i % 7,
            };
            assert!(p.push(&h, &payload));
            assert_eq!(c.pop(&mut data), Some(h));
            assert_eq!(data, payload);
        }
        assert_eq!(c.pop(&mut data), None);
    }

    #[test]
    fn full_ring_refuses_whole_records() {
        let (mut p, mut c) = record_ring(100);
        let h = RecordHeader {
            captured_len: 40,
            ..Default::default()
        };
        assert!(p.push(&h, &[1; 40]));
        assert!(!p.push(&h, &[2; 40]), "second record does not fit");
        let mut data = Vec::new();
        assert_eq!(c.pop(&mut data).map(|h| h.captured_len), Some(40));
        assert_eq!(data, vec![1; 40]);
        assert_eq!(c.pop(&mut data), None);
        drop(p);
        assert!(c.is_finished());
    }
}
