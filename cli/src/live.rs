//! The merged live stream of several sensors (`podcap live`).
//!
//! Rules: every sensor's `/api/v1/live` is read on its own thread, which parses blocks and
//! sends interfaces and packets over one channel; the writer declares each interface as
//! soon as it is seen (named `sensor/iface`) and holds packets for `hold` (the sensors
//! run `LIVE_DELAY` behind the clock, so packets of different sensors meet in time) before
//! writing them in timestamp order; with one sensor nothing is held. A packet that comes
//! later than its turn is still written (never dropped) and counted. Output is flushed
//! after every batch so a pipe reader (`wireshark -k -i -`) sees packets at once. A sensor
//! that fails is named with its reason; the stream goes on while one sensor is left. A
//! sensor's note on damage it skipped (a new section with `podcap-damage` comments) is
//! named on stderr and counted; its interfaces keep their ids.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    io::{Read, Write},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::Result;
use podcap_format::pcapng::{
    read::{parse_packet, section_comments, BlockReader, Section},
    BlockWriter, Direction, InterfaceDescription, DAMAGE_PREFIX,
};

/// How long packets wait for other sensors' packets of the same time.
pub const HOLD: Duration = Duration::from_secs(2);

enum Event {
    /// A new section of a source: its interfaces are declared again; its comments.
    Section {
        source: usize,
        comments: Vec<String>,
    },
    Interface {
        source: usize,
        description: InterfaceDescription,
    },
    Packet {
        source: usize,
        local_interface: u32,
        ts: u64,
        original_len: u32,
        direction: Direction,
        data: Vec<u8>,
    },
    Ended {
        source: usize,
        error: Option<String>,
    },
}

/// One sensor's stream.
pub struct LiveInput<R> {
    pub label: String,
    pub reader: R,
}

/// What the live merge did.
#[derive(Debug, Default, Clone)]
pub struct LiveStats {
    pub packets: u64,
    /// Packets written after a newer one because their sensor was late.
    pub late: u64,
    /// Sensors that failed, with their reason.
    pub failed: Vec<(String, String)>,
    /// Damage the sensors skipped, each line naming its sensor.
    pub losses: Vec<String>,
}

fn read_stream<R: Read>(source: usize, reader: R, tx: &mpsc::SyncSender<Event>) -> Result<(), String> {
    let mut reader = BlockReader::new(reader);
    let mut section = Section::default();
    let mut declared = 0;
    loop {
        let block = match reader.next_block() {
            Ok(Some(block)) => block,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("the stream broke off: {e}")),
        };
        section.observe(&block).map_err(|e| e.to_string())?;
        if block.block_type == podcap_format::pcapng::BLOCK_SHB {
            declared = 0;
            let comments = section_comments(&block);
            tx.send(Event::Section { source, comments })
                .map_err(|_| "stopped".to_owned())?;
        }
        while declared < section.interfaces.len() {
            let iface = &section.interfaces[declared];
            let description = InterfaceDescription {
                name: iface.name.clone(),
                description: iface.description.clone(),
                link_type: iface.link_type,
                snaplen: iface.snaplen,
            };
            tx.send(Event::Interface { source, description })
                .map_err(|_| "stopped".to_owned())?;
            declared += 1;
        }
        if let Some(p) = parse_packet(&block, &section).map_err(|e| e.to_string())? {
            let event = Event::Packet {
                source,
                local_interface: p.interface_id,
                ts: p.timestamp_ns,
                original_len: p.original_len,
                direction: p.direction,
                data: p.data.to_vec(),
            };
            tx.send(event).map_err(|_| "stopped".to_owned())?;
        }
    }
}

struct Held {
    interface: u32,
    original_len: u32,
    direction: Direction,
    data: Vec<u8>,
}

/// Packets waiting for their turn, and the output they go to.
struct Queue {
    blocks: BlockWriter,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    waiting: HashMap<u64, Held>,
    arrival: u64,
    written_up_to: u64,
    stats: LiveStats,
}

impl Queue {
    fn push(&mut self, ts: u64, packet: Held) {
        self.waiting.insert(self.arrival, packet);
        self.heap.push(Reverse((ts, self.arrival)));
        self.arrival += 1;
    }

    /// Writes the packets older than `before` (all if `None`), oldest first, up to `limit`.
    fn release(&mut self, before: Option<u64>, limit: u64, out: &mut impl Write) -> std::io::Result<()> {
        while self.stats.packets < limit {
            let Some(&Reverse((ts, key))) = self.heap.peek() else {
                break;
            };
            if before.is_some_and(|b| ts > b) {
                break;
            }
            self.heap.pop();
            if let Some(p) = self.waiting.remove(&key) {
                if ts < self.written_up_to {
                    self.stats.late += 1;
                }
                self.written_up_to = self.written_up_to.max(ts);
                self.blocks
                    .packet(p.interface, ts, p.original_len, &p.data, p.direction);
                self.stats.packets += 1;
            }
        }
        if !self.blocks.is_empty() {
            out.write_all(self.blocks.bytes())?;
            out.flush()?;
            self.blocks.clear();
        }
        Ok(())
    }
}

/// Merges the live streams of `inputs` into `out` until every stream ends or `count`
/// packets are written. `now_ns` is the clock packets are held against.
pub fn live<R: Read + Send + 'static>(
    inputs: Vec<LiveInput<R>>,
    out: &mut impl Write,
    count: Option<u64>,
    now_ns: impl Fn() -> u64,
) -> Result<LiveStats> {
    let hold = if inputs.len() > 1 {
        podcap_format::units::duration_ns(HOLD)
    } else {
        0
    };
    let (tx, rx) = mpsc::sync_channel(4096);
    let labels: Vec<String> = inputs.iter().map(|i| i.label.clone()).collect();
    for (source, input) in inputs.into_iter().enumerate() {
        let tx = tx.clone();
        thread::Builder::new()
            .name(format!("live-{}", input.label))
            .spawn(move || {
                let error = read_stream(source, input.reader, &tx).err();
                let _ = tx.send(Event::Ended { source, error });
            })?;
    }
    drop(tx);

    let mut queue = Queue {
        blocks: BlockWriter::with_capacity(1 << 20),
        heap: BinaryHeap::new(),
        waiting: HashMap::new(),
        arrival: 0,
        written_up_to: 0,
        stats: LiveStats::default(),
    };
    queue
        .blocks
        .section_header(concat!("podcap ", env!("CARGO_PKG_VERSION"), " live"));
    queue.release(None, 0, out)?;

    // Output id of each interface of a source's current section; by (source, name, link
    // type) across its sections.
    let mut ids: Vec<Vec<u32>> = vec![Vec::new(); labels.len()];
    let mut known: HashMap<(usize, String, u16), u32> = HashMap::new();
    let mut next_id = 0u32;
    let mut open = labels.len();
    let limit = count.unwrap_or(u64::MAX);
    while open > 0 && queue.stats.packets < limit {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Section { source, comments }) => {
                ids[source].clear();
                for comment in comments.iter().filter_map(|c| c.strip_prefix(DAMAGE_PREFIX)) {
                    eprintln!("podcap: sensor {}: lost: {comment}", labels[source]);
                    queue.stats.losses.push(format!("{}: {comment}", labels[source]));
                }
            }
            Ok(Event::Interface { source, description }) => {
                let name = format!("{}/{}", labels[source], description.name);
                let key = (source, name.clone(), description.link_type);
                let id = *known.entry(key).or_insert_with(|| {
                    queue
                        .blocks
                        .interface(&InterfaceDescription { name, ..description });
                    next_id += 1;
                    next_id - 1
                });
                ids[source].push(id);
            }
            Ok(Event::Packet {
                source,
                local_interface,
                ts,
                original_len,
                direction,
                data,
            }) => {
                if let Some(&interface) = ids[source].get(local_interface as usize) {
                    queue.push(
                        ts,
                        Held {
                            interface,
                            original_len,
                            direction,
                            data,
                        },
                    );
                }
            }
            Ok(Event::Ended { source, error }) => {
                open -= 1;
                let reason = error.unwrap_or_else(|| "the sensor ended the stream".to_owned());
                eprintln!("podcap: sensor {}: {reason}", labels[source]);
                queue.stats.failed.push((labels[source].clone(), reason));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = 0,
        }
        // Everything old enough leaves; with one sensor or at the end, everything.
        let before = (open > 0 && hold > 0).then(|| now_ns().saturating_sub(hold));
        queue.release(before, limit, out)?;
    }
    Ok(queue.stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podcap_format::pcapng::{read::packets_with_names, LINKTYPE_ETHERNET};

    fn stream(name: &str, stamps: &[u64]) -> Vec<u8> {
        let mut w = BlockWriter::default();
        w.section_header("test");
        w.interface(&InterfaceDescription {
            name: name.into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        for &ts in stamps {
            w.packet(0, ts, 8, &ts.to_be_bytes(), Direction::Inbound);
        }
        w.bytes().to_vec()
    }

    fn read(bytes: &[u8]) -> Vec<(String, u64)> {
        packets_with_names(bytes)
            .unwrap()
            .into_iter()
            .map(|(name, p)| (name, p.timestamp_ns))
            .collect()
    }

    #[test]
    fn streams_meet_in_time_order_with_their_names() {
        let inputs = vec![
            LiveInput {
                label: "a:1".into(),
                reader: std::io::Cursor::new(stream("eth0", &[10, 30, 50])),
            },
            LiveInput {
                label: "b:2".into(),
                reader: std::io::Cursor::new(stream("eth0", &[20, 40])),
            },
        ];
        let mut out = Vec::new();
        // A clock at 0 holds every packet until the streams end: they leave in order.
        let stats = live(inputs, &mut out, None, || 0).unwrap();
        let got = read(&out);
        assert_eq!(
            got.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            vec![10, 20, 30, 40, 50]
        );
        assert_eq!(got[0].0, "a:1/eth0");
        assert_eq!(got[1].0, "b:2/eth0");
        assert_eq!(stats.packets, 5);
        assert_eq!(stats.failed.len(), 2, "both streams ended");
    }

    #[test]
    fn count_stops_the_stream_and_a_broken_stream_is_named() {
        let mut broken = stream("eth0", &[5]);
        broken.extend_from_slice(&[6, 0, 0, 0, 200, 0]);
        let inputs = vec![LiveInput {
            label: "x".into(),
            reader: std::io::Cursor::new(broken),
        }];
        let mut out = Vec::new();
        let stats = live(inputs, &mut out, None, || 0).unwrap();
        assert_eq!(stats.packets, 1);
        assert_eq!(stats.failed.len(), 1);
        assert!(stats.failed[0].1.contains("broke off"), "{:?}", stats.failed);

        let inputs = vec![LiveInput {
            label: "x".into(),
            reader: std::io::Cursor::new(stream("eth0", &[1, 2, 3, 4])),
        }];
        let mut out = Vec::new();
        let stats = live(inputs, &mut out, Some(2), || 0).unwrap();
        assert_eq!(stats.packets, 2);
        assert_eq!(read(&out).len(), 2);
    }
}
