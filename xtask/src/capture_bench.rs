//! `cargo xtask bench capture`: podcap against tcpdump (and no capture) on the same veth
//! traffic, with the team's two harnesses (`benches/harness/`): trafgen frames of 64, 512
//! and 1500 bytes (`peer_capture.sh`) and an iperf3 TCP bulk transfer with GSO super-frames
//! (`tcp_capture.sh`).
//!
//! Besides tcpdump and no capture, podcap runs three ways: the AF_XDP route and the ring
//! channel into a new store, and the ring channel into a full one (`steady_store.sh`, files
//! recycled: a sensor's steady state).
//!
//! Rules: tools alternate within each round (the order rotates every round) so drifts of
//! this noisy 2-core machine fall on all of them; figures are medians over the rounds and
//! ratios are taken to the no-capture median of the same run. CPU is the busy time of all
//! cores (`/proc/stat`) while the sender runs, per frame or per GB: the capture's own
//! threads and the work it adds to the sender's context (the copy in its softirq) alike.
//!
//! Layout: this file holds the capture comparison and the machinery the benches share
//! (harness runs, medians, the report), with `disk` and `filter`; `dump.rs` is the
//! 64-sensor dump, `archive.rs` the offline dump of a 64-node archive, `memory.rs` the
//! memory over time.
use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::util;

/// One harness run's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Frames/s (trafgen) or Gbit/s (TCP) of the sender.
    rate: f64,
    /// Captured / arrived (frames) or captured payload / sent (TCP).
    completeness: f64,
    /// Busy CPU time of all cores while the sender ran: µs per frame (trafgen) or s per GB
    /// sent (TCP).
    cpu: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return 0.0;
    }
    values[values.len() / 2]
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.replace(',', "").parse().ok())
}

/// A capture command the harnesses run, and the seconds it gets to start before traffic.
#[derive(Clone)]
struct Tool {
    label: &'static str,
    command: String,
    settle_s: u32,
}

impl Tool {
    fn new(label: &'static str, command: String) -> Self {
        Self {
            label,
            command,
            settle_s: 2,
        }
    }
}

fn run_harness(script: &Path, args: &[String], settle_s: u32, outdir: Option<&Path>) -> Result<String> {
    let mut command = Command::new("bash");
    command.arg(script).args(args).env("SETTLE", settle_s.to_string());
    if let Some(dir) = outdir {
        command.env("OUTDIR", dir);
    }
    let out = command
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .last()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .with_context(|| {
            format!(
                "{} printed nothing: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The capture commands every workload runs, and the TCP workload's page-cache floor.
fn tools(harness: &Path, sensor: &Path) -> (Vec<Tool>, Tool) {
    let podcap = |channel: &str| {
        format!(
            "{} --iface {{IF}} --channel {channel} --data-dir {{OUT}} --segment-size 256MB --max-size 8GB --listen 127.0.0.1:0",
            sensor.display()
        )
    };
    // `podcap` is the AF_XDP route, `podcap-ring` the ring-buffer channel, both into a new
    // store; `podcap-steady` the ring channel into a full store (files recycled).
    let capture_tools: Vec<Tool> = vec![
        Tool::new("none", "sleep 1000".to_owned()),
        Tool::new("tcpdump", "tcpdump -i {IF} -w {OUT} -B 65536 -s 0".to_owned()),
        Tool::new("podcap", podcap("af-xdp")),
        Tool::new("podcap-ring", podcap("ring")),
        Tool {
            label: "podcap-steady",
            // 5 GB holds what any run here records (TCP: ~3.5 GB at most), so the packets
            // counted are all there. Filling it took 8 s and the sensor's first scan of
            // it (no index yet) 7 s: 30 s leaves room for a slow phase of this VM.
            command: format!(
                "bash {} {{OUT}} 5120 64 {} --iface {{IF}} --channel ring --listen 127.0.0.1:0",
                harness.join("steady_store.sh").display(),
                sensor.display()
            ),
            settle_s: 30,
        },
    ];
    // With TCP: no capture, only 900 MB/s (about what a capture of that transfer writes)
    // written into tmpfs by another process: the cost of the page cache alone.
    let floor = Tool::new(
        "write-only 900 MB/s",
        format!(
            "python3 {} 900 {{OUT}}",
            harness.join("page_cache_floor.py").display()
        ),
    );
    (capture_tools, floor)
}

/// What a comparison produced: the table (Markdown) and every run's harness line, so
/// figures other than the table's medians (ratios within a round) can be checked.
pub struct Report {
    pub table: String,
    pub rounds: String,
}

/// Runs the comparison.
pub fn run(rounds: usize, frames: u64, seconds: u64) -> Result<Report> {
    if crate::util::output("id", &["-u"]).is_none_or(|u| u.trim() != "0") {
        bail!("the capture benchmark makes network namespaces: run it as root");
    }
    let env = crate::setup::run_and_env()?;
    util::cargo_build(&env, true)?;
    let root = util::workspace_root();
    let harness = root.join("benches/harness");
    let (capture_tools, floor) = tools(&harness, &root.join("target/release/podcap-sensor"));
    let mut table = String::new();
    let mut lines = String::new();
    let _ = writeln!(
        table,
        "| traffic | tool | sender rate (median) | ratio to no capture | completeness (median) | busy CPU, all cores (median) |\n|---|---|---|---|---|---|"
    );
    let workloads: Vec<(String, Vec<String>, bool)> = [64, 512, 1500]
        .iter()
        .map(|size| {
            (
                format!("trafgen {size} B"),
                vec![size.to_string(), frames.to_string()],
                false,
            )
        })
        .chain(std::iter::once((
            "iperf3 TCP (GSO)".to_owned(),
            vec![seconds.to_string()],
            true,
        )))
        .collect();
    for (name, args, tcp) in workloads {
        let script = harness.join(if tcp { "tcp_capture.sh" } else { "peer_capture.sh" });
        let mut tools = capture_tools.clone();
        if tcp {
            tools.push(floor.clone());
        }
        let workload = Workload {
            name: &name,
            script: &script,
            args: &args,
            tcp,
            outdir: None,
        };
        compare(&workload, &tools, rounds, &mut table, &mut lines)?;
    }
    table.push_str(LEGEND);
    Ok(Report { table, rounds: lines })
}

/// One traffic pattern of a comparison.
struct Workload<'a> {
    name: &'a str,
    script: &'a Path,
    args: &'a [String],
    tcp: bool,
    /// Where the captures write (`OUTDIR` of the harness); `None`: tmpfs.
    outdir: Option<&'a Path>,
}

/// Runs every tool on `workload` for `rounds` rounds (alternating, the order rotating) and
/// adds a row per tool to `table`, and every harness line to `lines`.
fn compare(
    workload: &Workload<'_>,
    tools: &[Tool],
    rounds: usize,
    table: &mut String,
    lines: &mut String,
) -> Result<Vec<Sample>> {
    let name = workload.name;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); tools.len()];
    for round in 0..rounds {
        for k in 0..tools.len() {
            let t = (k + round) % tools.len();
            let tool = &tools[t];
            let mut all = workload.args.to_vec();
            all.push(tool.command.clone());
            all.push(tool.label.to_owned());
            let line = run_harness(workload.script, &all, tool.settle_s, workload.outdir)?;
            eprintln!("bench capture: {name} round {round}: {line}");
            let _ = writeln!(lines, "{name} round {round}: {line}");
            let sample = if workload.tcp {
                Sample {
                    rate: field(&line, "gbit_s=").unwrap_or(0.0),
                    completeness: field(&line, "completeness=").unwrap_or(0.0),
                    cpu: field(&line, "cpu_s_per_gb=").unwrap_or(0.0),
                }
            } else {
                Sample {
                    rate: field(&line, "send_pps=").unwrap_or(0.0),
                    completeness: field(&line, "ratio=").unwrap_or(0.0),
                    cpu: field(&line, "cpu_us_per_frame=").unwrap_or(0.0),
                }
            };
            samples[t].push(sample);
        }
    }
    let base = median(samples[0].iter().map(|s| s.rate).collect());
    let mut medians = Vec::new();
    for (t, Tool { label, .. }) in tools.iter().enumerate() {
        let rate = median(samples[t].iter().map(|s| s.rate).collect());
        let completeness = median(samples[t].iter().map(|s| s.completeness).collect());
        let cpu = median(samples[t].iter().map(|s| s.cpu).collect());
        medians.push(Sample {
            rate,
            completeness,
            cpu,
        });
        let (unit, cpu) = if workload.tcp {
            (format!("{rate:.2} Gbit/s"), format!("{cpu:.2} s/GB"))
        } else {
            (format!("{rate:.0} frames/s"), format!("{cpu:.2} µs/frame"))
        };
        let done = if *label == "none" || label.starts_with("write-only") {
            "-".to_owned()
        } else {
            format!("{:.1} %", completeness * 100.0)
        };
        let _ = writeln!(
            table,
            "| {name} | {label} | {unit} | {:.2}x | {done} | {cpu} |",
            rate / base.max(f64::MIN_POSITIVE)
        );
    }
    Ok(medians)
}

/// What the table's tools are, printed under it.
const LEGEND: &str = "
`podcap` is `--channel af-xdp` (clone, capture veth, XDP, AF_XDP) and `podcap-ring` the
default `--channel ring`, both into a new store (8 GB, nothing retired); `podcap-steady` is
the ring channel into a store already full (`benches/harness/steady_store.sh`: 5 GB of
64 MB segments), so every rotation overwrites a retired segment's file, as a sensor does
once it has run for `--max-size` worth of traffic. `write-only` records nothing: another
process writes 900 MB/s into tmpfs, the page cache's cost of keeping a TCP capture. Busy
CPU is all cores' busy time (`/proc/stat`) while the sender runs, per frame or GB sent: it
includes the sender and receiver themselves (compare with `none`) and what a capture adds
in their context (its copy in the sender's softirq) as well as its own threads.
";

/// `cargo xtask bench disk`: the node's case, the store on a real file system (`dir`, by
/// default `/var/tmp`: this machine's ext4 disk, as a hostPath would be): trafgen 1500 B
/// frames (the rate that outruns buffered writes), no capture, tcpdump, podcap with direct
/// writes and with `--buffered-writes`; and `dd` on the same file system as the disk's
/// limit (direct, and buffered with `fdatasync`).
pub fn disk(rounds: usize, frames: u64, dir: &Path) -> Result<Report> {
    if crate::util::output("id", &["-u"]).is_none_or(|u| u.trim() != "0") {
        bail!("the disk benchmark makes network namespaces: run it as root");
    }
    let fs_type = util::output(
        "findmnt",
        &["-n", "-o", "FSTYPE", "--target", &dir.display().to_string()],
    )
    .unwrap_or_default();
    if fs_type.trim() == "tmpfs" {
        bail!(
            "{} is tmpfs: the disk benchmark needs a disk-backed file system",
            dir.display()
        );
    }
    let env = crate::setup::run_and_env()?;
    util::cargo_build(&env, true)?;
    let root = util::workspace_root();
    let harness = root.join("benches/harness");
    let sensor = root.join("target/release/podcap-sensor");
    let podcap = |extra: &str| {
        format!(
            "{} --iface {{IF}} --channel ring --data-dir {{OUT}} --segment-size 256MB --max-size 8GB --listen 127.0.0.1:0{extra}",
            sensor.display()
        )
    };
    let tools = vec![
        Tool::new("none", "sleep 1000".to_owned()),
        Tool::new("tcpdump", "tcpdump -i {IF} -w {OUT} -B 65536 -s 0".to_owned()),
        Tool::new("podcap-ring", podcap("")),
        Tool::new("podcap-ring --buffered-writes", podcap(" --buffered-writes")),
    ];
    let mut table = String::new();
    let mut lines = String::new();
    let _ = writeln!(
        table,
        "| traffic | tool | sender rate (median) | ratio to no capture | completeness (median) | busy CPU, all cores (median) |\n|---|---|---|---|---|---|"
    );
    let name = format!("trafgen 1500 B, store on {} ({})", dir.display(), fs_type.trim());
    let args = vec!["1500".to_owned(), frames.to_string()];
    let script = harness.join("peer_capture.sh");
    let workload = Workload {
        name: &name,
        script: &script,
        args: &args,
        tcp: false,
        outdir: Some(dir),
    };
    compare(&workload, &tools, rounds, &mut table, &mut lines)?;
    let direct = median(
        (0..rounds)
            .map(|_| dd_rate(dir, "oflag=direct"))
            .collect::<Result<_>>()?,
    );
    let buffered = median(
        (0..rounds)
            .map(|_| dd_rate(dir, "conv=fdatasync"))
            .collect::<Result<_>>()?,
    );
    let _ = writeln!(
        table,
        "\nThe disk's limit on the same file system (`dd bs=1M count=2048`, median of {rounds}): \
         **{direct:.0} MB/s** with `oflag=direct`, {buffered:.0} MB/s buffered with `conv=fdatasync`. \
         A 1500 B frame is 1,532 bytes in a segment: at the no-capture rate above the \
         sender offers that many frames per second, and `podcap-ring` writes directly \
         (`O_DIRECT`), `--buffered-writes` through the page cache."
    );
    Ok(Report { table, rounds: lines })
}

/// A filter that accepts a tenth of trafgen's frames (their source ports are random).
const TENTH: &str = "udp src portrange 0-6553";

/// `cargo xtask bench filter`: at 64 and 1500 B, a filter that rejects every frame (`udp
/// port 7`; trafgen sends to port 9) and one that accepts a tenth (`udp src portrange
/// 0-6553`; trafgen's source ports are random): no capture, tcpdump with it (classic BPF in
/// the kernel, before its copy), podcap with it (translated to eBPF, before the copy), and
/// for the tenth podcap without a filter. Under each tenth table: the CPU podcap adds per
/// packet it records, with the filter and without (the goal: no higher with it).
pub fn filter(rounds: usize, frames: u64) -> Result<Report> {
    if crate::util::output("id", &["-u"]).is_none_or(|u| u.trim() != "0") {
        bail!("the filter benchmark makes network namespaces: run it as root");
    }
    let env = crate::setup::run_and_env()?;
    util::cargo_build(&env, true)?;
    let root = util::workspace_root();
    let script = root.join("benches/harness/peer_capture.sh");
    let sensor = root.join("target/release/podcap-sensor");
    // A store as large as the capture table's: the whole run stays in it, so what it holds
    // is what was recorded (the default size would retire the oldest frames of a 1500 B run).
    let podcap = |filter: &str| {
        format!(
            "{} --iface {{IF}} --channel ring --data-dir {{OUT}} --segment-size 256MB --max-size 8GB --listen 127.0.0.1:0{filter}",
            sensor.display()
        )
    };
    let rejecting = vec![
        Tool::new("none", "sleep 1000".to_owned()),
        Tool::new(
            "tcpdump 'udp port 7'",
            "tcpdump -i {IF} -w {OUT} -B 65536 -s 0 'udp port 7'".to_owned(),
        ),
        Tool::new(
            "podcap-ring --filter 'udp port 7'",
            podcap(" --filter 'udp port 7'"),
        ),
    ];
    let tenth = vec![
        Tool::new("none", "sleep 1000".to_owned()),
        Tool::new(
            "tcpdump 'udp src portrange 0-6553'",
            format!("tcpdump -i {{IF}} -w {{OUT}} -B 65536 -s 0 '{TENTH}'"),
        ),
        Tool::new(
            "podcap-ring --filter 'udp src portrange 0-6553'",
            podcap(&format!(" --filter '{TENTH}'")),
        ),
        Tool::new("podcap-ring, no filter", podcap("")),
    ];
    let mut table = String::new();
    let mut lines = String::new();
    let header = "| traffic | tool | sender rate (median) | ratio to no capture | recorded (median) | busy CPU, all cores (median) |\n|---|---|---|---|---|---|";
    // trafgen frames of `size` against `tools`, the rows into `table`.
    let trafgen = |name: &str, size: u32, tools: &[Tool], table: &mut String, lines: &mut String| {
        let args = vec![size.to_string(), frames.to_string()];
        let workload = Workload {
            name,
            script: &script,
            args: &args,
            tcp: false,
            outdir: None,
        };
        compare(&workload, tools, rounds, table, lines)
    };
    let _ = writeln!(table, "{header}");
    for size in [64, 1500] {
        let name = format!("trafgen {size} B, all rejected");
        trafgen(&name, size, &rejecting, &mut table, &mut lines)?;
    }
    let _ = writeln!(table, "\nA filter that accepts a tenth (`{TENTH}`):\n\n{header}");
    let mut added = String::new();
    for size in [64, 1500] {
        let name = format!("trafgen {size} B, a tenth accepted");
        let medians = trafgen(&name, size, &tenth, &mut table, &mut lines)?;
        // Busy CPU per frame sent, above no capture, over the share of frames recorded.
        let per_recorded = |s: &Sample| (s.cpu - medians[0].cpu) / s.completeness.max(1e-9);
        let _ = writeln!(
            added,
            "- {size} B: podcap adds {:.2} µs of CPU per packet it records with the filter \
             ({:.1} % recorded), {:.2} µs without ({:.1} %)",
            per_recorded(&medians[2]),
            medians[2].completeness * 100.0,
            per_recorded(&medians[3]),
            medians[3].completeness * 100.0
        );
    }
    let _ = write!(table, "\n{added}");
    Ok(Report { table, rounds: lines })
}

/// MB/s `dd` writes 2 GiB into `dir` with `flag` (`oflag=direct`, `conv=fdatasync`).
fn dd_rate(dir: &Path, flag: &str) -> Result<f64> {
    let file = dir.join(format!("podcap-dd.{}", std::process::id()));
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", "count=2048", flag])
        .output()
        .context("running dd")?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stderr);
    // "2147483648 bytes (2.1 GB, 2.0 GiB) copied, 4.1 s, 524 MB/s"
    let seconds = text
        .lines()
        .find(|l| l.contains("copied"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with(" s")))
        .and_then(|p| p.trim_end_matches(" s").parse::<f64>().ok())
        .with_context(|| format!("dd printed no time: {text}"))?;
    Ok(2_147_483_648.0 / seconds / 1e6)
}

mod archive;
mod dump;
mod memory;

pub use self::{archive::archive, dump::dump, memory::memory};
