//! `podcap-sensor`: parse and validate flags, then run until SIGTERM/SIGINT.
use std::{
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
};

use clap::Parser;
use podcap_sensor::{config::Args, run, sys};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Args::parse().validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("podcap-sensor: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sys::install_stop_handlers() {
        eprintln!("podcap-sensor: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match run::run(&config, &Arc::new(AtomicBool::new(false))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podcap-sensor: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
