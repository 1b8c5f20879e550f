//! Every syscall and piece of FFI the sensor makes directly (aya and xsk-rs make their own).
//!
//! Rules: each `unsafe` block carries a `// SAFETY:` line; functions here return
//! `std::io::Result` with the OS error, and callers add the context (which file, which
//! interface).
pub mod bpf;
pub mod netns;
pub mod process;
pub mod xsk;

use std::{
    ffi::CString,
    io,
    os::fd::RawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// Whether `file` (opened for writing) is the only open description of its inode, checked
/// by taking a write lease and giving it back at once: the kernel grants one only when no
/// other descriptor, in this process or another, has the file open. `Ok(false)` when
/// someone has it open; an error when leases are not available (`fs.leases-enable`).
pub fn is_only_opener(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file` for the whole call; F_SETLEASE
    // takes an integer argument.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) } != 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EAGAIN) => Ok(false),
            _ => Err(error),
        };
    }
    // SAFETY: as above; releases the lease just taken.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Turns `O_DIRECT` on or off for `file` (`fcntl(F_SETFL)`): writes then bypass the page
/// cache, or go through it again. A file system that cannot do direct I/O refuses with
/// `EINVAL`.
pub fn set_direct_io(file: &std::fs::File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file` for the whole call; F_GETFL takes
    // no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above; F_SETFL takes the integer flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `slices` in order at `offset` of `file` with one `pwritev`; returns the bytes
/// written (fewer than asked is possible, as with `write`).
pub fn write_vectored_at(file: &std::fs::File, slices: &[io::IoSlice<'_>], offset: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let count =
        libc::c_int::try_from(slices.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix (std documents it);
    // the slices and the memory they point to are borrowed for the whole call, which only
    // reads them; the descriptor is owned by `file` for the whole call.
    let written = unsafe {
        libc::pwritev(
            file.as_raw_fd(),
            slices.as_ptr().cast::<libc::iovec>(),
            count,
            offset,
        )
    };
    usize::try_from(written).map_err(|_| io::Error::last_os_error())
}

/// Allocates the blocks of `file` from `offset` for `len` bytes (`fallocate`, mode 0): the
/// file's size grows to cover them and they read as zeros until written.
pub fn allocate(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let too_large = || io::Error::from(io::ErrorKind::FileTooLarge);
    let offset = libc::off_t::try_from(offset).map_err(|_| too_large())?;
    let len = libc::off_t::try_from(len).map_err(|_| too_large())?;
    // SAFETY: the descriptor is owned by `file` for the whole call; fallocate takes no
    // pointer.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns `O_DIRECT` on for `file` where it bypasses a page cache: refused on a file system
/// that keeps files in memory anyway (tmpfs takes `O_DIRECT` since Linux 6.6, but there it
/// would only add the copy into an aligned buffer) and where [`set_direct_io`] is refused.
pub fn enable_direct_io(file: &std::fs::File) -> io::Result<()> {
    if is_in_memory(file).unwrap_or(false) {
        return Err(io::Error::other(
            "its file system keeps files in memory (tmpfs), where direct writes only add a copy",
        ));
    }
    set_direct_io(file, true)
}

/// Whether `file` lives on a file system that keeps files in memory (tmpfs, ramfs:
/// `fstatfs`).
pub fn is_in_memory(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: the descriptor is open for the whole call (owned by `file`), and `stat`
    // points at a whole `statfs` the kernel fills.
    if unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so it wrote the struct (and it was zeroed before).
    let kind = unsafe { stat.assume_init() }.f_type;
    // RAMFS_MAGIC, which the libc crate does not name.
    Ok(kind == libc::TMPFS_MAGIC || kind == 0x8584_58f6)
}

/// Renames `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`): the store
/// never replaces a file by renaming over it. An existing `to` is `AlreadyExists`. On a
/// file system without the flag, a check and a plain rename stand in (not atomic against
/// another process, which the store's own single writer does not need).
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from_c = CString::new(from.as_os_str().as_bytes())?;
    let to_c = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; AT_FDCWD
    // makes relative paths relative to the working directory, as `rename` does.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if done == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        _ => Err(error),
    }
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when another open
/// file description holds it (another process, or another `open` in this one). The kernel
/// releases it when the last descriptor of this description closes, `kill -9` included.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the whole call (owned by `file`); flock takes
    // plain integers.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(error),
    }
}

/// Whether process `pid` is gone or on its way out (exiting, a zombie, dead and not yet
/// reaped): its files are being, or have been, released.
#[must_use]
pub fn process_is_gone(pid: u32) -> bool {
    /// `PF_EXITING` of the task's flags: set as it starts to exit.
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // `pid (comm) state ppid pgrp session tty tpgid flags ...`: comm may hold anything,
    // the fields follow its last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let dead = fields
        .first()
        .is_some_and(|state| matches!(*state, "Z" | "X" | "x"));
    let exiting = fields
        .get(6)
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0);
    dead || exiting
}

/// Makes every file and folder this process creates its own alone (umask 077).
pub fn restrict_umask() {
    // SAFETY: umask takes a plain integer and cannot fail.
    unsafe { libc::umask(0o077) };
}

/// Space of the file system holding `path`: (bytes available to this user, total bytes).
pub fn fs_space(path: &std::path::Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct; it is only read
    // after statvfs filled it.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a writable statvfs, both
    // alive for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &raw mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion, reason = "the field types differ between targets")]
    let (block, available, total) = (
        u64::from(stats.f_frsize),
        u64::from(stats.f_bavail),
        u64::from(stats.f_blocks),
    );
    Ok((available.saturating_mul(block), total.saturating_mul(block)))
}

/// A name claimed in this network namespace, held while this value lives.
#[derive(Debug)]
pub struct ClaimedName {
    _name: std::os::fd::OwnedFd,
    _holder: std::os::fd::OwnedFd,
}

/// A name claimed in this network namespace for as long as the returned value lives: an
/// abstract unix socket, whose names are per network namespace and which the kernel frees
/// when its process ends (a `kill -9` included). Beside it the holder binds
/// `NAME.pid.PID`, which another process reads in `/proc/net/unix` (its own network
/// namespace's) to name the holder without connecting to it (a connect would wait on a
/// full backlog). `Ok(Err(pid))` when a live process holds it (its pid, 0 if unknown).
pub fn claim_name(name: &str) -> io::Result<Result<ClaimedName, u32>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let bind = |name: &str| -> io::Result<Option<OwnedFd>> {
        // SAFETY: an all-zero sockaddr_un is a valid value of the plain C struct.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        // sun_path[0] stays 0: the abstract namespace.
        let bytes = name.as_bytes();
        let len = bytes.len().min(addr.sun_path.len() - 1);
        for (slot, byte) in addr.sun_path[1..=len].iter_mut().zip(bytes) {
            *slot = (*byte).cast_signed();
        }
        let size = (std::mem::size_of::<libc::sa_family_t>() + 1 + len) as libc::socklen_t;
        // SAFETY: socket() takes plain integers and returns a new descriptor or -1.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `addr` is a valid sockaddr_un of `size` bytes for the call.
        if unsafe { libc::bind(socket.as_raw_fd(), (&raw const addr).cast(), size) } == 0 {
            return Ok(Some(socket));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EADDRINUSE) => Ok(None),
            _ => Err(error),
        }
    };
    let holder_prefix = format!("@{name}.pid.");
    if let Some(claimed) = bind(name)? {
        let holder = bind(&format!("{}{}", &holder_prefix[1..], std::process::id()))?
            .ok_or_else(|| io::Error::from(io::ErrorKind::AddrInUse))?;
        return Ok(Ok(ClaimedName {
            _name: claimed,
            _holder: holder,
        }));
    }
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let pid = table
        .lines()
        .filter_map(|line| line.split_whitespace().last()?.strip_prefix(&holder_prefix))
        .find_map(|pid| pid.parse().ok())
        .unwrap_or(0);
    Ok(Err(pid))
}

/// The effective user id.
#[must_use]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// ifindex of `name`, or `None` if there is no such interface in this network namespace.
#[must_use]
pub fn interface_index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Name of interface `ifindex` in this network namespace, or `None` if there is none.
#[must_use]
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires; null means no such
    // interface.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec
        .cast_unsigned()
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec.cast_unsigned())
}

/// Number of rx queues of `name` (`/sys/class/net/NAME/queues/rx-*`); 1 if unknown.
#[must_use]
pub fn rx_queue_count(name: &str) -> u32 {
    let count = std::fs::read_dir(format!("/sys/class/net/{name}/queues")).map_or(1, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count()
    });
    u32::try_from(count).unwrap_or(u32::MAX).max(1)
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns()`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in ns since the Unix epoch.
#[must_use]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Waits until one of `fds` is readable or `timeout` passes; returns whether any is.
pub fn poll_readable(fds: &[RawFd], timeout: Duration) -> io::Result<bool> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pollfds` is a valid array of `pollfds.len()` entries for the whole call.
    let ready = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout_ms) };
    match ready {
        -1 => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
        n => Ok(n > 0),
    }
}

/// Set by the SIGTERM and SIGINT handlers.
static STOP_REQUESTED: std::sync::LazyLock<std::sync::Arc<AtomicBool>> =
    std::sync::LazyLock::new(std::sync::Arc::default);

/// Installs SIGTERM/SIGINT handlers that set the flag [`stop_requested`] reads
/// (`signal-hook`'s: the handler only stores to the atomic, which is async-signal-safe).
pub fn install_stop_handlers() -> io::Result<()> {
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&STOP_REQUESTED))?;
    }
    Ok(())
}

/// Whether SIGTERM or SIGINT arrived.
#[must_use]
pub fn stop_requested() -> bool {
    // Relaxed: a lone flag (signal-hook stores it with SeqCst); the threads that read it
    // only need to see it eventually, and they synchronise with each other through their
    // own channels when they stop.
    STOP_REQUESTED.load(Ordering::Relaxed)
}
