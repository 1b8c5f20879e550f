//! podcap-sensor: records pod traffic into rotating pcapng segments.
//!
//! Modules, one per concept: `capture` (kernel attach, AF_XDP), `ring` (capture → writer),
//! `pcapng` (encoding and reading), `store` (segments and retention), `stats` (counters and
//! drops), `config` (flags), `units` (sizes and durations), `sys` (every syscall and FFI).
pub mod api;
pub mod capture;
pub mod cluster;
pub mod config;
pub mod filter;
pub mod health;
pub mod ring;
pub mod run;
pub mod settings;
pub mod stats;
pub mod store;
pub mod sys;
pub mod targeting;

// The formats live in podcap-format; these paths stay for the sensor's own code.
pub use podcap_format::{pcapng, units};
