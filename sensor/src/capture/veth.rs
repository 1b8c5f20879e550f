//! The capture veth pair: `podcap0` receives the tc clones, `podcap1` (its peer) runs the
//! XDP program that hands them to AF_XDP.
//!
//! Rules: one sensor per network namespace, whatever its channel: a [`NamespaceClaim`] is a
//! name claimed in the namespace ([`crate::sys::claim_name`], freed by the kernel when the
//! owner dies); a second sensor is refused naming the first one's pid, and touches nothing.
//! Only the holder of the claim deletes a pair a crashed run left (nobody claimed it), and
//! only it makes one. The pair is owned by a [`CaptureVeth`] whose `Drop` deletes it. It
//! carries no addresses and no IPv6 (so the host never sends its own frames into it), and
//! has one queue per (slot, direction).
use std::{fs, io, process::Command};

/// Name of the side the clones are sent to.
pub(crate) const CAPTURE_IFACE: &str = "podcap0";
/// Name of the side the XDP program and the sockets sit on.
pub(crate) const CAPTURE_PEER: &str = "podcap1";
/// Large enough for any pod frame that is not GSO (those are segmented before the veth).
pub(crate) const CAPTURE_MTU: u32 = 65_000;

#[derive(Debug, thiserror::Error)]
pub enum VethError {
    #[error("cannot run `ip` (iproute2) to manage the capture veth")]
    Spawn(#[source] io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("another podcap-sensor (pid {pid}) is capturing in this network namespace: run one sensor per network namespace")]
    Owned { pid: u32 },
    #[error("cannot claim the network namespace for this sensor")]
    Claim(#[source] io::Error),
    #[error("cannot configure the capture veth: {path}")]
    Sysctl {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn ip(args: &[&str]) -> Result<(), VethError> {
    let out = Command::new("ip").args(args).output().map_err(VethError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VethError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// This sensor's claim on its network namespace, released on drop (and by the kernel
/// when the sensor dies).
#[derive(Debug)]
pub(crate) struct NamespaceClaim {
    _socket: crate::sys::ClaimedName,
}

/// How long a claim held by a process that is exiting is waited for.
pub(crate) const EXITING_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The name claimed by the sensor of a network namespace (named when only the AF_XDP
/// channel had a veth; kept, so that sensors of either version see each other).
const CLAIM: &str = "podcap-capture-veth";

impl NamespaceClaim {
    /// Claims this network namespace, then deletes a capture veth a crashed run left.
    ///
    /// A holder that is on its way out (killed a moment ago: the kernel releases its
    /// descriptors as it exits) is waited for, up to [`EXITING_HOLDER_WAIT`].
    pub(crate) fn take() -> Result<Self, VethError> {
        let started = std::time::Instant::now();
        let socket = loop {
            match crate::sys::claim_name(CLAIM).map_err(VethError::Claim)? {
                Ok(socket) => break socket,
                Err(pid)
                    if pid != 0
                        && crate::sys::process_is_gone(pid)
                        && started.elapsed() < EXITING_HOLDER_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(pid) => return Err(VethError::Owned { pid }),
            }
        };
        remove_leftover();
        Ok(Self { _socket: socket })
    }
}

/// An existing capture veth pair; deleted on drop.
#[derive(Debug)]
pub(crate) struct CaptureVeth {
    pub ifindex: u32,
}

impl CaptureVeth {
    /// Creates a fresh pair with `queues` queues, up; only under this namespace's claim.
    pub(crate) fn create(_claim: &NamespaceClaim, queues: u32) -> Result<Self, VethError> {
        let q = queues.to_string();
        let mtu = CAPTURE_MTU.to_string();
        // Both sides get the same queues (tx on podcap0 picks the rx queue of podcap1).
        let side = ["numtxqueues", &q, "numrxqueues", &q, "mtu", &mtu];
        let mut args = vec!["link", "add", CAPTURE_IFACE];
        args.extend(side);
        args.extend(["type", "veth", "peer", "name", CAPTURE_PEER]);
        args.extend(side);
        ip(&args)?;
        // From here on, dropping `veth` deletes the pair whatever fails next.
        let mut veth = Self { ifindex: 0 };
        for iface in [CAPTURE_IFACE, CAPTURE_PEER] {
            let path = format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6");
            match fs::write(&path, "1") {
                Ok(()) => {}
                // A kernel without IPv6 sends no IPv6 into the pair either.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(VethError::Sysctl { path, source }),
            }
            ip(&["link", "set", iface, "up"])?;
        }
        veth.ifindex = crate::sys::interface_index(CAPTURE_IFACE).ok_or_else(|| VethError::Ip {
            args: format!("link show {CAPTURE_IFACE}"),
            stderr: "the capture veth vanished right after it was made".into(),
        })?;
        Ok(veth)
    }
}

/// Deletes a capture veth pair left by an earlier run (deleting one side deletes both);
/// only for the holder of the claim.
fn remove_leftover() {
    if crate::sys::interface_index(CAPTURE_IFACE).is_some() {
        let _ = ip(&["link", "del", CAPTURE_IFACE]);
    }
}

impl Drop for CaptureVeth {
    fn drop(&mut self) {
        if let Err(e) = ip(&["link", "del", CAPTURE_IFACE]) {
            log::warn!("could not delete the capture veth {CAPTURE_IFACE}: {e}");
        }
    }
}
