//! Each stage's settings from its flags: the capture's channel, snap length and AF_XDP
//! frames, the ring, the store's limits and write mode, the archive.
//!
//! Rules: clap parsed every value (`values.rs`); what is checked here names its flag (a
//! targeting file's key names the key); the smallest retention is checked against the
//! segment size and time (`config/settings.rs` has the floors).
use std::time::Duration;

use super::{host::resolve_host_interfaces, Args, Compression, ConfigError, Interface};
use crate::{
    archive::ArchiveConfig,
    capture,
    config::{
        settings::{Floors, SettingsDoc, SettingsError, StartInputs},
        targeting::Targeting,
    },
    store::{Limits, WriteMode},
    units,
};

impl Args {
    /// `--xsk-frames` (default by mode) and the Kubernetes mode's own flags.
    pub(super) fn check_kubernetes_and_frames(&self) -> Result<u32, ConfigError> {
        let xsk_frames = self
            .xsk_frames
            // The ring channel leaves the AF_XDP sockets idle: keep their UMEM small.
            .unwrap_or(if self.channel == capture::Channel::Ring && self.tap.is_none() {
                64
            } else if self.node.is_some() {
                1024
            } else {
                4096
            });
        if !xsk_frames.is_power_of_two() || !(64..=65_536).contains(&xsk_frames) {
            return Err(ConfigError::XskFrames(xsk_frames));
        }
        if self.node.is_some() && self.tap.is_some() {
            return Err(ConfigError::TapWithNode);
        }
        if !(1..=256).contains(&self.max_pods) {
            return Err(ConfigError::MaxPods(self.max_pods));
        }
        Ok(xsk_frames)
    }

    /// `--channel`, and `--snaplen` cut to what it carries (a tap is always read through
    /// AF_XDP, whose frames are shorter).
    pub(super) fn channel_and_snaplen(&self) -> Result<(capture::Channel, u32), ConfigError> {
        if !(64..=262_144).contains(&self.snaplen) {
            return Err(ConfigError::Snaplen(self.snaplen));
        }
        let channel = self.channel;
        let most = if self.tap.is_some() {
            capture::max_snaplen()
        } else {
            channel.max_snaplen()
        };
        Ok((channel, self.snaplen.min(most)))
    }

    /// Kubernetes mode's node interfaces for hostNetwork pods.
    pub(super) fn host_interfaces(&mut self, selected: &[Interface]) -> Result<Vec<Interface>, ConfigError> {
        if self.node.is_none() {
            return Ok(Vec::new());
        }
        resolve_host_interfaces(std::mem::take(&mut self.host_ifaces), selected)
    }

    /// `--buffered-writes`.
    pub(super) fn write_mode(&self) -> WriteMode {
        if self.buffered_writes {
            WriteMode::Buffered
        } else {
            WriteMode::Direct
        }
    }

    /// The store's limits, the settings' start inputs (explicit flags, the file's keys) and
    /// the smallest retention: flags checked naming the flag, the file's keys naming the key.
    pub(super) fn retention(
        &mut self,
        targeting: &Targeting,
    ) -> Result<(Limits, StartInputs, Floors), ConfigError> {
        let size = |flag: &'static str, v: &str| {
            units::parse_size(v).map_err(|source| ConfigError::Unit { flag, source })
        };
        let dur = |flag: &'static str, v: &str| -> Result<Duration, ConfigError> {
            units::parse_duration(v).map_err(|source| ConfigError::Unit { flag, source })
        };
        let floors = Floors {
            segment_size: self.segment_size.bytes,
            segment_time: self.segment_time.duration,
        };
        let settings = StartInputs {
            flags: SettingsDoc {
                enabled: None,
                max_time: self.max_time.take(),
                max_size: self.max_size.take(),
            },
            targeting: targeting.settings(),
        };
        let flag_error = |e: SettingsError| match e {
            SettingsError::Invalid { key, source } => ConfigError::Unit {
                flag: if key == "maxSize" { "max-size" } else { "max-time" },
                source,
            },
            SettingsError::TooSmall {
                key, value, least, ..
            } => {
                let (flag, segment_flag, segment) = if key == "maxSize" {
                    ("max-size", "segment-size", self.segment_size.to_string())
                } else {
                    ("max-time", "segment-time", self.segment_time.to_string())
                };
                ConfigError::RetentionTooSmall {
                    flag,
                    value,
                    segment_flag,
                    segment,
                    least,
                }
            }
            other @ SettingsError::Persist { .. } => ConfigError::FileRetention {
                path: String::new(),
                source: other,
            },
        };
        let (flag_size, flag_time) = floors.check(&settings.flags).map_err(flag_error)?;
        let (file_size, file_time) =
            floors
                .check(&settings.targeting)
                .map_err(|source| ConfigError::FileRetention {
                    path: self
                        .targeting_file
                        .as_deref()
                        .unwrap_or_else(|| std::path::Path::new(""))
                        .display()
                        .to_string(),
                    source,
                })?;
        let limits = Limits {
            compress: self.compress == Compression::Gzip,
            segment_size: floors.segment_size,
            segment_time: floors.segment_time,
            max_size: flag_size
                .or(file_size)
                .map_or_else(|| size("max-size", crate::config::settings::DEFAULT_MAX_SIZE), Ok)?,
            max_time: flag_time
                .or(file_time)
                .map_or_else(|| dur("max-time", crate::config::settings::DEFAULT_MAX_TIME), Ok)?,
        };
        Ok((limits, settings, floors))
    }

    /// `--archive` and its flags, checked (the URL's form, the names, the rate).
    pub(super) fn archive_config(
        &mut self,
        segment_time: Duration,
    ) -> Result<Option<ArchiveConfig>, ConfigError> {
        let Some(url) = self.archive.take() else {
            return Ok(None);
        };
        let node = match self.archive_node.clone().or_else(|| self.node.clone()) {
            Some(node) => node,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .map_err(|e| ConfigError::Archive(format!("no --archive-node and no host name: {e}")))?,
        };
        let check = |what, name: &str| {
            podcap_archive::layout::check_name(what, name).map_err(|e| ConfigError::Archive(e.to_string()))
        };
        check("--archive-cluster", &self.archive_cluster)?;
        check("node", &node)?;
        let scheme_ok = [
            "s3://", "s3a://", "gs://", "az://", "azure://", "abfs://", "abfss://", "file:///",
        ]
        .iter()
        .any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(ConfigError::Archive(format!(
                "{url:?} is not s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or file:///DIR"
            )));
        }
        if self.archive_segments && segment_time > Duration::from_hours(1) {
            return Err(ConfigError::ArchiveSegmentTime(self.segment_time.to_string()));
        }
        if self.archive_segments && self.tls_secrets {
            return Err(ConfigError::Archive(
                "--archive-segments with --tls-secrets would upload the segments' TLS secrets; the archive does not leave them out yet: drop one of the two".into(),
            ));
        }
        let rate = self.archive_rate.as_ref().map(|rate| rate.bytes_per_second);
        let drain = self.archive_drain.duration;
        let request_timeout = self.archive_timeout.duration;
        if request_timeout.is_zero() {
            return Err(ConfigError::Archive(
                "--archive-timeout must be longer than 0s".to_owned(),
            ));
        }
        Ok(Some(ArchiveConfig {
            url,
            cluster: self.archive_cluster.clone(),
            node,
            segments: self.archive_segments,
            rate,
            drain,
            request_timeout,
        }))
    }
}
