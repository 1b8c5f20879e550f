//! libpcap's filter compiler (`pcap_compile` on a dead handle): the only way to get
//! exactly tcpdump's semantics for a filter expression.
use std::{
    ffi::{c_char, c_int, c_uint, CStr, CString},
    sync::Mutex,
};

/// One classic BPF instruction, as `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut BpfInsn,
}

#[repr(C)]
struct PcapHandle {
    _private: [u8; 0],
}

const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;

#[link(name = "pcap")]
unsafe extern "C" {
    fn pcap_open_dead(linktype: c_int, snaplen: c_int) -> *mut PcapHandle;
    fn pcap_create(source: *const c_char, errbuf: *mut c_char) -> *mut PcapHandle;
    fn pcap_set_buffer_size(p: *mut PcapHandle, size: c_int) -> c_int;
    fn pcap_set_snaplen(p: *mut PcapHandle, snaplen: c_int) -> c_int;
    fn pcap_activate(p: *mut PcapHandle) -> c_int;
    fn pcap_compile(
        p: *mut PcapHandle,
        fp: *mut BpfProgram,
        expression: *const c_char,
        optimize: c_int,
        netmask: u32,
    ) -> c_int;
    fn pcap_geterr(p: *mut PcapHandle) -> *mut c_char;
    fn pcap_freecode(fp: *mut BpfProgram);
    fn pcap_close(p: *mut PcapHandle);
}

/// Older libpcap compilers keep global state: one compile at a time.
static COMPILER: Mutex<()> = Mutex::new(());

/// How the program was compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Semantics {
    /// As tcpdump compiles for a live Linux capture: the outer VLAN tag is not in the
    /// frame's bytes but in the kernel's metadata (read through ancillary loads).
    LiveLinux,
    /// As `tcpdump -r` compiles for a file: every tag is in the bytes.
    Offline,
}

/// A libpcap handle, closed on drop.
struct Handle(*mut PcapHandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from pcap_create or pcap_open_dead and is closed once.
        unsafe { pcap_close(self.0) };
    }
}

/// A live handle on the loopback interface (never read from): libpcap compiles for it
/// exactly as tcpdump does for a live capture on this kernel.
fn live_handle(snaplen: c_int) -> Option<Handle> {
    let mut errbuf = [0 as c_char; 256];
    // SAFETY: the name is a NUL-terminated literal and `errbuf` has PCAP_ERRBUF_SIZE bytes.
    let raw = unsafe { pcap_create(c"lo".as_ptr(), errbuf.as_mut_ptr()) };
    if raw.is_null() {
        return None;
    }
    let handle = Handle(raw);
    // SAFETY: `handle` is a created, not yet activated handle; the setters take integers.
    // A small buffer: the handle only compiles, it never captures.
    let active = unsafe {
        pcap_set_buffer_size(handle.0, 64 * 1024);
        pcap_set_snaplen(handle.0, snaplen);
        pcap_activate(handle.0)
    };
    (active == 0).then_some(handle)
}

/// Compiles `expression` with tcpdump's live-capture semantics when this process may open
/// a packet socket, else with its offline semantics; the error is libpcap's own message.
pub fn compile_filter(
    expression: &str,
    link_type: u16,
    snaplen: u32,
) -> Result<(Vec<BpfInsn>, Semantics), String> {
    let text = CString::new(expression).map_err(|_| "the expression contains a NUL byte".to_owned())?;
    let _guard = COMPILER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let snaplen = c_int::try_from(snaplen).unwrap_or(c_int::MAX);
    let (handle, semantics) = if let Some(live) = live_handle(snaplen) {
        (live, Semantics::LiveLinux)
    } else {
        // SAFETY: pcap_open_dead takes plain integers; a null result is handled.
        let raw = unsafe { pcap_open_dead(c_int::from(link_type), snaplen) };
        if raw.is_null() {
            return Err("libpcap could not open a handle".to_owned());
        }
        (Handle(raw), Semantics::Offline)
    };
    let mut program = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null_mut(),
    };
    // SAFETY: `handle` is a live handle, `program` is writable, `text` is NUL-terminated and
    // outlives the call.
    let status = unsafe { pcap_compile(handle.0, &raw mut program, text.as_ptr(), 1, PCAP_NETMASK_UNKNOWN) };
    if status != 0 {
        // SAFETY: pcap_geterr returns the handle's NUL-terminated error buffer, valid until
        // the handle is closed; it is copied before that.
        return Err(unsafe { CStr::from_ptr(pcap_geterr(handle.0)) }
            .to_string_lossy()
            .into_owned());
    }
    let insns = if program.bf_insns.is_null() {
        Vec::new()
    } else {
        // SAFETY: on success libpcap points `bf_insns` at `bf_len` instructions that live
        // until pcap_freecode below; they are copied out first.
        unsafe { std::slice::from_raw_parts(program.bf_insns, program.bf_len as usize) }.to_vec()
    };
    // SAFETY: `program` was filled by a successful pcap_compile and is freed once.
    unsafe { pcap_freecode(&raw mut program) };
    Ok((insns, semantics))
}
