//! The capture path: tc copy → BPF ring buffer (the ring channel), or tc clone → capture
//! veth → native XDP → AF_XDP (`--channel af-xdp`, `--tap`); then a [`PacketSink`].
//!
//! Rules:
//! - Everything attached to the kernel is owned here and released on drop, in reverse
//!   order of attachment: tc links (with the `Ebpf` object), sockets, the capture veth. An
//!   error half-way leaves nothing behind, and so does a crash (links are fd-based and the
//!   next start deletes a leftover veth).
//! - Each selected interface owns a slot; its packets travel on queue
//!   `queue_for(slot, direction)` of the capture veth, which is how the interface and the
//!   direction survive the clone (`docs/design/capture-path.md`).
//! - Packets leave through a [`PacketSink`]: the user-space ring to the writer thread (a
//!   full ring is a counted drop, so the capture thread never blocks on the writer), or,
//!   for the ring channel without AF_XDP sockets, the writer itself on this thread (the
//!   kernel's ring buffer is then the only buffer, and a full one a kernel-stage drop).
//! - Node interfaces given as host interfaces carry the tc programs from the start; a
//!   hostNetwork pod takes a slot per host interface, selected in the kernel by its cgroup
//!   (`HOST_PODS`), and `SETTING_HOST_PODS` counts those entries so that node traffic costs
//!   no lookup while there are none.
pub mod btf;
pub mod veth;

use std::{
    os::fd::{AsFd, AsRawFd},
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, XskMap},
    programs::{
        tc::{SchedClassifierLinkId, TcAttachType},
        SchedClassifier, Xdp, XdpMode,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use podcap_common::{
    queue_for, slot_of_queue, CgroupKey, CopyHeader, FrameMeta, QueueCounters, Selection, CHANNEL_RING,
    COPY_MAGIC, DIRECTION_INBOUND, FRAME_META_MAGIC, MAX_POD_CGROUP_LEVEL, MAX_SLOTS, MAX_TAP_QUEUES,
    RING_MAX_CAPTURE, SETTING_ANCESTOR_IDS, SETTING_CAPTURE_IFINDEX, SETTING_CGROUP_ANCESTORS_OFFSET,
    SETTING_CGROUP_KN_OFFSET, SETTING_CGROUP_LEVEL_OFFSET, SETTING_CHANNEL, SETTING_ENABLED,
    SETTING_HOST_PODS, SETTING_HOST_POD_LEVELS, SETTING_KN_ID_OFFSET, SETTING_RING_WAKEUP, SETTING_SNAPLEN,
    SETTING_SOCK_CGROUP_OFFSET, SETTING_TAP_COUNTERS, SOCK_READ_LEN,
};

use crate::{
    config::{settings::RuntimeSettings, targeting::FilterSlot},
    filter::Filter,
    ring::{RecordHeader, RecordProducer},
    stats::{DropWarnings, Stats},
    sys::{
        self,
        xsk::{self, XskSet},
    },
};

/// The eBPF object built by `sensor/build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/podcap-ebpf"));

const META_LEN: usize = std::mem::size_of::<FrameMeta>();

/// Longest packet prefix a frame can carry (UMEM chunk minus headroom and metadata).
#[must_use]
pub fn max_snaplen() -> u32 {
    xsk::max_frame_len() - META_LEN as u32
}

/// How copies of pod packets reach user space (`docs/design/capture-path.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    #[error(transparent)]
    Xsk(#[from] xsk::XskError),
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
pub struct CaptureOptions {
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
}

/// What the clone route is made of: the capture veth, its sockets, the selection map.
type ClonePath = (veth::CaptureVeth, XskSet, HashMap<MapData, u32, Selection>);

/// An interface attached while running, or a hostNetwork pod's cgroup on a node interface.
struct AttachedInterface {
    ifindex: u32,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
    /// Set for a hostNetwork pod: the slot is its `HOST_PODS` entry (cgroup id, level),
    /// not a `SELECTED` one.
    cgroup_id: Option<(u64, u32)>,
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
}

/// The attached capture path. Field order is drop order: tc links go first (with `ebpf`),
/// then the sockets, then the veth.
pub struct Capture {
    // Owns the programs and, through them, every tc and XDP link.
    ebpf: Ebpf,
    sockets: Option<XskSet>,
    tap_sockets: Option<XskSet>,
    _veth: Option<veth::CaptureVeth>,
    slots: usize,
    counters: PerCpuArray<MapData, QueueCounters>,
    settings: Array<MapData, u32>,
    clock_offset_ns: i128,
    clock_refreshed: Instant,
    /// The tc program's interface → slot map, and the links of interfaces attached while
    /// running, by slot.
    selected: Option<HashMap<MapData, u32, Selection>>,
    /// hostNetwork pods' (cgroup, node interface) → slot map, and how many entries it has.
    host_pods: Option<HashMap<MapData, CgroupKey, Selection>>,
    host_pod_count: u32,
    /// How many `HOST_PODS` entries sit at each cgroup level.
    host_pod_levels: [u32; MAX_POD_CGROUP_LEVEL as usize + 1],
    attached: std::collections::HashMap<u32, AttachedInterface>,
    commands: Option<std::sync::mpsc::Receiver<CaptureCommand>>,
    filter_slot: Arc<FilterSlot>,
    /// The ring channel's buffer, when that is the channel.
    copies: Option<RingBuf<MapData>>,
    /// The slot's filter as of `filter_generation`.
    filter: Option<Arc<Filter>>,
    filter_generation: u64,
}

fn permission_hint(source: &dyn std::fmt::Display) -> &'static str {
    let text = source.to_string();
    if text.contains("Operation not permitted")
        || text.contains("EPERM")
        || text.contains("Permission denied")
    {
        ": permission denied (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    } else {
        ""
    }
}

impl Capture {
    /// Creates the capture veth, loads and attaches everything, binds the sockets.
    pub fn start(options: &CaptureOptions) -> Result<Self, CaptureError> {
        let slots = options.interfaces.len() + options.pool as usize;
        if slots > MAX_SLOTS as usize - 1 {
            return Err(CaptureError::TooManyInterfaces { count: slots });
        }
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
        let copies = if options.channel == Channel::Ring {
            set(&mut settings, SETTING_CHANNEL, CHANNEL_RING)?;
            Some(take_map::<RingBuf<MapData>>(&mut ebpf, "COPIES")?)
        } else {
            None
        };
        let counters: PerCpuArray<_, QueueCounters> = take_map(&mut ebpf, "COUNTERS")?;

        // Tap first: it needs no capture veth. Its frames count in the slot after the
        // selected interfaces.
        let tap_sockets = match &options.tap {
            Some(tap) => Some(Self::start_tap(
                &mut ebpf,
                &mut settings,
                tap,
                slots as u32,
                options.frames_per_queue,
            )?),
            None => None,
        };
        let (veth, sockets, selected, host_pods) = if slots == 0 {
            (None, None, None, None)
        } else {
            let (veth, sockets, selected) = Self::start_clone_path(&mut ebpf, &mut settings, options)?;
            let host_pods = take_map(&mut ebpf, "HOST_PODS")?;
            if !options.host_interfaces.is_empty() {
                set_socket_cgroup_offsets(&mut settings)?;
            }
            (Some(veth), Some(sockets), Some(selected), Some(host_pods))
        };
        let mut capture = Self {
            ebpf,
            sockets,
            tap_sockets,
            _veth: veth,
            slots: slots + usize::from(options.tap.is_some()),
            counters,
            settings,
            clock_offset_ns: 0,
            clock_refreshed: Instant::now(),
            selected,
            host_pods,
            host_pod_count: 0,
            host_pod_levels: [0; MAX_POD_CGROUP_LEVEL as usize + 1],
            attached: std::collections::HashMap::new(),
            commands: None,
            filter_generation: options.filter.generation(),
            filter: options.filter.get(),
            filter_slot: Arc::clone(&options.filter),
            copies,
        };
        capture.refresh_clock();
        Ok(capture)
    }

    /// Capture veth, XDP on its peer, one socket per (slot, direction) queue, tc programs.
    fn start_clone_path(
        ebpf: &mut Ebpf,
        settings: &mut Array<MapData, u32>,
        options: &CaptureOptions,
    ) -> Result<ClonePath, CaptureError> {
        let queues = (options.interfaces.len() as u32 + options.pool) * 2;
        let veth = veth::CaptureVeth::create(queues)?;
        set(settings, SETTING_CAPTURE_IFINDEX, veth.ifindex)?;
        let mut selected: HashMap<_, u32, Selection> = take_map(ebpf, "SELECTED")?;
        for (slot, iface) in options.interfaces.iter().enumerate() {
            selected
                .insert(
                    iface.ifindex,
                    Selection {
                        slot: slot as u32,
                        flags: 0,
                    },
                    0,
                )
                .map_err(|source| CaptureError::Map {
                    name: "SELECTED",
                    action: format!("insert {}", iface.name),
                    source: Box::new(source),
                })?;
        }
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
        let sockets = XskSet::bind(veth::CAPTURE_PEER, &queue_ids, options.frames_per_queue)?;
        register_sockets(ebpf, "SOCKETS", &sockets)?;
        for (name, attach_type) in [
            ("podcap_ingress", TcAttachType::Ingress),
            ("podcap_egress", TcAttachType::Egress),
        ] {
            let tc: &mut SchedClassifier = program(ebpf, name)?;
            tc.load().map_err(|source| program_error(name, "load", source))?;
            for iface in options.interfaces.iter().chain(&options.host_interfaces) {
                tc.attach(&iface.name, attach_type)
                    .map_err(|source| program_error(name, &format!("attach to {}", iface.name), source))?;
            }
        }
        let mut host: HashMap<_, u32, u32> = take_map(ebpf, "HOST_INTERFACES")?;
        for iface in &options.host_interfaces {
            host.insert(iface.ifindex, 1, 0)
                .map_err(|source| CaptureError::Map {
                    name: "HOST_INTERFACES",
                    action: format!("insert {}", iface.name),
                    source: Box::new(source),
                })?;
        }
        Ok((veth, sockets, selected))
    }

    /// Takes scope changes from `commands` while running.
    pub fn set_commands(&mut self, commands: std::sync::mpsc::Receiver<CaptureCommand>) {
        self.commands = Some(commands);
    }

    /// Starts capturing `interface` in `slot` (one of the pool's): the tc programs on both
    /// directions, then the slot in the tc program's map. Undone whole on failure.
    pub fn attach(&mut self, slot: u32, interface: &Interface) -> Result<(), CaptureError> {
        self.detach(slot);
        let mut links = Vec::new();
        for (name, attach_type) in [
            ("podcap_ingress", TcAttachType::Ingress),
            ("podcap_egress", TcAttachType::Egress),
        ] {
            let tc: &mut SchedClassifier = program(&mut self.ebpf, name)?;
            match tc.attach(&interface.name, attach_type) {
                Ok(link) => links.push((name, link)),
                Err(source) => {
                    self.attached.insert(
                        slot,
                        AttachedInterface {
                            ifindex: interface.ifindex,
                            links,
                            cgroup_id: None,
                        },
                    );
                    self.detach(slot);
                    return Err(program_error(
                        name,
                        &format!("attach to {}", interface.name),
                        source,
                    ));
                }
            }
        }
        self.attached.insert(
            slot,
            AttachedInterface {
                ifindex: interface.ifindex,
                links,
                cgroup_id: None,
            },
        );
        let inserted = match &mut self.selected {
            Some(selected) => selected
                .insert(interface.ifindex, Selection { slot, flags: 0 }, 0)
                .map_err(|source| CaptureError::Map {
                    name: "SELECTED",
                    action: format!("insert {}", interface.name),
                    source: Box::new(source),
                }),
            None => Err(CaptureError::TooManyInterfaces { count: 0 }),
        };
        if let Err(e) = inserted {
            self.detach(slot);
            return Err(e);
        }
        Ok(())
    }

    /// Starts capturing the hostNetwork pod with `cgroup_id` on node interface `interface`
    /// (a host interface, whose tc programs are attached from the start) in `slot`.
    pub fn attach_cgroup(
        &mut self,
        slot: u32,
        cgroup_id: u64,
        level: u32,
        interface: &Interface,
    ) -> Result<(), CaptureError> {
        self.detach(slot);
        if !(1..=MAX_POD_CGROUP_LEVEL).contains(&level) {
            return Err(CaptureError::CgroupLevel { level });
        }
        let key = CgroupKey {
            cgroup_id,
            ifindex: interface.ifindex,
            reserved: 0,
        };
        let Some(host_pods) = &mut self.host_pods else {
            return Err(CaptureError::TooManyInterfaces { count: 0 });
        };
        host_pods
            .insert(key, Selection { slot, flags: 0 }, 0)
            .map_err(|source| CaptureError::Map {
                name: "HOST_PODS",
                action: format!("insert cgroup {cgroup_id} on {}", interface.name),
                source: Box::new(source),
            })?;
        self.attached.insert(
            slot,
            AttachedInterface {
                ifindex: interface.ifindex,
                links: Vec::new(),
                cgroup_id: Some((cgroup_id, level)),
            },
        );
        self.host_pod_count += 1;
        self.host_pod_levels[level as usize] += 1;
        // Levels first: the count turns the lookups on.
        let mask = self.level_mask();
        set(&mut self.settings, SETTING_HOST_POD_LEVELS, mask)?;
        set(&mut self.settings, SETTING_HOST_PODS, self.host_pod_count)
    }

    fn level_mask(&self) -> u32 {
        self.host_pod_levels
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .fold(0, |mask, (level, _)| mask | 1 << level)
    }

    /// Stops capturing the interface (or hostNetwork pod) in `slot`. An interface that is
    /// already gone took its tc links with it; what is left is removed, errors ignored.
    pub fn detach(&mut self, slot: u32) {
        let Some(attached) = self.attached.remove(&slot) else {
            return;
        };
        if let Some((cgroup_id, level)) = attached.cgroup_id {
            let key = CgroupKey {
                cgroup_id,
                ifindex: attached.ifindex,
                reserved: 0,
            };
            if let Some(host_pods) = &mut self.host_pods {
                if host_pods.remove(&key).is_ok() {
                    self.host_pod_count = self.host_pod_count.saturating_sub(1);
                    let count = &mut self.host_pod_levels[level as usize];
                    *count = count.saturating_sub(1);
                    let _ = set(&mut self.settings, SETTING_HOST_PODS, self.host_pod_count);
                    let mask = self.level_mask();
                    let _ = set(&mut self.settings, SETTING_HOST_POD_LEVELS, mask);
                }
            }
            return;
        }
        if let Some(selected) = &mut self.selected {
            let _ = selected.remove(&attached.ifindex);
        }
        for (name, link) in attached.links {
            if let Ok(tc) = program::<SchedClassifier>(&mut self.ebpf, name) {
                let _ = tc.detach(link);
            }
        }
    }

    fn take_commands(&mut self) {
        let Some(commands) = self.commands.take() else {
            return;
        };
        while let Ok(command) = commands.try_recv() {
            match command {
                CaptureCommand::Attach {
                    slot,
                    interface,
                    reply,
                } => {
                    let result = self.attach(slot, &interface).map_err(|e| {
                        let text = format!("{e}");
                        log::warn!("cannot capture {}: {text}", interface.name);
                        text
                    });
                    let _ = reply.send(result);
                }
                CaptureCommand::AttachCgroup {
                    slot,
                    cgroup_id,
                    level,
                    interface,
                    reply,
                } => {
                    let result = self
                        .attach_cgroup(slot, cgroup_id, level, &interface)
                        .map_err(|e| {
                            let text = format!("{e}");
                            log::warn!("cannot capture cgroup {cgroup_id} on {}: {text}", interface.name);
                            text
                        });
                    let _ = reply.send(result);
                }
                CaptureCommand::Detach { slot, done } => {
                    self.detach(slot);
                    let _ = done.send(());
                }
            }
        }
        self.commands = Some(commands);
    }

    /// XDP on the tap itself (native mode where the driver has it, else generic), one
    /// socket per rx queue.
    fn start_tap(
        ebpf: &mut Ebpf,
        settings: &mut Array<MapData, u32>,
        tap: &Interface,
        slot: u32,
        frames_per_queue: u32,
    ) -> Result<XskSet, CaptureError> {
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
        Ok(sockets)
    }

    fn refresh_clock(&mut self) {
        let mono = sys::monotonic_ns();
        let real = sys::realtime_ns();
        self.clock_offset_ns = i128::from(real) - i128::from(mono);
        self.clock_refreshed = Instant::now();
    }

    /// Whether every packet comes from the kernel's ring buffer (the ring channel without
    /// `--tap`), which can then hold packets while the segments take them on this thread.
    #[must_use]
    pub fn delivers_only_copies(&self) -> bool {
        self.copies.is_some() && self.tap_sockets.is_none()
    }

    fn socket_sets(&mut self) -> impl Iterator<Item = &mut XskSet> {
        self.sockets.iter_mut().chain(self.tap_sockets.iter_mut())
    }

    /// Moves packets from the channels into `sink` until `stop()` says so, then drains.
    pub fn run(
        &mut self,
        sink: &mut impl PacketSink,
        stats: &Stats,
        settings: &RuntimeSettings,
        mut stop: impl FnMut() -> bool,
    ) {
        let mut enabled = true;
        let mut fds: Vec<_> = self.socket_sets().flat_map(|set| set.fds()).collect();
        if let Some(copies) = &self.copies {
            fds.push(copies.as_fd().as_raw_fd());
        }
        let mut warnings = DropWarnings::new(Duration::from_secs(10));
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
        let ring_channel = self.copies.is_some();
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

    /// Stops new clones, lets frames in flight arrive, drains them and takes exact counts.
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
        for set in self.sockets.iter_mut().chain(self.tap_sockets.iter_mut()) {
            for index in 0..set.sockets.len() {
                total += set.receive(index, |queue, frame| {
                    push_frame(sink, stats, offset, filter, queue, frame);
                });
            }
        }
        if let Some(copies) = &mut self.copies {
            // Bounded, so commands and counters are still looked at under a flood.
            for _ in 0..RING_BATCH {
                let Some(item) = copies.next() else {
                    break;
                };
                push_copy(sink, stats, offset, filter, &item);
                total += 1;
            }
        }
        total
    }

    /// Sums the per-CPU queue counters and socket drop counters into `stats`. `quiescent`:
    /// no clone is in flight, so clones that never reached XDP were lost in the veth.
    fn refresh_kernel_counters(&self, stats: &Stats, quiescent: bool) {
        let read = |index: u32| {
            let mut c = QueueCounters::default();
            if let Ok(values) = self.counters.get(&index, 0) {
                for v in values.iter() {
                    c.cloned += v.cloned;
                    c.clone_failed += v.clone_failed;
                    c.xdp_seen += v.xdp_seen;
                    c.xdp_dropped += v.xdp_dropped;
                }
            }
            c
        };
        let mut per_slot = vec![(0u64, 0u64); self.slots];
        if let Some(set) = &self.sockets {
            for (index, socket) in set.sockets.iter().enumerate() {
                let (slot, _) = slot_of_queue(socket.tag);
                let Some(entry) = per_slot.get_mut(slot as usize) else {
                    continue;
                };
                let c = read(socket.tag);
                let socket_drops = set.drops(index).unwrap_or_default();
                if quiescent {
                    log::debug!("queue {}: {c:?}, {socket_drops:?}", socket.queue);
                }
                // GSO super-frames count once at tc and once per segment at XDP, so only
                // a shortfall is a loss; exact for traffic without GSO.
                let veth_lost = if quiescent {
                    c.cloned.saturating_sub(c.xdp_seen)
                } else {
                    0
                };
                entry.0 += c.cloned + c.clone_failed;
                entry.1 += c.clone_failed + c.xdp_dropped + socket_drops.lost() + veth_lost;
            }
        }
        if let (Some(set), Some(tap_slot)) = (&self.tap_sockets, self.slots.checked_sub(1)) {
            let c = read(queue_for(tap_slot as u32, DIRECTION_INBOUND));
            let socket_drops: u64 = (0..set.sockets.len())
                .map(|i| set.drops(i).unwrap_or_default().lost())
                .sum();
            if let Some(entry) = per_slot.get_mut(tap_slot) {
                *entry = (c.xdp_seen, c.xdp_dropped + socket_drops);
            }
        }
        for (slot, (seen, drops)) in per_slot.into_iter().enumerate() {
            if let Some(s) = stats.slots.get(slot) {
                s.seen.store(seen, Relaxed);
                // fetch_max: malformed frames counted by `push_frame` are part of it too.
                s.kernel_drops.fetch_max(drops, Relaxed);
            }
        }
    }
}

/// Where the capture loop delivers packets.
pub trait PacketSink {
    /// Takes one packet; `false` if there was no room (counted as a ring-stage drop).
    fn accept(&mut self, header: &RecordHeader, data: &[u8]) -> bool;

    /// Called after every pass of the capture loop (at least every 100 ms).
    fn after_pass(&mut self) {}
}

impl PacketSink for RecordProducer {
    fn accept(&mut self, header: &RecordHeader, data: &[u8]) -> bool {
        self.push(header, data)
    }
}

/// Empty 1 ms passes of the capture loop before it waits in `poll` instead.
const TIMER_PASSES: u32 = 50;

/// Ring-buffer records taken per pass of the capture loop.
const RING_BATCH: usize = 8192;

/// A packet on its way from a channel to the ring.
struct Arrival<'a> {
    queue: u32,
    /// `CLOCK_MONOTONIC`.
    timestamp_ns: u64,
    original_len: u32,
    data: &'a [u8],
}

/// Hands one AF_XDP frame with its metadata to the sink, counting it (or its loss) for
/// its slot.
fn push_frame(
    sink: &mut impl PacketSink,
    stats: &Stats,
    clock_offset_ns: i128,
    filter: Option<&Filter>,
    queue: u32,
    frame: &[u8],
) {
    let Some((meta, data)) = split_meta(frame) else {
        let (slot, _) = slot_of_queue(queue);
        if let Some(slot_stats) = stats.slots.get(slot as usize) {
            slot_stats.kernel_drops.fetch_add(1, Relaxed);
        }
        return;
    };
    let copy = Arrival {
        queue,
        timestamp_ns: meta.timestamp_ns,
        original_len: meta.original_len,
        data,
    };
    push(sink, stats, clock_offset_ns, filter, &copy);
}

/// Hands one ring-channel record to the sink (a record that is not ours is a kernel
/// drop of no slot: it cannot happen short of a bug, and is not trusted).
fn push_copy(
    sink: &mut impl PacketSink,
    stats: &Stats,
    clock_offset_ns: i128,
    filter: Option<&Filter>,
    record: &[u8],
) {
    let Some((header, data)) = split_copy(record) else {
        log::debug!("a ring record of {} bytes without a podcap header", record.len());
        return;
    };
    let copy = Arrival {
        queue: header.queue,
        timestamp_ns: header.timestamp_ns,
        original_len: header.original_len,
        data,
    };
    push(sink, stats, clock_offset_ns, filter, &copy);
}

fn split_copy(record: &[u8]) -> Option<(CopyHeader, &[u8])> {
    let (head, rest) = record.split_at_checked(std::mem::size_of::<CopyHeader>())?;
    let u32_at = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&head[0..8]);
    let header = CopyHeader {
        timestamp_ns: u64::from_ne_bytes(ts),
        original_len: u32_at(8),
        captured_len: u32_at(12),
        queue: u32_at(16),
        magic: u32_at(20),
    };
    if header.magic != COPY_MAGIC {
        return None;
    }
    Some((header, rest.get(..header.captured_len as usize)?))
}

/// Counts a packet for its slot, applies the filter and hands it to the sink.
fn push(
    sink: &mut impl PacketSink,
    stats: &Stats,
    clock_offset_ns: i128,
    filter: Option<&Filter>,
    copy: &Arrival<'_>,
) {
    let (slot, _) = slot_of_queue(copy.queue);
    let Some(slot_stats) = stats.slots.get(slot as usize) else {
        return;
    };
    slot_stats.received.fetch_add(1, Relaxed);
    slot_stats
        .received_bytes
        .fetch_add(u64::from(copy.original_len), Relaxed);
    if filter.is_some_and(|f| !f.matches(copy.data, copy.original_len)) {
        slot_stats.filtered.fetch_add(1, Relaxed);
        return;
    }
    let header = RecordHeader {
        timestamp_ns: u64::try_from(i128::from(copy.timestamp_ns) + clock_offset_ns).unwrap_or(0),
        original_len: copy.original_len,
        captured_len: copy.data.len() as u32,
        queue: copy.queue,
    };
    if !sink.accept(&header, copy.data) {
        slot_stats.ring_drops.fetch_add(1, Relaxed);
    }
}

fn split_meta(frame: &[u8]) -> Option<(FrameMeta, &[u8])> {
    let (meta, data) = frame.split_at_checked(META_LEN)?;
    let u32_at = |i: usize| u32::from_ne_bytes([meta[i], meta[i + 1], meta[i + 2], meta[i + 3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&meta[0..8]);
    let meta = FrameMeta {
        timestamp_ns: u64::from_ne_bytes(ts),
        original_len: u32_at(8),
        magic: u32_at(12),
    };
    (meta.magic == FRAME_META_MAGIC).then_some((meta, data))
}

/// Tells the tc programs where a socket's cgroup id lies (for ingress packets of hostNetwork
/// pods); without the kernel's BTF they go unattributed, which is logged.
fn set_socket_cgroup_offsets(settings: &mut Array<MapData, u32>) -> Result<(), CaptureError> {
    match btf::Btf::kernel().and_then(|b| btf::SocketCgroupOffsets::find(&b)) {
        Ok(offsets) if offsets.sock_cgroup < SOCK_READ_LEN - 8 => {
            set(settings, SETTING_CGROUP_KN_OFFSET, offsets.cgroup_kn)?;
            set(settings, SETTING_KN_ID_OFFSET, offsets.kn_id)?;
            set(settings, SETTING_CGROUP_LEVEL_OFFSET, offsets.cgroup_level)?;
            set(
                settings,
                SETTING_CGROUP_ANCESTORS_OFFSET,
                offsets.cgroup_ancestors,
            )?;
            set(settings, SETTING_ANCESTOR_IDS, u32::from(offsets.ancestor_ids))?;
            // Last: a non-zero socket offset turns the ingress lookups on.
            set(settings, SETTING_SOCK_CGROUP_OFFSET, offsets.sock_cgroup)
        }
        Ok(offsets) => {
            log::warn!(
                "sock.sk_cgrp_data lies at {} bytes, beyond what the capture reads; packets \
                 received by hostNetwork pods are not recorded",
                offsets.sock_cgroup
            );
            Ok(())
        }
        Err(e) => {
            log::warn!("{e}: packets received by hostNetwork pods are not recorded");
            Ok(())
        }
    }
}

fn set(settings: &mut Array<MapData, u32>, index: u32, value: u32) -> Result<(), CaptureError> {
    settings.set(index, value, 0).map_err(|source| CaptureError::Map {
        name: "SETTINGS",
        action: format!("set {index}"),
        source: Box::new(source),
    })
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

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(CaptureError::Missing { what: "map", name })?;
    T::try_from(map).map_err(|source| CaptureError::Map {
        name,
        action: "open".into(),
        source: Box::new(source),
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(CaptureError::Missing {
        what: "program",
        name,
    })?;
    program
        .try_into()
        .map_err(|source| program_error(name, "open", source))
}

fn program_error(name: &'static str, action: &str, source: aya::programs::ProgramError) -> CaptureError {
    let hint = permission_hint(&format!("{source:?}"));
    CaptureError::Program {
        name,
        action: action.to_owned(),
        hint,
        source: Box::new(source),
    }
}
