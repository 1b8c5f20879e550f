//! The `podcap` CLI's library part: where sensors come from and the merge of their live
//! streams (a library so benchmarks and other front ends such as `kubectl-podcap` can use
//! them). The merge of slices is `podcap_format::merge`. The CLI stands on podcap-format
//! alone: no sensor crate, no eBPF toolchain, no C library.
pub mod app;
pub mod discovery;
pub mod live;
pub mod progress;
pub mod record;
pub mod snapshot;
pub mod source;
pub mod table;
