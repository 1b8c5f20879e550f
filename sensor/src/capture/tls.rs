//! The TLS secrets probes (`--tls-secrets`): the uprobes' maps, where each probe is
//! attached, and Kubernetes mode's fence.
//!
//! Rules: the programs are loaded at start and attached only at the files the collector
//! names (`crate::tls`), and detached from a file when it says no process uses it any more
//! (each file's links are kept by its device and inode; an attachment that fails halfway
//! is undone); each OpenSSL layout takes one slot of `OPENSSL_LAYOUTS` and its
//! index is the cookie of every attachment of a library of that layout. With the fence up
//! (Kubernetes mode) no process gives secrets until the reconciler names the targeted
//! pods' cgroups, and then only processes under one of them.
use std::collections::{HashMap, HashSet};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use podcap_common::{
    OpenSslLayout, MAX_POD_CGROUP_LEVEL, OPENSSL_LAYOUTS_MAX, TLS_FENCE_LEVELS, TLS_FENCE_UP,
};

use super::{
    ebpf::{program, program_error, take_map},
    CaptureError,
};

/// Which TLS secrets probe to attach to a file, and where.
#[derive(Debug)]
pub enum TlsProbe {
    /// A Go binary: its key log function starts at `offset` in the file.
    Go { offset: u64 },
    /// An OpenSSL library of `layout`: its read and write functions start at `offsets`.
    OpenSsl {
        layout: OpenSslLayout,
        offsets: Vec<u64>,
    },
}

/// The uprobes that read Go programs' TLS secrets, and OpenSSL's.
const GO_PROBE: &str = "podcap_go_keylog";
const OPENSSL_PROBE: &str = "podcap_openssl_secrets";

/// The maps of the TLS secrets uprobes: their events, those a full ring lost, and the
/// probe hits the fence turned away.
pub(crate) struct TlsSecretMaps {
    pub(crate) ring: RingBuf<MapData>,
    pub(crate) lost: PerCpuArray<MapData, u64>,
    pub(crate) fenced: PerCpuArray<MapData, u64>,
}

impl TlsSecretMaps {
    /// Events lost to a full ring so far, summed over the CPUs (0 if unreadable).
    pub(crate) fn lost(&self) -> u64 {
        sum_per_cpu(&self.lost)
    }

    /// Probe hits of processes outside the targeted pods so far (Kubernetes mode).
    pub(crate) fn fenced(&self) -> u64 {
        sum_per_cpu(&self.fenced)
    }
}

fn sum_per_cpu(map: &PerCpuArray<MapData, u64>) -> u64 {
    map.get(&0, 0).map_or(0, |per_cpu| {
        per_cpu.iter().fold(0u64, |sum, n| sum.saturating_add(*n))
    })
}

/// Kubernetes mode's TLS fence: the targeted pods' cgroups in the probes' maps.
struct TlsFence {
    settings: Array<MapData, u32>,
    pods: aya::maps::HashMap<MapData, u64, u8>,
    /// What `pods` holds.
    current: HashSet<u64>,
}

impl TlsFence {
    /// Makes `pods` (cgroup id, level) the pods whose processes give secrets.
    fn set(&mut self, pods: &[(u64, u32)]) -> Result<(), String> {
        let wanted: HashSet<u64> = pods.iter().map(|(id, _)| *id).collect();
        for gone in self.current.difference(&wanted).copied().collect::<Vec<_>>() {
            let _ = self.pods.remove(&gone);
            self.current.remove(&gone);
        }
        for (id, _) in pods {
            if !self.current.contains(id) {
                self.pods
                    .insert(id, 1, 0)
                    .map_err(|e| format!("pod cgroup {id}: {e}"))?;
                self.current.insert(*id);
            }
        }
        let levels = pods
            .iter()
            .filter(|(_, level)| (1..=MAX_POD_CGROUP_LEVEL).contains(level))
            .fold(0u32, |levels, (_, level)| levels | (1 << level));
        self.settings
            .set(TLS_FENCE_LEVELS, levels, 0)
            .map_err(|e| e.to_string())
    }
}

/// The loaded TLS secrets probes, the OpenSSL layouts they know, and the fence.
pub(crate) struct TlsProbes {
    fence: Option<TlsFence>,
    layouts: Array<MapData, OpenSslLayout>,
    /// What `layouts` holds, by index.
    known: Vec<OpenSslLayout>,
    /// Each probed file's (device, inode) links, and the program they belong to.
    links: HashMap<(u64, u64), (&'static str, Vec<UProbeLinkId>)>,
}

impl TlsProbes {
    /// Loads the probes (not attached yet); with `fence`, raises Kubernetes mode's fence.
    pub(crate) fn load(ebpf: &mut Ebpf, fence: bool) -> Result<(TlsSecretMaps, Self), CaptureError> {
        for name in [GO_PROBE, OPENSSL_PROBE] {
            let uprobe: &mut UProbe = program(ebpf, name)?;
            uprobe
                .load()
                .map_err(|source| program_error(name, "load", source))?;
        }
        let maps = TlsSecretMaps {
            ring: take_map(ebpf, "TLS_SECRETS")?,
            lost: take_map(ebpf, "TLS_SECRETS_LOST")?,
            fenced: take_map(ebpf, "TLS_SECRETS_FENCED")?,
        };
        let fence = if fence {
            let mut settings: Array<MapData, u32> = take_map(ebpf, "TLS_FENCE")?;
            settings
                .set(TLS_FENCE_UP, 1, 0)
                .map_err(|source| CaptureError::Map {
                    name: "TLS_FENCE",
                    action: "set".into(),
                    source: Box::new(source),
                })?;
            Some(TlsFence {
                settings,
                pods: take_map(ebpf, "TLS_POD_CGROUPS")?,
                current: HashSet::new(),
            })
        } else {
            None
        };
        let probes = Self {
            fence,
            layouts: take_map(ebpf, "OPENSSL_LAYOUTS")?,
            known: Vec::new(),
            links: HashMap::new(),
        };
        Ok((maps, probes))
    }

    /// Sets the fence to `pods` (nothing without the fence).
    pub(crate) fn fence(&mut self, pods: &[(u64, u32)]) {
        if let Some(fence) = &mut self.fence {
            if let Err(e) = fence.set(pods) {
                log::warn!("TLS secrets: the targeted pods could not all be fenced in: {e}");
            }
        }
    }

    /// Attaches a probe to the file at `path`: Go's at its key log function; OpenSSL's at
    /// each read and write function, with its layout's index in `OPENSSL_LAYOUTS` as the
    /// cookie (a layout already there is shared).
    pub(crate) fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        (path, file): (&std::path::Path, (u64, u64)),
        probe: TlsProbe,
    ) -> Result<(), String> {
        let (name, offsets, cookie) = match probe {
            TlsProbe::Go { offset } => (GO_PROBE, vec![offset], None),
            TlsProbe::OpenSsl { layout, offsets } => {
                let index = if let Some(index) = self.known.iter().position(|l| *l == layout) {
                    index
                } else {
                    if self.known.len() >= OPENSSL_LAYOUTS_MAX as usize {
                        return Err("too many OpenSSL layouts at once".into());
                    }
                    let index = self.known.len();
                    let slot = u32::try_from(index).map_err(|e| e.to_string())?;
                    self.layouts.set(slot, layout, 0).map_err(|e| e.to_string())?;
                    self.known.push(layout);
                    index
                };
                (OPENSSL_PROBE, offsets, Some(index as u64))
            }
        };
        // A file probed before (its links still kept) is not probed twice.
        self.detach(ebpf, file);
        let uprobe: &mut UProbe = program(ebpf, name).map_err(|e| e.to_string())?;
        let mut links = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie,
            };
            match uprobe.attach(point, path, UProbeScope::AllProcesses) {
                Ok(link) => links.push(link),
                Err(e) => {
                    // Undone: a later attempt starts from nothing.
                    for link in links {
                        let _ = uprobe.detach(link);
                    }
                    return Err(format!("{e}"));
                }
            }
        }
        self.links.insert(file, (name, links));
        Ok(())
    }

    /// Detaches the probes of `file` (nothing if it has none).
    pub(crate) fn detach(&mut self, ebpf: &mut Ebpf, file: (u64, u64)) {
        let Some((name, links)) = self.links.remove(&file) else {
            return;
        };
        let Ok(uprobe) = program::<UProbe>(ebpf, name) else {
            return;
        };
        for link in links {
            if let Err(e) = uprobe.detach(link) {
                log::warn!("TLS secrets: a probe could not be detached: {e}");
            }
        }
    }
}
