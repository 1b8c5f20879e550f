//! Network namespaces of other processes: which host interfaces their veths are joined to.
//!
//! Rules: entering a namespace (`setns`) happens only on a thread spawned for that one
//! purpose and ended right after, so no other work ever runs in a pod's namespace. Links
//! are read with one netlink `RTM_GETLINK` dump.
use std::{fs::File, io, os::fd::AsRawFd, path::Path};

/// A link as seen inside a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// The peer lives in another namespace (`IFLA_LINK_NETNSID` present).
    pub peer_elsewhere: bool,
}

/// The (device, inode) that identifies a namespace file such as `/proc/PID/ns/net`.
pub fn namespace_id(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// The links of the network namespace at `ns_path` (e.g. `/proc/PID/ns/net`).
pub fn links_in(ns_path: &Path) -> io::Result<Vec<Link>> {
    let ns = File::open(ns_path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: `ns` is an open namespace file; this thread is ours alone and ends
                // after the dump, so nothing else runs in the entered namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                dump_links()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINK_NETNSID: u16 = 37;

/// `RTM_GETLINK` dump in the calling thread's namespace.
fn dump_links() -> io::Result<Vec<Link>> {
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket this function owns from here on.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut request = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    request[0..4].copy_from_slice(&((NLMSG_HDRLEN + IFINFOMSG_LEN) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request[6..8].copy_from_slice(&flags.to_ne_bytes());
    request[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: `request` is a valid buffer of its length; the kernel is the destination.
    let sent = unsafe { libc::send(socket.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut links = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rest = &buf[..n.cast_unsigned()];
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink message",
                ));
            }
            match i32::from(kind) {
                libc::NLMSG_DONE => return Ok(links),
                libc::NLMSG_ERROR => {
                    let code = rest
                        .get(16..20)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    return Err(io::Error::from_raw_os_error(-code));
                }
                k if k == i32::from(libc::RTM_NEWLINK) => {
                    if let Some(link) = parse_link(&rest[NLMSG_HDRLEN..len]) {
                        links.push(link);
                    }
                }
                _ => {}
            }
            rest = &rest[(len + 3) & !3..];
        }
    }
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    let mut link = Link {
        index,
        name: String::new(),
        peer_index: None,
        peer_elsewhere: false,
    };
    let mut attrs = body.get(IFINFOMSG_LEN..)?;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match kind {
            IFLA_IFNAME => {
                link.name =
                    String::from_utf8_lossy(value.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
            }
            IFLA_LINK if value.len() >= 4 => {
                link.peer_index = Some(u32::from_ne_bytes([value[0], value[1], value[2], value[3]]));
            }
            IFLA_LINK_NETNSID => link.peer_elsewhere = true,
            _ => {}
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
    }
    Some(link)
}
