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
//! longer held when they were copied, and its `AGE` (since the job was made, as kubectl
//! prints ages), with one line under it per iteration (its window in RFC 3339, packets,
//! size, age since it began). `delete` stops a job and deletes what it recorded on every
//! sensor that has it; none having it is an error.
//!
//! The subcommand's flags are here too; `commands.rs` parses the shared ones.
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use podcap_api::{recordings::IterationStatus, RecordingJob, RecordingJobStatus, RecordingListing};
use podcap_format::{recording::JobDoc, units};
use serde_json::Value;

use super::{check_name, reach, Connection, SelectArgs};
use crate::{
    discovery::{Cluster, Role},
    output::Output,
    reached::Reached,
    source::Refused,
    table::{render, Row},
};

#[derive(Subcommand)]
pub(super) enum RecordAction {
    /// Add a recording job NAME to every sensor (or the --node ones).
    Create {
        /// Its name (also its folder's): letters, digits, '.', '_' or '-'.
        name: String,
        #[command(flatten)]
        select: SelectArgs,
        /// When each iteration starts: HH:MM (UTC, daily), or an RFC 3339 time for the
        /// first; default: now.
        #[arg(long, value_name = "HH:MM|TIME")]
        start: Option<String>,
        /// How many daily iterations: 1 once, N days, 0 every day forever.
        #[arg(long, default_value_t = 1, value_name = "N")]
        days: u32,
        /// How long each iteration records (e.g. 1h).
        #[arg(long, value_name = "DUR")]
        duration: String,
        /// Delete each iteration's recording this long after it ends (e.g. 24h; default:
        /// kept until the job is deleted).
        #[arg(long, value_name = "DUR")]
        expire: Option<String>,
        /// Only the sensors of these nodes (repeatable).
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// The jobs and, per node, scheduled / recording / finished / expired, next start,
    /// packets, bytes, drops.
    List {
        /// `table` for people, `json` or `yaml` for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Stop a job on every sensor and delete what it recorded.
    Delete {
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub(super) fn record_command(action: RecordAction) -> Result<ExitCode> {
    match action {
        RecordAction::Create {
            name,
            select,
            start,
            days,
            duration,
            expire,
            nodes,
            connection,
        } => {
            if select.iface.is_some() {
                bail!("--iface: a recording job selects by --filter, --pod and -n");
            }
            let job = podcap_format::recording::JobDoc {
                name,
                filter: select.filter,
                pod: select.pod,
                namespaces: select.namespaces,
                start,
                days,
                duration,
                expire,
                created: None,
                managed_by: None,
            };
            // Checked here first, so a typo asks no sensor and changes no ConfigMap.
            job.check().map_err(|e| anyhow::anyhow!("recording job: {e}"))?;
            if connection.sensors.is_empty() && nodes.is_empty() {
                return add_to_cluster(
                    &connection.cluster.connect()?,
                    job,
                    connection.cluster.namespace(),
                );
            }
            let mut reached = reach(&connection, Role::Admin)?;
            super::snapshot::keep_nodes(&mut reached, &nodes)?;
            create(&reached, &job)
        }
        RecordAction::List { output, connection } => list(&reach(&connection, Role::Read)?, output),
        RecordAction::Delete { name, connection } => {
            check_name(&name)?;
            if connection.sensors.is_empty()
                && remove_from_cluster(
                    &connection.cluster.connect()?,
                    &name,
                    connection.cluster.namespace(),
                )?
            {
                return Ok(ExitCode::SUCCESS);
            }
            delete(&reach(&connection, Role::Admin)?, &name)
        }
    }
}

/// Adds `job` to the targeting ConfigMap's `recordings` (made now, so that a job without a
/// start begins when it is written).
pub(super) fn add_to_cluster(cluster: &Cluster, mut job: JobDoc, namespace: &str) -> Result<ExitCode> {
    use serde_norway::Value as Yaml;
    job.created = Some(units::format_rfc3339_ns(units::now_ns()));
    let name = job.name.clone();
    let item = serde_norway::to_value(&job)?;
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
pub(super) fn remove_from_cluster(cluster: &Cluster, name: &str, namespace: &str) -> Result<bool> {
    use serde_norway::Value as Yaml;
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

pub(super) fn create(reached: &Reached, job: &JobDoc) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let name = &job.name;
    let body = RecordingJob {
        name: job.name.clone(),
        filter: job.filter.clone(),
        pod: job.pod.clone(),
        namespaces: job.namespaces.clone(),
        start: job.start.clone(),
        days: job.days,
        duration: job.duration.clone(),
        expire: job.expire.clone(),
        created: None,
        managed_by: None,
    };
    let mut made = 0usize;
    let mut failed = reached.report_unreachable();
    for sensor in &reached.sensors {
        match sensor.post::<RecordingJob>("/api/v1/recordings", token, &body) {
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

pub(super) fn list(reached: &Reached, output: crate::output::Output) -> Result<ExitCode> {
    let token = reached.token.as_deref();
    let mut failed: Vec<(String, String)> = reached.unreachable.clone();
    let mut nodes = Vec::new();
    for sensor in &reached.sensors {
        match sensor.get::<RecordingListing>("/api/v1/recordings", token) {
            Ok(listing) => nodes.push((sensor.label.clone(), listing)),
            Err(e) => failed.push((sensor.label.clone(), format!("{e:#}"))),
        }
    }
    if output.structured() {
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|(node, listing)| serde_json::json!({"node": node, "jobs": listing.jobs, "maxBytes": listing.max_bytes, "usedBytes": listing.used_bytes}))
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
        print!("{}", table(&nodes, units::now_ns()));
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

/// An RFC 3339 time of the sensor's to the second, as every table writes times; as given
/// when it does not read as one.
fn table_time(time: &str) -> String {
    units::parse_rfc3339(time).map_or_else(|_| time.to_owned(), units::format_rfc3339)
}

/// The age at `now_ns` of an RFC 3339 time of the sensor's (`-`: none, or unreadable).
fn age(now_ns: u64, time: Option<&str>) -> String {
    time.and_then(|t| units::parse_rfc3339(t).ok())
        .map_or_else(|| "-".to_owned(), |then| crate::age::format_age(now_ns, then))
}

/// One row per job and node, by name then node, each iteration on a line under it; ages
/// at `now_ns`.
fn table(nodes: &[(String, RecordingListing)], now_ns: u64) -> String {
    let mut jobs: Vec<(&str, &RecordingJobStatus)> = nodes
        .iter()
        .flat_map(|(node, listing)| listing.jobs.iter().map(move |job| (node.as_str(), job)))
        .collect();
    if jobs.is_empty() {
        return "no recording jobs\n".to_owned();
    }
    jobs.sort_by(|a, b| (&a.1.job.name, a.0).cmp(&(&b.1.job.name, b.0)));
    let rows: Vec<Row> = jobs
        .into_iter()
        .map(|(node, job)| Row {
            cells: vec![
                job.job.name.clone(),
                node.to_owned(),
                job.state.as_str().to_owned(),
                job.next_start
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), table_time),
                job.packets.to_string(),
                units::format_size(job.bytes),
                job.drops.to_string(),
                job.iterations
                    .iter()
                    .map(|i| i.not_held_seconds)
                    .fold(0u64, u64::saturating_add)
                    .to_string(),
                age(now_ns, job.job.created.as_deref()),
                job.job.filter.clone().unwrap_or_default(),
            ],
            notes: job
                .iterations
                .iter()
                .map(|iteration| iteration_line(iteration, now_ns))
                .collect(),
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
        "AGE",
        "FILTER",
    ];
    render(&header, &rows)
}

/// An iteration's line under its job: its window, what it holds, its age (since it began).
fn iteration_line(iteration: &IterationStatus, now_ns: u64) -> String {
    let mut line = format!(
        "iteration {}: {} .. {}, {}, {}, age {}",
        iteration.iteration,
        table_time(&iteration.start),
        table_time(&iteration.end),
        crate::output::count(iteration.packets, "packet"),
        units::format_size(iteration.bytes),
        age(now_ns, Some(&iteration.start)),
    );
    if let Some(expires) = &iteration.expires {
        line = format!("{line}, expires {}", table_time(expires));
    }
    line
}

pub(super) fn delete(reached: &Reached, name: &str) -> Result<ExitCode> {
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

#[cfg(test)]
mod tests {
    use podcap_api::recordings::JobState;

    use super::*;

    fn job(name: &str, created: Option<&str>) -> RecordingJobStatus {
        RecordingJobStatus {
            job: RecordingJob {
                name: name.to_owned(),
                filter: Some("tcp port 443".to_owned()),
                pod: None,
                namespaces: Vec::new(),
                start: Some("02:00".to_owned()),
                days: 0,
                duration: "1h".to_owned(),
                expire: None,
                created: created.map(str::to_owned),
                managed_by: None,
            },
            state: JobState::Scheduled,
            next_start: Some("2026-12-08T02:00:00.000000001Z".to_owned()),
            iterations: vec![IterationStatus {
                iteration: 1,
                start: "2026-12-07T02:00:00Z".to_owned(),
                end: "2026-12-07T03:00:00.5Z".to_owned(),
                packets: 1,
                bytes: 2000,
                budget_drops: 0,
                missed_segments: 0,
                not_held_seconds: 5,
                expires: Some("2026-12-09T03:00:00.5Z".to_owned()),
            }],
            packets: 1,
            bytes: 2000,
            drops: 0,
        }
    }

    #[test]
    fn the_list_prints_rfc3339_times_an_age_and_each_iteration() {
        let now = units::parse_rfc3339("2026-12-07T12:00:30Z").unwrap();
        let listing = RecordingListing {
            jobs: vec![job("nightly", Some("2026-12-06T23:00:00Z")), job("adhoc", None)],
            max_bytes: 1,
            used_bytes: 1,
        };
        let text = table(&[("node-a".to_owned(), listing)], now);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            [
                "NAME", "NODE", "STATE", "NEXT", "START", "(UTC)", "PACKETS", "SIZE", "DROPS", "NOT", "HELD",
                "(s)", "AGE", "FILTER"
            ],
            "{text}"
        );
        let nightly = lines.iter().position(|l| l[0] == "nightly").unwrap();
        assert_eq!(
            lines[nightly],
            [
                "nightly",
                "node-a",
                "scheduled",
                "2026-12-08T02:00:00Z",
                "1",
                "2.0",
                "KB",
                "0",
                "5",
                "13h",
                "tcp",
                "port",
                "443"
            ],
            "{text}"
        );
        assert_eq!(
            lines[nightly + 1].join(" "),
            "iteration 1: 2026-12-07T02:00:00Z .. 2026-12-07T03:00:00Z, 1 packet, 2.0 KB, age 10h, \
             expires 2026-12-09T03:00:00Z",
            "{text}"
        );
        // Sorted by name; a job that does not say when it was made has no age.
        assert_eq!(lines[1][0], "adhoc", "{text}");
        assert_eq!(lines[1][9], "-", "{text}");
    }
}
