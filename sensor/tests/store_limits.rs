//! Privileged tests of the store under a running sensor: size and time limits, `kill -9`
//! at random moments, a disk filled by the store itself or by another process, and
//! compressed segments, with real traffic.
//!
//! Each test builds its own namespaces (guards delete them on every exit path) and uses
//! only `198.18.0.0/15` and `2001:db8::/32` addresses inside them.
mod common;

use std::time::Duration;

use common::{pcap, throttle::WriteThrottle, topology::*, *};
use podcap_sensor::sys::realtime_ns;

/// Bytes of every file in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

#[test]
fn store_stays_within_its_limits_and_its_index_matches() {
    let Some(_serial) = privileged() else { return };
    let t = topology("s");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (segment, max) = (256_000u64, 2_000_000u64);
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --segment-size 256KB --max-size 2MB --max-time 10s --segment-time 2s",
            data.display()
        ),
    );
    let mut iperf = Proc::spawn("iperf3 server", &t.n.exec("iperf3 -s -B 198.18.0.2 --forceflush"));
    iperf.wait_for("Server listening", Duration::from_secs(10));
    let watch_dir = data.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let watcher = std::thread::spawn(move || {
        let mut largest = 0;
        while !done2.load(std::sync::atomic::Ordering::Relaxed) {
            largest = largest.max(dir_bytes(&watch_dir));
            std::thread::sleep(Duration::from_millis(20));
        }
        largest
    });
    t.a.sh("iperf3 -c 198.18.0.2 -n 20M -b 80M");
    let traffic_end = realtime_ns();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let largest = watcher.join().unwrap();
    eprintln!("largest store during the transfer: {largest} bytes");
    assert!(
        largest <= max + segment + 64_000,
        "store reached {largest} bytes (max 2MB + one 256KB segment)"
    );

    // The newest packets are kept.
    std::thread::sleep(Duration::from_millis(2500)); // the last segment closes (--segment-time 2s)
    let files: Vec<_> = segments(&data)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pcapng"))
        .collect();
    let frames = pcap::read_segments(&files);
    let newest = frames.iter().map(|f| f.ts_ns).max().unwrap();
    assert!(
        newest + 1_000_000_000 > traffic_end,
        "newest kept packet is {} ms before the end of the traffic",
        traffic_end.saturating_sub(newest) / 1_000_000
    );
    // The index names exactly the finished files, with their packet counts and time ranges.
    let index = std::fs::read_to_string(data.join("index.tsv")).unwrap();
    let records: Vec<Vec<&str>> = index
        .lines()
        .filter(|l| l.starts_with("seg\t"))
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(records.len(), files.len(), "index:\n{index}\nfiles: {files:?}");
    for (record, file) in records.iter().zip(&files) {
        assert_eq!(record[2], file.file_name().unwrap().to_str().unwrap());
        let frames = pcap::read_segments(std::slice::from_ref(file));
        assert_eq!(record[5].parse::<usize>().unwrap(), frames.len(), "{}", record[2]);
        let (first, last) = (
            frames.iter().map(|f| f.ts_ns).min(),
            frames.iter().map(|f| f.ts_ns).max(),
        );
        if let (Some(first), Some(last)) = (first, last) {
            assert_eq!(
                (
                    record[3].parse::<u64>().unwrap(),
                    record[4].parse::<u64>().unwrap()
                ),
                (first, last)
            );
        }
        assert_tshark_clean(file);
    }

    // Older than the window: gone, with no new traffic to rotate for it.
    std::thread::sleep(Duration::from_secs(11));
    let frames = pcap::read_segments(&segments(&data));
    let horizon = realtime_ns() - 10_000_000_000;
    assert!(
        frames.iter().all(|f| f.ts_ns >= horizon),
        "{} packets older than --max-time remain",
        frames.iter().filter(|f| f.ts_ns < horizon).count()
    );
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
}

/// After a crash and a restart: the index names exactly the segment `files` of the store
/// in `data`, and tshark reads each without a word.
fn assert_whole_and_indexed(data: &std::path::Path, files: &[std::path::PathBuf]) {
    let index = std::fs::read_to_string(data.join("index.tsv")).unwrap();
    let named: Vec<&str> = index
        .lines()
        .filter(|l| l.starts_with("seg\t"))
        .filter_map(|l| l.split('\t').nth(2))
        .collect();
    let on_disk: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(named, on_disk, "the index names exactly the files");
    for f in files {
        assert_tshark_clean(f);
    }
}

#[test]
fn kill_9_at_random_moments_leaves_readable_segments_and_a_true_index() {
    let Some(_serial) = privileged() else { return };
    let t = topology("k");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = format!(
        "--iface n0 --data-dir {} --segment-size 64KB --max-size 50MB",
        data.display()
    );
    let _traffic = Proc::spawn("ping", &t.a.exec("ping -i 0.002 -s 600 198.18.0.2"));
    let mut seed = realtime_ns() | 1;
    let mut kills = Vec::new();
    for round in 0..20 {
        // Both channels, in turn: each run takes over what the killed one left.
        let af_xdp = round % 2 == 1;
        let channel = if af_xdp { " --channel af-xdp" } else { "" };
        let mut sensor = start_sensor(&t.n, &format!("{args}{channel}"));
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(100 + (seed >> 33) % 900));
        kills.push(realtime_ns());
        sensor.signal(9);
        let _ = sensor.child.wait();
        assert_eq!(
            capture_veth_present(&t.n),
            af_xdp,
            "round {round}: kill -9 leaves the AF_XDP channel's veth behind, and only that"
        );
    }
    let mut last = start_sensor(&t.n, &args);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(last.stop(), Some(0), "{}", last.log_text());
    assert!(!capture_veth_present(&t.n));

    let files = segments(&data);
    assert!(files.len() >= 20, "{files:?}");
    assert_whole_and_indexed(&data, &files);
    // What each kill cost: the gap in the recorded pings around it (the dead sensor's
    // unflushed half second and the next one's start).
    let mut stamps: Vec<u64> = pcap::read_segments(&files).iter().map(|f| f.ts_ns).collect();
    stamps.sort_unstable();
    let gaps: Vec<f64> = kills
        .iter()
        .filter_map(|&k| {
            let after = stamps.partition_point(|&t| t < k);
            let (before, next) = (stamps.get(after.checked_sub(1)?)?, stamps.get(after)?);
            Some(Duration::from_nanos(next - before).as_secs_f64())
        })
        .collect();
    assert_eq!(gaps.len(), kills.len(), "packets on both sides of every kill");
    let worst = gaps.iter().copied().fold(0.0, f64::max);
    let median = {
        let mut g = gaps.clone();
        g.sort_by(f64::total_cmp);
        g[g.len() / 2]
    };
    eprintln!("kill -9: gaps {gaps:.2?} s");
    report(
        "`kill -9` of the sensor under traffic (500 pings/s), at random moments",
        &format!("{} times", kills.len()),
        &format!("{median:.2} s of traffic per kill (median), {worst:.2} s at most: the unflushed tail and the restart"),
        "every file tshark-clean after restart; the index names exactly the files",
    );
}

/// `kill -9` while large writes are in flight: a disk slower than the traffic (writes
/// throttled to 16 MB/s, 40 MB/s of UDP) makes every write hold several MiB, which go as
/// two halves side by side into blocks allocated ahead. After each kill the next sensor
/// finishes what the killed one left: no segment is quarantined (an unfinished write is
/// cut, not taken for damage), every file is whole and the index names exactly the files.
#[test]
fn kill_9_while_large_writes_are_in_flight_leaves_whole_segments() {
    let Some(_serial) = privileged() else { return };
    let t = topology("h");
    let dir = tempfile::Builder::new().tempdir_in("/var/tmp").unwrap();
    let data = dir.path().join("data");
    let args = format!("--iface n0 --data-dir {} --max-size 2GB", data.display());
    let mut iperf = Proc::spawn("iperf3 server", &t.n.exec("iperf3 -s -B 198.18.0.2 --forceflush"));
    iperf.wait_for("Server listening", Duration::from_secs(10));
    let _traffic = Proc::spawn(
        "iperf3 client",
        &t.a.exec("iperf3 -c 198.18.0.2 -u -b 320M -l 1400 -t 60"),
    );
    let mut throttle = None;
    let mut seed = realtime_ns() | 1;
    let rounds = 5;
    for round in 0..rounds {
        let mut sensor = start_sensor(&t.n, &args);
        match &throttle {
            None => throttle = Some(WriteThrottle::new(sensor.child.id(), dir.path(), 16_000_000)),
            Some(throttle) => throttle.add(sensor.child.id()),
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(1_500 + (seed >> 33) % 2_000));
        sensor.signal(9);
        let _ = sensor.child.wait();
        assert!(
            segments(&data)
                .iter()
                .any(|p| p.to_string_lossy().ends_with(".active")),
            "round {round}: the kill left an active segment (the test's premise)"
        );
    }
    let mut last = start_sensor(&t.n, &args);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(last.stop(), Some(0), "{}", last.log_text());
    drop(throttle);

    let quarantine = data.join("quarantine");
    let quarantined: Vec<_> = std::fs::read_dir(&quarantine)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(quarantined.is_empty(), "nothing quarantined: {quarantined:?}");
    let files = segments(&data);
    assert!(files.len() >= rounds, "{files:?}");
    assert_whole_and_indexed(&data, &files);
    let packets = pcap::read_segments(&files).len();
    assert!(packets > 10_000, "{packets} packets recorded");
    report(
        "`kill -9` while large writes are in flight (writes throttled to 16 MB/s under 40 MB/s of UDP: each write several MiB, in two halves side by side)",
        &format!("{rounds} times at random moments"),
        "what the killed sensor had not written; nothing quarantined",
        &format!("every file tshark-clean after restart ({packets} packets); the index names exactly the files"),
    );
}

/// A small file system mounted for a test, unmounted on drop (its loop image lives in the
/// test's temporary directory).
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = try_sh(&format!("umount {}", self.0.display()));
    }
}

/// "N packets seen, M written; drops: kernel a, ring b, writer c" of the sensor's last line.
fn final_counts(log: &str) -> (u64, u64, u64) {
    let [seen, written, kernel, ring, disk] = last_words(log);
    (seen, written, kernel + ring + disk)
}

/// The counts of the sensor's last words: seen, written, and drops in the kernel, the
/// ring and the disk.
fn last_words(log: &str) -> [u64; 5] {
    let line = log
        .lines()
        .find(|l| l.contains("packets seen,"))
        .unwrap_or_else(|| panic!("no final counts in:\n{log}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    numbers[numbers.len() - 5..].try_into().unwrap()
}

/// A small ext4 file system at `path` on a loop image beside it: a disk as a node's store
/// has, written directly (`O_DIRECT`), which tmpfs is not. Unmounted on drop.
fn small_disk(path: &std::path::Path, size: &str) -> SmallDisk {
    std::fs::create_dir(path).unwrap();
    let image = path.with_extension("img");
    sh(&format!(
        "truncate -s {size} {image} && mkfs.ext4 -q -F -O ^has_journal -m 0 {image} && mount -o loop {image} {path}",
        image = image.display(),
        path = path.display()
    ));
    SmallDisk(path.to_owned())
}

#[test]
fn the_stores_own_traffic_fills_the_disk_and_min_free_retires_early_visibly() {
    let Some(_serial) = privileged() else { return };
    let t = topology("f");
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    let _disk = small_disk(&mount, "3M");
    // --max-size above the file system: --min-free is what makes room.
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --segment-size 256KB --max-size 100MB --min-free 512KB",
            mount.display()
        ),
    );
    let mut iperf = Proc::spawn("iperf3 server", &t.n.exec("iperf3 -s -B 198.18.0.2 --forceflush"));
    iperf.wait_for("Server listening", Duration::from_secs(10));
    t.a.sh("iperf3 -c 198.18.0.2 -n 12M -b 100M");
    std::thread::sleep(Duration::from_secs(3));
    let status = t.n.sh("curl -s http://127.0.0.1:9090/api/v1/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["disk"]["earlyRetiredSegments"].as_u64().unwrap() > 0,
        "early retirement is shown: {status}"
    );
    assert_eq!(status["disk"]["minFreeBytes"], 512_000, "{status}");
    let after = realtime_ns();
    t.a.sh("ping -c 20 -i 0.02 198.18.0.2");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        matches!(sensor.child.try_wait(), Ok(None)),
        "the sensor died on a full disk:\n{}",
        sensor.log_text()
    );
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let log = sensor.log_text();
    assert!(
        log.contains("early: the disk has less free than --min-free"),
        "{log}"
    );
    let (seen, written, dropped) = final_counts(&log);
    assert_eq!(seen, written + dropped, "every packet written or counted: {log}");

    let files = segments(&mount);
    for f in &files {
        assert_tshark_clean(f);
    }
    let frames = pcap::read_segments(&files);
    let late_pings = frames
        .iter()
        .filter(|f| f.ts_ns >= after && f.data.len() > 34 && f.data[23] == 1)
        .count();
    assert_eq!(
        late_pings, 40,
        "pings after the disk filled were not all recorded"
    );
    report(
        "the store's own traffic fills its 3 MB disk (`--min-free 512KB`)",
        "once, 12 MB of TCP at 100 Mbit/s",
        &format!(
            "{} oldest segments retired early, {dropped} packets dropped (counted)",
            status["disk"]["earlyRetiredSegments"]
        ),
        "status and metrics count the early retirements; recording goes on",
    );
}

#[test]
fn another_process_fills_the_disk_and_the_store_keeps_every_segment() {
    let Some(_serial) = privileged() else { return };
    let t = topology("h");
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    let _disk = small_disk(&mount, "4M");
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --segment-size 64KB --max-size 100MB --segment-time 1s",
            mount.display()
        ),
    );
    let readyz = || t.n.sh("curl -s http://127.0.0.1:9090/readyz");
    let status = || -> serde_json::Value {
        serde_json::from_str(&t.n.sh("curl -s http://127.0.0.1:9090/api/v1/status")).unwrap()
    };
    t.a.sh("ping -c 100 -i 0.01 -s 1000 198.18.0.2");
    // Finished segments: the store never changes them again.
    let finished = || -> Vec<std::path::PathBuf> {
        segments(&mount)
            .into_iter()
            .filter(|f| !f.to_string_lossy().ends_with(".active"))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || finished().len() >= 2),
        "{:?}",
        segments(&mount)
    );
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = finished()
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert!(before.len() >= 2, "{before:?}");
    assert!(readyz().starts_with("ready"), "{}", readyz());

    // Another tenant of the disk takes all of it. ext4 gives back blocks it had reserved
    // for the filler's delayed allocation once they are written back: fill again after
    // each writeback, until nothing is left.
    let filler = mount.join("filler");
    let fill_up = format!(
        "for i in 1 2 3 4 5; do dd if=/dev/zero of={} bs=4k oflag=append conv=notrunc 2>/dev/null; sync; done",
        filler.display()
    );
    let _ = try_sh(&fill_up);
    let traffic = Proc::spawn("ping", &t.a.exec("ping -i 0.01 -s 1000 198.18.0.2"));
    // The writer writes at least every second, and the first write the disk refuses makes
    // the sensor not ready (docs/reliability.md): within seconds, whatever the machine.
    let said_so = wait_until(Duration::from_secs(30), || {
        let _ = try_sh(&fill_up);
        let now = readyz();
        now.contains("not ready") && now.contains("the disk is full")
    });
    let not_ready = readyz();
    assert!(said_so, "{not_ready}");
    let full = status();
    assert_eq!(full["recording"], "disk-full", "{full}");
    assert_eq!(full["disk"]["earlyRetiredSegments"], 0, "{full}");
    for (path, bytes) in &before {
        assert!(
            std::fs::read(path).is_ok_and(|now| now == *bytes),
            "{} was deleted or changed to make room",
            path.display()
        );
    }

    // Room comes back: recording resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || readyz().starts_with("ready")),
        "{}",
        readyz()
    );
    assert_eq!(status()["recording"], "recording");
    drop(traffic);
    std::thread::sleep(Duration::from_millis(300));
    let after = realtime_ns();
    t.a.sh("ping -c 20 -i 0.02 198.18.0.2");
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let log = sensor.log_text();
    let (seen, written, dropped) = final_counts(&log);
    assert!(dropped > 0, "the full disk cost counted packets: {log}");
    assert_eq!(seen, written + dropped, "{log}");
    let files = segments(&mount);
    for f in &files {
        assert_tshark_clean(f);
    }
    let late_pings = pcap::read_segments(&files)
        .iter()
        .filter(|f| f.ts_ns >= after && f.data.len() > 34 && f.data[23] == 1)
        .count();
    assert_eq!(late_pings, 40, "recording resumed when room came back");
    report(
        "another process fills the store's disk (no `--min-free`)",
        "once",
        &format!("{dropped} new packets (counted as drops); no segment"),
        "`/readyz` not ready naming the full disk, status `disk-full`; recording resumes by itself",
    );
}

#[test]
fn compressed_segments_are_indexed_readable_and_sliceable() {
    let Some(_serial) = privileged() else { return };
    let t = topology("z");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --segment-size 256KB --compress gzip",
            data.display()
        ),
    );
    t.a.sh("ping -c 200 -i 0.005 -s 1000 198.18.0.2");
    udp_burst(&t.a, "198.18.0.2", "100,1400", 50);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());

    let files = segments(&data);
    assert!(files.len() >= 2, "{files:?}");
    assert!(
        files.iter().all(|f| f.to_string_lossy().ends_with(".pcapng.gz")),
        "{files:?}"
    );
    let index = podcap_sensor::store::index::Index::load(&data).unwrap().unwrap();
    let mut packets = 0;
    for (record, file) in index.records().iter().zip(&files) {
        assert_eq!(record.file, file.file_name().unwrap().to_string_lossy());
        assert_eq!(record.bytes, std::fs::metadata(file).unwrap().len());
        assert_tshark_clean(file);
        let counted = sh(&format!(
            "capinfos -c -M {} | awk -F: '/Number of packets/ {{print $2}}'",
            file.display()
        ));
        assert_eq!(
            counted.trim().parse::<u64>().unwrap(),
            record.packets,
            "{}",
            file.display()
        );
        packets += record.packets;
    }
    assert!(packets >= 500, "{packets} packets");
    let mut out = Vec::new();
    let stats = podcap_sensor::store::slice::write_slice(
        &data,
        &index,
        0,
        u64::MAX,
        &podcap_sensor::store::slice::Selection::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        stats.packets, packets,
        "a slice over compressed segments holds every packet"
    );
}

/// (kernel, ring, disk) drops of the sensor's last words.
fn drops_by_stage(log: &str) -> (u64, u64, u64) {
    let [_, _, kernel, ring, disk] = last_words(log);
    (kernel, ring, disk)
}

/// A disk slower than the traffic (the sensor's writes throttled to 1 MB/s, 20 MB/s of
/// UDP): the thread that drains the kernel never waits on the disk, so nothing is lost in
/// the kernel's ring buffer (2 MiB here); what the disk cannot take is dropped and counted
/// at the `disk` stage, and every segment stays readable.
#[test]
fn a_disk_slower_than_the_traffic_costs_packets_counted_at_the_disk_stage() {
    let (seen, disk) = throttled_disk("64MB", 1);
    report(
        "the disk slower than the traffic (writes throttled to 1 MB/s through the blkio cgroup, 20 MB/s of UDP, a 2 MiB ring buffer)",
        "once",
        &format!("{disk} of {seen} packets, counted at stage `disk`; 0 in the kernel"),
        "`podcap_dropped_packets_total{stage=\"disk\"}` and the log; segments readable",
    );
}

/// Rotation does not wait for the disk either: the closing segment's last write and sync
/// run on the disk thread while the next segment fills the buffer.
#[test]
fn segments_rotating_on_a_slow_disk_cost_no_packet_in_the_kernel() {
    let (seen, disk) = throttled_disk("2MB", 2);
    report(
        "segments rotating on a disk slower than the traffic (2 MB segments, writes throttled to 1 MB/s, 20 MB/s of UDP, a 2 MiB ring buffer)",
        "once",
        &format!("{disk} of {seen} packets, counted at stage `disk`; 0 in the kernel"),
        "the log's drops by stage; every segment readable",
    );
}

/// 6 s of 20 MB/s UDP (more than the writer's 64 MiB of buffers) into a sensor whose
/// writes the blkio cgroup holds to 1 MB/s: every
/// packet is written or dropped at stage `disk`, none in the kernel. Packets seen and
/// dropped at the disk; the store holds at least `min_segments` segments.
fn throttled_disk(segment_size: &str, min_segments: usize) -> (u64, u64) {
    let Some(_serial) = privileged() else {
        return (0, 0);
    };
    let t = topology("w");
    // A real disk: direct writes, as on a node.
    let dir = tempfile::Builder::new().tempdir_in("/var/tmp").unwrap();
    let data = dir.path().join("data");
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --ring-size 2MiB --segment-size {segment_size} --max-size 1GB",
            data.display()
        ),
    );
    let throttle = WriteThrottle::new(sensor.child.id(), dir.path(), 1_000_000);
    let mut iperf = Proc::spawn("iperf3 server", &t.n.exec("iperf3 -s -B 198.18.0.2 --forceflush"));
    iperf.wait_for("Server listening", Duration::from_secs(10));
    t.a.sh("iperf3 -c 198.18.0.2 -u -b 160M -l 1400 -t 6");
    drop(throttle);
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let log = sensor.log_text();
    let (seen, written, dropped) = final_counts(&log);
    let (kernel, ring, disk) = drops_by_stage(&log);
    assert_eq!(seen, written + dropped, "{log}");
    assert_eq!(
        (kernel, ring),
        (0, 0),
        "the kernel's ring buffer never filled: {log}"
    );
    assert!(disk > 0, "the disk's loss is counted at its stage: {log}");
    assert!(log.contains("at stage disk ("), "{log}");
    let files = segments(&data);
    assert!(files.len() >= min_segments, "{files:?}");
    for f in &files {
        assert_tshark_clean(f);
    }
    (seen, disk)
}

/// A smaller `--max-size` given through the API while the sensor records reaches the
/// writer (as a command, in order with the packets) and retires the oldest segments at
/// once, without a restart; the segments it keeps are whole.
#[test]
fn a_smaller_max_size_through_the_api_retires_while_recording() {
    let Some(_serial) = privileged() else { return };
    let t = topology("r");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --segment-size 64KB --max-size 50MB",
            data.display()
        ),
    );
    let traffic = Proc::spawn("ping", &t.a.exec("ping -i 0.002 -s 1200 198.18.0.2"));
    let finished_bytes = |data: &std::path::Path| -> u64 {
        segments(data)
            .iter()
            .filter(|f| !f.to_string_lossy().ends_with(".active"))
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(30), || finished_bytes(&data) > 1_000_000),
        "the store did not grow past 1 MB: {}",
        sensor.log_text()
    );
    let (ok, text) = try_sh(&t.n.exec(&format!(
        "{} config --max-size 256KB --yes --sensor http://127.0.0.1:9090",
        podcap_cli().display()
    )));
    assert!(ok && text.contains("256KB (api)"), "{text}");
    // Retention retires whole segments, oldest first, down to the limit (the active one
    // is not counted against it while it fills).
    assert!(
        wait_until(Duration::from_secs(5), || finished_bytes(&data) <= 256_000),
        "still {} bytes in {} segment files after the change",
        finished_bytes(&data),
        segments(&data).len()
    );
    drop(traffic);
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    for file in segments(&data) {
        assert_tshark_clean(&file);
    }
}
