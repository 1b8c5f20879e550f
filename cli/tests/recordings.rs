//! `podcap record create | list | delete` and `podcap dump --recording` against real sensor
//! routers, stores and recording jobs on loopback (the jobs' runner driven by the test).
mod common;

use common::{dumped, packets, sensor_state, serve, stderr, ADMIN_TOKEN, SMALL_FLOORS, TOKEN};
use podcap_sensor::{api::ApiState, sys::realtime_ns, units::format_rfc3339_ns};

async fn podcap(sensors: &[std::net::SocketAddr], token: &str, args: Vec<String>) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::podcap_with(sensors, token, &args).await
}

fn args(text: &str) -> Vec<String> {
    text.split(' ').map(str::to_owned).collect()
}

/// One round of each sensor's job runner, as its keeper thread would run it.
fn poll(states: &[ApiState]) {
    for state in states {
        state.recordings.poll(&state.view, realtime_ns());
    }
}

/// `record list`'s table gives the job an age (made just now) and lists its one iteration
/// (30 to 5 s ago) in RFC 3339.
fn age_and_iteration_listed(table: &str) {
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    // Four header words more (NEXT START (UTC), NOT HELD (s)), the size one word more in the row (`6.6 KB`).
    let age_column = header.iter().position(|h| *h == "AGE").unwrap() - 3;
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert!(row[age_column].ends_with('s'), "{table}");
    let iteration = table.lines().nth(2).unwrap();
    assert!(
        iteration.starts_with("  iteration 0: 20")
            && iteration.contains("Z .. 20")
            && iteration.contains("60 packets"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_every_sensor_is_listed_downloaded_merged_and_deleted() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let states = [
        sensor_state(&a_dir, 0, 0xaa, SMALL_FLOORS),
        sensor_state(&b_dir, 50, 0xbb, SMALL_FLOORS),
    ];
    let sensors = [
        serve(states[0].clone(), None).await,
        serve(states[1].clone(), None).await,
    ];
    // A job that began before the stores' packets: it records what they hold of its window.
    let start = format_rfc3339_ns(realtime_ns() - 30_000_000_000);
    let mut create = args("record create odd --filter ether[7]&1=1 --duration 25s --expire 1d --start");
    create.push(start);
    let made = podcap(&sensors, ADMIN_TOKEN, create.clone()).await;
    assert!(made.status.success(), "{}", stderr(&made));
    let said = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(
        said.contains("node-0: recording job odd added") && said.contains("node-1: recording job odd added"),
        "{said}"
    );
    let again = podcap(&sensors, ADMIN_TOKEN, create).await;
    assert!(
        !again.status.success() && stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    poll(&states);
    let listed = podcap(&sensors, TOKEN, args("record list -o json")).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listing: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    for node in listing["nodes"].as_array().unwrap() {
        // The job began 30 s ago, the stores' first packets 20 s ago: 10 s not held, said.
        let not_held = node["jobs"][0]["iterations"][0]["notHeldSeconds"]
            .as_u64()
            .unwrap();
        assert!((9..=11).contains(&not_held), "{listing}");
        let job = &node["jobs"][0];
        assert_eq!(
            (job["state"].as_str(), job["packets"].as_u64()),
            (Some("finished"), Some(60)),
            "{listing}"
        );
    }
    let table = podcap(&sensors, TOKEN, args("record list")).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("odd") && table.contains("node-1") && table.contains("finished"),
        "{table}"
    );
    age_and_iteration_listed(&table);
    // Downloaded merged, with a selection applied on top.
    let dest = tempfile::tempdir().unwrap();
    let mut dump = args("dump --recording odd --dest");
    dump.push(dest.path().display().to_string());
    let output = podcap(&sensors, TOKEN, dump.clone()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let list = packets(&dumped(dest.path()));
    assert_eq!(list.len(), 120);
    assert_eq!(list.iter().filter(|p| p.0 == "node-0/eth0").count(), 60);
    assert_eq!(list.iter().filter(|p| p.0 == "node-1/eth0").count(), 60);
    let dest = tempfile::tempdir().unwrap();
    let mut narrowed = args("dump --recording odd --filter ether[8]=0xaa --dest");
    narrowed.push(dest.path().display().to_string());
    let output = podcap(&sensors, TOKEN, narrowed).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(packets(&dumped(dest.path()))
        .iter()
        .all(|p| p.0 == "node-0/eth0" && p.2 == 0xaa));
    // Bad input changes nothing; deletion deletes everywhere.
    for (bad, named) in [
        ("record create x --duration 5", "duration"),
        ("record create ../x --duration 5s", "name"),
        ("record create x --duration 5s --start 25:00", "start"),
        ("record create x --duration 5s --filter tcp-prot-80", "filter"),
        ("record create x --duration 25h --days 0", "24h"),
    ] {
        let output = podcap(&sensors, ADMIN_TOKEN, args(bad)).await;
        assert!(!output.status.success(), "{bad}");
        assert!(stderr(&output).contains(named), "{bad}: {}", stderr(&output));
    }
    let output = podcap(&sensors, TOKEN, args("record create y --duration 5s")).await;
    assert!(
        !output.status.success() && stderr(&output).contains("admin token"),
        "{}",
        stderr(&output)
    );
    let deleted = podcap(&sensors, ADMIN_TOKEN, args("record delete odd")).await;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(!a_dir.path().join("recordings/odd").exists() && !b_dir.path().join("recordings/odd").exists());
    // (--force: the file of the first download is still in --dest, and is never replaced
    // without it.)
    dump.push("--force".into());
    let output = podcap(&sensors, TOKEN, dump).await;
    assert!(
        !output.status.success() && stderr(&output).contains("no sensor holds recording odd"),
        "{}",
        stderr(&output)
    );
    let listed = podcap(&sensors, TOKEN, args("record list")).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("no recording jobs"));
}
