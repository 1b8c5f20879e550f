//! Kubernetes mode: keeps the capture scope equal to the targeted pods of this node.
//!
//! Rules:
//! - The desired scope is recomputed from the whole [`ClusterView`] and the targeting in
//!   force whenever either changes and at least every `RESYNC` (a pod whose processes were
//!   not started yet resolves later; an interface that vanished is noticed).
//! - A pod interface gets a free slot of the pool. The writer learns the slot's new
//!   description (`namespace/pod/iface`, with node, UID, containers and labels) and
//!   acknowledges before the capture attaches, so no packet of the slot reaches the writer
//!   before its description. A pod deleted or no longer targeted is detached and its slot
//!   freed; the segments keep naming it.
//! - Names for addresses (pods, services) go to the writer when they change.
//! - hostNetwork pods share the node's interfaces: such a pod takes a slot per host
//!   interface (`--host-iface`), named `namespace/pod/<node interface>`, and the kernel
//!   selects its packets there by the pod's cgroup. It needs only its cgroup, not a live
//!   process; with no host interface it is reported once and skipped.
//! - With `--tls-secrets`, the capture's TLS fence holds the cgroups of every targeted pod
//!   (host network or not): only their processes give secrets. A pod whose cgroup is not
//!   found yet, or not on cgroup v2, gives none until it is (said once).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write,
    net::IpAddr,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use super::{resolve::Resolver, ClusterView, PodInfo};
use crate::{
    capture::{CaptureCommand, Interface},
    config::targeting::Targeting,
    pcapng::{InterfaceDescription, LINKTYPE_ETHERNET},
    shutdown::Shutdown,
    stats::Stats,
    sys,
};

/// How often the scope is recomputed without a change.
pub const RESYNC: Duration = Duration::from_secs(1);

/// A change for the writer thread.
pub use crate::writer::WriterCommand;

/// What is captured in a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    pod_uid: String,
    ifindex: u32,
    host_name: String,
    label: String,
    /// A hostNetwork pod's cgroup id and level (its packets on `ifindex` are selected by
    /// it).
    cgroup_id: Option<(u64, u32)>,
}

/// The reconciler's state.
pub struct Reconciler {
    node: String,
    resolver: Resolver,
    snaplen: u32,
    /// The pool's slots: the first is `first_slot`.
    first_slot: u32,
    slots: Vec<Option<Target>>,
    capture: mpsc::Sender<CaptureCommand>,
    writer: mpsc::Sender<WriterCommand>,
    /// Node interfaces hostNetwork pods are recorded on.
    host_interfaces: Vec<Interface>,
    names: Vec<(IpAddr, String)>,
    reported: BTreeSet<String>,
    /// Told which pod each slot records, for the metrics' per-pod series.
    stats: Option<Arc<Stats>>,
    /// With `--tls-secrets`: the capture's TLS fence.
    tls_fence: Option<TlsFence>,
}

/// The targeted pods' cgroups (v2 id, level) by UID, and the set the capture's TLS fence
/// last got.
#[derive(Debug, Default)]
struct TlsFence {
    known: HashMap<String, (u64, u32)>,
    sent: Vec<(u64, u32)>,
}

fn description(
    node: &str,
    pod: &PodInfo,
    host: &str,
    ifindex: u32,
    pod_side: &str,
    snaplen: u32,
) -> InterfaceDescription {
    let containers: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    let labels: Vec<String> = pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    InterfaceDescription {
        name: format!("{}/{}/{pod_side}", pod.namespace, pod.name),
        description: format!(
            "node={node} pod={}/{} uid={} containers={} labels={} host-interface={host} (ifindex {ifindex})",
            pod.namespace,
            pod.name,
            pod.uid,
            containers.join(","),
            labels.join(","),
        ),
        link_type: LINKTYPE_ETHERNET,
        snaplen,
    }
}

impl Reconciler {
    #[must_use]
    pub fn new(
        node: String,
        resolver: Resolver,
        snaplen: u32,
        first_slot: u32,
        pool: u32,
        capture: mpsc::Sender<CaptureCommand>,
        writer: mpsc::Sender<WriterCommand>,
    ) -> Self {
        Self {
            node,
            resolver,
            snaplen,
            first_slot,
            slots: vec![None; pool as usize],
            capture,
            writer,
            host_interfaces: Vec::new(),
            names: Vec::new(),
            reported: BTreeSet::new(),
            stats: None,
            tls_fence: None,
        }
    }

    /// Keeps the capture's TLS fence on the targeted pods (`--tls-secrets`).
    #[must_use]
    pub fn with_tls_fence(mut self, enabled: bool) -> Self {
        self.tls_fence = enabled.then(Default::default);
        self
    }

    /// Gives the capture's TLS fence the cgroups of the `targeted` pods when they changed.
    fn fence_tls(&mut self, targeted: &[&PodInfo]) {
        let Some(TlsFence { known, sent }) = &mut self.tls_fence else {
            return;
        };
        known.retain(|uid, _| targeted.iter().any(|pod| pod.uid == *uid));
        for pod in targeted {
            if known.contains_key(&pod.uid) {
                continue;
            }
            let found = self
                .resolver
                .cgroup_of(&pod.uid)
                .map_err(|e| e.to_string())
                .and_then(|(dir, id)| {
                    super::resolve::cgroup_level(&dir)
                        .map(|level| (id, level))
                        .ok_or_else(|| format!("{} is not on cgroup v2", dir.display()))
                });
            match found {
                Ok(cgroup) => {
                    known.insert(pod.uid.clone(), cgroup);
                }
                Err(e) => {
                    if self.reported.insert(format!("tls:{}", pod.uid)) {
                        log::info!(
                            "{}/{}: its processes give no TLS secrets until its cgroup is found: {e}",
                            pod.namespace,
                            pod.name
                        );
                    }
                }
            }
        }
        let mut pods: Vec<(u64, u32)> = known.values().copied().collect();
        pods.sort_unstable();
        if pods != *sent {
            sent.clone_from(&pods);
            let _ = self.capture.send(CaptureCommand::FenceTls { pods });
        }
    }

    /// Names the pod of each slot in `stats` as slots are given and taken back.
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    fn name_slot(&self, slot: u32, label: Option<&str>) {
        let Some(stats) = &self.stats else { return };
        // `namespace/pod/interface`: neither a namespace nor a pod name holds a '/'.
        let pod = label.and_then(|label| {
            let mut parts = label.splitn(3, '/');
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
            ))
        });
        stats.set_pod(slot as usize, pod);
    }

    /// Records hostNetwork pods on these node interfaces (where the capture has its tc
    /// programs for them).
    #[must_use]
    pub fn with_host_interfaces(mut self, interfaces: Vec<Interface>) -> Self {
        self.host_interfaces = interfaces;
        self
    }

    /// Brings the capture scope to what `view` and `targeting` ask for.
    pub fn reconcile(&mut self, view: &ClusterView, targeting: &Targeting) {
        let names = view.names();
        if names != self.names {
            self.names.clone_from(&names);
            let _ = self.writer.send(WriterCommand::SetNames(names));
        }
        // (pod uid, host ifindex) → what to capture.
        let mut desired: BTreeMap<(String, u32), (InterfaceDescription, Target)> = BTreeMap::new();
        let targeted: Vec<&PodInfo> = view.selected(targeting).collect();
        self.fence_tls(&targeted);
        for pod in targeted {
            if pod.host_network {
                self.desire_host_pod(pod, &mut desired);
                continue;
            }
            match self.resolver.resolve(&pod.uid) {
                Ok(resolved) => {
                    for i in resolved.interfaces {
                        let d = description(&self.node, pod, &i.name, i.ifindex, &i.pod_side, self.snaplen);
                        let target = Target {
                            pod_uid: pod.uid.clone(),
                            ifindex: i.ifindex,
                            host_name: i.name.clone(),
                            label: d.name.clone(),
                            cgroup_id: None,
                        };
                        desired.insert((pod.uid.clone(), i.ifindex), (d, target));
                    }
                }
                Err(e) => {
                    if self.reported.insert(format!("{}:{e}", pod.uid)) {
                        log::info!("{}/{}: {e} (retrying)", pod.namespace, pod.name);
                    }
                }
            }
        }
        // What is no longer wanted (or whose interface is gone) goes first, freeing slots.
        for index in 0..self.slots.len() {
            let Some(target) = &self.slots[index] else {
                continue;
            };
            let wanted = desired
                .get(&(target.pod_uid.clone(), target.ifindex))
                .is_some_and(|(_, t)| t == target);
            let present = sys::interface_name(target.ifindex).is_some_and(|n| n == target.host_name);
            if !wanted || !present {
                let (done, detached) = mpsc::channel();
                let slot = self.first_slot + index as u32;
                if self.capture.send(CaptureCommand::Detach { slot, done }).is_ok() {
                    let _ = detached.recv_timeout(Duration::from_secs(5));
                }
                log::info!("stopped capturing {} ({})", target.label, target.host_name);
                self.name_slot(slot, None);
                self.slots[index] = None;
            }
        }
        let current: HashMap<(String, u32), usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| ((t.pod_uid.clone(), t.ifindex), i)))
            .collect();
        for (key, (description, target)) in desired {
            if current.contains_key(&key) {
                continue;
            }
            let Some(index) = self.slots.iter().position(Option::is_none) else {
                if self.reported.insert(format!("full:{}", target.label)) {
                    log::warn!(
                        "{}: every slot of --max-pods is taken; not captured",
                        target.label
                    );
                }
                continue;
            };
            let slot = self.first_slot + index as u32;
            // Named before the capture starts: what the slot counts from here is the pod's.
            self.name_slot(slot, Some(&target.label));
            if self.attach(slot, description, &target) {
                log::info!("capturing {} ({}, slot {slot})", target.label, target.host_name);
                self.slots[index] = Some(target);
            } else {
                self.name_slot(slot, None);
            }
        }
    }

    /// A hostNetwork pod: a target per host interface, selected by its cgroup.
    fn desire_host_pod(
        &mut self,
        pod: &PodInfo,
        desired: &mut BTreeMap<(String, u32), (InterfaceDescription, Target)>,
    ) {
        if self.host_interfaces.is_empty() {
            if self.reported.insert(format!("host:{}", pod.uid)) {
                log::warn!(
                    "{}/{}: a hostNetwork pod, and no node interface to record it on (--host-iface); skipped",
                    pod.namespace,
                    pod.name
                );
            }
            return;
        }
        let (cgroup_id, level) = match self.resolver.cgroup_of(&pod.uid) {
            Ok((dir, id)) => {
                if let Some(level) = super::resolve::cgroup_level(&dir) {
                    (id, level)
                } else {
                    if self.reported.insert(format!("level:{}", pod.uid)) {
                        log::warn!(
                            "{}/{}: {} is not under a cgroup v2 mount; a hostNetwork pod is selected by its v2 cgroup, skipped",
                            pod.namespace,
                            pod.name,
                            dir.display()
                        );
                    }
                    return;
                }
            }
            Err(e) => {
                if self.reported.insert(format!("{}:{e}", pod.uid)) {
                    log::info!("{}/{}: {e} (retrying)", pod.namespace, pod.name);
                }
                return;
            }
        };
        for host in &self.host_interfaces {
            let mut d = description(
                &self.node,
                pod,
                &host.name,
                host.ifindex,
                &host.name,
                self.snaplen,
            );
            let _ = write!(d.description, " hostNetwork cgroup-id={cgroup_id}");
            let target = Target {
                pod_uid: pod.uid.clone(),
                ifindex: host.ifindex,
                host_name: host.name.clone(),
                label: d.name.clone(),
                cgroup_id: Some((cgroup_id, level)),
            };
            desired.insert((pod.uid.clone(), host.ifindex), (d, target));
        }
    }

    fn attach(&self, slot: u32, description: InterfaceDescription, target: &Target) -> bool {
        let (ack, acked) = mpsc::channel();
        if self
            .writer
            .send(WriterCommand::SetInterface {
                slot,
                description,
                // A hostNetwork pod is recorded on the node's own interfaces, where the
                // node's direction is already the pod's.
                pod_side: target.cgroup_id.is_none(),
                ack,
            })
            .is_err()
            || acked.recv_timeout(Duration::from_secs(5)).is_err()
        {
            return false;
        }
        let (reply, replied) = mpsc::channel();
        let interface = Interface {
            name: target.host_name.clone(),
            ifindex: target.ifindex,
        };
        let command = match target.cgroup_id {
            Some((cgroup_id, level)) => CaptureCommand::AttachCgroup {
                slot,
                cgroup_id,
                level,
                interface,
                reply,
            },
            None => CaptureCommand::Attach {
                slot,
                interface,
                reply,
            },
        };
        if self.capture.send(command).is_err() {
            return false;
        }
        matches!(replied.recv_timeout(Duration::from_secs(5)), Ok(Ok(())))
    }
}

/// Connects to the API (`api` URL without authentication, else the in-cluster service
/// account or the kubeconfig), then runs the pod watcher and the reconciler until `stop`.
pub fn spawn(
    api: Option<&str>,
    mut reconciler: Reconciler,
    targeting: Arc<Mutex<Targeting>>,
    stop: Shutdown,
) -> Result<std::thread::JoinHandle<()>, WatchStartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(WatchStartError::Runtime)?;
    let client = runtime.block_on(async {
        let config = match api {
            Some(url) => kube::Config::new(url.parse().map_err(|source| WatchStartError::ApiUrl {
                url: url.to_owned(),
                source,
            })?),
            None => kube::Config::infer().await.map_err(WatchStartError::NoConfig)?,
        };
        kube::Client::try_from(config).map_err(WatchStartError::Client)
    })?;
    std::thread::Builder::new()
        .name("podcap-pods".into())
        .spawn(move || {
            let (tx, mut rx) = tokio::sync::watch::channel(ClusterView::default());
            let node = reconciler.node.clone();
            runtime.spawn(async move { super::watch(client, &node, tx).await });
            while !stop.requested() {
                let changed = runtime.block_on(async { tokio::time::timeout(RESYNC, rx.changed()).await });
                if let Ok(Err(_)) = changed {
                    // The watcher ended (it does not, but never spin).
                    std::thread::sleep(RESYNC);
                }
                let view = rx.borrow_and_update().clone();
                let targeting = targeting
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                reconciler.reconcile(&view, &targeting);
            }
            runtime.shutdown_background();
        })
        .map_err(WatchStartError::Thread)
}

/// Why the pod watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchStartError {
    #[error("the pod watcher's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("--kube-api {url:?}")]
    ApiUrl {
        url: String,
        #[source]
        source: axum::http::uri::InvalidUri,
    },
    #[error("no in-cluster service account and no kubeconfig")]
    NoConfig(#[source] kube::config::InferConfigError),
    #[error("the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("the pod watcher's thread")]
    Thread(#[source] std::io::Error),
}
