//! The `podcap` CLI's library part: where sensors come from, the merge of their slices and
//! of their live streams (a library so benchmarks and other front ends such as
//! `kubectl-podcap` can use them).
pub mod app;
pub mod discovery;
pub mod live;
pub mod merge;
pub mod progress;
pub mod source;
