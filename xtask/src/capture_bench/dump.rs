//! `cargo xtask bench dump`: `podcap dump` merging many sensors' slices, against `curl`
//! fetching the same slices as the transport's floor.
//!
//! Rules: every sensor is an `api_fixture` process on loopback with a store of its own,
//! stopped when the bench ends (error included); the CLI's peak RSS is read from `time -v`.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::util;

/// `cargo xtask bench dump`: `podcap dump` merging `sensors` sensors (each an
/// `api_fixture` process with its own store of `packets` UDP frames of `bytes`, on
/// loopback), unfiltered and with a filter each sensor applies (`udp dst port 9`: a tenth);
/// beside it the same slices fetched with `curl` (8 at a time, to /dev/null) as the
/// transport's floor. Reports wall time, bytes written and the CLI's peak RSS.
#[expect(clippy::cast_precision_loss, reason = "printed figures")]
pub fn dump(sensors: u16, packets: u64, bytes: usize) -> Result<String> {
    let env = crate::setup::run_and_env()?;
    util::cargo_build(&env, true)?;
    util::build_release_example(&env, "podcap-sensor", "api_fixture")?;
    let cli = util::workspace_root().join("target/release/podcap");
    let dir = TempDir::new("podcap-dump-bench")?;
    let token = dir.path().join("token");
    std::fs::write(&token, "bench-token").context("writing the token")?;
    let fixtures = Fixtures::start(dir.path(), sensors, packets, bytes)?;
    let dump = |extra: &[&str], dest: &Path| timed_dump(&cli, &fixtures.urls, &token, extra, dest);
    let all = dump(&[], &dir.path().join("all"))?;
    let filtered = dump(&["--filter", "udp dst port 9"], &dir.path().join("filtered"))?;
    let curl_start = std::time::Instant::now();
    util::run_status(
        Command::new("sh").arg("-c").arg(format!(
            "seq 21000 {} | xargs -P 8 -I P curl -sf -o /dev/null \\
             -H 'Authorization: Bearer bench-token' 'http://127.0.0.1:P/api/v1/snapshot?last=5m'",
            21_000 + u32::from(sensors) - 1
        )),
        "curl",
    )?;
    let curl_seconds = curl_start.elapsed().as_secs_f64();
    drop(fixtures);
    let mb = |b: u64| b as f64 / 1e6;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(format!(
        "| dump of {sensors} sensors ({packets} frames of {bytes} B each) | wall time | written | rate | CLI peak RSS |\n|---|---|---|---|---|\n\
         | `podcap dump --time 5m` | {:.2} s | {:.1} MB | {:.0} MB/s | {:.1} MiB |\n\
         | `podcap dump --filter 'udp dst port 9'` (a tenth) | {:.2} s | {:.1} MB | - | {:.1} MiB |\n\
         | the same {sensors} slices with curl, 8 at a time, to /dev/null | {curl_seconds:.2} s | - | {:.0} MB/s | - |\n",
        all.0,
        mb(all.1),
        mb(all.1) / all.0.max(f64::MIN_POSITIVE),
        mib(all.2),
        filtered.0,
        mb(filtered.1),
        mib(filtered.2),
        mb(all.1) / curl_seconds.max(f64::MIN_POSITIVE),
    ))
}

/// `api_fixture` processes on ports 21000 and up, ended by PID on drop.
struct Fixtures {
    children: Vec<std::process::Child>,
    urls: Vec<String>,
}

impl Fixtures {
    fn start(dir: &Path, sensors: u16, packets: u64, bytes: usize) -> Result<Self> {
        let fixture = util::target_dir().join("release/examples/api_fixture");
        let mut fixtures = Self {
            children: Vec::new(),
            urls: Vec::new(),
        };
        for i in 0..sensors {
            let port = 21_000 + i;
            let mut child = Command::new(&fixture)
                .arg(dir.join(format!("store{i}")))
                .arg(port.to_string())
                .args(["bench-token", "bench-admin"])
                .arg(packets.to_string())
                .arg(bytes.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("starting api_fixture")?;
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                use std::io::BufRead;
                let _ = std::io::BufReader::new(out).read_line(&mut line);
            }
            fixtures.children.push(child);
            if !line.contains("listening") {
                bail!("api_fixture {i} did not start");
            }
            fixtures.urls.push(format!("node{i}=http://127.0.0.1:{port}"));
        }
        Ok(fixtures)
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `podcap dump` of the last 5 minutes from `urls` into `dest` under `/usr/bin/time`:
/// (seconds, bytes written, peak RSS in KiB).
fn timed_dump(
    cli: &Path,
    urls: &[String],
    token: &Path,
    extra: &[&str],
    dest: &Path,
) -> Result<(f64, u64, u64)> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%e %M"]).arg(cli).arg("dump");
    for url in urls {
        cmd.arg("--sensor").arg(url);
    }
    cmd.arg("--token-file")
        .arg(token)
        .args(["--time", "5m", "--dest"])
        .arg(dest)
        .args(extra);
    let out = cmd.output().context("running podcap dump")?;
    let text = String::from_utf8_lossy(&out.stderr);
    let last = text.lines().last().unwrap_or_default();
    let mut words = last.split_whitespace();
    let seconds: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("podcap dump: {text}"))?;
    let kib: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let written = std::fs::read_dir(dest).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    });
    Ok((seconds, written, kib))
}

/// A folder of ours under the temporary directory, removed with what it holds on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{name}.{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
