//! `podcap snapshot create | list | delete` and `podcap dump --snapshot` against real
//! sensor routers and stores on loopback: a snapshot outlives the store it was cut from,
//! downloads merged and checked against its SHA-256, and bad input changes nothing.
mod common;

use std::{net::SocketAddr, path::Path};

use common::{dumped, packets, sensor, stderr, ADMIN_TOKEN, TOKEN};

async fn podcap(sensors: &[SocketAddr], token: &str, args: &[&str]) -> std::process::Output {
    common::podcap_with(sensors, token, args).await
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The rolling store retires everything: every segment and the index go.
fn retire_store(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
}

/// The table lists `inc` on both sensors, made just now: its age in seconds, as kubectl's
/// AGE column says it.
fn listed_just_made(table: &str) {
    assert!(table.contains("inc") && table.contains("2/2"), "{table}");
    assert!(table.lines().next().unwrap().ends_with(" AGE"), "{table}");
    let age = table.lines().nth(1).unwrap().split_whitespace().last().unwrap();
    assert!(
        age.ends_with('s') && age[..age.len() - 1].parse::<u64>().unwrap() < 120,
        "{table}"
    );
}

async fn dump_snapshot(sensors: &[SocketAddr], name: &str) -> (std::process::Output, tempfile::TempDir) {
    let dest = tempfile::tempdir().unwrap();
    let path = dest.path().display().to_string();
    let output = podcap(sensors, TOKEN, &["dump", "--snapshot", name, "--dest", &path]).await;
    (output, dest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_outlives_its_store_and_downloads_merged_and_checked() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sensors = [sensor(&a_dir, 0, 0xaa).await, sensor(&b_dir, 50, 0xbb).await];
    let made = podcap(
        &sensors,
        ADMIN_TOKEN,
        &[
            "snapshot",
            "create",
            "inc",
            "--time",
            "1m",
            "--filter",
            "ether[7] & 1 = 1",
            "--expire",
            "1h",
        ],
    )
    .await;
    assert!(made.status.success(), "{}", stderr(&made));
    let said = stdout(&made);
    assert!(
        said.contains("node-0: kept inc: 60 packets") && said.contains("node-1: kept inc: 60 packets"),
        "{said}"
    );
    // A name is taken once; the first stays.
    let again = podcap(
        &sensors,
        ADMIN_TOKEN,
        &["snapshot", "create", "inc", "--time", "5s"],
    )
    .await;
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
    // Listed once, held by both.
    let listed = podcap(&sensors, TOKEN, &["snapshot", "list", "-o", "json"]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listing: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let inc = &listing["snapshots"][0];
    assert_eq!(
        (inc["name"].as_str(), inc["packets"].as_u64()),
        (Some("inc"), Some(120)),
        "{listing}"
    );
    assert_eq!(inc["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(inc["selection"]["filter"], "ether[7] & 1 = 1");
    assert!(inc["expires"].is_string());
    listed_just_made(&stdout(&podcap(&sensors, TOKEN, &["snapshot", "list"]).await));

    retire_store(a_dir.path());
    retire_store(b_dir.path());
    let (output, dest) = dump_snapshot(&sensors, "inc").await;
    assert!(output.status.success(), "{}", stderr(&output));
    let bytes = dumped(dest.path());
    assert!(std::fs::read_dir(dest.path())
        .unwrap()
        .any(|e| e.unwrap().file_name() == "podcap-snapshot-inc.pcapng"));
    let list = packets(&bytes);
    assert_eq!(list.len(), 120, "the odd packets of both");
    assert!(list.windows(2).all(|w| w[0].1 <= w[1].1), "time-ordered");
    assert_eq!(
        list.iter()
            .filter(|p| p.0 == "node-0/eth0" && p.2 == 0xaa)
            .count(),
        60
    );
    assert_eq!(
        list.iter()
            .filter(|p| p.0 == "node-1/eth0" && p.2 == 0xbb)
            .count(),
        60
    );

    // A file changed on a node's disk is caught by its SHA-256, and named.
    let file = a_dir.path().join("snapshots/inc/snapshot.pcapng");
    let mut content = std::fs::read(&file).unwrap();
    let near_end = content.len() - 40;
    content[near_end] ^= 0xff;
    std::fs::write(&file, &content).unwrap();
    let (output, _dest) = dump_snapshot(&sensors, "inc").await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("node-0") && stderr(&output).contains("SHA-256"),
        "{}",
        stderr(&output)
    );

    // Deleted everywhere; then gone.
    let deleted = podcap(&sensors, ADMIN_TOKEN, &["snapshot", "delete", "inc"]).await;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(
        stdout(&deleted).contains("node-0: deleted inc") && stdout(&deleted).contains("node-1: deleted inc")
    );
    let (output, dest) = dump_snapshot(&sensors, "inc").await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no sensor holds snapshot inc"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0, "no file");
    let again = podcap(&sensors, ADMIN_TOKEN, &["snapshot", "delete", "inc"]).await;
    assert!(!again.status.success() && stderr(&again).contains("no sensor holds snapshot inc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_some_nodes_and_bad_input_that_changes_nothing() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sensors = [sensor(&a_dir, 0, 0xaa).await, sensor(&b_dir, 50, 0xbb).await];
    let made = podcap(
        &sensors,
        ADMIN_TOKEN,
        &["snapshot", "create", "only-a", "--time", "1m", "--node", "node-0"],
    )
    .await;
    assert!(made.status.success(), "{}", stderr(&made));
    // The node without it has nothing to give, and that is no failure.
    let (output, dest) = dump_snapshot(&sensors, "only-a").await;
    assert!(output.status.success(), "{}", stderr(&output));
    let list = packets(&dumped(dest.path()));
    assert!(list.len() == 120 && list.iter().all(|p| p.0 == "node-0/eth0"));
    for (args, named) in [
        (
            vec!["snapshot", "create", "../x", "--time", "1m"],
            "name \"../x\": use 1 to 64",
        ),
        (
            vec!["snapshot", "create", "x", "--time", "1m", "--node", "nope"],
            "--node nope",
        ),
        (
            vec!["snapshot", "create", "x", "--time", "1m", "--expire", "7"],
            "--expire",
        ),
        (vec!["snapshot", "create", "x", "--time", "10"], "--time"),
        (
            vec![
                "snapshot",
                "create",
                "x",
                "--time",
                "1m",
                "--filter",
                "tcp prot 80",
            ],
            "filter",
        ),
        (vec!["dump", "--snapshot", "x", "--time", "1m"], "--time"),
    ] {
        let output = podcap(&sensors, ADMIN_TOKEN, &args).await;
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr(&output).contains(named), "{args:?}: {}", stderr(&output));
    }
    // A read token cannot make one.
    let output = podcap(&sensors, TOKEN, &["snapshot", "create", "x", "--time", "1m"]).await;
    assert!(
        !output.status.success() && stderr(&output).contains("admin token"),
        "{}",
        stderr(&output)
    );
    let listed = podcap(&sensors, TOKEN, &["snapshot", "list", "-o", "json"]).await;
    let listing: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = listing["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["only-a"], "{listing}");
}
