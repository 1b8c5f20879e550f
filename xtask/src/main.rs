//! podcap's developer tasks: `cargo xtask setup | build | test | demo | run | bench`.
//!
//! Rules: every task that builds runs `setup` first, and `setup` installs only what is
//! missing, so it is idempotent and quick on a machine that has everything. Nothing here needs
//! stdin (CI runs it with none).
mod capture_bench;
mod conformance;
mod demo;
mod fuzz;
mod setup;
mod util;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "podcap developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks: apt packages, rust-src, bpf-linker, test tools.
    Setup,
    /// Build the eBPF object, the sensor and the CLI.
    Build {
        /// Build with optimisations.
        #[arg(long)]
        release: bool,
    },
    /// fmt and clippy checks, unit tests and the privileged integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The cargo-fuzz targets (readers of all podcap reads: pcapng, the merge, the index,
    /// units, the targeting document), each for `--seconds`.
    Fuzz {
        /// Only this target.
        target: Option<String>,
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
    /// Build, make a demo topology with two "pods", record their traffic, show the result.
    Demo {
        /// Seconds of traffic to record.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Build and run the sensor on this host with ARGS (`cargo xtask run -- --iface eth0 ...`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks: `capture` (podcap vs tcpdump on veth traffic), `disk` (the same with the
    /// store on a disk-backed file system, beside `dd`), `filter` (a filter that rejects
    /// everything and one that accepts a tenth, podcap's in the kernel beside tcpdump's),
    /// `disk-rates` (frames and TCP bulk paced to 0.5/0.8/0.9/1.2 of `dd oflag=direct`,
    /// podcap's direct and buffered writes beside tcpdump: drops by stage, CPU, memory;
    /// `--disk-cap` adds slower disks),
    /// `dump` (`podcap dump` merging 64 sensors on loopback), `archive` (`podcap dump
    /// --archive` of a 64-node day in moto, beside `aws s3 cp`), `memory` (sensor RSS over
    /// minutes at full rate), a benchmark's name (`pipeline`, `store`, `store_scale`,
    /// `merge`), or `all` (every one; the capture, disk, filter and dump tables
    /// and the memory line written to docs/performance.md).
    Bench {
        #[arg(default_value = "all")]
        what: String,
        /// Rounds of the capture comparison (medians are taken over them).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Frames trafgen sends per run.
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// Seconds of each TCP transfer.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Minutes of traffic for the memory benchmark.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Frames of 1500 B per run of the disk benchmark (4.6 GB each by default: past
        /// the kernel's dirty-page limits).
        #[arg(long, default_value_t = 3_000_000)]
        disk_frames: u64,
        /// A folder on the disk-backed file system the disk benchmark writes to.
        #[arg(long, default_value = "/var/tmp")]
        disk_dir: std::path::PathBuf,
        /// Seconds of traffic per offered rate of `disk-rates`.
        #[arg(long, default_value_t = 60)]
        rate_seconds: u64,
        /// The disks of `disk-rates`, in MB/s, comma-separated: 0 is the disk as it is,
        /// any other figure a slower disk (the sensor's direct writes, and dd's, capped
        /// through a blkio cgroup).
        #[arg(long, value_delimiter = ',', default_value = "0,50,150")]
        disk_cap: Vec<u64>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Setup => setup::run(),
        Task::Build { release } => {
            let env = setup::run_and_env()?;
            util::cargo_build(&env, release)
        }
        Task::Test { args } => test(&args),
        Task::Fuzz { target, seconds } => {
            let env = setup::run_and_env()?;
            fuzz::run(&env, seconds, target.as_deref())
        }
        Task::Demo { seconds } => {
            let env = setup::run_and_env()?;
            util::cargo_build(&env, false)?;
            demo::run(seconds)
        }
        Task::Run { args } => {
            let env = setup::run_and_env()?;
            util::cargo_build(&env, false)?;
            util::run_status(
                util::command(util::target_bin("podcap-sensor")).args(&args),
                "podcap-sensor",
            )
        }
        Task::Bench {
            what,
            rounds,
            frames,
            seconds,
            minutes,
            disk_frames,
            disk_dir,
            rate_seconds,
            disk_cap,
        } => {
            if what == "disk-rates" {
                let env = setup::run_and_env()?;
                util::cargo_build(&env, true)?;
                let root = util::workspace_root();
                let mut cmd = std::process::Command::new("bash");
                cmd.arg(root.join("benches/harness/disk_rates.sh"))
                    .arg(root.join("target/release/podcap-sensor"))
                    .arg(&disk_dir)
                    .arg(rate_seconds.to_string());
                cmd.args(
                    disk_cap
                        .iter()
                        .map(|&cap| if cap == 0 { String::new() } else { cap.to_string() }),
                );
                return util::run_status(&mut cmd, "disk_rates.sh");
            }
            let table = match what.as_str() {
                // Two slice sizes: the CLI's memory must not follow them.
                "dump" => Some(format!(
                    "{}\n{}",
                    capture_bench::dump(64, 4_000, 1_000)?,
                    capture_bench::dump(64, 16_000, 1_000)?
                )),
                "archive" => Some(capture_bench::archive(&disk_dir)?),
                "filter" => Some(capture_bench::filter(rounds, frames)?.table),
                "disk" => Some(capture_bench::disk(rounds, disk_frames, &disk_dir)?.table),
                "capture" => Some(capture_bench::run(rounds, frames, seconds)?.table),
                "memory" => Some(capture_bench::memory(minutes, &disk_dir)?),
                _ => None,
            };
            if let Some(table) = table {
                println!("{table}");
                return Ok(());
            }
            let env = setup::run_and_env()?;
            let mut cmd = util::cargo(&env);
            cmd.args(["bench", "-p", "podcap-benches"]);
            if what != "all" {
                cmd.args(["--bench", &what]);
            }
            util::run_status(&mut cmd, "cargo bench")?;
            if what == "all" {
                let capture = capture_bench::run(rounds, frames, seconds)?;
                let disk = capture_bench::disk(rounds, disk_frames, &disk_dir)?;
                let filter = capture_bench::filter(rounds, frames)?;
                let memory = capture_bench::memory(minutes, &disk_dir)?;
                let mut dump = String::new();
                for packets in [4_000, 16_000] {
                    dump.push_str(&capture_bench::dump(64, packets, 1_000)?);
                    dump.push('\n');
                }
                write_performance(
                    &format!(
                        "{}\n### The store on a disk\n\n{}\n### Filters in the kernel\n\n{}\n### `podcap dump` from 64 sensors\n\n{dump}\n{memory}\n",
                        capture.table, disk.table, filter.table
                    ),
                    &format!("{}{}{}", capture.rounds, disk.rounds, filter.rounds),
                )?;
            }
            Ok(())
        }
    }
}

/// `docs/performance.md`: the capture table with the machine and the date; and beside it
/// `docs/performance-rounds.log`, every harness line the table was made of.
fn write_performance(table: &str, rounds: &str) -> Result<()> {
    let machine = format!(
        "{} CPUs ({}), kernel {}",
        util::output("nproc", &[]).unwrap_or_default().trim(),
        util::output("sh", &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"])
            .unwrap_or_default()
            .trim(),
        util::output("uname", &["-r"]).unwrap_or_default().trim()
    );
    let date = util::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let path = util::workspace_root().join("docs/performance.md");
    let previous = std::fs::read_to_string(&path).unwrap_or_default();
    // The hand-written part (what each change bought) follows the marker and is kept.
    let notes = previous
        .split_once("<!-- notes -->")
        .map_or(String::new(), |(_, rest)| rest.to_owned());
    let text = format!(
        "# Performance\n\nWritten by `cargo xtask bench all` on {} ({machine}).\n\n## Capture: podcap vs tcpdump on the same veth traffic\n\n{table}\n<!-- notes -->{notes}",
        date.trim()
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    let rounds_path = path.with_file_name("performance-rounds.log");
    std::fs::write(&rounds_path, rounds).with_context(|| format!("writing {}", rounds_path.display()))?;
    println!("wrote {}", rounds_path.display());
    Ok(())
}

/// Says so before building when the target directory's filesystem has less free space
/// than `needed`: a linker that runs out of space dies with a bus error that names
/// nothing.
fn warn_if_short_of_disk(needed: u64) {
    let target = util::target_dir();
    let probe = target
        .ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(&target)
        .to_string_lossy()
        .into_owned();
    let free = util::output("df", &["--output=avail", "-B1", &probe]).and_then(|out| {
        out.lines()
            .nth(1)
            .and_then(|line| line.trim().parse::<u64>().ok())
    });
    match free {
        Some(free) if free < needed => eprintln!(
            "xtask: warning: {} GiB free under {probe}; a cold build and test needs about {} GiB",
            free >> 30,
            needed >> 30
        ),
        Some(_) => {}
        None => eprintln!("xtask: warning: could not read the free space under {probe} (df)"),
    }
}

/// The CLI builds on a laptop without the eBPF toolchain or the sensor's C libraries: its
/// build (normal and build dependencies) holds no sensor crate, no aya, no libbpf or libxdp,
/// no libpcap binding.
fn cli_stands_alone(env: &util::BuildEnv) -> Result<()> {
    const FORBIDDEN: &[&str] = &[
        "podcap-sensor",
        "podcap-ebpf",
        "podcap-common",
        "aya",
        "xsk-rs",
        "libxdp-sys",
        "libbpf-sys",
        "pcap-sys",
    ];
    let out = util::cargo(env)
        .args([
            "tree",
            "-p",
            "podcap-cli",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .output()
        .context("cargo tree")?;
    anyhow::ensure!(out.status.success(), "cargo tree -p podcap-cli failed");
    let tree = String::from_utf8_lossy(&out.stdout);
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| FORBIDDEN.contains(name) || name.starts_with("aya"))
        .collect();
    anyhow::ensure!(
        found.is_empty(),
        "the CLI must build without the sensor's toolchain, but depends on {found:?}"
    );
    println!("podcap-cli depends on none of {FORBIDDEN:?}");
    Ok(())
}

/// Writes the fault table of docs/reliability.md (between its markers) from the rows the
/// fault tests reported, in the order they ran.
fn write_reliability(report: &std::path::Path) -> Result<()> {
    let rows = std::fs::read_to_string(report).unwrap_or_default();
    let mut table = String::from("| fault | tried | lost | what podcap did and said |\n|---|---|---|---|\n");
    for line in rows.lines() {
        let cells: Vec<&str> = line.split('\t').collect();
        if cells.len() == 4 {
            table.push_str("| ");
            table.push_str(&cells.join(" | "));
            table.push_str(" |\n");
        }
    }
    let date = util::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let path = util::workspace_root().join("docs/reliability.md");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (Some((head, rest)), true) = (text.split_once(FAULTS_BEGIN), text.contains(FAULTS_END)) else {
        anyhow::bail!(
            "{} lacks the markers {FAULTS_BEGIN} and {FAULTS_END}",
            path.display()
        );
    };
    let tail = rest.split_once(FAULTS_END).map_or("", |(_, tail)| tail);
    let written = format!(
        "{head}{FAULTS_BEGIN}\nWritten by `cargo xtask test` on {} ({} rows).\n\n{table}{FAULTS_END}{tail}",
        date.trim(),
        rows.lines().count()
    );
    std::fs::write(&path, written).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote the fault table of {}", path.display());
    Ok(())
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 20;

const FAULTS_BEGIN: &str = "<!-- faults: written by cargo xtask test -->";
const FAULTS_END: &str = "<!-- /faults -->";

/// What a cold `cargo xtask test` leaves in the target directory, with some margin
/// (measured on a fresh clone: 3.8 GB in target/ and 0.5 GB in fuzz/target/ after debug
/// info was cut to line tables; 19 GB before).
const TEST_DISK_BYTES: u64 = 8 << 30;

fn test(args: &[String]) -> Result<()> {
    let mut env = setup::run_and_env()?;
    if std::env::var_os("CI").is_some() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        // A CI build is built once: incremental state would only take disk (5 GB).
        env.push(("CARGO_INCREMENTAL".into(), "0".into()));
    }
    warn_if_short_of_disk(TEST_DISK_BYTES);
    util::run_status(
        util::cargo(&env).args(["fmt", "--all", "--check"]),
        "cargo fmt --check",
    )?;
    util::run_status(
        util::cargo(&env).args(["clippy", "--all-targets", "--", "-D", "warnings"]),
        "cargo clippy",
    )?;
    cli_stands_alone(&env)?;
    // The privileged tests drive the `podcap` CLI binary too.
    util::cargo_build(&env, false)?;
    // Privileged tests serialise themselves (they share the capture veth name and the
    // kernel); unit tests run in parallel. The fault tests add rows to the report that
    // docs/reliability.md's table is written from.
    let report = util::target_dir().join("fault-report.tsv");
    let _ = std::fs::remove_file(&report);
    util::run_status(
        util::cargo(&env)
            .arg("test")
            .args(args)
            .env("PODCAP_FAULT_REPORT", &report)
            // Here a privileged test that cannot run fails; plain `cargo test` skips it.
            .env("PODCAP_REQUIRE_PRIVILEGED", "1"),
        "cargo test",
    )?;
    if args.is_empty() {
        write_reliability(&report)?;
        conformance::run(&env)?;
        // Briefly: `cargo xtask fuzz` runs them for minutes.
        fuzz::run(&env, FUZZ_SECONDS_IN_TEST, None)?;
    }
    // The Helm chart: rendered, linted and validated offline (helm/tests).
    util::run_status(
        util::command("python3").arg(util::workspace_root().join("helm/tests/render_and_validate.py")),
        "chart tests",
    )
}
