//! `GET/PATCH /api/v1/config`: the recording settings, where each value came from, and the
//! dry run that says what a retention change would retire.
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A change of the settings (`PATCH`): each key optional, units explicit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A duration with units, like `2h` or `1h30m`; at least 4 segment times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time: Option<String>,
    /// A size with a unit, like `2GB` or `2Gi`; at least 4 segment sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
}

/// The query of `PATCH /api/v1/config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConfigQuery {
    /// Check the change and say what it would retire, without applying it.
    #[serde(default)]
    pub dry_run: bool,
}

/// Who set a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Default,
    Flag,
    TargetingFile,
    Api,
}

impl Source {
    /// The name on the wire (`targeting-file`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Flag => "flag",
            Self::TargetingFile => "targeting-file",
            Self::Api => "api",
        }
    }
}

/// Where a value came from, and since when (RFC 3339).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Origin {
    pub source: Source,
    pub since: String,
}

/// The origin of each setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Origins {
    pub enabled: Origin,
    pub max_time: Origin,
    pub max_size: Origin,
}

/// What a retention change would retire at once (a dry run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Retired {
    pub segments: u64,
    pub bytes: u64,
    pub packets: u64,
}

/// The settings: values, and where each came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub enabled: bool,
    pub max_time: String,
    pub max_size: String,
    pub sources: Origins,
    /// Only in a dry run's answer: nothing was changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Only in a dry run's answer: what the change would retire at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_retire: Option<Retired>,
}
