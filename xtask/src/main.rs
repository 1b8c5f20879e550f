//! podcap's developer tasks: `cargo xtask setup | build | test | demo | run | bench`.
//!
//! Rules: every task that builds runs `setup` first, and `setup` installs only what is
//! missing, so it is idempotent and quick on a machine that has everything. Nothing here needs
//! stdin (CI runs it with none).
mod demo;
mod setup;
mod util;

use std::process::ExitCode;

use anyhow::Result;
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
    /// Run the criterion benchmarks (`all`, or one benchmark name).
    Bench {
        #[arg(default_value = "all")]
        what: String,
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
        Task::Bench { what } => {
            let env = setup::run_and_env()?;
            let mut cmd = util::cargo(&env);
            cmd.args(["bench", "-p", "podcap-benches"]);
            if what != "all" {
                cmd.args(["--bench", &what]);
            }
            util::run_status(&mut cmd, "cargo bench")
        }
    }
}

fn test(args: &[String]) -> Result<()> {
    let env = setup::run_and_env()?;
    util::run_status(
        util::cargo(&env).args(["fmt", "--all", "--check"]),
        "cargo fmt --check",
    )?;
    util::run_status(
        util::cargo(&env).args(["clippy", "--all-targets", "--", "-D", "warnings"]),
        "cargo clippy",
    )?;
    // The privileged tests drive the `podcap` CLI binary too.
    util::cargo_build(&env, false)?;
    // Privileged tests serialise themselves (they share the capture veth name and the
    // kernel); unit tests run in parallel.
    util::run_status(util::cargo(&env).arg("test").args(args), "cargo test")
}
