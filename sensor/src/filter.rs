//! Capture filters with tcpdump's semantics (`--filter`, later `tap.bpfOverride`): compiled
//! and checked by `podcap-filter` (libpcap's own compiler, the interpreter), and run in
//! the kernel where it can be: translated to eBPF (`ebpf.rs`) and tail-called by the tc
//! programs (`capture/kernel_filter.rs`), on the whole packet as a socket filter sees it.
//! Where that cannot be (the kernel refuses the translation, `tcpdump -r` semantics, the
//! tap's XDP frames) [`Filter::matches`] runs it in user space on the capture thread.
pub mod ebpf;

pub use podcap_filter::{BpfInsn, Filter, FilterError};
