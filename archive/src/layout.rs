//! Where everything lives in the archive: one key per object, computed from what the
//! object holds, never from when it was uploaded.
//!
//! Rules:
//! - Everything is under `PREFIX/podcap/v1/CLUSTER/`. A node's segments are under
//!   `nodes/NODE/YYYY-MM-DD/HH/` (UTC, the hour of the segment's first packet), named
//!   `FIRST_NS-SEQ` (20 and 10 digits: listed in time order); `.pcapng.zst` is the data,
//!   `.json` its manifest, `.gap.json` a segment the node gave up before it was uploaded.
//!   Snapshots are `snapshots/NAME/NODE.*`, recording iterations
//!   `recordings/JOB/ITERATION/NODE.*`.
//! - A key depends only on the object's identity (node, first packet, sequence number; a
//!   snapshot's or job's name), so an upload repeated after a crash goes to the same key
//!   and is recognised there.
//! - A window `[from, to)` maps to one key range per node, the hours from
//!   `from - LOOKBACK` to `to` ([`Layout::node_range`]; keys sort in time order): a segment is
//!   filed under the hour it starts in, and sensors that archive close a segment within
//!   [`LOOKBACK`] of its first packet (`--segment-time` at most an hour).
//! - Names are checked before they become keys: a cluster, node, snapshot, job or
//!   iteration name is `[A-Za-z0-9._-]`, 1 to 253 bytes, not `.` or `..`.
use object_store::path::Path;

/// The version of the layout, part of every key.
pub const LAYOUT: &str = "podcap/v1";

/// How far before a window's start a segment it overlaps may have started.
pub const LOOKBACK_NS: u64 = 3_600_000_000_000;

const HOUR_NS: u64 = 3_600_000_000_000;

/// A name that cannot be part of a key.
#[derive(Debug, thiserror::Error)]
#[error("{what} {name:?} cannot name an archive folder: use 1 to 253 of A-Z a-z 0-9 . _ -")]
pub struct BadName {
    pub what: &'static str,
    pub name: String,
}

/// Checks a name for use in keys.
pub fn check_name(what: &'static str, name: &str) -> Result<(), BadName> {
    let fine = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(BadName {
            what,
            name: name.to_owned(),
        })
    }
}

/// The keys of one archived object: its data and its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKeys {
    pub data: Path,
    pub manifest: Path,
}

/// The keys of one cluster's archive (under the store's own prefix).
#[derive(Clone, Debug)]
pub struct Layout {
    cluster: String,
}

impl Layout {
    pub fn new(cluster: &str) -> Result<Self, BadName> {
        check_name("cluster", cluster)?;
        Ok(Self {
            cluster: cluster.to_owned(),
        })
    }

    #[must_use]
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn root(&self) -> String {
        format!("{LAYOUT}/{}", self.cluster)
    }

    /// The folder of every node's segments.
    #[must_use]
    pub fn nodes(&self) -> Path {
        Path::from(format!("{}/nodes", self.root()))
    }

    /// The key range of one node's segments that may hold packets in `[from, to)`: after
    /// the folder of the hour [`LOOKBACK_NS`] before `from`, before the folder of the hour
    /// after `to`'s (keys sort in time order: zero-padded dates, hours and names).
    #[must_use]
    pub fn node_range(&self, node: &str, from: u64, to: u64) -> (Path, Path) {
        let first = hour_start(from.saturating_sub(LOOKBACK_NS));
        let last = hour_start(to.saturating_sub(1).max(from));
        let folder = |hour: u64| Path::from(format!("{}/nodes/{node}/{}", self.root(), hour_folder(hour)));
        // A folder's own key sorts before every key in it.
        (folder(first), folder(last.saturating_add(HOUR_NS)))
    }

    /// The folder of one node's segments.
    #[must_use]
    pub fn node(&self, node: &str) -> Path {
        Path::from(format!("{}/nodes/{node}", self.root()))
    }

    /// The folder of one node's segments of the hour that starts at `hour_ns`.
    #[must_use]
    pub fn hour(&self, node: &str, hour_ns: u64) -> Path {
        Path::from(format!("{}/nodes/{node}/{}", self.root(), hour_folder(hour_ns)))
    }

    fn segment_stem(&self, node: &str, first_ns: u64, seq: u64) -> String {
        format!(
            "{}/nodes/{node}/{}/{first_ns:020}-{seq:010}",
            self.root(),
            hour_folder(first_ns)
        )
    }

    /// A segment's data and manifest.
    #[must_use]
    pub fn segment(&self, node: &str, first_ns: u64, seq: u64) -> ObjectKeys {
        let stem = self.segment_stem(node, first_ns, seq);
        ObjectKeys {
            data: Path::from(format!("{stem}.pcapng.zst")),
            manifest: Path::from(format!("{stem}.json")),
        }
    }

    /// The record of a segment the node gave up before it was uploaded.
    #[must_use]
    pub fn gap(&self, node: &str, first_ns: u64, seq: u64) -> Path {
        Path::from(format!("{}.gap.json", self.segment_stem(node, first_ns, seq)))
    }

    /// The folder of every snapshot.
    #[must_use]
    pub fn snapshots(&self) -> Path {
        Path::from(format!("{}/snapshots", self.root()))
    }

    /// One node's part of a snapshot.
    #[must_use]
    pub fn snapshot(&self, name: &str, node: &str) -> ObjectKeys {
        let stem = format!("{}/snapshots/{name}/{node}", self.root());
        ObjectKeys {
            data: Path::from(format!("{stem}.pcapng.zst")),
            manifest: Path::from(format!("{stem}.json")),
        }
    }

    /// The folder of every recording job.
    #[must_use]
    pub fn recordings(&self) -> Path {
        Path::from(format!("{}/recordings", self.root()))
    }

    /// One node's part of a recording job's iteration.
    #[must_use]
    pub fn recording(&self, job: &str, iteration: &str, node: &str) -> ObjectKeys {
        let stem = format!("{}/recordings/{job}/{iteration}/{node}", self.root());
        ObjectKeys {
            data: Path::from(format!("{stem}.pcapng.zst")),
            manifest: Path::from(format!("{stem}.json")),
        }
    }
}

/// `YYYY-MM-DD/HH` of the hour `ns` falls in (UTC).
#[must_use]
pub fn hour_folder(ns: u64) -> String {
    let text = podcap_format::units::format_rfc3339(ns);
    // `2026-11-30T13:05:00Z`
    format!("{}/{}", &text[..10], &text[11..13])
}

/// The start of the hour `ns` falls in.
#[must_use]
pub fn hour_start(ns: u64) -> u64 {
    ns / HOUR_NS * HOUR_NS
}

/// Whether a key is a segment's manifest (not its data, not a gap). Keys are podcap's own,
/// lower case.
#[must_use]
#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "podcap's own lower-case keys"
)]
pub fn is_segment_manifest(key: &Path) -> bool {
    let name = key.filename().unwrap_or_default();
    name.ends_with(".json") && !name.ends_with(".gap.json")
}

/// Whether a key is a manifest of any kind (segment, snapshot, recording) or a gap.
#[must_use]
#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "podcap's own lower-case keys"
)]
pub fn is_manifest(key: &Path) -> bool {
    key.filename().is_some_and(|n| n.ends_with(".json"))
}

/// Whether a key is a gap record.
#[must_use]
pub fn is_gap(key: &Path) -> bool {
    key.filename().is_some_and(|n| n.ends_with(".gap.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30T13:05:00Z.
    const T: u64 = 1_796_043_900_000_000_000;

    #[test]
    fn keys_name_the_hour_node_first_packet_and_sequence() {
        let layout = Layout::new("prod-eu").unwrap();
        let keys = layout.segment("node-1", T, 42);
        assert_eq!(
            keys.data.as_ref(),
            format!("podcap/v1/prod-eu/nodes/node-1/2026-11-30/13/{T:020}-0000000042.pcapng.zst")
        );
        assert_eq!(
            keys.manifest.as_ref(),
            format!("podcap/v1/prod-eu/nodes/node-1/2026-11-30/13/{T:020}-0000000042.json")
        );
        assert!(is_segment_manifest(&keys.manifest));
        assert!(!is_segment_manifest(&keys.data));
        let gap = layout.gap("node-1", T, 42);
        assert!(is_gap(&gap) && !is_segment_manifest(&gap));
        assert_eq!(
            layout.snapshot("incident-7", "node-1").manifest.as_ref(),
            "podcap/v1/prod-eu/snapshots/incident-7/node-1.json"
        );
        assert_eq!(
            layout
                .recording("nightly", "20261130T020000Z", "node-1")
                .data
                .as_ref(),
            "podcap/v1/prod-eu/recordings/nightly/20261130T020000Z/node-1.pcapng.zst"
        );
    }

    #[test]
    fn a_window_maps_to_the_keys_of_its_hours_and_the_one_before() {
        let layout = Layout::new("prod").unwrap();
        let hour = hour_start(T);
        let key = |hour: u64, first: u64| layout.segment("n1", first.max(hour), 7).manifest;
        let inside = |(after, before): &(Path, Path), key: &Path| {
            after.as_ref() < key.as_ref() && key.as_ref() < before.as_ref()
        };
        // 13:05 to 13:10: the hour before (a segment started at 12:59) and 13.
        let range = layout.node_range("n1", T, T + 300_000_000_000);
        assert!(inside(&range, &key(hour - HOUR_NS, 0)));
        assert!(inside(&range, &key(hour, hour + HOUR_NS - 1)));
        assert!(!inside(&range, &key(hour - 2 * HOUR_NS, hour - HOUR_NS - 1)));
        assert!(!inside(&range, &key(hour + HOUR_NS, 0)));
        // 13:05 to 15:00 exactly: 15 is out, nothing in it is before 15:00.
        let range = layout.node_range("n1", T, hour + 2 * HOUR_NS);
        assert!(inside(&range, &key(hour + HOUR_NS, 0)));
        assert!(!inside(&range, &key(hour + 2 * HOUR_NS, 0)));
        // Another node's keys are never in the range; a day's last hour goes on to the next.
        assert!(!inside(&range, &layout.segment("n2", hour, 1).manifest));
        let midnight = hour_start(T) / (24 * HOUR_NS) * (24 * HOUR_NS) + 24 * HOUR_NS;
        let range = layout.node_range("n1", midnight - HOUR_NS, midnight + HOUR_NS);
        assert!(inside(&range, &key(midnight - HOUR_NS, 0)));
        assert!(inside(&range, &key(midnight, 0)));
        assert!(!inside(&range, &key(midnight + HOUR_NS, 0)));
        assert_eq!(
            layout.node_range("n1", 0, 1).0.as_ref(),
            "podcap/v1/prod/nodes/n1/1970-01-01/00"
        );
    }

    #[test]
    fn names_that_would_escape_or_split_a_folder_are_refused() {
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(254)] {
            assert!(check_name("node", bad).is_err(), "{bad:?}");
        }
        for good in ["node-1", "ip-10-0-0-1.ec2.internal", "a_b"] {
            check_name("node", good).unwrap();
        }
        let error = Layout::new("../etc").unwrap_err().to_string();
        assert!(error.contains("cluster \"../etc\""), "{error}");
    }
}
