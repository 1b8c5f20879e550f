//! Recording settings that can change while the sensor runs (`GET/PATCH /api/v1/config`):
//! `enabled`, `maxTime`, `maxSize`.
//!
//! Rules:
//! - Every change passes the same validation as start-up: units required, and retention
//!   that keeps at least [`MIN_SEGMENTS`] segments (`maxSize` ≥ that many `--segment-size`,
//!   `maxTime` ≥ that many `--segment-time`). A change is validated whole before any of it
//!   applies.
//! - One precedence, for every key: **the most recent explicit change wins**. Explicit
//!   changes are a PATCH of the API, an edit of the targeting file (a key whose value
//!   changed since the file was last read; a reload that leaves a key as it was changes
//!   nothing), and a restart with a flag that differs from the one the previous run started
//!   with (given, changed or removed). At one start a flag beats the file. Nothing else
//!   changes a value: a restart with the same flags, or a `helm upgrade` that renders the
//!   same file, keeps what the API set. `GET /api/v1/config` says where each value came
//!   from and since when.
//! - A change applies at once (the capture thread reads `enabled` on every loop; a
//!   retention change is handed to whoever listens, [`RuntimeSettings::on_retention_change`]:
//!   the writer gets it as a command, in order with the packets) and is persisted to `DATA_DIR/settings.json` (temp file + fsync + rename)
//!   with its source and with what this run started with, so the next start can tell a
//!   changed flag from an unchanged one.
//! - Atomics are `Relaxed`: each value stands alone, and the readers only need to see a new
//!   value soon, not in step with anything else.
use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::units;

const FILE: &str = "settings.json";

/// Retention must keep at least this many segments (by size and by time).
pub const MIN_SEGMENTS: u64 = 4;

/// The values when nothing sets them.
pub const DEFAULT_MAX_SIZE: &str = "500MB";
pub const DEFAULT_MAX_TIME: &str = "1h";

pub use podcap_format::settings::SettingsDoc;

/// Who set a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Default,
    Flag,
    TargetingFile,
    Api,
}

/// Where a value came from, and since when (RFC 3339).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub source: Source,
    pub since: String,
}

/// The origin of each setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origins {
    pub enabled: Origin,
    pub max_time: Origin,
    pub max_size: Origin,
}

/// What segments a retention change would retire now (a dry run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retired {
    pub segments: u64,
    pub bytes: u64,
    pub packets: u64,
}

/// The settings as the API shows them: values, and where each came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub enabled: bool,
    pub max_time: String,
    pub max_size: String,
    pub sources: Origins,
    /// Only in a dry run's answer: nothing was changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Only in a dry run's answer: what the change would retire at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_retire: Option<Retired>,
}

/// What a start was given: explicit flags and the targeting file's keys (`None`: not given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartInputs {
    #[serde(default)]
    pub flags: SettingsDoc,
    #[serde(default)]
    pub targeting: SettingsDoc,
}

impl StartInputs {
    /// Only these flags given (embedders and tests).
    #[must_use]
    pub fn flags(max_size: &str, max_time: &str) -> Self {
        Self {
            flags: SettingsDoc {
                enabled: None,
                max_time: Some(max_time.into()),
                max_size: Some(max_size.into()),
            },
            targeting: SettingsDoc::default(),
        }
    }
}

/// `settings.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    values: SettingsDoc,
    origins: Origins,
    started_with: StartInputs,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{key}: {source}")]
    Invalid {
        key: &'static str,
        #[source]
        source: units::UnitError,
    },
    #[error("{key}: {value} keeps fewer than {MIN_SEGMENTS} segments of {segment}; give at least {least}")]
    TooSmall {
        key: &'static str,
        value: String,
        segment: String,
        least: String,
    },
    #[error("cannot persist the settings to {path}")]
    Persist {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The smallest retention the store accepts: what keeps [`MIN_SEGMENTS`] segments.
#[derive(Clone, Copy, Debug)]
pub struct Floors {
    pub segment_size: u64,
    pub segment_time: Duration,
}

impl Floors {
    /// The floors of the sensor's default segments (`--segment-size 50MB`,
    /// `--segment-time 1m`).
    pub const DEFAULT: Self = Self {
        segment_size: 50_000_000,
        segment_time: Duration::from_mins(1),
    };

    /// Checks and parses `maxSize` and `maxTime` of `doc` (the ones it gives).
    pub fn check(&self, doc: &SettingsDoc) -> Result<(Option<u64>, Option<Duration>), SettingsError> {
        let max_size = doc
            .max_size
            .as_deref()
            .map(|text| {
                let bytes = units::parse_size(text).map_err(|source| SettingsError::Invalid {
                    key: "maxSize",
                    source,
                })?;
                let least = self.segment_size.saturating_mul(MIN_SEGMENTS);
                if bytes < least {
                    return Err(SettingsError::TooSmall {
                        key: "maxSize",
                        value: text.to_owned(),
                        segment: units::format_size_exact(self.segment_size),
                        least: units::format_size_exact(least),
                    });
                }
                Ok(bytes)
            })
            .transpose()?;
        let max_time = doc
            .max_time
            .as_deref()
            .map(|text| {
                let time = units::parse_duration(text).map_err(|source| SettingsError::Invalid {
                    key: "maxTime",
                    source,
                })?;
                let least = self.segment_time.saturating_mul(MIN_SEGMENTS as u32);
                if time < least {
                    return Err(SettingsError::TooSmall {
                        key: "maxTime",
                        value: text.to_owned(),
                        segment: format!("{}s", self.segment_time.as_secs_f64()),
                        least: format!("{}s", least.as_secs_f64()),
                    });
                }
                Ok(time)
            })
            .transpose()?;
        Ok((max_size, max_time))
    }
}

/// The values and their origins, guarded together.
#[derive(Debug)]
struct State {
    values: SettingsDoc,
    origins: Origins,
    started_with: StartInputs,
    /// The targeting file's keys as last read: a reload applies only what changed.
    targeting_seen: SettingsDoc,
}

/// Live settings shared by the API, the capture thread and the writer.
#[derive(Debug)]
pub struct RuntimeSettings {
    enabled: AtomicBool,
    max_size: AtomicU64,
    max_time_ns: AtomicU64,
    state: Mutex<State>,
    path: PathBuf,
    floors: Floors,
    /// Told every retention change, in the order they apply.
    retention_listener: Mutex<Option<RetentionListener>>,
}

/// What is told a retention change: the store's size limit and time limit in force.
struct RetentionListener(Box<dyn Fn(u64, Duration) + Send>);

impl std::fmt::Debug for RetentionListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetentionListener")
    }
}

fn now_rfc3339() -> String {
    units::format_rfc3339(crate::sys::realtime_ns())
}

/// What the previous run knew of one key: the flag and file value it started with, and
/// the value it ended with and its origin.
struct Before<'a, T> {
    flag: Option<&'a T>,
    file: Option<&'a T>,
    value: Option<(&'a T, &'a Origin)>,
}

/// One key's value at start, by the precedence of the module rules.
fn choose<T: Clone + PartialEq>(
    flag: Option<&T>,
    file: Option<&T>,
    previous: Option<&Before<'_, T>>,
    default: &T,
    now: &str,
) -> (T, Origin) {
    let origin = |source| Origin {
        source,
        since: now.to_owned(),
    };
    let fresh = || match (flag, file) {
        (Some(value), _) => (value.clone(), origin(Source::Flag)),
        (None, Some(value)) => (value.clone(), origin(Source::TargetingFile)),
        (None, None) => (default.clone(), origin(Source::Default)),
    };
    let Some(&Before {
        flag: flag_before,
        file: file_before,
        value: value_before,
    }) = previous
    else {
        return fresh();
    };
    if flag != flag_before {
        // The command line changed: what it says now, or without the flag what the file says.
        return fresh();
    }
    if file != file_before {
        return match file {
            Some(value) => (value.clone(), origin(Source::TargetingFile)),
            None => fresh(),
        };
    }
    match value_before {
        Some((value, origin)) => (value.clone(), origin.clone()),
        None => fresh(),
    }
}

impl RuntimeSettings {
    /// The settings at start: flags, the targeting file and what the previous run left in
    /// `dir`, by the precedence of the module rules. A persisted value that no longer passes
    /// validation (the segment size grew, say) gives way to the flag, file or default.
    pub fn start(dir: &Path, inputs: StartInputs, floors: Floors) -> Result<Self, SettingsError> {
        let path = dir.join(FILE);
        let previous = Self::read_persisted(&path, floors);
        let now = now_rfc3339();
        let before = |pick: fn(&SettingsDoc) -> Option<&String>, origin: fn(&Origins) -> &Origin| {
            previous.as_ref().map(|p| Before {
                flag: pick(&p.started_with.flags),
                file: pick(&p.started_with.targeting),
                value: pick(&p.values).map(|v| (v, origin(&p.origins))),
            })
        };
        let (max_size, max_size_origin) = choose(
            inputs.flags.max_size.as_ref(),
            inputs.targeting.max_size.as_ref(),
            before(|d| d.max_size.as_ref(), |o| &o.max_size).as_ref(),
            &DEFAULT_MAX_SIZE.to_owned(),
            &now,
        );
        let (max_time, max_time_origin) = choose(
            inputs.flags.max_time.as_ref(),
            inputs.targeting.max_time.as_ref(),
            before(|d| d.max_time.as_ref(), |o| &o.max_time).as_ref(),
            &DEFAULT_MAX_TIME.to_owned(),
            &now,
        );
        let (enabled, enabled_origin) = choose(
            inputs.flags.enabled.as_ref(),
            inputs.targeting.enabled.as_ref(),
            previous
                .as_ref()
                .map(|p| Before {
                    flag: p.started_with.flags.enabled.as_ref(),
                    file: p.started_with.targeting.enabled.as_ref(),
                    value: p.values.enabled.as_ref().map(|v| (v, &p.origins.enabled)),
                })
                .as_ref(),
            &true,
            &now,
        );
        let values = SettingsDoc {
            enabled: Some(enabled),
            max_time: Some(max_time),
            max_size: Some(max_size),
        };
        let (size, time) = floors.check(&values)?;
        let settings = Self {
            enabled: AtomicBool::new(enabled),
            max_size: AtomicU64::new(size.unwrap_or(0)),
            max_time_ns: AtomicU64::new(time.map_or(0, units::duration_ns)),
            state: Mutex::new(State {
                values,
                origins: Origins {
                    enabled: enabled_origin,
                    max_time: max_time_origin,
                    max_size: max_size_origin,
                },
                targeting_seen: inputs.targeting.clone(),
                started_with: inputs,
            }),
            path,
            floors,
            retention_listener: Mutex::new(None),
        };
        settings.persist(&settings.lock())?;
        Ok(settings)
    }

    /// The previous run's settings, if they can be read and still pass validation.
    fn read_persisted(path: &Path, floors: Floors) -> Option<Persisted> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("{}: ignored ({e})", path.display());
                return None;
            }
        };
        let persisted = match serde_json::from_str::<Persisted>(&text) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("{}: ignored ({e})", path.display());
                return None;
            }
        };
        if let Err(e) = floors.check(&persisted.values) {
            log::warn!("{}: ignored ({e})", path.display());
            return None;
        }
        Some(persisted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[must_use]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    #[must_use]
    pub fn max_size(&self) -> u64 {
        self.max_size.load(Relaxed)
    }

    #[must_use]
    pub fn max_time(&self) -> Duration {
        Duration::from_nanos(self.max_time_ns.load(Relaxed))
    }

    /// Tells `listener` every retention change from now on (size limit, time limit in
    /// force), in the order they apply; it replaces any listener before it.
    pub fn on_retention_change(&self, listener: impl Fn(u64, Duration) + Send + 'static) {
        *self
            .retention_listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(RetentionListener(Box::new(listener)));
    }

    /// The smallest retention accepted.
    #[must_use]
    pub fn floors(&self) -> Floors {
        self.floors
    }

    /// The settings in force and where each came from, in a line for the log.
    #[must_use]
    pub fn describe(&self) -> String {
        let view = self.view();
        format!(
            "recording {} ({:?}), maxTime {} ({:?}), maxSize {} ({:?})",
            if view.enabled { "enabled" } else { "disabled" },
            view.sources.enabled.source,
            view.max_time,
            view.sources.max_time.source,
            view.max_size,
            view.sources.max_size.source
        )
    }

    /// The settings in force and where each came from.
    #[must_use]
    pub fn view(&self) -> SettingsView {
        Self::view_of(&self.lock())
    }

    fn view_of(state: &State) -> SettingsView {
        SettingsView {
            enabled: state.values.enabled.unwrap_or(true),
            max_time: state.values.max_time.clone().unwrap_or_default(),
            max_size: state.values.max_size.clone().unwrap_or_default(),
            sources: state.origins.clone(),
            dry_run: None,
            would_retire: None,
        }
    }

    /// Checks `change` whole without applying it: the (size, time) retention it would give.
    pub fn check(&self, change: &SettingsDoc) -> Result<(u64, Duration), SettingsError> {
        let (size, time) = self.floors.check(change)?;
        Ok((
            size.unwrap_or_else(|| self.max_size()),
            time.unwrap_or_else(|| self.max_time()),
        ))
    }

    /// Applies a change made through the API (validated whole first) and persists it.
    pub fn apply_api(&self, change: &SettingsDoc) -> Result<SettingsView, SettingsError> {
        self.apply(change, Source::Api)
    }

    /// Applies what changed in the targeting file since it was last read (validated whole
    /// first); keys it leaves as they were change nothing. A key taken out of the file
    /// goes back to the flag's value, else the default.
    pub fn apply_targeting(&self, file: &SettingsDoc) -> Result<(), SettingsError> {
        let (seen, flags) = {
            let state = self.lock();
            (state.targeting_seen.clone(), state.started_with.flags.clone())
        };
        let changed = |now: Option<String>, before: &Option<String>, flag: Option<String>, default: &str| {
            (now != *before).then(|| now.or(flag).unwrap_or_else(|| default.to_owned()))
        };
        let change = SettingsDoc {
            enabled: (file.enabled != seen.enabled).then(|| file.enabled.or(flags.enabled).unwrap_or(true)),
            max_time: changed(
                file.max_time.clone(),
                &seen.max_time,
                flags.max_time,
                DEFAULT_MAX_TIME,
            ),
            max_size: changed(
                file.max_size.clone(),
                &seen.max_size,
                flags.max_size,
                DEFAULT_MAX_SIZE,
            ),
        };
        if change != SettingsDoc::default() {
            self.apply(&change, Source::TargetingFile)?;
        }
        self.lock().targeting_seen = file.clone();
        Ok(())
    }

    fn apply(&self, change: &SettingsDoc, source: Source) -> Result<SettingsView, SettingsError> {
        let (max_size, max_time) = self.floors.check(change)?;
        let mut state = self.lock();
        let origin = Origin {
            source,
            since: now_rfc3339(),
        };
        if let Some(enabled) = change.enabled {
            self.enabled.store(enabled, Relaxed);
            state.values.enabled = Some(enabled);
            state.origins.enabled = origin.clone();
        }
        if let Some(size) = max_size {
            self.max_size.store(size, Relaxed);
            state.values.max_size.clone_from(&change.max_size);
            state.origins.max_size = origin.clone();
        }
        if let Some(time) = max_time {
            self.max_time_ns.store(units::duration_ns(time), Relaxed);
            state.values.max_time.clone_from(&change.max_time);
            state.origins.max_time = origin;
        }
        if max_size.is_some() || max_time.is_some() {
            // Under the state's lock: listeners hear changes in the order they applied.
            if let Some(listener) = &*self
                .retention_listener
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                (listener.0)(self.max_size(), self.max_time());
            }
        }
        self.persist(&state)?;
        Ok(Self::view_of(&state))
    }

    fn persist(&self, state: &State) -> Result<(), SettingsError> {
        let persist_err = |source| SettingsError::Persist {
            path: self.path.clone(),
            source,
        };
        let doc = Persisted {
            values: state.values.clone(),
            origins: state.origins.clone(),
            started_with: state.started_with.clone(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let mut file = fs::File::create(&tmp).map_err(persist_err)?;
        file.write_all(serde_json::to_string_pretty(&doc).unwrap_or_default().as_bytes())
            .map_err(persist_err)?;
        file.sync_all().map_err(persist_err)?;
        fs::rename(&tmp, &self.path).map_err(persist_err)
    }
}

#[cfg(test)]
mod tests;
