//! The store-damage fuzzer: a real store (the sensor's own writer, two interfaces, a
//! segment left `.active` as a crash leaves it) is copied and damaged at random —
//! truncation, flipped bytes in headers and in bodies, zeroed runs, a garbage or missing
//! index, stray and foreign file names, missing files — and opened as a restarted sensor
//! opens it, many times over. Each round must hold:
//! - no panic, and the store opens;
//! - the slice of everything is a well-formed pcapng (our reader; tshark on a sample);
//! - every packet still readable in the damaged files is served, and nothing else
//!   (compared as multisets of (timestamp, bytes) with an independent salvage of the files);
//! - when damage cost packets, it is said: a note in the slice or the recovery report;
//! - opening the store again changes nothing (recovery is idempotent).
//!
//! Set `PODCAP_DAMAGE_ROUNDS` for a longer run (`cargo xtask test` runs the default).
mod common;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use podcap_sensor::{
    pcapng::{
        read::{parse_packet, section_comments, Blocks, Piece, SalvagedBlocks, Section},
        Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET,
    },
    store::{name::SegmentName, slice, Limits, SegmentWriter},
};

const DEFAULT_ROUNDS: u64 = 150;

fn limits() -> Limits {
    Limits {
        compress: false,
        segment_size: 12_000,
        segment_time: Duration::from_hours(1),
        max_size: 1 << 40,
        max_time: Duration::from_hours(24 * 365 * 100),
    }
}

fn open(dir: &Path) -> SegmentWriter {
    let ifaces = ["eth0", "eth1"]
        .map(|name| InterfaceDescription {
            name: name.into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        })
        .to_vec();
    SegmentWriter::open(dir, limits(), ifaces).unwrap_or_else(|e| panic!("the store did not open: {e}"))
}

/// A store of ~14 finished segments and one `.active` one, 600 packets in all.
fn base_store(dir: &Path) -> usize {
    let mut w = open(dir);
    let t0 = podcap_sensor::sys::realtime_ns() - 60_000_000_000;
    for i in 0..600u64 {
        let len = 40 + (i * 37 % 300) as usize;
        let mut data = vec![(i % 251) as u8; len];
        data[..8].copy_from_slice(&i.to_be_bytes());
        let direction = if i % 2 == 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        w.write_packet(
            (i % 2) as u32,
            t0 + i * 1_000,
            len as u32,
            &data,
            direction,
            |_| InterfaceStatistics::default(),
        )
        .unwrap();
        // Each packet on disk before the next: rotation, which waits for a write in
        // flight rather than the capture, then falls on every 12 kB.
        w.flush_now();
    }
    // Leave the last segment `.active`, as a kill -9 would: flushed, never closed.
    w.tick(|_| InterfaceStatistics::default()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    w.tick(|_| InterfaceStatistics::default()).unwrap();
    drop(w);
    600
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The store's segment files (plain, active, in quarantine) under `dir`.
fn store_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for folder in [dir.to_owned(), dir.join("quarantine")] {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(SegmentName::parse)
                .is_some()
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// (timestamp, bytes) → how many times: what a damaged file still holds, read
/// independently of the store (block by block, past damage, as a reader would salvage it).
type Packets = BTreeMap<(u64, Vec<u8>), usize>;

fn salvage<'a>(files: impl IntoIterator<Item = &'a Vec<u8>>) -> Packets {
    let mut packets = Packets::new();
    for bytes in files {
        let mut section = Section::default();
        for piece in SalvagedBlocks::new(bytes) {
            let Piece::Block(block) = piece else { continue };
            if section.observe(&block).is_err() {
                continue;
            }
            if let Ok(Some(p)) = parse_packet(&block, &section) {
                *packets.entry((p.timestamp_ns, p.data.to_vec())).or_default() += 1;
            }
        }
    }
    packets
}

/// (packets served, notes) of a slice of everything.
fn serve(dir: &Path, w: &SegmentWriter) -> (Packets, Vec<String>, Vec<u8>) {
    let mut out = Vec::new();
    slice::write_slice(
        dir,
        w.index(),
        0,
        u64::MAX,
        &podcap_sensor::store::slice::Selection::default(),
        &mut out,
    )
    .unwrap();
    let mut packets = Packets::new();
    let mut notes = Vec::new();
    let mut section = Section::default();
    for block in Blocks::new(&out) {
        let block = block.unwrap_or_else(|e| panic!("the slice is not well-formed: {e}"));
        section.observe(&block).unwrap();
        notes.extend(section_comments(&block));
        if let Some(p) = parse_packet(&block, &section).unwrap() {
            *packets.entry((p.timestamp_ns, p.data.to_vec())).or_default() += 1;
        }
    }
    (packets, notes, out)
}

/// Applies one random damage to the store in `dir`; says what it did.
fn damage(dir: &Path, seed: &mut u64) -> String {
    let files = store_files(dir);
    let pick = |seed: &mut u64| files[(rng(seed) % files.len() as u64) as usize].clone();
    match rng(seed) % 9 {
        0 => {
            let file = pick(seed);
            let len = fs::metadata(&file).unwrap().len();
            let at = rng(seed) % len.max(1);
            fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(at)
                .unwrap();
            format!("truncated {} at {at}", file.display())
        }
        1 | 2 => {
            let file = pick(seed);
            let mut bytes = fs::read(&file).unwrap();
            if bytes.is_empty() {
                return "nothing".into();
            }
            // Headers (the first blocks) as often as bodies.
            let span = if rng(seed).is_multiple_of(2) {
                bytes.len().min(200)
            } else {
                bytes.len()
            };
            let flips = 1 + rng(seed) % 4;
            for _ in 0..flips {
                let at = (rng(seed) % span as u64) as usize;
                bytes[at] ^= 1 << (rng(seed) % 8);
            }
            fs::write(&file, &bytes).unwrap();
            format!("flipped {flips} bits in {}", file.display())
        }
        3 => {
            let file = pick(seed);
            let mut bytes = fs::read(&file).unwrap();
            let at = (rng(seed) % bytes.len().max(1) as u64) as usize;
            let end = (at + 1 + (rng(seed) % 400) as usize).min(bytes.len());
            bytes[at..end].fill(0);
            fs::write(&file, &bytes).unwrap();
            format!("zeroed {at}..{end} of {}", file.display())
        }
        4 => {
            let index = dir.join("index.tsv");
            match rng(seed) % 3 {
                0 => {
                    let _ = fs::remove_file(&index);
                }
                1 => fs::write(
                    &index,
                    b"podcap-index\t1\nseg\t1\t../../etc/passwd\t0\t0\t0\t0\t0\t\t\t0\t\n",
                )
                .unwrap(),
                _ => {
                    if let Ok(mut text) = fs::read(&index) {
                        let at = (rng(seed) % text.len().max(1) as u64) as usize;
                        text.truncate(at);
                        fs::write(&index, text).unwrap();
                    }
                }
            }
            "damaged the index".into()
        }
        5 => {
            let file = pick(seed);
            fs::remove_file(&file).unwrap();
            format!("removed {}", file.display())
        }
        6 => {
            // Strays: names outside the store's range, and foreign files.
            for name in [
                "podcap-18446744073709551615.pcapng",
                "podcap-42.pcapng",
                "podcap-0000000000.pcapng",
                "notes.txt",
            ] {
                fs::write(dir.join(name), b"stray").unwrap();
            }
            "stray names".into()
        }
        7 => {
            // Another segment's bytes under a fresh, valid name: a copy, set aside while
            // the original's first packet is still there (served once), served otherwise.
            let file = pick(seed);
            let copy = dir.join(format!("podcap-{:010}.pcapng", 5_000 + rng(seed) % 1_000));
            fs::copy(&file, &copy).unwrap();
            format!("copied {} to {}", file.display(), copy.display())
        }
        _ => {
            let file = pick(seed);
            fs::write(&file, b"").unwrap();
            format!("emptied {}", file.display())
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Files the store set aside as not its own (copies, an `.active` file older than the
/// newest segment): named in its report, left as they were before it opened, not served.
fn set_aside(w: &SegmentWriter, before: &[(PathBuf, Vec<u8>)], context: &str) -> Vec<PathBuf> {
    let aside: Vec<PathBuf> = w
        .recovery()
        .ignored
        .iter()
        .map(|entry| PathBuf::from(entry.split_once(": ").map_or(entry.as_str(), |(path, _)| path)))
        .collect();
    for path in &aside {
        if let Some((_, bytes)) = before.iter().find(|(f, _)| f == path) {
            assert_eq!(
                &fs::read(path).unwrap(),
                bytes,
                "{context}: {} changed",
                path.display()
            );
        }
    }
    aside
}

#[test]
fn a_damaged_store_never_crashes_hides_or_invents_a_packet() {
    let rounds = std::env::var("PODCAP_DAMAGE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let base = tempfile::tempdir().unwrap();
    let written = base_store(base.path());
    let mut seed = 0x2545_f491_4f6c_dd1d ^ podcap_sensor::sys::realtime_ns();
    let first_seed = seed;
    let (mut lost_rounds, mut noted_rounds) = (0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let mut what = Vec::new();
        for _ in 0..=(rng(&mut seed) % 3) {
            what.push(damage(dir.path(), &mut seed));
        }
        let context = format!("round {round} (first seed {first_seed:#x}): {what:?}");
        let before: Vec<(PathBuf, Vec<u8>)> = store_files(dir.path())
            .into_iter()
            .map(|f| (f.clone(), fs::read(&f).unwrap()))
            .collect();
        let w = open(dir.path());
        let aside = set_aside(&w, &before, &context);
        let expected = salvage(
            before
                .iter()
                .filter(|(f, _)| !aside.contains(f))
                .map(|(_, bytes)| bytes),
        );
        let (served, notes, out) = serve(dir.path(), &w);
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, n)| served.get(*k) != Some(n))
            .map(|(k, n)| (k.0, *n, served.get(k).copied().unwrap_or(0)))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "{context}: packets not served as found: {missing:?}\n{notes:?}"
        );
        assert_eq!(
            served.len(),
            expected.len(),
            "{context}: packets served that the files do not hold"
        );
        if what.iter().all(|w| w.starts_with("copied")) {
            // Copies of intact segments: every packet once, whatever the copies.
            assert!(
                served.values().all(|&n| n == 1),
                "{context}: a copy's packets were served twice"
            );
        }
        let kept: usize = served.values().sum();
        if kept < written {
            lost_rounds += 1;
            if !notes.is_empty() || !w.recovery().is_empty() {
                noted_rounds += 1;
            }
            let removed = what
                .iter()
                .any(|w| w.starts_with("removed") || w.starts_with("emptied"));
            assert!(
                removed || !notes.is_empty() || !w.recovery().is_empty(),
                "{context}: {} packets lost and nothing said",
                written - kept
            );
        }
        if round % 25 == 0 {
            let file = dir.path().join("slice.pcapng");
            fs::write(&file, &out).unwrap();
            if let Ok(o) = std::process::Command::new("tshark").arg("-r").arg(&file).output() {
                let err = String::from_utf8_lossy(&o.stderr);
                let complaints = err.lines().filter(|l| !l.contains("Running as user")).count();
                assert!(o.status.success() && complaints == 0, "{context}: tshark: {err}");
            }
        }
        drop(w);
        // Recovery is idempotent: a second start finds a consistent store.
        let again = open(dir.path());
        let (served_again, _, _) = serve(dir.path(), &again);
        assert_eq!(
            served_again, served,
            "{context}: a second start serves something else"
        );
        assert!(
            again.recovery().quarantined.is_empty(),
            "{context}: {:?}",
            again.recovery()
        );
    }
    eprintln!(
        "store damage: {rounds} rounds, {lost_rounds} lost packets, {noted_rounds} of those said so in the slice or the recovery report"
    );
    common::report(
        "random damage to a copy of a real store (truncation, flipped bits, zeroed runs, a bad or missing index, strays, copies, missing files), restarted twice",
        &format!("{rounds} rounds"),
        &format!("only the damaged blocks' packets ({lost_rounds} rounds lost some); no crash, nothing invented"),
        &format!("{noted_rounds} of {lost_rounds} named the damage in the slice or the recovery report (the others: a file removed or emptied)"),
    );
}
