//! AF_XDP sockets on a shared UMEM (xsk-rs over libxdp), one per device queue.
//!
//! Rules: each socket owns a fixed share of the UMEM frames and its own fill ring; a frame
//! goes back to the fill ring of the socket that received it as soon as its bytes are
//! copied out, so the rings never starve each other. Sockets bind in copy mode (veth has no
//! zero-copy) and never load libxdp's program: ours registers them in its XSKMAP.
use std::{
    io,
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
};

use xsk_rs::{
    config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
};

/// UMEM chunk size: a 1500-byte frame plus headroom fits, and so does anything up to
/// [`max_frame_len`].
pub const FRAME_SIZE: u32 = 4096;
/// The kernel's XDP_PACKET_HEADROOM, in front of every received frame.
pub const XDP_HEADROOM: u32 = 256;

/// Longest frame (metadata included) one chunk holds.
#[must_use]
pub const fn max_frame_len() -> u32 {
    FRAME_SIZE - XDP_HEADROOM
}

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("invalid AF_XDP ring size {size}: {reason}")]
    Config { size: u32, reason: String },
    #[error("creating the AF_XDP UMEM failed: {0}")]
    Umem(String),
    #[error("creating the AF_XDP socket on {iface} queue {queue} failed: {reason}")]
    Socket {
        iface: String,
        queue: u32,
        reason: String,
    },
}

/// Kernel-side drop counters of one socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketDrops {
    /// Frames dropped for lack of a fill-ring buffer or because they exceeded a chunk.
    pub rx_dropped: u64,
    /// Frames dropped because the rx ring was full.
    pub rx_ring_full: u64,
}

impl SocketDrops {
    /// Frames lost at this socket.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full
    }
}

/// One AF_XDP socket with its rx ring and fill ring.
pub struct QueueSocket {
    /// The device queue the socket is bound to.
    pub queue: u32,
    /// What the caller calls this socket's frames (handed to `receive`'s callback).
    pub tag: u32,
    rx: RxQueue,
    fill: FillQueue,
    _tx: TxQueue,
    descs: Vec<FrameDesc>,
}

/// The shared UMEM and every socket on it.
pub struct XskSet {
    umem: Umem,
    pub sockets: Vec<QueueSocket>,
}

impl XskSet {
    /// Creates a UMEM of `queues.len() * frames_per_queue` chunks and binds one socket per
    /// `(queue, tag)` of `iface`.
    pub fn bind(iface: &str, queues: &[(u32, u32)], frames_per_queue: u32) -> Result<Self, XskError> {
        let ring = QueueSize::new(frames_per_queue).map_err(|e| XskError::Config {
            size: frames_per_queue,
            reason: e.to_string(),
        })?;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| XskError::Config {
                size: FRAME_SIZE,
                reason: e.to_string(),
            })?)
            .fill_queue_size(ring)
            .comp_queue_size(QueueSize::new(64).map_err(|e| XskError::Config {
                size: 64,
                reason: e.to_string(),
            })?)
            .build()
            .map_err(|e| XskError::Umem(e.to_string()))?;
        let total = NonZeroU32::new(frames_per_queue.saturating_mul(queues.len() as u32))
            .ok_or_else(|| XskError::Umem("no queues to bind".into()))?;
        let (umem, frames) =
            Umem::new(umem_config, total, false).map_err(|e| XskError::Umem(e.to_string()))?;
        let socket_config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(QueueSize::new(64).map_err(|e| XskError::Config {
                size: 64,
                reason: e.to_string(),
            })?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_COPY)
            .build();
        let if_name: Interface = iface.parse().map_err(|_| XskError::Socket {
            iface: iface.into(),
            queue: 0,
            reason: "interface name is not a C string".into(),
        })?;
        let mut sockets = Vec::with_capacity(queues.len());
        for (i, &(queue, tag)) in queues.iter().enumerate() {
            let socket_err = |reason: String| XskError::Socket {
                iface: iface.into(),
                queue,
                reason,
            };
            // SAFETY: each (iface, queue) pair is bound once from this UMEM, with
            // XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD as xsk-rs requires for shared UMEMs.
            let (tx, rx, rings) = unsafe { Socket::new(socket_config, &umem, &if_name, queue) }
                .map_err(|e| socket_err(e.to_string()))?;
            let (mut fill, _completion) = rings.ok_or_else(|| socket_err("no fill ring returned".into()))?;
            let share = &frames[i * frames_per_queue as usize..(i + 1) * frames_per_queue as usize];
            // SAFETY: these frames belong to this UMEM and to no other ring or socket.
            let produced = unsafe { fill.produce(share) };
            if produced != share.len() {
                return Err(socket_err(format!(
                    "fill ring took {produced} of {} frames",
                    share.len()
                )));
            }
            sockets.push(QueueSocket {
                queue,
                tag,
                rx,
                fill,
                _tx: tx,
                descs: share.to_vec(),
            });
        }
        Ok(Self { umem, sockets })
    }

    /// File descriptors to poll for readability.
    #[must_use]
    pub fn fds(&self) -> Vec<RawFd> {
        self.sockets.iter().map(|s| s.rx.fd().as_raw_fd()).collect()
    }

    /// Receives up to a batch from socket `index`, calling `each(frame_bytes)` per frame,
    /// and returns the frames to its fill ring. Returns how many frames it saw.
    pub fn receive(&mut self, index: usize, mut each: impl FnMut(u32, &[u8])) -> usize {
        let Some(socket) = self.sockets.get_mut(index) else {
            return 0;
        };
        let batch = socket.descs.len().min(256);
        // SAFETY: the descriptors are overwritten by the kernel's; frames they name are ours
        // until we hand them back below.
        let n = unsafe { socket.rx.consume(&mut socket.descs[..batch]) };
        for desc in &socket.descs[..n] {
            // SAFETY: `desc` came from this UMEM's rx ring; nothing writes the frame until it
            // returns to the fill ring below.
            let data = unsafe { self.umem.data(desc) };
            each(socket.tag, data.contents());
        }
        if n > 0 {
            // SAFETY: returning exactly the frames just consumed, which are no longer read.
            let mut given = 0;
            while given < n {
                let more = unsafe { socket.fill.produce(&socket.descs[given..n]) };
                if more == 0 {
                    // Cannot happen (these slots were just freed); never spin on it.
                    break;
                }
                given += more;
            }
        }
        n
    }

    /// The socket's kernel drop counters.
    pub fn drops(&self, index: usize) -> io::Result<SocketDrops> {
        let socket = self
            .sockets
            .get(index)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let stats = socket.rx.fd().xdp_statistics()?;
        Ok(SocketDrops {
            rx_dropped: stats.rx_dropped(),
            rx_ring_full: stats.rx_ring_full(),
        })
    }

    /// The raw fd of socket `index`, for the XSKMAP.
    #[must_use]
    pub fn raw_fd(&self, index: usize) -> Option<RawFd> {
        self.sockets.get(index).map(|s| s.rx.fd().as_raw_fd())
    }
}
