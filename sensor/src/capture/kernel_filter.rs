//! The capture filter in the kernel: the classic BPF program libpcap compiled, translated
//! to eBPF (`filter/ebpf.rs`) and tail-called by the tc programs before they take a packet,
//! so a rejected packet costs no copy at all.
//!
//! Rules:
//! - Only the selected interfaces' tc programs run it, on both channels (before the ring
//!   copy, before the clone). The tap's frames arrive through XDP and are still filtered in
//!   user space.
//! - Installing: the translation is loaded, put into `FILTER_CHAIN` slot `CHAIN_FILTER` in
//!   one map update (a new filter replaces the old one atomically for the tail call), and
//!   only then `SETTING_FILTER` is turned on. Removing: the setting goes off first.
//! - Where the kernel refuses the translation, or the filter was compiled with `tcpdump -r`
//!   semantics (VLAN tags in the bytes, which the kernel's skb does not hold), the filter
//!   runs in user space as before, and the sensor says why.
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use aya::{
    maps::{Array, Map, MapData},
    programs::SchedClassifier,
    Ebpf,
};
use podcap_common::{CHAIN_FILTER, CHAIN_TAKE, SETTING_FILTER};

use super::{
    ebpf::{program, program_error, set},
    CaptureError,
};
use crate::filter::{
    ebpf::{translate, Verdict},
    Filter,
};

pub(super) struct KernelFilter {
    /// `FILTER_CHAIN`.
    chain: MapData,
    /// The filter program in the chain (kept open while it is there).
    current: Option<OwnedFd>,
}

impl KernelFilter {
    /// Loads `podcap_take` and puts it into its slot of the chain.
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, CaptureError> {
        const TAKE: &str = "podcap_take";
        let take: &mut SchedClassifier = program(ebpf, TAKE)?;
        take.load()
            .map_err(|source| program_error(TAKE, "load", source))?;
        let take_fd = take
            .fd()
            .map_err(|source| program_error(TAKE, "open", source))?
            .try_clone()
            .map_err(|source| chain_error("hold podcap_take", source))?;
        let Some(Map::ProgramArray(chain)) = ebpf.take_map("FILTER_CHAIN") else {
            return Err(CaptureError::Missing {
                what: "map",
                name: "FILTER_CHAIN",
            });
        };
        crate::sys::bpf::set_program(chain.fd().as_fd(), CHAIN_TAKE, take_fd.as_fd())
            .map_err(|source| chain_error("put podcap_take into FILTER_CHAIN", source))?;
        Ok(Self { chain, current: None })
    }

    /// Runs `filter` in the kernel from now on (`None`: no filter); false when it cannot,
    /// and user space must filter.
    pub(super) fn install(&mut self, filter: Option<&Filter>, settings: &mut Array<MapData, u32>) -> bool {
        let Some(filter) = filter else {
            let _ = set(settings, SETTING_FILTER, 0);
            return true;
        };
        if !filter.is_live_semantics() {
            let _ = set(settings, SETTING_FILTER, 0);
            log::info!(
                "capture filter {:?} runs in user space: it was compiled with `tcpdump -r` semantics",
                filter.expression()
            );
            return false;
        }
        let code = translate(
            filter.program(),
            Verdict::TailCall {
                map_fd: self.chain.fd().as_fd().as_raw_fd(),
                index: CHAIN_TAKE,
            },
        );
        let installed = crate::sys::bpf::load_sched_cls(&code).and_then(|program| {
            crate::sys::bpf::set_program(self.chain.fd().as_fd(), CHAIN_FILTER, program.as_fd())?;
            Ok(program)
        });
        match installed.map_err(|e| e.to_string()).and_then(|program| {
            set(settings, SETTING_FILTER, 1).map_err(|e| e.to_string())?;
            Ok(program)
        }) {
            Ok(program) => {
                self.current = Some(program);
                log::info!(
                    "capture filter {:?} runs in the kernel, before the copy",
                    filter.expression()
                );
                true
            }
            Err(e) => {
                let _ = set(settings, SETTING_FILTER, 0);
                log::warn!(
                    "capture filter {:?} runs in user space: the kernel refused its translation: {e}",
                    filter.expression()
                );
                false
            }
        }
    }
}

fn chain_error(action: &str, source: std::io::Error) -> CaptureError {
    CaptureError::FilterChain {
        action: action.to_owned(),
        source,
    }
}
