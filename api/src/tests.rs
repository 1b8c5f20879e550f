//! The wire format, as the sensor always wrote it, reads into these types and writes back
//! the same JSON (field names, left-out fields, nulls).
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use crate::{RecordingListing, Segment, Settings, SnapshotListing, Status};

fn round_trip<T: DeserializeOwned + Serialize>(wire: &Value) {
    let typed: T = serde_json::from_value(wire.clone()).unwrap();
    assert_eq!(&serde_json::to_value(&typed).unwrap(), wire);
}

#[test]
fn status_with_absent_sections_as_nulls() {
    round_trip::<Status>(&json!({
        "version": "0.1.0", "mode": "standalone", "interfaces": ["eth0"],
        "settings": null, "recording": "disk-full", "ready": false,
        "notReadyBecause": "writes to the store fail",
        "store": {"segments": 2, "bytes": 10, "quarantinedSegments": 0,
                  "oldestPacket": "2026-12-07T00:00:00Z", "newestPacket": null},
        "disk": {"freeBytes": 1, "totalBytes": 2, "minFreeBytes": 0, "earlyRetiredSegments": 0,
                 "earlyRetiredBytes": 0, "failing": {"since": "2026-12-07T00:00:00Z", "error": "ENOSPC", "diskFull": true}},
        "drops": {"kernel": 1, "ring": 2, "disk": 3},
        "recovery": {"repaired": [], "quarantined": [], "ignored": ["x"], "rebuilt": [], "missing": []},
        "tls": {"probed": 2, "unsupported": {"boringssl 1": 1}, "secretsWritten": 4},
        "archive": null,
    }));
}

#[test]
fn settings_of_a_dry_run_and_of_a_plain_read() {
    let sources = json!({"source": "flag", "since": "2026-12-07T00:00:00Z"});
    let sources = json!({"enabled": sources, "maxTime": sources, "maxSize": sources});
    round_trip::<Settings>(
        &json!({"enabled": true, "maxTime": "1h", "maxSize": "500MB", "sources": sources}),
    );
    round_trip::<Settings>(
        &json!({"enabled": true, "maxTime": "1h", "maxSize": "500MB", "sources": sources,
        "dryRun": true, "wouldRetire": {"segments": 1, "bytes": 2, "packets": 3}}),
    );
}

#[test]
fn listings_and_segments() {
    round_trip::<Vec<Segment>>(
        &json!([{"name": "podcap-0000000001.pcapng", "first_ns": 1, "last_ns": 2, "packets": 3, "bytes": 4}]),
    );
    round_trip::<SnapshotListing>(&json!({"snapshots": [{"name": "a", "from": "f", "to": "t",
        "selection": {"namespaces": ["shop"]}, "created": "c", "packets": 1, "bytes": 2, "sha256": "00",
        "kernelDrops": 0, "sensorDrops": 0, "damagedParts": 0, "sensorVersion": "0.1.0"}],
        "failed": [{"name": "b", "at": "t", "reason": "r"}], "damaged": [], "maxBytes": 9, "usedBytes": 2}));
    round_trip::<RecordingListing>(
        &json!({"jobs": [{"job": {"name": "n", "days": 1, "duration": "1h", "created": "c"},
        "state": "scheduled", "nextStart": "s", "iterations": [{"iteration": 0, "start": "s", "end": "e",
        "packets": 0, "bytes": 0, "budgetDrops": 0, "missedSegments": 0, "notHeldSeconds": 0}],
        "packets": 0, "bytes": 0, "drops": 0}], "maxBytes": 1, "usedBytes": 0}),
    );
}

#[test]
fn request_bodies_refuse_unknown_fields() {
    assert!(serde_json::from_value::<crate::SettingsChange>(json!({"maxSise": "1GB"})).is_err());
    assert!(serde_json::from_value::<crate::SnapshotRequest>(json!({"name": "a", "lats": "5m"})).is_err());
}
