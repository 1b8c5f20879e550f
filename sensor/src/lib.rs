//! podcap-sensor: records pod traffic into rotating pcapng segments.
//!
//! Folders in the order a packet travels: `capture` (kernel attach, the ring buffer,
//! AF_XDP), `ring` (capture → writer thread), `writer` (packets into segments), `store`
//! (segments, recovery, retention, slices, and under `store/kept` what the node keeps past
//! the window: snapshots and recording jobs),
//! `archive` (uploads to object storage), `api` (HTTP); beside them `flags` (the command
//! line, validated into every stage's settings), `config` (settings that change while the
//! sensor runs, targeting), `cluster` (Kubernetes mode), `health`, `shutdown` (the one stop handle), `stats` (counters and
//! drops), `filter` (tcpdump expressions), `sys` (every syscall and FFI). `run` wires them.
//! `docs/architecture.md` has the map.
#![warn(unreachable_pub)]

pub mod api;
pub mod archive;
pub(crate) mod capture;
pub mod cluster;
pub mod config;
pub mod filter;
pub mod flags;
pub mod health;
pub mod ring;
pub mod run;
pub mod shutdown;
pub mod stats;
pub mod store;
pub mod sys;
pub mod tls;
pub(crate) mod writer;

// The formats live in podcap-format; these paths stay for the sensor's own code.
pub use podcap_format::{pcapng, units};

/// An error and its sources as one line, each cause said once (a cause its parent's text
/// already holds is not repeated).
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
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
