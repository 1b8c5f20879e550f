//! From a pod to what the kernel sees of it, read from the host's `/sys/fs/cgroup` and
//! `/proc` (the sensor runs with hostPID): its cgroup, its network namespace and the
//! host-side interfaces of its veths.
//!
//! Rules:
//! - The pod's cgroup is the directory the kubelet names after the pod UID, in either
//!   driver's form: `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid with _>.slice`
//!   (systemd), searched a few levels below the cgroup root (cgroup v2, the v2 half of a
//!   hybrid layout at `unified/`, or a v1 hierarchy). Its cgroup v2 id is the directory's
//!   inode number, what `bpf_skb_cgroup_id` returns.
//! - Its processes are those in `cgroup.procs` of that directory and the containers' below
//!   it; the first one alive gives the network namespace. The same namespace as the
//!   sensor's means a hostNetwork pod.
//! - The host-side interfaces are the `IFLA_LINK` peers of the veths inside the pod's
//!   namespace whose peer lives in another namespace, kept only if that ifindex exists
//!   here. A pod without processes (not started, or gone) resolves to an error, not a
//!   guess; callers retry on the next change.
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::sys::{self, netns};

/// A host-side interface of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInterface {
    pub name: String,
    pub ifindex: u32,
    /// The interface's name inside the pod (`eth0`).
    pub pod_side: String,
}

/// What a pod is to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub cgroup_dir: PathBuf,
    /// cgroup v2 id (inode of the directory).
    pub cgroup_id: u64,
    pub host_network: bool,
    pub interfaces: Vec<HostInterface>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("pod {uid}: no cgroup under {root}")]
    NoCgroup { uid: String, root: String },
    #[error("pod {uid}: no live process in {dir}")]
    NoProcess { uid: String, dir: String },
    #[error("pod {uid}: reading its network namespace: {source}")]
    Namespace {
        uid: String,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves pods on this host.
#[derive(Clone, Debug)]
pub struct Resolver {
    cgroup_root: PathBuf,
}

/// How deep below the root the kubelet puts pod cgroups (kubepods / qos / pod, plus a
/// slice or two of systemd).
const MAX_DEPTH: usize = 5;

impl Resolver {
    #[must_use]
    pub fn new(cgroup_root: PathBuf) -> Self {
        Self { cgroup_root }
    }

    /// The cgroup root of this host: v2 where it is mounted, else the v2 half of a hybrid
    /// layout, else the v1 `pids` hierarchy.
    #[must_use]
    pub fn detect() -> Self {
        let base = Path::new("/sys/fs/cgroup");
        let root = if base.join("cgroup.controllers").exists() {
            base.to_owned()
        } else if base.join("unified/cgroup.controllers").exists() {
            base.join("unified")
        } else {
            base.join("pids")
        };
        Self::new(root)
    }

    #[must_use]
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// The pod's cgroup directory and its cgroup v2 id, processes or not (what a
    /// hostNetwork pod is selected by, with [`cgroup_level`]).
    pub fn cgroup_of(&self, uid: &str) -> Result<(PathBuf, u64), ResolveError> {
        let cgroup_dir = find_pod_cgroup(&self.cgroup_root, uid).ok_or_else(|| ResolveError::NoCgroup {
            uid: uid.to_owned(),
            root: self.cgroup_root.display().to_string(),
        })?;
        let cgroup_id = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(&cgroup_dir).map_or(0, |m| m.ino())
        };
        Ok((cgroup_dir, cgroup_id))
    }

    pub fn resolve(&self, uid: &str) -> Result<Resolved, ResolveError> {
        let (cgroup_dir, cgroup_id) = self.cgroup_of(uid)?;
        let mut pids = Vec::new();
        collect_pids(&cgroup_dir, 0, &mut pids);
        let no_process = || ResolveError::NoProcess {
            uid: uid.to_owned(),
            dir: cgroup_dir.display().to_string(),
        };
        let ns_path = pids
            .iter()
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
            .find(|p| p.exists())
            .ok_or_else(no_process)?;
        let namespace_err = |source| ResolveError::Namespace {
            uid: uid.to_owned(),
            source,
        };
        let pod_ns = netns::namespace_id(&ns_path).map_err(namespace_err)?;
        let own_ns = netns::namespace_id(Path::new("/proc/thread-self/ns/net")).map_err(namespace_err)?;
        let host_network = pod_ns == own_ns;
        let interfaces = if host_network {
            Vec::new()
        } else {
            netns::links_in(&ns_path)
                .map_err(namespace_err)?
                .into_iter()
                .filter(|l| l.peer_elsewhere)
                .filter_map(|l| {
                    let ifindex = l.peer_index?;
                    let name = sys::interface_name(ifindex)?;
                    Some(HostInterface {
                        name,
                        ifindex,
                        pod_side: l.name,
                    })
                })
                .collect()
        };
        Ok(Resolved {
            cgroup_dir,
            cgroup_id,
            host_network,
            interfaces,
        })
    }
}

/// The depth of cgroup directory `dir` in the cgroup v2 hierarchy (its root is 0), from
/// the cgroup2 mount it lies under (`/proc/self/mountinfo`, whose root field counts when
/// the mount shows only a subtree).
#[must_use]
pub fn cgroup_level(dir: &Path) -> Option<u32> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, PathBuf)> = None;
    for line in mountinfo.lines() {
        let (mount, fs) = line.split_once(" - ")?;
        if !fs.starts_with("cgroup2 ") {
            continue;
        }
        let fields: Vec<&str> = mount.split(' ').collect();
        let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let point = PathBuf::from(point);
        if dir.starts_with(&point)
            && best
                .as_ref()
                .is_none_or(|(p, _)| point.as_os_str().len() > p.as_os_str().len())
        {
            best = Some((point, PathBuf::from(root)));
        }
    }
    let (point, root) = best?;
    let below = dir.strip_prefix(&point).ok()?.components().count();
    let above = root
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    u32::try_from(below + above).ok()
}

/// Whether a cgroup directory name is the kubelet's for pod `uid`.
fn names_pod(name: &str, uid: &str) -> bool {
    let systemd_uid = uid.replace('-', "_");
    name == format!("pod{uid}") || name.ends_with(&format!("pod{systemd_uid}.slice"))
}

fn find_pod_cgroup(root: &Path, uid: &str) -> Option<PathBuf> {
    let mut level = vec![root.to_owned()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for dir in level {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.filter_map(Result::ok) {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if names_pod(&name, uid) {
                    return Some(entry.path());
                }
                // Only the kubelet's part of the tree is walked.
                if name.starts_with("kubepods") || name.contains("kubepods") || dir != *root {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    None
}

fn collect_pids(dir: &Path, depth: usize, pids: &mut Vec<u32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if depth >= 3 {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&entry.path(), depth + 1, pids);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_levels_count_from_the_v2_root() {
        let root = Resolver::detect().cgroup_root().to_owned();
        if !root.join("cgroup.controllers").exists() {
            return; // a v1-only host has no v2 levels
        }
        assert_eq!(cgroup_level(&root), Some(0));
        assert_eq!(cgroup_level(&root.join("kubepods/burstable/pod1")), Some(3));
        assert_eq!(cgroup_level(Path::new("/nowhere/kubepods")), None);
    }

    #[test]
    fn kubelet_cgroup_names_of_both_drivers() {
        let uid = "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab";
        assert!(names_pod(&format!("pod{uid}"), uid));
        assert!(names_pod(
            "kubepods-besteffort-pod0f1e2d3c_aaaa_bbbb_cccc_1234567890ab.slice",
            uid
        ));
        assert!(names_pod(
            "kubepods-pod0f1e2d3c_aaaa_bbbb_cccc_1234567890ab.slice",
            uid
        ));
        assert!(!names_pod("kubepods-besteffort.slice", uid));
        assert!(!names_pod("pod0f1e2d3c-aaaa-bbbb-cccc-1234567890ac", uid));
    }

    #[test]
    fn the_search_finds_the_pod_in_either_layout_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let uid = "11111111-2222-3333-4444-555555555555";
        let systemd = root
            .path()
            .join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod11111111_2222_3333_4444_555555555555.slice");
        fs::create_dir_all(systemd.join("cri-containerd-abc.scope")).unwrap();
        assert_eq!(find_pod_cgroup(root.path(), uid), Some(systemd));
        let other = tempfile::tempdir().unwrap();
        let cgroupfs = other
            .path()
            .join("kubepods/besteffort/pod11111111-2222-3333-4444-555555555555");
        fs::create_dir_all(&cgroupfs).unwrap();
        fs::create_dir_all(
            other
                .path()
                .join("system.slice/pod11111111-2222-3333-4444-555555555555"),
        )
        .unwrap();
        assert_eq!(find_pod_cgroup(other.path(), uid), Some(cgroupfs));
        assert_eq!(
            find_pod_cgroup(other.path(), "99999999-2222-3333-4444-555555555555"),
            None
        );
    }
}
