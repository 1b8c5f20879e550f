//! `cargo xtask demo`: two "pods" on a "node", each a network namespace, with traffic
//! between them; the sensor records both pods' interfaces; then the segments are shown.
//!
//! Rules: only 198.18.0.0/15 addresses inside namespaces made here; every namespace is
//! deleted when the demo ends, also on error; the sensor is stopped by its PID.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::util;

const NODE: &str = "podcap-demo-node";
const PODS: [(&str, &str, &str, &str); 2] = [
    // (namespace, host-side interface, pod address, node address)
    (
        "podcap-demo-pod-a",
        "veth-pod-a",
        "198.18.10.2/30",
        "198.18.10.1/30",
    ),
    (
        "podcap-demo-pod-b",
        "veth-pod-b",
        "198.18.10.6/30",
        "198.18.10.5/30",
    ),
];

struct Namespaces;

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [NODE, PODS[0].0, PODS[1].0] {
            let _ = sh(&format!("ip netns del {ns} 2>/dev/null"));
        }
    }
}

struct Sensor(Child);

impl Drop for Sensor {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn topology() -> Result<Namespaces> {
    let guard = Namespaces;
    drop(Namespaces); // removes leftovers of an interrupted demo
    sh(&format!("ip netns add {NODE} && ip -n {NODE} link set lo up"))?;
    sh(&format!("ip netns exec {NODE} sysctl -qw net.ipv4.ip_forward=1"))?;
    for (pod, host_if, pod_addr, node_addr) in PODS {
        let gateway = node_addr.split('/').next().unwrap_or_default();
        sh(&format!("ip netns add {pod} && ip -n {pod} link set lo up"))?;
        sh(&format!(
            "ip link add eth0 netns {pod} type veth peer name {host_if} netns {NODE}"
        ))?;
        sh(&format!(
            "ip -n {pod} addr add {pod_addr} dev eth0 && ip -n {pod} link set eth0 up"
        ))?;
        sh(&format!("ip -n {pod} route add default via {gateway}"))?;
        sh(&format!(
            "ip -n {NODE} addr add {node_addr} dev {host_if} && ip -n {NODE} link set {host_if} up"
        ))?;
    }
    Ok(guard)
}

pub fn run(seconds: u64) -> Result<()> {
    if crate::util::output("id", &["-u"]).is_none_or(|uid| uid.trim() != "0") {
        bail!("the demo makes network namespaces and loads eBPF programs: run it as root");
    }
    let _namespaces = topology().context("making the demo topology")?;
    let data = util::workspace_root().join("target/demo/segments");
    let _ = std::fs::remove_dir_all(&data);
    let sensor_bin = util::target_bin("podcap-sensor");
    println!("demo: node {NODE} with pods {} and {}", PODS[0].0, PODS[1].0);
    println!(
        "demo: podcap-sensor --iface veth-pod-a --iface veth-pod-b --data-dir {}",
        data.display()
    );
    let mut sensor = Sensor(
        Command::new("ip")
            .args(["netns", "exec", NODE])
            .arg(&sensor_bin)
            .args([
                "--iface",
                "veth-pod-a",
                "--iface",
                "veth-pod-b",
                "--segment-time",
                "10s",
                "--data-dir",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .spawn()
            .context("starting podcap-sensor")?,
    );
    thread::sleep(Duration::from_secs(2));
    if let Ok(Some(status)) = sensor.0.try_wait() {
        bail!("podcap-sensor exited at start ({status})");
    }
    traffic(seconds)?;
    thread::sleep(Duration::from_secs(1)); // the sensor flushes at least every 0.5 s
    let snapshot_dir = util::workspace_root().join("target/demo");
    let cli = util::target_bin("podcap");
    let command = format!(
        "ip netns exec {NODE} {} dump --time 1m --sensor http://127.0.0.1:9090 --dest {}",
        cli.display(),
        snapshot_dir.display()
    );
    println!(
        "\ndemo: {}",
        command.replace(&format!("ip netns exec {NODE} "), "")
    );
    sh(&format!("rm -f {}/podcap-*.pcapng", snapshot_dir.display()))?;
    let out = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::null())
        .output()?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("podcap dump failed");
    }
    // A window kept past the rolling store: a named snapshot on the node, and the list.
    for args in [
        "snapshot create demo-udp --time 1m --filter udp --expire 1d",
        "snapshot list",
    ] {
        println!("\ndemo: podcap {args} --sensor http://127.0.0.1:9090");
        let out = Command::new("ip")
            .args(["netns", "exec", NODE])
            .arg(&cli)
            .args(args.split(' '))
            .args(["--sensor", "http://127.0.0.1:9090"])
            .stdin(Stdio::null())
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("podcap {args} failed");
        }
    }
    sh(&format!("kill -TERM {}", sensor.0.id()))?;
    let status = sensor.0.wait()?;
    if !status.success() {
        bail!("podcap-sensor failed ({status})");
    }
    summary(&data)?;
    snapshot_summary(&snapshot_dir)
}

fn traffic(seconds: u64) -> Result<()> {
    let (a, b) = (PODS[0].0, PODS[1].0);
    let b_addr = PODS[1].2.split('/').next().unwrap_or_default();
    println!("demo: {seconds} s of traffic between the pods (ping, UDP, an iperf3 TCP transfer)");
    let mut server = Sensor(
        Command::new("ip")
            .args(["netns", "exec", b, "iperf3", "-s", "-B", b_addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    thread::sleep(Duration::from_millis(500));
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        sh(&format!("ip netns exec {a} ping -c 5 -i 0.1 -q {b_addr}"))?;
        sh(&format!(
            "ip netns exec {a} /usr/bin/python3 -c 'import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor n in (64,512,1400): s.sendto(bytes(n),(\"{b_addr}\",5353))'"
        ))?;
        sh(&format!("ip netns exec {a} iperf3 -c {b_addr} -n 2M -b 200M"))?;
    }
    let _ = server.0.kill();
    let _ = server.0.wait();
    Ok(())
}

fn snapshot_summary(dir: &std::path::Path) -> Result<()> {
    let snapshot = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "pcapng"))
        .context("podcap dump wrote no file")?;
    println!(
        "\ndemo: the snapshot {} (last minute, both pods), first packets:",
        snapshot.display()
    );
    let first = sh(&format!(
        "tshark -r {} -c 8 -T fields -e frame.time_relative -e frame.interface_name -e _ws.col.Info 2>/dev/null",
        snapshot.display()
    ))?;
    for line in first.lines() {
        println!("  {line}");
    }
    println!("\nOpen it with: wireshark {}", snapshot.display());
    Ok(())
}

fn summary(data: &PathBuf) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "pcapng"));
    files.sort();
    println!("\ndemo: {} segments in {}", files.len(), data.display());
    for file in &files {
        let info = sh(&format!("capinfos -c -s -a -e {} 2>/dev/null", file.display())).unwrap_or_default();
        let line: Vec<String> = info
            .lines()
            .skip(1)
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| format!("{}: {}", k.trim(), v.trim()))
            })
            .collect();
        println!(
            "  {}  {}",
            file.file_name().unwrap_or_default().to_string_lossy(),
            line.join(", ")
        );
    }
    let list = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    if list.is_empty() {
        bail!("the sensor wrote no segment");
    }
    println!("\ndemo: packets per interface and direction (tshark):");
    let per_iface = sh(&format!(
        "for f in {list}; do tshark -r $f -T fields -e frame.interface_name -e frame.packet_flags_direction 2>/dev/null; done | sort | uniq -c"
    ))?;
    for line in per_iface.lines() {
        let line = line
            .replace("0x00000001", "inbound")
            .replace("0x00000002", "outbound");
        println!("  {}", line.trim());
    }
    println!("\ndemo: conversations (tshark -z conv,ip on the first segment):");
    let conv = sh(&format!(
        "tshark -r {} -q -z conv,ip 2>/dev/null",
        files[0].display()
    ))?;
    for line in conv.lines().filter(|l| l.contains("<->")).take(6) {
        println!("  {}", line.trim());
    }
    Ok(())
}
