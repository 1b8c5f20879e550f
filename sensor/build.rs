//! Builds `sensor-ebpf` for the BPF target (nightly `-Z build-std=core`) so the sensor can
//! embed the object. `PODCAP_EBPF_TOOLCHAIN` names another toolchain (with `RUSTC_BOOTSTRAP=1`
//! a stable one works too); `cargo xtask setup` chooses it.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PODCAP_EBPF_TOOLCHAIN");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root_dir = Path::new(&manifest_dir).join("../sensor-ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    // aya-build forwards every line of the inner cargo as a warning; keep only real output.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    let toolchain_name = std::env::var("PODCAP_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain_name.as_deref() {
        None | Some("" | "nightly") => aya_build::Toolchain::Nightly,
        Some(other) => aya_build::Toolchain::Custom(other),
    };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "podcap-ebpf",
            root_dir,
            ..Default::default()
        }],
        toolchain,
    )
}
