//! Privileged tests of what a node keeps past the rolling window, with the real sensor and
//! CLI, real traffic in network namespaces and tcpdump as the oracle: a snapshot holds
//! exactly what tcpdump saw of its window and selection, outlives the rolling store's
//! retention and a restart unchanged, and a `kill -9` while one is made leaves it whole or
//! not at all; a recording job records exactly tcpdump's packets of its filter inside its
//! window, then expires.
//!
//! Only `198.18.0.0/15` addresses inside namespaces made here are used.
mod common;

use std::{path::Path, time::Duration};

use common::{pcap, *};
use podcap_sensor::{sys::realtime_ns, units::format_rfc3339_ns};

/// A "pod" namespace and a "node" namespace joined by a veth (p0 ↔ n0); the sensor, its
/// API (loopback) and the CLI live in the node's.
fn pod_and_node(tag: &str) -> (Netns, Netns) {
    let pod = Netns::new(&format!("pcs{tag}P"));
    let node = Netns::new(&format!("pcs{tag}N"));
    link(&pod, "p0", &["198.18.4.1/30"], &node, "n0", &["198.18.4.2/30"]);
    (pod, node)
}

fn podcap(node: &Netns, args: &str) -> (bool, String) {
    try_sh(&node.exec(&format!("{} {args} 2>&1", podcap_cli().display())))
}

fn sha256_hex(path: &Path) -> String {
    let out = sh(&format!("sha256sum {}", path.display()));
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn a_snapshot_holds_what_tcpdump_saw_and_outlives_retention_and_a_restart() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("k");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let oracle = dir.path().join("udp.pcap");
    // Tiny segments and store: the traffic after the window retires every segment of it.
    let args = format!(
        "--iface n0 --data-dir {} --segment-size 64KB --segment-time 1s --max-size 256KB",
        data.display()
    );
    let mut tcpdump = start_tcpdump(&node, "n0", &oracle, "udp");
    let mut sensor = start_sensor(&node, &args);
    std::thread::sleep(Duration::from_millis(300));

    let from = realtime_ns();
    let ping = pod.sh("ping -c 20 -i 0.01 198.18.4.2");
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    udp_burst(&pod, "198.18.4.2", "64,700,1400", 20);
    std::thread::sleep(Duration::from_millis(500));
    let to = realtime_ns();
    std::thread::sleep(Duration::from_millis(1200)); // flushed to the store

    let (ok, text) = podcap(
        &node,
        &format!(
            "snapshot create w1 --from {} --to {} --filter udp --sensor http://127.0.0.1:9090",
            format_rfc3339_ns(from),
            format_rfc3339_ns(to)
        ),
    );
    assert!(ok, "{text}");
    assert!(text.contains("kept w1: 60 packets"), "{text}");
    let file = data.join("snapshots/w1/snapshot.pcapng");
    let made = std::fs::read(&file).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("snapshots/w1/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sha256"].as_str().unwrap(), sha256_hex(&file));
    assert_tshark_clean(&file);

    // The traffic after it fills the store many times over.
    udp_burst(&pod, "198.18.4.2", "1400,1400,1400,1400", 400);
    std::thread::sleep(Duration::from_millis(2500));
    let mut finished = segments(&data);
    finished.retain(|p| !p.to_string_lossy().ends_with(".active"));
    let held = pcap::read_segments(&finished);
    assert!(
        held.iter().all(|f| f.ts_ns > to),
        "retention should have retired the window's segments"
    );
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    tcpdump.stop();

    // A restart, then the snapshot downloads as it was made: tcpdump's UDP of the window.
    let mut sensor = start_sensor(&node, &args);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (ok, text) = podcap(
        &node,
        &format!(
            "dump --snapshot w1 --dest {} --sensor http://127.0.0.1:9090",
            out.display()
        ),
    );
    assert!(ok, "{text}");
    assert_eq!(std::fs::read(&file).unwrap(), made, "the snapshot never changes");
    let dumped = out.join("podcap-snapshot-w1.pcapng");
    assert_tshark_clean(&dumped);
    let got = pcap::read_segments(&[dumped]);
    let wanted = pcap::window(&pcap::read_pcap(&oracle, "n0"), from, to);
    let result = pcap::compare(&wanted, &got);
    assert!(
        result.missing.is_empty() && result.extra.is_empty() && result.exact == 60,
        "{} exact, {} missing, {} extra",
        result.exact,
        result.missing.len(),
        result.extra.len()
    );
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
}

#[test]
fn kill_9_while_a_snapshot_is_made_leaves_it_whole_or_not_at_all() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("x");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = format!("--iface n0 --data-dir {}", data.display());
    let mut sensor = start_sensor(&node, &args);
    // A store worth copying: a few MB of UDP.
    udp_burst(&pod, "198.18.4.2", "1400,1400,1400,1400", 800);
    std::thread::sleep(Duration::from_millis(1200));
    let (mut kept_whole, mut not_made) = (0, 0);
    for (round, delay_ms) in [0u64, 3, 8, 15, 30, 60].into_iter().enumerate() {
        let name = format!("k{round}");
        let mut create = Proc::spawn(
            "podcap snapshot create",
            &node.exec(&format!(
                "{} snapshot create {name} --time 10m --sensor http://127.0.0.1:9090",
                podcap_cli().display()
            )),
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        sensor.signal(9);
        let _ = sensor.child.wait();
        let _ = create.stop();
        sensor = start_sensor(&node, &args);
        let root = data.join("snapshots");
        let leftovers: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-") || n.starts_with(".deleting-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "a restart removes what was half made: {leftovers:?}"
        );
        let folder = root.join(&name);
        if folder.exists() {
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
            assert_eq!(
                manifest["sha256"].as_str().unwrap(),
                sha256_hex(&folder.join("snapshot.pcapng")),
                "{name}: whole"
            );
            assert_tshark_clean(&folder.join("snapshot.pcapng"));
            kept_whole += 1;
        } else {
            not_made += 1;
        }
        let (ok, text) = podcap(&node, "snapshot list -o json --sensor http://127.0.0.1:9090");
        assert!(ok, "{text}");
        let listing: serde_json::Value = serde_json::from_str(&text).unwrap();
        for snapshot in listing["snapshots"].as_array().unwrap() {
            assert_eq!(snapshot["damaged"], serde_json::json!([]), "{listing}");
        }
    }
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    report(
        "kill -9 while a snapshot is made",
        "6 rounds, 0-60 ms into the creation",
        &format!("none: {kept_whole} whole, {not_made} not made (no half snapshot)"),
        "a restart removes the unfinished .tmp- folder",
    );
}

#[test]
fn a_recording_job_records_exactly_its_window_and_filter_then_expires() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("r");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let oracle = dir.path().join("udp.pcap");
    let mut tcpdump = start_tcpdump(&node, "n0", &oracle, "udp");
    let mut sensor = start_sensor(&node, &format!("--iface n0 --data-dir {}", data.display()));
    let sensor_url = "--sensor http://127.0.0.1:9090";
    // A job 3 s ahead, recording UDP for 4 s, whose iteration expires 4 s after it ends.
    let start = realtime_ns() + 3_000_000_000;
    let end = start + 4_000_000_000;
    let (ok, text) = podcap(
        &node,
        &format!(
            "record create nightly --filter udp --start {} --duration 4s --expire 4s {sensor_url}",
            format_rfc3339_ns(start)
        ),
    );
    assert!(ok, "{text}");
    let (ok, text) = podcap(&node, &format!("record list {sensor_url}"));
    assert!(
        ok && text.contains("nightly") && text.contains("scheduled"),
        "{text}"
    );
    // Traffic before, inside and after the window, with quiet gaps at its edges.
    let wait_until = |at: u64| {
        let now = realtime_ns();
        if at > now {
            std::thread::sleep(Duration::from_nanos(at - now));
        }
    };
    udp_burst(&pod, "198.18.4.2", "100,600", 10);
    pod.sh("ping -c 5 -i 0.05 198.18.4.2");
    wait_until(start + 500_000_000);
    udp_burst(&pod, "198.18.4.2", "64,700,1400", 20);
    pod.sh("ping -c 5 -i 0.05 198.18.4.2");
    udp_burst(&pod, "198.18.4.2", "200", 20);
    wait_until(end + 500_000_000);
    udp_burst(&pod, "198.18.4.2", "100,600", 10);
    // The job copies up to 1.5 s behind the clock, every second.
    std::thread::sleep(Duration::from_secs(3));
    let (ok, text) = podcap(&node, &format!("record list -o json {sensor_url}"));
    assert!(ok, "{text}");
    let listing: serde_json::Value = serde_json::from_str(&text).unwrap();
    let job = &listing["nodes"][0]["jobs"][0];
    assert_eq!(job["state"], "finished", "{listing}");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (ok, text) = podcap(
        &node,
        &format!("dump --recording nightly --dest {} {sensor_url}", out.display()),
    );
    assert!(ok, "{text}");
    tcpdump.stop();
    let dumped = out.join("podcap-recording-nightly.pcapng");
    assert_tshark_clean(&dumped);
    let got = pcap::read_segments(&[dumped]);
    let wanted = pcap::window(&pcap::read_pcap(&oracle, "n0"), start, end);
    let result = pcap::compare(&wanted, &got);
    assert!(
        result.missing.is_empty() && result.extra.is_empty() && result.exact == 80,
        "{} exact, {} missing, {} extra",
        result.exact,
        result.missing.len(),
        result.extra.len()
    );
    assert_eq!(job["packets"].as_u64(), Some(80), "{job}");
    assert_eq!(job["drops"].as_u64(), Some(0), "{job}");
    // Its iteration expires 4 s after the end: the folder goes, the job says so.
    wait_until(end + 5_500_000_000);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !data.join("recordings/nightly/0").exists(),
        "the expired iteration's folder is gone"
    );
    let (ok, text) = podcap(&node, &format!("record list {sensor_url}"));
    assert!(ok && text.contains("expired"), "{text}");
    let (ok, text) = podcap(&node, &format!("record delete nightly {sensor_url}"));
    assert!(ok, "{text}");
    assert!(!data.join("recordings/nightly").exists());
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
}
