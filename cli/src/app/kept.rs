//! `podcap snapshot` and `podcap record`: their flags and how each action reaches the
//! sensors (the work is in `crate::snapshot` and `crate::record`).
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use podcap_format::units;

use super::{check_name, reach, Connection, SelectArgs, WindowArgs};
use crate::{discovery::Role, output::Output};

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
            crate::snapshot::keep_nodes(&mut reached, &nodes)?;
            crate::snapshot::create(&reached, &body)
        }
        SnapshotAction::List { output, connection } => {
            crate::snapshot::list(&reach(&connection, Role::Read)?, output)
        }
        SnapshotAction::Delete { name, connection } => {
            check_name(&name)?;
            crate::snapshot::delete(&reach(&connection, Role::Admin)?, &name)
        }
    }
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
                return crate::record::add_to_cluster(
                    &connection.cluster.connect()?,
                    job,
                    connection.cluster.namespace(),
                );
            }
            let mut reached = reach(&connection, Role::Admin)?;
            crate::snapshot::keep_nodes(&mut reached, &nodes)?;
            crate::record::create(&reached, &job)
        }
        RecordAction::List { output, connection } => {
            crate::record::list(&reach(&connection, Role::Read)?, output)
        }
        RecordAction::Delete { name, connection } => {
            check_name(&name)?;
            if connection.sensors.is_empty()
                && crate::record::remove_from_cluster(
                    &connection.cluster.connect()?,
                    &name,
                    connection.cluster.namespace(),
                )?
            {
                return Ok(ExitCode::SUCCESS);
            }
            crate::record::delete(&reach(&connection, Role::Admin)?, &name)
        }
    }
}
