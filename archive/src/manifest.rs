//! What an archived object holds, said in a small JSON document beside it (written after
//! the data, so a manifest present means its data is complete), and what a gap says.
//!
//! Rules:
//! - A manifest names its data object, the time range of its packets (ns since the epoch,
//!   and RFC 3339 for people), packets, bytes of pcapng, bytes stored, the drops the
//!   segment's statistics blocks count, its interfaces with their pod, namespace and node,
//!   the SHA-256 of the pcapng and of the stored object, and the sensor's version.
//! - A reader trusts nothing in it without checking: the SHA-256 of what it downloads, the
//!   size, and times that are in order. Unknown fields are ignored (newer writers), and
//!   `format` says which layout wrote it.
//! - A gap is the same document with `kind: gap`, no data object, and a reason.
use serde::{Deserialize, Serialize};

/// The format every manifest of this layout carries.
pub const FORMAT: &str = "podcap-archive/1";

/// What an archived object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A finished segment of a node's rolling store.
    Segment,
    /// A node's part of a kept snapshot.
    Snapshot,
    /// A node's part of a recording job's iteration.
    Recording,
    /// A segment the node gave up before it was uploaded.
    Gap,
}

/// An interface of an archived object, with its Kubernetes context when it has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Interface {
    /// An interface as a segment declares it: a pod's is named `NAMESPACE/POD/IFACE`
    /// and described with `pod=NAMESPACE/POD` (the sensor's Kubernetes mode).
    #[must_use]
    pub fn from_description(name: &str, description: &str) -> Self {
        let pod = description
            .split_whitespace()
            .find_map(|word| word.strip_prefix("pod="))
            .and_then(|pod| pod.split_once('/'));
        Self {
            name: name.to_owned(),
            description: description.to_owned(),
            namespace: pod.map(|(namespace, _)| namespace.to_owned()),
            pod: pod.map(|(_, pod)| pod.to_owned()),
        }
    }
}

/// The document beside every archived object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub kind: Kind,
    pub cluster: String,
    pub node: String,
    /// The data object's key (none for a gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The segment's sequence number in its node's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// A snapshot's or recording job's name, and a job's iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration: Option<String>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub from: String,
    pub to: String,
    pub packets: u64,
    /// Bytes of the pcapng (what a reader gets once it is decompressed).
    pub bytes: u64,
    /// Bytes of the stored object (zstd).
    #[serde(default)]
    pub stored_bytes: u64,
    /// Packets the object's time lost, as its statistics blocks count them.
    #[serde(default)]
    pub drops: u64,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// SHA-256 of the pcapng, hex.
    #[serde(default)]
    pub sha256: String,
    /// SHA-256 of the stored object, hex.
    #[serde(default)]
    pub stored_sha256: String,
    pub sensor_version: String,
    /// Why a gap is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a podcap manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error("written by a layout this podcap does not read ({0:?}; it reads {FORMAT:?})")]
    Format(String),
    #[error("its packets end ({last}) before they start ({first})")]
    Times { first: u64, last: u64 },
}

impl Manifest {
    /// A manifest of `kind` for packets of `[first_ns, last_ns]`; the rest is filled in by
    /// the caller.
    #[must_use]
    pub fn new(kind: Kind, cluster: &str, node: &str, first_ns: u64, last_ns: u64) -> Self {
        Self {
            format: FORMAT.into(),
            kind,
            cluster: cluster.into(),
            node: node.into(),
            object: None,
            seq: None,
            name: None,
            iteration: None,
            first_ns,
            last_ns,
            from: podcap_format::units::format_rfc3339_ns(first_ns),
            to: podcap_format::units::format_rfc3339_ns(last_ns),
            packets: 0,
            bytes: 0,
            stored_bytes: 0,
            drops: 0,
            interfaces: Vec::new(),
            sha256: String::new(),
            stored_sha256: String::new(),
            sensor_version: env!("CARGO_PKG_VERSION").into(),
            reason: None,
        }
    }

    /// Reads and checks a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Self = serde_json::from_slice(bytes)?;
        if manifest.format != FORMAT {
            return Err(ManifestError::Format(manifest.format));
        }
        if manifest.last_ns < manifest.first_ns {
            return Err(ManifestError::Times {
                first: manifest.first_ns,
                last: manifest.last_ns,
            });
        }
        Ok(manifest)
    }

    /// The manifest as stored.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Whether its packets lie (at least partly) in `[from, to)`.
    #[must_use]
    pub fn overlaps(&self, from: u64, to: u64) -> bool {
        self.first_ns < to && self.last_ns >= from
    }
}

/// SHA-256 of `bytes`, lower-case hex.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    digest_hex(&ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// A digest, lower-case hex.
#[must_use]
pub fn digest_hex(digest: &ring::digest::Digest) -> String {
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_as_written_and_says_what_it_holds() {
        let mut m = Manifest::new(Kind::Segment, "prod", "node-1", 5, 9);
        m.seq = Some(3);
        m.interfaces.push(Interface::from_description(
            "shop/web-1/eth0",
            "node=node-1 pod=shop/web-1 uid=u containers=main labels=app=web",
        ));
        let back = Manifest::parse(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        let iface = &back.interfaces[0];
        assert_eq!(
            (iface.pod.as_deref(), iface.namespace.as_deref()),
            (Some("web-1"), Some("shop"))
        );
        assert!(
            back.overlaps(9, 10) && back.overlaps(0, 6) && !back.overlaps(10, 20) && !back.overlaps(0, 5)
        );
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(
            text.contains("\"firstNs\": 5") && text.contains("\"kind\": \"segment\""),
            "{text}"
        );
    }

    #[test]
    fn a_damaged_foreign_or_impossible_manifest_is_refused_with_its_reason() {
        assert!(Manifest::parse(b"{\"format\": ").is_err());
        let mut m = Manifest::new(Kind::Gap, "prod", "node-1", 5, 9);
        m.format = "podcap-archive/9".into();
        let error = Manifest::parse(&m.to_bytes()).unwrap_err().to_string();
        assert!(error.contains("podcap-archive/9"), "{error}");
        let mut m = Manifest::new(Kind::Gap, "prod", "node-1", 9, 9);
        m.first_ns = 10;
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::Times { .. })
        ));
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
