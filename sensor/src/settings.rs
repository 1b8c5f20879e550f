//! Recording settings that can change while the sensor runs (`GET/PATCH /api/v1/config`):
//! `enabled`, `maxTime`, `maxSize`.
//!
//! Rules: a change is validated whole before any of it applies; it applies at once (the
//! capture thread and the writer read these atomics on every loop) and is persisted to
//! `DATA_DIR/settings.json` (temp file + fsync + rename) so a restart keeps it, over the
//! command line's values. Atomics are `Relaxed`: each value stands alone, and the readers
//! only need to see a new value soon, not in step with anything else.
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

/// The settings as the API shows and takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{key}: {source}")]
    Invalid {
        key: &'static str,
        #[source]
        source: units::UnitError,
    },
    #[error("cannot persist the settings to {path}")]
    Persist {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Live settings shared by the API, the capture thread and the writer.
#[derive(Debug)]
pub struct RuntimeSettings {
    enabled: AtomicBool,
    max_size: AtomicU64,
    max_time_ns: AtomicU64,
    /// The human forms last set, and serialises changes with their persisting.
    doc: Mutex<SettingsDoc>,
    path: PathBuf,
}

impl RuntimeSettings {
    /// Starts from the command line's values, then applies what a previous run persisted.
    pub fn load(dir: &Path, max_size: &str, max_time: &str) -> Result<Self, SettingsError> {
        Self::load_with(
            dir,
            &SettingsDoc {
                enabled: Some(true),
                max_time: Some(max_time.into()),
                max_size: Some(max_size.into()),
            },
        )
    }

    /// Starts from `initial` (flags and the targeting file), then applies what a previous
    /// run persisted (the last change through the API or a reload wins across restarts).
    pub fn load_with(dir: &Path, initial: &SettingsDoc) -> Result<Self, SettingsError> {
        let settings = Self {
            enabled: AtomicBool::new(true),
            max_size: AtomicU64::new(0),
            max_time_ns: AtomicU64::new(0),
            doc: Mutex::new(SettingsDoc {
                enabled: Some(true),
                ..SettingsDoc::default()
            }),
            path: dir.join(FILE),
        };
        settings.apply(initial, false)?;
        match fs::read_to_string(&settings.path) {
            Ok(text) => match serde_json::from_str::<SettingsDoc>(&text) {
                Ok(saved) => match settings.apply(&saved, false) {
                    Ok(()) => log::info!("settings from {} apply: {text}", settings.path.display()),
                    Err(e) => log::warn!("{}: ignored ({e})", settings.path.display()),
                },
                Err(e) => log::warn!("{}: ignored ({e})", settings.path.display()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("{}: ignored ({e})", settings.path.display()),
        }
        Ok(settings)
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

    /// The settings in force, in their human form.
    #[must_use]
    pub fn current(&self) -> SettingsDoc {
        self.doc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Validates `change` whole, applies it, and (if `persist`) saves the result.
    pub fn apply(&self, change: &SettingsDoc, persist: bool) -> Result<(), SettingsError> {
        let max_size = change
            .max_size
            .as_deref()
            .map(units::parse_size)
            .transpose()
            .map_err(|source| SettingsError::Invalid {
                key: "maxSize",
                source,
            })?;
        let max_time = change
            .max_time
            .as_deref()
            .map(units::parse_duration)
            .transpose()
            .map_err(|source| SettingsError::Invalid {
                key: "maxTime",
                source,
            })?;
        let mut doc = self.doc.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(enabled) = change.enabled {
            self.enabled.store(enabled, Relaxed);
            doc.enabled = Some(enabled);
        }
        if let Some(size) = max_size {
            self.max_size.store(size, Relaxed);
            doc.max_size.clone_from(&change.max_size);
        }
        if let Some(time) = max_time {
            self.max_time_ns
                .store(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX), Relaxed);
            doc.max_time.clone_from(&change.max_time);
        }
        if persist {
            let persist_err = |source| SettingsError::Persist {
                path: self.path.clone(),
                source,
            };
            let tmp = self.path.with_extension("json.tmp");
            let mut file = fs::File::create(&tmp).map_err(persist_err)?;
            file.write_all(serde_json::to_string_pretty(&*doc).unwrap_or_default().as_bytes())
                .map_err(persist_err)?;
            file.sync_all().map_err(persist_err)?;
            fs::rename(&tmp, &self.path).map_err(persist_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_persist_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = RuntimeSettings::load(dir.path(), "500MB", "1h").unwrap();
        assert_eq!(
            (s.enabled(), s.max_size(), s.max_time()),
            (true, 500_000_000, Duration::from_hours(1))
        );
        s.apply(
            &SettingsDoc {
                enabled: Some(false),
                max_size: Some("2GB".into()),
                max_time: None,
            },
            true,
        )
        .unwrap();
        assert_eq!((s.enabled(), s.max_size()), (false, 2_000_000_000));
        let again = RuntimeSettings::load(dir.path(), "500MB", "1h").unwrap();
        assert_eq!(
            (again.enabled(), again.max_size(), again.max_time()),
            (false, 2_000_000_000, Duration::from_hours(1))
        );
        assert_eq!(again.current().max_size.as_deref(), Some("2GB"));
    }

    #[test]
    fn a_bad_change_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = RuntimeSettings::load(dir.path(), "500MB", "1h").unwrap();
        let err = s
            .apply(
                &SettingsDoc {
                    enabled: Some(false),
                    max_size: Some("1GB".into()),
                    max_time: Some("soon".into()),
                },
                true,
            )
            .unwrap_err();
        assert!(
            err.to_string().starts_with("maxTime: invalid duration \"soon\""),
            "{err}"
        );
        assert_eq!((s.enabled(), s.max_size()), (true, 500_000_000));
        assert!(!dir.path().join(FILE).exists());
    }
}
