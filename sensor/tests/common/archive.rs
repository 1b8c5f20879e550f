//! The archive tests' harness: moto's S3 server, a server that never answers, the
//! archiving sensor, and reads of the bucket, the metrics and the status.
use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{link, pcap, podcap_cli, segments, sensor_bin, try_sh, Netns, Proc};

pub const BUCKET: &str = "podcap-test";
pub const S3_PORT: u16 = 9100;

/// A "pod" namespace and a "node" namespace joined by a veth (p0 ↔ n0); the sensor, its API,
/// the S3 server and the CLI live in the node's.
pub fn pod_and_node(tag: &str) -> (Netns, Netns) {
    let pod = Netns::new(&format!("pca{tag}P"));
    let node = Netns::new(&format!("pca{tag}N"));
    link(&pod, "p0", &["198.18.7.1/30"], &node, "n0", &["198.18.7.2/30"]);
    (pod, node)
}

/// moto's S3 server in a namespace, on loopback, ended by PID on drop.
pub struct S3Server {
    proc: Proc,
}

pub const SIGCONT: i32 = 18;
pub const SIGSTOP: i32 = 19;

impl S3Server {
    pub fn start(node: &Netns) -> Self {
        Self::start_checking_keys(node, false)
    }

    /// With `check_keys`, moto checks every request's access key after the first (the
    /// bucket's creation): a key it does not know is refused (`InvalidAccessKeyId`).
    pub fn start_checking_keys(node: &Netns, check_keys: bool) -> Self {
        let auth = if check_keys {
            "env INITIAL_NO_AUTH_ACTION_COUNT=1 "
        } else {
            ""
        };
        let mut proc = Proc::spawn(
            "moto S3 server",
            &node.exec(&format!("{auth}python3 -m moto.server -H 127.0.0.1 -p {S3_PORT}")),
        );
        proc.wait_for("Running on", Duration::from_mins(1));
        node.sh(&format!("curl -sf -X PUT http://127.0.0.1:{S3_PORT}/{BUCKET}"));
        Self { proc }
    }

    /// Stops the server: it answers nothing until [`S3Server::resume`].
    pub fn stall(&self) {
        self.proc.signal(SIGSTOP);
    }

    pub fn resume(&self) {
        self.proc.signal(SIGCONT);
    }
}

/// A TCP listener on loopback inside a namespace that takes every connection and never
/// answers (what a hung object store looks like from the sensor); the connections close
/// when it is dropped.
pub struct SilentServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    pub fn start(ns: &Netns, port: u16) -> Self {
        use std::os::fd::AsRawFd;
        let namespace = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, listening) = std::sync::mpsc::channel();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // SAFETY: `namespace` is an open namespace file; this thread exists only to
            // listen there and ends with the server, so nothing else runs inside it.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _ = ready.send(Err(std::io::Error::last_os_error()));
                return;
            }
            let listener = match std::net::TcpListener::bind(("127.0.0.1", port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
            {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let mut held = Vec::new();
            // Acquire: pairs with the Release store in `drop`.
            while !stopping.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((connection, _)) => held.push(connection),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let outcome = listening.recv_timeout(Duration::from_secs(10));
        let server = Self {
            stop,
            thread: Some(thread),
        };
        match outcome {
            Ok(Ok(())) => server,
            other => panic!("the silent server did not start: {other:?}"),
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        // Release: the listener thread's Acquire load sees it and ends.
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `archive` section of the sensor's `/api/v1/status`.
pub fn archive_status(node: &Netns) -> serde_json::Value {
    let (answered, text) = try_sh(&node.exec("curl -sS http://127.0.0.1:9090/api/v1/status"));
    assert!(answered, "no status from the sensor: {text}");
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(status["archive"].is_object(), "no archive section: {text}");
    status["archive"].clone()
}

/// The credentials and endpoint every client here is given, the standard AWS way.
pub fn aws_env() -> String {
    format!(
        "AWS_ACCESS_KEY_ID=podcap AWS_SECRET_ACCESS_KEY=podcap-secret AWS_REGION=us-east-1 \
         AWS_ENDPOINT_URL=http://127.0.0.1:{S3_PORT}"
    )
}

pub fn start_archiving_sensor(node: &Netns, args: &str) -> Proc {
    let mut p = Proc::spawn(
        "podcap-sensor",
        &node.exec(&format!(
            "env RUST_LOG=info {} {} {args}",
            aws_env(),
            sensor_bin()
        )),
    );
    p.wait_for("capturing on", Duration::from_secs(30));
    p
}

pub fn podcap(node: &Netns, args: &str) -> (bool, String) {
    try_sh(&node.exec(&format!(
        "env {} {} {args} 2>&1",
        aws_env(),
        podcap_cli().display()
    )))
}

/// Every key in the bucket under `prefix`.
pub fn bucket_keys(node: &Netns, prefix: &str) -> Vec<String> {
    let xml = node.sh(&format!(
        "curl -sf 'http://127.0.0.1:{S3_PORT}/{BUCKET}?list-type=2&max-keys=1000&prefix={prefix}'"
    ));
    assert!(!xml.contains("<IsTruncated>true"), "more keys than one listing");
    xml.split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split("</Key>").next())
        .map(str::to_owned)
        .collect()
}

/// Waits until the process has said `needle` (at any time since it started).
pub fn wait_in_log(proc: &Proc, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !proc.log_text().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not say {needle:?}; log:\n{}",
            proc.name,
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A counter or count of the sensor's `/metrics`.
pub fn metric(node: &Netns, name: &str) -> u64 {
    let text = node.sh("curl -sf http://127.0.0.1:9090/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

pub fn finished_segments(data: &Path) -> Vec<std::path::PathBuf> {
    let mut files = segments(data);
    files.retain(|p| p.extension().is_some_and(|e| e == "pcapng"));
    files
}

/// (timestamp, bytes) of each frame, sorted: what two captures must share.
pub fn frames(frames: &[pcap::Frame]) -> Vec<(u64, Vec<u8>)> {
    let mut list: Vec<_> = frames.iter().map(|f| (f.ts_ns, f.data.clone())).collect();
    list.sort();
    list
}
