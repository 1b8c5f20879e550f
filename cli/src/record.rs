//! `podcap record create | list | delete`: recording jobs across the sensors.
//!
//! Rules: in a cluster (no `--sensor`, no `--node`) a job goes into the `recordings` list
//! of podcap's targeting ConfigMap, edited as `podcap tap` edits it (validated first), so
//! every sensor runs it, also one on a node added later, and `helm upgrade` or a restart
//! keeps it; `delete` takes it out of the list, and every sensor stops it and deletes what
//! it recorded. With `--sensor` (or `--node`) a job is added to each sensor asked through
//! its API and kept by that sensor; each sensor answers for itself, so the report names
//! every node that took the job and every one that did not, with why, and the exit status
//! is non-zero unless all took it. `list` shows each job per node: its state, next
//! start, packets, bytes, drops (over budget) and the seconds of its windows the store no
//! longer held when they were copied. `delete` stops a job and deletes what it recorded on
//! every sensor that has it; none having it is an error.
use std::process::ExitCode;

use anyhow::{bail, Result};
use podcap_format::units;
use serde_json::Value;

use podcap_format::recording::JobDoc;

use crate::{
    app::Reached,
    discovery::Cluster,
    source::Refused,
    table::{render, Row},
};

/// Adds `job` to the targeting ConfigMap's `recordings` (made now, so that a job without a
/// start begins when it is written).
pub(crate) fn add_to_cluster(cluster: &Cluster, mut job: JobDoc, namespace: &str) -> Result<ExitCode> {
    use serde_yaml::Value as Yaml;
    job.created = Some(units::format_rfc3339_ns(units::now_ns()));
    let name = job.name.clone();
    let item = serde_yaml::to_value(&job)?;
    let (map, _) = cluster.retarget(|root| {
        let list = root
            .entry(Yaml::from("recordings"))
            .or_insert_with(|| Yaml::Sequence(Vec::new()));
        if list.is_null() {
            *list = Yaml::Sequence(Vec::new());
        }
        let Yaml::Sequence(jobs) = list else {
            bail!("recordings: is not a list");
        };
        if jobs.iter().any(|j| j["name"].as_str() == Some(name.as_str())) {
            bail!("a recording job {name:?} already exists (podcap record delete {name} first, or choose another name)");
        }
        jobs.push(item);
        Ok(())
    })?;
    eprintln!(
        "podcap: ConfigMap {namespace}/{map} now has recording job {name}; every sensor runs it once the kubelet refreshes the mounted file (up to a minute)"
    );
    Ok(ExitCode::SUCCESS)
}

/// Takes job `name` out of the targeting ConfigMap's `recordings`; false if it was not there.
pub(crate) fn remove_from_cluster(cluster: &Cluster, name: &str, namespace: &str) -> Result<bool> {
    use serde_yaml::Value as Yaml;
    let mut found = false;
    let result = cluster.retarget(|root| {
        if let Some(Yaml::Sequence(jobs)) = root.get_mut("recordings") {
            let before = jobs.len();
            jobs.retain(|j| j["name"].as_str() != Some(name));
            found = jobs.len() != before;
        }
        if found {
            Ok(())
        } else {
            bail!("not in the ConfigMap")
        }
    });
    match result {
        Ok((map, _)) => {
            eprintln!(
                "podcap: recording job {name} taken out of ConfigMap {namespace}/{map}; every sensor stops it and deletes what it recorded once the kubelet refreshes the mounted file (up to a minute)"
            );
            Ok(true)
        }
        Err(_) if !found => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn create(reached: &Reached, job: &JobDoc) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let name = &job.name;
    let body = serde_json::to_value(job)?;
    let body = &body;
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

pub(crate) fn list(reached: &Reached, output: crate::output::Output) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut failed: Vec<(String, String)> = reached.unreachable.clone();
    let mut nodes = Vec::new();
    for sensor in &reached.sensors {
        match sensor.get_json("/api/v1/recordings", token) {
            Ok(listing) => nodes.push((sensor.label.clone(), listing)),
            Err(e) => failed.push((sensor.label.clone(), format!("{e:#}"))),
        }
    }
    if output.structured() {
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|(node, listing)| serde_json::json!({"node": node, "jobs": listing["jobs"], "maxBytes": listing["maxBytes"], "usedBytes": listing["usedBytes"]}))
            .collect();
        let unreachable: Vec<Value> = failed
            .iter()
            .map(|(node, reason)| serde_json::json!({"node": node, "reason": reason}))
            .collect();
        crate::output::print(
            &serde_json::json!({"nodes": nodes, "unreachable": unreachable}),
            output,
        )?;
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
    let mut rows: Vec<[String; 9]> = Vec::new();
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
                job["iterations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| number(&i["notHeldSeconds"]))
                    .fold(0u64, u64::saturating_add)
                    .to_string(),
                job["job"]["filter"].as_str().unwrap_or("").to_owned(),
            ]);
        }
    }
    if rows.is_empty() {
        println!("no recording jobs");
        return;
    }
    rows.sort();
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|cells| Row {
            cells: cells.to_vec(),
            notes: Vec::new(),
        })
        .collect();
    let header = [
        "NAME",
        "NODE",
        "STATE",
        "NEXT START (UTC)",
        "PACKETS",
        "SIZE",
        "DROPS",
        "NOT HELD (s)",
        "FILTER",
    ];
    print!("{}", render(&header, &rows));
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
