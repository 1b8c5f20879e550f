//! Process helpers for the tasks.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// Environment every cargo invocation gets (chosen by setup: eBPF toolchain, bootstrap).
pub type BuildEnv = Vec<(String, String)>;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

pub fn target_bin(name: &str) -> PathBuf {
    target_dir().join("debug").join(name)
}

pub fn command(program: impl Into<PathBuf>) -> Command {
    let mut cmd = Command::new(program.into());
    cmd.current_dir(workspace_root()).stdin(Stdio::null());
    cmd
}

pub fn cargo(env: &BuildEnv) -> Command {
    let mut cmd = command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

pub fn cargo_build(env: &BuildEnv, release: bool) -> Result<()> {
    let mut cmd = cargo(env);
    cmd.args(["build", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run_status(&mut cmd, "cargo build")
}

/// `cargo build --release -p PACKAGE --example EXAMPLE` (into `target/release/examples/`).
pub fn build_release_example(env: &BuildEnv, package: &str, example: &str) -> Result<()> {
    run_status(
        cargo(env).args(["build", "--release", "-p", package, "--example", example]),
        &format!("cargo build --example {example}"),
    )
}

pub fn run_status(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs and returns stdout; `None` if the program is missing or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
