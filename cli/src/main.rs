//! `podcap`: snapshots from every sensor, merged into one time-ordered pcapng.
fn main() -> std::process::ExitCode {
    podcap_cli::commands::main("podcap")
}
