//! The pods and services of this node, as the Kubernetes API tells them.
//!
//! Rules:
//! - Pods are watched with the field selector `spec.nodeName=NODE`, services cluster-wide,
//!   each through kube-runtime's watcher (list, then watch from the list's version;
//!   bookmarks; a re-list after `410 Gone`; exponential backoff on errors) into a
//!   reflector store, with managed fields stripped before they are stored.
//! - After every event a new [`ClusterView`] is published on a watch channel if it
//!   differs from the last one, so consumers recompute from a whole snapshot, never from
//!   single events. A re-list replaces the store at once (kube's reflector buffers it).
//! - The view is plain data (`PodInfo`, `ServiceInfo`): selection, resolution and naming
//!   do not depend on the API types.
pub mod reconcile;
pub mod resolve;

use std::{collections::BTreeMap, net::IpAddr};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Client, ResourceExt,
};

use crate::config::targeting::Targeting;

/// A container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    /// `containerd://…`, as the kubelet reports it (empty before it starts).
    pub id: String,
}

/// A pod on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    pub containers: Vec<ContainerInfo>,
    pub labels: BTreeMap<String, String>,
}

/// A service, for names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
}

/// What the API says now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// By pod UID.
    pub pods: BTreeMap<String, PodInfo>,
    /// By (namespace, name).
    pub services: BTreeMap<(String, String), ServiceInfo>,
}

impl ClusterView {
    /// The pods `targeting` selects.
    pub fn selected<'a>(&'a self, targeting: &'a Targeting) -> impl Iterator<Item = &'a PodInfo> {
        self.pods
            .values()
            .filter(|p| targeting.selects(&p.namespace, &p.name))
    }

    /// Names for addresses, as Wireshark shows them: `pod.namespace` for pod IPs (not of
    /// hostNetwork pods, whose IP is the node's), `service.namespace.svc` for ClusterIPs.
    #[must_use]
    pub fn names(&self) -> Vec<(IpAddr, String)> {
        let mut names: Vec<(IpAddr, String)> = self
            .pods
            .values()
            .filter(|p| !p.host_network)
            .flat_map(|p| {
                p.ips
                    .iter()
                    .map(move |ip| (*ip, format!("{}.{}", p.name, p.namespace)))
            })
            .chain(self.services.values().flat_map(|s| {
                s.cluster_ips
                    .iter()
                    .map(move |ip| (*ip, format!("{}.{}.svc", s.name, s.namespace)))
            }))
            .collect();
        names.sort();
        names.dedup_by(|a, b| a.0 == b.0);
        names
    }
}

/// The plain form of a pod (`None` without a UID, which the API always sets).
#[must_use]
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let uid = pod.metadata.uid.clone()?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let ips = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect())
        .unwrap_or_default();
    let ids: BTreeMap<&str, &str> = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|list| {
            list.iter()
                .map(|c| (c.name.as_str(), c.container_id.as_deref().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Some(PodInfo {
        uid,
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ips,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        containers: spec
            .map(|s| {
                s.containers
                    .iter()
                    .map(|c| ContainerInfo {
                        name: c.name.clone(),
                        id: ids.get(c.name.as_str()).copied().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        labels: pod.labels().clone(),
    })
}

fn service_info(service: &Service) -> ServiceInfo {
    let spec = service.spec.as_ref();
    let mut cluster_ips: Vec<IpAddr> = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|ip| ip.parse().ok()).collect())
        .unwrap_or_default();
    if let Some(ip) = spec
        .and_then(|s| s.cluster_ip.as_ref())
        .and_then(|ip| ip.parse().ok())
    {
        if !cluster_ips.contains(&ip) {
            cluster_ips.push(ip);
        }
    }
    ServiceInfo {
        namespace: service.namespace().unwrap_or_default(),
        name: service.name_any(),
        cluster_ips,
    }
}

/// Watches the pods of `node` and all services until the receivers are gone, publishing
/// every changed view on `views`.
pub async fn watch(client: Client, node: &str, views: tokio::sync::watch::Sender<ClusterView>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let services: Api<Service> = Api::all(client);
    let (pod_store, pod_writer) = reflector::store();
    let (service_store, service_writer) = reflector::store();
    let pod_events = reflector(
        pod_writer,
        watcher(
            pods,
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        )
        .default_backoff()
        .modify(|pod| pod.managed_fields_mut().clear()),
    )
    .map(|event| event.map(|_| ()));
    let service_events = reflector(
        service_writer,
        watcher(services, watcher::Config::default())
            .default_backoff()
            .modify(|service| service.managed_fields_mut().clear()),
    )
    .map(|event| event.map(|_| ()));
    let mut events = std::pin::pin!(futures::stream::select(pod_events, service_events));
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            log::warn!("Kubernetes watch: {e} (retrying with backoff)");
            continue;
        }
        let view = ClusterView {
            pods: pod_store
                .state()
                .iter()
                .filter_map(|p| pod_info(p))
                .map(|p| (p.uid.clone(), p))
                .collect(),
            services: service_store
                .state()
                .iter()
                .map(|s| service_info(s))
                .map(|s| ((s.namespace.clone(), s.name.clone()), s))
                .collect(),
        };
        let changed = views.send_if_modified(|current| {
            if *current == view {
                false
            } else {
                *current = view;
                true
            }
        });
        if changed && views.is_closed() {
            return;
        }
    }
}
