//! Privileged tests of what a clumsy operator does to a running store: a second sensor on
//! the same data directory (in another network namespace and in the same one), a restart
//! right after `kill -9`, stray files at the names the writer computes next, copies and
//! far-numbered strays found at start. In each, recording goes on (or the newcomer is
//! refused by name) and `/readyz` tells the truth.
//!
//! Each test builds its own namespaces (guards delete them on every exit path) and uses
//! only `198.18.0.0/15` and `2001:db8::/32` addresses inside them.
mod common;

use std::{path::Path, time::Duration};

use common::{topology::*, *};

/// Echo requests to 198.18.0.2 in the segments of `dir` (finished ones and the active one).
fn echo_requests(files: &[std::path::PathBuf]) -> usize {
    pcap::read_segments(files)
        .iter()
        .filter(|f| f.data.len() > 34 && f.data[23] == 1 && f.data[34] == 8)
        .count()
}

/// Runs a second sensor to its end (at most 30 s): (exited non-zero, its output).
fn second_sensor(ns: &Netns, args: &str) -> (bool, String) {
    let (ok, out) = try_sh(&ns.exec(&format!("timeout -s KILL 30 {} {args} 2>&1", sensor_bin())));
    (!ok, out)
}

fn readyz(ns: &Netns) -> String {
    ns.sh("curl -s http://127.0.0.1:9090/readyz")
}

#[test]
fn a_second_sensor_on_the_same_data_directory_is_refused_in_any_network_namespace() {
    let Some(_serial) = privileged() else { return };
    let t = topology("d");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = start_sensor(
        &t.n,
        &format!("--iface n0 --data-dir {} --segment-time 1s", data.display()),
    );
    let pid = first.child.id().to_string();
    let traffic = Proc::spawn("ping", &t.a.exec("ping -i 0.02 198.18.0.2"));
    assert!(wait_until(Duration::from_secs(20), || segments(&data).len() >= 2));

    // Another network namespace, the same directory: refused before it reads the store.
    let (refused, out) = second_sensor(
        &t.b,
        &format!("--iface b0 --data-dir {} --listen 127.0.0.1:9091", data.display()),
    );
    assert!(refused, "{out}");
    assert!(
        out.contains(&format!("pid {pid}"))
            && out.contains("podcap.lock")
            && out.contains("one sensor per data directory"),
        "{out}"
    );
    // The same namespace and directory: the same answer (the lock comes first).
    let (refused, out) = second_sensor(
        &t.n,
        &format!("--iface n1 --data-dir {} --listen 127.0.0.1:9091", data.display()),
    );
    assert!(refused && out.contains("podcap.lock"), "{out}");
    // The same namespace, other directories, three in a row: each refused at once naming
    // the first (none waits on the first one's claim).
    for i in 0..3 {
        let other = dir.path().join(format!("other-{i}"));
        let (refused, out) = second_sensor(
            &t.n,
            &format!(
                "--iface n1 --data-dir {} --listen 127.0.0.1:9091",
                other.display()
            ),
        );
        assert!(
            refused && out.contains(&format!("pid {pid}")) && out.contains("network namespace"),
            "{out}"
        );
    }

    assert!(readyz(&t.n).starts_with("ready"), "{}", readyz(&t.n));
    drop(traffic);
    let after = podcap_sensor::sys::realtime_ns();
    t.a.sh("ping -c 50 -i 0.01 198.18.0.2");
    assert_eq!(first.stop(), Some(0), "{}", first.log_text());
    let log = first.log_text();
    assert!(!log.contains("cannot write segment"), "{log}");
    assert!(!data.join("quarantine").exists(), "nothing was quarantined");
    let late = pcap::read_segments(&segments(&data))
        .iter()
        .filter(|f| f.ts_ns >= after && f.data.len() > 34 && f.data[23] == 1 && f.data[34] == 8)
        .count();
    assert_eq!(late, 50, "the first sensor recorded on");
    report(
        "a second sensor on the same data directory (another network namespace, the same one) and three more in the first one's namespace",
        "5 sensors",
        "nothing",
        "each refused at once, naming the first sensor's pid and the lock (or the namespace); the first stays ready and records on",
    );
}

#[test]
fn a_restart_right_after_kill_9_takes_the_directory() {
    let Some(_serial) = privileged() else { return };
    let t = topology("k");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = format!("--iface n0 --data-dir {}", data.display());
    let traffic = Proc::spawn("ping", &t.a.exec("ping -i 0.01 198.18.0.2"));
    for round in 0..3 {
        let sensor = start_sensor(&t.n, &args);
        std::thread::sleep(Duration::from_millis(300 + 200 * round));
        sensor.signal(9);
        // No wait for the process to be reaped: the next start comes at once.
    }
    let mut sensor = start_sensor(&t.n, &args);
    assert!(
        wait_until(Duration::from_secs(10), || readyz(&t.n).starts_with("ready")),
        "{}",
        readyz(&t.n)
    );
    drop(traffic);
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    for f in segments(&data) {
        assert_tshark_clean(&f);
    }
    report(
        "a restart right after `kill -9` (not waiting for the old process)",
        "3 times",
        "what the killed sensor had not flushed",
        "the new sensor waits for the dying one's lock and claim, then records",
    );
}

/// The sequence number of the newest segment file in `dir`.
fn newest_seq(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .filter_map(|f| {
            let name = f.file_name()?.to_str()?;
            podcap_sensor::store::name::SegmentName::parse(name).map(|n| n.seq)
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn stray_files_at_the_next_names_and_at_start_never_stop_recording() {
    let Some(_serial) = privileged() else { return };
    let t = topology("y");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outside = dir.path().join("outside");
    let args = format!("--iface n0 --data-dir {} --segment-time 1s", data.display());
    let mut sensor = start_sensor(&t.n, &args);
    t.a.sh("ping -c 20 -i 0.01 198.18.0.2");
    // Idle: the segment closes after its second and no new one opens until a packet.
    assert!(wait_until(Duration::from_secs(20), || {
        segments(&data)
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".active"))
            && !segments(&data).is_empty()
    }));
    let next = newest_seq(&data) + 1;
    let name = |seq: u64, suffix: &str| data.join(format!("podcap-{seq:010}.pcapng{suffix}"));
    std::fs::create_dir(name(next, ".active")).unwrap();
    std::os::unix::fs::symlink(&outside, name(next + 1, ".active")).unwrap();
    std::fs::write(name(next + 2, ""), b"an operator's notes").unwrap();
    let sent = 200;
    t.a.sh(&format!("ping -c {sent} -i 0.01 198.18.0.2"));
    assert!(readyz(&t.n).starts_with("ready"), "{}", readyz(&t.n));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    assert!(!outside.exists(), "nothing was written through the link");
    assert_eq!(std::fs::read(name(next + 2, "")).unwrap(), b"an operator's notes");
    let own: Vec<_> = segments(&data)
        .into_iter()
        .filter(|f| f.is_file() && !f.is_symlink() && *f != name(next + 2, ""))
        .collect();
    assert_eq!(echo_requests(&own), 20 + sent, "{}", sensor.log_text());

    // At start: a copy of a finished segment under an `.active` name and a stray numbered
    // near the end of the range. The store starts, serves every packet once, and numbers
    // on from its own segments.
    let finished = own[0].clone();
    std::fs::copy(&finished, name(newest_seq(&data) + 1, ".active")).unwrap();
    std::fs::copy(&finished, data.join("podcap-9999999998.pcapng")).unwrap();
    let mut sensor = start_sensor(&t.n, &args);
    let status: serde_json::Value =
        serde_json::from_str(&t.n.sh("curl -s http://127.0.0.1:9090/api/v1/status")).unwrap();
    assert_eq!(
        status["recovery"]["ignored"].as_array().map(Vec::len),
        Some(5),
        "{status}"
    );
    t.a.sh("ping -c 30 -i 0.01 198.18.0.2");
    assert!(readyz(&t.n).starts_with("ready"));
    let dump = dir.path().join("all.pcapng");
    t.n.sh(&format!(
        "curl -sf -o {} 'http://127.0.0.1:9090/api/v1/snapshot?from=2000-01-01T00:00:00Z'",
        dump.display()
    ));
    assert_eq!(echo_requests(&[dump]), 20 + sent + 30, "every packet once");
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let highest_own = segments(&data)
        .iter()
        .filter_map(|f| {
            f.file_name()?
                .to_str()
                .and_then(podcap_sensor::store::name::SegmentName::parse)
        })
        .map(|n| n.seq)
        .filter(|&seq| seq < 1_000)
        .max();
    assert!(highest_own.is_some_and(|seq| seq > next + 2), "{highest_own:?}");
    report(
        "stray files at the names the writer computes next (a folder, a symbolic link, a file) and, at start, a copy under an `.active` name and a file numbered near the end",
        "once each",
        "nothing",
        "their numbers skipped, each named in the log and `recovery.ignored`; ready throughout; every packet served once",
    );
}

/// Echo requests of `size` bytes of payload in a pcapng file.
fn markers(file: &Path, size: usize) -> usize {
    pcap::read_segments(&[file.to_owned()])
        .iter()
        .filter(|f| f.data.len() == 14 + 20 + 8 + size && f.data[23] == 1 && f.data[34] == 8)
        .count()
}

/// What the file's Interface Statistics Blocks say was received, added up (`None`: it has
/// none).
fn received_by_statistics(file: &Path) -> Option<u64> {
    use podcap_sensor::pcapng::read::{parse_statistics, Blocks, Section};
    let bytes = std::fs::read(file).unwrap();
    let mut section = Section::default();
    let mut received = None;
    for block in Blocks::new(&bytes) {
        let block = block.unwrap();
        section.observe(&block).unwrap();
        if let Ok(Some(stats)) = parse_statistics(&block, &section) {
            *received.get_or_insert(0) += stats.received.unwrap_or(0);
        }
    }
    received
}

#[test]
fn windows_until_now_hold_the_newest_packets_and_end_at_the_request() {
    let Some(_serial) = privileged() else { return };
    let t = topology("t");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sensor = start_sensor(&t.n, &format!("--iface n0 --data-dir {}", data.display()));
    let api = "http://127.0.0.1:9090/api/v1";
    let background = Proc::spawn("ping", &t.a.exec("ping -i 0.05 198.18.0.2"));
    for round in 0..3 {
        // A marker, then at once a kept snapshot and a download ending now.
        // Each round's markers have sizes of their own.
        let (kept_size, dump_size) = (700 + round, 500 + round);
        t.a.sh(&format!("ping -c 1 -s {kept_size} 198.18.0.2"));
        let name = format!("tail-{round}");
        t.n.sh(&format!(
            "curl -sf -X POST -H 'content-type: application/json' -d '{{\"name\":\"{name}\",\"last\":\"5s\"}}' {api}/snapshots"
        ));
        let kept = dir.path().join(format!("{name}.pcapng"));
        t.n.sh(&format!(
            "curl -sf -o {} {api}/snapshots/{name}/pcapng",
            kept.display()
        ));
        assert_eq!(
            markers(&kept, kept_size),
            1,
            "round {round}: the kept snapshot holds the marker"
        );
        t.a.sh(&format!("ping -c 1 -s {dump_size} 198.18.0.2"));
        let download = dir.path().join(format!("{name}-dump.pcapng"));
        t.n.sh(&format!(
            "curl -sf -o {} '{api}/snapshot?last=5s'",
            download.display()
        ));
        assert_eq!(
            markers(&download, dump_size),
            1,
            "round {round}: the download holds the marker"
        );
        // The window lies in the active segment, which has no statistics block yet: the
        // file still says what its interface received and lost.
        let received = received_by_statistics(&download);
        let packets = pcap::read_segments(std::slice::from_ref(&download)).len() as u64;
        assert!(
            received.is_some_and(|r| r >= packets && packets > 0),
            "round {round}: statistics {received:?} for {packets} packets"
        );
    }
    // A window reaching into the future ends at the request, and says so; one starting
    // there is refused.
    let now = podcap_sensor::sys::realtime_ns();
    let later = podcap_sensor::units::format_rfc3339(now + 3_600_000_000_000);
    let earlier = podcap_sensor::units::format_rfc3339(now - 10_000_000_000);
    let answer = t.n.sh(&format!(
        "curl -s -D - -X POST -H 'content-type: application/json' -d '{{\"name\":\"future\",\"from\":\"{earlier}\",\"to\":\"{later}\"}}' {api}/snapshots"
    ));
    assert!(answer.contains("x-podcap-window-clamped: to="), "{answer}");
    let manifest: serde_json::Value =
        serde_json::from_str(&t.n.sh(&format!("curl -sf {api}/snapshots/future"))).unwrap();
    let to = podcap_sensor::units::parse_rfc3339(manifest["to"].as_str().unwrap()).unwrap();
    assert!(to <= podcap_sensor::sys::realtime_ns(), "{manifest}");
    let refused = t.n.sh(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' '{api}/snapshot?from={later}'"
    ));
    assert_eq!(refused, "400");
    drop(background);
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    report(
        "a snapshot or download ending now, made right after a marker packet",
        "3 rounds each",
        "nothing: the marker is in every file",
        "windows reaching past the request end at it (`x-podcap-window-clamped`); a window starting in the future is a 400",
    );
}
