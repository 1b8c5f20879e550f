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

fn udp_burst(ns: &Netns, dst: &str, sizes: &str, count: usize) {
    let family = if dst.contains(':') { "AF_INET6" } else { "AF_INET" };
    ns.sh(&format!(
        "/usr/bin/python3 -c 'import socket,time\ns=socket.socket(socket.{family},socket.SOCK_DGRAM)\nfor i in range({count}):\n  for n in [{sizes}]:\n    s.sendto(bytes([i%256])*n,(\"{dst}\",9))\n  time.sleep(0.001)'"
    ));
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
    let _serial = serial();
    let t = topology("o");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let reference = dir.path().join("ref.pcap");
    let unselected = dir.path().join("unselected.pcap");

    let mut tcpdump = start_tcpdump(&t.n, "n0", &reference, "");
    let mut tcpdump_other = start_tcpdump(&t.n, "n1", &unselected, "");
    let mut sensor = start_sensor(
        &t.n,
        &format!("--iface n0 --data-dir {} --segment-size 2MB", data.display()),
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
        result.gso_superframes > 0,
        "the TCP transfer produced no GSO super-frame: the test lost its point"
    );
    assert!(result.exact > 200, "too little traffic compared");
    assert_directions(&captured);
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
