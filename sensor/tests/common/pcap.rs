//! Reading the captures the tests compare: tcpdump's classic pcap and the sensor's pcapng,
//! and the tcpdump-oracle comparison.
use std::{collections::HashMap, path::Path};

use podcap_sensor::pcapng::{
    read::{parse_packet, Blocks, Section},
    Direction,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: Vec<u8>,
    pub iface: String,
    pub direction: Direction,
}

/// Reads a classic pcap file (as tcpdump -w writes it; micro- or nanosecond magic).
pub fn read_pcap(path: &Path, iface: &str) -> Vec<Frame> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(bytes.len() >= 24, "{} is not a pcap file", path.display());
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let nanos = match magic {
        0xa1b2_c3d4 => false,
        0xa1b2_3c4d => true,
        other => panic!("{}: unexpected pcap magic {other:#x}", path.display()),
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let u = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap());
        let (sec, frac, caplen, orig) = (u(0), u(4), u(8) as usize, u(12));
        let Some(data) = bytes.get(at + 16..at + 16 + caplen) else {
            break;
        };
        let ts_ns = u64::from(sec) * 1_000_000_000 + u64::from(frac) * if nanos { 1 } else { 1000 };
        frames.push(Frame {
            ts_ns,
            orig_len: orig,
            data: data.to_vec(),
            iface: iface.into(),
            direction: Direction::Unknown,
        });
        at += 16 + caplen;
    }
    frames
}

/// Reads every packet of the sensor's pcapng segments (in file order).
pub fn read_segments(files: &[std::path::PathBuf]) -> Vec<Frame> {
    let mut frames = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).unwrap();
        let mut section = Section::default();
        for block in Blocks::new(&bytes) {
            let block = block.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            section.observe(&block).unwrap();
            if let Some(p) = parse_packet(&block, &section).unwrap() {
                frames.push(Frame {
                    ts_ns: p.timestamp_ns,
                    orig_len: p.original_len,
                    data: p.data.to_vec(),
                    iface: section.interfaces[p.interface_id as usize].name.clone(),
                    direction: p.direction,
                });
            }
        }
    }
    frames
}

/// A TCP segment's flow, sequence number and payload.
#[derive(Debug)]
pub struct Tcp<'a> {
    pub flow: Vec<u8>,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Parses Ethernet / IPv4 or IPv6 / TCP (no IPv6 extension headers).
pub fn tcp(frame: &[u8]) -> Option<Tcp<'_>> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let ip = frame.get(14..)?;
    let (flow_ips, l4, ip_payload_len) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if *ip.get(9)? != 6 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
            (ip.get(12..20)?.to_vec(), ip.get(ihl..)?, total.checked_sub(ihl)?)
        }
        0x86dd => {
            if *ip.get(6)? != 6 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes(ip.get(4..6)?.try_into().ok()?));
            (ip.get(8..40)?.to_vec(), ip.get(40..)?, plen)
        }
        _ => return None,
    };
    let doff = usize::from(l4.get(12)? >> 4) * 4;
    let seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
    let mut flow = flow_ips;
    flow.extend_from_slice(l4.get(0..4)?);
    let payload = l4.get(doff..ip_payload_len.min(l4.len()))?;
    Some(Tcp { flow, seq, payload })
}

/// Frame bytes and original length.
type RawFrame = (Vec<u8>, u32);

/// Outcome of comparing the sensor's frames with tcpdump's.
#[derive(Debug, Default)]
pub struct Comparison {
    pub exact: usize,
    pub gso_superframes: usize,
    pub gso_segments: usize,
    pub missing: Vec<String>,
    /// The wire frames `missing` stands for: one per missing frame, and for a super-frame
    /// covered in part the segments its uncovered bytes needed (rounded up per gap).
    pub missing_wire_frames: u64,
    pub extra: Vec<String>,
}

fn describe(f: &Frame) -> String {
    format!(
        "{} len {} caplen {} at {}: {:02x?}",
        f.iface,
        f.orig_len,
        f.data.len(),
        f.ts_ns,
        &f.data[..f.data.len().min(54)]
    )
}

/// Every reference frame must be in `captured` byte for byte with its original length, or
/// (a TCP GSO super-frame) as wire-sized segments that carry exactly its payload at the
/// same sequence numbers; `captured` must hold nothing else.
pub fn compare(reference: &[Frame], captured: &[Frame]) -> Comparison {
    let mut result = Comparison::default();
    let mut pool: HashMap<(u32, Vec<u8>), usize> = HashMap::new();
    for f in captured {
        *pool.entry((f.orig_len, f.data.clone())).or_default() += 1;
    }
    let mut superframes = Vec::new();
    for r in reference {
        match pool.get_mut(&(r.orig_len, r.data.clone())) {
            Some(n) if *n > 0 => {
                *n -= 1;
                result.exact += 1;
            }
            _ => superframes.push(r),
        }
    }
    // Leftover captured TCP segments, by flow and sequence number.
    let mut segments: HashMap<(Vec<u8>, u32), Vec<RawFrame>> = HashMap::new();
    for ((orig_len, data), n) in &pool {
        for _ in 0..*n {
            if let Some(t) = tcp(data) {
                segments
                    .entry((t.flow.clone(), t.seq))
                    .or_default()
                    .push((data.clone(), *orig_len));
            } else {
                let ts = captured.iter().find(|f| &f.data == data).map_or(0, |f| f.ts_ns);
                result.extra.push(format!(
                    "len {orig_len} at {ts}: {:02x?}",
                    &data[..data.len().min(54)]
                ));
            }
        }
    }
    // The largest segment payload seen: what each uncovered gap is measured in.
    let segment_size = segments
        .values()
        .flatten()
        .filter_map(|(d, _)| tcp(d).map(|s| s.payload.len()))
        .max()
        .unwrap_or(1)
        .max(1);
    for r in superframes {
        let Some(t) = tcp(&r.data).filter(|t| t.payload.len() > 1500 && r.data.len() as u32 == r.orig_len)
        else {
            result.missing.push(describe(r));
            result.missing_wire_frames += 1;
            continue;
        };
        let mut seq = t.seq;
        let mut offset = 0;
        let mut used = 0;
        let mut uncovered = 0;
        while offset < t.payload.len() {
            let found = segments.get_mut(&(t.flow.clone(), seq)).and_then(|list| {
                let pos = list.iter().position(|(d, _)| {
                    tcp(d)
                        .is_some_and(|s| !s.payload.is_empty() && t.payload[offset..].starts_with(s.payload))
                })?;
                Some(list.swap_remove(pos))
            });
            let len = if let Some((d, _)) = found {
                used += 1;
                tcp(&d).map_or(0, |s| s.payload.len())
            } else {
                // A gap: skip to the next captured segment inside this super-frame.
                let remaining = t.payload.len() - offset;
                let gap = segments
                    .iter()
                    .filter(|((flow, _), list)| *flow == t.flow && !list.is_empty())
                    .map(|((_, s), _)| s.wrapping_sub(seq) as usize)
                    .filter(|d| *d > 0 && *d < remaining)
                    .min()
                    .unwrap_or(remaining);
                uncovered += gap;
                result.missing_wire_frames += gap.div_ceil(segment_size) as u64;
                gap
            };
            offset += len;
            seq = seq.wrapping_add(len as u32);
        }
        if uncovered == 0 {
            result.gso_superframes += 1;
            result.gso_segments += used;
        } else {
            result.missing.push(format!(
                "GSO super-frame missing {uncovered} of {} bytes: {}",
                t.payload.len(),
                describe(r)
            ));
        }
    }
    for list in segments.values() {
        for (d, len) in list {
            result
                .extra
                .push(format!("tcp len {len}: {:02x?}", &d[..d.len().min(54)]));
        }
    }
    result
}

/// Keeps frames with `from <= ts < to`.
pub fn window(frames: &[Frame], from: u64, to: u64) -> Vec<Frame> {
    frames
        .iter()
        .filter(|f| f.ts_ns >= from && f.ts_ns < to)
        .cloned()
        .collect()
}

/// The Interface Statistics Blocks of every segment added up (each segment counts what
/// happened while it was written): (received, dropped).
pub fn sum_statistics(files: &[std::path::PathBuf]) -> (u64, u64) {
    let (mut received, mut dropped, mut blocks) = (0, 0, 0);
    for_each_block(files, |block, section| {
        let stats = podcap_sensor::pcapng::read::parse_statistics(block, section).unwrap();
        // A segment's totals block repeats the blocks before it.
        if let Some(s) = stats.filter(|s| !s.segment_totals) {
            received += s.received.unwrap();
            dropped += s.interface_drops.unwrap() + s.os_drops.unwrap();
            blocks += 1;
        }
    });
    assert!(blocks > 0, "no statistics block in {files:?}");
    (received, dropped)
}

/// Calls `each` with every block of `files` (all must read cleanly) and its section so far.
pub fn for_each_block(
    files: &[std::path::PathBuf],
    mut each: impl FnMut(&podcap_sensor::pcapng::read::Block<'_>, &Section),
) {
    for file in files {
        let bytes = std::fs::read(file).unwrap();
        let mut section = Section::default();
        for block in Blocks::new(&bytes) {
            let block = block.unwrap();
            section.observe(&block).unwrap();
            each(&block, &section);
        }
    }
}

/// Every key log line of every Decryption Secrets Block in `files`.
pub fn secrets_in(files: &[std::path::PathBuf]) -> Vec<u8> {
    use podcap_sensor::pcapng::secrets::{parse_decryption_secrets, SECRETS_TLS_KEY_LOG};
    let mut all = Vec::new();
    for_each_block(files, |block, section| {
        if let Some(secrets) = parse_decryption_secrets(block, section).unwrap() {
            assert_eq!(secrets.secrets_type, SECRETS_TLS_KEY_LOG);
            all.extend_from_slice(secrets.data);
        }
    });
    all
}

/// The key log lines of `text` (comments and blank lines left out), as a set.
pub fn key_log_lines(text: &[u8]) -> std::collections::BTreeSet<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}
