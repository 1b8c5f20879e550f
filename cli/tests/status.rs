//! `podcap status` and `podcap version` against real sensor routers and stores on
//! loopback: every sensor's row, a sensor that does not answer named and the exit status
//! non-zero, `-o json` carrying each sensor's whole status.
mod common;

use std::net::SocketAddr;

use common::{podcap_with, sensor, stderr, TOKEN};

/// A loopback address nobody listens on.
fn closed_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_sensor_and_names_one_that_does_not_answer() {
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sensors = [sensor(&d0, 0, 0xa0).await, sensor(&d1, 50, 0xb0).await];
    let version = env!("CARGO_PKG_VERSION");

    let out = podcap_with(&sensors, TOKEN, &["status"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NODE    VERSION"), "{table}");
    for node in ["node-0", "node-1"] {
        let row: Vec<&str> = lines
            .iter()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no {node} in\n{table}"))
            .split_whitespace()
            .collect();
        // NODE VERSION MODE STATE IFACES SIZE (2 words) OLDEST NEWEST DROPS MAX-SIZE MAX-TIME
        assert_eq!(
            row[1..5].iter().chain(&row[9..]).copied().collect::<Vec<_>>(),
            [version, "standalone", "recording", "1", "0", "500MB", "1h"],
            "{table}"
        );
    }
    assert!(table.contains("  interfaces: eth0\n"), "{table}");

    let out = podcap_with(&sensors, TOKEN, &["status", "-o", "json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["nodes"][1]["node"], "node-1", "{doc}");
    assert_eq!(doc["nodes"][1]["status"]["version"], version, "{doc}");
    assert_eq!(
        doc["nodes"][0]["status"]["store"]["segments"]
            .as_u64()
            .map(|n| n > 0),
        Some(true),
        "{doc}"
    );
    assert_eq!(doc["failed"], serde_json::json!([]), "{doc}");

    let with_a_dead_one = [sensors[0], closed_address()];
    let out = podcap_with(&with_a_dead_one, TOKEN, &["status"]).await;
    assert!(
        !out.status.success(),
        "a sensor that does not answer fails the command"
    );
    assert!(
        stdout(&out).contains("node-0"),
        "the others are shown: {}",
        stdout(&out)
    );
    let text = stderr(&out);
    assert!(
        text.contains("sensor node-1 did not answer") && text.contains("Connection refused"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_says_the_clients_and_every_sensors_and_names_the_silent_one() {
    let d0 = tempfile::tempdir().unwrap();
    let live = sensor(&d0, 0, 0xa0).await;
    let version = env!("CARGO_PKG_VERSION");

    let out = podcap_with(&[live, closed_address()], TOKEN, &["version"]).await;
    assert!(!out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            format!("Client Version: {version}").as_str(),
            "NODE    SENSOR VERSION",
            &format!("node-0  {version}"),
            "node-1  no answer",
        ],
        "{text}"
    );
    assert!(
        stderr(&out).contains("sensor node-1 did not answer"),
        "{}",
        stderr(&out)
    );

    let out = podcap_with(&[live], TOKEN, &["version", "-o", "json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "clientVersion": version,
            "sensors": [{"node": "node-0", "version": version}],
            "failed": [],
        })
    );

    // --client asks no sensor: none given, none needed.
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(common::PODCAP)
            .args(["version", "--client"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("Client Version: {version}\n"));
}
