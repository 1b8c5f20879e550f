//! The targeting document: what to record, in YAML with Kubeshark's keys (a mounted
//! ConfigMap in a cluster, edited by `podcap tap`).
//!
//! ```yaml
//! tap:
//!   regex: "^web-"              # pod names (empty: all pods)
//!   namespaces: [shop]          # empty: all namespaces
//!   excludedNamespaces: [kube-system]
//!   bpfOverride: "tcp port 80"  # a tcpdump filter on everything captured
//!   stopped: false              # true: record nothing
//! pcapdump:
//!   enabled: true
//!   maxTime: 1h
//!   maxSize: 500MB
//! recordings:                   # recording jobs every sensor runs (`podcap record create`)
//!   - {name: nightly, filter: "tcp port 443", start: "02:00", days: 7, duration: 1h, expire: 3d}
//! ```
//!
//! Rules: a document is validated whole; an error names the key (`tap.regex: …`,
//! `recordings[0].duration: …`); job names are unique. Keys outside `tap`, `pcapdump` and
//! `recordings` are ignored (a Kubeshark values file may be reused);
//! unknown keys inside them are errors, but Kubeshark's other `tap` keys are accepted and
//! ignored. The filter expression is checked by the sensor, which compiles it.
use regex::Regex;
use serde_norway::Value;

use crate::{recording::JobDoc, settings::SettingsDoc, units};

/// Kubeshark `tap` keys podcap accepts and ignores.
const IGNORED_TAP_KEYS: &[&str] = &[
    "docker",
    "proxy",
    "release",
    "persistentStorage",
    "storageLimit",
    "resources",
    "nodeSelectorTerms",
    "tolerations",
    "auth",
    "ingress",
    "debug",
    "telemetry",
    "dashboard",
    "packetCapture",
    "tls",
    "labels",
    "annotations",
    "priorityClass",
    "serviceMesh",
    "ipv6",
    "hostNetwork",
    "capabilities",
    // Current Kubeshark (v52): its hub, dashboard and dissectors' settings, and storage
    // that is the chart's business (`tap.persistentStorage` is checked there).
    "storageClass",
    "persistentStorageStatic",
    "persistentStoragePvcVolumeMode",
    "efsFileSytemIdAndPath",
    "secrets",
    "dryRun",
    "dns",
    "probes",
    "disableTlsLog",
    "routing",
    "resourceGuard",
    "watchdog",
    "gitops",
    "sentry",
    "defaultFilter",
    "liveConfigMapChangesDisabled",
    "globalFilter",
    "enabledDissectors",
    "portMapping",
    "customMacros",
    "metrics",
    "pprof",
    "misc",
    "securityContext",
    "mountBpf",
];

#[derive(Debug, thiserror::Error)]
pub enum TargetingError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("{key}: {message}")]
    Key { key: String, message: String },
}

pub fn key_error(key: &str, message: impl Into<String>) -> TargetingError {
    TargetingError::Key {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// `recordings`: a list of jobs, each checked, names unique.
fn parse_recordings(value: &Value) -> Result<Vec<JobDoc>, TargetingError> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        _ => return Err(key_error("recordings", "expected a list of jobs")),
    };
    let mut jobs: Vec<JobDoc> = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let key = format!("recordings[{n}]");
        let job: JobDoc =
            serde_norway::from_value(item.clone()).map_err(|e| key_error(&key, e.to_string()))?;
        job.check().map_err(|e| key_error(&key, e))?;
        if job.managed_by.is_some() {
            return Err(key_error(&format!("{key}.managedBy"), "set by the sensor"));
        }
        if jobs.iter().any(|j| j.name == job.name) {
            return Err(key_error(&key, format!("a second job named {:?}", job.name)));
        }
        jobs.push(job);
    }
    Ok(jobs)
}

/// A validated targeting document (the filter expression as text: compiling it takes
/// libpcap, which the sensor has and the CLI does not).
#[derive(Clone, Debug, Default)]
pub struct TargetingDoc {
    /// Pod names to record (`None`: all).
    pub regex: Option<Regex>,
    pub namespaces: Vec<String>,
    pub excluded_namespaces: Vec<String>,
    /// `tap.bpfOverride`, when not empty.
    pub bpf_override: Option<String>,
    pub stopped: bool,
    /// `pcapdump.*`, in the form the settings take.
    pub pcapdump: SettingsDoc,
    /// Kubeshark's `tap.capture.raw.enabled` (`pcapdump.enabled` wins).
    pub raw_enabled: Option<bool>,
    /// Kubeshark's `tap.capture.raw.storageSize` (`pcapdump.maxSize` wins).
    pub raw_storage_size: Option<String>,
    /// `recordings`: the jobs every sensor runs.
    pub recordings: Vec<JobDoc>,
}

impl TargetingDoc {
    /// Parses and validates a document.
    pub fn parse(text: &str) -> Result<Self, TargetingError> {
        let root: Value = serde_norway::from_str(text).map_err(|e| TargetingError::Yaml(e.to_string()))?;
        let mut targeting = Self::default();
        let root = match root {
            Value::Null => return Ok(targeting),
            Value::Mapping(m) => m,
            _ => return Err(TargetingError::Yaml("the document is not a mapping".into())),
        };
        if let Some(tap) = root.get("tap") {
            targeting.parse_tap(tap)?;
        }
        if let Some(pcapdump) = root.get("pcapdump") {
            targeting.parse_pcapdump(pcapdump)?;
        }
        if let Some(recordings) = root.get("recordings") {
            targeting.recordings = parse_recordings(recordings)?;
        }
        Ok(targeting)
    }

    fn parse_tap(&mut self, tap: &Value) -> Result<(), TargetingError> {
        let Value::Mapping(tap) = tap else {
            return Err(key_error("tap", "expected a mapping"));
        };
        for (key, value) in tap {
            let name = key.as_str().unwrap_or_default();
            let full = format!("tap.{name}");
            match name {
                "regex" => {
                    let text = string(&full, value)?;
                    if !text.is_empty() {
                        self.regex = Some(Regex::new(&text).map_err(|e| key_error(&full, e.to_string()))?);
                    }
                }
                "namespaces" => self.namespaces = strings(&full, value)?,
                "excludedNamespaces" => self.excluded_namespaces = strings(&full, value)?,
                "bpfOverride" => {
                    let text = string(&full, value)?;
                    self.bpf_override = (!text.trim().is_empty()).then_some(text);
                }
                "stopped" => self.stopped |= boolean(&full, value)?,
                "capture" => self.parse_capture(value)?,
                other if IGNORED_TAP_KEYS.contains(&other) => {}
                _ => {
                    return Err(key_error(
                        &full,
                        "unknown key (known: regex, namespaces, excludedNamespaces, bpfOverride, stopped, capture)",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Kubeshark's current `tap.capture`: `stopped` as `tap.stopped`; `raw.enabled` and
    /// `raw.storageSize` (its raw capture to disk) as `pcapdump.enabled` and
    /// `pcapdump.maxSize` where those are not given; `stopAfter` and `dbMaxSize` are its
    /// hub's and are ignored.
    fn parse_capture(&mut self, capture: &Value) -> Result<(), TargetingError> {
        let Value::Mapping(capture) = capture else {
            return Err(key_error("tap.capture", "expected a mapping"));
        };
        for (key, value) in capture {
            let name = key.as_str().unwrap_or_default();
            let full = format!("tap.capture.{name}");
            match name {
                "stopped" => self.stopped |= boolean(&full, value)?,
                "stopAfter" | "dbMaxSize" => {}
                "raw" => {
                    let Value::Mapping(raw) = value else {
                        return Err(key_error(&full, "expected a mapping"));
                    };
                    for (key, value) in raw {
                        let name = key.as_str().unwrap_or_default();
                        let full = format!("tap.capture.raw.{name}");
                        match name {
                            "enabled" => self.raw_enabled = Some(boolean(&full, value)?),
                            "storageSize" => {
                                let text = string(&full, value)?;
                                units::parse_size(&text).map_err(|e| key_error(&full, e.to_string()))?;
                                self.raw_storage_size = Some(text);
                            }
                            _ => return Err(key_error(&full, "unknown key (known: enabled, storageSize)")),
                        }
                    }
                }
                _ => {
                    return Err(key_error(
                        &full,
                        "unknown key (known: stopped, raw, stopAfter, dbMaxSize)",
                    ))
                }
            }
        }
        Ok(())
    }

    fn parse_pcapdump(&mut self, pcapdump: &Value) -> Result<(), TargetingError> {
        let Value::Mapping(pcapdump) = pcapdump else {
            return Err(key_error("pcapdump", "expected a mapping"));
        };
        for (key, value) in pcapdump {
            let name = key.as_str().unwrap_or_default();
            let full = format!("pcapdump.{name}");
            match name {
                "enabled" => self.pcapdump.enabled = Some(boolean(&full, value)?),
                "maxTime" => {
                    let text = string(&full, value)?;
                    units::parse_duration(&text).map_err(|e| key_error(&full, e.to_string()))?;
                    self.pcapdump.max_time = Some(text);
                }
                "maxSize" => {
                    let text = string(&full, value)?;
                    units::parse_size(&text).map_err(|e| key_error(&full, e.to_string()))?;
                    self.pcapdump.max_size = Some(text);
                }
                // Kubeshark's keys for its own dump cadence: podcap rotates by itself.
                "timeInterval" | "debug" | "dest" | "time" => {}
                _ => return Err(key_error(&full, "unknown key (known: enabled, maxTime, maxSize)")),
            }
        }
        Ok(())
    }

    /// What the file says of the recording settings (`None` for keys it leaves out);
    /// `tap.stopped: true` means not enabled, whatever `pcapdump.enabled` says.
    #[must_use]
    pub fn settings(&self) -> SettingsDoc {
        SettingsDoc {
            enabled: if self.stopped {
                Some(false)
            } else {
                self.pcapdump.enabled.or(self.raw_enabled)
            },
            max_size: self
                .pcapdump
                .max_size
                .clone()
                .or_else(|| self.raw_storage_size.clone()),
            ..self.pcapdump.clone()
        }
    }

    /// Whether a pod is targeted.
    #[must_use]
    pub fn selects(&self, namespace: &str, pod: &str) -> bool {
        !self.stopped
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && !self.excluded_namespaces.iter().any(|n| n == namespace)
            && self.regex.as_ref().is_none_or(|r| r.is_match(pod))
    }
}

fn string(key: &str, value: &Value) -> Result<String, TargetingError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(key_error(key, "expected a string")),
    }
}

fn strings(key: &str, value: &Value) -> Result<Vec<String>, TargetingError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(key_error(key, "expected a list of names")),
            })
            .collect(),
        _ => Err(key_error(key, "expected a list of names")),
    }
}

fn boolean(key: &str, value: &Value) -> Result<bool, TargetingError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        _ => Err(key_error(key, "expected true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A current Kubeshark values file (v52's keys) is taken with the same meaning.
    #[test]
    fn current_kubeshark_keys_mean_what_they_mean_there() {
        let doc = TargetingDoc::parse(
            "tap:\n  regex: .*\n  capture:\n    stopped: false\n    stopAfter: 5m\n    dbMaxSize: ''\n    raw:\n      enabled: true\n      storageSize: 2Gi\n  persistentStorage: false\n  storageLimit: 5Gi\n  storageClass: standard\n  securityContext: {privileged: true}\n  misc: {jsonTTL: 5m}\npcapdump:\n  enabled: true\n  timeInterval: 1m\n  maxTime: 1h\n  time: time\nlogLevel: warning\n",
        )
        .unwrap();
        let settings = doc.settings();
        assert_eq!(settings.enabled, Some(true));
        assert_eq!(
            settings.max_size.as_deref(),
            Some("2Gi"),
            "raw.storageSize, no pcapdump.maxSize"
        );
        assert_eq!(settings.max_time.as_deref(), Some("1h"));
        let stopped = TargetingDoc::parse("tap:\n  capture:\n    stopped: true\n").unwrap();
        assert_eq!(stopped.settings().enabled, Some(false));
        assert!(!stopped.selects("shop", "web-1"));
        let both = TargetingDoc::parse(
            "tap:\n  capture:\n    raw: {enabled: false, storageSize: 1Gi}\npcapdump:\n  enabled: true\n  maxSize: 500MB\n",
        )
        .unwrap();
        assert_eq!(
            (both.settings().enabled, both.settings().max_size.as_deref()),
            (Some(true), Some("500MB")),
            "pcapdump.* wins"
        );
        for (text, key) in [
            ("tap:\n  capture:\n    stoped: true\n", "tap.capture.stoped"),
            (
                "tap:\n  capture:\n    raw: {storageSize: lots}\n",
                "tap.capture.raw.storageSize",
            ),
            (
                "tap:\n  capture:\n    raw: {enable: true}\n",
                "tap.capture.raw.enable",
            ),
        ] {
            let error = TargetingDoc::parse(text).unwrap_err().to_string();
            assert!(error.starts_with(key), "{text}: {error}");
        }
    }

    #[test]
    fn recording_jobs_are_read_checked_and_named_in_errors() {
        let doc = TargetingDoc::parse(
            "recordings:\n  - {name: nightly, filter: 'tcp port 443', start: '02:00', days: 7, duration: 1h, expire: 3d}\n  - {name: once, duration: 10m, created: '2026-11-30T10:00:00Z'}\n",
        )
        .unwrap();
        let names: Vec<&str> = doc.recordings.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["nightly", "once"]);
        assert_eq!(doc.recordings[0].days, 7);
        assert_eq!(doc.recordings[1].days, 1, "once by default");
        for (text, key) in [
            ("recordings: {name: x}", "recordings"),
            ("recordings:\n  - {name: x, duration: 10}", "recordings[0]"),
            (
                "recordings:\n  - {name: x, duration: 1h, colour: red}",
                "recordings[0]",
            ),
            (
                "recordings:\n  - {name: x, duration: 1h}\n  - {name: x, duration: 2h}",
                "recordings[1]",
            ),
            (
                "recordings:\n  - {name: x, duration: 1h, managedBy: me}",
                "recordings[0].managedBy",
            ),
        ] {
            let error = TargetingDoc::parse(text).unwrap_err().to_string();
            assert!(error.starts_with(key), "{text}: {error}");
        }
    }
}
