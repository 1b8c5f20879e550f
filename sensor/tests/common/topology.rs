//! What several privileged test targets share: the two-"pod" topology, its traffic, a
//! sensor start that must be refused, and a slice checked against tcpdump.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use super::{pcap, *};

/// Two "pods" (A, B) and a "node" N: A's traffic is selected (n0), B's is not (n1).
pub struct Topology {
    pub a: Netns,
    pub b: Netns,
    pub n: Netns,
}

pub fn topology(tag: &str) -> Topology {
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
pub fn mixed_traffic(t: &Topology) {
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

/// The store's slice of `[from, to)` holds the same packets as `captured`, in timestamp order.
pub fn assert_slice_matches(
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

/// Runs the sensor in `ns` expecting it to refuse; returns its stderr.
pub fn refused(ns: &Netns, args: &str) -> String {
    let (ok, out) = try_sh(&ns.exec(&format!("{} {args}", sensor_bin())));
    assert!(!ok, "the sensor accepted `{args}`:\n{out}");
    assert!(!capture_veth_present(ns), "`{args}` left the capture veth behind");
    assert_eq!(podcap_programs_loaded(), 0, "`{args}` left programs loaded");
    out
}
