//! Routes: how packets reach user space. The selected interfaces take one [`Route`]; a
//! `--tap` interface has its own ([`TapRoute`]) beside it.
//!
//! Rules:
//! - [`Route::Ring`]: the tc programs copy each packet into the BPF ring buffer `COPIES`.
//!   Nothing else is built: no capture veth, no XDP program, no socket.
//! - [`Route::Clone`]: the tc programs clone each packet to the capture veth, on the queue
//!   of its slot and direction; native XDP on the peer hands it to that queue's AF_XDP
//!   socket. Field order is drop order: the sockets, then the veth.
//! - Counting, per slot: a packet is seen when the tc program took it or failed to, and lost
//!   when it failed; on the clone route also when XDP or its socket dropped it, and (once
//!   the capture is quiescent) when the veth lost it between tc and XDP. A tap's frames are
//!   seen by its XDP program, and lost when XDP or a socket dropped them.
use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::{
    maps::{Array, MapData, RingBuf, XskMap},
    programs::{Xdp, XdpMode},
    Ebpf,
};
use podcap_common::{
    queue_for, slot_of_queue, QueueCounters, CHANNEL_RING, DIRECTION_INBOUND, MAX_TAP_QUEUES,
    SETTING_CAPTURE_IFINDEX, SETTING_CHANNEL, SETTING_TAP_COUNTERS,
};

use crate::ring::PacketSink;

use super::{
    deliver::{push_copy, push_frame},
    ebpf::{program, program_error, set, take_map},
    veth::{self, CaptureVeth, NamespaceClaim},
    CaptureError, Interface,
};
use crate::{
    filter::Filter,
    stats::Stats,
    sys::{self, xsk::XskSet},
};

/// Ring-buffer records taken per pass of the capture loop: bounded, so that commands and
/// counters are still looked at under a flood.
const RING_BATCH: usize = 8192;

/// The route of the selected interfaces' packets.
pub(super) enum Route {
    /// The ring channel: copies in the BPF ring buffer.
    Ring(RingBuf<MapData>),
    /// The AF_XDP channel: clones through the capture veth.
    Clone(CloneRoute),
}

/// The capture veth and the sockets on its peer's queues.
pub(super) struct CloneRoute {
    sockets: XskSet,
    _veth: CaptureVeth,
}

/// A tap interface: XDP on it, a socket per rx queue; its frames count in `slot`.
pub(super) struct TapRoute {
    sockets: XskSet,
    slot: u32,
}

/// Where the packet of a queue is counted: (seen, lost) per slot.
pub(super) type SlotCounts = [(u64, u64)];

impl Route {
    /// The ring channel: the tc programs write into `COPIES` from now on.
    pub(super) fn ring(ebpf: &mut Ebpf, settings: &mut Array<MapData, u32>) -> Result<Self, CaptureError> {
        let copies = take_map::<RingBuf<MapData>>(ebpf, "COPIES")?;
        set(settings, SETTING_CHANNEL, CHANNEL_RING)?;
        Ok(Self::Ring(copies))
    }

    /// The AF_XDP channel for `queues` queues: capture veth, XDP on its peer, one socket
    /// per queue, and only then the veth's ifindex for the tc programs.
    pub(super) fn clone_through_veth(
        ebpf: &mut Ebpf,
        settings: &mut Array<MapData, u32>,
        claim: &NamespaceClaim,
        queues: u32,
        frames_per_queue: u32,
    ) -> Result<Self, CaptureError> {
        let veth = CaptureVeth::create(claim, queues)?;
        let xdp: &mut Xdp = program(ebpf, "podcap_xdp")?;
        xdp.load()
            .map_err(|source| program_error("podcap_xdp", "load", source))?;
        xdp.attach(veth::CAPTURE_PEER, XdpMode::Driver)
            .map_err(|source| {
                program_error(
                    "podcap_xdp",
                    &format!("attach to {} (native mode)", veth::CAPTURE_PEER),
                    source,
                )
            })?;
        // Queue q carries slot q/2 in direction q%2; the socket's tag is the queue itself.
        let queue_ids: Vec<(u32, u32)> = (0..queues).map(|q| (q, q)).collect();
        let sockets = XskSet::bind(veth::CAPTURE_PEER, &queue_ids, frames_per_queue)?;
        register_sockets(ebpf, "SOCKETS", &sockets)?;
        set(settings, SETTING_CAPTURE_IFINDEX, veth.ifindex)?;
        Ok(Self::Clone(CloneRoute { sockets, _veth: veth }))
    }

    pub(super) fn is_ring(&self) -> bool {
        matches!(self, Self::Ring(_))
    }

    /// The descriptors that become readable when packets wait.
    pub(super) fn fds(&self) -> Vec<RawFd> {
        match self {
            Self::Ring(copies) => vec![copies.as_fd().as_raw_fd()],
            Self::Clone(route) => route.sockets.fds(),
        }
    }

    /// Moves what waits into `sink`; returns how many packets that was.
    pub(super) fn drain(
        &mut self,
        sink: &mut impl PacketSink,
        stats: &Stats,
        clock_offset_ns: i128,
        filter: Option<&Filter>,
    ) -> usize {
        match self {
            Self::Ring(copies) => {
                let mut total = 0;
                for _ in 0..RING_BATCH {
                    let Some(item) = copies.next() else {
                        break;
                    };
                    push_copy(sink, stats, clock_offset_ns, filter, &item);
                    total += 1;
                }
                total
            }
            Self::Clone(route) => drain_sockets(&mut route.sockets, sink, stats, clock_offset_ns, filter),
        }
    }

    /// Adds the kernel's counts of `queues` queues to `per_slot`. `quiescent`: no clone is
    /// in flight, so clones that never reached XDP were lost in the veth.
    pub(super) fn count(
        &self,
        queues: u32,
        read: impl Fn(u32) -> QueueCounters,
        per_slot: &mut SlotCounts,
        quiescent: bool,
    ) {
        match self {
            Self::Ring(_) => {
                for queue in 0..queues {
                    let (slot, _) = slot_of_queue(queue);
                    if let Some(entry) = per_slot.get_mut(slot as usize) {
                        let c = read(queue);
                        entry.0 += c.taken + c.take_failed;
                        entry.1 += c.take_failed;
                    }
                }
            }
            Self::Clone(route) => {
                for (index, socket) in route.sockets.sockets.iter().enumerate() {
                    let (slot, _) = slot_of_queue(socket.tag);
                    let Some(entry) = per_slot.get_mut(slot as usize) else {
                        continue;
                    };
                    let c = read(socket.tag);
                    let socket_drops = route.sockets.drops(index).unwrap_or_default();
                    if quiescent {
                        log::debug!("queue {}: {c:?}, {socket_drops:?}", socket.queue);
                    }
                    // Counted in wire frames on both sides (a GSO super-frame as its
                    // segments), so the shortfall is exactly what the veth lost.
                    let veth_lost = if quiescent {
                        c.taken_wire_frames.saturating_sub(c.xdp_seen)
                    } else {
                        0
                    };
                    entry.0 += c.taken_wire_frames + c.take_failed;
                    entry.1 += c.take_failed + c.xdp_dropped + socket_drops.lost() + veth_lost;
                }
            }
        }
    }
}

impl TapRoute {
    /// XDP on the tap itself (native mode where the driver has it, else generic), one
    /// socket per rx queue; its frames count in `slot`.
    pub(super) fn start(
        ebpf: &mut Ebpf,
        settings: &mut Array<MapData, u32>,
        tap: &Interface,
        slot: u32,
        frames_per_queue: u32,
    ) -> Result<Self, CaptureError> {
        let queue = queue_for(slot, DIRECTION_INBOUND);
        set(settings, SETTING_TAP_COUNTERS, queue)?;
        let rx_queues = sys::rx_queue_count(&tap.name).clamp(1, MAX_TAP_QUEUES);
        let xdp: &mut Xdp = program(ebpf, "podcap_tap")?;
        xdp.load()
            .map_err(|source| program_error("podcap_tap", "load", source))?;
        if let Err(native) = xdp.attach(&tap.name, XdpMode::Driver) {
            log::warn!(
                "{}: no native XDP ({native}); capturing in generic mode",
                tap.name
            );
            xdp.attach(&tap.name, XdpMode::Skb).map_err(|source| {
                program_error(
                    "podcap_tap",
                    &format!("attach to {} (native and generic mode)", tap.name),
                    source,
                )
            })?;
        }
        let queue_ids: Vec<(u32, u32)> = (0..rx_queues).map(|q| (q, queue)).collect();
        let sockets = XskSet::bind(&tap.name, &queue_ids, frames_per_queue)?;
        register_sockets(ebpf, "TAP_SOCKETS", &sockets)?;
        Ok(Self { sockets, slot })
    }

    pub(super) fn fds(&self) -> Vec<RawFd> {
        self.sockets.fds()
    }

    pub(super) fn drain(
        &mut self,
        sink: &mut impl PacketSink,
        stats: &Stats,
        clock_offset_ns: i128,
        filter: Option<&Filter>,
    ) -> usize {
        drain_sockets(&mut self.sockets, sink, stats, clock_offset_ns, filter)
    }

    /// Sets the tap's slot in `per_slot` from the kernel's counts.
    pub(super) fn count(&self, read: impl Fn(u32) -> QueueCounters, per_slot: &mut SlotCounts) {
        let c = read(queue_for(self.slot, DIRECTION_INBOUND));
        let socket_drops: u64 = (0..self.sockets.sockets.len())
            .map(|i| self.sockets.drops(i).unwrap_or_default().lost())
            .sum();
        if let Some(entry) = per_slot.get_mut(self.slot as usize) {
            *entry = (c.xdp_seen, c.xdp_dropped + socket_drops);
        }
    }
}

fn drain_sockets(
    sockets: &mut XskSet,
    sink: &mut impl PacketSink,
    stats: &Stats,
    clock_offset_ns: i128,
    filter: Option<&Filter>,
) -> usize {
    let mut total = 0;
    for index in 0..sockets.sockets.len() {
        total += sockets.receive(index, |queue, frame| {
            push_frame(sink, stats, clock_offset_ns, filter, queue, frame);
        });
    }
    total
}

/// Puts every socket of `sockets` in the XSKMAP `name` at the index of its device queue.
fn register_sockets(ebpf: &mut Ebpf, name: &'static str, sockets: &XskSet) -> Result<(), CaptureError> {
    let mut map: XskMap<_> = take_map(ebpf, name)?;
    for (index, socket) in sockets.sockets.iter().enumerate() {
        let fd = sockets.raw_fd(index).unwrap_or(-1);
        map.set(socket.queue, fd, 0).map_err(|source| CaptureError::Map {
            name,
            action: format!("set queue {}", socket.queue),
            source: Box::new(source),
        })?;
    }
    // The map stays in the kernel with the programs that use it.
    Ok(())
}
