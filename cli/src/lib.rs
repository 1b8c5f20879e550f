//! The `podcap` CLI's library part: where sensors come from and the merge of their live
//! streams (a library so benchmarks and other front ends such as `kubectl-podcap` can use
//! them). The merge of slices is `podcap_format::merge`. The CLI stands on podcap-format
//! and podcap-archive (offline reads of the archive, `archive.rs`) alone: no sensor crate,
//! no eBPF toolchain, no system C library.
pub mod age;
pub mod archive;
pub mod commands;
pub mod dest;
pub mod discovery;
pub mod live;
pub mod output;
pub mod progress;
pub mod reached;
pub mod source;
pub mod table;
