//! `cargo xtask bench archive`: the offline dump at a cluster's scale, against a real S3
//! server (moto's, on loopback): an archive of 64 nodes x 24 hours of 5-minute segments
//! (written by the `archive_fill` example as sensors write them), then `podcap dump
//! --archive` of 5 minutes, an hour and the whole day of every node, and the day of one pod;
//! beside it `aws s3 cp --recursive` fetching every object of the day from the same server
//! (the anchor: what a plain bulk copy of the same bytes takes).
//!
//! Rules: the server and every file are ours and gone when the bench ends (error
//! included); the CLI's requests are the ones it reports (listings, manifests read,
//! objects fetched), its peak RSS is read from `time -v`; the destination is on the
//! disk-backed `--disk-dir`.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::util;

const NODES: u64 = 64;
const SEGMENTS_PER_NODE: u64 = 288;
const SEGMENT_SECONDS: u64 = 300;
const PACKETS_PER_SEGMENT: u64 = 100;
const PACKET_BYTES: u64 = 500;
const BUCKET: &str = "podcap-archive-bench";
/// 2026-11-29, the day `archive_fill` writes.
const DAY: &str = "2026-11-29";
const DAY_EVERY_NODE: &str = "the day, every node";

/// moto's S3 server on a free loopback port, ended by PID on drop.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto's server (cargo xtask setup installs it)")?;
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_mins(1);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("moto's server did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        util::run_status(
            Command::new("curl").args(["-sf", "-X", "PUT", &format!("{}/{BUCKET}", server.endpoint())]),
            "creating the bucket",
        )?;
        Ok(server)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A command with the credentials and endpoint the archive's users set.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", self.endpoint());
        cmd
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `podcap dump --archive` did.
struct DumpRun {
    label: String,
    seconds: f64,
    rss_kib: u64,
    packets: u64,
    lists: u64,
    manifests: u64,
    objects: u64,
    fetched: String,
    written: u64,
}

/// The number written just before `word` in `text` (`"3 listings"` → 3).
fn count_before(text: &str, word: &str) -> u64 {
    text.find(word)
        .and_then(|at| text[..at].split_whitespace().last())
        .and_then(|n| n.trim_start_matches('(').replace(',', "").parse().ok())
        .unwrap_or(0)
}

fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

fn dump(
    server: &S3Server,
    cli: &Path,
    label: &str,
    window: (&str, &str),
    extra: &[&str],
    dest: &Path,
) -> Result<DumpRun> {
    let mut cmd = server.command("/usr/bin/time");
    cmd.args(["-f", "%e %M"])
        .arg(cli)
        .args([
            "dump",
            "--archive",
            &format!("s3://{BUCKET}"),
            "--cluster",
            "bench",
        ])
        .args(["--from", window.0, "--to", window.1, "--dest"])
        .arg(dest)
        .args(extra);
    let out = cmd.output().context("running podcap dump --archive")?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("podcap dump --archive ({label}) failed: {text}");
    }
    let summary = text
        .lines()
        .find(|l| l.starts_with("podcap: wrote "))
        .with_context(|| format!("no summary from podcap: {text}"))?;
    let counts = summary.split_once(") from ").map_or("", |(_, rest)| rest);
    let mut last = text.lines().last().unwrap_or_default().split_whitespace();
    Ok(DumpRun {
        label: label.to_owned(),
        seconds: last.next().and_then(|w| w.parse().ok()).unwrap_or(0.0),
        rss_kib: last.next().and_then(|w| w.parse().ok()).unwrap_or(0),
        packets: count_before(summary, " packet"),
        lists: count_before(counts, " listing"),
        manifests: count_before(counts, " manifest"),
        objects: count_before(counts, " object"),
        fetched: counts
            .rsplit_once(", ")
            .map_or("", |(_, f)| f.trim_end_matches(" fetched"))
            .to_owned(),
        written: bytes_under(dest),
    })
}

/// Writes the archive into the bucket with `archive_fill`: (stored bytes, its seconds).
fn fill(server: &S3Server) -> Result<(u64, String)> {
    let filled = Command::new(util::target_dir().join("release/examples/archive_fill"))
        .arg(server.endpoint())
        .arg(BUCKET)
        .args(
            [
                NODES,
                SEGMENTS_PER_NODE,
                SEGMENT_SECONDS,
                PACKETS_PER_SEGMENT,
                PACKET_BYTES,
            ]
            .map(|n| n.to_string()),
        )
        .output()
        .context("running archive_fill")?;
    if !filled.status.success() {
        bail!("archive_fill failed: {}", String::from_utf8_lossy(&filled.stderr));
    }
    // "segments N objects N stored BYTES seconds S"
    let fill = String::from_utf8_lossy(&filled.stdout).into_owned();
    let after = |word: &str| {
        fill.split_whitespace()
            .skip_while(|w| *w != word)
            .nth(1)
            .unwrap_or("?")
            .to_owned()
    };
    Ok((after("stored").parse().unwrap_or(0), after("seconds")))
}

/// `cargo xtask bench archive`: the table, in Markdown.
pub fn archive(disk_dir: &Path) -> Result<String> {
    let env = crate::setup::run_and_env()?;
    util::cargo_build(&env, true)?;
    util::build_release_example(&env, "podcap-benches", "archive_fill")?;
    if Command::new("aws")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        util::run_status(
            Command::new("python3").args(["-m", "pip", "install", "--quiet", "awscli"]),
            "pip install awscli",
        )?;
    }
    let cli = util::workspace_root().join("target/release/podcap");
    let scratch = Scratch::new(disk_dir)?;
    let server = S3Server::start()?;
    let (stored, fill_seconds) = fill(&server)?;
    let mut runs = Vec::new();
    let day = (format!("{DAY}T00:00:00Z"), "2026-11-30T00:00:00Z".to_owned());
    for (label, from, to, extra) in [
        (
            "5 min, every node",
            format!("{DAY}T14:00:00Z"),
            format!("{DAY}T14:05:00Z"),
            &[][..],
        ),
        (
            "1 h, every node",
            format!("{DAY}T14:00:00Z"),
            format!("{DAY}T15:00:00Z"),
            &[][..],
        ),
        (DAY_EVERY_NODE, day.0.clone(), day.1.clone(), &[][..]),
        (
            "the day, one pod (`--pod '^web-7$'`)",
            day.0.clone(),
            day.1.clone(),
            &["--pod", "^web-7$"][..],
        ),
        (
            "2000 to 2100, one pod",
            "2000-01-01T00:00:00Z".to_owned(),
            "2100-01-01T00:00:00Z".to_owned(),
            &["--pod", "^web-7$"][..],
        ),
    ] {
        let dest = scratch.join(&format!("dump{}", runs.len()));
        runs.push(dump(&server, &cli, label, (&from, &to), extra, &dest)?);
        let _ = std::fs::remove_dir_all(&dest);
    }
    let aws_dest = scratch.join("aws");
    let started = Instant::now();
    let mut aws = server.command("aws");
    aws.args([
        "s3",
        "cp",
        "--recursive",
        "--quiet",
        &format!("s3://{BUCKET}/podcap/v1/bench/nodes/"),
    ])
    .arg(&aws_dest);
    util::run_status(&mut aws, "aws s3 cp --recursive")?;
    let aws_seconds = started.elapsed().as_secs_f64();
    let aws_bytes = bytes_under(&aws_dest);
    drop((scratch, server));

    Ok(render(
        &runs,
        (stored, &fill_seconds),
        (aws_seconds, aws_bytes),
        disk_dir,
    ))
}

/// The table of the runs beside the anchor.
#[expect(clippy::cast_precision_loss, reason = "printed figures")]
fn render(
    runs: &[DumpRun],
    (stored, fill_seconds): (u64, &str),
    (aws_seconds, aws_bytes): (f64, u64),
    disk_dir: &Path,
) -> String {
    use std::fmt::Write as _;
    let mut table = format!(
        "Archive: {NODES} nodes x 24 h of {SEGMENT_SECONDS}-s segments ({} segments, {} objects with their manifests, {:.1} MB stored; {PACKETS_PER_SEGMENT} packets of {PACKET_BYTES} B each), moto on loopback, written in {fill_seconds} s; destinations on {}.\n\n\
         | offline dump | LIST | GET (manifests + objects) | LIST goal (objects/1000 + nodes + 2) | wall time | fetched | written | rate | CLI peak RSS |\n|---|---|---|---|---|---|---|---|---|\n",
        NODES * SEGMENTS_PER_NODE,
        NODES * SEGMENTS_PER_NODE * 2,
        stored as f64 / 1e6,
        disk_dir.display(),
    );
    for run in runs {
        let goal = run.objects / 1000 + NODES + 2;
        let _ = writeln!(
            table,
            "| {} | {} | {} + {} | {goal} | {:.2} s | {} | {:.1} MB ({} packets) | {:.1} MB/s | {:.1} MiB |",
            run.label,
            run.lists,
            run.manifests,
            run.objects,
            run.seconds,
            run.fetched,
            run.written as f64 / 1e6,
            run.packets,
            run.written as f64 / 1e6 / run.seconds.max(f64::MIN_POSITIVE),
            run.rss_kib as f64 / 1024.0,
        );
    }
    let _ = writeln!(
        table,
        "| anchor: `aws s3 cp --recursive` of every object of the day (manifests too) | - | {} | - | {aws_seconds:.2} s | {:.1} MB | - | {:.1} MB/s | - |",
        NODES * SEGMENTS_PER_NODE * 2,
        aws_bytes as f64 / 1e6,
        aws_bytes as f64 / 1e6 / aws_seconds.max(f64::MIN_POSITIVE),
    );
    if let Some(day) = runs.iter().find(|r| r.label == DAY_EVERY_NODE) {
        let _ = writeln!(
            table,
            "\nThe day's offline dump took {:.2}x the anchor's time: {:.2}x its throughput of the same stored bytes (the dump also decompresses, checks, cuts and merges them).",
            day.seconds / aws_seconds.max(f64::MIN_POSITIVE),
            aws_seconds / day.seconds.max(f64::MIN_POSITIVE),
        );
    }
    table
}

/// A new folder of ours in a folder, removed with what it holds on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(dir: &Path) -> Result<Self> {
        let path = dir.join(format!("podcap-archive-bench.{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
