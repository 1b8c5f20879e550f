//! Packet and drop counters shared by the capture thread, the writer and (later) the API.
//!
//! Rules: drops are never silent. Each is counted at the stage that lost it — `kernel`
//! (the ring channel: the BPF ring buffer was full; AF_XDP: clone, veth, XDP, AF_XDP
//! ring), `ring` (the user-space ring was full), `disk` (the segment could not be written,
//! or the disk fell behind and the writer's buffers were full) — per interface slot, and reported in the segment's
//! Interface Statistics Blocks. All counters are statistics: `Relaxed` loads and stores,
//! because nothing else is published through them.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        RwLock,
    },
    time::{Duration, Instant},
};

/// Counters of one selected interface.
#[derive(Debug, Default)]
pub struct SlotStats {
    /// Packets the tc program saw on the interface (cloned or failed to clone).
    pub seen: AtomicU64,
    /// Packets (frames) that reached user space.
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    /// Rejected by the capture filter (`--filter`) in user space: not recorded, not a drop.
    pub filtered: AtomicU64,
    /// Rejected by the capture filter in the kernel (snapshot refreshed by the capture
    /// thread).
    pub kernel_filtered: AtomicU64,
    /// Lost in the kernel (snapshot refreshed by the capture thread).
    pub kernel_drops: AtomicU64,
    /// Lost because the user-space ring was full.
    pub ring_drops: AtomicU64,
    /// Lost because the writer could not write them.
    pub writer_drops: AtomicU64,
    /// Written into a segment.
    pub written: AtomicU64,
}

/// Counters of every slot.
#[derive(Debug)]
pub struct Stats {
    pub slots: Vec<SlotStats>,
    /// The pod each slot of Kubernetes mode records now (set as pods come and go).
    pods: RwLock<BTreeMap<usize, PodSlot>>,
}

/// A pod's interface recorded in a slot (Kubernetes mode). Slots are reused as pods come
/// and go while their counters run on: `baseline` is what the slot had counted when this
/// pod got it, so a pod's series start at zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSlot {
    pub namespace: String,
    pub pod: String,
    /// The interface's name as the pod sees it (the node's, for a hostNetwork pod).
    pub interface: String,
    pub baseline: SlotSnapshot,
}

/// A point-in-time copy of one slot's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotSnapshot {
    pub seen: u64,
    pub received: u64,
    pub received_bytes: u64,
    pub filtered: u64,
    pub kernel_drops: u64,
    pub ring_drops: u64,
    pub writer_drops: u64,
    pub written: u64,
}

impl SlotSnapshot {
    /// What the interface received, for a statistics block: the kernel's count (`seen`,
    /// refreshed by the capture thread every second) or, when that lags, what reached user
    /// space, which is counted per packet: never fewer than the packets written.
    #[must_use]
    pub fn interface_received(&self) -> u64 {
        self.seen.max(self.received)
    }

    /// What podcap itself lost: the user-space ring and the disk.
    #[must_use]
    pub fn sensor_drops(&self) -> u64 {
        self.ring_drops.saturating_add(self.writer_drops)
    }
}

impl Stats {
    #[must_use]
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| SlotStats::default()).collect(),
            pods: RwLock::default(),
        }
    }

    /// Says which pod's interface `slot` records from now on (`None`: none), its counters
    /// so far becoming the new pod's baseline.
    pub fn set_pod(&self, slot: usize, pod: Option<(String, String, String)>) {
        let baseline = self.snapshot(slot);
        // A poisoned lock only means a reader panicked: the map itself is whole.
        let mut pods = self
            .pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match pod {
            Some((namespace, pod, interface)) => {
                pods.insert(
                    slot,
                    PodSlot {
                        namespace,
                        pod,
                        interface,
                        baseline,
                    },
                );
            }
            None => {
                pods.remove(&slot);
            }
        }
    }

    /// The pods' slots, in slot order.
    #[must_use]
    pub fn pods(&self) -> Vec<(usize, PodSlot)> {
        let pods = self
            .pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pods.iter().map(|(slot, pod)| (*slot, pod.clone())).collect()
    }

    #[must_use]
    pub fn snapshot(&self, slot: usize) -> SlotSnapshot {
        self.slots
            .get(slot)
            .map_or_else(SlotSnapshot::default, |s| SlotSnapshot {
                seen: s.seen.load(Relaxed),
                received: s.received.load(Relaxed),
                received_bytes: s.received_bytes.load(Relaxed),
                filtered: s.filtered.load(Relaxed) + s.kernel_filtered.load(Relaxed),
                kernel_drops: s.kernel_drops.load(Relaxed),
                ring_drops: s.ring_drops.load(Relaxed),
                writer_drops: s.writer_drops.load(Relaxed),
                written: s.written.load(Relaxed),
            })
    }

    /// Totals over every slot.
    #[must_use]
    pub fn totals(&self) -> SlotSnapshot {
        (0..self.slots.len())
            .map(|i| self.snapshot(i))
            .fold(SlotSnapshot::default(), |a, b| SlotSnapshot {
                seen: a.seen + b.seen,
                received: a.received + b.received,
                received_bytes: a.received_bytes + b.received_bytes,
                filtered: a.filtered + b.filtered,
                kernel_drops: a.kernel_drops + b.kernel_drops,
                ring_drops: a.ring_drops + b.ring_drops,
                writer_drops: a.writer_drops + b.writer_drops,
                written: a.written + b.written,
            })
    }
}

impl SlotSnapshot {
    /// What was counted since `baseline` (each counter only grows).
    #[must_use]
    pub fn since(&self, baseline: &Self) -> Self {
        Self {
            seen: self.seen.saturating_sub(baseline.seen),
            received: self.received.saturating_sub(baseline.received),
            received_bytes: self.received_bytes.saturating_sub(baseline.received_bytes),
            filtered: self.filtered.saturating_sub(baseline.filtered),
            kernel_drops: self.kernel_drops.saturating_sub(baseline.kernel_drops),
            ring_drops: self.ring_drops.saturating_sub(baseline.ring_drops),
            writer_drops: self.writer_drops.saturating_sub(baseline.writer_drops),
            written: self.written.saturating_sub(baseline.written),
        }
    }
}

/// Logs a warning per drop stage at most once per `interval`, with the count since the last.
#[derive(Debug)]
pub struct DropWarnings {
    interval: Duration,
    /// What a `kernel` drop is on this sensor's channel.
    kernel_why: &'static str,
    last: [(u64, Option<Instant>); 3],
}

/// What a `kernel` drop is with the ring channel: its only buffer was full.
pub const KERNEL_DROP_RING: &str =
    "the BPF ring buffer was full: the sensor did not drain it in time (--ring-size)";
/// What a `kernel` drop is with AF_XDP (and on taps).
pub const KERNEL_DROP_AF_XDP: &str = "clone, capture veth, XDP or AF_XDP ring";

impl DropWarnings {
    #[must_use]
    pub fn new(interval: Duration, kernel_why: &'static str) -> Self {
        Self {
            interval,
            kernel_why,
            last: [(0, None); 3],
        }
    }

    /// Compares the totals with what was last reported and warns where a stage lost more.
    pub fn check(&mut self, totals: &SlotSnapshot) {
        self.report(totals, false);
    }

    /// Reports every drop not yet reported, whatever the interval (at stop).
    pub fn flush(&mut self, totals: &SlotSnapshot) {
        self.report(totals, true);
    }

    fn report(&mut self, totals: &SlotSnapshot, now: bool) {
        let stages = [
            ("kernel", totals.kernel_drops, self.kernel_why),
            (
                "ring",
                totals.ring_drops,
                "the user-space ring was full: the writer is too slow",
            ),
            (
                "disk",
                totals.writer_drops,
                "segments could not be written, or the disk fell behind the traffic",
            ),
        ];
        for (i, (stage, count, why)) in stages.into_iter().enumerate() {
            let (reported, at) = &mut self.last[i];
            if count > *reported && (now || at.is_none_or(|t| t.elapsed() >= self.interval)) {
                log::warn!(
                    "dropped {} packets at stage {stage} ({why}); {count} in total",
                    count - *reported
                );
                *reported = count;
                *at = Some(Instant::now());
            }
        }
    }
}
