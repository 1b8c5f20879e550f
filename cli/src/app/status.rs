//! `podcap status` (what every sensor is doing) and `podcap version` (the client's and
//! every sensor's version, as `kubectl version` has it).
//!
//! Rules: every sensor is asked its `/api/v1/status` at once (at most `--parallel`); a
//! sensor that does not answer is named with its reason and the exit status is non-zero,
//! the others are still shown. Tables for people; `-o json|yaml` gives each sensor's
//! status document as the sensor wrote it, under its node's name, so a script reads every
//! field the sensor has, also ones this client does not know.
use std::process::ExitCode;

use anyhow::Result;
use podcap_format::units;
use serde_json::Value;

use super::{reach, run_bounded, Connection, Reached};
use crate::{
    discovery::Role,
    output::{count, Output},
    table::{render, Row},
};

/// The client's version (`podcap --version` says the same).
const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every sensor's status, in the order the sensors were given; the unreachable ones and
/// those that did not answer as (node, reason).
struct Answers {
    answered: Vec<(String, Value)>,
    failed: Vec<(String, String)>,
}

fn ask_everyone(reached: &Reached) -> Answers {
    let token = reached.token.as_deref();
    let sensors = &reached.sensors;
    let results = run_bounded(sensors.len(), reached.parallel, |n| {
        sensors[n].get_json("/api/v1/status", token)
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
    let answers = ask_everyone(&reached);
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
        print!("{}", status_table(&answers.answered));
    }
    Ok(answers.report())
}

/// One row per sensor, what needs words on lines under it.
fn status_table(answered: &[(String, Value)]) -> String {
    let rows: Vec<Row> = answered
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

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| "-".to_owned(), str::to_owned)
}

/// An RFC 3339 time as the other tables write times (`20261207T101500Z`).
fn compact_time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|t| units::parse_rfc3339(t).ok())
        .map_or_else(|| "-".to_owned(), units::format_utc_compact)
}

fn status_cells(node: &str, status: &Value) -> Vec<String> {
    let drops: u64 = ["kernel", "ring", "disk"]
        .iter()
        .filter_map(|stage| status["drops"][stage].as_u64())
        .sum();
    let interfaces = status["interfaces"]
        .as_array()
        .map_or_else(|| "-".to_owned(), |list| list.len().to_string());
    vec![
        node.to_owned(),
        status["version"]
            .as_str()
            .map_or_else(|| "unknown".to_owned(), str::to_owned),
        text(&status["mode"]),
        text(&status["recording"]),
        interfaces,
        status["store"]["bytes"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), units::format_size),
        compact_time(&status["store"]["oldestPacket"]),
        compact_time(&status["store"]["newestPacket"]),
        drops.to_string(),
        text(&status["settings"]["maxSize"]),
        text(&status["settings"]["maxTime"]),
    ]
}

/// Lines under a sensor's row: why it is not ready, what it records, its drops by stage,
/// its TLS probes and its archive, each only when there is something to say.
fn status_notes(status: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(reason) = status["notReadyBecause"].as_str() {
        notes.push(format!("not ready: {reason}"));
    }
    if let Some(list) = status["interfaces"].as_array().filter(|l| !l.is_empty()) {
        let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        notes.push(format!("interfaces: {}", names.join(", ")));
    }
    let drops = &status["drops"];
    let by_stage: Vec<String> = ["kernel", "ring", "disk"]
        .iter()
        .filter_map(|stage| {
            drops[stage]
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| format!("{n} at {stage}"))
        })
        .collect();
    if !by_stage.is_empty() {
        notes.push(format!("dropped: {}", by_stage.join(", ")));
    }
    if status["settings"]["enabled"] == Value::Bool(false) {
        notes.push("recording is disabled (podcap config --enable true)".into());
    }
    let tls = &status["tls"];
    if let Some(probed) = tls["probed"].as_u64() {
        let unsupported: Vec<String> = tls["unsupported"]
            .as_object()
            .map(|found| {
                found
                    .iter()
                    .map(|(release, files)| format!("{release} ({})", files.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let mut line = format!(
            "tls: {} probed, {} written",
            count(probed, "program"),
            count(tls["secretsWritten"].as_u64().unwrap_or(0), "secret")
        );
        if !unsupported.is_empty() {
            line = format!(
                "{line}; releases not known, not probed: {}",
                unsupported.join(", ")
            );
        }
        notes.push(line);
    }
    let archive = &status["archive"];
    if let Some(backlog) = archive["backlogSegments"].as_u64() {
        let mut line = format!("archive: {} waiting", count(backlog, "segment"));
        if let Some(age) = archive["oldestPendingAgeSeconds"]
            .as_f64()
            .filter(|_| backlog > 0)
        {
            line = format!("{line} (oldest {age:.0}s)");
        }
        if let Some(failures) = archive["failures"].as_u64().filter(|n| *n > 0) {
            line = format!("{line}, {} so far", count(failures, "failure"));
        }
        if let Some(failing) = archive["failing"].as_str() {
            line = format!("{line}, failing: {failing}");
        }
        notes.push(line);
    }
    notes
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
    let version = |status: &Value| status["version"].as_str().map(str::to_owned);
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

    fn status() -> Value {
        serde_json::json!({
            "version": "9.8.7",
            "mode": "kubernetes",
            "interfaces": ["shop/web-1/eth0", "shop/web-2/eth0"],
            "settings": {"enabled": true, "maxSize": "500 MB", "maxTime": "1h"},
            "recording": "recording",
            "ready": true,
            "store": {"segments": 3, "bytes": 1_500_000, "oldestPacket": "2026-12-07T10:15:00Z",
                      "newestPacket": "2026-12-07T10:20:00.5Z"},
            "drops": {"kernel": 2, "ring": 0, "disk": 5},
            "tls": {"probed": 1, "unsupported": {"openssl-3.5": 2}, "secretsWritten": 4},
            "archive": {"backlogSegments": 3, "oldestPendingAgeSeconds": 95.2, "failures": 1},
        })
    }

    #[test]
    fn a_sensors_row_and_notes_say_what_it_records_and_lost() {
        let table = status_table(&[("node-a".into(), status())]);
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
                "20261207T101500Z",
                "20261207T102000Z",
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

    #[test]
    fn an_older_sensor_without_the_new_fields_is_shown_with_what_it_says() {
        let old = serde_json::json!({
            "recording": "disk-full", "ready": false, "notReadyBecause": "writes fail",
            "store": {"bytes": 0}, "drops": {"kernel": 0, "ring": 0, "disk": 0},
        });
        let table = status_table(&[("n".into(), old)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "n",
                "unknown",
                "-",
                "disk-full",
                "-",
                "0",
                "B",
                "-",
                "-",
                "0",
                "-",
                "-"
            ],
            "{table}"
        );
        assert_eq!(&lines[2..], ["  not ready: writes fail"], "{table}");
    }
}
