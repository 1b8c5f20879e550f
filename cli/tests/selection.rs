//! `podcap dump` with a selection: each sensor applies it where the data is, so only the
//! selected packets cross the network. Real sensor routers and stores on loopback.
mod common;

use std::process::Command;

use common::{dumped, packets, sensor, stderr, PODCAP, TOKEN};

async fn dump(sensors: &[std::net::SocketAddr], extra: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let dest = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["dump".into(), "--time".into(), "5m".into()];
    for (n, s) in sensors.iter().enumerate() {
        args.extend(["--sensor".into(), format!("node-{n}=http://{s}")]);
    }
    args.extend(["--dest".into(), dest.path().display().to_string()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(PODCAP)
            .args(&args)
            .env("PODCAP_TOKEN", TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (output, dest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sensor_applies_the_filter_and_only_the_selected_packets_arrive() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sensors = [sensor(&a_dir, 0, 0xaa).await, sensor(&b_dir, 50, 0xbb).await];
    // Each packet's byte 7 is its index's lowest byte; byte 8 its sensor's marker.
    let (output, dest) = dump(&sensors, &["--filter", "ether[7] & 1 = 1"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let list = packets(&dumped(dest.path()));
    assert_eq!(list.len(), 120, "the odd packets of both");
    let (output, dest) = dump(&sensors, &["--filter", "ether[8] = 0xaa"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let list = packets(&dumped(dest.path()));
    assert!(list.len() == 120 && list.iter().all(|p| p.0 == "node-0/eth0" && p.2 == 0xaa));
    // A standalone interface belongs to no pod: nothing matches, so no file is written and
    // the exit status says so.
    let (output, dest) = dump(&sensors, &["--pod", "web", "-n", "shop"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no interface matched"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
    // A bad expression is refused by every sensor, named; no file.
    let (output, dest) = dump(&sensors, &["--filter", "tcp prot 80"]).await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("filter: "), "{}", stderr(&output));
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
}

/// #32: the table's times are RFC 3339 (as `snapshot list` prints them), and `AGE` says
/// how far back each store reaches, as kubectl prints ages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_segments_table_prints_rfc3339_times_and_an_age() {
    let dir = tempfile::tempdir().unwrap();
    let sensors = [sensor(&dir, 0, 0xaa).await];
    let output = common::podcap_with(&sensors, TOKEN, &["segments"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NODE", "SEGMENTS", "SIZE", "OLDEST", "NEWEST", "AGE"],
        "{out}"
    );
    let cells: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let (oldest, newest, age) = (
        cells[cells.len() - 3],
        cells[cells.len() - 2],
        cells[cells.len() - 1],
    );
    for time in [oldest, newest] {
        assert!(
            podcap_format::units::parse_rfc3339(time).is_ok(),
            "{time} in {out}"
        );
    }
    let unit = age.trim_start_matches(|c: char| c.is_ascii_digit());
    assert!(
        !unit.is_empty()
            && age.len() > unit.len()
            && unit.chars().all(|c| "smhdy".contains(c) || c.is_ascii_digit()),
        "{age} in {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_as_json_name_every_sensor_and_keep_nanoseconds_exact() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sensors = [sensor(&a_dir, 0, 0xaa).await, sensor(&b_dir, 50, 0xbb).await];
    let output = common::podcap_with(&sensors, TOKEN, &["segments", "-o", "json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for (node, name) in nodes.iter().zip(["node-0", "node-1"]) {
        assert_eq!(node["node"], name);
        let segments = node["segments"].as_array().unwrap();
        assert!(!segments.is_empty());
        let packets: u64 = segments.iter().map(|s| s["packets"].as_u64().unwrap()).sum();
        assert_eq!(packets, 120, "{node}");
        // Times are strings to the nanosecond, which jq cannot round.
        let oldest = node["oldest"].as_str().unwrap();
        let fraction = oldest.split('.').nth(1).unwrap();
        assert_eq!(fraction.len(), 10, "{oldest}");
        assert!(podcap_format::units::parse_rfc3339(oldest).is_ok());
    }
}
