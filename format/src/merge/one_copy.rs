//! `--one-copy`: a packet routed between two recorded interfaces of one node is in that
//! node's slice twice, once per interface, correctly; Wireshark then marks every second
//! packet of such a TCP stream a retransmission. This writes each such packet once.
//!
//! Rules:
//! - Two packets are copies of one when they come from the same input (one sensor), on
//!   different interfaces, at most [`COPY_WINDOW_NS`] apart, and are the same packet from
//!   the network layer on: the link-layer header is not compared (routing rewrites it), nor
//!   the fields a router changes (IPv4 TTL and header checksum, IPv6 hop limit); every
//!   other byte, and the original length past the link layer, must be equal. A frame that
//!   is not IPv4 or IPv6 must be equal byte for byte. Packets rewritten by NAT on the way
//!   (a Service's address translated) are not the same packet and are both kept.
//! - Copies pair one to one, the earliest waiting copy first: a real retransmission is a
//!   packet of its own and pairs with its own copy.
//! - Of a pair, the copy that left through its interface (`epb_flags` outbound) is written,
//!   which in Kubernetes mode is the sending pod's; when neither or both did, the first.
//! - Packets wait [`COPY_WINDOW_NS`] (of packet time) for their copy before they are
//!   written, in the order they came, so the output stays in timestamp order and memory
//!   holds one window of packets.
use std::collections::{HashMap, VecDeque};

use super::Head;
use crate::pcapng::{Direction, LINKTYPE_ETHERNET};

/// How far apart in time two copies of one packet may be: forwarding inside one node
/// takes microseconds; this leaves room for a busy node's queues.
pub const COPY_WINDOW_NS: u64 = 10_000_000;

/// Link types whose frames start with the IP header.
const LINKTYPE_RAW: u16 = 101;
const LINKTYPE_IPV4: u16 = 228;
const LINKTYPE_IPV6: u16 = 229;

/// A packet waiting for its copy.
struct Waiting {
    input: usize,
    head: Head,
    /// Where its network-layer bytes start, and which of them a router changes.
    network: Network,
    key: u64,
    /// Written when it leaves the window (false: its copy was written instead).
    keep: bool,
    /// Its copy was found: it pairs with nothing else.
    paired: bool,
}

/// The part of a frame compared: from `start` on, except the bytes at `start + masked`.
#[derive(Clone, Copy)]
struct Network {
    start: usize,
    masked: &'static [usize],
}

/// IPv4: TTL (8), header checksum (10, 11).
const IPV4_ROUTED: &[usize] = &[8, 10, 11];
/// IPv6: hop limit (7).
const IPV6_ROUTED: &[usize] = &[7];

impl Network {
    fn of(data: &[u8], link_type: u16) -> Self {
        let whole = Self {
            start: 0,
            masked: &[],
        };
        let start = match link_type {
            LINKTYPE_ETHERNET => {
                // Past up to two VLAN tags (802.1Q, 802.1ad).
                let mut at = 12;
                let mut ether_type = read_u16(data, at);
                for _ in 0..2 {
                    if matches!(ether_type, Some(0x8100 | 0x88a8)) {
                        at += 4;
                        ether_type = read_u16(data, at);
                    }
                }
                match ether_type {
                    Some(0x0800 | 0x86dd) => at + 2,
                    _ => return whole,
                }
            }
            LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => 0,
            _ => return whole,
        };
        let version = data.get(start).map(|b| b >> 4);
        let masked = match version {
            Some(4) if data.len() >= start + 20 => IPV4_ROUTED,
            Some(6) if data.len() >= start + 40 => IPV6_ROUTED,
            _ => return whole,
        };
        Self { start, masked }
    }

    /// The compared bytes, with the routed ones as zero.
    fn bytes<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = u8> + 'a {
        let masked = self.masked;
        data.get(self.start..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(move |(at, byte)| if masked.contains(&at) { 0 } else { *byte })
    }
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// FNV-1a of the compared bytes and the length past the link layer: equal packets have
/// equal keys; the bytes are compared when keys are.
fn key(head: &Head, network: Network) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in past_link_layer(head.original_len, network)
        .to_be_bytes()
        .into_iter()
        .chain(network.bytes(&head.data))
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn past_link_layer(length: u32, network: Network) -> u32 {
    length.saturating_sub(u32::try_from(network.start).unwrap_or(u32::MAX))
}

fn same_packet(a: &Waiting, b: &Head, b_network: Network) -> bool {
    a.network.masked == b_network.masked
        && past_link_layer(a.head.original_len, a.network) == past_link_layer(b.original_len, b_network)
        && a.head.data.len() - a.network.start.min(a.head.data.len())
            == b.data.len() - b_network.start.min(b.data.len())
        && a.network.bytes(&a.head.data).eq(b_network.bytes(&b.data))
}

/// The packets waiting for their copies, and how many copies were left out.
#[derive(Default)]
pub(super) struct OneCopy {
    waiting: VecDeque<Waiting>,
    /// Sequence number of `waiting[0]`.
    first: u64,
    /// Unpaired waiting packets by (input, key): their sequence numbers, oldest first.
    unpaired: HashMap<(usize, u64), VecDeque<u64>>,
    pub(super) copies_left_out: u64,
}

impl OneCopy {
    /// Takes the next packet of the merge (in timestamp order); writes, through `write`,
    /// every waiting packet its time has moved past the window.
    pub(super) fn offer(&mut self, input: usize, head: Head, link_type: u16, write: &mut impl FnMut(&Head)) {
        self.write_until(head.ts.saturating_sub(COPY_WINDOW_NS), write);
        let network = Network::of(&head.data, link_type);
        let key = key(&head, network);
        let partner = self.unpaired.get(&(input, key)).and_then(|seqs| {
            seqs.iter().copied().find(|&seq| {
                let waiting = &self.waiting[self.index(seq)];
                waiting.head.interface != head.interface && same_packet(waiting, &head, network)
            })
        });
        let Some(seq) = partner else {
            let seq = self.first + self.waiting.len() as u64;
            self.unpaired.entry((input, key)).or_default().push_back(seq);
            self.waiting.push_back(Waiting {
                input,
                head,
                network,
                key,
                keep: true,
                paired: false,
            });
            return;
        };
        if let Some(seqs) = self.unpaired.get_mut(&(input, key)) {
            seqs.retain(|s| *s != seq);
            if seqs.is_empty() {
                self.unpaired.remove(&(input, key));
            }
        }
        self.copies_left_out += 1;
        let index = self.index(seq);
        let earlier = &mut self.waiting[index];
        earlier.paired = true;
        let later_left =
            head.direction == Direction::Outbound && earlier.head.direction != Direction::Outbound;
        if later_left {
            earlier.keep = false;
            self.waiting.push_back(Waiting {
                input,
                head,
                network,
                key,
                keep: true,
                paired: true,
            });
        }
    }

    /// Writes every packet still waiting (the inputs have ended).
    pub(super) fn finish(&mut self, write: &mut impl FnMut(&Head)) {
        self.write_until(u64::MAX, write);
    }

    fn index(&self, seq: u64) -> usize {
        usize::try_from(seq - self.first).unwrap_or(usize::MAX)
    }

    /// Writes (or leaves out) the waiting packets older than `before`.
    fn write_until(&mut self, before: u64, write: &mut impl FnMut(&Head)) {
        while self
            .waiting
            .front()
            .is_some_and(|w| w.head.ts < before || before == u64::MAX)
        {
            let Some(oldest) = self.waiting.pop_front() else {
                break;
            };
            let seq = self.first;
            self.first += 1;
            if !oldest.paired {
                if let Some(seqs) = self.unpaired.get_mut(&(oldest.input, oldest.key)) {
                    // The oldest of its key is first: no search in the usual case.
                    if seqs.front() == Some(&seq) {
                        seqs.pop_front();
                    } else {
                        seqs.retain(|s| *s != seq);
                    }
                    if seqs.is_empty() {
                        self.unpaired.remove(&(oldest.input, oldest.key));
                    }
                }
            }
            if oldest.keep {
                write(&oldest.head);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        merge::{merge_with, Input, MergeOptions},
        pcapng::{read::packets_with_names, BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET},
    };

    /// An Ethernet frame with an IPv4 header of `ttl` (its checksum depending on it) and a
    /// payload starting with `marker`, between the MACs `mac`.
    fn frame(mac: u8, ttl: u8, marker: u8) -> Vec<u8> {
        let mut frame = vec![mac; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 1, 0, 0, ttl, 6, 0, 0, 198, 18, 0, 1, 198, 18, 1, 1,
        ];
        ip[10] = ttl.wrapping_mul(3);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&[marker; 20]);
        frame
    }

    /// One sensor's slice: interfaces n0 and n1, and `packets` as (interface, time, frame,
    /// direction).
    fn slice(packets: &[(u32, u64, Vec<u8>, Direction)]) -> Vec<u8> {
        let mut w = BlockWriter::default();
        w.section_header("test");
        for name in ["n0", "n1"] {
            w.interface(&InterfaceDescription {
                name: name.into(),
                description: String::new(),
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65535,
            });
        }
        for (interface, ts, data, direction) in packets {
            let len = u32::try_from(data.len()).unwrap();
            w.packet(*interface, *ts, len, data, *direction);
        }
        w.bytes().to_vec()
    }

    fn merged(inputs: &[(&str, Vec<u8>)], one_copy: bool) -> (Vec<(String, u64, u8)>, u64) {
        let inputs = inputs
            .iter()
            .map(|(label, bytes)| Input {
                label: (*label).to_owned(),
                reader: std::io::Cursor::new(bytes.clone()),
            })
            .collect();
        let mut out = Vec::new();
        let stats = merge_with(
            inputs,
            &[],
            &mut out,
            MergeOptions {
                one_copy,
                ..MergeOptions::default()
            },
        )
        .unwrap();
        let packets = packets_with_names(&out)
            .unwrap()
            .into_iter()
            .map(|(name, p)| (name, p.timestamp_ns, p.data[40]))
            .collect::<Vec<_>>();
        assert_eq!(stats.packets, packets.len() as u64);
        (packets, stats.copies_left_out)
    }

    #[test]
    fn a_routed_packet_is_written_once_on_the_interface_it_left_and_retransmissions_stay() {
        use Direction::{Inbound, Outbound};
        let ms = 1_000_000;
        let node = slice(&[
            // A to B: in through n0, out through n1 a router later (new MACs, TTL - 1).
            (0, 10 * ms, frame(0xa0, 64, 1), Inbound),
            (1, 10 * ms + 20_000, frame(0xb0, 63, 1), Outbound),
            // B's answer: in through n1, out through n0.
            (1, 11 * ms, frame(0xb1, 64, 2), Inbound),
            (0, 11 * ms + 15_000, frame(0xa1, 63, 2), Outbound),
            // A real retransmission of packet 1, 300 ms later: a packet of its own, and its copy.
            (0, 310 * ms, frame(0xa0, 64, 1), Inbound),
            (1, 310 * ms + 20_000, frame(0xb0, 63, 1), Outbound),
            // Seen on n0 only: nothing to pair with.
            (0, 400 * ms, frame(0xa0, 64, 3), Inbound),
            // The same bytes on n1 past the window: not a copy.
            (
                1,
                400 * ms + 2 * super::COPY_WINDOW_NS,
                frame(0xb0, 63, 3),
                Outbound,
            ),
            // Different bytes past the network header: not a copy.
            (0, 500 * ms, frame(0xa0, 64, 4), Inbound),
            (1, 500 * ms + 10_000, frame(0xb0, 63, 5), Outbound),
        ]);
        // Another sensor recorded packet 2 too: other nodes' copies are never touched.
        let other = slice(&[(0, 11 * ms + 5_000, frame(0xa1, 63, 2), Inbound)]);
        let inputs = [("node-a", node), ("node-b", other)];
        let (all, left_out) = merged(&inputs, false);
        assert_eq!((all.len(), left_out), (11, 0), "faithful by default: {all:?}");
        let (once, left_out) = merged(&inputs, true);
        let n = |name: &str, ts: u64, marker: u8| (name.to_owned(), ts, marker);
        assert_eq!(
            once,
            [
                n("node-a/n1", 10 * ms + 20_000, 1),
                n("node-b/n0", 11 * ms + 5_000, 2),
                n("node-a/n0", 11 * ms + 15_000, 2),
                n("node-a/n1", 310 * ms + 20_000, 1),
                n("node-a/n0", 400 * ms, 3),
                n("node-a/n1", 400 * ms + 2 * super::COPY_WINDOW_NS, 3),
                n("node-a/n0", 500 * ms, 4),
                n("node-a/n1", 500 * ms + 10_000, 5),
            ],
        );
        assert_eq!(left_out, 3);
    }

    #[test]
    fn without_a_direction_the_first_copy_is_written_and_other_frames_must_be_equal() {
        use Direction::Unknown;
        let arp = |mac: u8| {
            let mut frame = vec![mac; 12];
            frame.extend_from_slice(&[0x08, 0x06]);
            frame.extend_from_slice(&[7; 28]);
            frame
        };
        let node = slice(&[
            (0, 100, frame(0xa0, 64, 1), Unknown),
            (1, 200, frame(0xb0, 63, 1), Unknown),
            // Not IP: the link layer counts, so different MACs are different frames.
            (0, 300, arp(1), Unknown),
            (1, 400, arp(2), Unknown),
            (1, 500, arp(1), Unknown),
        ]);
        let (once, left_out) = merged(&[("n", node)], true);
        let names: Vec<(&str, u64)> = once.iter().map(|(name, ts, _)| (name.as_str(), *ts)).collect();
        assert_eq!(names, [("n/n0", 100), ("n/n0", 300), ("n/n1", 400)]);
        assert_eq!(left_out, 2);
    }
}
