//! `podcap snapshot create | list | delete`: kept snapshots across the sensors.
//!
//! Rules: a snapshot is made on each sensor asked (all, or `--node`s) for the same window,
//! cut at the same instants; each sensor answers for itself, so the report names every
//! node that made it and every node that did not, with why, and the exit status is
//! non-zero unless all made it. `list` groups what the sensors keep by name and shows the
//! failures the sensors remember; a sensor that cannot be asked is named, never skipped
//! silently. `delete` deletes on every sensor holding the name; no holder is an error.
//! The table's times are RFC 3339 to the second; its `AGE` is since the snapshot was made
//! (the earliest node's), as kubectl prints ages.
//!
//! The subcommand's flags are here too; `commands.rs` parses the shared ones.
use std::{collections::BTreeMap, fmt::Write as _, process::ExitCode};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use podcap_api::{SnapshotListing, SnapshotManifest, SnapshotRequest, SnapshotSelection};
use podcap_format::units;
use serde_json::Value;

use super::{check_name, reach, Connection, SelectArgs, WindowArgs};
use crate::{
    discovery::Role,
    output::Output,
    reached::Reached,
    source::Refused,
    table::{render, Row},
};

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per run")]
pub(super) enum SnapshotAction {
    /// Copy a window (with a selection) of every sensor's store, or the named nodes', into
    /// a snapshot NAME kept on each node until deleted or expired.
    Create {
        /// Its name: letters, digits, '.', '_' or '-' (at most 64), starting with a letter or
        /// digit.
        name: String,
        #[command(flatten)]
        window: WindowArgs,
        #[command(flatten)]
        select: SelectArgs,
        /// Only the sensors of these nodes (repeatable; as `podcap segments` names them).
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
        /// Delete it this long after it is made (e.g. 7d; default: kept until deleted).
        #[arg(long, value_name = "DUR")]
        expire: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// The snapshots the sensors keep: per snapshot its window, the nodes holding it,
    /// packets, size, expiry, and the nodes where making it failed, with why.
    List {
        /// `table` for people, `json` or `yaml` for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a snapshot on every sensor that holds it.
    Delete {
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub(super) fn snapshot_command(action: SnapshotAction) -> Result<ExitCode> {
    match action {
        SnapshotAction::Create {
            name,
            window,
            select,
            nodes,
            expire,
            connection,
        } => {
            // Everything is checked here first, so a typo asks no sensor at all.
            check_name(&name)?;
            if let Some(expire) = &expire {
                units::parse_duration(expire).context("--expire")?;
            }
            // One window for every node, cut at the same instants.
            let window = window.resolve(units::now_ns())?;
            let body = podcap_api::SnapshotRequest {
                name,
                last: None,
                from: Some(units::format_rfc3339_ns(window.from_ns)),
                to: Some(units::format_rfc3339_ns(window.to_ns)),
                iface: select.iface,
                filter: select.filter,
                pod: select.pod,
                namespaces: select.namespaces,
                expire,
            };
            let mut reached = reach(&connection, Role::Admin)?;
            keep_nodes(&mut reached, &nodes)?;
            create(&reached, &body)
        }
        SnapshotAction::List { output, connection } => list(&reach(&connection, Role::Read)?, output),
        SnapshotAction::Delete { name, connection } => {
            check_name(&name)?;
            delete(&reach(&connection, Role::Admin)?, &name)
        }
    }
}

/// Keeps only the sensors of `nodes` (all when empty); an unknown node is an error naming
/// the known ones.
pub(super) fn keep_nodes(reached: &mut Reached, nodes: &[String]) -> Result<()> {
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

pub(super) fn create(reached: &Reached, body: &SnapshotRequest) -> Result<ExitCode> {
    let name = &body.name;
    let token = reached.token.as_deref();
    let mut made = 0usize;
    let mut failed = reached.report_unreachable();
    for sensor in &reached.sensors {
        match sensor.post::<SnapshotManifest>("/api/v1/snapshots", token, body) {
            Ok(manifest) => {
                made += 1;
                println!(
                    "{}: kept {name}: {}, {}{}",
                    sensor.label,
                    crate::output::count(manifest.packets, "packet"),
                    units::format_size(manifest.bytes),
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

fn drops_note(manifest: &SnapshotManifest) -> String {
    let (kernel, sensor, damaged) = (
        manifest.kernel_drops,
        manifest.sensor_drops,
        manifest.damaged_parts,
    );
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
    selection: SnapshotSelection,
    /// When the first node made it (nanoseconds since the epoch).
    created_ns: Option<u64>,
    packets: u64,
    bytes: u64,
    /// Each holder and its manifest.
    nodes: Vec<(String, SnapshotManifest)>,
    /// Nodes where making it failed, with why.
    failed: Vec<(String, String)>,
    /// Nodes where it is damaged, with how.
    damaged: Vec<(String, String)>,
}

/// Each node's budget: (node, used, max).
type Budget = (String, u64, u64);

pub(super) fn list(reached: &Reached, output: crate::output::Output) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut listings = Vec::new();
    let mut failed_sensors: Vec<(String, String)> = reached.unreachable.clone();
    for sensor in &reached.sensors {
        match sensor.get::<SnapshotListing>("/api/v1/snapshots", token) {
            Ok(listing) => listings.push((sensor.label.clone(), listing)),
            Err(e) => failed_sensors.push((sensor.label.clone(), format!("{e:#}"))),
        }
    }
    let (all, budgets) = gather(listings);
    if output.structured() {
        let snapshots: Vec<Value> = all
            .values()
            .map(|a| {
                serde_json::json!({
                    "name": a.name, "from": a.from, "to": a.to, "expires": a.expires,
                    "selection": a.selection, "packets": a.packets, "bytes": a.bytes,
                    "nodes": a.nodes.iter().map(|(node, m)| serde_json::json!({
                        "node": node, "packets": m.packets, "bytes": m.bytes, "sha256": m.sha256,
                        "kernelDrops": m.kernel_drops, "sensorDrops": m.sensor_drops,
                    })).collect::<Vec<_>>(),
                    "failed": a.failed.iter().map(|(node, reason)| serde_json::json!({"node": node, "reason": reason})).collect::<Vec<_>>(),
                    "damaged": a.damaged.iter().map(|(node, reason)| serde_json::json!({"node": node, "reason": reason})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let budgets: Vec<Value> = budgets
            .iter()
            .map(|(node, used, max)| serde_json::json!({"node": node, "usedBytes": used, "maxBytes": max}))
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
        print!(
            "{}",
            table(
                &all,
                reached.sensors.len() + reached.unreachable.len(),
                units::now_ns()
            )
        );
        for (node, used, max) in &budgets {
            println!(
                "{node}: {} of {} used (--snapshot-max-size)",
                units::format_size(*used),
                units::format_size(*max)
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

/// What every node keeps, by snapshot name, and each node's budget.
fn gather(listings: Vec<(String, SnapshotListing)>) -> (BTreeMap<String, Across>, Vec<Budget>) {
    let mut all: BTreeMap<String, Across> = BTreeMap::new();
    let mut budgets = Vec::new();
    for (node, listing) in listings {
        budgets.push((node.clone(), listing.used_bytes, listing.max_bytes));
        for manifest in listing.snapshots {
            let across = entry(&mut all, &manifest.name);
            if across.nodes.is_empty() {
                across.from.clone_from(&manifest.from);
                across.to.clone_from(&manifest.to);
                across.expires.clone_from(&manifest.expires);
                across.selection = manifest.selection.clone();
            }
            if let Ok(created) = units::parse_rfc3339(&manifest.created) {
                across.created_ns = Some(across.created_ns.map_or(created, |c| c.min(created)));
            }
            across.packets = across.packets.saturating_add(manifest.packets);
            across.bytes = across.bytes.saturating_add(manifest.bytes);
            across.nodes.push((node.clone(), manifest));
        }
        for failure in listing.failed {
            entry(&mut all, &failure.name)
                .failed
                .push((node.clone(), failure.reason));
        }
        for damage in listing.damaged {
            entry(&mut all, &damage.name)
                .damaged
                .push((node.clone(), damage.reason));
        }
    }
    (all, budgets)
}

/// The table of `all` over `sensors` sensors, ages at `now_ns`.
fn table(all: &BTreeMap<String, Across>, sensors: usize, now_ns: u64) -> String {
    if all.is_empty() {
        return "no snapshots\n".to_owned();
    }
    let rows: Vec<Row> = all
        .values()
        .map(|across| {
            let cells = vec![
                across.name.clone(),
                if across.nodes.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{} .. {}", short_time(&across.from), short_time(&across.to))
                },
                format!("{}/{sensors}", across.nodes.len()),
                across.packets.to_string(),
                units::format_size(across.bytes),
                across
                    .expires
                    .as_deref()
                    .map_or_else(|| "never".to_owned(), short_time),
                across
                    .created_ns
                    .map_or_else(|| "-".to_owned(), |then| crate::age::format_age(now_ns, then)),
            ];
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
            Row { cells, notes }
        })
        .collect();
    render(
        &[
            "NAME",
            "WINDOW (UTC)",
            "NODES",
            "PACKETS",
            "SIZE",
            "EXPIRES",
            "AGE",
        ],
        &rows,
    )
}

/// An RFC 3339 time to the second, for a table.
fn short_time(time: &str) -> String {
    units::parse_rfc3339(time).map_or_else(|_| time.to_owned(), units::format_rfc3339)
}

pub(super) fn delete(reached: &Reached, name: &str) -> Result<ExitCode> {
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

fn entry<'a>(all: &'a mut BTreeMap<String, Across>, name: &str) -> &'a mut Across {
    all.entry(name.to_owned()).or_insert_with(|| Across {
        name: name.to_owned(),
        ..Across::default()
    })
}

#[cfg(test)]
mod tests {
    use podcap_api::{SnapshotFailure, SnapshotListing, SnapshotManifest};

    use super::*;

    fn manifest(name: &str, created: &str) -> SnapshotManifest {
        SnapshotManifest {
            name: name.to_owned(),
            from: "2026-12-07T10:00:00.123456789Z".to_owned(),
            to: "2026-12-07T10:15:00Z".to_owned(),
            selection: SnapshotSelection::default(),
            created: created.to_owned(),
            expires: Some("2026-12-14T10:15:00.5Z".to_owned()),
            packets: 60,
            bytes: 6000,
            sha256: "00".repeat(32),
            secrets: 0,
            sha256_without_secrets: None,
            kernel_drops: 0,
            sensor_drops: 0,
            damaged_parts: 0,
            sensor_version: "0.1.0".to_owned(),
        }
    }

    fn listing(snapshots: Vec<SnapshotManifest>) -> SnapshotListing {
        SnapshotListing {
            snapshots,
            failed: Vec::new(),
            damaged: Vec::new(),
            max_bytes: 1_000_000,
            used_bytes: 6000,
        }
    }

    #[test]
    fn the_list_prints_rfc3339_times_and_the_age_since_the_first_node_made_it() {
        let now = units::parse_rfc3339("2026-12-07T13:20:00Z").unwrap();
        let mut b = listing(vec![manifest("inc", "2026-12-07T10:15:05Z")]);
        b.failed.push(SnapshotFailure {
            name: "other".to_owned(),
            at: "2026-12-07T11:00:00Z".to_owned(),
            reason: "no room".to_owned(),
        });
        let (all, budgets) = gather(vec![
            (
                "node-a".to_owned(),
                listing(vec![manifest("inc", "2026-12-07T10:15:01Z")]),
            ),
            ("node-b".to_owned(), b),
        ]);
        assert_eq!(budgets[1], ("node-b".to_owned(), 6000, 1_000_000));
        let text = table(&all, 3, now);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["NAME", "WINDOW", "(UTC)", "NODES", "PACKETS", "SIZE", "EXPIRES", "AGE"],
            "{text}"
        );
        // 3 h 4 min 59 s after node-a made it: kubectl's 3h4m.
        assert_eq!(
            lines[1],
            [
                "inc",
                "2026-12-07T10:00:00Z",
                "..",
                "2026-12-07T10:15:00Z",
                "2/3",
                "120",
                "12.0",
                "KB",
                "2026-12-14T10:15:00Z",
                "3h4m"
            ],
            "{text}"
        );
        assert_eq!(lines[2], ["held", "by:", "node-a,", "node-b"], "{text}");
        // Made nowhere: no window, no age.
        assert_eq!(
            lines[3],
            ["other", "-", "0/3", "0", "0", "B", "never", "-"],
            "{text}"
        );
        assert_eq!(lines[4], ["failed", "on", "node-b:", "no", "room"], "{text}");
    }
}
