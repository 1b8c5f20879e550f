//! Privileged tests of the archive against a server that fails: one that refuses
//! connections while the store fills (the store gives segments up: counted and named at
//! once, recorded as gaps when the server comes), and one that takes connections and never
//! answers (what waits is counted meanwhile, a request is a failure after
//! `--archive-timeout`, SIGTERM keeps `--archive-drain`). The silent server is a listener
//! of the test's own, bound inside the node's namespace; the S3 server is moto's (see
//! `archive.rs`).
//!
//! Only `198.18.0.0/15` addresses inside namespaces made here and loopback are used.
#![expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "the archive's own lower-case keys"
)]
mod common;

use std::time::{Duration, Instant};

use common::{archive::*, *};

#[test]
fn an_unreachable_bucket_holds_the_backlog_and_a_full_store_records_gaps() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("g");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No server yet: the endpoint refuses connections. A small store: the traffic retires
    // segments by size while they wait.
    let args = format!(
        "--iface n0 --data-dir {} --segment-size 64KB --segment-time 1s --max-size 256KB \
         --archive s3://{BUCKET}/gaps --archive-segments --archive-node node-g --archive-drain 10s",
        data.display()
    );
    let mut sensor = start_archiving_sensor(&node, &args);
    wait_in_log(&sensor, "the endpoint cannot be reached");
    udp_burst(&pod, "198.18.7.2", "1400,1400,1400,1400", 200);
    std::thread::sleep(Duration::from_millis(1500));
    // Capture went on; the store kept its bound and gave segments up.
    let written = metric(&node, "podcap_written_packets_total{interface=\"n0\"}");
    assert!(written >= 800, "capture went on: {written}");
    let backlog = metric(&node, "podcap_archive_backlog_segments");
    assert!(backlog >= 1, "segments wait: {backlog}");
    // The segments the size bound retired are counted and named as gaps when they go, not
    // when the server comes back.
    let skipped_while_refused = metric(&node, "podcap_archive_skipped_segments_total");
    assert!(
        skipped_while_refused >= 1,
        "retired before upload, counted at once: {skipped_while_refused}"
    );
    let status = archive_status(&node);
    assert_eq!(status["skippedSegments"], skipped_while_refused, "{status}");
    assert!(
        status["gapsToRecord"].as_u64() >= Some(1)
            && status["gapsToRecordOldest"][0]["seq"].as_u64().is_some(),
        "the gaps are named before they can be recorded: {status}"
    );
    assert!(
        status["failing"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the endpoint cannot be reached")),
        "{status}"
    );
    assert!(
        sensor
            .log_text()
            .contains("was retired by the store before it was uploaded"),
        "{}",
        sensor.log_text()
    );

    // The server comes: the backlog goes up, the given-up segments become gaps.
    let _s3 = S3Server::start(&node);
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    while metric(&node, "podcap_archive_backlog_segments") > 0 {
        assert!(std::time::Instant::now() < deadline, "the backlog never drained");
        std::thread::sleep(Duration::from_millis(500));
    }
    let skipped = metric(&node, "podcap_archive_skipped_segments_total");
    assert!(skipped >= 1, "segments were given up: {skipped}");
    assert!(
        wait_until(Duration::from_secs(30), || {
            archive_status(&node)["gapsToRecord"] == 0
        }),
        "the gaps were never recorded: {}",
        archive_status(&node)
    );
    let status = archive_status(&node);
    assert_eq!(status["gapsRecorded"], skipped, "{status}");
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let keys = bucket_keys(&node, "gaps/podcap/v1/default/nodes/node-g/");
    let gaps = keys.iter().filter(|k| k.ends_with(".gap.json")).count();
    assert_eq!(gaps as u64, skipped, "{keys:#?}");
    // Every segment still in the store was uploaded.
    let uploaded = keys
        .iter()
        .filter(|k| k.ends_with(".json") && !k.ends_with(".gap.json"))
        .count();
    assert!(uploaded >= finished_segments(&data).len(), "{keys:#?}");

    // The offline dump says the hole and fails without --allow-partial.
    let out = dir.path().join("out");
    let (ok, text) = podcap(
        &node,
        &format!(
            "dump --archive s3://{BUCKET}/gaps --time 10m --dest {}",
            out.display()
        ),
    );
    assert!(!ok, "{text}");
    assert!(text.contains("was never uploaded"), "{text}");
    let (ok, listing) = podcap(&node, &format!("archive ls s3://{BUCKET}/gaps"));
    assert!(ok && listing.contains("node-g"), "{listing}");
    report(
        "the archive's server refuses connections while the store fills",
        "a store of 256KB, 800 packets of 1400 B, the server started late",
        "the segments the store's size bound retired: recorded as gaps, counted, said by the offline dump",
        &format!(
            "`the endpoint cannot be reached`; capture went on; {skipped_while_refused} segments counted as skipped and named in the status while refused (before the server came), {skipped} gaps recorded once it came"
        ),
    );
}
#[test]
fn a_server_that_never_answers_is_seen_at_once_and_holds_no_stop_up() {
    let Some(_serial) = privileged() else { return };
    let (pod, node) = pod_and_node("q");
    let _silent = SilentServer::start(&node, S3_PORT);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = format!(
        "--iface n0 --data-dir {} --segment-size 64KB --segment-time 1s --archive s3://{BUCKET}/silent \
         --archive-segments --archive-node node-q --archive-drain 2s",
        data.display()
    );
    let _traffic = Proc::spawn("ping", &pod.exec("ping -i 0.01 198.18.7.2"));

    // The default --archive-timeout (60s): the first request waits for a minute, and what
    // the archive owes is counted meanwhile.
    let mut sensor = start_archiving_sensor(&node, &base);
    assert!(
        wait_until(Duration::from_secs(30), || finished_segments(&data).len() >= 3),
        "segments finish"
    );
    let status = archive_status(&node);
    let backlog = status["backlogSegments"].as_u64().unwrap_or(0);
    assert!(backlog >= 3, "three segments finished and wait: {status}");
    assert!(metric(&node, "podcap_archive_backlog_segments") >= 3);
    let age = status["oldestPendingAgeSeconds"].as_f64().unwrap_or(0.0);
    assert!(age >= 1.5, "the oldest waits since its first packet: {status}");
    let waited = status["request"]["seconds"].as_f64().unwrap_or(0.0);
    assert!(
        waited >= 2.0
            && status["request"]["what"]
                .as_str()
                .is_some_and(|w| w.contains("checking")),
        "the request the server never answers is shown: {status}"
    );
    // SIGTERM while the request waits: the stop keeps --archive-drain (2s).
    let stopping = Instant::now();
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let stop_took = stopping.elapsed();
    assert!(
        stop_took < Duration::from_secs(2 + 5),
        "SIGTERM took {stop_took:?} with --archive-drain 2s"
    );
    assert!(
        sensor
            .log_text()
            .contains("ended while waiting for the archive (checking s3://"),
        "{}",
        sensor.log_text()
    );

    // --archive-timeout 3s: the silent request is a failure 3 s after it began, and tried
    // again, never three times the timeout later.
    let started = Instant::now();
    let mut sensor = start_archiving_sensor(&node, &format!("{base} --archive-timeout 3s"));
    assert!(
        wait_until(Duration::from_secs(30), || {
            metric(&node, "podcap_archive_failures_total") >= 1
        }),
        "{}",
        sensor.log_text()
    );
    let first_failure = started.elapsed();
    assert!(
        first_failure < Duration::from_secs(3 + 4),
        "the first failure came {first_failure:?} after the start, with --archive-timeout 3s"
    );
    let status = archive_status(&node);
    assert!(
        status["failing"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no answer within 3s")),
        "{status}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            metric(&node, "podcap_archive_failures_total") >= 2
        }),
        "retried"
    );
    let stopping = Instant::now();
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let second_stop_took = stopping.elapsed();
    assert!(
        second_stop_took < Duration::from_secs(2 + 5),
        "{second_stop_took:?}"
    );
    report(
        "the archive's server accepts connections and never answers",
        "a listener that takes every connection and sends nothing, 100 packets/s, 1 s segments, --archive-drain 2s",
        "nothing recorded: capture went on, the segments wait in the store",
        &format!(
            "with --archive-timeout 60s: {backlog} segments in the backlog (oldest {age:.1} s) and the request waiting for {waited:.1} s shown while it waited; SIGTERM took {:.1} s; with --archive-timeout 3s the first failure came {:.1} s after the start (`no answer within 3s`), SIGTERM took {:.1} s",
            stop_took.as_secs_f64(),
            first_failure.as_secs_f64(),
            second_stop_took.as_secs_f64()
        ),
    );
}
