//! A recording job as written (the API's JSON, a node's `job.json`, the `recordings:` list of
//! the targeting document): Kubeshark's Traffic Recorder properties.
//!
//! Rules: durations take units; `start` is `HH:MM` (UTC, daily) or an RFC 3339 time;
//! names are `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (never a path, never hidden). [`JobDoc::check`]
//! checks all of that without libpcap (the sensor compiles the filter).
use serde::{Deserialize, Serialize};

use crate::units;

/// Who keeps a job: the targeting document (`managedBy: targeting`), or, absent, the API.
pub const MANAGED_BY_TARGETING: &str = "targeting";

/// A recording job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// `HH:MM` UTC, or an RFC 3339 time; absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Iterations, one a day: 0 every day, forever; 1 once (the default).
    #[serde(default = "once")]
    pub days: u32,
    pub duration: String,
    /// Each iteration's folder is deleted this long after it ends; absent: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<String>,
    /// When the job was made (RFC 3339): set by the sensor for the API's jobs, by
    /// `podcap record create` for the targeting document's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// [`MANAGED_BY_TARGETING`] for the targeting document's jobs; set by the sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

const fn once() -> u32 {
    1
}

/// Whether `name` may name a snapshot or a recording job.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl JobDoc {
    /// Checks what can be checked without libpcap; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "name {:?}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                self.name
            ));
        }
        let duration = units::parse_duration(&self.duration).map_err(|e| format!("duration: {e}"))?;
        if self.days != 1 && duration > std::time::Duration::from_hours(24) {
            return Err("duration: a job that records every day records at most 24h".into());
        }
        if let Some(expire) = &self.expire {
            units::parse_duration(expire).map_err(|e| format!("expire: {e}"))?;
        }
        if let Some(start) = &self.start {
            parse_start(start)?;
        }
        if let Some(created) = &self.created {
            units::parse_rfc3339(created).map_err(|e| format!("created: {e}"))?;
        }
        Ok(())
    }
}

/// A job's start as written: a time of day or a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Minutes after midnight UTC (`HH:MM`), every day.
    Daily(u32),
    /// ns since the epoch (RFC 3339).
    Moment(u64),
}

/// Parses `HH:MM` (UTC) or an RFC 3339 time; the error names the field and the forms.
pub fn parse_start(start: &str) -> Result<StartAt, String> {
    let error =
        || format!("start {start:?}: give a UTC time of day as HH:MM, like 08:45, or an RFC 3339 time");
    if start.contains('T') {
        return units::parse_rfc3339(start)
            .map(StartAt::Moment)
            .map_err(|e| match e {
                // A valid time that podcap cannot hold: say that, not "give RFC 3339".
                units::UnitError::TimeOutOfRange { .. } => format!("start: {e}"),
                _ => error(),
            });
    }
    let (hours, minutes) = start.split_once(':').ok_or_else(error)?;
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(error());
    }
    match (hours.parse::<u32>(), minutes.parse::<u32>()) {
        (Ok(hours), Ok(minutes)) if hours < 24 && minutes < 60 => Ok(StartAt::Daily(hours * 60 + minutes)),
        _ => Err(error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, duration: &str) -> JobDoc {
        JobDoc {
            name: name.into(),
            filter: None,
            pod: None,
            namespaces: Vec::new(),
            start: None,
            days: 1,
            duration: duration.into(),
            expire: None,
            created: None,
            managed_by: None,
        }
    }

    #[test]
    fn checks_name_each_field() {
        assert_eq!(job("web", "1h").check(), Ok(()));
        for (doc, field) in [
            (job("../x", "1h"), "name"),
            (job("x", "1"), "duration"),
            (
                JobDoc {
                    expire: Some("2".into()),
                    ..job("x", "1h")
                },
                "expire",
            ),
            (
                JobDoc {
                    start: Some("24:00".into()),
                    ..job("x", "1h")
                },
                "start",
            ),
            (
                JobDoc {
                    start: Some("8:45".into()),
                    ..job("x", "1h")
                },
                "start",
            ),
            (
                JobDoc {
                    days: 0,
                    ..job("x", "25h")
                },
                "24h",
            ),
            (
                JobDoc {
                    created: Some("yesterday".into()),
                    ..job("x", "1h")
                },
                "created",
            ),
        ] {
            let error = doc.check().unwrap_err();
            assert!(error.contains(field), "{error}");
        }
        assert_eq!(
            JobDoc {
                start: Some("2026-11-30T01:00:00Z".into()),
                ..job("x", "1h")
            }
            .check(),
            Ok(())
        );
    }

    #[test]
    fn a_far_future_start_is_refused_for_what_it_is() {
        let error = parse_start("2999-01-01T00:00:00Z").unwrap_err();
        assert!(
            error.starts_with("start: ") && error.contains("too far in the future"),
            "{error}"
        );
        assert!(
            !error.contains("give a UTC time of day"),
            "it is a valid time: {error}"
        );
        assert_eq!(
            parse_start("2554-07-21T23:34:33Z"),
            Ok(StartAt::Moment(18_446_744_073_000_000_000)),
            "the last whole second podcap holds"
        );
    }
}
