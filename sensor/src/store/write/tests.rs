//! The segment writer's tests: rotation, retention, recycling, crashes, names, statistics.
use super::*;
use crate::pcapng::LINKTYPE_ETHERNET;
use crate::store::slice;
use std::fs::File;

pub(in crate::store) fn limits(segment_size: u64, max_size: u64) -> Limits {
    Limits {
        compress: false,
        segment_size,
        segment_time: Duration::from_hours(1),
        max_size,
        max_time: Duration::from_hours(1),
    }
}

pub(in crate::store) fn writer(dir: &Path, limits: Limits) -> SegmentWriter {
    let iface = InterfaceDescription {
        name: "eth0".into(),
        description: String::new(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65535,
    };
    SegmentWriter::open(dir, limits, vec![iface]).unwrap()
}

pub(in crate::store) fn write(w: &mut SegmentWriter, count: u64, start_ns: u64) {
    for i in 0..count {
        w.write_packet(0, start_ns + i, 1000, &[7u8; 1000], Direction::Inbound, |_| {
            InterfaceStatistics::default()
        })
        .unwrap();
        // Each write handed to the disk thread (a segment's closing too) is done before
        // the next packet: rotation, deferred while a write is in flight, is then never
        // later than the next packet.
        w.settle(true);
    }
}

/// Large packets go from the caller's memory to the file when writes go through the page
/// cache, and join the buffer when they are direct; either way every byte reads back.
#[test]
fn large_packets_read_back_in_order_in_both_write_modes() {
    for mode in [WriteMode::Buffered, WriteMode::Direct] {
        large_packets_read_back_in_order(mode);
    }
}

fn large_packets_read_back_in_order(mode: WriteMode) {
    let dir = tempfile::tempdir().unwrap();
    // Segments of ~200 KB: rotation falls on large packets' writes too.
    let mut w = writer(dir.path(), limits(200_000, 100_000_000));
    w.set_write_mode(mode);
    let sizes: [u32; 8] = [60, 16_383, 16_384, 16_385, 40_001, 65_535, 1_514, 3];
    let mut sent = Vec::new();
    let t0 = crate::sys::realtime_ns();
    for i in 0..40u64 {
        let len = sizes[i as usize % sizes.len()];
        let data: Vec<u8> = (0..len).map(|b| (u64::from(b) * 7 + i) as u8).collect();
        let direction = if i % 3 == 0 {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        w.write_packet(0, t0 + i, len + 4, &data, direction, |_| {
            InterfaceStatistics::default()
        })
        .unwrap();
        w.settle(true);
        sent.push((t0 + i, len + 4, data, direction));
    }
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    let names = files(dir.path());
    assert!(names.len() > 2, "{mode:?}: no rotation: {names:?}");
    let mut read = Vec::new();
    for name in &names {
        let bytes = fs::read(dir.path().join(name)).unwrap();
        for (_, p) in crate::pcapng::read::packets_with_names(&bytes).unwrap() {
            read.push((p.timestamp_ns, p.original_len, p.data.to_vec(), p.direction));
        }
    }
    assert_eq!(read, sent, "{mode:?}");
    // Every segment's index record counts its bytes as the file holds them.
    for record in w.index().records() {
        let len = fs::metadata(dir.path().join(&record.file)).unwrap().len();
        assert_eq!(record.bytes, len, "{mode:?}: {}", record.file);
    }
}

/// Every packet timestamp of a segment file, checked to be whole pcapng first.
fn whole_segment_timestamps(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        crate::pcapng::read::complete_prefix_len(&bytes),
        bytes.len(),
        "{} has bytes after its last whole block",
        path.display()
    );
    if let Some(end) = recover::declared_section_end(&bytes) {
        assert_eq!(end, bytes.len(), "{}: section length", path.display());
    }
    crate::pcapng::read::packets_with_names(&bytes)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.timestamp_ns)
        .collect()
}

#[test]
fn retention_recycles_files_and_nothing_of_the_old_segments_survives() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), limits(100_000, 300_000));
    let t0 = crate::sys::realtime_ns();
    let mut owners = std::collections::HashMap::new();
    let mut recycled = 0;
    for round in 0..30 {
        write(&mut w, 100, t0 + round * 100);
        for name in files(dir.path()) {
            let inode = fs::metadata(dir.path().join(&name)).unwrap().ino();
            let base = name.trim_end_matches(".active").to_owned();
            if owners
                .insert(inode, base.clone())
                .is_some_and(|before| before != base)
            {
                recycled += 1;
            }
        }
    }
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    assert!(recycled > 5, "files were recycled {recycled} times");
    let records = w.index().records().to_vec();
    assert!(records.len() >= 2, "{records:?}");
    let mut previous = 0;
    for record in &records {
        let path = dir.path().join(&record.file);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            record.bytes,
            "{}",
            record.file
        );
        let timestamps = whole_segment_timestamps(&path);
        assert_eq!(timestamps.len() as u64, record.packets, "{}", record.file);
        for ts in timestamps {
            assert!(ts > previous, "{}: {ts} after {previous}", record.file);
            previous = ts;
        }
    }
    assert_eq!(previous, t0 + 2_999, "the newest packet is the last written");
    // Nothing but the segments, the index and at most one spare of one segment.
    let on_disk: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 300_000 + 2 * 110_000, "{on_disk} bytes on disk");
}

#[test]
fn a_crash_in_a_recycled_segment_keeps_none_of_the_old_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), limits(100_000, 250_000));
    let t0 = crate::sys::realtime_ns();
    write(&mut w, 1_000, t0);
    // Let the next packets open a segment in the spare, then crash (no finish).
    while w.spare.is_none() || w.active.is_some() {
        write(&mut w, 1, t0 + 1_000);
    }
    // Packets like the old segment's, so its blocks would line up behind them.
    write(&mut w, 3, t0 + 2_000);
    w.write_buffer();
    let seq = w.active.as_ref().unwrap().seq;
    assert!(
        w.active.as_ref().unwrap().recycled_len > 60_000,
        "the segment is not recycled"
    );
    let active = SegmentName::active(seq).path_in(dir.path());
    assert!(
        fs::metadata(&active).unwrap().len() > 60_000,
        "no old bytes to leave behind"
    );
    drop(w);

    let w = writer(dir.path(), limits(100_000, 250_000));
    let finished = SegmentName::finished(seq).path_in(dir.path());
    let timestamps = whole_segment_timestamps(&finished);
    assert_eq!(
        timestamps,
        [t0 + 2_000, t0 + 2_001, t0 + 2_002],
        "exactly the packets written"
    );
    assert!(w.index().records().iter().any(|r| r.seq == seq));
}

#[test]
fn a_file_still_being_read_is_not_overwritten() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), limits(100_000, 250_000));
    let t0 = crate::sys::realtime_ns();
    write(&mut w, 150, t0);
    let first = w.index().records()[0].file.clone();
    let mut reader = File::open(dir.path().join(&first)).unwrap();
    let before = fs::read(dir.path().join(&first)).unwrap();
    write(&mut w, 1_000, t0 + 150);
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    assert!(!dir.path().join(&first).exists(), "retention kept {first}");
    let mut after = Vec::new();
    reader.read_to_end(&mut after).unwrap();
    assert!(after == before, "{first} changed under its reader");
}

pub(in crate::store) fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(name::PREFIX))
        .collect();
    names.sort();
    names
}

fn pod_iface(name: &str) -> InterfaceDescription {
    InterfaceDescription {
        name: name.into(),
        description: format!("pod {name}"),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65535,
    }
}

fn udp_to(dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 18, 0, 1]);
    f[30..34].copy_from_slice(&dst);
    f
}

#[test]
fn slots_change_hands_and_names_travel_with_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(dir.path(), limits(1 << 20, 1 << 30), Vec::new()).unwrap();
    let none = |_| InterfaceStatistics::default();
    // Packet times near now: retention by time keeps them.
    let t0 = crate::sys::realtime_ns();
    w.set_names(vec![("198.18.7.1".parse().unwrap(), "web-1.shop".into())]);
    w.set_interface(0, pod_iface("shop/web-1/eth0"));
    w.write_packet(0, t0 + 10, 60, &udp_to([198, 18, 7, 1]), Direction::Inbound, none)
        .unwrap();
    // Slot 0 goes to another pod mid-segment; slot 1 is new.
    w.set_interface(0, pod_iface("shop/web-9/eth0"));
    w.set_interface(1, pod_iface("blog/api-1/eth0"));
    w.write_packet(
        0,
        t0 + 20,
        60,
        &udp_to([198, 18, 7, 2]),
        Direction::Outbound,
        none,
    )
    .unwrap();
    w.write_packet(1, t0 + 30, 60, &udp_to([198, 18, 7, 3]), Direction::Inbound, none)
        .unwrap();
    w.close_segment(none).unwrap();
    w.write_packet(1, t0 + 40, 60, &udp_to([198, 18, 7, 3]), Direction::Inbound, none)
        .unwrap();
    w.finish(none).unwrap();

    let mut seen = Vec::new();
    let mut names_blocks = 0;
    for file in files(dir.path()) {
        let bytes = fs::read(dir.path().join(&file)).unwrap();
        let mut section = crate::pcapng::read::Section::default();
        for block in crate::pcapng::read::Blocks::new(&bytes) {
            let block = block.unwrap();
            section.observe(&block).unwrap();
            names_blocks += usize::from(block.block_type == crate::pcapng::BLOCK_NRB);
            if let Some(p) = crate::pcapng::read::parse_packet(&block, &section).unwrap() {
                seen.push((
                    section.interfaces[p.interface_id as usize].name.clone(),
                    p.timestamp_ns,
                ));
            }
        }
        let out = std::process::Command::new("tshark")
            .args([
                "-r",
                &dir.path().join(&file).display().to_string(),
                "-N",
                "n",
                "-T",
                "fields",
            ])
            .args(["-e", "frame.interface_name", "-e", "ip.dst_host"])
            .output();
        // tshark reads every segment, and shows the pod's name for its address.
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "tshark -r {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                text.contains("web-1.shop") || !text.contains("198.18.7.1"),
                "{text}"
            );
        }
    }
    assert_eq!(
        seen,
        vec![
            ("shop/web-1/eth0".to_owned(), t0 + 10),
            ("shop/web-9/eth0".to_owned(), t0 + 20),
            ("blog/api-1/eth0".to_owned(), t0 + 30),
            ("blog/api-1/eth0".to_owned(), t0 + 40),
        ]
    );
    assert_eq!(names_blocks, 2, "the names head every segment");
}

#[test]
fn rotation_and_size_retention_keep_the_newest_within_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), limits(100_000, 400_000));
    let now = crate::sys::realtime_ns();
    write(&mut w, 2_000, now); // ~2 MB through 100 kB segments
    let finished: u64 = w.index().records().iter().map(|r| r.bytes).sum();
    assert!(finished <= 400_000, "finished segments hold {finished} bytes");
    let newest = w.index().records().iter().map(|r| r.last_ns).max().unwrap();
    assert!(newest >= now + 1_800, "the newest packets are kept");
    let on_disk = files(dir.path());
    let indexed: Vec<&str> = w.index().records().iter().map(|r| r.file.as_str()).collect();
    assert_eq!(
        on_disk
            .iter()
            .filter(|n| n.ends_with(".pcapng"))
            .collect::<Vec<_>>(),
        indexed
    );
}

#[test]
fn time_retention_uses_packet_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = limits(50_000, 100_000_000);
    l.max_time = Duration::from_mins(1);
    let mut w = writer(dir.path(), l);
    let now = crate::sys::realtime_ns();
    write(&mut w, 200, now - 3_600_000_000_000); // an hour old (time on the packets)
    write(&mut w, 200, now);
    w.apply_retention();
    assert!(
        w.index().records().iter().all(|r| r.last_ns >= now),
        "{:?}",
        w.index().records()
    );
    assert!(!w.index().is_empty());
}

#[test]
fn reopening_reconciles_the_index_with_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), limits(50_000, 100_000_000));
    write(&mut w, 300, crate::sys::realtime_ns());
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    let records = w.index().records().to_vec();
    drop(w);
    assert!(records.len() >= 4);
    // A file vanishes and the manifest is damaged: the next open rebuilds and agrees.
    fs::remove_file(dir.path().join(&records[0].file)).unwrap();
    fs::write(dir.path().join(index::MANIFEST), "garbage").unwrap();
    let w = writer(dir.path(), limits(50_000, 100_000_000));
    let mut expect = records[1..].to_vec();
    for r in &mut expect {
        r.drops = 0;
    }
    let got: Vec<SegmentRecord> = w.index().records().to_vec();
    assert_eq!(got.len(), expect.len());
    for (g, e) in got.iter().zip(&expect) {
        assert_eq!(
            (g.seq, &g.file, g.first_ns, g.last_ns, g.packets, g.bytes),
            (e.seq, &e.file, e.first_ns, e.last_ns, e.packets, e.bytes)
        );
        assert_eq!(g.checkpoints.is_empty(), e.checkpoints.is_empty());
    }
    assert!(
        Index::load(dir.path()).unwrap().is_some(),
        "the rebuilt manifest was saved"
    );
}

#[test]
fn a_stray_name_never_moves_the_sequence_or_replaces_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::sys::realtime_ns();
    let mut w = writer(dir.path(), limits(50_000, 100_000_000));
    write(&mut w, 150, now);
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    drop(w);
    let before: Vec<(String, Vec<u8>)> = files(dir.path())
        .into_iter()
        .map(|n| (n.clone(), fs::read(dir.path().join(&n)).unwrap()))
        .collect();
    assert!(before.len() >= 3, "{before:?}");
    let stray = dir.path().join("podcap-18446744073709551615.pcapng");
    fs::write(&stray, b"not a segment").unwrap();

    let mut w = writer(dir.path(), limits(50_000, 100_000_000));
    assert!(
        w.recovery()
            .ignored
            .iter()
            .any(|f| f.ends_with("podcap-18446744073709551615.pcapng")),
        "{:?}",
        w.recovery()
    );
    write(&mut w, 150, now + 1_000);
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    for (name, bytes) in &before {
        assert!(
            fs::read(dir.path().join(name)).unwrap() == *bytes,
            "{name} changed"
        );
    }
    let mut seqs: Vec<u64> = w.index().records().iter().map(|r| r.seq).collect();
    let count = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), count, "one record per segment");
    assert!(count >= 2 * before.len(), "{count} records");
    assert_eq!(
        fs::read(&stray).unwrap(),
        b"not a segment",
        "the stray is left alone"
    );
}

#[test]
fn a_store_whose_numbers_are_used_up_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), limits(50_000, 100_000_000));
    write(&mut w, 10, crate::sys::realtime_ns());
    w.finish(|_| InterfaceStatistics::default()).unwrap();
    drop(w);
    fs::rename(
        dir.path().join("podcap-0000000001.pcapng"),
        dir.path().join("podcap-9999999999.pcapng"),
    )
    .unwrap();
    // With its index the store would know the file for a stray (recover's tests); without
    // one, every file of the store's names is its own.
    fs::remove_file(dir.path().join(crate::store::index::MANIFEST)).unwrap();
    let Err(error) = SegmentWriter::open(dir.path(), limits(50_000, 100_000_000), Vec::new()) else {
        panic!("the store opened");
    };
    assert!(
        error.to_string().contains("segment numbers are used up"),
        "{error}"
    );
    assert!(dir.path().join("podcap-9999999999.pcapng").exists());
}

/// (interface drops, os drops, received) of every statistics block in `bytes`.
fn statistics_blocks(bytes: &[u8]) -> Vec<(u64, u64, u64)> {
    let mut section = crate::pcapng::read::Section::default();
    let mut found = Vec::new();
    for block in crate::pcapng::read::Blocks::new(bytes) {
        let block = block.unwrap();
        section.observe(&block).unwrap();
        if let Some(s) = crate::pcapng::read::parse_statistics(&block, &section).unwrap() {
            found.push((
                s.interface_drops.unwrap(),
                s.os_drops.unwrap(),
                s.received.unwrap(),
            ));
        }
    }
    found
}

#[test]
fn segments_count_their_own_losses_and_a_snapshot_adds_up_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), limits(8_000, 100_000_000));
    let t0 = crate::sys::realtime_ns() - 1_000_000;
    // Cumulative counters as the capture keeps them: every packet, one kernel drop and
    // two received.
    let cumulative = |i: u64| InterfaceStatistics {
        start_ns: t0,
        end_ns: t0 + i,
        received: 2 * i,
        kernel_drops: i,
        sensor_drops: i / 10,
    };
    for i in 0..300u64 {
        w.write_packet(0, t0 + i, 100, &[1u8; 100], Direction::Inbound, |_| cumulative(i))
            .unwrap();
        w.settle(true);
    }
    w.finish(|_| cumulative(300)).unwrap();
    let records = w.index().records().to_vec();
    assert!(records.len() >= 4, "{} segments", records.len());
    let per_segment: Vec<(u64, u64, u64)> = records
        .iter()
        .map(|r| statistics_blocks(&fs::read(dir.path().join(&r.file)).unwrap())[0])
        .collect();
    let total = per_segment
        .iter()
        .fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
    assert_eq!(
        total,
        (300, 30, 600),
        "the segments' own counts add up to the whole"
    );
    for (record, (kernel, sensor, _)) in records.iter().zip(&per_segment) {
        assert_eq!(record.drops, kernel + sensor, "{}", record.file);
    }
    // A snapshot of the middle segments (cut inside them) says what they lost.
    let (from, to) = (records[1].first_ns + 1, records[2].last_ns - 1);
    let mut out = Vec::new();
    slice::write_slice(
        dir.path(),
        w.index(),
        from,
        to,
        &slice::Selection::default(),
        &mut out,
    )
    .unwrap();
    let window = statistics_blocks(&out);
    let expect = (
        per_segment[1].0 + per_segment[2].0,
        per_segment[1].1 + per_segment[2].1,
        per_segment[1].2 + per_segment[2].2,
    );
    assert_eq!(
        window,
        vec![expect],
        "one block for eth0 with the two segments' sums"
    );
}

/// A file, folder or symbolic link at the name of the next segment (active or finished) is
/// left alone and its number skipped: recording goes on, and nothing is written through it.
#[test]
fn stray_files_at_the_next_names_are_skipped_not_written_through() {
    let t0 = crate::sys::realtime_ns();
    for kind in ["dir", "symlink", "finished"] {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("not-the-store");
        let mut w = writer(dir.path(), limits(50_000, 100_000_000));
        write(&mut w, 100, t0);
        let next = w.next_seq;
        let active = SegmentName::active(next).path_in(dir.path());
        let finished = SegmentName::finished(next + 1).path_in(dir.path());
        match kind {
            "dir" => fs::create_dir(&active).unwrap(),
            "symlink" => std::os::unix::fs::symlink(&target, &active).unwrap(),
            _ => fs::write(&finished, b"someone else's").unwrap(),
        }
        write(&mut w, 300, t0 + 1_000);
        w.finish(|_| InterfaceStatistics::default()).unwrap();
        assert!(w.disk().failing.is_none(), "{kind}: {:?}", w.disk());
        assert!(!target.exists(), "{kind}: nothing written through the link");
        let seqs: Vec<u64> = w.index().records().iter().map(|r| r.seq).collect();
        let skipped = if kind == "finished" { next + 1 } else { next };
        assert!(!seqs.contains(&skipped), "{kind}: {seqs:?}");
        assert!(
            seqs.iter().any(|&s| s > skipped),
            "{kind}: recording went on: {seqs:?}"
        );
        let packets: u64 = w.index().records().iter().map(|r| r.packets).sum();
        assert_eq!(packets, 400, "{kind}");
        if kind == "finished" {
            assert_eq!(fs::read(&finished).unwrap(), b"someone else's");
        }
    }
}

/// A segment that cannot be opened is a write failure the store's state says, not a
/// silent drop.
#[test]
fn a_segment_that_cannot_be_opened_is_a_write_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), limits(50_000, 100_000_000));
    w.next_seq = name::MAX_SEQ + 1;
    let error = w
        .write_packet(0, 1, 10, &[0; 10], Direction::Inbound, |_| {
            InterfaceStatistics::default()
        })
        .unwrap_err();
    assert!(error.to_string().contains("used up"), "{error}");
    let failing = w.disk().failing.clone().expect("the store says writes fail");
    assert!(failing.error.contains("used up"), "{failing:?}");
}

/// One writer per data directory: a second is refused, naming the holder and the lock.
#[test]
fn a_second_writer_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = writer(dir.path(), limits(50_000, 100_000_000));
    let error = SegmentWriter::open(dir.path(), limits(50_000, 100_000_000), Vec::new())
        .err()
        .expect("refused");
    let text = crate::error_chain(&error);
    assert!(
        text.contains("podcap.lock") && text.contains(&std::process::id().to_string()),
        "{text}"
    );
    drop(first);
    writer(dir.path(), limits(50_000, 100_000_000));
}
