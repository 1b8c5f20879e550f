use super::*;
use crate::pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET};

/// A segment: SHB, IDB, ten EPBs; and the offset of each EPB.
fn segment() -> (Vec<u8>, Vec<usize>) {
    let mut w = BlockWriter::default();
    w.section_header("test");
    w.interface(&InterfaceDescription {
        name: "eth0".into(),
        description: String::new(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65535,
    });
    let mut offsets = Vec::new();
    for i in 0..10u64 {
        offsets.push(w.len());
        w.packet(0, 1_000 + i, 100, &[i as u8; 100], Direction::Inbound);
    }
    (w.bytes().to_vec(), offsets)
}

/// (packet timestamps, damage) of a salvaged read.
fn salvage(bytes: &[u8]) -> (Vec<u64>, Vec<Damage>) {
    let mut section = Section::default();
    let (mut packets, mut damage) = (Vec::new(), Vec::new());
    for piece in SalvagedBlocks::new(bytes) {
        match piece {
            Piece::Block(block) => {
                section.observe(&block).unwrap();
                if let Some(p) = parse_packet(&block, &section).unwrap() {
                    packets.push(p.timestamp_ns);
                }
            }
            Piece::Damaged(d) => damage.push(d),
        }
    }
    (packets, damage)
}

#[test]
fn damage_is_skipped_to_the_next_block_and_said() {
    let (clean, epb) = segment();
    let all: Vec<u64> = (1_000..1_010).collect();
    assert_eq!(salvage(&clean), (all.clone(), Vec::new()));

    // A flipped first byte: the section header is damage, everything after it reads.
    let mut bytes = clean.clone();
    bytes[0] ^= 0xff;
    let (packets, damage) = salvage(&bytes);
    assert_eq!(packets, all);
    assert_eq!(damage.len(), 1);
    assert_eq!(
        (damage[0].offset, damage[0].reason),
        (0, "damaged section header")
    );

    // The header's length flipped: the same.
    let mut bytes = clean.clone();
    bytes[4] ^= 0x40;
    let (packets, damage) = salvage(&bytes);
    assert_eq!((packets, damage.len()), (all.clone(), 1));

    // A packet's length field damaged: that packet is lost, the rest read.
    let mut bytes = clean.clone();
    bytes[epb[3] + 4] ^= 0x13;
    let (packets, damage) = salvage(&bytes);
    let expect: Vec<u64> = all.iter().copied().filter(|&t| t != 1_003).collect();
    assert_eq!(packets, expect);
    assert_eq!(damage.len(), 1);
    assert_eq!(damage[0].offset, epb[3] as u64);
    assert_eq!(damage[0].len, (epb[4] - epb[3]) as u64);

    // Zeros over two packets (a lost write): skipped, said, the rest read.
    let mut bytes = clean.clone();
    bytes[epb[5]..epb[7] + 8].fill(0);
    let (packets, damage) = salvage(&bytes);
    assert_eq!(packets, vec![1_000, 1_001, 1_002, 1_003, 1_004, 1_008, 1_009]);
    assert_eq!(damage[0].offset, epb[5] as u64);

    // Cut inside a packet: everything before it, and the torn tail said.
    let bytes = &clean[..epb[8] + 30];
    let (packets, damage) = salvage(bytes);
    assert_eq!(packets, all[..8].to_vec());
    assert_eq!((damage.len(), damage[0].reason), (1, "ends inside a block"));
    assert_eq!(damage[0].offset + damage[0].len, bytes.len() as u64);
}

#[test]
fn resync_asks_for_more_rather_than_guessing() {
    let (clean, epb) = segment();
    // Only the head of the block at epb[2] is here: undecided, not "nothing".
    let cut = &clean[..epb[2] + 40];
    assert_eq!(resync(cut, epb[1] + 4, false), Resync::NeedMore(epb[2]));
    assert_eq!(resync(&clean, epb[1] + 4, false), Resync::Found(epb[2]));
    // Unaligned starts round up to the next multiple of four.
    assert_eq!(resync(&clean, epb[1] + 1, false), Resync::Found(epb[2]));
    assert_eq!(next_plausible_block(cut, epb[1] + 4, false), None);
}

#[test]
fn section_headers_are_checked_and_carry_comments() {
    let (clean, _) = segment();
    assert!(check_section_header(&clean).is_ok());
    for at in [0, 4, 8, 12] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x55;
        assert!(check_section_header(&bytes).is_err(), "byte {at} flipped");
    }
    let mut w = BlockWriter::default();
    w.section_header_with_comments("t", &["one".into(), "two, longer".into()]);
    let block = Blocks::new(w.bytes()).next().unwrap().unwrap();
    assert_eq!(section_comments(&block), vec!["one", "two, longer"]);
}

#[test]
fn blocks_passed_on_byte_for_byte_are_checked_whole() {
    let option = |code: u16, value: &[u8]| {
        let mut o = code.to_ne_bytes().to_vec();
        o.extend_from_slice(&(value.len() as u16).to_ne_bytes());
        o.extend_from_slice(value);
        o.resize(o.len().next_multiple_of(4), 0);
        o
    };
    let end = [0u8; 4];
    let flags = option(2, &1u32.to_ne_bytes());
    assert!(options_valid(&[], false, PACKET_OPTIONS), "no options");
    assert!(options_valid(
        &[flags.clone(), end.to_vec()].concat(),
        false,
        PACKET_OPTIONS
    ));
    assert!(
        options_valid(&flags, false, PACKET_OPTIONS),
        "the block may end the list"
    );
    assert!(
        !options_valid(&option(2, &[1, 0]), false, PACKET_OPTIONS),
        "flags of 2 bytes"
    );
    assert!(
        !options_valid(&[&end[..], &flags].concat(), false, PACKET_OPTIONS),
        "after the end"
    );
    let mut long = flags.clone();
    long[2] = 200;
    assert!(
        !options_valid(&long, false, PACKET_OPTIONS),
        "longer than the block"
    );
    assert!(
        !options_valid(&[1, 0], false, PACKET_OPTIONS),
        "a torn option header"
    );

    let mut w = BlockWriter::default();
    w.names(&[("198.18.0.1".parse().unwrap(), "web-1.shop".into())]);
    let block = Blocks::new(w.bytes()).next().unwrap().unwrap();
    assert!(names_valid(&block, false));
    let mut raw = block.raw.to_vec();
    raw[10] = 0xff; // the first record's length
    let damaged = Block { raw: &raw, ..block };
    assert!(!names_valid(&damaged, false));
}
