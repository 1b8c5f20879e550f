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
//! ```
//!
//! Rules: a document is validated whole; an error names the key (`tap.regex: …`). Keys
//! outside `tap` and `pcapdump` are ignored (a Kubeshark values file may be reused);
//! unknown keys inside them are errors, but Kubeshark's other `tap` keys are accepted and
//! ignored. The filter expression is checked by the sensor, which compiles it.
use regex::Regex;
use serde_yaml::Value;

use crate::{settings::SettingsDoc, units};

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
}

impl TargetingDoc {
    /// Parses and validates a document.
    pub fn parse(text: &str) -> Result<Self, TargetingError> {
        let root: Value = serde_yaml::from_str(text).map_err(|e| TargetingError::Yaml(e.to_string()))?;
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
                "stopped" => self.stopped = boolean(&full, value)?,
                other if IGNORED_TAP_KEYS.contains(&other) => {}
                _ => {
                    return Err(key_error(
                        &full,
                        "unknown key (known: regex, namespaces, excludedNamespaces, bpfOverride, stopped)",
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
                "timeInterval" | "debug" | "dest" => {}
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
                self.pcapdump.enabled
            },
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
