//! `podcap-sensor`: parse and validate flags, then run until SIGTERM/SIGINT.
use std::process::ExitCode;

use clap::Parser;
use podcap_sensor::{cluster::resolve::Resolver, error_chain, flags::Args, run, shutdown::Shutdown, sys};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if let Some(uid) = &args.resolve_pod {
        return resolve_pod(uid, args.cgroup_root.clone());
    }
    let config = match args.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("podcap-sensor: {e}");
            return ExitCode::from(2);
        }
    };
    // Files and folders the sensor makes are its own: segments, snapshots and recordings
    // hold the pods' traffic and may hold TLS secrets.
    sys::restrict_umask();
    if let Err(e) = sys::install_stop_handlers() {
        eprintln!("podcap-sensor: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match run::run(&config, &Shutdown::new()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podcap-sensor: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `--resolve-pod UID`: what the kernel sees of a pod, as JSON on stdout.
fn resolve_pod(uid: &str, cgroup_root: Option<std::path::PathBuf>) -> ExitCode {
    let resolver = cgroup_root.map_or_else(Resolver::detect, Resolver::new);
    match resolver.resolve(uid) {
        Ok(r) => {
            let interfaces: Vec<_> = r
                .interfaces
                .iter()
                .map(|i| serde_json::json!({"name": i.name, "ifindex": i.ifindex, "podSide": i.pod_side}))
                .collect();
            let doc = serde_json::json!({
                "uid": uid,
                "cgroupDir": r.cgroup_dir.display().to_string(),
                "cgroupId": r.cgroup_id,
                "hostNetwork": r.host_network,
                "interfaces": interfaces,
            });
            println!("{doc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podcap-sensor: --resolve-pod: {e}");
            ExitCode::FAILURE
        }
    }
}
