//! What each input of a merge gave and lost, named in the merged file's Section Header.
//!
//! Rules:
//! - Per input: the packets written from it, and what its statistics blocks say its
//!   interfaces received and lost (in the kernel, in podcap) in the window's time.
//! - The totals are known only at the end, and the header is at the start: a merge into a
//!   file that can be rewritten reserves one comment of spaces ([`reserved_comment`]) and
//!   [`fill_reserved`] writes the totals over it, padded to the same length, so no byte
//!   after it moves. A stream (standard output, gzip) reserves nothing: its totals are in
//!   the statistics blocks at its end.
use std::io::{self, Read, Seek, SeekFrom, Write};

/// How the totals comment begins (and how [`fill_reserved`] finds it).
pub const TOTALS_PREFIX: &str = "podcap totals per sensor";

/// What one input gave and lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputTotals {
    pub label: String,
    /// Packets written from it.
    pub packets: u64,
    /// Whether it carried statistics blocks (an older sensor's slice may not).
    pub statistics: bool,
    pub received: u64,
    pub kernel_drops: u64,
    pub sensor_drops: u64,
}

/// The comment naming every input's totals.
#[must_use]
pub fn totals_comment(totals: &[InputTotals]) -> String {
    let each: Vec<String> = totals
        .iter()
        .map(|t| {
            if t.statistics {
                format!(
                    "{}: {} packets written, {} received, {} lost in the kernel, {} lost in podcap",
                    t.label, t.packets, t.received, t.kernel_drops, t.sensor_drops
                )
            } else {
                format!("{}: {} packets written, no statistics", t.label, t.packets)
            }
        })
        .collect();
    format!("{TOTALS_PREFIX}: {}", each.join("; "))
}

/// The comment a rewritable merge reserves for the totals of inputs `labels`: room for
/// the longest totals comment, spaces after a word on what it is until then.
#[must_use]
pub fn reserved_comment(labels: &[String]) -> String {
    // Room for every count at its longest (20 digits).
    let longest = totals_comment(
        &labels
            .iter()
            .map(|label| InputTotals {
                label: label.clone(),
                packets: u64::MAX,
                statistics: true,
                received: u64::MAX,
                kernel_drops: u64::MAX,
                sensor_drops: u64::MAX,
            })
            .collect::<Vec<_>>(),
    );
    let mut reserved = format!("{TOTALS_PREFIX}: not written (the merge did not finish)");
    let room = longest.len().max(reserved.len());
    reserved.extend(std::iter::repeat_n(' ', room - reserved.len()));
    reserved
}

/// Writes `totals` over the comment [`reserved_comment`] left in the Section Header at the
/// start of `file` (a merge's output, in this machine's byte order); whether it was found.
pub fn fill_reserved(file: &mut (impl Read + Write + Seek), totals: &[InputTotals]) -> io::Result<bool> {
    let word = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let half = |b: &[u8], at: usize| usize::from(u16::from_ne_bytes([b[at], b[at + 1]]));
    file.seek(SeekFrom::Start(0))?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head)?;
    if word(&head, 0) != crate::pcapng::BLOCK_SHB || word(&head, 8) != crate::pcapng::BYTE_ORDER_MAGIC {
        return Ok(false);
    }
    let total = word(&head, 4) as usize;
    if !(28..=1 << 20).contains(&total) {
        return Ok(false);
    }
    let mut block = vec![0u8; total];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut block)?;
    // Options follow the magic, the version and the section length.
    let mut at = 24;
    while at + 4 <= total - 4 {
        let (code, len) = (half(&block, at), half(&block, at + 2));
        let value = at + 4;
        if code == 0 || value + len > total - 4 {
            break;
        }
        if code == 1 && block[value..value + len].starts_with(TOTALS_PREFIX.as_bytes()) {
            let text = totals_comment(totals);
            let mut end = text.len().min(len);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mut filled = text.as_bytes()[..end].to_vec();
            filled.resize(len, b' ');
            file.seek(SeekFrom::Start(value as u64))?;
            file.write_all(&filled)?;
            file.flush()?;
            return Ok(true);
        }
        at = value + len.next_multiple_of(4);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        merge::{merge_with, Input, MergeOptions},
        pcapng::{
            read::{packets_with_names, section_comments, Blocks},
            BlockWriter, Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET,
        },
    };

    /// A sensor's slice: `packets` packets on eth0, then its window's statistics.
    fn slice(packets: u64, kernel_drops: u64) -> Vec<u8> {
        let mut w = BlockWriter::default();
        w.section_header("test");
        w.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        for ts in 0..packets {
            w.packet(0, 100 + ts, 8, &ts.to_be_bytes(), Direction::Inbound);
        }
        let stats = InterfaceStatistics {
            start_ns: 100,
            end_ns: 200,
            received: packets + kernel_drops,
            kernel_drops,
            sensor_drops: 1,
        };
        w.statistics(0, &stats, "");
        w.bytes().to_vec()
    }

    #[test]
    fn a_rewritable_merge_names_each_inputs_totals_in_its_header() {
        let inputs = vec![
            Input {
                label: "node-a:9090".into(),
                reader: std::io::Cursor::new(slice(3, 5)),
            },
            Input {
                label: "node-b:9090".into(),
                reader: std::io::Cursor::new(slice(2, 0)),
            },
        ];
        let options = MergeOptions {
            reserve_totals: true,
            ..MergeOptions::default()
        };
        let mut out = std::io::Cursor::new(Vec::new());
        let stats = merge_with(inputs, &["window".into()], &mut out, options).unwrap();
        let before = out.get_ref().clone();
        assert!(fill_reserved(&mut out, &stats.totals).unwrap());
        let after = out.into_inner();
        assert_eq!(after.len(), before.len(), "nothing after the header moved");
        let comments = section_comments(&Blocks::new(&after).next().unwrap().unwrap());
        assert_eq!(comments[0], "window");
        assert_eq!(
            comments[1].trim_end(),
            "podcap totals per sensor: node-a:9090: 3 packets written, 8 received, 5 lost in the kernel, \
             1 lost in podcap; node-b:9090: 2 packets written, 2 received, 0 lost in the kernel, 1 lost in podcap"
        );
        let data = |bytes: &[u8]| -> Vec<(String, Vec<u8>)> {
            packets_with_names(bytes)
                .unwrap()
                .into_iter()
                .map(|(name, p)| (name, p.data.to_vec()))
                .collect()
        };
        assert_eq!(data(&after).len(), 5);
        assert_eq!(data(&after), data(&before));
    }

    #[test]
    fn a_stream_reserves_nothing_and_a_file_without_room_is_left_alone() {
        let inputs = vec![Input {
            label: "a".into(),
            reader: std::io::Cursor::new(slice(1, 0)),
        }];
        let mut out = std::io::Cursor::new(Vec::new());
        let stats = merge_with(inputs, &["window".into()], &mut out, MergeOptions::default()).unwrap();
        let before = out.get_ref().clone();
        assert!(!fill_reserved(&mut out, &stats.totals).unwrap());
        assert_eq!(out.into_inner(), before);
    }
}
