//! `kubectl-podcap`: `podcap` as a kubectl plugin (`kubectl podcap dump --time 5m`).
fn main() -> std::process::ExitCode {
    podcap_cli::commands::main("kubectl podcap")
}
