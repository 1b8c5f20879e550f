//! Privileged tests of `podcap dump`, `podcap live` and `podcap config` against real
//! sensors on two "nodes" (network namespaces) with real traffic.
//!
//! Each test builds its own namespaces (guards delete them on every exit path) and uses
//! only `198.18.0.0/15` and `2001:db8::/32` addresses inside them.
mod common;

use std::time::Duration;

use common::{pcap, topology::*, *};
use podcap_sensor::sys::realtime_ns;

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
        ok && text.contains("false (api)") && text.contains("2h (api)"),
        "the settings table after the change: {text}"
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

/// Traffic routed between two recorded interfaces of one node is in its slice twice (it
/// crossed both), and Wireshark takes each second TCP copy for a retransmission;
/// `podcap dump --one-copy` writes each packet once, on the interface it left through.
#[test]
fn one_copy_writes_a_routed_packet_once_and_wireshark_sees_no_retransmission() {
    let Some(_serial) = privileged() else { return };
    let t = topology("u");
    t.a.sh("ip route add default via 198.18.0.2");
    t.b.sh("ip route add default via 198.18.1.2");
    t.n.sh("sysctl -qw net.ipv4.ip_forward=1");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sensor = start_sensor(
        &t.n,
        &format!("--iface n0 --iface n1 --data-dir {}", data.display()),
    );
    let mut iperf = Proc::spawn(
        "iperf3 server",
        &t.b.exec("iperf3 -s -1 -B 198.18.1.1 --forceflush"),
    );
    iperf.wait_for("Server listening", Duration::from_secs(10));
    t.a.sh("iperf3 -c 198.18.1.1 -n 2M -b 100M");
    // The window ends at the request, which the sensor flushes for: no wait needed.
    let dump = |file: &std::path::Path, extra: &str| {
        try_sh(&t.n.exec(&format!(
            "{} dump --time 1m --filter 'tcp port 5201' {extra} --dest {} --sensor http://127.0.0.1:9090",
            podcap_cli().display(),
            file.display()
        )))
    };
    let (both, once) = (dir.path().join("both.pcapng"), dir.path().join("once.pcapng"));
    let (ok, text) = dump(&both, "");
    assert!(ok, "{text}");
    let (ok, text) = dump(&once, "--one-copy");
    assert!(ok && text.contains("written once"), "{text}");
    assert_tshark_clean(&once);
    let count = |file: &std::path::Path, filter: &str| -> usize {
        sh(&format!(
            "tshark -r {} -Y '{filter}' -T fields -e frame.number 2>/dev/null | wc -l",
            file.display()
        ))
        .trim()
        .parse()
        .unwrap()
    };
    let (packets_both, packets_once) = (count(&both, "tcp"), count(&once, "tcp"));
    let retransmissions_both = count(&both, "tcp.analysis.retransmission");
    assert!(
        retransmissions_both > 0,
        "both copies: Wireshark sees retransmissions ({packets_both} packets)"
    );
    assert_eq!(
        count(&once, "tcp.analysis.retransmission"),
        0,
        "one copy: no retransmission ({packets_once} packets; {retransmissions_both} with both copies)"
    );
    assert!(packets_once > 100, "{packets_once}");
    assert_eq!(
        packets_both,
        2 * packets_once,
        "every packet was recorded twice, and is written once"
    );
    assert_eq!(
        count(&once, "frame.packet_flags_direction == 2"),
        packets_once,
        "each is the copy that left through its interface"
    );
    drop(iperf);
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
}
