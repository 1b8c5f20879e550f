//! Types shared by the podcap eBPF programs (`podcap-ebpf`) and the sensor.
//!
//! Rules:
//! - Every type here crosses the kernel/user boundary through a BPF map or the AF_XDP
//!   metadata area, so each is `#[repr(C)]`, has no implicit padding and uses `u32`/`u64`
//!   rather than `bool`.
//! - The crate is `#![no_std]`; the `user` feature adds the `aya::Pod` impls the sensor needs.
//!
//! Layout of the capture path (see `docs/design/capture-path.md`): every selected interface
//! owns a *slot*; the tc program clones each packet into the capture veth on queue
//! `queue_for(slot, direction)`, the XDP program on the peer reads that queue back from
//! `rx_queue_index`, writes a [`FrameMeta`] in front of the frame and redirects it to the
//! AF_XDP socket bound to the same queue.
#![no_std]

/// Most interfaces one sensor can select at once (each takes two capture-veth queues).
pub const MAX_SLOTS: u32 = 512;
/// Queues on the capture veth: one per (slot, direction).
pub const MAX_QUEUES: u32 = MAX_SLOTS * 2;

/// Most rx queues of a `--tap` interface.
pub const MAX_TAP_QUEUES: u32 = 256;

/// The packet was received by the selected interface (tc ingress).
pub const DIRECTION_INBOUND: u32 = 0;
/// The packet was sent by the selected interface (tc egress).
pub const DIRECTION_OUTBOUND: u32 = 1;

/// The capture-veth queue that carries packets of `slot` in `direction`.
#[must_use]
pub const fn queue_for(slot: u32, direction: u32) -> u32 {
    slot * 2 + direction
}

/// Inverse of [`queue_for`]: `(slot, direction)`.
#[must_use]
pub const fn slot_of_queue(queue: u32) -> (u32, u32) {
    (queue / 2, queue % 2)
}

/// Value of the `SELECTED` map (key: ifindex of a selected interface).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The slot this interface owns.
    pub slot: u32,
    /// Reserved, zero.
    pub flags: u32,
}

/// Index of the capture veth's ifindex in the `SETTINGS` array (AF_XDP channel only).
pub const SETTING_CAPTURE_IFINDEX: u32 = 0;
/// Index of the snap length in the `SETTINGS` array.
pub const SETTING_SNAPLEN: u32 = 1;
/// Index of the enabled switch (1 = recording) in the `SETTINGS` array.
pub const SETTING_ENABLED: u32 = 2;
/// Index of the `COUNTERS` entry the tap program counts in, in the `SETTINGS` array.
pub const SETTING_TAP_COUNTERS: u32 = 3;
/// Index of the number of `HOST_PODS` entries in the `SETTINGS` array (0: the tc programs
/// on node interfaces look no cgroup up).
pub const SETTING_HOST_PODS: u32 = 4;
/// Where the cgroup id of a socket lies, found by user space in the kernel's BTF (there is
/// no helper for a socket's cgroup in tc programs): the offset of
/// `sock.sk_cgrp_data.cgroup` in `SETTINGS`...
pub const SETTING_SOCK_CGROUP_OFFSET: u32 = 5;
/// ... of `cgroup.kn` ...
pub const SETTING_CGROUP_KN_OFFSET: u32 = 6;
/// ... and of `kernfs_node.id` (the cgroup v2 id). All three 0: unknown, and ingress
/// packets of hostNetwork pods are not attributed.
pub const SETTING_KN_ID_OFFSET: u32 = 7;
/// Offset of `cgroup.level` (an `int`).
pub const SETTING_CGROUP_LEVEL_OFFSET: u32 = 8;
/// Offset of `cgroup.ancestors` (pointers, kernels from 6.1) or `cgroup.ancestor_ids`
/// (ids, older kernels; then `SETTING_ANCESTOR_IDS` is 1), indexed by level.
pub const SETTING_CGROUP_ANCESTORS_OFFSET: u32 = 9;
pub const SETTING_ANCESTOR_IDS: u32 = 10;
/// Bit `l` set: some selected hostNetwork pod's cgroup is at level `l` of the cgroup v2
/// tree. A socket belongs to a pod when its cgroup's ancestor at that level is the pod's
/// (containers are cgroups below the pod's).
pub const SETTING_HOST_POD_LEVELS: u32 = 11;
/// Index of the copy channel in `SETTINGS`: [`CHANNEL_AF_XDP`] or [`CHANNEL_RING`].
pub const SETTING_CHANNEL: u32 = 12;
/// Index of the ring channel's wakeup switch in `SETTINGS`: 1 while user space waits in
/// `poll` (a copy wakes it), 0 while it drains on a timer (copies wake nobody: a wakeup per
/// packet would cost the sender an interrupt each).
pub const SETTING_RING_WAKEUP: u32 = 13;
/// 1 while the capture filter runs in the kernel (`FILTER_CHAIN` slot 0 holds it): the tc
/// programs tail-call into it before they take a packet.
pub const SETTING_FILTER: u32 = 14;
/// Entries of the `SETTINGS` array.
pub const SETTINGS_LEN: u32 = 15;

/// `FILTER_CHAIN` slot of the capture filter (a program user space makes at run time).
pub const CHAIN_FILTER: u32 = 0;
/// `FILTER_CHAIN` slot of `podcap_take`, where the filter goes on with what it accepts.
pub const CHAIN_TAKE: u32 = 1;

/// Copies travel as clones through the capture veth, XDP and AF_XDP.
pub const CHANNEL_AF_XDP: u32 = 0;
/// The tc program copies each packet (GSO super-frames whole) into the BPF ring buffer
/// `COPIES`: no clone, no veth, no segmentation in the sender's context.
pub const CHANNEL_RING: u32 = 1;
/// The largest packet prefix the ring channel carries.
pub const RING_MAX_CAPTURE: u32 = 65_536;

/// Written by the tc program in front of each copy in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyHeader {
    /// `bpf_ktime_get_ns()` when the tc program saw the packet (CLOCK_MONOTONIC).
    pub timestamp_ns: u64,
    /// The packet's length (a GSO super-frame's whole length).
    pub original_len: u32,
    /// Bytes of the packet that follow (the record may be longer: sizes come in classes).
    pub captured_len: u32,
    /// The capture queue, as on the AF_XDP route: `queue_for(slot, direction)`.
    pub queue: u32,
    /// [`COPY_MAGIC`].
    pub magic: u32,
}

/// Marks a [`CopyHeader`] written by the podcap tc program.
pub const COPY_MAGIC: u32 = 0x7063_7269; // "pcri"
/// Deepest cgroup level a hostNetwork pod's cgroup may sit at.
pub const MAX_POD_CGROUP_LEVEL: u32 = 15;

/// Bytes of a socket read to reach its cgroup pointer: `SETTING_SOCK_CGROUP_OFFSET` must be
/// below this minus 8.
pub const SOCK_READ_LEN: u32 = 2048;

/// Most node interfaces watched for hostNetwork pods.
pub const MAX_HOST_INTERFACES: u32 = 64;

/// Key of the `HOST_PODS` map: a hostNetwork pod's cgroup (v2 id) on one node interface.
/// Its value is the [`Selection`] (slot) its packets on that interface are recorded in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupKey {
    pub cgroup_id: u64,
    pub ifindex: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Written by the XDP program just before each frame's data (AF_XDP copy mode keeps the
/// metadata area in the UMEM chunk, ending where the frame starts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// `bpf_ktime_get_ns()` when the XDP program saw the frame (CLOCK_MONOTONIC).
    pub timestamp_ns: u64,
    /// Length of the frame before the snap length cut.
    pub original_len: u32,
    /// [`FRAME_META_MAGIC`]: lets user space tell a frame written by our program.
    pub magic: u32,
}

/// Marks a [`FrameMeta`] written by the podcap XDP program.
pub const FRAME_META_MAGIC: u32 = 0x7063_6170; // "pcap"

/// Per-queue counters, one `PerCpuArray` entry per queue (slot and direction; the tap's
/// queue for `--tap`); user space sums CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Packets the tc program handed on: copied into the ring buffer (ring channel) or
    /// cloned to the capture veth (AF_XDP channel).
    pub taken: u64,
    /// Bytes of those packets (skb length, GSO super-frames whole).
    pub taken_bytes: u64,
    /// Packets the tc program could not hand on: the ring buffer was full, or
    /// `bpf_clone_redirect` failed (kernel drops; on the AF_XDP channel counted in wire
    /// frames, as [`QueueCounters::taken_wire_frames`]).
    pub take_failed: u64,
    /// Frames an XDP program saw on this queue (AF_XDP channel and tap only: `taken -
    /// xdp_seen` is then what the capture veth lost on the way).
    pub xdp_seen: u64,
    /// Frames an XDP program dropped: no socket on the queue, or no headroom for the
    /// metadata (kernel drops).
    pub xdp_dropped: u64,
    /// Packets the in-kernel capture filter rejected: not taken, and not a drop.
    pub filtered: u64,
    /// The wire-sized frames in the packets taken: a GSO super-frame counts as the
    /// segments it is cut into on its way to the capture veth (`gso_segs`), any other
    /// packet as one. On the AF_XDP channel `taken_wire_frames - xdp_seen` is exactly what
    /// the capture veth lost, GSO traffic included.
    pub taken_wire_frames: u64,
}

/// Longest label, client random and secret a TLS secret event carries (Go's labels are
/// at most 31 bytes, a client random 32, a secret at most 48: SHA-384; OpenSSL's TLS 1.3
/// handshake event carries a secret and a transcript hash, 48 bytes of room each).
pub const TLS_LABEL_MAX: usize = 32;
pub const TLS_RANDOM_LEN: usize = 32;
pub const TLS_SECRET_MAX: usize = 96;
/// The label of the OpenSSL probe's TLS 1.3 handshake event: no key log line itself, but
/// what the two handshake traffic secrets are derived from. Its `secret` holds the
/// handshake secret at 0 and the transcript hash up to the ServerHello at
/// [`TLS_HANDSHAKE_HASH_AT`], each as long as the hash: `secret_len` is
/// `TLS_HANDSHAKE_HASH_AT` plus that length.
pub const TLS_HANDSHAKE_LABEL: &[u8] = b"PODCAP_TLS13_HANDSHAKE";
pub const TLS_HANDSHAKE_HASH_AT: usize = 48;

/// Where OpenSSL keeps a session's secrets: byte offsets into `SSL` (`ssl_st`),
/// `SSL_SESSION` (`ssl_session_st`) and `SSL_CIPHER` (`ssl_cipher_st`) of one release's
/// layout. User space fills `OPENSSL_LAYOUTS` from its table of known releases; a
/// probe's attach cookie is its library's index there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenSslLayout {
    /// `ssl_st.version` (int): `0x0304` once TLS 1.3 is negotiated.
    pub version: u32,
    /// `ssl_st.session` (pointer).
    pub session: u32,
    /// `ssl_st.s3.client_random` (32 bytes).
    pub client_random: u32,
    /// `ssl_st.handshake_secret`, `.handshake_traffic_hash`, `.client_app_traffic_secret`,
    /// `.server_app_traffic_secret`, `.exporter_master_secret` (`EVP_MAX_MD_SIZE` each).
    pub handshake_secret: u32,
    pub handshake_traffic_hash: u32,
    pub client_app_traffic_secret: u32,
    pub server_app_traffic_secret: u32,
    pub exporter_master_secret: u32,
    /// `ssl_session_st.master_key_length` (size_t) and `.master_key` (TLS 1.2).
    pub master_key_length: u32,
    pub master_key: u32,
    /// `ssl_session_st.cipher` (pointer) and `.cipher_id` (unsigned long, used when the
    /// pointer is not set yet).
    pub session_cipher: u32,
    pub session_cipher_id: u32,
    /// `ssl_cipher_st.id` (`0x0300_1302`: TLS_AES_256_GCM_SHA384).
    pub cipher_id: u32,
}

/// `TLS_FENCE` entries: whether the fence is up (1: Kubernetes mode; only processes in
/// a targeted pod's cgroup give secrets), and the cgroup levels (bit `1 << level`) at
/// which the targeted pods' cgroups in `TLS_POD_CGROUPS` sit.
pub const TLS_FENCE_UP: u32 = 0;
pub const TLS_FENCE_LEVELS: u32 = 1;
/// Room in `TLS_POD_CGROUPS`: targeted pods at once.
pub const TLS_POD_CGROUPS_MAX: u32 = 4096;

/// Room in `OPENSSL_LAYOUTS`: distinct layouts probed at once.
pub const OPENSSL_LAYOUTS_MAX: u32 = 16;
/// `secret_len` of an event whose fields could not be read from the process.
pub const TLS_SECRET_UNREADABLE: u32 = u32::MAX;

/// One TLS secret as a uprobe read it from a process (`TLS_SECRETS` ring buffer): a key
/// log line's three fields, each with its length as the process gave it (a length above
/// the field's room means the value was cut and is not to be used).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsSecretEvent {
    /// The process (thread group) the secret came from.
    pub pid: u32,
    pub label_len: u32,
    pub random_len: u32,
    pub secret_len: u32,
    pub label: [u8; TLS_LABEL_MAX],
    pub random: [u8; TLS_RANDOM_LEN],
    pub secret: [u8; TLS_SECRET_MAX],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `repr(C)` data with no padding and no pointers; every bit pattern is valid.
    unsafe impl aya::Pod for super::Selection {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::QueueCounters {}
    // SAFETY: as above (u64, u32, u32: no padding).
    unsafe impl aya::Pod for super::CgroupKey {}
    // SAFETY: as above (u32 fields then byte arrays, 176 bytes: no padding).
    unsafe impl aya::Pod for super::TlsSecretEvent {}
    // SAFETY: as above (u32 fields only).
    unsafe impl aya::Pod for super::OpenSslLayout {}
}
