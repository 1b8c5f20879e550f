//! The `podcap` CLI's library part: where sensors come from and the merge of their slices
//! (a library so benchmarks and other front ends such as `kubectl-podcap` can use them).
pub mod merge;
pub mod source;
