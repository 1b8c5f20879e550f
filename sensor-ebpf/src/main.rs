//! podcap's kernel programs.
//!
//! Rules:
//! - The pod must not notice: the tc programs never drop, redirect or alter the packet they
//!   run on. Every field they touch (`queue_mapping`) is restored before they return, on
//!   every path, and they return `TC_ACT_UNSPEC` (TCX "next") so other programs still decide.
//! - A copy travels by `bpf_clone_redirect` into the capture veth that the sensor owns, on
//!   the queue that names its interface slot and direction (`podcap_common::queue_for`).
//! - hostNetwork pods share the node's interfaces: on the node interfaces in
//!   `HOST_INTERFACES` a packet belongs to a pod by cgroup (`HOST_PODS`): on egress the
//!   cgroup of the socket that sent it (`bpf_skb_ancestor_cgroup_id` at the levels where
//!   selected pods' cgroups sit: containers are cgroups below their pod's), on ingress the
//!   same ancestors of the cgroup of the socket that will receive it (a TCP or UDP socket lookup on the packet's addresses and
//!   ports; other protocols, IPv6 extension headers and non-first fragments are not
//!   attributed). tc programs have no helper for a socket's cgroup, so it is read from
//!   kernel memory (`sock.sk_cgrp_data.cgroup->ancestors[level]->kn->id`) at offsets user
//!   space finds in the kernel's BTF; without them ingress is not attributed. Lookup references are always
//!   released.
//! - With a capture filter (`SETTING_FILTER`), a selected packet goes through it before it
//!   is taken: a tail call into `FILTER_CHAIN` slot 0 (a program user space translated from
//!   the filter's classic BPF, `sensor/src/filter/ebpf.rs`), which returns at once for a
//!   packet it rejects and tail-calls `podcap_take` (slot 1) for one it accepts. The queue
//!   travels in `FILTER_QUEUE` (per CPU: the tail call runs on the same CPU, in the same
//!   softirq or bh-disabled section, before anything else can), not in the skb's `cb`,
//!   which belongs to the qdisc layer. A rejected packet is counted in `filtered` (counted
//!   first, taken back by `podcap_take`).
//! - The TLS secrets uprobes are in `tls.rs`, with their own rules.
//! - The XDP program runs in native mode on the capture veth's peer. It only ever sees our
//!   clones, so dropping there costs the pods nothing; it counts every frame it cannot hand to
//!   AF_XDP.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{bpf_sock_tuple, xdp_action, BPF_RB_NO_WAKEUP, TC_ACT_UNSPEC},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release,
        bpf_skb_ancestor_cgroup_id, bpf_skb_load_bytes, bpf_skb_vlan_pop, bpf_skb_vlan_push,
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
        generated::bpf_probe_read_kernel as probe_read_kernel_into,
    },
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, PerCpuArray, ProgramArray, RingBuf, XskMap},
    programs::{TcContext, XdpContext},
};
use podcap_common::{
    queue_for, CgroupKey, CopyHeader, FrameMeta, QueueCounters, Selection, CHAIN_FILTER, CHANNEL_RING,
    COPY_MAGIC, DIRECTION_INBOUND, DIRECTION_OUTBOUND, FRAME_META_MAGIC, MAX_HOST_INTERFACES,
    MAX_POD_CGROUP_LEVEL, MAX_QUEUES, MAX_SLOTS, MAX_TAP_QUEUES, RING_MAX_CAPTURE, SETTINGS_LEN,
    SETTING_ANCESTOR_IDS, SETTING_CAPTURE_IFINDEX, SETTING_CGROUP_ANCESTORS_OFFSET, SETTING_CGROUP_KN_OFFSET,
    SETTING_CGROUP_LEVEL_OFFSET, SETTING_CHANNEL, SETTING_ENABLED, SETTING_FILTER, SETTING_HOST_PODS,
    SETTING_HOST_POD_LEVELS, SETTING_KN_ID_OFFSET, SETTING_RING_WAKEUP, SETTING_SNAPLEN,
    SETTING_SOCK_CGROUP_OFFSET, SETTING_TAP_COUNTERS, SOCK_READ_LEN,
};

mod tls;

/// ifindex of a selected interface → its slot. Filled by user space.
#[map]
static SELECTED: HashMap<u32, Selection> = HashMap::with_max_entries(MAX_SLOTS, 0);

/// Node interfaces on which hostNetwork pods are selected by cgroup (value unused).
#[map]
static HOST_INTERFACES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_HOST_INTERFACES, 0);

/// (cgroup id, node interface) of a selected hostNetwork pod → its slot. Filled by user space.
#[map]
static HOST_PODS: HashMap<CgroupKey, Selection> = HashMap::with_max_entries(MAX_SLOTS, 0);

/// Scratch space for the first bytes of a looked-up socket (too large for the stack).
#[map]
static SOCK_READ: PerCpuArray<[u8; SOCK_READ_LEN as usize]> = PerCpuArray::with_max_entries(1, 0);

/// The ring channel's copies (its size is set by user space at load).
#[map]
static COPIES: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Capture settings, indexed by `SETTING_*`.
#[map]
static SETTINGS: Array<u32> = Array::with_max_entries(SETTINGS_LEN, 0);

/// Per-queue counters.
#[map]
static COUNTERS: PerCpuArray<QueueCounters> = PerCpuArray::with_max_entries(MAX_QUEUES, 0);

/// AF_XDP socket per capture-veth queue.
#[map]
static SOCKETS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[inline(always)]
fn setting(index: u32) -> u32 {
    SETTINGS.get(index).copied().unwrap_or(0)
}

#[inline(always)]
fn counters(queue: u32) -> Option<&'static mut QueueCounters> {
    // SAFETY: per-CPU entry, only this CPU's program instance writes it while it runs.
    COUNTERS.get_ptr_mut(queue).map(|p| unsafe { &mut *p })
}

/// The capture filter (slot `CHAIN_FILTER`) and `podcap_take` (slot `CHAIN_TAKE`).
#[map]
static FILTER_CHAIN: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// The queue of the packet the filter is looking at, for `podcap_take`.
#[map]
static FILTER_QUEUE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[classifier]
pub fn podcap_ingress(ctx: TcContext) -> i32 {
    take_selected(&ctx, DIRECTION_INBOUND);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn podcap_egress(ctx: TcContext) -> i32 {
    take_selected(&ctx, DIRECTION_OUTBOUND);
    TC_ACT_UNSPEC
}

/// Hands a packet of a selected interface (or hostNetwork pod) on to user space through
/// the channel in use, counting it in its queue; the packet itself goes on unchanged.
#[inline(always)]
fn take_selected(ctx: &TcContext, direction: u32) {
    if setting(SETTING_ENABLED) == 0 {
        return;
    }
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the context pointer the kernel handed this program.
    let ifindex = unsafe { (*skb).ifindex };
    let Some(slot) = slot_of(ctx, ifindex, direction) else {
        return;
    };
    let queue = queue_for(slot, direction);
    if queue >= MAX_QUEUES {
        return;
    }
    let Some(counters) = counters(queue) else {
        return;
    };
    if setting(SETTING_FILTER) != 0 {
        if let Some(handed) = FILTER_QUEUE.get_ptr_mut(0) {
            // SAFETY: this CPU's element of our own map; read back by `podcap_take` in this
            // same run of the program (see the rules).
            unsafe { *handed = queue };
            counters.filtered += 1;
            // SAFETY: a tail call hands the same context on; it returns only when it failed.
            unsafe { FILTER_CHAIN.tail_call(ctx, CHAIN_FILTER) };
            // No filter in the slot (being replaced): the packet is taken unfiltered.
            counters.filtered -= 1;
        }
    }
    take(ctx, queue, counters);
}

/// Where the capture filter goes on with a packet it accepts.
#[classifier]
pub fn podcap_take(ctx: TcContext) -> i32 {
    // This CPU's element, written just before the tail call here.
    let queue = FILTER_QUEUE.get(0).copied().unwrap_or(MAX_QUEUES);
    if queue < MAX_QUEUES {
        if let Some(counters) = counters(queue) {
            counters.filtered = counters.filtered.wrapping_sub(1);
            take(&ctx, queue, counters);
        }
    }
    TC_ACT_UNSPEC
}

/// Hands the packet on through the channel in use, counting it.
#[inline(always)]
fn take(ctx: &TcContext, queue: u32, counters: &mut QueueCounters) {
    let (taken, wire_frames) = if setting(SETTING_CHANNEL) == CHANNEL_RING {
        // Recorded whole: one frame, whatever its size.
        (copy_to_ring(ctx, queue), 1)
    } else {
        (clone_to_capture_veth(ctx, queue), wire_frames(ctx))
    };
    if taken {
        counters.taken += 1;
        counters.taken_bytes += u64::from(ctx.len());
        counters.taken_wire_frames += wire_frames;
    } else {
        counters.take_failed += wire_frames;
    }
}

/// The frames a packet becomes on the wire: a GSO super-frame its segments, others one.
/// Where the kernel left `gso_segs` unset (a GSO packet from an untrusted source), the
/// count is rounded up from `gso_size`, so a loss is never under-counted.
#[inline(always)]
fn wire_frames(ctx: &TcContext) -> u64 {
    let skb = ctx.skb.skb;
    // SAFETY: read-only context fields of the skb the kernel handed this program.
    let (segments, segment_size) = unsafe { ((*skb).gso_segs, (*skb).gso_size) };
    if segments > 1 {
        u64::from(segments)
    } else if segment_size > 0 {
        u64::from(ctx.len().div_ceil(segment_size)).max(1)
    } else {
        1
    }
}

/// Clones the packet to the capture veth on the tx queue that becomes rx queue `queue` of
/// its peer (the AF_XDP channel).
#[inline(always)]
fn clone_to_capture_veth(ctx: &TcContext, queue: u32) -> bool {
    let capture_ifindex = setting(SETTING_CAPTURE_IFINDEX);
    if capture_ifindex == 0 {
        return false;
    }
    let skb = ctx.skb.skb;
    // The clone inherits queue_mapping; the capture veth's transmit path picks tx queue
    // `queue_mapping - 1` (a recorded rx queue), which becomes the peer's rx queue.
    // SAFETY: tc programs may read and write `__sk_buff.queue_mapping`.
    let saved_queue_mapping = unsafe { (*skb).queue_mapping };
    unsafe { (*skb).queue_mapping = queue + 1 };
    // A VLAN tag held in the skb (offloaded) is invisible to XDP: push a copy of it so the
    // tag lands in the bytes the clone carries, and pop it right after, which moves the tag
    // back from the bytes into the skb: the original leaves exactly as it came.
    // SAFETY: reading context fields of our own skb.
    let (vlan_present, vlan_proto, vlan_tci) =
        unsafe { ((*skb).vlan_present, (*skb).vlan_proto, (*skb).vlan_tci) };
    // SAFETY: helper on our own skb; on failure nothing was pushed and nothing is popped.
    let pushed =
        vlan_present != 0 && unsafe { bpf_skb_vlan_push(skb, vlan_proto as u16, vlan_tci as u16) } == 0;
    let result = ctx.clone_redirect(capture_ifindex, 0);
    if pushed {
        // SAFETY: undoes the push above.
        unsafe { bpf_skb_vlan_pop(skb) };
    }
    // SAFETY: as above; restores the original's value on every path.
    unsafe { (*skb).queue_mapping = saved_queue_mapping };
    result.is_ok()
}

/// The slot a packet is recorded in: its interface's, or on a node interface its
/// hostNetwork pod's.
#[inline(always)]
fn slot_of(ctx: &TcContext, ifindex: u32, direction: u32) -> Option<u32> {
    // SAFETY: lookups in our own maps; the values are plain data.
    if let Some(selection) = unsafe { SELECTED.get(&ifindex) } {
        return Some(selection.slot);
    }
    let levels = setting(SETTING_HOST_POD_LEVELS);
    // SAFETY: as above.
    if setting(SETTING_HOST_PODS) == 0 || levels == 0 || unsafe { HOST_INTERFACES.get(&ifindex) }.is_none() {
        return None;
    }
    if direction == DIRECTION_OUTBOUND {
        // The sending socket's cgroup, at each level where a selected pod's cgroup sits.
        for level in 1..=MAX_POD_CGROUP_LEVEL {
            if levels & (1 << level) == 0 {
                continue;
            }
            // SAFETY: helper on the program's own skb; 0 when no socket sent it (forwarded)
            // or its cgroup is not that deep.
            let id = unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level as i32) };
            if let Some(slot) = host_pod_slot(id, ifindex) {
                return Some(slot);
            }
        }
        return None;
    }
    let cgroup = receiving_socket_cgroup(ctx)?;
    let own_level = read_kernel::<i32>(cgroup.checked_add(u64::from(setting(SETTING_CGROUP_LEVEL_OFFSET)))?)?;
    let ancestors = cgroup.checked_add(u64::from(setting(SETTING_CGROUP_ANCESTORS_OFFSET)))?;
    let ancestor_ids = setting(SETTING_ANCESTOR_IDS) == 1;
    for level in 1..=MAX_POD_CGROUP_LEVEL {
        if levels & (1 << level) == 0 || level as i32 > own_level {
            continue;
        }
        let entry = read_kernel::<u64>(ancestors + u64::from(level) * 8)?;
        let id = if ancestor_ids { entry } else { cgroup_id(entry)? };
        if let Some(slot) = host_pod_slot(id, ifindex) {
            return Some(slot);
        }
    }
    None
}

#[inline(always)]
fn host_pod_slot(cgroup_id: u64, ifindex: u32) -> Option<u32> {
    if cgroup_id == 0 {
        return None;
    }
    let key = CgroupKey {
        cgroup_id,
        ifindex,
        reserved: 0,
    };
    // SAFETY: a lookup in our own map; the value is plain data.
    unsafe { HOST_PODS.get(&key) }.map(|s| s.slot)
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const ETH_HLEN: usize = 14;
/// `BPF_F_CURRENT_NETNS`: look up in the network namespace of the packet's device.
const CURRENT_NETNS: u64 = u64::MAX;

/// The address of the cgroup of the local TCP or UDP socket an incoming packet is for.
#[inline(always)]
fn receiving_socket_cgroup(ctx: &TcContext) -> Option<u64> {
    if setting(SETTING_SOCK_CGROUP_OFFSET) == 0 {
        return None;
    }
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    // SAFETY: an all-zero tuple is a valid value of this plain-data union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // Addresses and ports are copied as they lie in the packet: the tuple is big-endian.
    let (tuple_len, protocol) = match ethertype {
        ETH_P_IP => {
            let version_ihl = ctx.load::<u8>(ETH_HLEN).ok()?;
            let header_len = usize::from(version_ihl & 0x0f) * 4;
            let fragment = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).ok()?);
            if header_len < 20 || fragment & 0x1fff != 0 {
                return None;
            }
            let protocol = ctx.load::<u8>(ETH_HLEN + 9).ok()?;
            // The union's IPv4 member: the one the lookup reads with this length.
            tuple.__bindgen_anon_1.ipv4.saddr = ctx.load::<u32>(ETH_HLEN + 12).ok()?;
            tuple.__bindgen_anon_1.ipv4.daddr = ctx.load::<u32>(ETH_HLEN + 16).ok()?;
            tuple.__bindgen_anon_1.ipv4.sport = ctx.load::<u16>(ETH_HLEN + header_len).ok()?;
            tuple.__bindgen_anon_1.ipv4.dport = ctx.load::<u16>(ETH_HLEN + header_len + 2).ok()?;
            (12u32, protocol)
        }
        ETH_P_IPV6 => {
            let protocol = ctx.load::<u8>(ETH_HLEN + 6).ok()?;
            let l4 = ETH_HLEN + 40;
            // The union's IPv6 member: the one the lookup reads with this length.
            tuple.__bindgen_anon_1.ipv6.saddr = ctx.load::<[u32; 4]>(ETH_HLEN + 8).ok()?;
            tuple.__bindgen_anon_1.ipv6.daddr = ctx.load::<[u32; 4]>(ETH_HLEN + 24).ok()?;
            tuple.__bindgen_anon_1.ipv6.sport = ctx.load::<u16>(l4).ok()?;
            tuple.__bindgen_anon_1.ipv6.dport = ctx.load::<u16>(l4 + 2).ok()?;
            (36u32, protocol)
        }
        _ => return None,
    };
    let skb = ctx.skb.skb.cast();
    let tuple_ptr = &raw mut tuple;
    // SAFETY: lookups with our own skb and a tuple on our stack of the length given; the
    // socket they return is released below on every path.
    let socket = unsafe {
        match protocol {
            IPPROTO_TCP => bpf_sk_lookup_tcp(skb, tuple_ptr, tuple_len, CURRENT_NETNS, 0),
            IPPROTO_UDP => bpf_sk_lookup_udp(skb, tuple_ptr, tuple_len, CURRENT_NETNS, 0),
            _ => return None,
        }
    };
    if socket.is_null() {
        return None;
    }
    let cgroup = socket_cgroup(socket.cast());
    // SAFETY: releases the reference the lookup returned, once.
    unsafe { bpf_sk_release(socket.cast()) };
    cgroup
}

/// `sk->sk_cgrp_data.cgroup`, read at the offset user space found in BTF.
#[inline(always)]
fn socket_cgroup(socket: *const u8) -> Option<u64> {
    let sock_offset = setting(SETTING_SOCK_CGROUP_OFFSET);
    if sock_offset == 0 || sock_offset > SOCK_READ_LEN - 8 {
        return None;
    }
    let buffer = SOCK_READ.get_ptr_mut(0)?;
    let len = (sock_offset + 8) & (SOCK_READ_LEN * 2 - 1);
    if !(8..=SOCK_READ_LEN).contains(&len) {
        return None;
    }
    // SAFETY: reads `len` (<= the buffer's size) bytes of the socket the lookup returned
    // into our per-CPU buffer; the helper fails cleanly on an unreadable address. (The
    // socket pointer cannot take an offset: the verifier forbids arithmetic on it.)
    if unsafe { probe_read_kernel_into(buffer.cast(), len, socket.cast()) } != 0 {
        return None;
    }
    let at = (sock_offset as usize) & (SOCK_READ_LEN as usize - 1);
    if at + 8 > SOCK_READ_LEN as usize {
        return None;
    }
    // SAFETY: `at + 8` is within the buffer, checked just above.
    Some(unsafe { core::ptr::read_unaligned(buffer.cast::<u8>().add(at).cast::<u64>()) })
}

/// `cgroup->kn->id`: the cgroup v2 id of the cgroup at `cgroup`.
#[inline(always)]
fn cgroup_id(cgroup: u64) -> Option<u64> {
    let kernfs_node = read_kernel::<u64>(cgroup.checked_add(u64::from(setting(SETTING_CGROUP_KN_OFFSET)))?)?;
    read_kernel::<u64>(kernfs_node.checked_add(u64::from(setting(SETTING_KN_ID_OFFSET)))?)
}

#[inline(always)]
fn read_kernel<T>(address: u64) -> Option<T> {
    if address < 4096 {
        return None;
    }
    // SAFETY: the helper copies a `T` from a kernel address, failing cleanly if the
    // address cannot be read; `T` is plain data here (integers).
    unsafe { bpf_probe_read_kernel(address as *const T) }.ok()
}

/// A ring-buffer record: the header, then room for `N` (a power of two) bytes of the packet.
#[repr(C)]
struct CopyRecord<const N: usize> {
    header: CopyHeader,
    data: [u8; N],
}

/// Copies the packet (cut to the snap length) into the ring buffer, in a record of the
/// smallest size class that holds it (the verifier wants constant reservation sizes). The
/// packet itself is only read.
#[inline(always)]
fn copy_to_ring(ctx: &TcContext, queue: u32) -> bool {
    // An offloaded VLAN tag is not in the bytes: the copy gets it back in front of the
    // EtherType, as the AF_XDP route's clone does (and tcpdump shows).
    let skb = ctx.skb.skb;
    // SAFETY: reading context fields of our own skb.
    let (vlan_present, vlan_proto, vlan_tci) =
        unsafe { ((*skb).vlan_present, (*skb).vlan_proto, (*skb).vlan_tci) };
    let vlan = if vlan_present != 0 {
        (u32::from(vlan_proto as u16) << 16) | u32::from(vlan_tci as u16)
    } else {
        0
    };
    let len = ctx.len() + if vlan != 0 { 4 } else { 0 };
    let snaplen = setting(SETTING_SNAPLEN);
    let limit = if snaplen == 0 {
        RING_MAX_CAPTURE
    } else {
        snaplen.min(RING_MAX_CAPTURE)
    };
    let cut = len.min(limit);
    if cut <= 128 {
        copy_sized::<128>(ctx, queue, len, cut, vlan)
    } else if cut <= 2048 {
        copy_sized::<2048>(ctx, queue, len, cut, vlan)
    } else if cut <= 16384 {
        copy_sized::<16384>(ctx, queue, len, cut, vlan)
    } else {
        copy_sized::<{ RING_MAX_CAPTURE as usize }>(ctx, queue, len, cut, vlan)
    }
}

// Not inlined: each size class stays its own function, so the compiler cannot merge the
// classes' reservation sizes and copy lengths into independent selects that the verifier
// would have to combine in every way.
#[inline(never)]
fn copy_sized<const N: usize>(ctx: &TcContext, queue: u32, original_len: u32, cut: u32, vlan: u32) -> bool {
    let Some(mut entry) = COPIES.reserve::<CopyRecord<N>>(0) else {
        return false;
    };
    let record = entry.as_mut_ptr();
    // Through memory, so the compiler cannot drop the checks below on what it knows of the
    // caller: the verifier does not always know as much.
    // SAFETY: reads a local.
    let cut = unsafe { core::ptr::read_volatile(&raw const cut) };
    if cut == 0 || cut as usize > N {
        entry.discard(0);
        return false;
    }
    // 1..=N by arithmetic as well (N is a power of two), which is how the verifier sees it
    // whatever the compiler does with the check above.
    let captured = ((cut as usize - 1) & (N - 1)) + 1;
    let skb = ctx.skb.skb.cast();
    // SAFETY: `record` points to our reservation of `size_of::<CopyRecord<N>>()` bytes.
    let data: *mut u8 = unsafe { (&raw mut (*record).data).cast() };
    let loaded = if vlan == 0 {
        // SAFETY: `captured` (1..=N) bytes of the packet fit `data`.
        unsafe { bpf_skb_load_bytes(skb, 0, data.cast(), captured as u32) }
    } else {
        // Addresses, then the tag, then the rest from the EtherType on.
        // SAFETY: reads a local, as above.
        let rest = unsafe { core::ptr::read_volatile(&raw const captured) };
        if rest <= 16 || rest > N {
            entry.discard(0);
            return false;
        }
        let rest = rest - 16;
        // SAFETY: 12 bytes into a record of at least 128; then the 4-byte tag at 12..16;
        // then `rest` (1..=N-16) bytes at 16.
        unsafe {
            if bpf_skb_load_bytes(skb, 0, data.cast(), 12) != 0 {
                entry.discard(0);
                return false;
            }
            // `vlan_proto` is kept in network order, `vlan_tci` in host order.
            let tag = ((vlan >> 16) as u16).to_ne_bytes();
            let tci = (vlan as u16).to_be_bytes();
            *data.add(12) = tag[0];
            *data.add(13) = tag[1];
            *data.add(14) = tci[0];
            *data.add(15) = tci[1];
            bpf_skb_load_bytes(skb, 12, data.add(16).cast(), rest as u32)
        }
    };
    if loaded != 0 {
        entry.discard(0);
        return false;
    }
    let captured = captured as u32;
    // SAFETY: as above.
    unsafe {
        (*record).header = CopyHeader {
            timestamp_ns: bpf_ktime_get_ns(),
            original_len,
            captured_len: captured,
            queue,
            magic: COPY_MAGIC,
        };
    }
    // While user space drains on a timer, no wakeup at all; while it waits in poll, the
    // adaptive one (only when it has caught up).
    let flags = if setting(SETTING_RING_WAKEUP) == 1 {
        0
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    entry.submit(flags);
    true
}

/// Room kept in front of the frame for [`FrameMeta`].
const META_LEN: i32 = core::mem::size_of::<FrameMeta>() as i32;

#[xdp(frags)]
pub fn podcap_xdp(ctx: XdpContext) -> u32 {
    let queue = ctx.rx_queue_index();
    deliver(&ctx, queue, &SOCKETS)
}

/// AF_XDP socket per rx queue of the `--tap` interface.
#[map]
static TAP_SOCKETS: XskMap = XskMap::with_max_entries(MAX_TAP_QUEUES, 0);

/// Captures everything a dedicated mirror/tap interface receives: the frames are taken.
#[xdp(frags)]
pub fn podcap_tap(ctx: XdpContext) -> u32 {
    deliver(&ctx, setting(SETTING_TAP_COUNTERS), &TAP_SOCKETS)
}

/// Cuts the frame to the snap length, prepends a [`FrameMeta`] and redirects it to the
/// socket of its rx queue in `sockets`, counting in `COUNTERS[counter_index]`.
#[inline(always)]
fn deliver(ctx: &XdpContext, counter_index: u32, sockets: &XskMap) -> u32 {
    let Some(counters) = counters(counter_index) else {
        return xdp_action::XDP_DROP;
    };
    counters.xdp_seen += 1;
    // SAFETY: helper on the program's own context.
    let original_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as u32;
    let snaplen = setting(SETTING_SNAPLEN);
    if snaplen != 0 && original_len > snaplen {
        let cut = (original_len - snaplen) as i32;
        // SAFETY: shrinking the tail of a frame that only capture sees; failure leaves it
        // whole, and AF_XDP then counts it as too large for its chunk.
        unsafe { bpf_xdp_adjust_tail(ctx.ctx, -cut) };
    }
    // The metadata goes in front of the frame, inside the data AF_XDP copies: copy mode
    // hands user space the data only.
    // SAFETY: grows the head into the XDP headroom (256 bytes on veth and in generic mode).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -META_LEN) } != 0 {
        counters.xdp_dropped += 1;
        return xdp_action::XDP_DROP;
    }
    let start = ctx.data();
    if start + META_LEN as usize > ctx.data_end() {
        counters.xdp_dropped += 1;
        return xdp_action::XDP_DROP;
    }
    let meta = start as *mut FrameMeta;
    // SAFETY: bounds checked against `data_end` just above, as the verifier requires.
    unsafe {
        (*meta).timestamp_ns = bpf_ktime_get_ns();
        (*meta).original_len = original_len;
        (*meta).magic = FRAME_META_MAGIC;
    }
    match sockets.redirect(ctx.rx_queue_index(), 0) {
        Ok(action) => action,
        Err(_) => {
            counters.xdp_dropped += 1;
            xdp_action::XDP_DROP
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
