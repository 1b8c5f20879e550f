//! The recording settings as the sensor's API takes them (`PATCH /api/v1/config`), and as
//! flags and the targeting file's `pcapdump` give them: each key optional, units explicit
//! (`sensor/src/settings.rs` has the rules that apply them).
use serde::{Deserialize, Serialize};

/// The settings as the API takes them (and as flags and the targeting file give them).
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
