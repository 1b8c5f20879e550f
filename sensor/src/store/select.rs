//! What a download selects: interfaces by name, pods by name and namespace, and packets by a
//! tcpdump filter — applied where the data is, so only the selected packets cross the
//! network.
//!
//! Rules:
//! - Pods are selected by the interface a packet was recorded on, never by address: in
//!   Kubernetes mode each pod interface is its own interface named `namespace/pod/iface`
//!   (`iface` the pod's veth or, for a hostNetwork pod, the node interface). An interface
//!   not named so (standalone mode) belongs to no pod, so a pod or namespace selection
//!   leaves it out. An IP address reused by another pod later cannot mix them up.
//! - `pod` is a regular expression on the pod's name (unanchored, as `tap.regex` is);
//!   `namespaces` are exact names, any of them.
//! - The filter is compiled by libpcap and run on each packet as recorded, exactly as
//!   `--filter` is.
use std::sync::Arc;

use regex::Regex;

use crate::filter::Filter;

/// A selection; the default selects everything.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Interfaces by exact name (`iface=a,b`).
    pub interfaces: Option<Vec<String>>,
    /// Pod names (`pod=REGEX`).
    pub pod: Option<Regex>,
    /// Namespaces (`namespace=NS`, repeatable).
    pub namespaces: Vec<String>,
    /// A tcpdump filter (`filter=EXPR`).
    pub filter: Option<Arc<Filter>>,
}

impl Selection {
    /// Only these interfaces.
    #[must_use]
    pub fn interfaces(names: Vec<String>) -> Self {
        Self {
            interfaces: Some(names),
            ..Self::default()
        }
    }

    /// Whether packets of the interface named `name` may be selected.
    #[must_use]
    pub fn wants_interface(&self, name: &str) -> bool {
        if self
            .interfaces
            .as_ref()
            .is_some_and(|names| !names.iter().any(|n| n == name))
        {
            return false;
        }
        if self.pod.is_none() && self.namespaces.is_empty() {
            return true;
        }
        let mut parts = name.splitn(3, '/');
        let (Some(namespace), Some(pod), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && self.pod.as_ref().is_none_or(|r| r.is_match(pod))
    }

    /// Whether a packet (its bytes as recorded, its length on the wire) is selected.
    #[must_use]
    pub fn wants_packet(&self, data: &[u8], original_len: u32) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(data, original_len))
    }

    /// Whether every packet is wanted without looking at it (no filter).
    #[must_use]
    pub fn needs_packets(&self) -> bool {
        self.filter.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_selected_by_their_interface_never_by_address() {
        let everything = Selection::default();
        assert!(everything.wants_interface("eth0") && everything.wants_interface("shop/web-1/eth0"));
        let shop_web = Selection {
            pod: Some(Regex::new("^web-").unwrap()),
            namespaces: vec!["shop".into(), "blog".into()],
            ..Selection::default()
        };
        for (name, wanted) in [
            ("shop/web-1/eth0", true),
            ("blog/web-2/uplink", true),
            ("shop/db-1/eth0", false),
            ("kube-system/web-1/eth0", false),
            ("web-1", false),
            ("veth-pod-a", false),
        ] {
            assert_eq!(shop_web.wants_interface(name), wanted, "{name}");
        }
        let only = Selection::interfaces(vec!["shop/web-1/eth0".into()]);
        assert!(only.wants_interface("shop/web-1/eth0") && !only.wants_interface("shop/web-2/eth0"));
    }
}
