//! Scope: which interfaces and hostNetwork pods are captured, in which slot, and changes to
//! it while running.
//!
//! Rules:
//! - A selected interface is a `SELECTED` entry (ifindex → slot) plus the tc programs on
//!   both its directions; a hostNetwork pod is a `HOST_PODS` entry ((cgroup, node
//!   interface) → slot) on a host interface, whose tc programs are attached from the start.
//! - An attach that fails half-way is undone whole; a detach removes what is left and
//!   ignores errors (an interface that is gone took its tc links with it).
//! - `SETTING_HOST_PODS` counts the `HOST_PODS` entries, so that node traffic costs no
//!   lookup while there are none; the levels mask is set before the count turns lookups on.
use aya::{
    maps::{Array, HashMap, MapData},
    programs::{
        tc::{SchedClassifierLinkId, TcAttachType},
        SchedClassifier,
    },
    Ebpf,
};
use podcap_common::{CgroupKey, Selection, MAX_POD_CGROUP_LEVEL, SETTING_HOST_PODS, SETTING_HOST_POD_LEVELS};

use super::{
    ebpf::{program, program_error, set, set_socket_cgroup_offsets, take_map},
    Capture, CaptureCommand, CaptureError, CaptureOptions, Interface,
};

/// The tc programs, both directions.
const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("podcap_ingress", TcAttachType::Ingress),
    ("podcap_egress", TcAttachType::Egress),
];

/// The kernel maps that put packets in slots, and what is attached while running.
pub(super) struct Selector {
    interfaces: HashMap<MapData, u32, Selection>,
    host_pods: HashMap<MapData, CgroupKey, Selection>,
    host_pod_count: u32,
    /// How many `HOST_PODS` entries sit at each cgroup level.
    host_pod_levels: [u32; MAX_POD_CGROUP_LEVEL as usize + 1],
    attached: std::collections::HashMap<u32, AttachedInterface>,
}

/// An interface attached while running, or a hostNetwork pod's cgroup on a node interface.
struct AttachedInterface {
    ifindex: u32,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
    /// Set for a hostNetwork pod: the slot is its `HOST_PODS` entry (cgroup id, level),
    /// not a `SELECTED` one.
    cgroup_id: Option<(u64, u32)>,
}

impl Selector {
    /// Selects `options.interfaces` in their slots and attaches the tc programs to them and
    /// to the host interfaces (with the socket cgroup offsets hostNetwork pods need).
    pub(super) fn start(
        ebpf: &mut Ebpf,
        settings: &mut Array<MapData, u32>,
        options: &CaptureOptions,
    ) -> Result<Self, CaptureError> {
        let mut interfaces: HashMap<_, u32, Selection> = take_map(ebpf, "SELECTED")?;
        for (slot, iface) in options.interfaces.iter().enumerate() {
            let selection = Selection {
                slot: slot as u32,
                flags: 0,
            };
            interfaces
                .insert(iface.ifindex, selection, 0)
                .map_err(|source| CaptureError::Map {
                    name: "SELECTED",
                    action: format!("insert {}", iface.name),
                    source: Box::new(source),
                })?;
        }
        let mut host: HashMap<_, u32, u32> = take_map(ebpf, "HOST_INTERFACES")?;
        for iface in &options.host_interfaces {
            host.insert(iface.ifindex, 1, 0)
                .map_err(|source| CaptureError::Map {
                    name: "HOST_INTERFACES",
                    action: format!("insert {}", iface.name),
                    source: Box::new(source),
                })?;
        }
        if !options.host_interfaces.is_empty() {
            set_socket_cgroup_offsets(settings)?;
        }
        for (name, attach_type) in TC_PROGRAMS {
            let tc: &mut SchedClassifier = program(ebpf, name)?;
            tc.load().map_err(|source| program_error(name, "load", source))?;
            for iface in options.interfaces.iter().chain(&options.host_interfaces) {
                tc.attach(&iface.name, attach_type)
                    .map_err(|source| program_error(name, &format!("attach to {}", iface.name), source))?;
            }
        }
        Ok(Self {
            interfaces,
            host_pods: take_map(ebpf, "HOST_PODS")?,
            host_pod_count: 0,
            host_pod_levels: [0; MAX_POD_CGROUP_LEVEL as usize + 1],
            attached: std::collections::HashMap::new(),
        })
    }

    fn level_mask(&self) -> u32 {
        self.host_pod_levels
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .fold(0, |mask, (level, _)| mask | 1 << level)
    }

    /// Writes the hostNetwork pods' count and levels for the tc programs.
    fn publish_host_pods(&self, settings: &mut Array<MapData, u32>) -> Result<(), CaptureError> {
        // Levels first: the count turns the lookups on.
        set(settings, SETTING_HOST_POD_LEVELS, self.level_mask())?;
        set(settings, SETTING_HOST_PODS, self.host_pod_count)
    }
}

impl Capture {
    /// Starts capturing `interface` in `slot` (one of the pool's): the tc programs on both
    /// directions, then the slot in the tc program's map. Undone whole on failure.
    pub(crate) fn attach(&mut self, slot: u32, interface: &Interface) -> Result<(), CaptureError> {
        self.detach(slot);
        let Some(selected) = &mut self.selected else {
            return Err(CaptureError::OnlyTap);
        };
        let mut attached = AttachedInterface {
            ifindex: interface.ifindex,
            links: Vec::new(),
            cgroup_id: None,
        };
        let mut outcome = Ok(());
        for (name, attach_type) in TC_PROGRAMS {
            let linked = program::<SchedClassifier>(&mut self.ebpf, name).and_then(|tc| {
                tc.attach(&interface.name, attach_type)
                    .map_err(|source| program_error(name, &format!("attach to {}", interface.name), source))
            });
            match linked {
                Ok(link) => attached.links.push((name, link)),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        selected.selector.attached.insert(slot, attached);
        if outcome.is_ok() {
            outcome = selected
                .selector
                .interfaces
                .insert(interface.ifindex, Selection { slot, flags: 0 }, 0)
                .map_err(|source| CaptureError::Map {
                    name: "SELECTED",
                    action: format!("insert {}", interface.name),
                    source: Box::new(source),
                });
        }
        if outcome.is_err() {
            self.detach(slot);
        }
        outcome
    }

    /// Starts capturing the hostNetwork pod with `cgroup_id` on node interface `interface`
    /// (a host interface, whose tc programs are attached from the start) in `slot`.
    pub(crate) fn attach_cgroup(
        &mut self,
        slot: u32,
        cgroup_id: u64,
        level: u32,
        interface: &Interface,
    ) -> Result<(), CaptureError> {
        self.detach(slot);
        if !(1..=MAX_POD_CGROUP_LEVEL).contains(&level) {
            return Err(CaptureError::CgroupLevel { level });
        }
        let Some(selected) = &mut self.selected else {
            return Err(CaptureError::OnlyTap);
        };
        let selector = &mut selected.selector;
        let key = CgroupKey {
            cgroup_id,
            ifindex: interface.ifindex,
            reserved: 0,
        };
        selector
            .host_pods
            .insert(key, Selection { slot, flags: 0 }, 0)
            .map_err(|source| CaptureError::Map {
                name: "HOST_PODS",
                action: format!("insert cgroup {cgroup_id} on {}", interface.name),
                source: Box::new(source),
            })?;
        selector.attached.insert(
            slot,
            AttachedInterface {
                ifindex: interface.ifindex,
                links: Vec::new(),
                cgroup_id: Some((cgroup_id, level)),
            },
        );
        selector.host_pod_count += 1;
        selector.host_pod_levels[level as usize] += 1;
        selector.publish_host_pods(&mut self.settings)
    }

    /// Stops capturing the interface (or hostNetwork pod) in `slot`. An interface that is
    /// already gone took its tc links with it; what is left is removed, errors ignored.
    pub(crate) fn detach(&mut self, slot: u32) {
        let Some(selected) = &mut self.selected else {
            return;
        };
        let selector = &mut selected.selector;
        let Some(attached) = selector.attached.remove(&slot) else {
            return;
        };
        if let Some((cgroup_id, level)) = attached.cgroup_id {
            let key = CgroupKey {
                cgroup_id,
                ifindex: attached.ifindex,
                reserved: 0,
            };
            if selector.host_pods.remove(&key).is_ok() {
                selector.host_pod_count = selector.host_pod_count.saturating_sub(1);
                let count = &mut selector.host_pod_levels[level as usize];
                *count = count.saturating_sub(1);
                let _ = selector.publish_host_pods(&mut self.settings);
            }
            return;
        }
        let _ = selector.interfaces.remove(&attached.ifindex);
        for (name, link) in attached.links {
            if let Ok(tc) = program::<SchedClassifier>(&mut self.ebpf, name) {
                let _ = tc.detach(link);
            }
        }
    }

    /// Applies the scope changes waiting in the command channel, answering each.
    pub(super) fn take_commands(&mut self) {
        let Some(commands) = self.commands.take() else {
            return;
        };
        while let Ok(command) = commands.try_recv() {
            match command {
                CaptureCommand::Attach {
                    slot,
                    interface,
                    reply,
                } => {
                    let result = self.attach(slot, &interface).map_err(|e| {
                        let text = format!("{e}");
                        log::warn!("cannot capture {}: {text}", interface.name);
                        text
                    });
                    let _ = reply.send(result);
                }
                CaptureCommand::AttachCgroup {
                    slot,
                    cgroup_id,
                    level,
                    interface,
                    reply,
                } => {
                    let result = self
                        .attach_cgroup(slot, cgroup_id, level, &interface)
                        .map_err(|e| {
                            let text = format!("{e}");
                            log::warn!("cannot capture cgroup {cgroup_id} on {}: {text}", interface.name);
                            text
                        });
                    let _ = reply.send(result);
                }
                CaptureCommand::Detach { slot, done } => {
                    self.detach(slot);
                    let _ = done.send(());
                }
                CaptureCommand::FenceTls { pods } => self.fence_tls(&pods),
                CaptureCommand::ProbeTls {
                    path,
                    file,
                    probe,
                    reply,
                } => {
                    let _ = reply.send(self.probe_tls(&path, file, probe));
                }
                CaptureCommand::UnprobeTls { file } => self.unprobe_tls(file),
            }
        }
        self.commands = Some(commands);
    }
}
