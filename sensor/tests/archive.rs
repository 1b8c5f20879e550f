//! Privileged tests of the object-storage archive, end to end: the real sensor uploads to a
//! real S3 server while real traffic flows in network namespaces, and the real `podcap dump
//! --archive` reads it back with no sensor running; tcpdump is the oracle. The faults of
//! the server (refusing, silent) are in `archive_faults.rs`; the harness is
//! `common/archive.rs`.
//!
//! The S3 server is moto's server mode (PyPI `moto[server]`, installed by `cargo xtask
//! setup`), run by each test inside its node namespace on loopback: it speaks S3 (PUT,
//! ranged GET, listings, multipart) and enforces `If-None-Match: *`, so an upload that would
//! overwrite an object fails there instead of passing silently. It keeps its buckets in
//! memory, so a server restart in the middle of uploads is tested as a stall instead: the
//! server stopped (`SIGSTOP`: the kernel still accepts connections, nothing answers, the
//! requests time out) and continued with the requests it was sent meanwhile.
//!
//! Only `198.18.0.0/15` addresses inside namespaces made here and loopback are used.
#![expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "the archive's own lower-case keys"
)]
mod common;

use std::{path::Path, time::Duration};

use common::{archive::*, pcap, *};
use podcap_sensor::{sys::realtime_ns, units::format_rfc3339_ns};

#[test]
fn the_archive_holds_what_the_sensor_recorded_once_and_reads_back_without_it() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("e");
    let _s3 = S3Server::start(&node);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let oracle = dir.path().join("oracle.pcap");
    let args = format!(
        "--iface n0 --data-dir {} --segment-size 64KB --segment-time 1s --archive s3://{BUCKET}/e2e \
         --archive-segments --archive-node node-a --archive-drain 10s",
        data.display()
    );
    let mut tcpdump = start_tcpdump(&node, "n0", &oracle, "");
    let mut sensor = start_archiving_sensor(&node, &args);
    std::thread::sleep(Duration::from_millis(300));
    let from = realtime_ns();
    let ping = pod.sh("ping -c 30 -i 0.01 198.18.7.2");
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    udp_burst(&pod, "198.18.7.2", "64,700,1400", 60);
    // Rotation at 64 KB waits for a write in flight, so on a busy disk a segment takes
    // more: traffic goes on until three segments are finished (the sensor closes a fourth
    // at stop).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while finished_segments(&data).len() < 3 && std::time::Instant::now() < deadline {
        udp_burst(&pod, "198.18.7.2", "1400", 20);
    }
    std::thread::sleep(Duration::from_millis(300));
    let to = realtime_ns();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    tcpdump.stop();

    // Every finished segment is in the archive once, with its manifest; no gap.
    let stored = finished_segments(&data);
    assert!(stored.len() >= 3, "rotation at 64KB: {stored:?}");
    let keys = bucket_keys(&node, "e2e/podcap/v1/default/nodes/node-a/");
    let manifests = keys.iter().filter(|k| k.ends_with(".json")).count();
    let objects = keys.iter().filter(|k| k.ends_with(".pcapng.zst")).count();
    assert_eq!((manifests, objects), (stored.len(), stored.len()), "{keys:#?}");
    assert!(!keys.iter().any(|k| k.ends_with(".gap.json")), "{keys:#?}");

    // Read back with no sensor: exactly tcpdump's packets of the window.
    let out = dir.path().join("out");
    let (ok, text) = podcap(
        &node,
        &format!(
            "dump --archive s3://{BUCKET}/e2e --from {} --to {} --dest {}",
            format_rfc3339_ns(from),
            format_rfc3339_ns(to),
            out.display()
        ),
    );
    assert!(ok, "{text}");
    let file = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    assert_tshark_clean(&file);
    let dumped = pcap::read_segments(&[file]);
    assert!(dumped.iter().all(|f| f.iface == "node-a/n0"), "named by node");
    let reference = pcap::window(&pcap::read_pcap(&oracle, "n0"), from, to);
    assert!(reference.len() >= 240, "{} frames in the window", reference.len());
    let result = pcap::compare(&reference, &dumped);
    assert!(
        result.missing.is_empty() && result.extra.is_empty(),
        "the offline dump is not tcpdump's window: missing {:#?}, extra {:#?}",
        &result.missing[..result.missing.len().min(5)],
        &result.extra[..result.extra.len().min(5)]
    );
    let recorded = pcap::window(&pcap::read_segments(&stored), from, to);
    assert_eq!(frames(&dumped), frames(&recorded), "and the store's");
    assert!(text.contains("manifests read"), "{text}");

    // A restart finds every upload done: nothing is sent twice (moto would refuse an
    // overwrite, counted as a failure).
    let mut again = start_archiving_sensor(&node, &args);
    std::thread::sleep(Duration::from_millis(2500));
    let found = metric(&node, "podcap_archive_found_uploaded_total");
    assert!(found >= stored.len() as u64, "found {found} of {}", stored.len());
    assert_eq!(metric(&node, "podcap_archive_failures_total"), 0);
    assert_eq!(again.stop(), Some(0), "{}", again.log_text());
    let stored = finished_segments(&data);
    let keys = bucket_keys(&node, "e2e/podcap/v1/default/nodes/node-a/");
    assert_eq!(keys.iter().filter(|k| k.ends_with(".json")).count(), stored.len());

    let (ok, listing) = podcap(&node, &format!("archive ls s3://{BUCKET}/e2e"));
    assert!(ok, "{listing}");
    assert!(
        listing.contains("node-a") && listing.contains("GAPS"),
        "{listing}"
    );
    report(
        "the archive is read back with no sensor",
        "a window of ping and UDP, uploaded segment by segment, then a restart",
        "nothing: the offline dump equals tcpdump's window; the restart sends nothing twice",
        "every segment once, with its manifest",
    );
}
#[test]
fn a_missing_bucket_is_named_at_start_and_capture_goes_on() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("b");
    let _s3 = S3Server::start(&node);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = format!(
        "--iface n0 --data-dir {} --archive s3://no-such-bucket/x --archive-segments --archive-drain 1s",
        data.display()
    );
    let mut sensor = start_archiving_sensor(&node, &args);
    wait_in_log(&sensor, "no such bucket");
    let ping = pod.sh("ping -c 10 -i 0.01 198.18.7.2");
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let recorded = pcap::read_segments(&finished_segments(&data));
    assert!(recorded.len() >= 20, "capture went on: {} frames", recorded.len());

    // A URL that is no archive at all is refused before anything starts.
    let (ok, text) = try_sh(&node.exec(&format!(
        "{} --iface n0 --data-dir {} --archive ftp://x/y 2>&1",
        sensor_bin(),
        data.display()
    )));
    assert!(
        !ok && text.contains("--archive: \"ftp://x/y\" is not s3://"),
        "{text}"
    );
}
/// Every finished segment of the store in `data` is in the archive under `prefix` exactly
/// once (one object, one manifest, none orphaned), with no gap, and the offline dump of
/// it (into `out`) holds exactly the store's frames.
fn assert_archived_once_and_equal(node: &Netns, prefix: &str, node_name: &str, data: &Path, out: &Path) {
    let stored = finished_segments(data);
    let keys = bucket_keys(node, &format!("{prefix}/podcap/v1/default/nodes/{node_name}/"));
    assert!(!keys.iter().any(|k| k.ends_with(".gap.json")), "{keys:#?}");
    let manifests = keys.iter().filter(|k| k.ends_with(".json")).count();
    let objects = keys.iter().filter(|k| k.ends_with(".pcapng.zst")).count();
    assert_eq!(
        (manifests, objects),
        (stored.len(), stored.len()),
        "one object and one manifest per segment: {keys:#?}"
    );
    let (ok, text) = podcap(
        node,
        &format!(
            "dump --archive s3://{BUCKET}/{prefix} --time 1h --dest {}",
            out.display()
        ),
    );
    assert!(ok, "{text}");
    let file = std::fs::read_dir(out).unwrap().next().unwrap().unwrap().path();
    assert_eq!(
        frames(&pcap::read_segments(&[file])),
        frames(&pcap::read_segments(&stored))
    );
}

#[test]
fn a_stalled_server_that_comes_back_gets_everything_exactly_once() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("s");
    let s3 = S3Server::start(&node);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = format!(
        "--iface n0 --data-dir {} --segment-size 64KB --segment-time 1s --archive s3://{BUCKET}/stall \
         --archive-segments --archive-node node-s --archive-drain 30s --archive-timeout 2s",
        data.display()
    );
    let mut sensor = start_archiving_sensor(&node, &args);
    let mut traffic = Proc::spawn("ping", &pod.exec("ping -i 0.005 -s 1000 198.18.7.2"));
    std::thread::sleep(Duration::from_secs(2));
    s3.stall();
    std::thread::sleep(Duration::from_secs(8));
    let backlog = metric(&node, "podcap_archive_backlog_segments");
    let failures = metric(&node, "podcap_archive_failures_total");
    s3.resume();
    assert!(
        backlog >= 1,
        "segments waited while the server was stalled: {backlog}"
    );
    assert!(failures >= 1, "requests timed out: {failures}");
    std::thread::sleep(Duration::from_secs(2));
    traffic.signal(2);
    let _ = traffic.child.wait();
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    while metric(&node, "podcap_archive_backlog_segments") > 0 {
        assert!(std::time::Instant::now() < deadline, "the backlog never drained");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    assert_archived_once_and_equal(&node, "stall", "node-s", &data, &dir.path().join("out"));
    report(
        "the object store stalls in the middle of uploads and comes back",
        "8 s of SIGSTOP under 200 packets/s, --archive-timeout 2s",
        "nothing: one object and one manifest per segment, the offline dump equals the store",
        &format!("{failures} requests timed out and were retried; the backlog ({backlog}) drained"),
    );
}

#[test]
fn wrong_credentials_are_named_at_start_and_capture_goes_on() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("w");
    let _s3 = S3Server::start_checking_keys(&node, true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = format!(
        "--iface n0 --data-dir {} --archive s3://{BUCKET}/w --archive-segments --archive-drain 1s",
        data.display()
    );
    let mut sensor = start_archiving_sensor(&node, &args);
    wait_in_log(&sensor, "access denied");
    assert!(
        sensor.log_text().contains("InvalidAccessKeyId"),
        "the server's reason is given: {}",
        sensor.log_text()
    );
    let ping = pod.sh("ping -c 10 -i 0.01 198.18.7.2");
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let recorded = pcap::read_segments(&finished_segments(&data));
    assert!(recorded.len() >= 20, "capture went on: {} frames", recorded.len());
    report(
        "the archive's credentials are wrong",
        "an access key the S3 server does not know (moto checking keys)",
        "nothing recorded: capture went on, the segments wait in the store",
        "`access denied` with the server's InvalidAccessKeyId, at start",
    );
}

#[test]
fn kill_9_during_uploads_leaves_no_duplicate_and_no_gap() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("k");
    let _s3 = S3Server::start(&node);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = format!(
        "--iface n0 --data-dir {} --segment-size 64KB --segment-time 1s --archive s3://{BUCKET}/k9 \
         --archive-segments --archive-node node-k --archive-drain 10s",
        data.display()
    );
    let _traffic = Proc::spawn("ping", &pod.exec("ping -i 0.002 -s 1000 198.18.7.2"));
    let mut seed = realtime_ns() | 1;
    for _ in 0..4 {
        let sensor = start_archiving_sensor(&node, &args);
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(1500 + (seed >> 33) % 2000));
        sensor.signal(9);
    }
    let mut last = start_archiving_sensor(&node, &args);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        metric(&node, "podcap_archive_failures_total"),
        0,
        "no overwrite tried"
    );
    assert_eq!(last.stop(), Some(0), "{}", last.log_text());
    assert_archived_once_and_equal(&node, "k9", "node-k", &data, &dir.path().join("out"));
    report(
        "kill -9 of the sensor while it uploads",
        "4 times at random moments, then a clean run",
        "nothing: one object and one manifest per segment, the offline dump equals the store",
        "found the earlier uploads in the bucket",
    );
}

#[test]
fn snapshots_and_recording_iterations_go_up_and_read_back_by_name() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("s");
    let _s3 = S3Server::start(&node);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let oracle = dir.path().join("udp.pcap");
    // Snapshots and recordings only: no --archive-segments.
    let args = format!(
        "--iface n0 --data-dir {} --archive s3://{BUCKET}/kept --archive-node node-s --archive-drain 10s",
        data.display()
    );
    let mut tcpdump = start_tcpdump(&node, "n0", &oracle, "udp");
    let mut sensor = start_archiving_sensor(&node, &args);
    let sensor_url = "--sensor http://127.0.0.1:9090";
    // A recording job of UDP for 3 s from 1 s ahead.
    let start = realtime_ns() + 1_000_000_000;
    let end = start + 3_000_000_000;
    let (ok, text) = podcap(
        &node,
        &format!(
            "record create burst --filter udp --start {} --duration 3s {sensor_url}",
            format_rfc3339_ns(start)
        ),
    );
    assert!(ok, "{text}");
    std::thread::sleep(Duration::from_millis(1300));
    udp_burst(&pod, "198.18.7.2", "64,700,1400", 30);
    pod.sh("ping -c 10 -i 0.02 198.18.7.2");
    let now = realtime_ns();
    std::thread::sleep(Duration::from_nanos(end.saturating_sub(now)) + Duration::from_secs(3));
    let (ok, text) = podcap(
        &node,
        &format!(
            "snapshot create s1 --from {} --to {} {sensor_url}",
            format_rfc3339_ns(start),
            format_rfc3339_ns(end)
        ),
    );
    assert!(ok, "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&node, "podcap_archive_uploaded_objects_total") < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", sensor.log_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    tcpdump.stop();
    let keys = bucket_keys(&node, "kept/podcap/v1/default/");
    assert!(
        !keys.iter().any(|k| k.contains("/nodes/")),
        "no segments: {keys:#?}"
    );

    // Read back by name with no sensor: the snapshot is the node's snapshot file, the
    // recording is tcpdump's UDP of its window.
    let out = dir.path().join("out");
    let (ok, text) = podcap(
        &node,
        &format!(
            "dump --archive s3://{BUCKET}/kept --snapshot s1 --dest {}",
            out.display()
        ),
    );
    assert!(ok, "{text}");
    let snapshot = pcap::read_segments(&[out.join("podcap-snapshot-s1.pcapng")]);
    let kept = pcap::read_segments(&[data.join("snapshots/s1/snapshot.pcapng")]);
    assert!(kept.len() >= 110, "{} packets in the snapshot", kept.len());
    assert_eq!(frames(&snapshot), frames(&kept));
    let (ok, text) = podcap(
        &node,
        &format!(
            "dump --archive s3://{BUCKET}/kept --recording burst --dest {}",
            out.display()
        ),
    );
    assert!(ok, "{text}");
    let recorded = pcap::read_segments(&[out.join("podcap-recording-burst.pcapng")]);
    let wanted = pcap::window(&pcap::read_pcap(&oracle, "n0"), start, end);
    let result = pcap::compare(&wanted, &recorded);
    assert!(
        result.missing.is_empty() && result.extra.is_empty() && result.exact == 90,
        "{} exact, {} missing, {} extra",
        result.exact,
        result.missing.len(),
        result.extra.len()
    );
    let (ok, listing) = podcap(&node, &format!("archive ls s3://{BUCKET}/kept"));
    assert!(
        ok && listing.contains("s1") && listing.contains("burst"),
        "{listing}"
    );
}
