//! Privileged tests of the capture path on a real kernel with real traffic: the sensor and
//! tcpdump record the same interfaces at the same time, and tcpdump is the oracle; both
//! channels, the tap, drops, filters, bad input, a second sensor and a crash.
//!
//! Each test builds its own namespaces (guards delete them on every exit path) and uses
//! only `198.18.0.0/15` and `2001:db8::/32` addresses inside them.
mod common;

use std::time::Duration;

use common::{pcap, topology::*, *};
use podcap_sensor::{pcapng::Direction, sys::realtime_ns};

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
    let routed_through_veth = capture_veth_present(&t.n);
    assert_eq!(
        routed_through_veth,
        channel == "af-xdp",
        "only AF_XDP needs the veth"
    );

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

    let files = finished_segments(&data);
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
        "reference {} frames, captured {}: exact {}, GSO super-frames {} as {} segments, missing {} ({} wire frames)",
        reference.len(),
        captured.len(),
        result.exact,
        result.gso_superframes,
        result.gso_segments,
        result.missing.len(),
        result.missing_wire_frames
    );
    assert_losses_counted(&files, captured_all.len(), &result, channel == "ring");
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

/// A loaded machine may drop (the veth's queue, a full ring): allowed only when every frame
/// not written is counted, to the frame. `whole_superframes`: the channel records a GSO
/// super-frame as one frame (and loses it as one), not as its segments.
fn assert_losses_counted(
    files: &[std::path::PathBuf],
    written: usize,
    result: &pcap::Comparison,
    whole_superframes: bool,
) {
    let (received, dropped) = pcap::sum_statistics(files);
    let missing = if whole_superframes {
        result.missing.len() as u64
    } else {
        result.missing_wire_frames
    };
    assert_eq!(
        written as u64 + dropped,
        received,
        "every frame taken is written or counted as dropped (written {written}, dropped {dropped}, received {received})"
    );
    assert!(
        missing <= dropped,
        "{missing} frames missing ({} in the reference) where {dropped} were counted as dropped, first: {:#?}",
        result.missing.len(),
        &result.missing[..result.missing.len().min(5)]
    );
}

/// The segments in `data`: at least two (rotation at 2MB), all finished and clean.
fn finished_segments(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let files = segments(data);
    assert!(files.len() >= 2, "expected rotation at 2MB, got {files:?}");
    for f in &files {
        assert!(
            f.extension().is_some_and(|e| e == "pcapng"),
            "unfinished segment left: {}",
            f.display()
        );
        assert_tshark_clean(f);
    }
    files
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
    assert!(
        out.contains("'--segment-size <SIZE>': invalid size \"5XB\""),
        "{out}"
    );
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
    // The secrets would leave the node with the segments.
    let out = refused(
        &t.n,
        &format!(
            "--iface n0 --data-dir {d} --tls-secrets --archive-segments --archive file://{}",
            dir.path().join("archive").display()
        ),
    );
    assert!(
        out.contains("--archive-segments with --tls-secrets would upload the segments' TLS secrets"),
        "{out}"
    );
    let out = refused(&t.n, &format!("--iface n0 --data-dir {d} --max-time 10x"));
    assert!(out.contains("--max-time: invalid duration \"10x\""), "{out}");
    let out = refused(&t.n, &format!("--iface n0 --data-dir {d} --segment-time 0s"));
    assert!(
        out.contains("'--segment-time <DUR>': \"0s\" must be greater than zero"),
        "{out}"
    );
    let out = refused(
        &t.n,
        &format!("--iface n0 --data-dir {d} --segment-size 2GB --max-size 1GB"),
    );
    assert!(
        out.contains(
            "--max-size (1GB) keeps fewer than 4 segments of --segment-size (2GB): give at least 8 GB"
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

    // The AF_XDP channel leaves a capture veth behind; the ring channel (the next run)
    // builds none, and must still delete it.
    let mut first = start_sensor(&t.n, &format!("{args} --channel af-xdp"));
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
    // Simulate a write torn by the crash: half a block at the end of the active segment
    // (after the blocks written, where the zero padding of direct writes was).
    let active = segments(&data)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".active"))
        .unwrap();
    let bytes = std::fs::read(&active).unwrap();
    let written = bytes.len() - podcap_sensor::store::recover::direct_write_padding(&bytes);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(written as u64)
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

/// The kernel's translation of `filter` gives the interpreter's verdict on every frame it
/// can be run on here (`BPF_PROG_TEST_RUN` takes frames up to a page and no VLAN metadata:
/// tagged frames are left to the live comparison).
fn assert_the_kernel_agrees(expression: &str, filter: &podcap_sensor::filter::Filter, all: &[pcap::Frame]) {
    let kernel = podcap_sensor::sys::bpf::load_sched_cls(&podcap_sensor::filter::ebpf::translate(
        filter.program(),
        podcap_sensor::filter::ebpf::Verdict::Return,
    ))
    .unwrap_or_else(|e| panic!("{expression}: the kernel refused the translation: {e}"));
    let mut run = 0;
    for frame in all
        .iter()
        .filter(|f| f.data.len() <= 3000 && f.data.get(12..14) != Some(&[0x81, 0x00][..]))
    {
        let verdict = podcap_sensor::sys::bpf::test_run(&kernel, &frame.data).unwrap();
        assert_eq!(
            verdict == 1,
            filter.matches(&frame.data, frame.orig_len),
            "{expression}: the kernel and user space differ on {:02x?}",
            &frame.data[..frame.data.len().min(64)]
        );
        run += 1;
    }
    assert!(run > 50, "{expression}: {run} frames run in the kernel");
}

/// What the kernel's filter rejected is counted as filtered (refreshed every second).
fn assert_filtered_counted(node: &Netns) {
    let filtered = || {
        node.sh("curl -s http://127.0.0.1:9090/metrics")
            .lines()
            .find_map(|l| l.strip_prefix("podcap_filtered_packets_total{interface=\"n0\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while filtered() < 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(filtered() >= 20, "rejected packets counted: {}", filtered());
}

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
    assert_filtered_counted(&t.n);
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
    assert!(
        sensor.log_text().contains("runs in the kernel"),
        "the filter ran in the kernel: {}",
        sensor.log_text()
    );

    // The table: podcap's filter on every frame tcpdump saw selects exactly the frames a
    // tcpdump running with that filter saw.
    let all = pcap::window(&pcap::read_pcap(&everything, "n0"), from, to);
    assert!(all.len() > 100, "{} frames", all.len());
    // Each packet socket stamps its own time: frames are compared by length and bytes.
    let key = |f: &pcap::Frame| (f.orig_len, f.data.clone());
    for (i, expression) in FILTERS.iter().enumerate() {
        let filter = podcap_sensor::filter::Filter::compile(expression, 262_144).unwrap();
        assert_the_kernel_agrees(expression, &filter, &all);
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
