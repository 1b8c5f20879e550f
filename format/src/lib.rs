//! podcap-format: podcap's file formats and the rules for reading them, shared by the
//! sensor and the CLI, in pure Rust (no eBPF, no C library, stable Rust alone).
//!
//! Modules, one per format: `pcapng` (encoding, and reading that trusts no length),
//! `client_hello` (a TLS ClientHello's random in a captured frame),
//! `segment_name` (how the store names its files), `index` (the store's `index.tsv`),
//! `merge` (the k-way merge of pcapng streams by time), `recording` (a recording job), `targeting` (the targeting document
//! with Kubeshark's keys), `settings` (the recording settings' JSON), `units` (human sizes,
//! durations and times).
pub mod client_hello;
pub mod index;
pub mod merge;
pub mod pcapng;
pub mod recording;
pub mod segment_name;
pub mod settings;
pub mod targeting;
pub mod units;
