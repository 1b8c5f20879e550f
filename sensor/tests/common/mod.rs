//! Test harness for the privileged tests: network namespaces, veth links, processes and
//! captures, each owned by a guard that removes it on drop, also when the test fails.
//!
//! Addresses come only from `198.18.0.0/15` and `2001:db8::/32`, inside namespaces made here.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

pub mod archive;
pub mod kube_api;
pub mod pcap;
pub mod throttle;
pub mod topology;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Adds a row to the fault report (`PODCAP_FAULT_REPORT`, set by `cargo xtask test`, which
/// writes the table of `docs/reliability.md` from it): the fault, how often it was tried,
/// what was lost, and what the sensor said.
pub fn report(fault: &str, tried: &str, lost: &str, said: &str) {
    let Some(path) = std::env::var_os("PODCAP_FAULT_REPORT") else {
        return;
    };
    let line = format!("{fault}\t{tried}\t{lost}\t{said}\n");
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = appended {
        eprintln!("cannot add to the fault report {}: {e}", path.to_string_lossy());
    }
}

/// Ethernet interfaces of these names, as a store's writer declares them.
pub fn ethernet_interfaces(names: &[&str]) -> Vec<podcap_sensor::pcapng::InterfaceDescription> {
    names
        .iter()
        .map(|name| podcap_sensor::pcapng::InterfaceDescription {
            name: (*name).into(),
            description: String::new(),
            link_type: podcap_sensor::pcapng::LINKTYPE_ETHERNET,
            snaplen: 65535,
        })
        .collect()
}

/// Polls `condition` every 100 ms until it holds or `deadline` has passed; whether it
/// held. Tests wait for what they expect with a generous deadline, never a fixed sleep: CI
/// machines are shared and noisy.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Privileged tests share the kernel (and the capture veth name inside their namespaces):
/// they take this lock so they run one at a time whatever `--test-threads` says.
static SERIAL: Mutex<()> = Mutex::new(());

/// The way into a privileged test: `None` (the test says it is skipped and returns) when
/// not run as root, unless `PODCAP_REQUIRE_PRIVILEGED` is set — `cargo xtask test` sets it,
/// so there a missing privilege fails instead of skipping. Then the lock that runs the
/// privileged tests one at a time.
pub fn privileged() -> Option<MutexGuard<'static, ()>> {
    if podcap_sensor::sys::effective_uid() != 0 {
        assert!(
            std::env::var_os("PODCAP_REQUIRE_PRIVILEGED").is_none(),
            "the privileged tests need root (CAP_BPF, CAP_NET_ADMIN): run `cargo xtask test` as root"
        );
        eprintln!("skipped: this test needs root (CAP_BPF, CAP_NET_ADMIN); `cargo xtask test` runs it");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

fn shell(cmd: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("spawn sh")
}

/// Runs a command, panics with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = shell(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command, returns (success, stdout + stderr).
pub fn try_sh(cmd: &str) -> (bool, String) {
    let out = shell(cmd);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A network namespace, deleted on drop (with every link inside it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Self {
        let _ = try_sh(&format!("ip netns del {name} 2>/dev/null"));
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Self {
            name: name.to_owned(),
        }
    }

    /// `ip netns exec NAME CMD` as a shell string.
    pub fn exec(&self, cmd: &str) -> String {
        format!("ip netns exec {} {cmd}", self.name)
    }

    pub fn sh(&self, cmd: &str) -> String {
        sh(&self.exec(cmd))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = try_sh(&format!("ip netns del {}", self.name));
    }
}

/// Joins `a` (interface `a_if`, address `a_addr`) and `b` by a veth pair; IPv4 /30 style
/// addresses plus IPv6 from `2001:db8::/32`, with DAD off so addresses work at once.
pub fn link(a: &Netns, a_if: &str, a_addrs: &[&str], b: &Netns, b_if: &str, b_addrs: &[&str]) {
    sh(&format!(
        "ip link add {a_if} netns {} type veth peer name {b_if} netns {}",
        a.name, b.name
    ));
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        let _ = try_sh(&ns.exec(&format!("sysctl -qw net.ipv6.conf.{ifname}.accept_dad=0")));
        for addr in addrs {
            let nodad = if addr.contains(':') { " nodad" } else { "" };
            ns.sh(&format!("ip addr add {addr} dev {ifname}{nodad}"));
        }
        ns.sh(&format!("ip link set {ifname} up"));
    }
}

/// A process we started, ended by PID on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
    lines: Option<mpsc::Receiver<String>>,
    pub log: std::sync::Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` through `sh -c 'exec …'`, collecting its output lines.
    pub fn spawn(name: &str, cmd: &str) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(Mutex::new(String::new()));
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout piped"));
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr piped"));
        for stream in [stdout, stderr] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    {
                        let mut log = log.lock().unwrap();
                        log.push_str(&line);
                        log.push('\n');
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Self {
            child,
            name: name.to_owned(),
            lines: Some(rx),
            log,
        }
    }

    /// Waits until an output line contains `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let rx = self.lines.as_ref().expect("lines");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "{} did not say {needle:?} (exit: {status:?}); log:\n{}",
                        self.name,
                        self.log.lock().unwrap()
                    );
                }
            }
        }
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // Only our own child, by its PID.
        sh(&format!("kill -{signal} {pid}"));
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = self.signal_if_running(15);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50)); // let the log thread finish
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{} did not stop within 20 s of SIGTERM; log:\n{}",
            self.name,
            self.log.lock().unwrap()
        );
    }

    fn signal_if_running(&mut self, signal: i32) -> bool {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(signal);
            true
        } else {
            false
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn sensor_bin() -> &'static str {
    env!("CARGO_BIN_EXE_podcap-sensor")
}

/// Starts the sensor in `ns` with `args` and waits until it captures.
pub fn start_sensor(ns: &Netns, args: &str) -> Proc {
    let mut p = Proc::spawn(
        "podcap-sensor",
        &ns.exec(&format!("env RUST_LOG=info {} {args}", sensor_bin())),
    );
    p.wait_for("capturing on", Duration::from_secs(30));
    p
}

/// Starts tcpdump in `ns` on `iface` writing `out`, waits until it listens.
pub fn start_tcpdump(ns: &Netns, iface: &str, out: &Path, extra: &str) -> Proc {
    let mut p = Proc::spawn(
        "tcpdump",
        &ns.exec(&format!(
            "tcpdump -i {iface} -s 0 -U --immediate-mode -B 65536 -w {} {extra}",
            out.display()
        )),
    );
    p.wait_for("listening on", Duration::from_secs(20));
    p
}

/// Segment files the sensor wrote, in order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().contains(".pcapng"));
    files.sort();
    files
}

/// `tshark -r` must read the file without any warning or error.
pub fn assert_tshark_clean(file: &Path) {
    let (ok, out) = try_sh(&format!("tshark -r {} -q 2>&1", file.display()));
    let complaints: Vec<&str> = out
        .lines()
        .filter(|l| !l.contains("Running as user \"root\"") && !l.trim().is_empty())
        .collect();
    assert!(
        ok && complaints.is_empty(),
        "tshark -r {} complained:\n{out}",
        file.display()
    );
}

/// Whether the capture veth exists in `ns`.
pub fn capture_veth_present(ns: &Netns) -> bool {
    try_sh(&ns.exec("ip link show podcap0")).0
}

/// Loaded BPF programs whose names start with `podcap_`.
pub fn podcap_programs_loaded() -> usize {
    let (_, out) = try_sh("bpftool prog show 2>/dev/null");
    out.lines().filter(|l| l.contains(" name podcap_")).count()
}

/// `count` rounds of UDP datagrams of `sizes` (comma-separated) from `ns` to `dst`, port 9.
pub fn udp_burst(ns: &Netns, dst: &str, sizes: &str, count: usize) {
    let family = if dst.contains(':') { "AF_INET6" } else { "AF_INET" };
    ns.sh(&format!(
        "/usr/bin/python3 -c 'import socket,time\ns=socket.socket(socket.{family},socket.SOCK_DGRAM)\nfor i in range({count}):\n  for n in [{sizes}]:\n    s.sendto(bytes([i%256])*n,(\"{dst}\",9))\n  time.sleep(0.001)'"
    ));
}

/// The `podcap` CLI binary.
pub fn podcap_cli() -> std::path::PathBuf {
    // The CLI is a sibling binary of the workspace; built by `cargo xtask test` (cargo
    // build --bins) before the tests, or on demand here.
    let bin = std::path::Path::new(sensor_bin()).with_file_name("podcap");
    if !bin.exists() {
        sh("cargo build -q -p podcap-cli");
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// Parses `/metrics` with the Prometheus project's `OpenMetrics` parser (Python's
/// `prometheus_client`, strict: it refuses a malformed line, a missing `# EOF`, a counter
/// without `_total`, a unit its name does not end in); returns `name{labels} value` per
/// sample as the parser read it, label values unescaped.
pub fn parse_openmetrics(text: &str) -> Vec<String> {
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\nfor family in parse(sys.stdin.read()):\n  for s in family.samples:\n    labels = ','.join(f'{k}={v}' for k, v in s.labels.items())\n    print(f'{s.name}{{{labels}}} {float(s.value)}'.replace('\\n', '\\\\n'))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the `OpenMetrics` parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A self-signed certificate and its key for a TLS server in a test (`CN=pod`, one day),
/// written into `dir`: (certificate, key).
pub fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    sh(&format!(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=pod -keyout {} -out {} 2>&1",
        key.display(),
        cert.display()
    ));
    (cert, key)
}
