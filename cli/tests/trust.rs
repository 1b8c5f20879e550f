//! What `podcap` does when things go wrong, tried as a clumsy user and a hostile world
//! would: a damaged store, a sensor that breaks off half way, a retention change that
//! deletes data, a destination that already holds the file. Real sensors (the sensor's own
//! router and store) on loopback; the `podcap` binary runs as a user runs it.
mod common;

use std::{
    io::{Read, Write},
    process::{Command, Output},
};

use common::{dumped, packets, sensor, sensor_with, stderr, ADMIN_TOKEN, PODCAP, SMALL_FLOORS, TOKEN};
use podcap_sensor::{
    pcapng::{
        read::{section_comments, Blocks},
        BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET,
    },
    store::index::Index,
};

async fn podcap(args: Vec<String>) -> Output {
    podcap_with(TOKEN, args).await
}

/// `podcap` with `token` in `PODCAP_TOKEN`.
async fn podcap_with(token: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(PODCAP)
            .args(&args)
            .env("PODCAP_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Every section comment of a pcapng file.
fn comments(bytes: &[u8]) -> Vec<String> {
    Blocks::new(bytes)
        .flat_map(|b| section_comments(&b.unwrap()))
        .collect()
}

/// tshark reads the file without a complaint.
fn assert_tshark_reads(bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let Ok(out) = Command::new("tshark").arg("-r").arg(file.path()).output() else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let complaints = err.lines().filter(|l| !l.contains("Running as user")).count();
    assert!(out.status.success() && complaints == 0, "tshark: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_costs_its_own_packets_only_and_is_named() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (sensor(&dir_a, 0, 0xaa).await, sensor(&dir_b, 50, 0xbb).await);
    // A finished segment of node-a cut in the middle of a block behind its back.
    let index = Index::load(dir_a.path()).unwrap().unwrap();
    let victim = index.records()[3].clone();
    let path = dir_a.path().join(&victim.file);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(victim.bytes / 2 + 2)
        .unwrap();
    let readable = {
        let bytes = std::fs::read(&path).unwrap();
        podcap_sensor::pcapng::read::SalvagedBlocks::new(&bytes)
            .filter(|p| {
                matches!(p, podcap_sensor::pcapng::read::Piece::Block(b) if b.block_type == podcap_sensor::pcapng::BLOCK_EPB)
            })
            .count()
    };
    let unreadable = victim.packets - readable as u64;
    assert!(unreadable > 0);

    let dest = tempfile::tempdir().unwrap();
    let sensors = [format!("node-a=http://{a}"), format!("node-b=http://{b}")];
    let run = |extra: &[&str]| {
        let mut list = args(&[
            "dump",
            "--time",
            "5m",
            "--sensor",
            &sensors[0],
            "--sensor",
            &sensors[1],
        ]);
        list.extend(args(&["--dest", dest.path().to_str().unwrap()]));
        list.extend(args(extra));
        list
    };
    let output = podcap(run(&[])).await;
    let err = stderr(&output);
    assert!(
        !output.status.success(),
        "damage makes the exit status fail: {err}"
    );
    assert!(err.contains(&victim.file) && err.contains("node-a"), "{err}");
    let file = dumped(dest.path());
    let list = packets(&file);
    assert_eq!(
        list.len() as u64,
        240 - unreadable,
        "every readable packet: {err}"
    );
    assert!(list.windows(2).all(|w| w[0].1 <= w[1].1), "time order");
    let notes = comments(&file);
    assert!(notes[0].starts_with("podcap dump of"), "{notes:?}");
    assert!(
        notes.last().unwrap().contains(&victim.file),
        "the file says what it lacks: {notes:?}"
    );
    // Each sensor's totals, in the Section Header.
    let totals = notes
        .iter()
        .find(|n| n.starts_with("podcap totals per sensor: "))
        .unwrap_or_else(|| panic!("no totals: {notes:?}"));
    for sensor in ["node-a", "node-b"] {
        assert!(
            totals.contains(&format!("{sensor}: ")) && totals.contains("received, 0 lost in the kernel"),
            "{totals}"
        );
    }
    assert_tshark_reads(&file);

    // The same with --allow-partial: exit 0; the file is not replaced without --force.
    let output = podcap(run(&["--allow-partial"])).await;
    let err = stderr(&output);
    if err.contains("already exists") {
        assert!(!output.status.success(), "{err}");
        assert!(err.contains("--force"), "{err}");
        let output = podcap(run(&["--allow-partial", "--force"])).await;
        assert!(output.status.success(), "{}", stderr(&output));
    } else {
        // The two runs fell in different seconds: two names.
        assert!(output.status.success(), "{err}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A sensor that answers with the head of a slice and then drops the connection.
fn breaking_sensor() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let mut w = BlockWriter::default();
            w.section_header("test");
            w.interface(&InterfaceDescription {
                name: "eth0".into(),
                description: String::new(),
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65535,
            });
            let now = podcap_sensor::sys::realtime_ns() - 1_000_000_000;
            for i in 0..3u64 {
                w.packet(0, now + i, 60, &[0xcc; 60], Direction::Inbound);
            }
            // The third packet cut in the middle.
            let body = &w.bytes()[..w.len() - 50];
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-pcapng\r\ntransfer-encoding: chunked\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            let _ = write!(stream, "{:x}\r\n", body.len());
            let _ = stream.write_all(body);
            let _ = stream.write_all(b"\r\n");
            // No last chunk: the connection just ends.
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_that_breaks_off_keeps_what_it_sent_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = sensor(&dir, 0, 0xaa).await;
    let broken = breaking_sensor();
    let dest = tempfile::tempdir().unwrap();
    let output = podcap(args(&[
        "dump",
        "--time",
        "5m",
        "--sensor",
        &format!("good=http://{good}"),
        "--sensor",
        &format!("broken=http://{broken}"),
        "--dest",
        dest.path().to_str().unwrap(),
    ]))
    .await;
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("sensor broken failed"), "{err}");
    let file = dumped(dest.path());
    let list = packets(&file);
    let from_broken = list.iter().filter(|p| p.0 == "broken/eth0").count();
    assert_eq!(from_broken, 2, "the two whole packets it sent are kept: {err}");
    assert_eq!(list.len(), 122);
    let notes = comments(&file);
    assert!(notes[1].starts_with("failed: broken"), "{notes:?}");
    assert!(
        notes.last().unwrap().contains("broken: the data ends at byte"),
        "{notes:?}"
    );

    // Every sensor failing writes no file at all.
    let empty = tempfile::tempdir().unwrap();
    let output = podcap(args(&[
        "dump",
        "--time",
        "5m",
        "--sensor",
        "http://127.0.0.1:9",
        "--dest",
        empty.path().to_str().unwrap(),
    ]))
    .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("nothing written"), "{}", stderr(&output));
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

async fn config_of(addr: std::net::SocketAddr) -> serde_json::Value {
    tokio::task::spawn_blocking(move || {
        let body = ureq::get(&format!("http://{addr}/api/v1/config"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_change_that_deletes_data_needs_yes_and_a_refused_one_changes_no_sensor() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = sensor_with(&dir_a, 0, 0xaa, SMALL_FLOORS).await;
    // node-b has the default floors: 12kB is below what it accepts.
    let b = sensor(&dir_b, 0, 0xbb).await;
    let config = |sensors: &[std::net::SocketAddr], extra: &[&str]| {
        let mut list = args(&["config"]);
        for s in sensors {
            list.extend(args(&["--sensor", &format!("http://{s}")]));
        }
        list.extend(args(extra));
        list
    };
    let before = Index::load(dir_a.path()).unwrap().unwrap().len();

    let output = podcap_with(ADMIN_TOKEN, config(&[a, b], &["--max-size", "12kB"])).await;
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains("refused the change, so no sensor was changed"),
        "{err}"
    );
    assert_eq!(config_of(a).await["maxSize"], "500MB", "node-a unchanged");

    let output = podcap_with(ADMIN_TOKEN, config(&[a], &["--max-size", "12kB"])).await;
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("would delete") && err.contains("--yes"), "{err}");
    assert_eq!(
        config_of(a).await["maxSize"],
        "500MB",
        "nothing changed without --yes"
    );
    assert_eq!(Index::load(dir_a.path()).unwrap().unwrap().len(), before);

    // Growing it deletes nothing and needs no --yes; shrinking with --yes applies.
    let output = podcap_with(ADMIN_TOKEN, config(&[a], &["--max-size", "1GB"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let output = podcap_with(ADMIN_TOKEN, config(&[a], &["--max-size", "12kB", "--yes"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = config_of(a).await;
    assert_eq!(shown["maxSize"], "12kB");
    assert_eq!(shown["sources"]["maxSize"]["source"], "api", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_over_https_checks_the_sensor_against_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::certificates(dir.path());
    let acceptor = podcap_sensor::api::server::tls_acceptor(&cert, &key).unwrap();
    let store = tempfile::tempdir().unwrap();
    let state = common::sensor_state(&store, 0, 0xaa, podcap_sensor::config::settings::Floors::DEFAULT);
    let addr = common::serve(state, Some(acceptor)).await;
    let url = format!("node-a=https://localhost:{}", addr.port());
    let dest = tempfile::tempdir().unwrap();
    let dump = |extra: &[&str]| {
        let mut list = args(&[
            "dump",
            "--time",
            "5m",
            "--sensor",
            &url,
            "--dest",
            dest.path().to_str().unwrap(),
        ]);
        list.extend(args(extra));
        list
    };
    // Not trusted without the CA: named, nothing written.
    let output = podcap(dump(&[])).await;
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains("sensor node-a failed") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let output = podcap(dump(&["--ca-file", ca.to_str().unwrap()])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(packets(&dumped(dest.path())).len(), 120);
}

/// A change reaches every sensor or none: with one sensor that cannot be asked, the two
/// that can are left as they were, and the one that cannot is named; `--skip-unreachable`
/// changes the two knowingly and names the one it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_with_a_sensor_unreachable_changes_no_sensor_unless_told_to_skip_it() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (sensor(&dir_a, 0, 0xaa).await, sensor(&dir_b, 50, 0xbb).await);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let config = |extra: &[&str]| {
        let mut list = args(&[
            "config",
            "--sensor",
            &format!("node-a=http://{a}"),
            "--sensor",
            &format!("node-b=http://{b}"),
            "--sensor",
            &format!("gone=http://{dead}"),
        ]);
        list.extend(args(extra));
        list
    };
    for change in [&["--enable", "false"][..], &["--max-time", "2h"]] {
        let output = podcap_with(ADMIN_TOKEN, config(change)).await;
        let err = stderr(&output);
        assert!(!output.status.success(), "{change:?}: {err}");
        assert!(
            err.contains("sensor gone cannot be asked")
                && err.contains("no sensor was changed")
                && err.contains("--skip-unreachable"),
            "{change:?}: {err}"
        );
        for node in [a, b] {
            let shown = config_of(node).await;
            assert_eq!(shown["enabled"], true, "{change:?}: {shown}");
            assert_eq!(shown["maxTime"], "1h", "{change:?}: {shown}");
        }
    }

    let output = podcap_with(ADMIN_TOKEN, config(&["--enable", "false", "--skip-unreachable"])).await;
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("not changed (--skip-unreachable): gone"), "{err}");
    for node in [a, b] {
        assert_eq!(config_of(node).await["enabled"], false);
    }
}

/// A listener that takes connections and never answers; it lets them go when dropped.
struct SilentSensor {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentSensor {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                held.extend(stream.ok());
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentSensor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept so the thread sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A sensor that takes the connection and never answers is given up after
/// `--request-timeout`, named, and counted as failed; the others' packets are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_that_never_answers_is_given_up_after_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let good = sensor(&dir, 0, 0xaa).await;
    let silent = SilentSensor::start();
    let dest = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut list = args(&[
            "dump",
            "--time",
            "5m",
            "--request-timeout",
            "2s",
            "--sensor",
            &format!("good=http://{good}"),
            "--sensor",
            &format!("silent=http://{}", silent.addr),
            "--dest",
        ]);
        list.push(dest.path().display().to_string());
        list.extend(args(extra));
        list
    };
    let started = std::time::Instant::now();
    let output = podcap(run(&[])).await;
    let err = stderr(&output);
    assert!(
        started.elapsed() < std::time::Duration::from_mins(1),
        "given up in time: {err}"
    );
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sensor silent failed: the sensor took the connection but sent nothing for 2s (--request-timeout)"),
        "{err}"
    );
    assert_eq!(packets(&dumped(dest.path())).len(), 120, "{err}");

    let output = podcap(run(&["--allow-partial", "--force"])).await;
    assert!(output.status.success(), "{}", stderr(&output));

    // A live stream is never timed: the flag is refused there, by name.
    let output = podcap(args(&[
        "live",
        "--request-timeout",
        "2s",
        "--sensor",
        &format!("http://{good}"),
    ]))
    .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--request-timeout: live streams are not timed"),
        "{}",
        stderr(&output)
    );
    drop(silent);
}
