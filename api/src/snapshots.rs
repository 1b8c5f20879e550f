//! `/api/v1/snapshots`: named snapshots kept past the rolling store (make, list, read,
//! delete, download). Times are RFC 3339 to the nanosecond.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What to keep (`POST /api/v1/snapshots`): a name, the window (`last`, or `from` and
/// `to`), what it selects and when it expires.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotRequest {
    /// 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// How far back from now, with units (`15m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// The window's start and end, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Interfaces, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// A tcpdump filter expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// A regular expression on pod names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Deleted this long after it is made (`7d`); absent: kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<String>,
}

/// What a snapshot selected, as asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSelection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// A kept snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotManifest {
    pub name: String,
    /// The window, `[from, to)`.
    pub from: String,
    pub to: String,
    pub selection: SnapshotSelection,
    pub created: String,
    /// When it is deleted; absent: kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub packets: u64,
    /// Size of the file.
    pub bytes: u64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// TLS key log lines the file holds (for the admin token only); absent: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub secrets: u64,
    /// SHA-256 of the file without its secrets, as the read token gets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_without_secrets: Option<String>,
    /// What the window's segments lost, by the kernel and by podcap.
    pub kernel_drops: u64,
    pub sensor_drops: u64,
    /// Parts of the store that could not be read (named in the file's notes).
    pub damaged_parts: u64,
    pub sensor_version: String,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A creation that failed on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotFailure {
    pub name: String,
    pub at: String,
    pub reason: String,
}

/// A folder that should be a snapshot and cannot be read as one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DamagedSnapshot {
    pub name: String,
    pub reason: String,
}

/// What one node holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotListing {
    pub snapshots: Vec<SnapshotManifest>,
    pub failed: Vec<SnapshotFailure>,
    pub damaged: Vec<DamagedSnapshot>,
    pub max_bytes: u64,
    pub used_bytes: u64,
}
