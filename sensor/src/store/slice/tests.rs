use super::*;
use crate::pcapng::{
    read::{packets_with_names, parse_packet, Blocks, Section},
    Direction, InterfaceDescription, LINKTYPE_ETHERNET,
};
use crate::store::index;
use podcap_format::client_hello::client_hello_random;

fn segment(dir: &Path, seq: u64, ifaces: &[&str], packets: &[(u32, u64)]) -> SegmentRecord {
    let mut w = BlockWriter::default();
    w.section_header("test");
    for name in ifaces {
        w.interface(&InterfaceDescription {
            name: (*name).into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
    }
    for &(iface, ts) in packets {
        w.packet(iface, ts, 60, &ts.to_be_bytes(), Direction::Inbound);
    }
    let path = dir.join(format!("podcap-{seq:010}.pcapng"));
    std::fs::write(&path, w.bytes()).unwrap();
    index::scan(&path, seq).unwrap()
}

fn read_back(bytes: &[u8]) -> Vec<(String, u64)> {
    packets_with_names(bytes)
        .unwrap()
        .into_iter()
        .map(|(name, p)| {
            assert_eq!(p.data, &p.timestamp_ns.to_be_bytes()[..]);
            (name, p.timestamp_ns)
        })
        .collect()
}

#[test]
fn slice_is_exact_ordered_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let ms = 1_000_000;
    // Arrival order steps back inside and across segments, as capture queues do.
    let a = segment(
        dir.path(),
        1,
        &["eth0", "eth1"],
        &[(0, 100 * ms), (1, 95 * ms), (0, 300 * ms), (1, 290 * ms)],
    );
    let b = segment(
        dir.path(),
        2,
        &["eth0", "eth1"],
        &[(1, 280 * ms), (0, 400 * ms), (0, 900 * ms)],
    );
    let c = segment(dir.path(), 3, &["eth1"], &[(0, 2_000 * ms)]);
    let index = Index::from_records(vec![a, b, c]);

    let mut out = Vec::new();
    let stats = write_slice(
        dir.path(),
        &index,
        95 * ms,
        900 * ms,
        &Selection::default(),
        &mut out,
    )
    .unwrap();
    let got = read_back(&out);
    let ts: Vec<u64> = got.iter().map(|(_, t)| t / ms).collect();
    assert_eq!(
        ts,
        vec![95, 100, 280, 290, 300, 400],
        "exactly [from, to), in order"
    );
    assert_eq!(stats.segments_read, 2, "the segment after `to` is not read");
    assert_eq!(stats.late, 0);

    let mut out = Vec::new();
    write_slice(
        dir.path(),
        &index,
        0,
        u64::MAX,
        &Selection::interfaces(vec!["eth1".to_owned()]),
        &mut out,
    )
    .unwrap();
    let got = read_back(&out);
    assert!(got.iter().all(|(name, _)| name == "eth1"));
    assert_eq!(
        got.iter().map(|(_, t)| t / ms).collect::<Vec<_>>(),
        vec![95, 280, 290, 2_000]
    );
}

#[test]
fn adjacent_calls_of_one_slicer_form_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let ms = 1_000_000;
    let a = segment(
        dir.path(),
        1,
        &["eth0", "eth1"],
        &[(0, 100 * ms), (1, 95 * ms), (1, 300 * ms)],
    );
    let b = segment(dir.path(), 2, &["eth1", "eth0"], &[(1, 280 * ms), (0, 400 * ms)]);
    let index = Index::from_records(vec![a, b]);
    let mut whole = Vec::new();
    write_slice(dir.path(), &index, 0, u64::MAX, &Selection::default(), &mut whole).unwrap();
    let mut pieces = Vec::new();
    let mut slicer = Slicer::default();
    for (from, to) in [
        (0, 99 * ms),
        (99 * ms, 99 * ms),
        (99 * ms, 290 * ms),
        (290 * ms, u64::MAX),
    ] {
        let list = index.overlapping(from, to);
        slicer
            .write(dir.path(), &list, from, to, &Selection::default(), &mut pieces)
            .unwrap();
    }
    assert_eq!(read_back(&pieces), read_back(&whole));
    let sections = Blocks::new(&pieces)
        .filter(|b| b.as_ref().unwrap().block_type == crate::pcapng::BLOCK_SHB)
        .count();
    let idbs = Blocks::new(&pieces)
        .filter(|b| b.as_ref().unwrap().block_type == crate::pcapng::BLOCK_IDB)
        .count();
    assert_eq!(
        (sections, idbs),
        (1, 2),
        "one header, each interface declared once"
    );
    assert_eq!(slicer.stats().packets, 5);
}

#[test]
fn slices_seek_past_what_lies_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let ms = 1_000_000;
    // ~6 MB of 1000-byte packets, one per ms, slightly out of order in pairs.
    let packets: Vec<(u32, u64)> = (0..6_000u64).map(|i| (0, (i ^ 1) * ms + ms)).collect();
    let mut w = BlockWriter::default();
    w.section_header("test");
    w.interface(&InterfaceDescription {
        name: "eth0".into(),
        description: String::new(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65535,
    });
    for &(_, ts) in &packets {
        w.packet(0, ts, 1000, &[0u8; 1000], Direction::Inbound);
    }
    let path = dir.path().join("podcap-0000000001.pcapng");
    std::fs::write(&path, w.bytes()).unwrap();
    let record = index::scan(&path, 1).unwrap();
    assert!(record.checkpoints.len() >= 5, "{:?}", record.checkpoints);
    let index = Index::from_records(vec![record]);

    let mut out = Vec::new();
    let stats = write_slice(
        dir.path(),
        &index,
        5_000 * ms,
        5_100 * ms,
        &Selection::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(stats.packets, 100);
    assert!(stats.bytes_read < 2 << 20, "read {} of ~6 MB", stats.bytes_read);
    let mut section = Section::default();
    let mut ts = Vec::new();
    for block in Blocks::new(&out) {
        let block = block.unwrap();
        section.observe(&block).unwrap();
        if let Some(p) = parse_packet(&block, &section).unwrap() {
            ts.push(p.timestamp_ns / ms);
        }
    }
    assert_eq!(ts, (5_000..5_100).collect::<Vec<_>>());
}

/// A tiny deterministic generator (xorshift), so the property test needs no crate.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Packets as (interface name, timestamp, payload) from a pcapng stream, checking that
/// the stream has one section and declares each interface once.
fn packets_of(bytes: &[u8]) -> Vec<(String, u64, Vec<u8>)> {
    let mut names: Vec<String> = Blocks::new(bytes)
        .map(Result::unwrap)
        .filter(|b| b.block_type == crate::pcapng::BLOCK_IDB)
        .map(|b| {
            let mut section = Section::default();
            section.observe(&b).unwrap();
            section.interfaces[0].name.clone()
        })
        .collect();
    let declared = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), declared, "an interface declared twice");
    packets_with_names(bytes)
        .unwrap()
        .into_iter()
        .map(|(name, p)| (name, p.timestamp_ns, p.data.to_vec()))
        .collect()
}

#[test]
fn slices_match_a_sort_of_every_packet_whatever_the_disorder() {
    let mut seed = 0x2545_f491_4f6c_dd1d;
    let us = 1_000;
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let names = ["eth0", "eth1", "eth2"];
        let mut all = Vec::new();
        let mut records = Vec::new();
        let start = 10_000_000_000u64;
        let mut t = start;
        // Some rounds in order (copied in runs), others stepping back by up to 3 ms.
        let disorder = if round % 3 == 0 {
            0
        } else {
            rng(&mut seed) % 3_000 + 1
        };
        for seq in 1..=1 + rng(&mut seed) % 4 {
            let mut w = BlockWriter::default();
            w.section_header("test");
            let ifaces = 1 + (rng(&mut seed) % 3) as usize;
            for name in &names[..ifaces] {
                w.interface(&InterfaceDescription {
                    name: (*name).into(),
                    description: String::new(),
                    link_type: LINKTYPE_ETHERNET,
                    snaplen: 65535,
                });
            }
            // Segments may begin before the previous one ended.
            t = t.saturating_sub(rng(&mut seed) % 2 * disorder * us);
            for _ in 0..rng(&mut seed) % 400 {
                t += rng(&mut seed) % 50 * us;
                let ts = t - rng(&mut seed) % (disorder + 1) * us;
                let iface = (rng(&mut seed) % ifaces as u64) as u32;
                let len = (rng(&mut seed) % 3000) as usize;
                let mut data = ts.to_be_bytes().to_vec();
                data.resize(8 + len, seq as u8);
                w.packet(iface, ts, 60, &data, Direction::Inbound);
                all.push((names[iface as usize].to_owned(), ts, data));
            }
            let path = dir.path().join(format!("podcap-{seq:010}.pcapng"));
            std::fs::write(&path, w.bytes()).unwrap();
            records.push(index::scan(&path, seq).unwrap());
        }
        let index = Index::from_records(records);
        let span = t - start;
        let from = start - 5_000_000 + rng(&mut seed) % (span / 2 + 1);
        let to = from + rng(&mut seed) % (span + 1);
        let only = (round % 4 == 1).then(|| vec!["eth1".to_owned(), "eth2".to_owned()]);
        let mut out = Vec::new();
        let selection = only
            .clone()
            .map_or_else(Selection::default, Selection::interfaces);
        let stats = write_slice(dir.path(), &index, from, to, &selection, &mut out).unwrap();
        let got = packets_of(&out);
        let mut expect: Vec<_> = all
            .into_iter()
            .filter(|(name, ts, _)| *ts >= from && *ts < to && only.as_ref().is_none_or(|o| o.contains(name)))
            .collect();
        expect.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
        assert!(
            got.windows(2).all(|w| w[0].1 <= w[1].1),
            "round {round}: out of order"
        );
        let mut sorted = got.clone();
        sorted.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
        let brief = |v: &[(String, u64, Vec<u8>)]| -> Vec<(String, u64, usize)> {
            v.iter().map(|(n, t, d)| (n.clone(), *t, d.len())).collect()
        };
        assert_eq!(
            brief(&sorted),
            brief(&expect),
            "round {round}: disorder {disorder} us, [{from}, {to})"
        );
        assert!(sorted == expect, "round {round}: payloads differ");
        assert_eq!((stats.packets, stats.late), (expect.len() as u64, 0));
        assert_eq!(stats.bytes_written, out.len() as u64);
    }
}

#[test]
fn segments_with_other_timestamp_units_are_re_encoded() {
    let dir = tempfile::tempdir().unwrap();
    // Segment 1: microsecond timestamps (if_tsresol 6), written by hand.
    let mut w = BlockWriter::default();
    w.section_header("test");
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u32.to_ne_bytes());
    idb.extend_from_slice(&0u32.to_ne_bytes());
    idb.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    idb.extend_from_slice(&0u16.to_ne_bytes());
    idb.extend_from_slice(&65535u32.to_ne_bytes());
    idb.extend_from_slice(&2u16.to_ne_bytes());
    idb.extend_from_slice(&4u16.to_ne_bytes());
    idb.extend_from_slice(b"eth0");
    idb.extend_from_slice(&9u16.to_ne_bytes());
    idb.extend_from_slice(&1u16.to_ne_bytes());
    idb.extend_from_slice(&[6, 0, 0, 0]);
    idb.extend_from_slice(&[0; 4]);
    let total = (idb.len() + 4) as u32;
    idb[4..8].copy_from_slice(&total.to_ne_bytes());
    idb.extend_from_slice(&total.to_ne_bytes());
    w.raw(&idb);
    for us in [10u64, 20, 30] {
        // The writer stores the value as given: here, microseconds.
        let ns = us * 1_000;
        w.packet(0, us, 60, &ns.to_be_bytes(), Direction::Inbound);
    }
    std::fs::write(dir.path().join("podcap-0000000001.pcapng"), w.bytes()).unwrap();
    let a = index::scan(&dir.path().join("podcap-0000000001.pcapng"), 1).unwrap();
    let b = segment(dir.path(), 2, &["eth0"], &[(0, 25_000), (0, 40_000)]);
    let index = Index::from_records(vec![a, b]);
    let mut out = Vec::new();
    write_slice(dir.path(), &index, 0, u64::MAX, &Selection::default(), &mut out).unwrap();
    let ts: Vec<u64> = read_back(&out).into_iter().map(|(_, t)| t).collect();
    assert_eq!(ts, vec![10_000, 20_000, 25_000, 30_000, 40_000]);
}

#[test]
fn an_empty_slice_is_still_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let stats = write_slice(
        dir.path(),
        &Index::default(),
        0,
        10,
        &Selection::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(stats.packets, 0);
    assert_eq!(Blocks::new(&out).count(), 1, "a section header alone");
}

/// An Ethernet/IPv4/TCP frame holding a TLS ClientHello with `random`.
fn hello_frame(random: [u8; 32]) -> Vec<u8> {
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0u8; 20];
    (ip[0], ip[9]) = (0x45, 6);
    frame.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[12] = 5 << 4;
    frame.extend_from_slice(&tcp);
    frame.extend_from_slice(&[22, 3, 1, 0, 80, 1, 0, 0, 76, 3, 3]);
    frame.extend_from_slice(&random);
    frame.resize(frame.len() + 40, 0);
    frame
}

/// What a slice's stream holds, in order: `P<ms>` for a packet, `H<ms>` for a ClientHello,
/// `S<randoms>` for a Decryption Secrets Block (the first byte of each random it names).
fn layout(bytes: &[u8]) -> Vec<String> {
    let mut section = Section::default();
    let mut seen = Vec::new();
    for block in Blocks::new(bytes) {
        let block = block.unwrap();
        section.observe(&block).unwrap();
        if let Some(secrets) = crate::pcapng::secrets::parse_decryption_secrets(&block, &section).unwrap() {
            let firsts: String = crate::pcapng::secrets::key_log_lines(secrets.data)
                .map(|(random, _)| char::from(b'a' + random[0]))
                .collect();
            seen.push(format!("S{firsts}"));
        } else if let Some(packet) = parse_packet(&block, &section).unwrap() {
            let kind = if client_hello_random(packet.data).is_some() {
                'H'
            } else {
                'P'
            };
            seen.push(format!("{kind}{}", packet.timestamp_ns / 1_000_000));
        }
    }
    seen
}

#[test]
fn a_slice_asked_for_secrets_carries_those_of_its_hellos_before_them() {
    use crate::pcapng::secrets::{key_log_line, SECRETS_TLS_KEY_LOG};
    let dir = tempfile::tempdir().unwrap();
    let ms = 1_000_000;
    let (first_random, second_random, third_random, fourth_random) =
        ([0u8; 32], [1u8; 32], [2u8; 32], [3u8; 32]);
    let line = |random: &[u8; 32], secret: &[u8]| key_log_line("CLIENT_TRAFFIC_SECRET_0", random, secret);
    let write = |seq: u64, blocks: &dyn Fn(&mut BlockWriter)| {
        let mut blocks_out = BlockWriter::default();
        blocks_out.section_header("test");
        blocks_out.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        blocks(&mut blocks_out);
        let path = dir.path().join(format!("podcap-{seq:010}.pcapng"));
        std::fs::write(&path, blocks_out.bytes()).unwrap();
        index::scan(&path, seq).unwrap()
    };
    let packet = |w: &mut BlockWriter, ts: u64, frame: &[u8]| {
        w.packet(0, ts * ms, frame.len() as u32, frame, Direction::Outbound);
    };
    // In order (the copying path): secrets of a, b and c first, as the writer places them;
    // a's hello in the slice, b's after it; a late line of a; c never says hello.
    let first = write(1, &|w| {
        let log = format!(
            "{}{}{}",
            line(&first_random, b"a0"),
            line(&second_random, b"b0"),
            line(&third_random, b"c0")
        );
        w.decryption_secrets(SECRETS_TLS_KEY_LOG, log.as_bytes());
        packet(w, 100, &[0u8; 60]);
        packet(w, 110, &hello_frame(first_random));
        packet(w, 120, &[0u8; 60]);
        w.decryption_secrets(SECRETS_TLS_KEY_LOG, line(&first_random, b"a1").as_bytes());
        packet(w, 130, &[0u8; 60]);
        packet(w, 900, &hello_frame(second_random));
    });
    // Out of order (held back, re-sorted): d's hello steps back behind a newer packet.
    let second = write(2, &|w| {
        w.decryption_secrets(SECRETS_TLS_KEY_LOG, line(&fourth_random, b"d0").as_bytes());
        packet(w, 210, &[0u8; 60]);
        packet(w, 205, &hello_frame(fourth_random));
    });
    let records = [&first, &second];
    let slice = |slicer: Slicer| {
        let mut out = Vec::new();
        let mut slicer = slicer;
        let stats = slicer
            .write(dir.path(), &records, 0, 500 * ms, &Selection::default(), &mut out)
            .unwrap();
        (layout(&out), stats)
    };
    let (with, stats) = slice(Slicer::with_statistics().with_secrets());
    assert_eq!(
        with,
        ["P100", "Sa", "H110", "P120", "Sa", "P130", "Sd", "H205", "P210"],
        "each session's secrets just before its hello (a late one where it lay); b's hello is \
         after the slice and c's never came: theirs stay out"
    );
    assert_eq!(stats.secrets_written, 3);
    let (without, stats) = slice(Slicer::with_statistics());
    assert_eq!(without, ["P100", "H110", "P120", "P130", "H205", "P210"]);
    assert_eq!(stats.secrets_written, 0);
}

/// A hostile or damaged segment: a Decryption Secrets Block whose secrets length runs past
/// its block. A slice asked for secrets names it as damage, passes none of it on (no line
/// is guessed out of it), and delivers every packet around it; a later whole block still
/// goes out before its hello.
#[test]
fn a_damaged_secrets_block_is_damage_and_gives_no_secret() {
    use crate::pcapng::secrets::{key_log_line, SECRETS_TLS_KEY_LOG};
    let dir = tempfile::tempdir().unwrap();
    let ms = 1_000_000;
    let (damaged, whole) = ([0u8; 32], [1u8; 32]);
    let mut w = BlockWriter::default();
    w.section_header("test");
    w.interface(&InterfaceDescription {
        name: "eth0".into(),
        description: String::new(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65535,
    });
    w.decryption_secrets(
        SECRETS_TLS_KEY_LOG,
        key_log_line("CLIENT_TRAFFIC_SECRET_0", &damaged, b"a0").as_bytes(),
    );
    let frame = hello_frame(damaged);
    w.packet(0, 100 * ms, frame.len() as u32, &frame, Direction::Outbound);
    w.decryption_secrets(
        SECRETS_TLS_KEY_LOG,
        key_log_line("CLIENT_TRAFFIC_SECRET_0", &whole, b"b0").as_bytes(),
    );
    let frame = hello_frame(whole);
    w.packet(0, 110 * ms, frame.len() as u32, &frame, Direction::Outbound);
    let mut bytes = w.bytes().to_vec();
    // The first DSB's secrets length (after its secrets type, "TLSK"): far past its block.
    let at = bytes
        .windows(4)
        .position(|b| b == SECRETS_TLS_KEY_LOG.to_le_bytes())
        .unwrap()
        + 4;
    bytes[at..at + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let path = dir.path().join("podcap-0000000001.pcapng");
    std::fs::write(&path, &bytes).unwrap();
    let record = index::scan(&path, 1).unwrap();
    let mut out = Vec::new();
    let stats = Slicer::with_statistics()
        .with_secrets()
        .write(
            dir.path(),
            &[&record],
            0,
            500 * ms,
            &Selection::default(),
            &mut out,
        )
        .unwrap();
    assert_eq!(
        layout(&out),
        ["H100", "Sb", "H110"],
        "both hellos; only the whole block's line"
    );
    assert_eq!(stats.secrets_written, 1);
    assert_eq!(stats.damaged, 1, "the damaged block is named as damage");
}
