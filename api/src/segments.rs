//! `GET /api/v1/segments` and the queries of the downloads (`/api/v1/snapshot`,
//! `/api/v1/live`, a recording's and a snapshot's `pcapng`). The sensor parses the
//! download queries itself (a parameter given twice is a 400, `namespace` repeats); the
//! types here document them and let a client build them.
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A segment of the store, as the list shows it. Its field names are the list's own
/// (snake case, `first_ns`), kept as they always were.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    /// The file's name in the data directory (`podcap-0000000001.pcapng`, the active one
    /// ending in `.active`, quarantined ones under `quarantine/`).
    pub name: String,
    /// The first and last packet's time, nanoseconds since the epoch (UTC).
    pub first_ns: u64,
    pub last_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// A time range: `last=DUR`, or `from`/`to` (RFC 3339; `to` defaults to now).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// The last span of time, like `5m` or `1h30m` (not with `from`/`to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^([1-9][0-9]{0,5}(ms|s|m|h|d))+$")]
    pub last: Option<String>,
    /// The window's start, RFC 3339 (`2026-12-07T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// The window's end, RFC 3339; absent: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// What a download selects, besides its window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SelectionQuery {
    /// Interfaces, comma-separated, as the sensor names them (`eth0`) or as a merged file
    /// does (`SENSOR/eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// A tcpdump filter expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// A regular expression on pod names (Kubernetes mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Namespaces (repeat the parameter for more than one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[param(explode = true)]
    pub namespace: Vec<String>,
}

/// Whether a download carries the TLS secrets of the sessions it delivers (the admin
/// token's; a read token's download says `x-podcap-secrets: withheld`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SecretsQuery {
    /// The TLS secrets (Decryption Secrets Blocks) of the sessions the download delivers.
    #[param(default = false)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<bool>,
}
