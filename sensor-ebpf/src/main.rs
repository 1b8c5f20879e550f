//! podcap's kernel programs.
//!
//! Rules:
//! - The pod must not notice: the tc programs never drop, redirect or alter the packet they
//!   run on. Every field they touch (`queue_mapping`) is restored before they return, on
//!   every path, and they return `TC_ACT_UNSPEC` (TCX "next") so other programs still decide.
//! - A copy travels by `bpf_clone_redirect` into the capture veth that the sensor owns, on
//!   the queue that names its interface slot and direction (`podcap_common::queue_for`).
//! - The XDP program runs in native mode on the capture veth's peer. It only ever sees our
//!   clones, so dropping there costs the pods nothing; it counts every frame it cannot hand to
//!   AF_XDP.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_UNSPEC},
    helpers::{
        bpf_ktime_get_ns, bpf_skb_vlan_pop, bpf_skb_vlan_push, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
        bpf_xdp_get_buff_len,
    },
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, PerCpuArray, XskMap},
    programs::{TcContext, XdpContext},
};
use podcap_common::{
    queue_for, FrameMeta, QueueCounters, Selection, DIRECTION_INBOUND, DIRECTION_OUTBOUND, FRAME_META_MAGIC,
    MAX_QUEUES, MAX_SLOTS, MAX_TAP_QUEUES, SETTINGS_LEN, SETTING_CAPTURE_IFINDEX, SETTING_ENABLED,
    SETTING_SNAPLEN, SETTING_TAP_COUNTERS,
};

/// ifindex of a selected interface → its slot. Filled by user space.
#[map]
static SELECTED: HashMap<u32, Selection> = HashMap::with_max_entries(MAX_SLOTS, 0);

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

#[classifier]
pub fn podcap_ingress(ctx: TcContext) -> i32 {
    clone_to_capture(&ctx, DIRECTION_INBOUND);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn podcap_egress(ctx: TcContext) -> i32 {
    clone_to_capture(&ctx, DIRECTION_OUTBOUND);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn clone_to_capture(ctx: &TcContext, direction: u32) {
    if setting(SETTING_ENABLED) == 0 {
        return;
    }
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the context pointer the kernel handed this program.
    let ifindex = unsafe { (*skb).ifindex };
    // SAFETY: a lookup in our own map; the value is plain data.
    let Some(selection) = (unsafe { SELECTED.get(&ifindex) }) else {
        return;
    };
    let queue = queue_for(selection.slot, direction);
    let capture_ifindex = setting(SETTING_CAPTURE_IFINDEX);
    if queue >= MAX_QUEUES || capture_ifindex == 0 {
        return;
    }
    let Some(counters) = counters(queue) else {
        return;
    };
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
    match result {
        Ok(()) => {
            counters.cloned += 1;
            counters.cloned_bytes += u64::from(ctx.len());
        }
        Err(_) => counters.clone_failed += 1,
    }
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
