//! `podcap snapshot create | list | delete`: kept snapshots across the sensors.
//!
//! Rules: a snapshot is made on each sensor asked (all, or `--node`s) for the same window,
//! cut at the same instants; each sensor answers for itself, so the report names every
//! node that made it and every node that did not, with why, and the exit status is
//! non-zero unless all made it. `list` groups what the sensors keep by name and shows the
//! failures the sensors remember; a sensor that cannot be asked is named, never skipped
//! silently. `delete` deletes on every sensor holding the name; no holder is an error.
use std::{fmt::Write as _, process::ExitCode};

use anyhow::{bail, Result};
use podcap_format::units;
use serde_json::Value;

use crate::{
    app::Reached,
    source::Refused,
    table::{render, Row},
};

/// Keeps only the sensors of `nodes` (all when empty); an unknown node is an error naming
/// the known ones.
pub(crate) fn keep_nodes(reached: &mut Reached, nodes: &[String]) -> Result<()> {
    if nodes.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = reached
        .sensors
        .iter()
        .map(|s| s.label.as_str())
        .chain(reached.unreachable.iter().map(|(label, _)| label.as_str()))
        .collect();
    if let Some(unknown) = nodes.iter().find(|n| !known.contains(&n.as_str())) {
        bail!(
            "--node {unknown}: no sensor on that node (sensors: {})",
            known.join(", ")
        );
    }
    reached.sensors.retain(|s| nodes.contains(&s.label));
    reached.unreachable.retain(|(label, _)| nodes.contains(label));
    Ok(())
}

pub(crate) fn create(reached: &Reached, name: &str, body: &Value) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut made = 0usize;
    let mut failed = reached.report_unreachable();
    for sensor in &reached.sensors {
        match sensor.post_json("/api/v1/snapshots", token, body) {
            Ok(manifest) => {
                made += 1;
                println!(
                    "{}: kept {name}: {}, {}{}",
                    sensor.label,
                    crate::output::count(manifest["packets"].as_u64().unwrap_or(0), "packet"),
                    units::format_size(manifest["bytes"].as_u64().unwrap_or(0)),
                    drops_note(&manifest)
                );
            }
            Err(e) => {
                eprintln!("podcap: {}: snapshot {name} not made: {e:#}", sensor.label);
                failed = true;
            }
        }
    }
    if made == 0 {
        bail!("no sensor made snapshot {name}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn drops_note(manifest: &Value) -> String {
    let kernel = manifest["kernelDrops"].as_u64().unwrap_or(0);
    let sensor = manifest["sensorDrops"].as_u64().unwrap_or(0);
    let damaged = manifest["damagedParts"].as_u64().unwrap_or(0);
    let mut note = String::new();
    if kernel.saturating_add(sensor) > 0 {
        let _ = write!(
            note,
            "; the window lost {} (kernel {kernel}, podcap {sensor})",
            crate::output::count(kernel.saturating_add(sensor), "packet")
        );
    }
    if damaged > 0 {
        let _ = write!(
            note,
            "; {damaged} damaged parts of the store skipped (noted in the file)"
        );
    }
    note
}

/// One snapshot as the cluster holds it.
#[derive(Default)]
struct Across {
    name: String,
    from: String,
    to: String,
    expires: Option<String>,
    selection: Value,
    packets: u64,
    bytes: u64,
    /// Each holder and its manifest.
    nodes: Vec<(String, Value)>,
    /// Nodes where making it failed, with why.
    failed: Vec<(String, String)>,
    /// Nodes where it is damaged, with how.
    damaged: Vec<(String, String)>,
}

pub(crate) fn list(reached: &Reached, output: crate::output::Output) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut all: std::collections::BTreeMap<String, Across> = std::collections::BTreeMap::new();
    let mut budgets = Vec::new();
    let mut failed_sensors: Vec<(String, String)> = reached.unreachable.clone();
    for sensor in &reached.sensors {
        let listing = match sensor.get_json("/api/v1/snapshots", token) {
            Ok(listing) => listing,
            Err(e) => {
                failed_sensors.push((sensor.label.clone(), format!("{e:#}")));
                continue;
            }
        };
        budgets.push(serde_json::json!({
            "node": sensor.label,
            "usedBytes": listing["usedBytes"],
            "maxBytes": listing["maxBytes"],
        }));
        for manifest in listing["snapshots"].as_array().into_iter().flatten() {
            let name = manifest["name"].as_str().unwrap_or_default();
            let across = entry(&mut all, name);
            if across.nodes.is_empty() {
                manifest["from"]
                    .as_str()
                    .unwrap_or_default()
                    .clone_into(&mut across.from);
                manifest["to"]
                    .as_str()
                    .unwrap_or_default()
                    .clone_into(&mut across.to);
                across.expires = manifest["expires"].as_str().map(str::to_owned);
                across.selection = manifest["selection"].clone();
            }
            across.packets = across
                .packets
                .saturating_add(manifest["packets"].as_u64().unwrap_or(0));
            across.bytes = across
                .bytes
                .saturating_add(manifest["bytes"].as_u64().unwrap_or(0));
            across.nodes.push((sensor.label.clone(), manifest.clone()));
        }
        for failure in listing["failed"].as_array().into_iter().flatten() {
            let name = failure["name"].as_str().unwrap_or_default();
            let reason = failure["reason"].as_str().unwrap_or_default().to_owned();
            entry(&mut all, name).failed.push((sensor.label.clone(), reason));
        }
        for damage in listing["damaged"].as_array().into_iter().flatten() {
            let name = damage["name"].as_str().unwrap_or_default();
            let reason = damage["reason"].as_str().unwrap_or_default().to_owned();
            entry(&mut all, name).damaged.push((sensor.label.clone(), reason));
        }
    }
    if output.structured() {
        let snapshots: Vec<Value> = all
            .values()
            .map(|a| {
                serde_json::json!({
                    "name": a.name, "from": a.from, "to": a.to, "expires": a.expires,
                    "selection": a.selection, "packets": a.packets, "bytes": a.bytes,
                    "nodes": a.nodes.iter().map(|(node, m)| serde_json::json!({
                        "node": node, "packets": m["packets"], "bytes": m["bytes"], "sha256": m["sha256"],
                        "kernelDrops": m["kernelDrops"], "sensorDrops": m["sensorDrops"],
                    })).collect::<Vec<_>>(),
                    "failed": a.failed.iter().map(|(node, reason)| serde_json::json!({"node": node, "reason": reason})).collect::<Vec<_>>(),
                    "damaged": a.damaged.iter().map(|(node, reason)| serde_json::json!({"node": node, "reason": reason})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let unreachable: Vec<Value> = failed_sensors
            .iter()
            .map(|(node, reason)| serde_json::json!({"node": node, "reason": reason}))
            .collect();
        crate::output::print(
            &serde_json::json!({
                "snapshots": snapshots, "budgets": budgets, "unreachable": unreachable,
            }),
            output,
        )?;
    } else {
        print_table(&all, reached.sensors.len() + reached.unreachable.len());
        for budget in &budgets {
            println!(
                "{}: {} of {} used (--snapshot-max-size)",
                budget["node"].as_str().unwrap_or_default(),
                units::format_size(budget["usedBytes"].as_u64().unwrap_or(0)),
                units::format_size(budget["maxBytes"].as_u64().unwrap_or(0))
            );
        }
    }
    for (node, reason) in &failed_sensors {
        eprintln!("podcap: sensor {node} failed: {reason}");
    }
    Ok(if failed_sensors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(all: &std::collections::BTreeMap<String, Across>, sensors: usize) {
    if all.is_empty() {
        println!("no snapshots");
        return;
    }
    let rows: Vec<[String; 6]> = all
        .values()
        .map(|a| {
            [
                a.name.clone(),
                if a.nodes.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{} .. {}", short_time(&a.from), short_time(&a.to))
                },
                format!("{}/{sensors}", a.nodes.len()),
                a.packets.to_string(),
                units::format_size(a.bytes),
                a.expires
                    .as_deref()
                    .map_or_else(|| "never".to_owned(), short_time),
            ]
        })
        .collect();
    let rows: Vec<Row> = rows
        .into_iter()
        .zip(all.values())
        .map(|(cells, across)| {
            let holders: Vec<&str> = across.nodes.iter().map(|(node, _)| node.as_str()).collect();
            let mut notes = Vec::new();
            if !holders.is_empty() {
                notes.push(format!("held by: {}", holders.join(", ")));
            }
            notes.extend(
                across
                    .failed
                    .iter()
                    .map(|(node, reason)| format!("failed on {node}: {reason}")),
            );
            notes.extend(
                across
                    .damaged
                    .iter()
                    .map(|(node, reason)| format!("damaged on {node}: {reason}")),
            );
            Row {
                cells: cells.to_vec(),
                notes,
            }
        })
        .collect();
    print!(
        "{}",
        render(
            &["NAME", "WINDOW (UTC)", "NODES", "PACKETS", "SIZE", "EXPIRES"],
            &rows
        )
    );
}

/// An RFC 3339 time to the second, for a table.
fn short_time(time: &str) -> String {
    units::parse_rfc3339(time).map_or_else(|_| time.to_owned(), units::format_rfc3339)
}

pub(crate) fn delete(reached: &Reached, name: &str) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut failed = reached.report_unreachable();
    let mut deleted = 0usize;
    for sensor in &reached.sensors {
        match sensor.delete(&format!("/api/v1/snapshots/{name}"), token) {
            Ok(()) => {
                deleted += 1;
                println!("{}: deleted {name}", sensor.label);
            }
            Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 404) => {}
            Err(e) => {
                eprintln!("podcap: {}: {e:#}", sensor.label);
                failed = true;
            }
        }
    }
    if deleted == 0 && !failed {
        bail!("no sensor holds snapshot {name} (podcap snapshot list shows what they keep)");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn entry<'a>(all: &'a mut std::collections::BTreeMap<String, Across>, name: &str) -> &'a mut Across {
    all.entry(name.to_owned()).or_insert_with(|| Across {
        name: name.to_owned(),
        ..Across::default()
    })
}
