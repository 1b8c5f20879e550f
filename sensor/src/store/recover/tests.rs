use super::*;
use crate::store::layout::ALIGN;
use crate::{
    pcapng::{
        read::{packets_with_names, section_comments, Blocks},
        InterfaceStatistics,
    },
    store::{
        slice,
        write::tests::{limits, write, writer},
        SegmentWriter,
    },
};

const NONE: fn(u32) -> InterfaceStatistics = |_| InterfaceStatistics::default();

/// Every packet timestamp a slice of the whole store gives, and its damage notes.
fn slice_all(w: &SegmentWriter) -> (Vec<u64>, Vec<String>) {
    let mut out = Vec::new();
    let stats = slice::write_slice(
        w.dir(),
        w.index(),
        0,
        u64::MAX,
        &slice::Selection::default(),
        &mut out,
    )
    .unwrap();
    let notes: Vec<String> = Blocks::new(&out)
        .flat_map(|b| section_comments(&b.unwrap()))
        .collect();
    assert_eq!(stats.damaged, notes.len(), "{notes:?}");
    assert_readers_take(&out);
    let packets = packets_with_names(&out)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.timestamp_ns)
        .collect();
    (packets, notes)
}

/// tshark and capinfos read the bytes without a complaint (when installed).
fn assert_readers_take(bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), bytes).unwrap();
    for (tool, args) in [("tshark", &["-r"][..]), ("capinfos", &[][..])] {
        let Ok(out) = std::process::Command::new(tool)
            .args(args)
            .arg(file.path())
            .output()
        else {
            continue;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let complaints = stderr
            .lines()
            .filter(|l| !l.contains("Running as user \"root\"") && !l.trim().is_empty())
            .count();
        assert!(out.status.success() && complaints == 0, "{tool}: {stderr}");
    }
}

/// A store of finished segments and one left `.active` by a crash (with the zero padding
/// of its last direct write); its sequence number, the packets' times and the bytes the
/// writer had written into it.
fn crashed_store(dir: &Path, t0: u64) -> (u64, Vec<u64>, usize) {
    let mut w = writer(dir, limits(50_000, 100_000_000));
    write(&mut w, 120, t0);
    w.write_buffer();
    let seq = w.active.as_ref().unwrap().seq;
    let len = w.active.as_ref().unwrap().bytes();
    assert!(len > 2_000, "a packet or two in the active segment");
    drop(w); // no finish: as a kill -9 leaves it
    (seq, (t0..t0 + 120).collect(), usize::try_from(len).unwrap())
}

/// The padding of the last direct write is no damage: cut without a word.
#[test]
fn the_padding_of_direct_writes_is_cut_silently() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, written, len) = crashed_store(dir.path(), t0);
    let active = SegmentName::active(seq).path_in(dir.path());
    let bytes = fs::read(&active).unwrap();
    assert!(
        bytes.len() > len,
        "direct writes pad the file: {} bytes",
        bytes.len()
    );
    assert!(bytes[len..].iter().all(|&b| b == 0));
    let w = writer(dir.path(), limits(50_000, 100_000_000));
    let finished = SegmentName::finished(seq).path_in(dir.path());
    assert_eq!(fs::read(&finished).unwrap(), bytes[..len]);
    assert!(w.recovery().is_empty(), "{:?}", w.recovery());
    let (packets, notes) = slice_all(&w);
    assert_eq!((packets, notes), (written, Vec::new()));
}

/// A write in two halves whose second half landed and first did not (a crash with both
/// in flight): whole blocks, zeros never written, then readable blocks. The Section
/// Header's length counts only what was written whole: the rest is cut as an unfinished
/// write, the segment is not quarantined.
#[test]
fn a_write_whose_second_half_landed_first_is_cut_as_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, written, len) = crashed_store(dir.path(), t0);
    let active = SegmentName::active(seq).path_in(dir.path());
    let bytes = fs::read(&active).unwrap();
    let mut crashed = bytes[..len].to_vec();
    crashed.resize(len.next_multiple_of(ALIGN) + 2 * ALIGN, 0);
    // The second half: readable blocks (a copy of the segment's last ones).
    crashed.extend_from_slice(&bytes[len - 5_000..len]);
    crashed.resize(crashed.len().next_multiple_of(ALIGN) + ALIGN, 0);
    fs::write(&active, &crashed).unwrap();
    assert_eq!(
        declared_section_end(&crashed),
        Some(len),
        "the header counts what was written"
    );

    let w = writer(dir.path(), limits(50_000, 100_000_000));
    let finished = SegmentName::finished(seq).path_in(dir.path());
    assert_eq!(fs::read(&finished).unwrap(), bytes[..len]);
    assert!(w.recovery().quarantined.is_empty(), "{:?}", w.recovery());
    assert_eq!(w.recovery().repaired.len(), 1, "{:?}", w.recovery());
    let (packets, notes) = slice_all(&w);
    assert_eq!((packets, notes), (written, Vec::new()));
}

/// Damage inside what the Section Header counts, with readable blocks after it, is
/// damage, not an unfinished write: the segment goes to quarantine whole, nothing cut.
#[test]
fn damage_before_readable_blocks_of_an_active_segment_is_quarantined_whole() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, _, len) = crashed_store(dir.path(), t0);
    let active = SegmentName::active(seq).path_in(dir.path());
    let mut bytes = fs::read(&active).unwrap();
    bytes.truncate(len);
    // A whole block of zeros in the middle, as a lost write would leave.
    let at = (len / 2).next_multiple_of(ALIGN) - ALIGN;
    bytes[at..at + ALIGN].fill(0);
    fs::write(&active, &bytes).unwrap();

    let w = writer(dir.path(), limits(50_000, 100_000_000));
    let quarantined = dir.path().join(name::quarantined(&SegmentName::finished(seq)));
    assert_eq!(fs::read(&quarantined).unwrap(), bytes, "kept whole, uncut");
    assert_eq!(w.recovery().quarantined.len(), 1, "{:?}", w.recovery());
}

#[test]
fn an_active_segment_with_a_damaged_header_goes_to_quarantine_whole() {
    for byte in [0usize, 4] {
        let dir = tempfile::tempdir().unwrap();
        let t0 = crate::sys::realtime_ns();
        let (seq, written, len) = crashed_store(dir.path(), t0);
        let active = SegmentName::active(seq).path_in(dir.path());
        let mut bytes = fs::read(&active).unwrap();
        bytes[byte] ^= 0x5a;
        fs::write(&active, &bytes).unwrap();

        let w = writer(dir.path(), limits(50_000, 100_000_000));
        let quarantined = dir.path().join(name::quarantined(&SegmentName::finished(seq)));
        assert_eq!(
            fs::read(&quarantined).unwrap(),
            bytes[..len],
            "byte {byte}: kept whole, uncut (but for the padding of direct writes)"
        );
        assert!(!active.exists());
        assert_eq!(w.recovery().quarantined.len(), 1, "{:?}", w.recovery());
        let record = w.index().records().iter().find(|r| r.seq == seq).unwrap();
        assert_eq!(record.file, name::quarantined(&SegmentName::finished(seq)));
        assert!(!record.damaged.is_empty());
        // Every packet is still served (only the header was hit), and the damage said.
        let (packets, notes) = slice_all(&w);
        assert_eq!(packets, written, "byte {byte}");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("damaged section header"), "{notes:?}");
        assert!(
            w.index().total_bytes() >= bytes.len() as u64,
            "counted in the size"
        );
    }
}

#[test]
fn an_empty_active_segment_is_removed_and_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, written, len) = crashed_store(dir.path(), t0);
    let active = SegmentName::active(seq).path_in(dir.path());
    let lost = packets_with_names(&fs::read(&active).unwrap()[..len])
        .unwrap()
        .len();
    fs::write(&active, b"").unwrap();
    let w = writer(dir.path(), limits(50_000, 100_000_000));
    assert!(!active.exists());
    let (packets, notes) = slice_all(&w);
    assert_eq!((packets.len(), notes.len()), (written.len() - lost, 0));
}

#[test]
fn a_torn_tail_is_cut_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, written, len) = crashed_store(dir.path(), t0);
    let active = SegmentName::active(seq).path_in(dir.path());
    let whole = fs::read(&active).unwrap()[..len].to_vec();
    // Half a block written when the crash came.
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[whole.len() - 1_100..whole.len() - 400]);
    fs::write(&active, &torn).unwrap();
    let w = writer(dir.path(), limits(50_000, 100_000_000));
    let finished = SegmentName::finished(seq).path_in(dir.path());
    assert_eq!(fs::read(&finished).unwrap(), whole);
    assert!(w.recovery().quarantined.is_empty(), "{:?}", w.recovery());
    assert_eq!(w.recovery().repaired.len(), 1);
    let (packets, notes) = slice_all(&w);
    assert_eq!((packets, notes), (written, Vec::new()));
}

#[test]
fn a_damaged_finished_segment_is_found_at_start_and_its_readable_packets_served() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let mut w = writer(dir.path(), limits(50_000, 100_000_000));
    write(&mut w, 200, t0);
    w.finish(NONE).unwrap();
    let second = w.index().records()[1].clone();
    drop(w);
    // Cut it in the middle of a block, as a failing disk or a stray `truncate` would.
    let path = dir.path().join(&second.file);
    let cut = second.bytes / 2 + 3;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let w = writer(dir.path(), limits(50_000, 100_000_000));
    assert_eq!(
        w.recovery().rebuilt,
        vec![second.file.clone()],
        "{:?}",
        w.recovery()
    );
    let record = w
        .index()
        .records()
        .iter()
        .find(|r| r.seq == second.seq)
        .unwrap()
        .clone();
    assert_eq!(record.file, name::quarantined(&SegmentName::finished(second.seq)));
    assert!(record.packets > 0 && record.packets < second.packets);
    let (packets, notes) = slice_all(&w);
    let lost = second.packets - record.packets;
    assert_eq!(packets.len() as u64, 200 - lost, "every readable packet");
    assert!(packets.windows(2).all(|p| p[0] < p[1]), "in order");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains(&record.file), "{notes:?}");
}

#[test]
fn damage_met_while_serving_is_skipped_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let mut w = writer(dir.path(), limits(50_000, 100_000_000));
    write(&mut w, 200, t0);
    w.finish(NONE).unwrap();
    let records = w.index().records().to_vec();
    assert!(records.len() >= 3);
    // One segment cut short, another with a block's length damaged, behind the
    // running store's back.
    let first = dir.path().join(&records[0].file);
    fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(records[0].bytes - 500)
        .unwrap();
    let third = dir.path().join(&records[2].file);
    let mut bytes = fs::read(&third).unwrap();
    let epb = bytes.len() / 2;
    let at = (epb..bytes.len() - 4)
        .find(|&i| bytes[i..i + 4] == crate::pcapng::BLOCK_EPB.to_ne_bytes())
        .unwrap();
    bytes[at + 5] ^= 0x7f;
    fs::write(&third, &bytes).unwrap();

    let (packets, notes) = slice_all(&w);
    assert!(
        packets.len() < 200 && packets.len() > 150,
        "{} packets",
        packets.len()
    );
    assert!(packets.windows(2).all(|p| p[0] < p[1]), "in order");
    // The last packet of every segment after the damage is there.
    assert_eq!(packets.last(), Some(&(t0 + 199)));
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&records[0].file) && n.contains("shorter")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains(&records[2].file)), "{notes:?}");
}

#[test]
fn quarantined_files_count_in_the_size_and_are_retired() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, _, _) = crashed_store(dir.path(), t0);
    let active = SegmentName::active(seq).path_in(dir.path());
    let mut bytes = fs::read(&active).unwrap();
    bytes[0] ^= 1;
    fs::write(&active, &bytes).unwrap();
    let mut w = writer(dir.path(), limits(50_000, 300_000));
    let quarantined = dir.path().join(name::quarantined(&SegmentName::finished(seq)));
    assert!(quarantined.exists());
    write(&mut w, 2_000, t0 + 1_000);
    w.finish(NONE).unwrap();
    assert!(!quarantined.exists(), "retention retired it");
    assert!(w
        .index()
        .records()
        .iter()
        .all(|r| !r.file.starts_with(QUARANTINE_DIR)));
    assert!(w.index().total_bytes() <= 300_000);
}

/// A finished store of a few segments: its directory's files, the sequence numbers and
/// the packets' times.
fn finished_store(dir: &Path, t0: u64) -> (Vec<u64>, Vec<u64>) {
    let mut w = writer(dir, limits(50_000, 100_000_000));
    write(&mut w, 200, t0);
    w.finish(NONE).unwrap();
    let seqs = w.index().records().iter().map(|r| r.seq).collect();
    (seqs, (t0..t0 + 200).collect())
}

/// A copy of a finished segment under an `.active` name (older than the index's newest, or
/// the next number) is not the store's: it is set aside, named, and its packets are not
/// served twice; the store opens either way.
#[test]
fn a_stray_copy_under_an_active_name_is_set_aside_not_served_twice() {
    let t0 = crate::sys::realtime_ns();
    for copy_seq in [None, Some(2), Some(1)] {
        let dir = tempfile::tempdir().unwrap();
        let (seqs, times) = finished_store(dir.path(), t0);
        assert!(seqs.len() >= 3, "{seqs:?}");
        let newest = *seqs.last().unwrap();
        // None: the next number, as an operator's `cp` might name it.
        let copy_seq = copy_seq.unwrap_or(newest + 1);
        let stray = SegmentName::active(copy_seq).path_in(dir.path());
        fs::copy(SegmentName::finished(seqs[1]).path_in(dir.path()), &stray).unwrap();
        let w = writer(dir.path(), limits(50_000, 100_000_000));
        assert_eq!(
            w.recovery().ignored.len(),
            1,
            "copy as {copy_seq}: {:?}",
            w.recovery()
        );
        assert!(stray.exists(), "left alone");
        let (served, _) = slice_all(&w);
        assert_eq!(served, times, "copy as {copy_seq}: every packet once");
    }
}

/// A stray file numbered far above the index does not move the sequence: the store goes
/// on after its own newest segment.
#[test]
fn a_stray_numbered_near_the_end_does_not_use_up_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seqs, times) = finished_store(dir.path(), t0);
    let stray = SegmentName::finished(name::MAX_SEQ - 1).path_in(dir.path());
    fs::copy(SegmentName::finished(seqs[0]).path_in(dir.path()), &stray).unwrap();
    let mut w = writer(dir.path(), limits(50_000, 100_000_000));
    assert_eq!(w.recovery().ignored.len(), 1, "{:?}", w.recovery());
    write(&mut w, 200, t0 + 1_000);
    w.finish(NONE).unwrap();
    let newest = w.index().records().last().unwrap().seq;
    assert!(newest < 100, "the writer went on from its own segments: {newest}");
    let (served, _) = slice_all(&w);
    assert_eq!(served.len(), times.len() + 200);
    assert!(stray.exists());
}

/// A segment a crash left `.active` (the newest file) is still finished and served: the
/// stray rules do not touch it.
#[test]
fn the_newest_active_segment_is_no_stray() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, times, _) = crashed_store(dir.path(), t0);
    let w = writer(dir.path(), limits(50_000, 100_000_000));
    assert!(w.recovery().ignored.is_empty(), "{:?}", w.recovery());
    assert!(SegmentName::finished(seq).path_in(dir.path()).exists());
    assert_eq!(slice_all(&w).0, times);
}

/// A crash while a segment was being closed leaves two `.active` files: the one closing
/// and the next (`write/disk.rs`). Both are the store's: finished and served, none set
/// aside.
#[test]
fn a_segment_still_closing_and_the_next_are_both_finished() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, mut times, _) = crashed_store(dir.path(), t0);
    // The next segment's file, with packets of its own, as a second crashed store left it.
    let other = tempfile::tempdir().unwrap();
    let (other_seq, later, _) = crashed_store(other.path(), t0 + 1_000_000);
    fs::copy(
        SegmentName::active(other_seq).path_in(other.path()),
        SegmentName::active(seq + 1).path_in(dir.path()),
    )
    .unwrap();
    let w = writer(dir.path(), limits(50_000, 100_000_000));
    assert!(w.recovery().ignored.is_empty(), "{:?}", w.recovery());
    for seq in [seq, seq + 1] {
        assert!(SegmentName::finished(seq).path_in(dir.path()).exists(), "{seq}");
    }
    // The copied file holds the other store's newest packets.
    let copied = w.index().records().iter().find(|r| r.seq == seq + 1).unwrap();
    let copied = usize::try_from(copied.packets).unwrap();
    assert!(copied > 0);
    times.extend(&later[later.len() - copied..]);
    assert_eq!(slice_all(&w).0, times);
}

/// Only the one below the newest `.active` may be closing: an `.active` file further
/// down is still set aside.
#[test]
fn an_active_file_below_the_closing_one_is_a_stray() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::sys::realtime_ns();
    let (seq, _, _) = crashed_store(dir.path(), t0);
    let other = tempfile::tempdir().unwrap();
    let (other_seq, _, _) = crashed_store(other.path(), t0 + 1_000_000);
    let third = tempfile::tempdir().unwrap();
    let (third_seq, _, _) = crashed_store(third.path(), t0 + 2_000_000);
    fs::copy(
        SegmentName::active(other_seq).path_in(other.path()),
        SegmentName::active(seq + 1).path_in(dir.path()),
    )
    .unwrap();
    fs::copy(
        SegmentName::active(third_seq).path_in(third.path()),
        SegmentName::active(seq + 2).path_in(dir.path()),
    )
    .unwrap();
    let w = writer(dir.path(), limits(50_000, 100_000_000));
    let ignored = &w.recovery().ignored;
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(
        ignored[0].contains(&SegmentName::active(seq).file_name()),
        "{ignored:?}"
    );
}
