//! `podcap config`: each sensor's settings, or one change applied to every sensor or none.
//!
//! Rules:
//! - A change is checked by every sensor first (`PATCH /api/v1/config?dryRun=true`), at
//!   most `--parallel` at once. It changes no sensor at all when one of them refuses it (a
//!   4xx: a value below its floors, a token that is not its admin token), when one cannot
//!   be asked (not reachable, a 5xx, a sensor pod with no way to it), or when it would
//!   delete recorded data and `--yes` is not given. A fleet is never left half changed by
//!   a sensor the CLI could have known about.
//! - `--skip-unreachable` changes the sensors that passed the check and names every one it
//!   left as it was; the exit status is then 0 when each of those took the change (the
//!   user chose to leave the others). A refusal still stops everything: it says the change
//!   itself is wrong for that sensor.
//! - A sensor that passed the check and still fails the change (it went away in between)
//!   is named, and the exit status is non-zero.
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use podcap_api::{Settings, SettingsChange};
use podcap_format::units;

use super::{reach, Connection};
use crate::reached::{for_each_sensor, run_bounded, Reached};
use crate::{
    discovery::Role,
    output::{count, Output},
    source::{Refused, Sensor},
};

/// A settings change as the user gave it, before any sensor is asked.
pub(super) struct Change {
    pub(super) enable: Option<bool>,
    pub(super) max_size: Option<String>,
    pub(super) max_time: Option<String>,
}

impl Change {
    /// No change: `podcap config` only shows the settings.
    fn is_empty(&self) -> bool {
        self.enable.is_none() && self.max_size.is_none() && self.max_time.is_none()
    }

    /// The PATCH body, the values checked here first so that a typo asks no sensor.
    fn body(&self) -> Result<SettingsChange> {
        if let Some(size) = &self.max_size {
            units::parse_size(size).context("--max-size")?;
        }
        if let Some(time) = &self.max_time {
            units::parse_duration(time).context("--max-time")?;
        }
        Ok(SettingsChange {
            enabled: self.enable,
            max_time: self.max_time.clone(),
            max_size: self.max_size.clone(),
        })
    }
}

/// How a change goes ahead when not every sensor agrees.
#[derive(Clone, Copy)]
pub(super) struct Consent {
    /// Apply a change that deletes recorded data at once.
    pub(super) yes: bool,
    /// Change the sensors that can be asked, leaving the others as they are.
    pub(super) skip_unreachable: bool,
}

/// `podcap config`: shows the settings, or applies `change` when there is one.
pub(super) fn command(
    change: &Change,
    consent: Consent,
    output: Output,
    connection: &Connection,
) -> Result<ExitCode> {
    if change.is_empty() {
        show_config(connection, output)
    } else {
        change_config(change, consent, output, connection)
    }
}

/// A table row of one sensor's settings: each value with where it came from.
fn settings_row(node: &str, settings: &Settings) -> crate::table::Row {
    let sources = &settings.sources;
    let cell = |value: String, origin: &podcap_api::Origin| format!("{value} ({})", origin.source.as_str());
    crate::table::Row {
        cells: vec![
            node.to_owned(),
            cell(settings.enabled.to_string(), &sources.enabled),
            cell(settings.max_size.clone(), &sources.max_size),
            cell(settings.max_time.clone(), &sources.max_time),
        ],
        notes: Vec::new(),
    }
}

/// The settings of each sensor as `output` asks: a table, or `{"nodes": [{node, settings}]}`.
fn print_settings(answers: &[(String, Settings)], output: Output) -> Result<()> {
    if output.structured() {
        let nodes: Vec<serde_json::Value> = answers
            .iter()
            .map(|(node, settings)| serde_json::json!({ "node": node, "settings": settings }))
            .collect();
        crate::output::print(&serde_json::json!({ "nodes": nodes }), output)?;
    } else {
        let rows: Vec<_> = answers.iter().map(|(node, s)| settings_row(node, s)).collect();
        print!(
            "{}",
            crate::table::render(&["NODE", "ENABLED", "MAX-SIZE", "MAX-TIME"], &rows)
        );
    }
    Ok(())
}

/// `podcap config` without changes: each sensor's settings and where each came from.
fn show_config(connection: &Connection, output: Output) -> Result<ExitCode> {
    let reached = reach(connection, Role::Read)?;
    let token = &reached.token;
    let mut answers = Vec::new();
    let code = for_each_sensor(&reached, |sensor| {
        let settings: Settings = sensor.get("/api/v1/config", token.as_deref())?;
        answers.push((sensor.label.clone(), settings));
        Ok(())
    });
    print_settings(&answers, output)?;
    Ok(code)
}

/// What one sensor said to the dry run.
enum Checked {
    /// It would take the change; what that would retire now, if anything.
    Takes { would_delete: Option<String> },
    /// It read the change and said no.
    Refuses(String),
    /// It could not be asked.
    Unreachable(String),
}

/// What the dry run found across the fleet.
struct Verdict<'a> {
    /// The sensors that would take the change.
    takers: Vec<&'a Sensor>,
    /// The sensors that cannot be asked, with why.
    unreachable: Vec<(String, String)>,
    /// What the change would delete at once, per sensor.
    doomed: Vec<String>,
}

/// Every sensor checks `body` (`--parallel` at once); one that refuses it is an error.
fn check_everywhere<'a>(reached: &'a Reached, body: &SettingsChange) -> Result<Verdict<'a>> {
    let token = reached.token.as_deref();
    let sensors = &reached.sensors;
    let answers = run_bounded(sensors.len(), reached.parallel, |n| {
        Ok(
            match sensors[n].patch::<Settings>("/api/v1/config?dryRun=true", token, body) {
                Ok(answer) => {
                    let retired = answer.would_retire.unwrap_or_default();
                    Checked::Takes {
                        would_delete: (retired.segments > 0).then(|| {
                            format!(
                                "would delete {} now ({}, {})",
                                count(retired.segments, "segment"),
                                units::format_size(retired.bytes),
                                count(retired.packets, "packet")
                            )
                        }),
                    }
                }
                // A 4xx: the sensor read the change and said no (a 5xx is a way that failed).
                Err(e)
                    if e.downcast_ref::<Refused>()
                        .is_some_and(|r| (400..500).contains(&r.status)) =>
                {
                    Checked::Refuses(format!("{e:#}"))
                }
                Err(e) => Checked::Unreachable(format!("{e:#}")),
            },
        )
    });
    let mut verdict = Verdict {
        takers: Vec::new(),
        unreachable: reached.unreachable.clone(),
        doomed: Vec::new(),
    };
    for (sensor, answer) in sensors.iter().zip(answers) {
        match answer {
            Ok(Checked::Takes { would_delete }) => {
                if let Some(what) = would_delete {
                    verdict.doomed.push(format!("{}: {what}", sensor.label));
                }
                verdict.takers.push(sensor);
            }
            Ok(Checked::Refuses(why)) => {
                bail!(
                    "sensor {} refused the change, so no sensor was changed: {why}",
                    sensor.label
                );
            }
            Ok(Checked::Unreachable(why)) => verdict.unreachable.push((sensor.label.clone(), why)),
            Err(e) => verdict.unreachable.push((sensor.label.clone(), format!("{e:#}"))),
        }
    }
    Ok(verdict)
}

/// `podcap config` with a change: checked by every sensor, then applied to all or none.
/// The settings each changed sensor answers are printed as `podcap config` prints them.
fn change_config(
    change: &Change,
    consent: Consent,
    output: Output,
    connection: &Connection,
) -> Result<ExitCode> {
    let body = change.body()?;
    let reached = reach(connection, Role::Admin)?;
    let token = reached.token.as_deref();
    let sensors = &reached.sensors;
    let Verdict {
        takers,
        unreachable,
        doomed,
    } = check_everywhere(&reached, &body)?;
    for (label, why) in &unreachable {
        eprintln!("podcap: sensor {label} cannot be asked: {why}");
    }
    if !unreachable.is_empty() && !consent.skip_unreachable {
        bail!(
            "{} of {} cannot be asked, so no sensor was changed (the settings would differ \
             across the fleet): bring {} back, or run it again with --skip-unreachable to change \
             only the others",
            unreachable.len(),
            count((sensors.len() + reached.unreachable.len()) as u64, "sensor"),
            if unreachable.len() == 1 { "it" } else { "them" }
        );
    }
    if takers.is_empty() {
        bail!("no sensor can be asked; nothing was changed");
    }
    if !doomed.is_empty() && !consent.yes {
        for line in &doomed {
            eprintln!("podcap: {line}");
        }
        bail!(
            "this change deletes recorded data on {}; nothing was changed: run it again with \
             --yes to apply it",
            count(doomed.len() as u64, "sensor")
        );
    }
    let mut failed = false;
    let mut answers = Vec::new();
    for sensor in takers {
        match sensor.patch::<Settings>("/api/v1/config", token, &body) {
            Ok(settings) => answers.push((sensor.label.clone(), settings)),
            Err(e) => {
                eprintln!(
                    "podcap: sensor {} passed the check but the change failed: {e:#}",
                    sensor.label
                );
                failed = true;
            }
        }
    }
    print_settings(&answers, output)?;
    if !unreachable.is_empty() {
        let names: Vec<&str> = unreachable.iter().map(|(label, _)| label.as_str()).collect();
        eprintln!("podcap: not changed (--skip-unreachable): {}", names.join(", "));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
