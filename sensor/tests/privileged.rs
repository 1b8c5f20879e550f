//! Privileged tests of the capture spine on a real kernel with real traffic: the sensor and
//! tcpdump record the same interfaces at the same time, and tcpdump is the oracle.
//!
//! Each test builds its own namespaces (guards delete them on every exit path) and uses
//! only `198.18.0.0/15` and `2001:db8::/32` addresses inside them.
mod common;

use std::time::Duration;

use common::{pcap, *};
use podcap_sensor::{pcapng::Direction, sys::realtime_ns};

/// Two "pods" (A, B) and a "node" N: A's traffic is selected (n0), B's is not (n1).
struct Topology {
    a: Netns,
    b: Netns,
    n: Netns,
}

fn topology(tag: &str) -> Topology {
    let a = Netns::new(&format!("pc{tag}A"));
    let b = Netns::new(&format!("pc{tag}B"));
    let n = Netns::new(&format!("pc{tag}N"));
    link(
        &a,
        "a0",
        &["198.18.0.1/30", "2001:db8::1/64"],
        &n,
        "n0",
        &["198.18.0.2/30", "2001:db8::2/64"],
    );
    link(
        &b,
        "b0",
        &["198.18.1.1/30", "2001:db8:1::1/64"],
        &n,
        "n1",
        &["198.18.1.2/30", "2001:db8:1::2/64"],
    );
    Topology { a, b, n }
}

/// ICMP (0 % loss while captured), IP fragments, ICMPv6, UDP of many sizes over IPv4 and
/// IPv6, TCP bulk both ways (GSO super-frames), crafted frames, and unselected traffic.
fn mixed_traffic(t: &Topology) {
    // ICMP, with 0 % loss while captured; IP fragments; ICMPv6.
    let ping = t.a.sh("ping -c 30 -i 0.02 198.18.0.2");
    assert!(
        ping.contains(" 0% packet loss"),
        "ping lost packets while captured:\n{ping}"
    );
    t.a.sh("ping -c 5 -i 0.05 -s 3000 198.18.0.2");
    t.a.sh("ping -6 -c 10 -i 0.02 2001:db8::2");
    // UDP of many sizes, IPv4 and IPv6, some fragmented.
    udp_burst(&t.a, "198.18.0.2", "1,18,100,512,999,1400,1472,2000,4000", 20);
    udp_burst(&t.a, "2001:db8::2", "1,200,1200,1452,3000", 10);
    // TCP bulk both ways: GSO super-frames cross the veth in each direction.
    t.a.sh("iperf3 -c 198.18.0.2 -n 16M -l 64K -b 500M");
    t.a.sh("iperf3 -c 198.18.0.2 -n 8M -l 64K -R -b 500M");
    // Crafted frames: a VLAN-tagged frame, an odd EtherType, a minimum-size frame.
    t.a.sh(
        "/usr/bin/python3 -c 'from scapy.all import *\nconf.verb=0\nsendp([Ether(dst=\"ff:ff:ff:ff:ff:ff\")/Dot1Q(vlan=42)/IP(src=\"198.18.0.1\",dst=\"198.18.0.2\")/UDP(dport=7)/Raw(b\"vlan\"), Ether(dst=\"ff:ff:ff:ff:ff:ff\",type=0x88b5)/Raw(b\"x\"*46), Ether(dst=\"ff:ff:ff:ff:ff:ff\",type=0x0800)/Raw(b\"\\0\"*46)], iface=\"a0\")'",
    );
    // Traffic on the unselected interface must not appear.
    t.b.sh("ping -c 10 -i 0.02 198.18.1.2");
    udp_burst(&t.b, "198.18.1.2", "100,1000", 5);
}

#[test]
fn sensor_records_what_tcpdump_records() {
    records_what_tcpdump_records("af-xdp");
}

/// The ring channel: the same packets, GSO super-frames whole as tcpdump shows them.
#[test]
fn the_ring_channel_records_what_tcpdump_records() {
    records_what_tcpdump_records("ring");
}

fn records_what_tcpdump_records(channel: &str) {
    let Some(_serial) = privileged() else { return };
    let t = topology("o");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let reference = dir.path().join("ref.pcap");
    let unselected = dir.path().join("unselected.pcap");

    let mut tcpdump = start_tcpdump(&t.n, "n0", &reference, "");
    let mut tcpdump_other = start_tcpdump(&t.n, "n1", &unselected, "");
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --channel {channel} --data-dir {} --segment-size 2MB",
            data.display()
        ),
    );
    let mut iperf = Proc::spawn("iperf3 server", &t.n.exec("iperf3 -s -B 198.18.0.2 --forceflush"));
    iperf.wait_for("Server listening", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));

    let from = realtime_ns();
    mixed_traffic(&t);
    std::thread::sleep(Duration::from_millis(500));
    let to = realtime_ns();
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(
        sensor.stop(),
        Some(0),
        "sensor exit status; log:\n{}",
        sensor.log_text()
    );
    tcpdump.stop();
    tcpdump_other.stop();
    drop(iperf);
    assert!(
        !capture_veth_present(&t.n),
        "the capture veth outlived the sensor"
    );

    let files = segments(&data);
    assert!(files.len() >= 2, "expected rotation at 2MB, got {files:?}");
    for f in &files {
        assert!(
            f.extension().is_some_and(|e| e == "pcapng"),
            "unfinished segment left: {}",
            f.display()
        );
        assert_tshark_clean(f);
    }
    let reference = pcap::window(&pcap::read_pcap(&reference, "n0"), from, to);
    let captured_all = pcap::read_segments(&files);
    let captured = pcap::window(&captured_all, from, to);
    let other = pcap::read_pcap(&unselected, "n1");
    assert!(
        other.len() >= 20,
        "the unselected interface carried traffic ({} frames)",
        other.len()
    );
    assert!(
        captured_all.iter().all(|f| f.iface == "n0"),
        "a frame names another interface"
    );

    let result = pcap::compare(&reference, &captured);
    eprintln!("sensor log:\n{}", sensor.log_text());
    eprintln!(
        "reference {} frames, captured {}: exact {}, GSO super-frames {} as {} segments",
        reference.len(),
        captured.len(),
        result.exact,
        result.gso_superframes,
        result.gso_segments
    );
    assert!(
        result.missing.is_empty(),
        "{} frames missing, first: {:#?}",
        result.missing.len(),
        &result.missing[..result.missing.len().min(5)]
    );
    assert!(
        result.extra.is_empty(),
        "{} extra frames, first: {:#?}",
        result.extra.len(),
        &result.extra[..result.extra.len().min(5)]
    );
    assert!(
        reference.iter().any(|f| f.orig_len > 1514),
        "the TCP transfer produced no GSO super-frame: the test lost its point"
    );
    if channel == "ring" {
        assert_eq!(result.gso_superframes, 0, "super-frames are recorded whole");
    } else {
        assert!(
            result.gso_superframes > 0,
            "super-frames are recorded as segments"
        );
    }
    assert!(result.exact > 200, "too little traffic compared");
    assert_directions(&captured);

    assert_slice_matches(&data, dir.path(), from, to, &captured);
}

/// A's packets arrive at n0 (inbound), packets to A leave it (outbound).
fn assert_directions(captured: &[pcap::Frame]) {
    // Directions: A's packets arrive at n0 (inbound), replies leave it (outbound).
    let inbound = captured
        .iter()
        .filter(|f| f.direction == Direction::Inbound)
        .count();
    let outbound = captured
        .iter()
        .filter(|f| f.direction == Direction::Outbound)
        .count();
    assert!(
        inbound > 0 && outbound > 0,
        "directions: {inbound} in, {outbound} out"
    );
    for f in captured
        .iter()
        .filter(|f| f.data.len() > 34 && f.data[12..14] == [0x08, 0x00])
    {
        let (src, dst) = (&f.data[26..30], &f.data[30..34]);
        let a = [198, 18, 0, 1];
        if src == a {
            assert_eq!(
                f.direction,
                Direction::Inbound,
                "A's packet of {} bytes",
                f.data.len()
            );
        } else if dst == a {
            assert_eq!(
                f.direction,
                Direction::Outbound,
                "packet to A of {} bytes",
                f.data.len()
            );
        }
    }
}

/// Runs the sensor in `ns` expecting it to refuse; returns its stderr.
fn refused(ns: &Netns, args: &str) -> String {
    let (ok, out) = try_sh(&ns.exec(&format!("{} {args}", sensor_bin())));
    assert!(!ok, "the sensor accepted `{args}`:\n{out}");
    assert!(!capture_veth_present(ns), "`{args}` left the capture veth behind");
    assert_eq!(podcap_programs_loaded(), 0, "`{args}` left programs loaded");
    out
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_nothing_attached() {
    let Some(_serial) = privileged() else { return };
    let t = topology("b");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.display();

    let out = refused(&t.n, &format!("--iface n0 --iface nosuch0 --data-dir {d}"));
    assert!(out.contains("--iface: unknown interface \"nosuch0\""), "{out}");
    let out = refused(&t.n, &format!("--iface n0 --data-dir {d} --segment-size 5XB"));
    assert!(out.contains("--segment-size: invalid size \"5XB\""), "{out}");
    let out = refused(&t.n, &format!("--node n1 --host-iface nosuch1 --data-dir {d}"));
    assert!(
        out.contains("--host-iface: unknown interface \"nosuch1\""),
        "{out}"
    );
    let out = refused(
        &t.n,
        &format!("--node n1 --iface n0 --host-iface n0 --data-dir {d}"),
    );
    assert!(
        out.contains("--host-iface: \"n0\" is also given as --iface"),
        "{out}"
    );
    let out = refused(&t.n, &format!("--iface n0 --data-dir {d} --max-time 10x"));
    assert!(out.contains("--max-time: invalid duration \"10x\""), "{out}");
    let out = refused(&t.n, &format!("--iface n0 --data-dir {d} --segment-time 0s"));
    assert!(
        out.contains("--segment-time: \"0s\" must be greater than zero"),
        "{out}"
    );
    let out = refused(
        &t.n,
        &format!("--iface n0 --data-dir {d} --segment-size 2GB --max-size 1GB"),
    );
    assert!(
        out.contains(
            "--max-size (1GB) keeps fewer than 4 segments of --segment-size (2GB): give at least 8.0 GB"
        ),
        "{out}"
    );
    // Destructive values are refused at start as they are through the API.
    let out = refused(&t.n, &format!("--iface n0 --data-dir {d} --max-size 5"));
    assert!(out.contains("--max-size: \"5\" has no unit"), "{out}");
    let out = refused(&t.n, &format!("--iface n0 --data-dir {d} --max-time 1ms"));
    assert!(
        out.contains("--max-time (1ms) keeps fewer than 4 segments of --segment-time (1m)"),
        "{out}"
    );

    // A read-only filesystem: root's permissions do not help there.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    sh(&format!(
        "mount -t tmpfs -o ro,size=1M podcap-test-ro {}",
        ro.display()
    ));
    let out = refused(&t.n, &format!("--iface n0 --data-dir {}/segments", ro.display()));
    let _ = try_sh(&format!("umount {}", ro.display()));
    assert!(
        out.contains("is not usable") && out.contains("Read-only file system"),
        "{out}"
    );

    // No privileges: an unprivileged user with a writable data directory.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    sh(&format!("chmod 1777 {} {}", dir.path().display(), open.display()));
    let (ok, out) = try_sh(&t.n.exec(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all {} --iface n0 --data-dir {}/segments",
        sensor_bin(),
        open.display()
    )));
    assert!(!ok, "an unprivileged sensor started:\n{out}");
    assert!(out.contains("permission denied"), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "the error is one line: {out}");
    assert!(!capture_veth_present(&t.n));
}

#[test]
fn a_second_sensor_in_the_namespace_is_refused_and_the_first_keeps_recording() {
    let Some(_serial) = privileged() else { return };
    let t = topology("v");
    let dir = tempfile::tempdir().unwrap();
    let (first_data, second_data) = (dir.path().join("one"), dir.path().join("two"));
    let args = |data: &std::path::Path, port: u16| {
        format!(
            "--iface n0 --channel af-xdp --data-dir {} --listen 127.0.0.1:{port}",
            data.display()
        )
    };
    let mut first = start_sensor(&t.n, &args(&first_data, 9090));
    let (ok, out) = try_sh(&t.n.exec(&format!("{} {}", sensor_bin(), args(&second_data, 9091))));
    assert!(!ok, "a second sensor started:\n{out}");
    assert!(
        out.contains(&format!("another podcap-sensor (pid {})", first.child.id())),
        "{out}"
    );
    assert!(
        capture_veth_present(&t.n),
        "the second sensor deleted the first one's veth"
    );
    let from = realtime_ns();
    t.a.sh("ping -c 10 -i 0.02 198.18.0.2");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(first.stop(), Some(0), "{}", first.log_text());
    let pings = pcap::read_segments(&segments(&first_data))
        .iter()
        .filter(|f| f.ts_ns >= from && f.data.len() > 34 && f.data[23] == 1)
        .count();
    assert_eq!(pings, 20, "the first sensor kept recording");

    // A sensor killed with -9 holds nothing: the next one takes over its leftover veth.
    let crashed = start_sensor(&t.n, &args(&first_data, 9090));
    crashed.signal(9);
    std::thread::sleep(Duration::from_millis(300));
    assert!(capture_veth_present(&t.n), "kill -9 leaves the veth behind");
    let mut next = start_sensor(&t.n, &args(&second_data, 9091));
    assert_eq!(next.stop(), Some(0), "{}", next.log_text());
    assert!(!capture_veth_present(&t.n));
    report(
        "a second sensor starts in the same network namespace",
        "once, and once after the first was `kill -9`ed",
        "nothing: the first keeps recording",
        "refused naming the owner's pid; after a `kill -9` the next sensor takes over",
    );
}

#[test]
fn a_run_after_a_crash_cleans_up_and_repairs() {
    let Some(_serial) = privileged() else { return };
    let t = topology("c");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = format!("--iface n0 --data-dir {}", data.display());

    let mut first = start_sensor(&t.n, &args);
    t.a.sh("ping -c 20 -i 0.01 198.18.0.2");
    std::thread::sleep(Duration::from_millis(1200)); // the active segment is flushed
    first.signal(9);
    let _ = first.child.wait();
    assert!(
        capture_veth_present(&t.n),
        "kill -9 should leave the capture veth (the test's premise)"
    );
    assert!(segments(&data)
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".active")));
    // Simulate a write torn by the crash: half a block at the end of the active segment.
    let active = segments(&data)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".active"))
        .unwrap();
    sh(&format!(
        "printf '\\006\\000\\000\\000\\100\\000\\000\\000xyz' >> {}",
        active.display()
    ));

    let mut second = start_sensor(&t.n, &args);
    t.a.sh("ping -c 20 -i 0.01 198.18.0.2");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(second.stop(), Some(0), "{}", second.log_text());
    assert!(
        second.log_text().contains("cut 11 bytes"),
        "{}",
        second.log_text()
    );
    assert!(!capture_veth_present(&t.n));
    assert_eq!(podcap_programs_loaded(), 0);
    let files = segments(&data);
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        assert!(!f.to_string_lossy().ends_with(".active"), "{}", f.display());
        assert_tshark_clean(f);
    }
    let frames = pcap::read_segments(&files);
    let echo_requests = |from: usize, to: usize| {
        frames[from..to]
            .iter()
            .filter(|f| f.data.len() > 34 && f.data[23] == 1 && f.data[34] == 8)
            .count()
    };
    assert_eq!(echo_requests(0, frames.len()), 40, "both runs' pings are kept");
}

#[test]
fn drops_are_counted_exactly() {
    let Some(_serial) = privileged() else { return };
    let t = topology("d");
    // Only our traffic crosses n0: no IPv6 chatter, no ARP.
    for (ns, ifname) in [(&t.a, "a0"), (&t.n, "n0")] {
        ns.sh(&format!("sysctl -qw net.ipv6.conf.{ifname}.disable_ipv6=1"));
    }
    let mac = |ns: &Netns, ifname: &str| {
        ns.sh(&format!("cat /sys/class/net/{ifname}/address"))
            .trim()
            .to_owned()
    };
    t.a.sh(&format!(
        "ip neigh replace 198.18.0.2 lladdr {} dev a0 nud permanent",
        mac(&t.n, "n0")
    ));
    t.n.sh(&format!(
        "ip neigh replace 198.18.0.1 lladdr {} dev n0 nud permanent",
        mac(&t.a, "a0")
    ));
    let counters = || {
        let json = t.n.sh("ip -s -j link show n0");
        let field = |dir: &str| -> u64 {
            let at = json.find(&format!("\"{dir}\":{{")).unwrap();
            let rest = &json[at..];
            let p = rest.find("\"packets\":").unwrap() + 10;
            rest[p..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        field("rx") + field("tx")
    };
    // Both channels: the kernel's ring buffer (its thread writes the segments itself) and
    // AF_XDP (a user-space ring to the writer thread). The sensor is stopped (SIGSTOP)
    // while a burst many times its buffers crosses, so the kernel side must drop.
    for channel in ["ring", "af-xdp"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let before = counters();
        let mut sensor = start_sensor(
            &t.n,
            &format!(
                "--iface n0 --channel {channel} --data-dir {} --ring-size 1MiB --xsk-frames 64",
                data.display()
            ),
        );
        sensor.signal(libc::SIGSTOP);
        t.a.sh(
            "/usr/bin/python3 -c 'import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(30000):\n  s.sendto(bytes(1200),(\"198.18.0.2\",9))'",
        );
        sensor.signal(libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
        let crossed = counters() - before;

        let files = segments(&data);
        let written = pcap::read_segments(&files).len() as u64;
        let (received, dropped) = pcap::sum_statistics(&files);
        eprintln!(
            "{channel}: crossed n0 {crossed}, isb received {received}, written {written}, dropped {dropped} ({} segments)",
            files.len()
        );
        assert_eq!(
            received, crossed,
            "{channel}: every packet the interface carried is counted"
        );
        assert!(dropped > 0, "{channel}: nothing dropped: the test lost its point");
        assert!(written > 0, "{channel}: nothing written");
        assert_eq!(
            written + dropped,
            received,
            "{channel}: drops reported = packets not written"
        );
        assert!(
            sensor.log_text().contains("WARN"),
            "{channel}: drops were not logged:\n{}",
            sensor.log_text()
        );
    }
}

#[test]
fn tap_interface_frames_are_all_taken_and_recorded() {
    let Some(_serial) = privileged() else { return };
    let a = Netns::new("pctA");
    let n = Netns::new("pctN");
    link(&a, "a0", &["198.18.2.1/30"], &n, "t1", &[]);
    // Nothing answers ARP behind a tap: a static neighbour lets A send at once.
    let t1_mac = n.sh("cat /sys/class/net/t1/address");
    a.sh(&format!(
        "ip neigh replace 198.18.2.2 lladdr {} dev a0 nud permanent",
        t1_mac.trim()
    ));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let reference = dir.path().join("sent.pcap");
    // The oracle is the sender's side: XDP takes the frames before tcpdump on t1 could.
    let mut tcpdump = start_tcpdump(&a, "a0", &reference, "-Q out");
    let mut sensor = start_sensor(&n, &format!("--tap t1 --data-dir {}", data.display()));
    std::thread::sleep(Duration::from_millis(300));
    let from = realtime_ns();
    udp_burst(&a, "198.18.2.2", "1,100,1000,1472,3000", 20);
    a.sh(
        "/usr/bin/python3 -c 'from scapy.all import *\nconf.verb=0\nsendp([Ether(dst=\"02:00:00:00:00:01\")/Dot1Q(vlan=7)/IP(dst=\"198.18.2.2\")/UDP()/Raw(b\"tap\")]*5, iface=\"a0\")'",
    );
    std::thread::sleep(Duration::from_millis(500));
    let to = realtime_ns();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    tcpdump.stop();
    let files = segments(&data);
    for f in &files {
        assert_tshark_clean(f);
    }
    let sent = pcap::window(&pcap::read_pcap(&reference, "a0"), from, to);
    let captured = pcap::window(&pcap::read_segments(&files), from, to);
    assert!(sent.len() >= 100, "{} frames sent", sent.len());
    assert!(captured
        .iter()
        .all(|f| f.iface == "t1" && f.direction == Direction::Inbound));
    let result = pcap::compare(&sent, &captured);
    assert!(
        result.missing.is_empty(),
        "missing {:#?}",
        &result.missing[..result.missing.len().min(5)]
    );
    assert!(
        result.extra.is_empty(),
        "extra {:#?}",
        &result.extra[..result.extra.len().min(5)]
    );
    assert_eq!(result.exact, sent.len());
}

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
        let mut sensor = start_sensor(&t.n, &args);
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(100 + (seed >> 33) % 900));
        kills.push(realtime_ns());
        sensor.signal(9);
        let _ = sensor.child.wait();
        assert!(
            capture_veth_present(&t.n),
            "round {round}: kill -9 should leave the veth behind"
        );
    }
    let mut last = start_sensor(&t.n, &args);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(last.stop(), Some(0), "{}", last.log_text());
    assert!(!capture_veth_present(&t.n));

    let files = segments(&data);
    assert!(files.len() >= 20, "{files:?}");
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
    for f in &files {
        assert_tshark_clean(f);
    }
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

/// The store's slice of `[from, to)` holds the same packets as `captured`, in timestamp order.
fn assert_slice_matches(
    data: &std::path::Path,
    scratch: &std::path::Path,
    from: u64,
    to: u64,
    captured: &[pcap::Frame],
) {
    let index = podcap_sensor::store::index::Index::load(data)
        .unwrap()
        .expect("index.tsv");
    let slice_path = scratch.join("slice.pcapng");
    let mut out = std::fs::File::create(&slice_path).unwrap();
    let stats = podcap_sensor::store::slice::write_slice(
        data,
        &index,
        from,
        to,
        &podcap_sensor::store::slice::Selection::default(),
        &mut out,
    )
    .unwrap();
    drop(out);
    assert_tshark_clean(&slice_path);
    let sliced = pcap::read_segments(&[slice_path]);
    assert_eq!(stats.late, 0, "packets out of the reorder window");
    assert!(
        sliced.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "slice not in timestamp order"
    );
    let mut a: Vec<_> = sliced.iter().map(|f| (f.ts_ns, f.data.clone())).collect();
    let mut b: Vec<_> = captured.iter().map(|f| (f.ts_ns, f.data.clone())).collect();
    a.sort();
    b.sort();
    assert!(a == b, "slice holds {} packets, the window {}", a.len(), b.len());
}

/// A tmpfs mount, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = try_sh(&format!("umount {}", self.0.display()));
    }
}

/// "N packets seen, M written; drops: kernel a, ring b, writer c" of the sensor's last line.
fn final_counts(log: &str) -> (u64, u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("packets seen,"))
        .unwrap_or_else(|| panic!("no final counts in:\n{log}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let tail = &numbers[numbers.len() - 5..];
    (tail[0], tail[1], tail[2] + tail[3] + tail[4])
}

/// A small tmpfs at `path`, unmounted on drop.
fn small_tmpfs(path: &std::path::Path, size: &str) -> Tmpfs {
    std::fs::create_dir(path).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size={size} podcap-test-full {}",
        path.display()
    ));
    Tmpfs(path.to_owned())
}

#[test]
fn the_stores_own_traffic_fills_the_disk_and_min_free_retires_early_visibly() {
    let Some(_serial) = privileged() else { return };
    let t = topology("f");
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    let _tmpfs = small_tmpfs(&mount, "3M");
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
    let _tmpfs = small_tmpfs(&mount, "4M");
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
    std::thread::sleep(Duration::from_millis(1_500));
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = segments(&mount)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert!(before.len() >= 2, "{before:?}");
    assert!(readyz().starts_with("ready"), "{}", readyz());

    // Another tenant of the disk takes all of it.
    let filler = mount.join("filler");
    let _ = try_sh(&format!(
        "dd if=/dev/zero of={} bs=64k 2>/dev/null",
        filler.display()
    ));
    let traffic = Proc::spawn("ping", &t.a.exec("ping -i 0.01 -s 1000 198.18.0.2"));
    std::thread::sleep(Duration::from_millis(2_500));
    let not_ready = readyz();
    assert!(
        not_ready.contains("not ready") && not_ready.contains("the disk is full"),
        "{not_ready}"
    );
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
    std::thread::sleep(Duration::from_secs(2));
    assert!(readyz().starts_with("ready"), "{}", readyz());
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

struct TwoNodes {
    a: Netns,
    b: Netns,
    n1: Netns,
    n2: Netns,
    laptop: Netns,
}

fn two_nodes() -> TwoNodes {
    // Pod A on node 1, pod B on node 2, the nodes joined by a link, a "laptop" that reaches
    // both sensors' APIs.
    let a = Netns::new("pceA");
    let b = Netns::new("pceB");
    let n1 = Netns::new("pceN1");
    let n2 = Netns::new("pceN2");
    let laptop = Netns::new("pceL");
    link(&a, "eth0", &["198.18.0.1/30"], &n1, "poda", &["198.18.0.2/30"]);
    link(&b, "eth0", &["198.18.1.1/30"], &n2, "podb", &["198.18.1.2/30"]);
    link(
        &n1,
        "to-n2",
        &["198.18.30.1/30"],
        &n2,
        "to-n1",
        &["198.18.30.2/30"],
    );
    link(
        &laptop,
        "l1",
        &["198.18.20.1/30"],
        &n1,
        "api",
        &["198.18.20.2/30"],
    );
    link(
        &laptop,
        "l2",
        &["198.18.20.5/30"],
        &n2,
        "api",
        &["198.18.20.6/30"],
    );
    a.sh("ip route add default via 198.18.0.2");
    b.sh("ip route add default via 198.18.1.2");
    n1.sh("sysctl -qw net.ipv4.ip_forward=1");
    n2.sh("sysctl -qw net.ipv4.ip_forward=1");
    n1.sh("ip route add 198.18.1.0/30 via 198.18.30.2");
    n2.sh("ip route add 198.18.0.0/30 via 198.18.30.1");

    TwoNodes { a, b, n1, n2, laptop }
}

/// `merged` is in the order mergecap gives the two references, up to timestamp jitter.
fn assert_mergecap_order(
    scratch: &std::path::Path,
    ref1: &std::path::Path,
    ref2: &std::path::Path,
    merged_window: &[pcap::Frame],
    from: u64,
    to: u64,
) {
    let mergecap_out = scratch.join("mergecap.pcap");
    sh(&format!(
        "mergecap -F pcap -w {} {} {}",
        mergecap_out.display(),
        ref1.display(),
        ref2.display()
    ));
    // The same order as mergecap's, up to the amount by which the two tools' timestamps of
    // one packet differ (tc hook vs packet socket: microseconds when idle, a few ms when
    // the 2 cores are busy, 3.9 ms seen under a parallel build): each packet, given
    // mergecap's timestamp for it, comes no earlier than 20 ms before anything podcap put
    // ahead of it.
    let by_mergecap = pcap::window(&pcap::read_pcap(&mergecap_out, "-"), from, to);
    assert_eq!(by_mergecap.len(), merged_window.len());
    let mut pool: std::collections::HashMap<&[u8], std::collections::VecDeque<u64>> =
        std::collections::HashMap::new();
    for f in &by_mergecap {
        pool.entry(f.data.as_slice()).or_default().push_back(f.ts_ns);
    }
    let mut latest = 0u64;
    for (i, f) in merged_window.iter().enumerate() {
        let ts = pool
            .get_mut(f.data.as_slice())
            .and_then(std::collections::VecDeque::pop_front)
            .expect("in mergecap's output");
        assert!(
            ts + 20_000_000 >= latest,
            "packet {i} is {} µs out of mergecap's order",
            (latest - ts) / 1000
        );
        latest = latest.max(ts);
    }
}

/// A sensor that fails is named, the others kept, and the exit status says so.
fn assert_failures_are_named(
    podcap: &dyn Fn(&str) -> (bool, String),
    out: &std::path::Path,
    auth: &str,
    sensors: &str,
) {
    let (ok, text) = podcap(&format!(
        "dump --time 1m --dest {} --sensor http://198.18.20.2:9090 --sensor http://198.18.20.6:9091 {auth}",
        out.display()
    ));
    assert!(!ok && text.contains("sensor 198.18.20.6:9091 failed"), "{text}");
    // Without the token: 401, reported.
    let (ok, text) = podcap(&format!("segments {sensors}"));
    assert!(!ok && text.contains("HTTP 401"), "{text}");
}

/// `podcap live` merges both sensors' live streams as they come; -c stops it.
fn assert_live_merges(
    a: &Netns,
    laptop: &Netns,
    args: &str,
    ref1: &std::path::Path,
    ref2: &std::path::Path,
    scratch: &std::path::Path,
) {
    let live_file = scratch.join("live.pcapng");
    let live_cmd = format!(
        "timeout 30 {} > {}",
        laptop.exec(&format!("{} live -c 40 {args}", podcap_cli().display())),
        live_file.display()
    );
    let live_start = realtime_ns();
    let live = std::thread::spawn(move || try_sh(&live_cmd));
    std::thread::sleep(Duration::from_millis(800));
    a.sh("ping -c 30 -i 0.05 198.18.1.1");
    let (ok, text) = live.join().unwrap();
    assert!(ok, "podcap live failed:\n{text}");
    assert_tshark_clean(&live_file);
    let streamed = pcap::read_segments(std::slice::from_ref(&live_file));
    assert_eq!(streamed.len(), 40, "-c 40");
    assert!(
        streamed.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "live merge not in time order"
    );
    for node in ["198.18.20.2:9090/poda", "198.18.20.6:9090/podb"] {
        assert!(streamed.iter().any(|f| f.iface == node), "nothing from {node}");
    }
    let mut reference = pcap::read_pcap(ref1, "poda");
    reference.extend(pcap::read_pcap(ref2, "podb"));
    let reference = pcap::window(&reference, live_start - 2_000_000_000, u64::MAX);
    let result = pcap::compare(&reference, &streamed);
    assert!(
        result.extra.is_empty(),
        "live packets tcpdump never saw: {:?}",
        result.extra.first()
    );
}

#[test]
fn podcap_dump_merges_two_nodes_into_one_time_ordered_file() {
    let Some(_serial) = privileged() else { return };
    let TwoNodes { a, b, n1, n2, laptop } = two_nodes();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "e2e-token\n").unwrap();
    let (ref1, ref2) = (dir.path().join("n1.pcap"), dir.path().join("n2.pcap"));
    let mut dump1 = start_tcpdump(&n1, "poda", &ref1, "");
    let mut dump2 = start_tcpdump(&n2, "podb", &ref2, "");
    let sensor_args = |iface: &str, addr: &str, data: &str| {
        format!(
            "--iface {iface} --data-dir {}/{data} --listen {addr}:9090 --token-file {}",
            dir.path().display(),
            token.display()
        )
    };
    let mut s1 = start_sensor(&n1, &sensor_args("poda", "198.18.20.2", "d1"));
    let mut s2 = start_sensor(&n2, &sensor_args("podb", "198.18.20.6", "d2"));
    std::thread::sleep(Duration::from_millis(300));

    let from = realtime_ns();
    let ping = a.sh("ping -c 30 -i 0.02 198.18.1.1");
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    udp_burst(&b, "198.18.0.1", "64,700,1400", 10);
    std::thread::sleep(Duration::from_millis(800));
    let to = realtime_ns();
    // Sensors flush at least every 0.5 s; a snapshot holds what reached the disk.
    std::thread::sleep(Duration::from_millis(1200));

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let sensors = "--sensor http://198.18.20.2:9090 --sensor http://198.18.20.6:9090";
    let auth = format!("--token-file {}", token.display());
    let podcap = |args: &str| try_sh(&laptop.exec(&format!("{} {args}", podcap_cli().display())));
    let (ok, text) = podcap(&format!(
        "dump --time 1m --dest {} {sensors} {auth}",
        out.display()
    ));
    assert!(ok, "podcap dump failed:\n{text}");
    let files = segments(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("podcap-") && name.ends_with(".pcapng"), "{name}");
    assert_tshark_clean(&files[0]);
    let merged = pcap::read_segments(&files);
    assert!(
        merged.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "merge not in time order"
    );
    assert!(merged
        .iter()
        .all(|f| f.iface == "198.18.20.2:9090/poda" || f.iface == "198.18.20.6:9090/podb"));

    // The union of the two tcpdump references, in the window; and mergecap agrees on order.
    let mut reference = pcap::window(&pcap::read_pcap(&ref1, "poda"), from, to);
    reference.extend(pcap::window(&pcap::read_pcap(&ref2, "podb"), from, to));
    let merged_window = pcap::window(&merged, from, to);
    let result = pcap::compare(&reference, &merged_window);
    assert!(
        result.missing.is_empty() && result.extra.is_empty(),
        "{} missing, {} extra; first: {:?} {:?}",
        result.missing.len(),
        result.extra.len(),
        result.missing.first(),
        result.extra.first()
    );
    assert!(result.exact >= 120, "{} packets compared", result.exact);
    assert_mergecap_order(dir.path(), &ref1, &ref2, &merged_window, from, to);

    // After a pause, --time 3s holds only the newest burst.
    std::thread::sleep(Duration::from_secs(4));
    let burst = realtime_ns();
    a.sh("ping -c 5 -i 0.02 198.18.1.1");
    std::thread::sleep(Duration::from_millis(1200));
    let out3 = dir.path().join("out3");
    let (ok, text) = podcap(&format!(
        "dump --time 3s --dest {} {sensors} {auth}",
        out3.display()
    ));
    assert!(ok, "{text}");
    let files = segments(&out3);
    let newest = pcap::read_segments(&files);
    let echoes = newest
        .iter()
        .filter(|f| f.data.len() > 34 && f.data[23] == 1)
        .count();
    assert_eq!(echoes, 20, "5 requests and 5 replies, seen on both nodes");
    assert!(
        newest.iter().all(|f| f.ts_ns >= burst - 200_000_000),
        "older packets in the 3 s dump"
    );

    assert_live_merges(
        &a,
        &laptop,
        &format!("{sensors} {auth}"),
        &ref1,
        &ref2,
        dir.path(),
    );

    assert_failures_are_named(&podcap, &out3, &auth, sensors);

    for s in [&mut s1, &mut s2] {
        assert_eq!(s.stop(), Some(0), "{}", s.log_text());
    }
    dump1.stop();
    dump2.stop();
}

#[test]
fn recording_stops_and_resumes_through_podcap_config() {
    let Some(_serial) = privileged() else { return };
    let t = topology("g");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sensor = start_sensor(&t.n, &format!("--iface n0 --data-dir {}", data.display()));
    let podcap = |args: &str| {
        try_sh(&t.n.exec(&format!(
            "{} {args} --sensor http://127.0.0.1:9090",
            podcap_cli().display()
        )))
    };
    let (ok, text) = podcap("config --enable false --max-time 2h");
    assert!(
        ok && text.contains("\"enabled\":false") && text.contains("\"maxTime\":\"2h\""),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let paused = realtime_ns();
    t.a.sh("ping -c 10 -i 0.02 198.18.0.2");
    let resumed = realtime_ns();
    let (ok, text) = podcap("config --enable true");
    assert!(ok, "{text}");
    std::thread::sleep(Duration::from_millis(300));
    t.a.sh("ping -c 10 -i 0.02 198.18.0.2");
    let (ok, text) = podcap("config --max-size lots");
    assert!(
        !ok && text.contains("--max-size"),
        "a bad value is refused before any sensor changes: {text}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let frames = pcap::read_segments(&segments(&data));
    let pings = |from: u64, to: u64| {
        frames
            .iter()
            .filter(|f| f.ts_ns >= from && f.ts_ns < to && f.data.len() > 34 && f.data[23] == 1)
            .count()
    };
    assert_eq!(pings(paused, resumed), 0, "recorded while disabled");
    assert_eq!(pings(resumed, u64::MAX), 20, "not recorded after enabling again");
    // The change survives a restart.
    let settings = std::fs::read_to_string(data.join("settings.json")).unwrap();
    assert!(
        settings.contains("\"maxTime\": \"2h\"") && settings.contains("\"enabled\": true"),
        "{settings}"
    );
}

/// Filter expressions of every kind (ports, hosts, nets, protocols, IPv6, VLAN, TCP flags,
/// lengths, negations, and/or) for the `--filter` table.
const FILTERS: &[&str] = &[
    "udp",
    "tcp",
    "icmp",
    "ip6",
    "icmp6",
    "udp port 9",
    "tcp port 5201",
    "host 198.18.0.1",
    "src host 198.18.0.2",
    "net 198.18.0.0/30",
    "dst net 2001:db8::/64",
    "vlan 42",
    "vlan",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0",
    "not udp",
    "udp and not port 9",
    "ip and (icmp or udp) and greater 500",
    "less 100",
    "ether proto 0x88b5",
    "ip[6:2] & 0x1fff != 0 or ip[6] & 0x20 != 0",
    "ether broadcast",
    "ip6 and udp and len > 1000",
];

#[test]
fn filters_select_exactly_what_tcpdump_selects() {
    let Some(_serial) = privileged() else { return };
    let t = topology("f");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let everything = dir.path().join("all.pcap");
    // Recorded live by the sensor and by tcpdump with the same filter.
    let live_filter = "udp or icmp6 or tcp[tcpflags] & tcp-syn != 0 or vlan 42";
    let mut tcpdumps = vec![start_tcpdump(&t.n, "n0", &everything, "")];
    for (i, expression) in std::iter::once(&live_filter).chain(FILTERS).enumerate() {
        let file = dir.path().join(format!("f{i}.pcap"));
        tcpdumps.push(start_tcpdump(&t.n, "n0", &file, &format!("'{expression}'")));
    }
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --filter '{live_filter}'",
            data.display()
        ),
    );
    let mut iperf = Proc::spawn("iperf3 server", &t.n.exec("iperf3 -s -B 198.18.0.2 --forceflush"));
    iperf.wait_for("Server listening", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    // Only the traffic made here counts: tcpdumps and the sensor all see it.
    let from = realtime_ns();
    t.a.sh("ping -c 10 -i 0.02 198.18.0.2");
    t.a.sh("ping -c 3 -i 0.05 -s 3000 198.18.0.2");
    t.a.sh("ping -6 -c 10 -i 0.02 2001:db8::2");
    udp_burst(&t.a, "198.18.0.2", "1,100,600,1400,2000", 5);
    udp_burst(&t.a, "2001:db8::2", "1,1200,3000", 5);
    t.a.sh("iperf3 -c 198.18.0.2 -n 2M -l 64K -b 200M");
    t.a.sh(
        "/usr/bin/python3 -c 'from scapy.all import *\nconf.verb=0\nsendp([Ether(dst=\"ff:ff:ff:ff:ff:ff\")/Dot1Q(vlan=42)/IP(src=\"198.18.0.1\",dst=\"198.18.0.2\")/UDP(dport=7)/Raw(b\"vlan\"), Ether(dst=\"ff:ff:ff:ff:ff:ff\")/Dot1Q(vlan=43)/IP(src=\"198.18.0.1\",dst=\"198.18.0.2\")/UDP(dport=9)/Raw(b\"other\"), Ether(dst=\"ff:ff:ff:ff:ff:ff\",type=0x88b5)/Raw(b\"x\"*46)], iface=\"a0\")'",
    );
    std::thread::sleep(Duration::from_millis(500));
    let to = realtime_ns();
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    for tcpdump in &mut tcpdumps {
        tcpdump.stop();
    }
    drop(iperf);

    // Live: the sensor's filter recorded what tcpdump's recorded, and nothing else.
    let recorded = pcap::window(&pcap::read_segments(&segments(&data)), from, to);
    let wanted = pcap::window(&pcap::read_pcap(&dir.path().join("f0.pcap"), "n0"), from, to);
    let result = pcap::compare(&wanted, &recorded);
    assert!(
        result.missing.is_empty() && result.extra.is_empty(),
        "{live_filter}: {} missing, {} extra; first: {:?} {:?}",
        result.missing.len(),
        result.extra.len(),
        result.missing.first(),
        result.extra.first()
    );
    assert!(result.exact > 40, "{} packets", result.exact);

    // The table: podcap's filter on every frame tcpdump saw selects exactly the frames a
    // tcpdump running with that filter saw.
    let all = pcap::window(&pcap::read_pcap(&everything, "n0"), from, to);
    assert!(all.len() > 100, "{} frames", all.len());
    // Each packet socket stamps its own time: frames are compared by length and bytes.
    let key = |f: &pcap::Frame| (f.orig_len, f.data.clone());
    for (i, expression) in FILTERS.iter().enumerate() {
        let filter = podcap_sensor::filter::Filter::compile(expression, 262_144).unwrap();
        let mut ours: Vec<_> = all
            .iter()
            .filter(|f| filter.matches(&f.data, f.orig_len))
            .map(key)
            .collect();
        let theirs = pcap::read_pcap(&dir.path().join(format!("f{}.pcap", i + 1)), "n0");
        let mut theirs: Vec<_> = pcap::window(&theirs, from, to).iter().map(key).collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours.len(), theirs.len(), "{expression}: packet count");
        if let Some((a, b)) = ours.iter().zip(&theirs).find(|(a, b)| a != b) {
            panic!(
                "{expression}: different packets: ours {} {:02x?}, tcpdump's {} {:02x?}",
                a.0,
                &a.1[..a.1.len().min(48)],
                b.0,
                &b.1[..b.1.len().min(48)]
            );
        }
        assert!(
            !ours.is_empty(),
            "{expression} selected nothing: the traffic should exercise it"
        );
    }

    // A bad expression is refused with libpcap's message, naming the flag.
    let text = refused(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --filter 'tcp port 99999'",
            data.display()
        ),
    );
    assert!(text.contains("--filter") && text.contains("99999"), "{text}");
}

#[test]
fn the_targeting_file_applies_reloads_and_keeps_the_last_good_one() {
    let Some(_serial) = privileged() else { return };
    let t = topology("k");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.yaml");
    // The kubelet updates a mounted ConfigMap by renaming a new file over the old one.
    let write = |text: &str| {
        let next = dir.path().join("config.next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &config).unwrap();
    };

    write("tap:\n  regex: '(['\n");
    let text = refused(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --config {}",
            data.display(),
            config.display()
        ),
    );
    assert!(
        text.contains("--targeting") && text.contains("tap.regex:"),
        "{text}"
    );

    write("tap:\n  bpfOverride: icmp\npcapdump:\n  maxTime: 2h\n");
    let mut sensor = start_sensor(
        &t.n,
        &format!(
            "--iface n0 --data-dir {} --targeting {}",
            data.display(),
            config.display()
        ),
    );
    let traffic = || {
        t.a.sh("ping -c 5 -i 0.02 198.18.0.2");
        udp_burst(&t.a, "198.18.0.2", "100", 5);
    };
    let readyz = || t.n.sh("curl -s http://127.0.0.1:9090/readyz");
    let reload = || std::thread::sleep(Duration::from_millis(2_500));
    let phase1 = realtime_ns();
    traffic();
    write("tap:\n  bpfOverride: udp\n");
    reload();
    let phase2 = realtime_ns();
    traffic();
    write("tap:\n  bpfOverride: icmp\n  regex: '(['\n");
    reload();
    assert!(readyz().contains("tap.regex:"), "{}", readyz());
    let phase3 = realtime_ns();
    traffic();
    write("pcapdump:\n  enabled: false\n");
    reload();
    // The good document clears the configuration error; readiness now says why it is not
    // recording.
    let text = readyz();
    assert!(text.starts_with("not ready: recording is disabled"), "{text}");
    let phase4 = realtime_ns();
    traffic();
    let end = realtime_ns();
    let settings = t.n.sh("curl -s http://127.0.0.1:9090/api/v1/config");
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    assert!(settings.contains("\"enabled\":false"), "{settings}");

    let frames = pcap::read_segments(&segments(&data));
    let count = |from: u64, to: u64, proto: u8| {
        frames
            .iter()
            .filter(|f| {
                f.ts_ns >= from
                    && f.ts_ns < to
                    && f.data.len() > 34
                    && f.data[12..14] == [8, 0]
                    && f.data[23] == proto
            })
            .count()
    };
    let (icmp, udp) = (1, 17);
    // 10 echo packets and 5 port-unreachable answers to the UDP.
    assert_eq!(
        (count(phase1, phase2, icmp), count(phase1, phase2, udp)),
        (15, 0),
        "bpfOverride icmp"
    );
    assert_eq!(
        (count(phase2, phase3, icmp), count(phase2, phase3, udp)),
        (0, 5),
        "reloaded: udp"
    );
    assert_eq!(
        (count(phase3, phase4, icmp), count(phase3, phase4, udp)),
        (0, 5),
        "a bad document changes nothing"
    );
    assert_eq!(
        count(phase4, end, icmp) + count(phase4, end, udp),
        0,
        "pcapdump.enabled: false"
    );
    let log = sensor.log_text();
    assert!(
        log.contains("the last good configuration stays in force"),
        "{log}"
    );
}

/// Cgroup directories made for a test, under the host's cgroup v2 tree; removed (deepest
/// first) on drop, after the processes put in them are ended.
struct CgroupTree {
    root: std::path::PathBuf,
    dirs: Vec<std::path::PathBuf>,
    processes: Vec<std::process::Child>,
}

impl CgroupTree {
    fn new(tag: &str) -> Self {
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.join("cgroup.controllers").exists())
            .expect("a cgroup v2 tree");
        let root = base.join(format!("podcap-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&root).unwrap();
        Self {
            root: root.clone(),
            dirs: vec![root],
            processes: Vec::new(),
        }
    }

    /// Makes `path` (relative, several levels) and returns it.
    fn dir(&mut self, path: &str) -> std::path::PathBuf {
        let mut at = self.root.clone();
        for part in path.split('/') {
            at.push(part);
            if !at.exists() {
                std::fs::create_dir(&at).unwrap();
                self.dirs.push(at.clone());
            }
        }
        at
    }

    /// Starts `sleep` in network namespace `ns` and puts it in cgroup `dir`.
    fn process(&mut self, ns: &Netns, dir: &std::path::Path) -> u32 {
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", ns.name))
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        let pid = child.id();
        self.processes.push(child);
        // nsenter execs the command: wait until it is `sleep` in the namespace.
        for _ in 0..100 {
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        pid
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The kubelet's cgroups for four pods: A (systemd driver), B (cgroupfs), a hostNetwork
/// pod H (systemd, its process in the node's namespace) and an idle pod without processes.
/// Returns the tree and H's container directory.
fn kubelet_cgroups(
    node: &Netns,
    pod_a: &Netns,
    pod_b: &Netns,
    uids: [&str; 4],
) -> (CgroupTree, std::path::PathBuf) {
    let [uid_a, uid_b, uid_h, uid_idle] = uids;
    let mut cgroups = CgroupTree::new("resolve");
    let dir_a = cgroups.dir(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-0a.scope",
        uid_a.replace('-', "_")
    ));
    let dir_b = cgroups.dir(&format!("kubepods/burstable/pod{uid_b}/0b0b"));
    let dir_h = cgroups.dir(&format!(
        "kubepods.slice/kubepods-pod{}.slice/cri-containerd-0c.scope",
        uid_h.replace('-', "_")
    ));
    cgroups.dir(&format!("kubepods/besteffort/pod{uid_idle}"));
    cgroups.process(pod_a, &dir_a);
    cgroups.process(pod_b, &dir_b);
    cgroups.process(node, &dir_h);
    (cgroups, dir_h)
}

#[test]
fn pods_resolve_to_their_cgroup_namespace_and_host_veths() {
    let Some(_serial) = privileged() else { return };
    let node = Netns::new("pcrN");
    let pod_a = Netns::new("pcrA");
    let pod_b = Netns::new("pcrB");
    link(
        &pod_a,
        "eth0",
        &["198.18.40.1/30"],
        &node,
        "vpa",
        &["198.18.40.2/30"],
    );
    link(
        &pod_b,
        "eth0",
        &["198.18.41.1/30"],
        &node,
        "vpb",
        &["198.18.41.2/30"],
    );
    // A pod with two interfaces (a second network attached, as Multus does).
    link(
        &pod_b,
        "net1",
        &["198.18.42.1/30"],
        &node,
        "vpb2",
        &["198.18.42.2/30"],
    );
    let (uid_a, uid_b, uid_h, uid_idle) = (
        "aaaaaaaa-1111-2222-3333-444444444444",
        "bbbbbbbb-1111-2222-3333-444444444444",
        "cccccccc-1111-2222-3333-444444444444",
        "dddddddd-1111-2222-3333-444444444444",
    );
    let (cgroups, dir_h) = kubelet_cgroups(&node, &pod_a, &pod_b, [uid_a, uid_b, uid_h, uid_idle]);
    let root = cgroups.root.display().to_string();
    // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup tree, which the
    // sensor on a node (hostNetwork, host /sys) sees.
    let resolve = |uid: &str| {
        try_sh(&format!(
            "nsenter --net=/var/run/netns/{} {} --resolve-pod {uid} --cgroup-root {root}",
            node.name,
            sensor_bin()
        ))
    };
    let json = |uid: &str| -> serde_json::Value {
        let (ok, text) = resolve(uid);
        assert!(ok, "{uid}: {text}");
        serde_json::from_str(&text).unwrap()
    };
    let ifindex = |name: &str| {
        node.sh(&format!("cat /sys/class/net/{name}/ifindex"))
            .trim()
            .parse::<u64>()
            .unwrap()
    };

    let a = json(uid_a);
    assert_eq!(a["hostNetwork"], false);
    assert_eq!(
        a["interfaces"],
        serde_json::json!([{"name": "vpa", "ifindex": ifindex("vpa"), "podSide": "eth0"}])
    );
    let mut b: Vec<(String, String)> = json(uid_b)["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["podSide"].as_str().unwrap().to_owned(),
                i["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    b.sort();
    assert_eq!(
        b,
        [
            ("eth0".to_owned(), "vpb".to_owned()),
            ("net1".to_owned(), "vpb2".to_owned())
        ]
    );
    let h = json(uid_h);
    assert_eq!(h["hostNetwork"], true);
    assert_eq!(h["interfaces"], serde_json::json!([]));
    let pod_dir_h = dir_h.parent().unwrap();
    let inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(pod_dir_h).unwrap().ino()
    };
    assert_eq!(
        h["cgroupId"], inode,
        "the cgroup v2 id is the pod directory's inode"
    );
    assert_eq!(h["cgroupDir"], pod_dir_h.display().to_string());

    let (ok, text) = resolve(uid_idle);
    assert!(!ok && text.contains("no live process"), "{text}");
    let (ok, text) = resolve("eeeeeeee-1111-2222-3333-444444444444");
    assert!(!ok && text.contains("no cgroup"), "{text}");
}

/// A Kubernetes API for one node, in-process: pods and services listed and watched with
/// the real API's JSON; the test adds and deletes pods while the sensor watches.
mod fake_api {
    use std::sync::{Arc, Mutex};

    use axum::{
        body::Body,
        extract::{Query, State},
        response::Response,
        routing::get,
        Router,
    };
    use serde_json::{json, Value};

    #[derive(Clone)]
    pub struct Api {
        pods: Arc<Mutex<Vec<Value>>>,
        events: tokio::sync::broadcast::Sender<String>,
        version: Arc<Mutex<u64>>,
    }

    pub fn pod(uid: &str, namespace: &str, name: &str, ip: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "1",
                         "labels": {"app": name}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "app:1"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "image": "app:1",
                                              "imageID": "", "containerID": format!("containerd://{uid}")}]}
        })
    }

    impl Api {
        pub fn new(pods: Vec<Value>) -> Self {
            Self {
                pods: Arc::new(Mutex::new(pods)),
                events: tokio::sync::broadcast::channel(64).0,
                version: Arc::new(Mutex::new(10)),
            }
        }

        fn next_version(&self) -> String {
            let mut v = self.version.lock().unwrap();
            *v += 1;
            v.to_string()
        }

        pub fn add(&self, mut pod: Value) {
            pod["metadata"]["resourceVersion"] = json!(self.next_version());
            self.pods.lock().unwrap().push(pod.clone());
            let _ = self
                .events
                .send(format!("{}\n", json!({"type": "ADDED", "object": pod})));
        }

        pub fn delete(&self, uid: &str) {
            let mut pods = self.pods.lock().unwrap();
            if let Some(i) = pods.iter().position(|p| p["metadata"]["uid"] == uid) {
                let mut pod = pods.remove(i);
                pod["metadata"]["resourceVersion"] = json!(self.next_version());
                let _ = self
                    .events
                    .send(format!("{}\n", json!({"type": "DELETED", "object": pod})));
            }
        }

        pub fn router(&self) -> Router {
            Router::new()
                .route("/api/v1/pods", get(pods))
                .route("/api/v1/services", get(services))
                .with_state(self.clone())
        }
    }

    fn watching(params: &[(String, String)]) -> bool {
        params.iter().any(|(k, v)| k == "watch" && v == "true")
    }

    fn json_body(value: &Value) -> Response {
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(value.to_string()))
            .unwrap()
    }

    async fn pods(State(api): State<Api>, Query(params): Query<Vec<(String, String)>>) -> Response {
        if watching(&params) {
            let rx = api.events.subscribe();
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(line) => return Some((Ok::<_, std::io::Error>(line), rx)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap();
        }
        let version = api.version.lock().unwrap().to_string();
        let items = api.pods.lock().unwrap().clone();
        json_body(
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": version}, "items": items}),
        )
    }

    async fn services(Query(params): Query<Vec<(String, String)>>) -> Response {
        if watching(&params) {
            return Response::builder()
                .body(Body::from_stream(futures::stream::pending::<
                    Result<String, std::io::Error>,
                >()))
                .unwrap();
        }
        json_body(
            &json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "5"}, "items": [{
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop", "uid": "svc-1", "resourceVersion": "5"},
                "spec": {"clusterIP": "198.18.59.10", "clusterIPs": ["198.18.59.10"], "ports": [{"port": 80}]}
            }]}),
        )
    }
}

/// A TCP listener on 127.0.0.1 inside network namespace `ns` (the sensor's).
fn listener_in(ns: &Netns) -> std::net::TcpListener {
    let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            // SAFETY: a namespace file, on a thread that ends right after the bind.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            std::net::TcpListener::bind("127.0.0.1:0").unwrap()
        })
        .join()
        .unwrap()
    })
}

/// Runs `f` on a thread inside network namespace `ns` (sockets made there stay there).
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            // SAFETY: a namespace file, on a thread that ends when `f` returns.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            f()
        })
        .join()
        .unwrap()
    })
}

/// UDP port 7007 and TCP port 7008 echo servers on 198.18.55.1 in `outside`, for `secs`.
fn echo_servers(outside: &Netns, secs: u64) -> Vec<std::thread::JoinHandle<()>> {
    let (udp, tcp) = in_netns(outside, || {
        (
            std::net::UdpSocket::bind("198.18.55.1:7007").unwrap(),
            std::net::TcpListener::bind("198.18.55.1:7008").unwrap(),
        )
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    udp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < deadline {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }
    });
    let tcp_thread = std::thread::spawn(move || {
        use std::io::{Read, Write};
        while std::time::Instant::now() < deadline {
            let Ok((mut conn, _)) = tcp.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 2048];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    vec![udp_thread, tcp_thread]
}

/// The hostNetwork pod's traffic, made by a process in its cgroup in the node's namespace:
/// 10 UDP echoes from port 40001, then one TCP connection from port 40003 with 5 echoes.
fn host_pod_traffic(node: &Netns, cgroup: &std::path::Path, scratch: &std::path::Path) {
    let script = "import socket\n\
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
u.bind(('198.18.55.2', 40001)); u.settimeout(2)\n\
for i in range(10):\n    u.sendto(b'pod-udp-%d' % i, ('198.18.55.1', 7007)); u.recv(2048)\n\
t = socket.socket(); t.bind(('198.18.55.2', 40003)); t.settimeout(2)\n\
t.connect(('198.18.55.1', 7008))\n\
for i in range(5):\n    t.sendall(b'pod-tcp-%d' % i); t.recv(2048)\n\
t.close()\n";
    let file = scratch.join("host-pod.py");
    std::fs::write(&file, script).unwrap();
    sh(&format!(
        "nsenter --net=/var/run/netns/{} sh -c 'echo $$ > {}/cgroup.procs && exec python3 {}'",
        node.name,
        cgroup.display(),
        file.display()
    ));
}

/// Node traffic that belongs to no pod: the test process's own UDP echoes from port 40002.
fn node_traffic(node: &Netns) {
    let socket = in_netns(node, || std::net::UdpSocket::bind("198.18.55.2:40002").unwrap());
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..10 {
        socket
            .send_to(format!("node-{i}").as_bytes(), "198.18.55.1:7007")
            .unwrap();
        socket.recv(&mut buf).unwrap();
    }
}

/// The UDP/TCP ports of an IPv4 frame, if it has them.
fn ports(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 38 || frame[12..14] != [0x08, 0x00] || ![6, 17].contains(&frame[23]) {
        return None;
    }
    let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    Some((port(l4), port(l4 + 2)))
}

/// The hostNetwork pod's packets on the node's uplink are exactly tcpdump's packets of its
/// ports there, each in its direction; no other node traffic is recorded.
fn assert_host_pod_recorded(data: &std::path::Path, tcpdump: &std::path::Path) {
    let frames = pcap::read_segments(&segments(data));
    let uses = |f: &pcap::Frame, port: u16| ports(&f.data).is_some_and(|(a, b)| a == port || b == port);
    let recorded: Vec<&pcap::Frame> = frames
        .iter()
        .filter(|f| f.iface == "shop/web-host/uplink")
        .collect();
    assert!(
        recorded.iter().all(|f| uses(f, 40001) || uses(f, 40003)),
        "only the pod's sockets on the uplink"
    );
    assert!(
        !frames.iter().any(|f| uses(f, 40002)),
        "node traffic is not recorded"
    );
    let reference: Vec<pcap::Frame> = pcap::read_pcap(tcpdump, "uplink")
        .into_iter()
        .filter(|f| uses(f, 40001) || uses(f, 40003))
        .collect();
    assert_eq!(
        reference.iter().filter(|f| uses(f, 40001)).count(),
        20,
        "tcpdump saw 10 echoes"
    );
    let mut expected: Vec<&[u8]> = reference.iter().map(|f| f.data.as_slice()).collect();
    let mut got: Vec<&[u8]> = recorded.iter().map(|f| f.data.as_slice()).collect();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(
        got.len(),
        expected.len(),
        "the pod's packets, as many as tcpdump saw"
    );
    assert!(got == expected, "the pod's packets, byte for byte");
    for f in &recorded {
        let (source, _) = ports(&f.data).unwrap();
        let outbound = source == 40001 || source == 40003;
        assert_eq!(
            f.direction,
            if outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            }
        );
    }
}

/// What Kubernetes mode recorded, phase by phase (see the test below).
fn assert_pods_recorded(data: &std::path::Path, uid_web1: &str, [phase1, phase2, phase3]: [u64; 3]) {
    let frames = pcap::read_segments(&segments(data));
    let icmp = |iface: &str, from: u64, to: u64| {
        frames
            .iter()
            .filter(|f| {
                f.iface == iface && f.ts_ns >= from && f.ts_ns < to && f.data.len() > 34 && f.data[23] == 1
            })
            .count()
    };
    let end = u64::MAX;
    assert_eq!(
        icmp("shop/web-1/eth0", phase1, phase2),
        10,
        "web-1 while targeted"
    );
    assert_eq!(icmp("shop/web-2/eth0", phase2, phase3), 10, "web-2 once added");
    assert_eq!(icmp("shop/web-2/eth0", phase3, end), 10);
    assert_eq!(
        icmp("shop/web-1/eth0", phase3, end),
        0,
        "web-1 after its deletion"
    );
    // Directions are the pod's: what it sends (its own address as the source) is
    // outbound, what it receives inbound (tcpdump -Q out/in inside the pod would agree).
    for (iface, own) in [
        ("shop/web-1/eth0", [198, 18, 50, 1]),
        ("shop/web-2/eth0", [198, 18, 51, 1]),
    ] {
        let ipv4: Vec<&pcap::Frame> = frames
            .iter()
            .filter(|f| f.iface == iface && f.data.len() > 34 && f.data[12..14] == [8, 0])
            .collect();
        assert!(ipv4.len() >= 20, "{iface}: {} IPv4 frames", ipv4.len());
        for f in ipv4 {
            let expected = if f.data[26..30] == own {
                Direction::Outbound
            } else if f.data[30..34] == own {
                Direction::Inbound
            } else {
                continue;
            };
            assert_eq!(f.direction, expected, "{iface}: {:?}", &f.data[26..34]);
        }
    }
    let names: std::collections::BTreeSet<&str> = frames.iter().map(|f| f.iface.as_str()).collect();
    assert_eq!(
        names,
        ["shop/web-1/eth0", "shop/web-2/eth0", "shop/web-host/uplink"]
            .into_iter()
            .collect(),
        "db-1 is never captured"
    );
    // tshark shows the pods' names for their addresses and on the interfaces.
    let files = segments(data);
    let shown = sh(&format!(
        "tshark -r {} -N n -T fields -e frame.interface_name -e ip.src_host -e frame.interface_description",
        files[0].display()
    ));
    if std::env::var_os("PODCAP_SHOW").is_some() {
        eprintln!("{shown}");
    }
    assert!(shown.contains("shop/web-1/eth0\tweb-1.shop"), "{shown}");
    assert!(
        shown.contains("node=node-1") && shown.contains(&format!("uid={uid_web1}")),
        "{shown}"
    );
}

/// A node N with three pods (their own namespaces, veths vka..vkc) and an uplink to the
/// outside O (N's default route): the hostNetwork pod's traffic and the node's own go there.
fn kubernetes_node() -> (Netns, Vec<Netns>, Netns) {
    let node = Netns::new("pckN");
    let pods: Vec<Netns> = ["pckA", "pckB", "pckC"].iter().map(|n| Netns::new(n)).collect();
    for (i, (pod, host)) in pods.iter().zip(["vka", "vkb", "vkc"]).enumerate() {
        link(
            pod,
            "eth0",
            &[&format!("198.18.5{i}.1/30")],
            &node,
            host,
            &[&format!("198.18.5{i}.2/30")],
        );
    }
    let outside = Netns::new("pckO");
    link(
        &node,
        "uplink",
        &["198.18.55.2/30"],
        &outside,
        "eth0",
        &["198.18.55.1/30"],
    );
    node.sh("ip route add default via 198.18.55.1");
    (node, pods, outside)
}

#[test]
fn kubernetes_mode_captures_the_targeted_pods_as_they_come_and_go() {
    let Some(_serial) = privileged() else { return };
    let (node, pods, outside) = kubernetes_node();
    let uids = [
        "a0000000-0000-0000-0000-00000000000a",
        "b0000000-0000-0000-0000-00000000000b",
        "c0000000-0000-0000-0000-00000000000c",
    ];
    let mut cgroups = CgroupTree::new("k8s");
    for (pod, uid) in pods.iter().zip(uids) {
        let dir = cgroups.dir(&format!("kubepods/besteffort/pod{uid}/ctr"));
        cgroups.process(pod, &dir);
    }
    let uid_host = "d0000000-0000-0000-0000-00000000000d";
    let host_cgroup = cgroups.dir(&format!("kubepods/burstable/pod{uid_host}/ctr"));
    let mut host_pod = fake_api::pod(uid_host, "shop", "web-host", "198.18.55.2");
    host_pod["spec"]["hostNetwork"] = serde_json::json!(true);
    let api = fake_api::Api::new(vec![
        fake_api::pod(uids[0], "shop", "web-1", "198.18.50.1"),
        fake_api::pod(uids[2], "shop", "db-1", "198.18.52.1"),
        host_pod,
    ]);
    let listener = listener_in(&node);
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let router = api.router();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, router).await.unwrap();
    });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "tap:\n  regex: ^web-\n  namespaces: [shop]\n").unwrap();
    // nsenter, not `ip netns exec`: the sensor must see the host's cgroup tree.
    let mut sensor = Proc::spawn(
        "podcap-sensor",
        &format!(
            "env RUST_LOG=info nsenter --net=/var/run/netns/{} {} --node node-1 --kube-api http://127.0.0.1:{port} --cgroup-root {} --config {} --data-dir {}",
            node.name,
            sensor_bin(),
            cgroups.root.display(),
            config.display(),
            data.display()
        ),
    );
    sensor.wait_for("capturing shop/web-1/eth0", Duration::from_secs(30));
    // The default route's interface is where hostNetwork pods are recorded.
    sensor.wait_for("capturing shop/web-host/uplink", Duration::from_secs(10));
    let dump = dir.path().join("uplink.pcap");
    let mut tcpdump = start_tcpdump(&node, "uplink", &dump, "");
    let echo = echo_servers(&outside, 8);
    host_pod_traffic(&node, &host_cgroup, dir.path());
    node_traffic(&node);
    node.sh("ping -c 3 -i 0.05 198.18.55.1");
    let ping = |i: usize| pods[i].sh(&format!("ping -c 5 -i 0.02 198.18.5{i}.2"));
    let phase1 = realtime_ns();
    for i in 0..3 {
        ping(i);
    }
    // A pod added while running is captured within a second or two.
    let added = std::time::Instant::now();
    api.add(fake_api::pod(uids[1], "shop", "web-2", "198.18.51.1"));
    sensor.wait_for("capturing shop/web-2/eth0", Duration::from_secs(10));
    assert!(
        added.elapsed() < Duration::from_secs(2),
        "took {:?}",
        added.elapsed()
    );
    let phase2 = realtime_ns();
    for i in 0..3 {
        ping(i);
    }
    // A deleted pod stops being captured.
    api.delete(uids[0]);
    sensor.wait_for("stopped capturing shop/web-1/eth0", Duration::from_secs(10));
    let phase3 = realtime_ns();
    for i in 0..3 {
        ping(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    tcpdump.stop();
    runtime.shutdown_background();
    for thread in echo {
        thread.join().unwrap();
    }

    assert_pods_recorded(&data, uids[0], [phase1, phase2, phase3]);
    assert_host_pod_recorded(&data, &dump);
}
