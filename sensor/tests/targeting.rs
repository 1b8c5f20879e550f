//! Privileged test of the targeting file (`--targeting`): applied at start, reloaded when
//! edited, and the last good one kept when an edit is bad.
//!
//! Each test builds its own namespaces (guards delete them on every exit path) and uses
//! only `198.18.0.0/15` and `2001:db8::/32` addresses inside them.
mod common;

use std::time::Duration;

use common::{pcap, topology::*, *};
use podcap_sensor::sys::realtime_ns;

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
