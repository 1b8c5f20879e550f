//! `cargo xtask bench memory`: the sensor's memory over time at the highest packet rate,
//! on tmpfs and on disk, with direct and buffered writes.
//!
//! Rules: each disk run is in a memory cgroup of its own, whose charge (page cache
//! included, as a pod's limit counts it) is sampled beside the sensor's RSS; the largest
//! mappings are named at the end.
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::run_harness;
use crate::util;

/// `cargo xtask bench memory`: the sensor's memory sampled every 10 s while trafgen sends
/// 64-byte frames (the highest packet rate) at full speed for about `minutes`, with the
/// sensor's default ring sizes and a 1 GB store (retention at work): on tmpfs (the RSS
/// view), then on the disk-backed `disk_dir` with the default direct writes and with
/// `--buffered-writes`, each in a memory cgroup of its own whose charge (page cache
/// included, as a pod's memory limit counts it) is sampled too.
pub fn memory(minutes: u64, disk_dir: &Path) -> Result<String> {
    if crate::util::output("id", &["-u"]).is_none_or(|u| u.trim() != "0") {
        bail!("the memory benchmark makes network namespaces: run it as root");
    }
    let env = crate::setup::run_and_env()?;
    util::cargo_build(&env, true)?;
    let mut lines = Vec::new();
    for (store, outdir, extra) in [
        ("tmpfs", None, ""),
        ("disk, direct writes", Some(disk_dir), ""),
        ("disk, --buffered-writes", Some(disk_dir), " --buffered-writes"),
    ] {
        lines.push(format!(
            "- store on {store}: {}",
            memory_run(minutes, outdir, extra)?
        ));
    }
    Ok(format!(
        "Sensor memory over {minutes} min of 64 B frames at full rate, three runs (configured: one 64 MiB ring, the BPF ring buffer, which the kernel maps twice so a wrapped record reads in one piece: RSS counts it twice; the ring channel has no user-space ring; + 64 AF_XDP frames (0.25 MiB) per queue, so the goal's bound is 64 + 64.25 = 128.25 MiB, and RSS counting the double mapping 192.25 MiB; \"charged\" is the sensor's memory cgroup, page cache included):\n\n{}\n",
        lines.join("\n")
    ))
}

/// One run of [`memory`]: the store in `outdir` (`None`: the harness's tmpfs), the
/// sensor started with `extra` flags.
#[expect(clippy::cast_precision_loss, reason = "printed figures")]
fn memory_run(minutes: u64, outdir: Option<&Path>, extra: &str) -> Result<String> {
    let root = util::workspace_root();
    let harness = root.join("benches/harness");
    let log = std::env::temp_dir().join(format!("podcap-rss.{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let command = format!(
        "bash {} {} 10 {} --iface {{IF}} --data-dir {{OUT}} --segment-size 50MB --max-size 1GB --listen 127.0.0.1:0{extra}",
        harness.join("rss_sample.sh").display(),
        log.display(),
        root.join("target/release/podcap-sensor").display()
    );
    // Up to ~650k frames/s from one core on this machine (200k in slow phases): at least
    // `minutes` of traffic.
    let frames = minutes * 60 * 650_000;
    let line = run_harness(
        &harness.join("peer_capture.sh"),
        &[
            "64".to_owned(),
            frames.to_string(),
            command,
            "podcap-memory".to_owned(),
        ],
        2,
        outdir,
    )?;
    let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let _ = std::fs::remove_file(&log);
    let smaps_path = log.with_extension("log.smaps");
    let largest = largest_mappings(&std::fs::read_to_string(&smaps_path).unwrap_or_default());
    let _ = std::fs::remove_file(&smaps_path);
    // seconds, RSS, cgroup charge, page cache (KiB).
    let samples: Vec<[u64; 4]> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().map(str::parse::<u64>);
            let mut sample = [0u64; 4];
            for (i, slot) in sample.iter_mut().enumerate() {
                match words.next() {
                    Some(Ok(v)) => *slot = v,
                    // An older harness wrote only seconds and RSS.
                    None if i >= 2 => {}
                    _ => return None,
                }
            }
            Some(sample)
        })
        .collect();
    let Some(&[end, ..]) = samples.last() else {
        bail!("no memory sample was taken: {line}");
    };
    let after_minute = samples
        .iter()
        .find(|s| s[0] >= 60)
        .or(samples.last())
        .copied()
        .unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    let peak = |i: usize| samples.iter().map(|s| s[i]).max().unwrap_or(0);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let sent = line
        .split_whitespace()
        .filter(|w| w.starts_with("sent=") || w.starts_with("send_pps="))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(format!(
        "{:.1} min ({sent}): RSS {:.1} MiB after 1 min, {:.1} MiB peak, {:.1} MiB at the end ({:+.1} MiB from minute 1); charged {:.1} MiB after 1 min, {:.1} MiB peak, {:.1} MiB at the end, of which page cache {:.1} MiB (peak {:.1} MiB). Largest mappings at the end: {largest}",
        end as f64 / 60.0,
        mib(after_minute[1]),
        mib(peak(1)),
        mib(last[1]),
        mib(last[1]) - mib(after_minute[1]),
        mib(after_minute[2]),
        mib(peak(2)),
        mib(last[2]),
        mib(last[3]),
        mib(peak(3)),
    ))
}

/// The five mappings of a `/proc/PID/smaps` with the most resident memory, as
/// `name rss`, largest first.
#[expect(clippy::cast_precision_loss, reason = "printed figures")]
fn largest_mappings(smaps: &str) -> String {
    let mut mappings: Vec<(u64, String)> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let name = line.split_whitespace().nth(5).unwrap_or("[anonymous]");
            mappings.push((0, name.rsplit('/').next().unwrap_or(name).to_owned()));
        } else if first == "Rss:" {
            if let (Some(last), Some(kib)) = (mappings.last_mut(), words.next().and_then(|k| k.parse().ok()))
            {
                last.0 = kib;
            }
        }
    }
    mappings.sort_by_key(|m| std::cmp::Reverse(m.0));
    mappings
        .iter()
        .take(5)
        .map(|(kib, name)| format!("{name} {:.1} MiB", *kib as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}
