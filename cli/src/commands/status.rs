//! `podcap status` (what every sensor is doing) and `podcap version` (the client's and
//! every sensor's version, as `kubectl version` has it).
//!
//! Rules: every sensor is asked its `/api/v1/status` at once (at most `--parallel`); a
//! sensor that does not answer is named with its reason and the exit status is non-zero,
//! the others are still shown. Tables for people; `-o json|yaml` gives each sensor's
//! status document as the sensor wrote it, under its node's name, so a script reads every
//! field the sensor has, also ones this client does not know (the one place the CLI keeps
//! an answer untyped). The table reads each document as podcap-api's `Status`; a document
//! that does not read as one (a sensor of another version) names that sensor as failed,
//! with why, and `podcap version` still reads its version (`SensorVersion`).
//! Times are RFC 3339, as every table of the CLI prints them.
use std::process::ExitCode;

use anyhow::Result;
use podcap_api::{status::ArchiveStatus, SensorVersion, Status};
use podcap_format::units;
use serde::Deserialize as _;
use serde_json::Value;

use super::{reach, Connection};
use crate::reached::{run_bounded, Reached};
use crate::{
    discovery::Role,
    output::{count, Output},
    table::{render, Row},
};

/// The client's version (`podcap --version` says the same).
const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every sensor's status document, in the order the sensors were given; the unreachable
/// ones and those that did not answer as (node, reason).
struct Answers {
    answered: Vec<(String, Value)>,
    failed: Vec<(String, String)>,
}

fn ask_everyone(reached: &Reached) -> Answers {
    let token = reached.token.as_deref();
    let sensors = &reached.sensors;
    let results = run_bounded(sensors.len(), reached.parallel, |n| {
        sensors[n].get_document("/api/v1/status", token)
    });
    let mut answers = Answers {
        answered: Vec::new(),
        failed: reached.unreachable.clone(),
    };
    for (sensor, result) in sensors.iter().zip(results) {
        match result {
            Ok(status) => answers.answered.push((sensor.label.clone(), status)),
            Err(e) => answers.failed.push((sensor.label.clone(), format!("{e:#}"))),
        }
    }
    answers
}

impl Answers {
    /// Names each sensor that did not answer on stderr; the exit status.
    fn report(&self) -> ExitCode {
        for (node, reason) in &self.failed {
            eprintln!("podcap: sensor {node} did not answer: {reason}");
        }
        if self.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    fn failed_doc(&self) -> Vec<Value> {
        self.failed
            .iter()
            .map(|(node, reason)| serde_json::json!({"node": node, "error": reason}))
            .collect()
    }
}

/// `podcap status`.
pub(super) fn status_command(connection: &Connection, output: Output) -> Result<ExitCode> {
    let reached = reach(connection, Role::Read)?;
    let mut answers = ask_everyone(&reached);
    if output.structured() {
        let nodes: Vec<Value> = answers
            .answered
            .iter()
            .map(|(node, status)| serde_json::json!({"node": node, "status": status}))
            .collect();
        crate::output::print(
            &serde_json::json!({"nodes": nodes, "failed": answers.failed_doc()}),
            output,
        )?;
    } else {
        let (statuses, unreadable) = read_statuses(std::mem::take(&mut answers.answered));
        answers.failed.extend(unreadable);
        print!("{}", status_table(&statuses));
    }
    Ok(answers.report())
}

/// A node and why it is not shown.
type Failure = (String, String);

/// Each document as a [`Status`]; those that do not read as one as (node, why).
fn read_statuses(answered: Vec<(String, Value)>) -> (Vec<(String, Status)>, Vec<Failure>) {
    let mut statuses = Vec::new();
    let mut unreadable = Vec::new();
    for (node, document) in answered {
        match serde_json::from_value::<Status>(document) {
            Ok(status) => statuses.push((node, status)),
            Err(e) => unreadable.push((
                node,
                format!(
                    "its status is not what this podcap ({CLIENT_VERSION}) reads: {e} (a sensor of another version? podcap version shows its version)"
                ),
            )),
        }
    }
    (statuses, unreadable)
}

/// One row per sensor, what needs words on lines under it.
fn status_table(statuses: &[(String, Status)]) -> String {
    let rows: Vec<Row> = statuses
        .iter()
        .map(|(node, status)| Row {
            cells: status_cells(node, status),
            notes: status_notes(status),
        })
        .collect();
    render(
        &[
            "NODE", "VERSION", "MODE", "STATE", "IFACES", "SIZE", "OLDEST", "NEWEST", "DROPS", "MAX SIZE",
            "MAX TIME",
        ],
        &rows,
    )
}

/// An RFC 3339 time of the sensor's to the second, as every table writes times; as given
/// when it does not read as one.
fn table_time(time: Option<&str>) -> String {
    time.map_or_else(
        || "-".to_owned(),
        |t| units::parse_rfc3339(t).map_or_else(|_| t.to_owned(), units::format_rfc3339),
    )
}

fn status_cells(node: &str, status: &Status) -> Vec<String> {
    let setting = |value: fn(&podcap_api::Settings) -> &str| {
        status
            .settings
            .as_ref()
            .map_or_else(|| "-".to_owned(), |s| value(s).to_owned())
    };
    vec![
        node.to_owned(),
        status.version.clone(),
        status.mode.as_str().to_owned(),
        status.recording.as_str().to_owned(),
        status.interfaces.len().to_string(),
        units::format_size(status.store.bytes),
        table_time(status.store.oldest_packet.as_deref()),
        table_time(status.store.newest_packet.as_deref()),
        status.drops.total().to_string(),
        setting(|s| &s.max_size),
        setting(|s| &s.max_time),
    ]
}

/// Lines under a sensor's row: why it is not ready, what it records, its drops by stage,
/// its TLS probes and its archive, each only when there is something to say.
fn status_notes(status: &Status) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(reason) = &status.not_ready_because {
        notes.push(format!("not ready: {reason}"));
    }
    if !status.interfaces.is_empty() {
        notes.push(format!("interfaces: {}", status.interfaces.join(", ")));
    }
    let drops = status.drops;
    let by_stage: Vec<String> = [
        ("kernel", drops.kernel),
        ("ring", drops.ring),
        ("disk", drops.disk),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(stage, n)| format!("{n} at {stage}"))
    .collect();
    if !by_stage.is_empty() {
        notes.push(format!("dropped: {}", by_stage.join(", ")));
    }
    if status.settings.as_ref().is_some_and(|s| !s.enabled) {
        notes.push("recording is disabled (podcap config --enable true)".into());
    }
    if let Some(tls) = &status.tls {
        let unsupported: Vec<String> = tls
            .unsupported
            .iter()
            .map(|(release, files)| format!("{release} ({files})"))
            .collect();
        let mut line = format!(
            "tls: {} probed, {} written",
            count(tls.probed, "program"),
            count(tls.secrets_written, "secret")
        );
        if !unsupported.is_empty() {
            line = format!(
                "{line}; releases not known, not probed: {}",
                unsupported.join(", ")
            );
        }
        notes.push(line);
    }
    if let Some(archive) = &status.archive {
        notes.push(archive_note(archive));
    }
    notes
}

/// The archive's line: its backlog, failures so far, and why it fails now.
fn archive_note(archive: &ArchiveStatus) -> String {
    let backlog = archive.backlog_segments;
    let mut line = format!("archive: {} waiting", count(backlog, "segment"));
    if backlog > 0 {
        line = format!("{line} (oldest {:.0}s)", archive.oldest_pending_age_seconds);
    }
    if archive.failures > 0 {
        line = format!("{line}, {} so far", count(archive.failures, "failure"));
    }
    if let Some(failing) = &archive.failing {
        line = format!(
            "{line}, failing since {}: {}",
            table_time(Some(&failing.since)),
            failing.reason
        );
    }
    line
}

/// `podcap version`: the client's, then every sensor's (not with `--client`).
pub(super) fn version_command(
    client_only: bool,
    connection: &Connection,
    output: Output,
) -> Result<ExitCode> {
    if client_only {
        match output {
            Output::Table => println!("Client Version: {CLIENT_VERSION}"),
            _ => crate::output::print(&serde_json::json!({"clientVersion": CLIENT_VERSION}), output)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !output.structured() {
        // Said before the sensors are looked for, so it is there whatever happens next.
        println!("Client Version: {CLIENT_VERSION}");
    }
    let reached = reach(connection, Role::Read)?;
    let answers = ask_everyone(&reached);
    let version = |status: &Value| {
        SensorVersion::deserialize(status)
            .ok()
            .and_then(|said| said.version)
    };
    if output.structured() {
        let sensors: Vec<Value> = answers
            .answered
            .iter()
            .map(|(node, status)| serde_json::json!({"node": node, "version": version(status)}))
            .collect();
        crate::output::print(
            &serde_json::json!({
                "clientVersion": CLIENT_VERSION,
                "sensors": sensors,
                "failed": answers.failed_doc(),
            }),
            output,
        )?;
    } else {
        let mut rows: Vec<Row> = answers
            .answered
            .iter()
            .map(|(node, status)| Row {
                cells: vec![
                    node.clone(),
                    version(status).unwrap_or_else(|| "unknown (it does not say)".into()),
                ],
                notes: Vec::new(),
            })
            .collect();
        rows.extend(answers.failed.iter().map(|(node, _)| Row {
            cells: vec![node.clone(), "no answer".into()],
            notes: Vec::new(),
        }));
        print!("{}", render(&["NODE", "SENSOR VERSION"], &rows));
    }
    Ok(answers.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status document as a sensor writes it.
    fn document() -> Value {
        serde_json::json!({
            "version": "9.8.7",
            "mode": "kubernetes",
            "interfaces": ["shop/web-1/eth0", "shop/web-2/eth0"],
            "settings": {"enabled": true, "maxSize": "500 MB", "maxTime": "1h",
                         "sources": {"enabled": {"source": "default", "since": "2026-12-07T10:00:00Z"},
                                     "maxTime": {"source": "flag", "since": "2026-12-07T10:00:00Z"},
                                     "maxSize": {"source": "api", "since": "2026-12-07T10:05:00Z"}}},
            "recording": "recording",
            "ready": true,
            "notReadyBecause": null,
            "store": {"segments": 3, "bytes": 1_500_000, "quarantinedSegments": 0,
                      "oldestPacket": "2026-12-07T10:15:00Z", "newestPacket": "2026-12-07T10:20:00.5Z"},
            "disk": {"freeBytes": 10, "totalBytes": 20, "minFreeBytes": 0, "earlyRetiredSegments": 0,
                     "earlyRetiredBytes": 0, "failing": null},
            "drops": {"kernel": 2, "ring": 0, "disk": 5},
            "recovery": {"repaired": [], "quarantined": [], "ignored": [], "rebuilt": [], "missing": []},
            "tls": {"probed": 1, "unsupported": {"openssl-3.5": 2}, "secretsWritten": 4},
            "archive": {"url": "s3://bucket/p", "node": "node-a", "segments": true, "backlogSegments": 3,
                        "oldestPending": "2026-12-07T10:15:00Z", "oldestPendingAgeSeconds": 95.2,
                        "uploadedObjects": 1, "uploadedBytes": 2, "foundUploaded": 0, "failures": 1,
                        "failing": null, "request": null, "skippedSegments": 0, "gapsRecorded": 0,
                        "gapsToRecord": 0, "gapsToRecordOldest": [], "requestTimeoutSeconds": 30.0,
                        "drainSeconds": 10.0},
        })
    }

    fn table_of(documents: Vec<(String, Value)>) -> (String, Vec<Failure>) {
        let (statuses, unreadable) = read_statuses(documents);
        (status_table(&statuses), unreadable)
    }

    #[test]
    fn a_sensors_row_and_notes_say_what_it_records_and_lost() {
        let (table, unreadable) = table_of(vec![("node-a".into(), document())]);
        assert_eq!(unreadable, []);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("NODE    VERSION  MODE        STATE"),
            "{table}"
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "node-a",
                "9.8.7",
                "kubernetes",
                "recording",
                "2",
                "1.5",
                "MB",
                "2026-12-07T10:15:00Z",
                "2026-12-07T10:20:00Z",
                "7",
                "500",
                "MB",
                "1h"
            ],
            "{table}"
        );
        assert_eq!(
            &lines[2..],
            [
                "  interfaces: shop/web-1/eth0, shop/web-2/eth0",
                "  dropped: 2 at kernel, 5 at disk",
                "  tls: 1 program probed, 4 secrets written; releases not known, not probed: openssl-3.5 (2)",
                "  archive: 3 segments waiting (oldest 95s), 1 failure so far",
            ],
            "{table}"
        );
    }

    /// The archive's `failing` is an object (`reason`, `since`, `last`); it was read as a
    /// string, so a failing archive was never said.
    #[test]
    fn a_failing_archive_says_why_and_since_when() {
        let mut failing = document();
        failing["archive"]["failing"] = serde_json::json!({
            "reason": "PUT s3://bucket/p/x: 503 Slow Down",
            "since": "2026-12-07T10:16:00.250Z",
            "last": "2026-12-07T10:19:00Z",
        });
        let (table, _) = table_of(vec![("node-a".into(), failing)]);
        assert_eq!(
            table.lines().last(),
            Some(
                "  archive: 3 segments waiting (oldest 95s), 1 failure so far, failing since \
                 2026-12-07T10:16:00Z: PUT s3://bucket/p/x: 503 Slow Down"
            ),
            "{table}"
        );
    }

    #[test]
    fn a_status_this_client_cannot_read_names_its_sensor_and_the_others_are_shown() {
        // A sensor from before the status said its version, mode and interfaces.
        let old = serde_json::json!({
            "recording": "disk-full", "ready": false, "notReadyBecause": "writes fail",
            "store": {"bytes": 0}, "drops": {"kernel": 0, "ring": 0, "disk": 0},
        });
        let (table, unreadable) = table_of(vec![("old".into(), old.clone()), ("node-a".into(), document())]);
        assert_eq!(
            table.lines().filter(|l| l.starts_with("node-a ")).count(),
            1,
            "{table}"
        );
        assert!(!table.lines().any(|l| l.starts_with("old ")), "{table}");
        assert_eq!(unreadable.len(), 1);
        assert_eq!(unreadable[0].0, "old");
        assert!(
            unreadable[0].1.contains("missing field") && unreadable[0].1.contains("podcap version"),
            "{unreadable:?}"
        );
        // `podcap version` still reads what it says of itself: nothing.
        assert_eq!(SensorVersion::deserialize(&old).unwrap().version, None);
        assert_eq!(
            SensorVersion::deserialize(&document())
                .unwrap()
                .version
                .as_deref(),
            Some("9.8.7")
        );
    }

    #[test]
    fn a_newer_sensors_extra_fields_are_read_past() {
        let mut newer = document();
        newer["somethingNew"] = serde_json::json!({"x": 1});
        newer["store"]["alsoNew"] = serde_json::json!(2);
        let (table, unreadable) = table_of(vec![("node-a".into(), newer)]);
        assert_eq!(unreadable, []);
        assert!(table.contains("node-a  9.8.7"), "{table}");
    }
}
