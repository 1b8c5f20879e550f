//! `podcap archive ls`: what an archive holds, from listings only.
use std::collections::BTreeMap;

use anyhow::Result;
use object_store::path::Path;
use podcap_archive::{
    layout::{self, is_gap, is_segment_manifest},
    Archive,
};
use podcap_format::units;

use super::nodes;
use crate::table::{render, Row};

/// The first packet time a segment's key names (`FIRST_NS-SEQ.json`).
fn first_ns_of(key: &Path) -> Option<u64> {
    key.filename()?.split('-').next()?.parse().ok()
}

/// One row per node and hour (segments, stored bytes, gaps), then the snapshots and
/// recording jobs kept, from listings only (no object is read).
pub async fn list(archive: &Archive, from: u64, to: u64, only: &[String]) -> Result<String> {
    let layout = archive.layout();
    let mut nodes = nodes(archive).await?;
    if !only.is_empty() {
        nodes.retain(|n| only.contains(n));
    }
    let mut rows = Vec::new();
    for node in &nodes {
        // (segments, bytes, gaps) per hour, by the hour's start.
        let mut hours: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
        let (after, before) = layout.node_range(node, from, to);
        let (listed, _) = archive.list_range(&layout.node(node), &after, &before).await?;
        for meta in listed {
            let Some(first) = first_ns_of(&meta.location) else {
                continue;
            };
            if first >= to || first.saturating_add(layout::LOOKBACK_NS) < from {
                continue;
            }
            let entry = hours.entry(layout::hour_start(first)).or_default();
            if is_gap(&meta.location) {
                entry.2 += 1;
            } else if is_segment_manifest(&meta.location) {
                entry.0 += 1;
            } else {
                entry.1 += meta.size;
            }
        }
        for (hour, (segments, bytes, gaps)) in hours {
            rows.push(Row {
                cells: vec![
                    node.clone(),
                    units::format_rfc3339(hour),
                    segments.to_string(),
                    units::format_size(bytes),
                    gaps.to_string(),
                ],
                notes: Vec::new(),
            });
        }
    }
    let mut text = render(&["NODE", "HOUR", "SEGMENTS", "STORED", "GAPS"], &rows);
    for (what, prefix) in [
        ("SNAPSHOT", layout.snapshots()),
        ("RECORDING", layout.recordings()),
    ] {
        // Name -> (nodes, stored bytes).
        let mut kept: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
        for meta in archive.list(&prefix).await? {
            let key = meta.location.as_ref();
            let rest = key
                .strip_prefix(prefix.as_ref())
                .unwrap_or_default()
                .trim_start_matches('/');
            let name = rest.split('/').next().unwrap_or_default().to_owned();
            let entry = kept.entry(name).or_default();
            if let Some(node) = meta.location.filename().and_then(|f| f.strip_suffix(".json")) {
                entry.0.push(node.to_owned());
            } else {
                entry.1 += meta.size;
            }
        }
        if kept.is_empty() {
            continue;
        }
        let rows: Vec<Row> = kept
            .into_iter()
            .map(|(name, (mut nodes, bytes))| {
                nodes.sort();
                nodes.dedup();
                Row {
                    cells: vec![name, nodes.join(","), units::format_size(bytes)],
                    notes: Vec::new(),
                }
            })
            .collect();
        text.push('\n');
        text.push_str(&render(&[what, "NODES", "STORED"], &rows));
    }
    Ok(text)
}
