//! Streaming k-way merge of pcapng inputs by timestamp.
//!
//! Rules: each input is read block by block (memory does not grow with the inputs); each
//! input's interfaces are declared again in the output with the input's label in front of
//! their names (`node-a/eth0`), so every packet keeps its interface; Name Resolution
//! Blocks and Decryption Secrets Blocks pass through (each distinct one once; Wireshark
//! applies a section's secrets to all of it; [`MergeOptions::leading_secrets`] puts given
//! ones ahead of every packet); packets leave in
//! timestamp order (ties keep input order). Inputs are expected in timestamp order, as
//! sensors serve them.
//! - An input that breaks off (a download cut short) or holds a block that cannot be read
//!   gives every packet before that point; what was lost is said in the stats. An input's
//!   new section (a sensor's note on damage it skipped, see the sensor's slice rules) keeps
//!   its interfaces; its damage comments are collected, named after the input.
//! - Statistics blocks of the inputs (a snapshot's drops per interface) are added up per
//!   output interface and written at the end, so the merged file still says what was lost
//!   in its window; each input's totals are in the stats, and in the Section Header of a
//!   file that can be rewritten (`merge/totals.rs`).
//! - When anything was lost, the output ends with a note of its own: a section whose
//!   comments name every loss, so the file itself says it is incomplete.
//! - Every packet is written as its input gave it, unless [`MergeOptions::one_copy`] asks
//!   that a packet one input recorded on two of its interfaces (routed between two pods of
//!   one node) be written once (rules in `merge/one_copy.rs`).
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io::{Read, Write},
};

use crate::pcapng::{
    read::{names_valid, parse_packet, parse_statistics, section_comments, BlockReader, Section},
    secrets::parse_decryption_secrets,
    BlockWriter, Direction, InterfaceDescription, InterfaceStatistics, BLOCK_SHB, DAMAGE_PREFIX,
};

mod one_copy;
mod totals;

pub use self::one_copy::COPY_WINDOW_NS;
pub use self::totals::{fill_reserved, reserved_comment, totals_comment, InputTotals, TOTALS_PREFIX};

/// How the inputs are merged.
#[derive(Clone, Debug, Default)]
pub struct MergeOptions {
    /// Write once a packet an input recorded on two of its interfaces (see
    /// `merge/one_copy.rs`); without it every copy is written, as recorded.
    pub one_copy: bool,
    /// Reserve a comment in the Section Header for each input's totals, which
    /// [`fill_reserved`] writes once the merge is done (a file that can be rewritten).
    pub reserve_totals: bool,
    /// Decryption secrets (type, data) written right after the Section Header, before any
    /// packet: the inputs' own secrets blocks (found with [`decryption_secrets`]), so a
    /// reader that decrypts in one pass, like `tshark -r`, has every session's keys before
    /// its packets even where an input placed a late secret after them. The inputs' copies
    /// are then not written again.
    pub leading_secrets: Vec<(u32, Vec<u8>)>,
}

/// One input: a label for its interfaces and its bytes.
pub struct Input<R> {
    pub label: String,
    pub reader: R,
}

struct Cursor<R> {
    label: String,
    reader: BlockReader<R>,
    section: Section,
    /// Output id of each interface of this input's current section.
    ids: Vec<u32>,
    /// Set once the input can give nothing more (ended, or broke off).
    done: bool,
    /// The packet waiting to be merged.
    head: Option<Head>,
}

/// Blocks every input may carry that the output holds once: names, decryption secrets.
#[derive(Default)]
struct PassedOnce {
    names: std::collections::HashSet<Vec<u8>>,
    secrets: std::collections::HashSet<(u32, Vec<u8>)>,
}

struct Head {
    ts: u64,
    interface: u32,
    original_len: u32,
    direction: Direction,
    data: Vec<u8>,
}

/// What the merge wrote.
#[derive(Debug, Default, Clone)]
pub struct MergeStats {
    pub packets: u64,
    pub bytes: u64,
    /// Everything lost on the way, each line naming its input (`node-a: ...`).
    pub losses: Vec<String>,
    /// Copies left out by [`MergeOptions::one_copy`] (packets written once instead of twice).
    pub copies_left_out: u64,
    /// Per input, in input order: what it gave and lost.
    pub totals: Vec<InputTotals>,
}

impl MergeStats {
    /// Counts a packet written on output interface `interface`, for its input too.
    fn count_packet(&mut self, input_of: &[usize], interface: u32) {
        self.packets += 1;
        let input = input_of.get(interface as usize).copied();
        if let Some(totals) = input.and_then(|input| self.totals.get_mut(input)) {
            totals.packets += 1;
        }
    }
}

/// Output ids of interfaces, by input and (name, link type): a section that declares an
/// interface again reuses its id. And per output id, the inputs' statistics added up.
#[derive(Default)]
struct Interfaces {
    ids: std::collections::HashMap<(usize, String, u16), u32>,
    next: u32,
    /// The link type of each output id.
    link_types: Vec<u16>,
    /// The input of each output id.
    input_of: Vec<usize>,
    statistics: std::collections::BTreeMap<u32, InterfaceStatistics>,
}

impl<R: Read> Cursor<R> {
    /// Reads up to the next packet, declaring new interfaces into `out` as they come. A
    /// read error ends the input and is noted in `losses`.
    fn advance(
        &mut self,
        input: usize,
        out: &mut BlockWriter,
        interfaces: &mut Interfaces,
        passed: &mut PassedOnce,
        losses: &mut Vec<String>,
    ) {
        // The previous packet's buffer is reused for the next one.
        let mut data = self.head.take().map(|h| h.data).unwrap_or_default();
        while !self.done {
            let offset = self.reader.offset();
            let block = match self.reader.next_block() {
                Ok(Some(block)) => block,
                Ok(None) => break,
                Err(e) => {
                    losses.push(format!("{}: the data ends at byte {offset}: {e}", self.label));
                    break;
                }
            };
            if let Err(e) = self.section.observe(&block) {
                losses.push(format!("{}: {e}", self.label));
                break;
            }
            if block.block_type == BLOCK_SHB {
                self.ids.clear();
                losses.extend(
                    section_comments(&block)
                        .into_iter()
                        .filter(|c| c.starts_with(DAMAGE_PREFIX))
                        .map(|c| format!("{}: {}", self.label, c.trim_start_matches(DAMAGE_PREFIX))),
                );
            }
            if block.block_type == crate::pcapng::BLOCK_NRB
                && names_valid(&block, self.section.swapped)
                && passed.names.insert(block.raw.to_vec())
            {
                out.raw(block.raw);
            }
            match parse_decryption_secrets(&block, &self.section) {
                // Written again in the output's byte order; each distinct one once.
                Ok(Some(secrets))
                    if passed
                        .secrets
                        .insert((secrets.secrets_type, secrets.data.to_vec())) =>
                {
                    out.decryption_secrets(secrets.secrets_type, secrets.data);
                }
                Ok(_) => {}
                Err(e) => losses.push(format!("{}: decryption secrets skipped: {e}", self.label)),
            }
            while self.ids.len() < self.section.interfaces.len() {
                let iface = &self.section.interfaces[self.ids.len()];
                let name = format!("{}/{}", self.label, iface.name);
                let key = (input, name.clone(), iface.link_type);
                let id = *interfaces.ids.entry(key).or_insert_with(|| {
                    out.interface(&InterfaceDescription {
                        name,
                        description: iface.description.clone(),
                        link_type: iface.link_type,
                        snaplen: iface.snaplen,
                    });
                    interfaces.link_types.push(iface.link_type);
                    interfaces.input_of.push(input);
                    interfaces.next += 1;
                    interfaces.next - 1
                });
                self.ids.push(id);
            }
            if let Ok(Some(stats)) =
                parse_statistics(&block, &self.section).map(|s| s.filter(|s| !s.segment_totals))
            {
                if let Some(&id) = self.ids.get(stats.interface_id as usize) {
                    let sum = interfaces.statistics.entry(id).or_insert(InterfaceStatistics {
                        start_ns: u64::MAX,
                        ..InterfaceStatistics::default()
                    });
                    sum.start_ns = sum.start_ns.min(stats.start_ns.unwrap_or(u64::MAX));
                    sum.end_ns = sum.end_ns.max(stats.end_ns.unwrap_or(0));
                    sum.received = sum.received.saturating_add(stats.received.unwrap_or(0));
                    sum.kernel_drops = sum
                        .kernel_drops
                        .saturating_add(stats.interface_drops.unwrap_or(0));
                    sum.sensor_drops = sum.sensor_drops.saturating_add(stats.os_drops.unwrap_or(0));
                }
            }
            match parse_packet(&block, &self.section) {
                Ok(Some(p)) => {
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
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    losses.push(format!("{}: {e}", self.label));
                    break;
                }
            }
        }
        self.done = true;
    }
}

/// The distinct Decryption Secrets Blocks of a pcapng stream (type, data), in the order
/// read; a stream that breaks off gives those before the break (the merge names the break).
pub fn decryption_secrets<R: Read>(reader: R) -> Vec<(u32, Vec<u8>)> {
    let mut reader = BlockReader::new(reader);
    let mut section = Section::default();
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    while let Ok(Some(block)) = reader.next_block() {
        if section.observe(&block).is_err() {
            break;
        }
        if let Ok(Some(secrets)) = parse_decryption_secrets(&block, &section) {
            let key = (secrets.secrets_type, secrets.data.to_vec());
            if seen.insert(key.clone()) {
                found.push(key);
            }
        }
    }
    found
}

/// Merges `inputs` into one pcapng stream written to `out`, its Section Header carrying
/// `comments` (what the file holds: the window, the sources, any that failed); anything
/// lost on the way is in the stats and in a note at the end of the stream.
pub fn merge<R: Read>(
    inputs: Vec<Input<R>>,
    comments: &[String],
    out: &mut impl Write,
) -> std::io::Result<MergeStats> {
    merge_with(inputs, comments, out, MergeOptions::default())
}

/// [`merge`], with `options`.
pub fn merge_with<R: Read>(
    inputs: Vec<Input<R>>,
    comments: &[String],
    out: &mut impl Write,
    options: MergeOptions,
) -> std::io::Result<MergeStats> {
    let mut blocks = BlockWriter::with_capacity(2 << 20);
    let labels: Vec<String> = inputs.iter().map(|i| i.label.clone()).collect();
    let mut header = comments.to_vec();
    if options.reserve_totals {
        header.push(reserved_comment(&labels));
    }
    blocks.section_header_with_comments(concat!("podcap ", env!("CARGO_PKG_VERSION"), " merge"), &header);
    let mut interfaces = Interfaces::default();
    let mut cursors: Vec<Cursor<R>> = inputs
        .into_iter()
        .map(|i| Cursor {
            label: i.label,
            reader: BlockReader::new(i.reader),
            section: Section::default(),
            ids: Vec::new(),
            done: false,
            head: None,
        })
        .collect();
    let mut heap = BinaryHeap::new();
    let mut passed = PassedOnce::default();
    for (secrets_type, data) in options.leading_secrets {
        if passed.secrets.insert((secrets_type, data.clone())) {
            blocks.decryption_secrets(secrets_type, &data);
        }
    }
    let mut stats = MergeStats {
        totals: labels
            .into_iter()
            .map(|label| InputTotals {
                label,
                ..InputTotals::default()
            })
            .collect(),
        ..MergeStats::default()
    };
    for (n, cursor) in cursors.iter_mut().enumerate() {
        cursor.advance(n, &mut blocks, &mut interfaces, &mut passed, &mut stats.losses);
        if let Some(h) = &cursor.head {
            heap.push(Reverse((h.ts, n)));
        }
    }
    let mut one_copy = options.one_copy.then(one_copy::OneCopy::default);
    while let Some(Reverse((_, n))) = heap.pop() {
        let cursor = &mut cursors[n];
        match (&mut one_copy, cursor.head.take()) {
            (Some(one_copy), Some(h)) => {
                let link_type = interfaces
                    .link_types
                    .get(h.interface as usize)
                    .copied()
                    .unwrap_or_default();
                one_copy.offer(n, h, link_type, &mut |h| {
                    blocks.packet(h.interface, h.ts, h.original_len, &h.data, h.direction);
                    stats.count_packet(&interfaces.input_of, h.interface);
                });
            }
            (None, Some(h)) => {
                blocks.packet(h.interface, h.ts, h.original_len, &h.data, h.direction);
                stats.count_packet(&interfaces.input_of, h.interface);
                // Its buffer is reused for the input's next packet.
                cursor.head = Some(h);
            }
            (_, None) => {}
        }
        cursor.advance(n, &mut blocks, &mut interfaces, &mut passed, &mut stats.losses);
        if let Some(h) = &cursor.head {
            heap.push(Reverse((h.ts, n)));
        }
        if blocks.len() >= 1 << 20 {
            out.write_all(blocks.bytes())?;
            stats.bytes += blocks.len() as u64;
            blocks.clear();
        }
    }
    if let Some(one_copy) = &mut one_copy {
        one_copy.finish(&mut |h| {
            blocks.packet(h.interface, h.ts, h.original_len, &h.data, h.direction);
            stats.count_packet(&interfaces.input_of, h.interface);
        });
        stats.copies_left_out = one_copy.copies_left_out;
    }
    write_statistics(&mut blocks, &mut interfaces, &mut stats);
    if !stats.losses.is_empty() {
        let notes: Vec<String> = stats
            .losses
            .iter()
            .map(|l| format!("{DAMAGE_PREFIX}{l}"))
            .collect();
        blocks.section_header_with_comments(concat!("podcap ", env!("CARGO_PKG_VERSION"), " merge"), &notes);
    }
    out.write_all(blocks.bytes())?;
    stats.bytes += blocks.len() as u64;
    out.flush()?;
    Ok(stats)
}

/// Writes the inputs' statistics, added up per output interface, and adds them to each
/// input's totals.
fn write_statistics(blocks: &mut BlockWriter, interfaces: &mut Interfaces, stats: &mut MergeStats) {
    for (&id, sum) in &mut interfaces.statistics {
        if sum.start_ns == u64::MAX {
            sum.start_ns = sum.end_ns;
        }
        let comment = format!(
            "podcap: what the sensor's segments of this window lost: kernel={} sensor={}",
            sum.kernel_drops, sum.sensor_drops
        );
        blocks.statistics(id, sum, &comment);
        let input = interfaces.input_of.get(id as usize).copied();
        if let Some(totals) = input.and_then(|input| stats.totals.get_mut(input)) {
            totals.statistics = true;
            totals.received = totals.received.saturating_add(sum.received);
            totals.kernel_drops = totals.kernel_drops.saturating_add(sum.kernel_drops);
            totals.sensor_drops = totals.sensor_drops.saturating_add(sum.sensor_drops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcapng::{
        read::{packets_with_names, Blocks},
        LINKTYPE_ETHERNET,
    };

    fn stream(stamps: &[u64], note: Option<&str>, more: &[u64]) -> Vec<u8> {
        let mut w = BlockWriter::default();
        let iface = InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        };
        w.section_header("test");
        w.interface(&iface);
        for &ts in stamps {
            w.packet(0, ts, 8, &ts.to_be_bytes(), Direction::Inbound);
        }
        if let Some(note) = note {
            w.section_header_with_comments("test", &[format!("{DAMAGE_PREFIX}{note}")]);
            if !more.is_empty() {
                w.interface(&iface);
            }
            for &ts in more {
                w.packet(0, ts, 8, &ts.to_be_bytes(), Direction::Inbound);
            }
        }
        w.bytes().to_vec()
    }

    fn interface_blocks(bytes: &[u8]) -> usize {
        Blocks::new(bytes)
            .filter(|b| b.as_ref().unwrap().block_type == crate::pcapng::BLOCK_IDB)
            .count()
    }

    fn run(inputs: Vec<(&str, Vec<u8>)>) -> (Vec<(String, u64)>, MergeStats, Vec<String>) {
        let inputs = inputs
            .into_iter()
            .map(|(label, bytes)| Input {
                label: label.into(),
                reader: std::io::Cursor::new(bytes),
            })
            .collect();
        let mut out = Vec::new();
        let stats = merge(inputs, &["window".into()], &mut out).unwrap();
        assert_eq!(
            interface_blocks(&out),
            2,
            "each input's one interface, declared once"
        );
        let comments = Blocks::new(&out)
            .flat_map(|b| crate::pcapng::read::section_comments(&b.unwrap()))
            .collect();
        let packets = packets_with_names(&out)
            .unwrap()
            .into_iter()
            .map(|(name, p)| (name, p.timestamp_ns))
            .collect();
        (packets, stats, comments)
    }

    /// The order of a merged file's secrets (`S` and the random's first digit of its key
    /// log line) and packets (`P` and the timestamp).
    fn secrets_and_packets(out: &[u8]) -> Vec<String> {
        use crate::pcapng::secrets::parse_decryption_secrets;
        let mut section = crate::pcapng::read::Section::default();
        let mut seen = Vec::new();
        for block in Blocks::new(out) {
            let block = block.unwrap();
            section.observe(&block).unwrap();
            if let Some(secrets) = parse_decryption_secrets(&block, &section).unwrap() {
                seen.push(format!("S{}", secrets.data[15] - b'0'));
            } else if let Some(packet) = crate::pcapng::read::parse_packet(&block, &section).unwrap() {
                seen.push(format!("P{}", packet.timestamp_ns));
            }
        }
        seen
    }

    /// Two sensors' downloads, each with the secrets of its own session and one both
    /// recorded: the merge carries each distinct block once, each ahead of the packet that
    /// followed it in its input, so a one-pass reader has the keys first.
    #[test]
    fn each_sensors_secrets_go_out_once_before_their_packets() {
        use crate::pcapng::secrets::{key_log_line, SECRETS_TLS_KEY_LOG};
        let line = |random: u8| key_log_line("CLIENT_RANDOM", &[random; 32], b"master");
        let with_secrets = |own: u8, stamps: &[u64]| {
            let mut bytes = stream(&[], None, &[]);
            let mut w = BlockWriter::default();
            w.decryption_secrets(SECRETS_TLS_KEY_LOG, line(9).as_bytes());
            w.decryption_secrets(SECRETS_TLS_KEY_LOG, line(own).as_bytes());
            for &ts in stamps {
                w.packet(0, ts, 8, &ts.to_be_bytes(), Direction::Inbound);
            }
            bytes.extend_from_slice(w.bytes());
            bytes
        };
        let inputs = vec![
            Input {
                label: "a".into(),
                reader: std::io::Cursor::new(with_secrets(1, &[10, 30])),
            },
            Input {
                label: "b".into(),
                reader: std::io::Cursor::new(with_secrets(2, &[20, 40])),
            },
        ];
        let mut out = Vec::new();
        let stats = merge(inputs, &["window".into()], &mut out).unwrap();
        assert!(stats.losses.is_empty(), "{:?}", stats.losses);
        let seen = secrets_and_packets(&out);
        // Each input is read up to its first packet before any packet goes out: every
        // block before it (b's own secrets too) is ahead of the first packet.
        assert_eq!(seen, ["S9", "S1", "S2", "P10", "P20", "P30", "P40"], "{seen:?}");
    }

    /// A secret an input carries after its session's packets (the sensor received it
    /// late): given as a leading secret, it goes out before every packet, and once.
    #[test]
    fn leading_secrets_go_out_before_every_packet_once() {
        use crate::pcapng::secrets::{key_log_line, SECRETS_TLS_KEY_LOG};
        let line = |random: u8| key_log_line("CLIENT_RANDOM", &[random; 32], b"master");
        let late = |own: u8, stamps: &[u64]| {
            let mut bytes = stream(&[], None, &[]);
            let mut w = BlockWriter::default();
            for &ts in stamps {
                w.packet(0, ts, 8, &ts.to_be_bytes(), Direction::Inbound);
            }
            w.decryption_secrets(SECRETS_TLS_KEY_LOG, line(own).as_bytes());
            w.decryption_secrets(SECRETS_TLS_KEY_LOG, line(9).as_bytes());
            bytes.extend_from_slice(w.bytes());
            bytes
        };
        let (a, b) = (late(1, &[10, 30]), late(2, &[20, 40]));
        let leading: Vec<(u32, Vec<u8>)> = [&a, &b]
            .into_iter()
            .flat_map(|bytes| decryption_secrets(&bytes[..]))
            .collect();
        assert_eq!(leading.len(), 4, "each input's two, one of them shared");
        let order = |leading: Vec<(u32, Vec<u8>)>| {
            let inputs = vec![
                Input {
                    label: "a".into(),
                    reader: std::io::Cursor::new(a.clone()),
                },
                Input {
                    label: "b".into(),
                    reader: std::io::Cursor::new(b.clone()),
                },
            ];
            let mut out = Vec::new();
            let options = MergeOptions {
                leading_secrets: leading,
                ..MergeOptions::default()
            };
            merge_with(inputs, &[], &mut out, options).unwrap();
            secrets_and_packets(&out)
        };
        assert_eq!(
            order(Vec::new()),
            ["P10", "P20", "P30", "S1", "S9", "P40", "S2"],
            "as the inputs placed them"
        );
        assert_eq!(
            order(leading),
            ["S1", "S9", "S2", "P10", "P20", "P30", "P40"],
            "every secret first, each once"
        );
    }

    #[test]
    fn a_broken_input_gives_every_whole_packet_and_the_loss_is_said() {
        let mut broken = stream(&[10, 30, 50], None, &[]);
        broken.truncate(broken.len() - 7);
        let (packets, stats, comments) = run(vec![("a", broken), ("b", stream(&[20, 40], None, &[]))]);
        let names_and_times: Vec<(&str, u64)> = packets.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        assert_eq!(
            names_and_times,
            vec![("a/eth0", 10), ("b/eth0", 20), ("a/eth0", 30), ("b/eth0", 40)]
        );
        assert_eq!(stats.losses.len(), 1, "{:?}", stats.losses);
        assert!(
            stats.losses[0].starts_with("a: the data ends at byte"),
            "{:?}",
            stats.losses
        );
        assert_eq!(comments[0], "window");
        assert_eq!(comments[1], format!("{DAMAGE_PREFIX}{}", stats.losses[0]));
    }

    #[test]
    fn a_sensors_damage_note_is_kept_named_and_its_interfaces_stay_one() {
        let noted = stream(
            &[10, 30],
            Some("podcap-0000000002.pcapng bytes 0..56 skipped"),
            &[50],
        );
        let (packets, stats, comments) = run(vec![("a", noted), ("b", stream(&[20], None, &[]))]);
        let times: Vec<u64> = packets.iter().map(|(_, t)| *t).collect();
        assert_eq!(times, vec![10, 20, 30, 50]);
        assert_eq!(
            stats.losses,
            vec!["a: podcap-0000000002.pcapng bytes 0..56 skipped".to_owned()]
        );
        assert_eq!(comments.len(), 2, "{comments:?}");
        // The interface declared again after the note is the same interface in the output.
        let out_ifaces = packets.iter().filter(|(n, _)| n == "a/eth0").count();
        assert_eq!(out_ifaces, 3);
        let clean = run(vec![
            ("a", stream(&[1], None, &[])),
            ("b", stream(&[2], None, &[])),
        ]);
        assert!(clean.1.losses.is_empty() && clean.2 == vec!["window".to_owned()]);
    }

    #[test]
    fn the_inputs_statistics_are_added_up_per_interface() {
        let with_statistics = |drops: &[u64]| {
            let mut bytes = stream(&[10, 20], None, &[]);
            let mut w = BlockWriter::default();
            for (k, &d) in drops.iter().enumerate() {
                let stats = InterfaceStatistics {
                    start_ns: 5 + k as u64,
                    end_ns: 30 + k as u64,
                    received: 10 * d,
                    kernel_drops: d,
                    sensor_drops: 1,
                };
                w.statistics(0, &stats, "");
            }
            bytes.extend_from_slice(w.bytes());
            bytes
        };
        let inputs = vec![
            Input {
                label: "a".to_owned(),
                reader: std::io::Cursor::new(with_statistics(&[3, 4])),
            },
            Input {
                label: "b".to_owned(),
                reader: std::io::Cursor::new(with_statistics(&[7])),
            },
        ];
        let mut out = Vec::new();
        merge(inputs, &[], &mut out).unwrap();
        let mut section = Section::default();
        let mut found = Vec::new();
        for block in Blocks::new(&out) {
            let block = block.unwrap();
            section.observe(&block).unwrap();
            if let Some(s) = parse_statistics(&block, &section).unwrap() {
                let name = section.interfaces[s.interface_id as usize].name.clone();
                found.push((
                    name,
                    s.interface_drops,
                    s.os_drops,
                    s.received,
                    s.start_ns,
                    s.end_ns,
                ));
            }
        }
        assert_eq!(
            found,
            vec![
                ("a/eth0".to_owned(), Some(7), Some(2), Some(70), Some(5), Some(31)),
                ("b/eth0".to_owned(), Some(7), Some(1), Some(70), Some(5), Some(30)),
            ]
        );
    }
}
