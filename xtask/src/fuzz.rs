//! `cargo xtask fuzz [--seconds N] [TARGET]`: the cargo-fuzz targets of `fuzz/` (libFuzzer
//! with the address sanitizer, nightly), each for N seconds; `cargo xtask test` runs each
//! for a few. Every target reads with podcap-format alone, so a fuzz build needs no eBPF
//! toolchain and no C library. Seeds (`fuzz/seeds/TARGET`) are read; what libFuzzer finds
//! goes to `target/fuzz-corpus/TARGET`, and a crash to `fuzz/artifacts/TARGET`.
use anyhow::Result;

use crate::util::{self, BuildEnv};

/// The targets, in the order they run.
pub const TARGETS: &[&str] = &["pcapng_read", "merge", "index_manifest", "units", "targeting_doc"];

/// Runs the targets with the toolchain setup chose for the eBPF build (nightly, or stable
/// with `RUSTC_BOOTSTRAP=1`: libFuzzer's sanitizer flags need the same).
pub fn run(env: &BuildEnv, seconds: u64, only: Option<&str>) -> Result<()> {
    let root = util::workspace_root();
    let toolchain = env
        .iter()
        .find(|(k, _)| k == "PODCAP_EBPF_TOOLCHAIN")
        .map_or("nightly", |(_, v)| v.as_str());
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = util::target_dir().join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        util::run_status(
            util::command("rustup")
                .current_dir(root.join("fuzz"))
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .args(["run", toolchain, "cargo", "fuzz", "run", target])
                .arg(&corpus)
                .arg(root.join("fuzz/seeds").join(target))
                .args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=2048"]),
            &format!("cargo fuzz run {target}"),
        )?;
    }
    Ok(())
}
