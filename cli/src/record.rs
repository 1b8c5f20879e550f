//! `podcap record create | list | delete`: recording jobs across the sensors.
//!
//! Rules: a job is added to each sensor asked (all, or `--node`s), which keeps it across
//! restarts and runs it on its own clock; each sensor answers for itself, so the report
//! names every node that took the job and every one that did not, with why, and the exit
//! status is non-zero unless all took it. `list` shows each job per node: its state, next
//! start, packets, bytes and drops. `delete` stops a job and deletes what it recorded on
//! every sensor that has it; none having it is an error.
use std::process::ExitCode;

use anyhow::{bail, Result};
use podcap_format::units;
use serde_json::Value;

use crate::{app::Reached, source::Refused};

pub(crate) fn create(reached: &Reached, name: &str, body: &Value) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut made = 0usize;
    let mut failed = reached.report_unreachable();
    for sensor in &reached.sensors {
        match sensor.post_json("/api/v1/recordings", token, body) {
            Ok(_) => {
                made += 1;
                println!("{}: recording job {name} added", sensor.label);
            }
            Err(e) => {
                eprintln!("podcap: {}: recording job {name} not added: {e:#}", sensor.label);
                failed = true;
            }
        }
    }
    if made == 0 {
        bail!("no sensor took recording job {name}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn list(reached: &Reached, json: bool) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut failed: Vec<(String, String)> = reached.unreachable.clone();
    let mut nodes = Vec::new();
    for sensor in &reached.sensors {
        match sensor.get_json("/api/v1/recordings", token) {
            Ok(listing) => nodes.push((sensor.label.clone(), listing)),
            Err(e) => failed.push((sensor.label.clone(), format!("{e:#}"))),
        }
    }
    if json {
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|(node, listing)| serde_json::json!({"node": node, "jobs": listing["jobs"], "maxBytes": listing["maxBytes"], "usedBytes": listing["usedBytes"]}))
            .collect();
        let unreachable: Vec<Value> = failed
            .iter()
            .map(|(node, reason)| serde_json::json!({"node": node, "reason": reason}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"nodes": nodes, "unreachable": unreachable}))?
        );
    } else {
        print_table(&nodes);
    }
    for (node, reason) in &failed {
        eprintln!("podcap: sensor {node} failed: {reason}");
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(nodes: &[(String, Value)]) {
    let mut rows: Vec<[String; 8]> = Vec::new();
    for (node, listing) in nodes {
        for job in listing["jobs"].as_array().into_iter().flatten() {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            let number = |v: &Value| v.as_u64().unwrap_or(0);
            rows.push([
                text(&job["job"]["name"]),
                node.clone(),
                text(&job["state"]),
                job["nextStart"].as_str().map_or_else(
                    || "-".to_owned(),
                    |t| units::parse_rfc3339(t).map_or_else(|_| t.to_owned(), units::format_rfc3339),
                ),
                number(&job["packets"]).to_string(),
                units::format_size(number(&job["bytes"])),
                number(&job["drops"]).to_string(),
                job["job"]["filter"].as_str().unwrap_or("").to_owned(),
            ]);
        }
    }
    if rows.is_empty() {
        println!("no recording jobs");
        return;
    }
    rows.sort();
    let header = [
        "NAME",
        "NODE",
        "STATE",
        "NEXT START (UTC)",
        "PACKETS",
        "SIZE",
        "DROPS",
        "FILTER",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
}

pub(crate) fn delete(reached: &Reached, name: &str) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut failed = reached.report_unreachable();
    let mut deleted = 0usize;
    for sensor in &reached.sensors {
        match sensor.delete(&format!("/api/v1/recordings/{name}"), token) {
            Ok(()) => {
                deleted += 1;
                println!(
                    "{}: deleted recording job {name} and what it recorded",
                    sensor.label
                );
            }
            Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 404) => {}
            Err(e) => {
                eprintln!("podcap: {}: {e:#}", sensor.label);
                failed = true;
            }
        }
    }
    if deleted == 0 && !failed {
        bail!("no sensor has recording job {name} (podcap record list shows them)");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
