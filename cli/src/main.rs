//! `podcap`: the user's command line (snapshots from sensors arrive with the API issue).
use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("podcap: no commands yet; the sensor API and `podcap dump` come next");
    ExitCode::from(2)
}
