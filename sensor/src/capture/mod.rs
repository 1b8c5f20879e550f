//! The capture path: the tc programs take the packets of the selected interfaces (by
//! interface or, for hostNetwork pods, by cgroup) and a [`route::Route`] brings them to user
//! space: copies in a BPF ring buffer (the ring channel, the default), or clones through the
//! capture veth, native XDP and AF_XDP (`--channel af-xdp`); a `--tap` interface has its
//! own XDP route beside it. The capture loop hands every packet to a [`PacketSink`].
//!
//! Files, in the order things happen: `ebpf` (loading, maps, settings), `route` (the
//! channels and their counters), `scope` (selection, attach and detach while running),
//! `deliver` (header checks, counting, filter, the sink); `veth` and `btf` are the parts
//! only some routes need.
//!
//! Rules:
//! - One sensor per network namespace ([`veth::NamespaceClaim`]), taken before anything is
//!   loaded.
//! - Everything attached to the kernel is owned here and released on drop, in reverse
//!   order of attachment: tc links (with the `Ebpf` object), sockets, the capture veth, the
//!   claim. An error half-way leaves nothing behind, and so does a crash (links are fd-based
//!   and the next start deletes a leftover veth).
//! - Each selected interface owns a slot; its packets travel on queue
//!   `queue_for(slot, direction)` (of the capture veth, or named in the ring record), which
//!   is how the interface and the direction survive the route
//!   (`docs/design/capture-path.md`).
//! - Packets leave through a [`PacketSink`]: the user-space ring to the writer thread (a
//!   full ring is a counted drop, so the capture thread never blocks on the writer), or,
//!   for the ring channel without a tap, the writer itself on this thread (the kernel's
//!   ring buffer is then the only buffer, and a full one a kernel-stage drop).
pub(crate) mod btf;
mod deliver;
mod ebpf;
mod kernel_filter;
mod route;
mod scope;
mod tls;

pub(crate) use self::tls::TlsProbe;
pub(crate) use self::tls::TlsSecretMaps;
pub(crate) mod veth;

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use crate::ring::PacketSink;
use aya::{
    maps::{Array, MapData, PerCpuArray},
    Ebpf, EbpfError, EbpfLoader,
};
use podcap_common::{
    FrameMeta, QueueCounters, MAX_POD_CGROUP_LEVEL, MAX_SLOTS, RING_MAX_CAPTURE, SETTING_ENABLED,
    SETTING_RING_WAKEUP, SETTING_SNAPLEN,
};

use self::{
    ebpf::{permission_hint, set, take_map},
    route::{Route, TapRoute},
    scope::Selector,
};
use crate::{
    config::{settings::RuntimeSettings, targeting::FilterSlot},
    filter::Filter,
    stats::{DropWarnings, Stats},
    sys::{self, xsk},
};

/// The eBPF object built by `sensor/build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/podcap-ebpf"));

const META_LEN: usize = std::mem::size_of::<FrameMeta>();

/// Longest packet prefix a frame can carry (UMEM chunk minus headroom and metadata).
#[must_use]
pub(crate) fn max_snaplen() -> u32 {
    xsk::max_frame_len() - META_LEN as u32
}

/// How copies of pod packets reach user space (`docs/design/capture-path.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Channel {
    /// Clones through the capture veth, native XDP and AF_XDP sockets.
    AfXdp,
    /// Copies by the tc program into a BPF ring buffer; GSO super-frames whole. The default:
    /// it measures faster (`docs/performance.md`).
    #[default]
    Ring,
}

impl Channel {
    /// Longest packet prefix this channel carries.
    #[must_use]
    pub fn max_snaplen(self) -> u32 {
        match self {
            Self::AfXdp => max_snaplen(),
            Self::Ring => RING_MAX_CAPTURE,
        }
    }
}

/// Bytes of the ring channel's buffer for `--ring-size`: the kernel wants a power of two
/// (the default 64 MiB holds ~1,000 64 KiB super-frames or ~200,000 small packets).
fn ring_channel_bytes(requested: usize) -> u32 {
    u32::try_from(requested.next_power_of_two()).unwrap_or(1 << 31)
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("too many interfaces: {count} (at most {MAX_SLOTS})")]
    TooManyInterfaces { count: usize },
    #[error(transparent)]
    Veth(#[from] veth::VethError),
    #[error("loading the eBPF programs failed{hint}")]
    Load {
        hint: &'static str,
        #[source]
        source: Box<EbpfError>,
    },
    #[error("eBPF object has no {what} named {name}")]
    Missing { what: &'static str, name: &'static str },
    #[error("eBPF program {name}: {action} failed{hint}")]
    Program {
        name: &'static str,
        action: String,
        hint: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map {name}: {action} failed")]
    Map {
        name: &'static str,
        action: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("eBPF map FILTER_CHAIN: {action} failed")]
    FilterChain {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Xsk(#[from] xsk::XskError),
    #[error("this sensor captures only its --tap interface: it selects no other")]
    OnlyTap,
    #[error("a pod cgroup at level {level} of the cgroup tree (1 to {MAX_POD_CGROUP_LEVEL} are watched)")]
    CgroupLevel { level: u32 },
}

/// One interface to capture from.
#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
}

/// What the capture path needs.
#[derive(Clone, Debug)]
pub(crate) struct CaptureOptions {
    pub interfaces: Vec<Interface>,
    /// A mirror/tap interface whose received frames are all taken (its slot follows the
    /// selected interfaces).
    pub tap: Option<Interface>,
    pub snaplen: u32,
    pub frames_per_queue: u32,
    /// Slots after `interfaces` kept free for interfaces attached while running
    /// ([`Capture::attach`]: pods that come and go).
    pub pool: u32,
    /// Only packets the filter in this slot accepts are recorded; it may change any time.
    pub filter: Arc<FilterSlot>,
    /// Node interfaces on which hostNetwork pods are recorded by cgroup (Kubernetes mode).
    pub host_interfaces: Vec<Interface>,
    /// How copies of selected interfaces' packets reach user space (`--tap` is always
    /// AF_XDP).
    pub channel: Channel,
    /// Bytes of the ring channel's buffer in the kernel (rounded up to a power of two).
    pub ring_bytes: usize,
    /// Load the uprobes that read Go programs' and OpenSSL's TLS secrets
    /// (`--tls-secrets`).
    pub tls_secrets: bool,
    /// With `tls_secrets`: only processes in the pods [`CaptureCommand::FenceTls`] names
    /// give secrets (Kubernetes mode); none until it names some.
    pub tls_fence: bool,
}

/// A change of the capture scope while running, for the capture thread.
#[derive(Debug)]
pub enum CaptureCommand {
    /// Capture `interface` in `slot` (both directions); the outcome goes to `reply`.
    Attach {
        slot: u32,
        interface: Interface,
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// Capture the packets of the hostNetwork pod with this cgroup on node interface
    /// `interface` (one of the host interfaces) in `slot`; the outcome goes to `reply`.
    AttachCgroup {
        slot: u32,
        cgroup_id: u64,
        /// The depth of the pod's cgroup in the cgroup v2 tree (the root is 0).
        level: u32,
        interface: Interface,
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// Stop capturing the interface in `slot` (it may already be gone); `done` when no
    /// new packet of it can come.
    Detach {
        slot: u32,
        done: std::sync::mpsc::Sender<()>,
    },
    /// No process uses the file with this device and inode any more: its TLS secrets
    /// probes go.
    UnprobeTls { file: (u64, u64) },
    /// With the TLS fence up: the targeted pods' cgroups (v2 id, level), the whole set.
    FenceTls { pods: Vec<(u64, u32)> },
    /// Read the TLS secrets of the file at `path` (`--tls-secrets`; `file` is its device
    /// and inode) with `probe`; the outcome goes to `reply`.
    ProbeTls {
        path: std::path::PathBuf,
        file: (u64, u64),
        probe: TlsProbe,
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
}

/// The attached capture path. Field order is drop order: tc links go first (with `ebpf`),
/// then the routes (sockets, then the capture veth), the claim last.
pub(crate) struct Capture {
    // Owns the programs and, through them, every tc and XDP link.
    ebpf: Ebpf,
    /// The selected interfaces' route and selection; `None` when only a tap is captured.
    selected: Option<Selected>,
    tap: Option<TapRoute>,
    _claim: veth::NamespaceClaim,
    /// Slots of selected interfaces (given and pool), without the tap's.
    selected_slots: u32,
    /// Every slot, the tap's included.
    slots: usize,
    counters: PerCpuArray<MapData, QueueCounters>,
    settings: Array<MapData, u32>,
    clock_offset_ns: i128,
    clock_refreshed: Instant,
    commands: Option<std::sync::mpsc::Receiver<CaptureCommand>>,
    filter_slot: Arc<FilterSlot>,
    /// The slot's filter as of `filter_generation`.
    filter: Option<Arc<Filter>>,
    filter_generation: u64,
    /// The filter's place in the tc programs (with selected interfaces).
    kernel_filter: Option<kernel_filter::KernelFilter>,
    /// Whether the kernel runs `filter` for the selected interfaces (else user space does).
    filter_in_kernel: bool,
    /// The secrets the uprobes read, until the collector takes them (`--tls-secrets`).
    tls_secrets: Option<TlsSecretMaps>,
    /// The TLS secrets probes and their fence (`--tls-secrets`).
    tls: Option<tls::TlsProbes>,
}

/// The selected interfaces: the route their packets take and the maps that select them.
struct Selected {
    route: Route,
    selector: Selector,
}

/// Empty 1 ms passes of the capture loop before it waits in `poll` instead.
const TIMER_PASSES: u32 = 50;

impl Capture {
    /// Claims the network namespace, loads the programs, builds the routes and attaches.
    pub(crate) fn start(options: &CaptureOptions) -> Result<Self, CaptureError> {
        let selected_slots = options.interfaces.len() + options.pool as usize;
        if selected_slots > MAX_SLOTS as usize - 1 {
            return Err(CaptureError::TooManyInterfaces {
                count: selected_slots,
            });
        }
        let claim = veth::NamespaceClaim::take()?;
        let mut loader = EbpfLoader::new();
        if options.channel == Channel::Ring {
            loader.map_max_entries("COPIES", ring_channel_bytes(options.ring_bytes));
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|source| {
            let hint = permission_hint(&format!("{source:?}"));
            CaptureError::Load {
                hint,
                source: Box::new(source),
            }
        })?;
        let mut settings: Array<_, u32> = take_map(&mut ebpf, "SETTINGS")?;
        let snaplen = options.snaplen.min(if options.tap.is_some() {
            max_snaplen()
        } else {
            options.channel.max_snaplen()
        });
        set(&mut settings, SETTING_SNAPLEN, snaplen)?;
        set(&mut settings, SETTING_ENABLED, 1)?;
        let counters: PerCpuArray<_, QueueCounters> = take_map(&mut ebpf, "COUNTERS")?;

        // Tap first: it needs no capture veth. Its frames count in the slot after the
        // selected interfaces.
        let tap = match &options.tap {
            Some(tap) => Some(TapRoute::start(
                &mut ebpf,
                &mut settings,
                tap,
                selected_slots as u32,
                options.frames_per_queue,
            )?),
            None => None,
        };
        let selected = if selected_slots == 0 {
            None
        } else {
            // The route before the selection: a packet the tc programs take has a way out.
            let route = match options.channel {
                Channel::Ring => Route::ring(&mut ebpf, &mut settings)?,
                Channel::AfXdp => Route::clone_through_veth(
                    &mut ebpf,
                    &mut settings,
                    &claim,
                    selected_slots as u32 * 2,
                    options.frames_per_queue,
                )?,
            };
            let selector = Selector::start(&mut ebpf, &mut settings, options)?;
            Some(Selected { route, selector })
        };
        let (tls_secrets, tls) = if options.tls_secrets {
            let (maps, probes) = tls::TlsProbes::load(&mut ebpf, options.tls_fence)?;
            (Some(maps), Some(probes))
        } else {
            (None, None)
        };
        let kernel_filter = if selected.is_some() {
            Some(kernel_filter::KernelFilter::new(&mut ebpf)?)
        } else {
            None
        };
        let mut capture = Self {
            ebpf,
            selected,
            tap,
            _claim: claim,
            selected_slots: selected_slots as u32,
            slots: selected_slots + usize::from(options.tap.is_some()),
            counters,
            settings,
            clock_offset_ns: 0,
            clock_refreshed: Instant::now(),
            commands: None,
            filter_generation: options.filter.generation(),
            filter: options.filter.get(),
            filter_slot: Arc::clone(&options.filter),
            kernel_filter,
            filter_in_kernel: false,
            tls_secrets,
            tls,
        };
        capture.install_filter();
        capture.refresh_clock();
        Ok(capture)
    }

    /// The ring buffer of TLS secrets, for the collector (once; `None` without
    /// `--tls-secrets`).
    pub(crate) fn take_tls_secrets(&mut self) -> Option<TlsSecretMaps> {
        self.tls_secrets.take()
    }

    /// Sets Kubernetes mode's TLS fence to `pods` (none without the fence).
    fn fence_tls(&mut self, pods: &[(u64, u32)]) {
        if let Some(tls) = &mut self.tls {
            tls.fence(pods);
        }
    }

    /// Attaches a TLS secrets probe to the file at `path` (`--tls-secrets`).
    fn probe_tls(&mut self, path: &std::path::Path, file: (u64, u64), probe: TlsProbe) -> Result<(), String> {
        let tls = self.tls.as_mut().ok_or("the TLS secrets probes are not loaded")?;
        tls.attach(&mut self.ebpf, (path, file), probe)
    }

    /// Detaches the TLS secrets probes of `file`.
    fn unprobe_tls(&mut self, file: (u64, u64)) {
        if let Some(tls) = &mut self.tls {
            tls.detach(&mut self.ebpf, file);
        }
    }

    /// Puts the current filter into the tc programs where the kernel takes it.
    fn install_filter(&mut self) {
        self.filter_in_kernel = match &mut self.kernel_filter {
            Some(kernel) => {
                kernel.install(self.filter.as_deref(), &mut self.settings) && self.filter.is_some()
            }
            None => false,
        };
    }

    /// Takes scope changes from `commands` while running.
    pub(crate) fn set_commands(&mut self, commands: std::sync::mpsc::Receiver<CaptureCommand>) {
        self.commands = Some(commands);
    }

    fn refresh_clock(&mut self) {
        let mono = sys::monotonic_ns();
        let real = sys::realtime_ns();
        self.clock_offset_ns = i128::from(real) - i128::from(mono);
        self.clock_refreshed = Instant::now();
    }

    fn ring_channel(&self) -> bool {
        self.selected.as_ref().is_some_and(|s| s.route.is_ring())
    }

    /// Whether every packet comes from the kernel's ring buffer (the ring channel without
    /// `--tap`), which can then hold packets while the segments take them on this thread.
    #[must_use]
    pub(crate) fn delivers_only_copies(&self) -> bool {
        self.ring_channel() && self.tap.is_none()
    }

    /// Moves packets from the routes into `sink` until `stop()` says so, then drains.
    pub(crate) fn run(
        &mut self,
        sink: &mut impl PacketSink,
        stats: &Stats,
        settings: &RuntimeSettings,
        mut stop: impl FnMut() -> bool,
    ) {
        let mut enabled = true;
        let mut fds: Vec<_> = self.selected.iter().flat_map(|s| s.route.fds()).collect();
        fds.extend(self.tap.iter().flat_map(TapRoute::fds));
        let kernel_why = if self.delivers_only_copies() {
            crate::stats::KERNEL_DROP_RING
        } else {
            crate::stats::KERNEL_DROP_AF_XDP
        };
        let mut warnings = DropWarnings::new(Duration::from_secs(10), kernel_why);
        let mut last_counters = Instant::now();
        let mut idle_passes = 0u32;
        loop {
            let got = self.drain_once(sink, stats);
            if got > 0 {
                idle_passes = 0;
            } else {
                if stop() {
                    break;
                }
                idle_passes = idle_passes.saturating_add(1);
                self.wait(&fds, idle_passes);
            }
            sink.after_pass();
            if settings.enabled() != enabled {
                enabled = settings.enabled();
                match self.settings.set(SETTING_ENABLED, u32::from(enabled), 0) {
                    Ok(()) => log::info!("recording {}", if enabled { "enabled" } else { "disabled" }),
                    Err(e) => log::error!("could not switch recording: {e}"),
                }
            }
            if self.clock_refreshed.elapsed() >= Duration::from_secs(1) {
                self.refresh_clock();
            }
            self.take_commands();
            let generation = self.filter_slot.generation();
            if generation != self.filter_generation {
                self.filter = self.filter_slot.get();
                self.filter_generation = generation;
                match &self.filter {
                    Some(f) => log::info!("capture filter now {:?}", f.expression()),
                    None => log::info!("capture filter removed"),
                }
                self.install_filter();
            }
            if last_counters.elapsed() >= Duration::from_secs(1) {
                self.refresh_kernel_counters(stats, false);
                warnings.check(&stats.totals());
                last_counters = Instant::now();
            }
        }
        self.finish(sink, stats);
        warnings.flush(&stats.totals());
    }

    /// Waits for packets after `idle_passes` empty drains. While traffic flows the loop
    /// drains on a 1 ms timer and asks the kernel for no wakeup: a wakeup per packet (an
    /// interrupt and two context switches) costs the sending pod more than the copy. After
    /// `TIMER_PASSES` empty passes it waits in `poll`, woken by the next packet (`poll` also
    /// returns at once for copies submitted, unannounced, before the switch).
    fn wait(&mut self, fds: &[std::os::fd::RawFd], idle_passes: u32) {
        if idle_passes < TIMER_PASSES {
            std::thread::sleep(Duration::from_millis(1));
            return;
        }
        let ring_channel = self.ring_channel();
        if ring_channel {
            let _ = self.settings.set(SETTING_RING_WAKEUP, 1, 0);
        }
        if let Err(e) = sys::poll_readable(fds, Duration::from_millis(100)) {
            log::warn!("poll on the capture channels failed: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
        if ring_channel {
            let _ = self.settings.set(SETTING_RING_WAKEUP, 0, 0);
        }
    }

    /// Stops the tc programs, lets packets in flight arrive, drains them and takes exact
    /// counts.
    fn finish(&mut self, sink: &mut impl PacketSink, stats: &Stats) {
        if let Err(e) = self.settings.set(SETTING_ENABLED, 0, 0) {
            log::warn!("could not stop the tc programs before the final drain: {e}");
        }
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            if self.drain_once(sink, stats) == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            sink.after_pass();
        }
        self.refresh_kernel_counters(stats, true);
    }

    fn drain_once(&mut self, sink: &mut impl PacketSink, stats: &Stats) -> usize {
        let offset = self.clock_offset_ns;
        let filter = self.filter.as_deref();
        let mut total = 0;
        if let Some(selected) = &mut self.selected {
            // The kernel filtered these already.
            let filter = if self.filter_in_kernel { None } else { filter };
            total += selected.route.drain(sink, stats, offset, filter);
        }
        if let Some(tap) = &mut self.tap {
            total += tap.drain(sink, stats, offset, filter);
        }
        total
    }

    /// Sums the per-CPU queue counters and socket drop counters into `stats`. `quiescent`:
    /// nothing is in flight, so what never arrived was lost.
    fn refresh_kernel_counters(&self, stats: &Stats, quiescent: bool) {
        let read = |index: u32| {
            let mut c = QueueCounters::default();
            if let Ok(values) = self.counters.get(&index, 0) {
                for v in values.iter() {
                    c.taken += v.taken;
                    c.taken_wire_frames += v.taken_wire_frames;
                    c.take_failed += v.take_failed;
                    c.xdp_seen += v.xdp_seen;
                    c.xdp_dropped += v.xdp_dropped;
                    // Counted on one CPU and taken back on the same one: each CPU's
                    // count is whole, but read as it runs.
                    c.filtered = c.filtered.wrapping_add(v.filtered);
                }
            }
            c
        };
        let mut per_slot = vec![(0u64, 0u64); self.slots];
        if let Some(selected) = &self.selected {
            selected
                .route
                .count(self.selected_slots * 2, read, &mut per_slot, quiescent);
        }
        if let Some(tap) = &self.tap {
            tap.count(read, &mut per_slot);
        }
        // What the kernel's filter rejected was seen and never taken. A CPU's count can be
        // read between a packet's counting and its taking back (one too many for that
        // instant): stored, not kept as a maximum, so the next read corrects it.
        let mut filtered_per_slot = vec![0u64; self.slots];
        for queue in 0..self.selected_slots * 2 {
            let slot = podcap_common::slot_of_queue(queue).0 as usize;
            if let Some(n) = filtered_per_slot.get_mut(slot) {
                *n = n.saturating_add(read(queue).filtered);
            }
        }
        for (slot, (seen, drops)) in per_slot.into_iter().enumerate() {
            if let Some(s) = stats.slots.get(slot) {
                let filtered = filtered_per_slot.get(slot).copied().unwrap_or(0);
                s.kernel_filtered.store(filtered, Relaxed);
                s.seen.store(seen.saturating_add(filtered), Relaxed);
                // fetch_max: malformed frames counted by `push_frame` are part of it too.
                s.kernel_drops.fetch_max(drops, Relaxed);
            }
        }
    }
}
