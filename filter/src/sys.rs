//! libpcap's filter compiler (`pcap_compile`): the only way to get exactly tcpdump's
//! semantics for a filter expression. All of this crate's FFI.
//!
//! Rules:
//! - libpcap is loaded the first time a filter is compiled, not linked: a program that
//!   never filters (the CLI on a laptop without libpcap) starts without it, and one that
//!   does is told which library is missing and how to install it.
//! - Each `unsafe` block carries a `// SAFETY:` line.
use std::{
    ffi::{c_char, c_int, c_uint, CStr, CString},
    sync::{Mutex, OnceLock},
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

/// The names libpcap's shared library goes by: Fedora and Alpine, Debian and Ubuntu, a
/// development install, macOS.
const LIBRARY_NAMES: [&str; 4] = ["libpcap.so.1", "libpcap.so.0.8", "libpcap.so", "libpcap.A.dylib"];

/// The functions used, resolved once from the library, which stays loaded for the
/// process's life (so the pointers stay valid).
struct Libpcap {
    _library: libloading::Library,
    open_dead: unsafe extern "C" fn(c_int, c_int) -> *mut PcapHandle,
    create: unsafe extern "C" fn(*const c_char, *mut c_char) -> *mut PcapHandle,
    set_buffer_size: unsafe extern "C" fn(*mut PcapHandle, c_int) -> c_int,
    set_snaplen: unsafe extern "C" fn(*mut PcapHandle, c_int) -> c_int,
    activate: unsafe extern "C" fn(*mut PcapHandle) -> c_int,
    compile: unsafe extern "C" fn(*mut PcapHandle, *mut BpfProgram, *const c_char, c_int, u32) -> c_int,
    geterr: unsafe extern "C" fn(*mut PcapHandle) -> *mut c_char,
    freecode: unsafe extern "C" fn(*mut BpfProgram),
    close: unsafe extern "C" fn(*mut PcapHandle),
}

fn load() -> Result<Libpcap, String> {
    let mut tried = Vec::new();
    for name in LIBRARY_NAMES {
        // SAFETY: loading libpcap runs only its (side-effect free) initialisers.
        let found = unsafe { libloading::Library::new(name) }.and_then(resolve);
        match found {
            Ok(libpcap) => return Ok(libpcap),
            Err(e) => tried.push(format!("{name} ({e})")),
        }
    }
    Err(format!(
        "libpcap, which compiles tcpdump filters, is not installed (tried {}); install it \
         (Debian/Ubuntu: apt install libpcap0.8, Fedora: dnf install libpcap, Alpine: apk add \
         libpcap, macOS: it comes with the system)",
        tried.join(", ")
    ))
}

fn resolve(library: libloading::Library) -> Result<Libpcap, libloading::Error> {
    // SAFETY: each symbol is libpcap's function of that name, whose C signature
    // (pcap/pcap.h) the field's type states; the pointers are copied out and used only
    // while `library`, kept in the same struct, stays loaded.
    unsafe {
        Ok(Libpcap {
            open_dead: *library.get(b"pcap_open_dead\0")?,
            create: *library.get(b"pcap_create\0")?,
            set_buffer_size: *library.get(b"pcap_set_buffer_size\0")?,
            set_snaplen: *library.get(b"pcap_set_snaplen\0")?,
            activate: *library.get(b"pcap_activate\0")?,
            compile: *library.get(b"pcap_compile\0")?,
            geterr: *library.get(b"pcap_geterr\0")?,
            freecode: *library.get(b"pcap_freecode\0")?,
            close: *library.get(b"pcap_close\0")?,
            _library: library,
        })
    }
}

fn libpcap() -> Result<&'static Libpcap, String> {
    static LIBPCAP: OnceLock<Result<Libpcap, String>> = OnceLock::new();
    LIBPCAP.get_or_init(load).as_ref().map_err(Clone::clone)
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
struct Handle<'a> {
    raw: *mut PcapHandle,
    libpcap: &'a Libpcap,
}

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from pcap_create or pcap_open_dead and is closed once.
        unsafe { (self.libpcap.close)(self.raw) };
    }
}

/// A live handle on the loopback interface (never read from): libpcap compiles for it
/// exactly as tcpdump does for a live capture on this kernel.
fn live_handle(libpcap: &Libpcap, snaplen: c_int) -> Option<Handle<'_>> {
    let mut errbuf = [0 as c_char; 256];
    // SAFETY: the name is a NUL-terminated literal and `errbuf` has PCAP_ERRBUF_SIZE bytes.
    let raw = unsafe { (libpcap.create)(c"lo".as_ptr(), errbuf.as_mut_ptr()) };
    if raw.is_null() {
        return None;
    }
    let handle = Handle { raw, libpcap };
    // SAFETY: `handle` is a created, not yet activated handle; the setters take integers.
    // A small buffer: the handle only compiles, it never captures.
    let active = unsafe {
        (libpcap.set_buffer_size)(handle.raw, 64 * 1024);
        (libpcap.set_snaplen)(handle.raw, snaplen);
        (libpcap.activate)(handle.raw)
    };
    (active == 0).then_some(handle)
}

/// Compiles `expression` with tcpdump's live-capture semantics when this process may open
/// a packet socket, else with its offline semantics; the error is libpcap's own message
/// (or why libpcap could not be loaded).
pub fn compile_filter(
    expression: &str,
    link_type: u16,
    snaplen: u32,
) -> Result<(Vec<BpfInsn>, Semantics), String> {
    let text = CString::new(expression).map_err(|_| "the expression contains a NUL byte".to_owned())?;
    let libpcap = libpcap()?;
    let _guard = COMPILER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let snaplen = c_int::try_from(snaplen).unwrap_or(c_int::MAX);
    let (handle, semantics) = if let Some(live) = live_handle(libpcap, snaplen) {
        (live, Semantics::LiveLinux)
    } else {
        // SAFETY: pcap_open_dead takes plain integers; a null result is handled.
        let raw = unsafe { (libpcap.open_dead)(c_int::from(link_type), snaplen) };
        if raw.is_null() {
            return Err("libpcap could not open a handle".to_owned());
        }
        (Handle { raw, libpcap }, Semantics::Offline)
    };
    let mut program = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null_mut(),
    };
    // SAFETY: `handle` is a live handle, `program` is writable, `text` is NUL-terminated and
    // outlives the call.
    let status = unsafe {
        (libpcap.compile)(
            handle.raw,
            &raw mut program,
            text.as_ptr(),
            1,
            PCAP_NETMASK_UNKNOWN,
        )
    };
    if status != 0 {
        // SAFETY: pcap_geterr returns the handle's NUL-terminated error buffer, valid until
        // the handle is closed; it is copied before that.
        return Err(unsafe { CStr::from_ptr((libpcap.geterr)(handle.raw)) }
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
    unsafe { (libpcap.freecode)(&raw mut program) };
    Ok((insns, semantics))
}
