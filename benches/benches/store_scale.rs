//! The store at scale, measured side by side in one run with real files (issue #7, goals 3
//! and 4); not criterion: each figure is one long operation, repeated and alternated, and
//! the medians are printed with the ratio they stand for.
//!
//! - Writer: the sensor's `SegmentWriter` writes `PODCAP_BENCH_WRITE_GIB` (2) GiB of
//!   1514-byte frames (50 MB segments, as the sensor's default), against buffered
//!   `dd` writing as many bytes with the writer's block size (1 MiB) into files of the
//!   segment size, each fsynced at its end like a finished segment. Compared per core: CPU
//!   seconds of the writing process against dd's; wall time is printed too. The writer
//!   runs twice: into an empty store (every segment a new file) and into a store held at
//!   4 segments (`--max-size` 200 MB: retention recycles files, a sensor's steady state).
//!   The writer writes with `O_DIRECT` (its default) where the file system takes it, so
//!   `dd oflag=direct` into new files of the same size is the disk's limit beside it
//!   (issue #19: writer CPU per GB within 1.5x of it, rate at least 0.9x); where the writer
//!   writes through the page cache (tmpfs, or a file system that refuses `O_DIRECT`), that
//!   row is left out.
//! - Snapshot: a store grows to `PODCAP_BENCH_STORE_GIB` (10) GiB; the same 5-minute slice
//!   is cut when the store holds 1 GiB and again at full size, and compared with `cat` of
//!   the slice's own bytes (both from the page cache, both to /dev/null).
//!
//! Files go to a temporary directory under `TMPDIR` and are removed at the end.
#![expect(clippy::cast_precision_loss, reason = "printed figures")]
use std::{
    fs::File,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use podcap_sensor::{
    pcapng::{Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET},
    store::{slice::write_slice, Limits, SegmentWriter},
};

const GIB: u64 = 1 << 30;
const FRAME: usize = 1514;
/// The sensor's default `--segment-size`.
const SEGMENT_BYTES: u64 = 50_000_000;
/// Bytes of one EPB of a `FRAME`-byte packet with its direction option.
const EPB_BYTES: u64 = 32 + 1516 + 12;

fn env_gib(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time (user + system) of this process (every thread), or of the finished children.
fn cpu_seconds(who: i32) -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; `who` is RUSAGE_SELF or
    // RUSAGE_CHILDREN, both valid.
    let usage = unsafe {
        libc::getrusage(who, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn limits() -> Limits {
    limits_of(u64::MAX)
}

fn limits_of(max_size: u64) -> Limits {
    Limits {
        compress: false,
        segment_size: SEGMENT_BYTES,
        segment_time: Duration::from_hours(24),
        max_size,
        max_time: Duration::from_hours(24 * 365),
    }
}

fn interface() -> InterfaceDescription {
    InterfaceDescription {
        name: "pod0".into(),
        description: String::new(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65535,
    }
}

/// A start time for `gib` GiB of packets at 10 minutes per GiB that ends before now, so
/// that retention (by age) keeps them.
fn start_ns(gib: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    now - (gib + 6) * 600_000_000_000
}

/// Writes packets `first..first + packets` with timestamps `base + i * step`.
fn write_packets(
    writer: &mut SegmentWriter,
    frame: &[u8],
    base: u64,
    (first, packets): (u64, u64),
    step: u64,
) {
    for i in first..first + packets {
        writer
            .write_packet(
                0,
                base + i * step,
                FRAME as u32,
                frame,
                Direction::Inbound,
                |_| InterfaceStatistics::default(),
            )
            .expect("the store writes");
    }
}

/// One writer run: (wall seconds, CPU seconds of this thread).
fn writer_run(dir: &Path, bytes: u64, frame: &[u8], max_size: u64) -> (f64, f64) {
    let packets = bytes / EPB_BYTES;
    let cpu = cpu_seconds(libc::RUSAGE_SELF);
    let started = Instant::now();
    let mut writer = SegmentWriter::open(dir, limits_of(max_size), vec![interface()]).expect("store opens");
    write_packets(&mut writer, frame, start_ns(1), (0, packets), 1_000);
    writer
        .finish(|_| InterfaceStatistics::default())
        .expect("store closes");
    let wall = started.elapsed().as_secs_f64();
    (wall, cpu_seconds(libc::RUSAGE_SELF) - cpu)
}

/// One dd run of the same bytes, cut into files of the segment size each synced at its
/// end as the writer does (without that, dirty pages pile up and this kernel's write path
/// slows down with them), with dd's extra `flags`: (wall seconds, CPU seconds of dd).
fn dd_run(dir: &Path, bytes: u64, flags: &str) -> (f64, f64) {
    let per_file = SEGMENT_BYTES >> 20;
    let files = (bytes >> 20).div_ceil(per_file);
    let script = format!(
        "for i in $(seq {files}); do dd if=/dev/zero of={}/dd.$i bs=1M count={per_file} conv=fsync {flags} status=none || exit 1; done",
        dir.display()
    );
    let cpu = cpu_seconds(libc::RUSAGE_CHILDREN);
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("dd runs");
    assert!(status.success(), "dd failed");
    (
        started.elapsed().as_secs_f64(),
        cpu_seconds(libc::RUSAGE_CHILDREN) - cpu,
    )
}

/// The same bytes written by this process as plain 1 MiB `write`s into segment-sized
/// files, each fsynced: dd's work without dd (same allocator, same buffer handling as the
/// writer), so the difference is the writer's own (encoding, index, rotation).
fn plain_run(dir: &Path, bytes: u64) -> (f64, f64) {
    use std::io::Write;
    let block = vec![0x5au8; 1 << 20];
    let per_file = SEGMENT_BYTES >> 20;
    let cpu = cpu_seconds(libc::RUSAGE_SELF);
    let started = Instant::now();
    let mut left = bytes >> 20;
    let mut n = 0;
    while left > 0 {
        let mut file = File::create(dir.join(format!("plain.{n}"))).expect("file");
        for _ in 0..per_file.min(left) {
            file.write_all(&block).expect("write");
        }
        file.sync_all().expect("fsync");
        left -= per_file.min(left);
        n += 1;
    }
    (
        started.elapsed().as_secs_f64(),
        cpu_seconds(libc::RUSAGE_SELF) - cpu,
    )
}

fn writer_vs_dd(root: &Path) {
    let gib = env_gib("PODCAP_BENCH_WRITE_GIB", 2);
    let bytes = gib * GIB;
    let frame = vec![0x5au8; FRAME];
    let (mut writer_wall, mut writer_cpu, mut dd_wall, mut dd_cpu) = (vec![], vec![], vec![], vec![]);
    let (mut plain_wall, mut plain_cpu) = (vec![], vec![]);
    let (mut full_wall, mut full_cpu) = (vec![], vec![]);
    let (mut direct_wall, mut direct_cpu) = (vec![], vec![]);
    let direct = takes_direct_writes(root);
    for round in 0..3 {
        let mut order = ["writer", "dd", "plain", "writer-full", "dd-direct"];
        let tools = order.len();
        order.rotate_left(round % tools);
        for tool in order {
            if tool == "dd-direct" && !direct {
                continue;
            }
            let dir = tempfile::tempdir_in(root).expect("temporary directory");
            let (wall, cpu) = match tool {
                "writer" => writer_run(dir.path(), bytes, &frame, u64::MAX),
                "writer-full" => writer_run(dir.path(), bytes, &frame, 4 * SEGMENT_BYTES),
                "dd" => dd_run(dir.path(), bytes, ""),
                "dd-direct" => dd_run(dir.path(), bytes, "oflag=direct"),
                _ => plain_run(dir.path(), bytes),
            };
            let (walls, cpus) = match tool {
                "writer" => (&mut writer_wall, &mut writer_cpu),
                "writer-full" => (&mut full_wall, &mut full_cpu),
                "dd" => (&mut dd_wall, &mut dd_cpu),
                "dd-direct" => (&mut direct_wall, &mut direct_cpu),
                _ => (&mut plain_wall, &mut plain_cpu),
            };
            walls.push(wall);
            cpus.push(cpu);
            // Deleting the files drops their dirty pages: no writeback piles up.
            drop(dir);
        }
    }
    let gb = bytes as f64 / GIB as f64;
    let (ww, wc, dw, dc) = (
        median(writer_wall),
        median(writer_cpu),
        median(dd_wall),
        median(dd_cpu),
    );
    let (pw, pc) = (median(plain_wall), median(plain_cpu));
    let (fw, fc) = (median(full_wall), median(full_cpu));
    println!(
        "store_scale/writer: into a store held at 4 segments (files recycled): {:.2} GiB/s per CPU second ({fc:.2} s CPU, {fw:.2} s wall): {:.2}x less CPU than into an empty store, {:.2}x dd per core",
        gb / fc,
        wc / fc,
        dc / fc
    );
    println!(
        "store_scale/writer: plain 1 MiB writes of the same bytes from this process: {:.2} GiB/s per CPU second ({pc:.2} s CPU, {pw:.2} s wall): writer/plain {:.2} per core, {:.2} wall",
        gb / pc,
        pc / wc,
        pw / ww
    );
    println!(
        "store_scale/writer: {gb:.0} GiB of {FRAME}-byte frames: writer {:.2} GiB/s per CPU second ({wc:.2} s CPU, {ww:.2} s wall), dd bs=1M {:.2} GiB/s per CPU second ({dc:.2} s CPU, {dw:.2} s wall): ratio {:.2} per core (goal >= 0.80), {:.2} wall",
        gb / wc,
        gb / dc,
        dc / wc,
        dw / ww
    );
    if direct {
        let (xw, xc) = (median(direct_wall), median(direct_cpu));
        for (what, wall, cpu) in [
            ("into an empty store", ww, wc),
            ("into a store held at 4 segments", fw, fc),
        ] {
            println!(
                "store_scale/writer: beside dd bs=1M oflag=direct ({xc:.2} s CPU, {xw:.2} s wall), the writer {what}: CPU {:.2}x (goal <= 1.5x), rate {:.2}x (goal >= 0.9x)",
                cpu / xc,
                xw / wall
            );
        }
    }
}

/// Whether the writer writes directly into `dir` (the sensor's own rule: not on tmpfs,
/// nor where the file system refuses `O_DIRECT`).
fn takes_direct_writes(dir: &Path) -> bool {
    let probe = dir.join(format!("podcap-direct-probe.{}", std::process::id()));
    let taken = File::create(&probe).is_ok_and(|file| podcap_sensor::sys::enable_direct_io(&file).is_ok());
    let _ = std::fs::remove_file(&probe);
    taken
}

/// Cuts `[from, to)` to /dev/null: seconds taken.
fn slice_run(dir: &Path, writer: &SegmentWriter, from: u64, to: u64) -> (f64, u64) {
    let mut null = File::create("/dev/null").expect("/dev/null");
    let started = Instant::now();
    let stats = write_slice(
        dir,
        writer.index(),
        from,
        to,
        &podcap_sensor::store::slice::Selection::default(),
        &mut null,
    )
    .expect("slice");
    (started.elapsed().as_secs_f64(), stats.packets)
}

fn cat_run(file: &Path) -> f64 {
    let started = Instant::now();
    let status = Command::new("cat")
        .arg(file)
        .stdout(File::create("/dev/null").expect("/dev/null"))
        .status()
        .expect("cat runs");
    assert!(status.success());
    started.elapsed().as_secs_f64()
}

fn snapshot_vs_cat(root: &Path) {
    let store_gib = env_gib("PODCAP_BENCH_STORE_GIB", 10).max(2);
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let frame = vec![0xa5u8; FRAME];
    // The store spans 10 minutes per GiB; the slice is minutes 2 to 7.
    let per_gib = GIB / EPB_BYTES;
    let step = 600_000_000_000 / per_gib;
    let base = start_ns(store_gib);
    let (from, to) = (base + 120_000_000_000, base + 420_000_000_000);
    let expected = (to - base).div_ceil(step) - (from - base).div_ceil(step);
    let mut writer = SegmentWriter::open(dir.path(), limits(), vec![interface()]).expect("store opens");
    let mut written = 0;
    let mut figures = Vec::new();
    for size in [1, store_gib] {
        write_packets(
            &mut writer,
            &frame,
            base,
            (written, size * per_gib - written),
            step,
        );
        written = size * per_gib;
        writer
            .close_segment(|_| InterfaceStatistics::default())
            .expect("segment closes");
        // The slice's own bytes, for cat.
        let copy = dir.path().join("slice.pcapng");
        let mut out = File::create(&copy).expect("slice file");
        let stats = write_slice(
            dir.path(),
            writer.index(),
            from,
            to,
            &podcap_sensor::store::slice::Selection::default(),
            &mut out,
        )
        .expect("slice");
        assert_eq!(
            stats.packets, expected,
            "the slice holds every packet of its 5 minutes"
        );
        let slice_bytes = stats.bytes_written;
        let (mut slices, mut cats) = (vec![], vec![]);
        for round in 0..5 {
            if round % 2 == 0 {
                slices.push(slice_run(dir.path(), &writer, from, to).0);
                cats.push(cat_run(&copy));
            } else {
                cats.push(cat_run(&copy));
                slices.push(slice_run(dir.path(), &writer, from, to).0);
            }
        }
        std::fs::remove_file(&copy).expect("remove the slice file");
        figures.push((size, slice_bytes, median(slices), median(cats)));
    }
    for (size, bytes, slice, cat) in &figures {
        println!(
            "store_scale/snapshot: 5-minute slice ({:.0} MiB) from a {size} GiB store: {:.0} ms, cat of the same bytes {:.0} ms: ratio {:.2} (goal <= 1.3)",
            *bytes as f64 / f64::from(1 << 20),
            slice * 1e3,
            cat * 1e3,
            slice / cat
        );
    }
    if let [(_, _, small, _), (big_size, _, big, _)] = figures[..] {
        println!(
            "store_scale/snapshot: the same slice from {big_size} GiB vs 1 GiB: {:.2}x the time",
            big / small
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that names neither part skips it.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let root = std::env::temp_dir();
    if wanted("store_scale/writer") {
        writer_vs_dd(&root);
    }
    if wanted("store_scale/snapshot") {
        snapshot_vs_cat(&root);
    }
}
