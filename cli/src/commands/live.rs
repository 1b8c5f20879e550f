//! `podcap live`: every sensor's live stream, merged as it comes, on stdout.
use std::{
    io::{self, IsTerminal},
    process::ExitCode,
};

use anyhow::{bail, Result};

use super::{query, reach_timed, Connection, SelectArgs};
use crate::{discovery::Role, live};

pub(super) fn live_command(
    count: Option<u64>,
    select: &SelectArgs,
    connection: &Connection,
) -> Result<ExitCode> {
    if io::stdout().is_terminal() {
        bail!("live writes pcapng to stdout: pipe it (podcap live ... | wireshark -k -i -) or redirect it to a file");
    }
    if connection.request_timeout.is_some() {
        bail!("--request-timeout: live streams are not timed (a quiet pod sends nothing for as long as it is quiet)");
    }
    let reached = reach_timed(connection, Role::Read, None)?;
    let (sensors, token) = (&reached.sensors, &reached.token);
    let path = format!("/api/v1/live?{}", query(&select.params()));
    let mut inputs = Vec::new();
    let mut failed = reached.report_unreachable();
    for sensor in sensors {
        match sensor.stream(&path, token.as_deref()) {
            Ok(reader) => inputs.push(live::LiveInput {
                label: sensor.label.clone(),
                reader,
            }),
            Err(e) => {
                eprintln!("podcap: sensor {} failed: {e:#}", sensor.label);
                failed = true;
            }
        }
    }
    if inputs.is_empty() {
        bail!("every sensor failed (each is named above with its reason): nothing was streamed");
    }
    let stats = live::live(
        inputs,
        &mut io::stdout().lock(),
        count,
        podcap_format::units::now_ns,
    )?;
    if stats.late > 0 {
        eprintln!(
            "podcap: {} came after their turn and were written late",
            crate::output::count(stats.late, "packet")
        );
    }
    let reached_count = count.is_some_and(|c| stats.packets >= c);
    Ok(
        if failed || !stats.losses.is_empty() || (!reached_count && !stats.failed.is_empty()) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}
