//! The sensor's command line: raw clap flags, validated into a [`Config`] before anything is
//! attached (ripgrep's low/high args split). Every error names the flag it comes from.
//!
//! Layout: this file holds the flags ([`Args`]), the validated [`Config`], its errors and
//! [`Args::validate`]; `flags/host.rs` looks up what the flags name on this host
//! (interfaces, tap, token and targeting files), `flags/stages.rs` builds each stage's
//! settings from its flags.
use std::{path::PathBuf, time::Duration};

use clap::Parser;

use crate::{
    archive::ArchiveConfig,
    capture::{self, Interface},
    config::{
        settings::{Floors, SettingsError, StartInputs},
        targeting::{Targeting, TargetingError},
    },
    filter::Filter,
    store::{Limits, MinFree, WriteMode},
    units,
};

mod host;
mod stages;
mod values;

use self::host::{read_targeting, read_token, resolve_interfaces, resolve_tap};
pub use self::values::{Compression, Rate, Size, Span};

/// Raw flags, as typed.
#[derive(Debug, Parser)]
#[command(
    name = "podcap-sensor",
    version,
    about = "Records pod traffic into rotating pcapng segments"
)]
pub struct Args {
    /// Interface to capture (repeatable): tc programs see both directions.
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// A dedicated mirror/tap interface: XDP takes every frame it receives.
    #[arg(long, value_name = "IF")]
    pub tap: Option<String>,
    /// Directory for the pcapng segments.
    #[arg(long, value_name = "DIR", required_unless_present = "resolve_pod")]
    pub data_dir: Option<PathBuf>,
    /// Bytes kept of each packet (the rest is cut; the original length is kept). The
    /// channels keep at most: `ring` 65536 (a GSO super-frame whole), `af-xdp` and `--tap`
    /// 3824; the snap length in effect is logged at start and written in every file's
    /// interface blocks.
    #[arg(long, default_value_t = 262_144, value_name = "N")]
    pub snaplen: u32,
    /// How copies reach user space: `af-xdp` (clone, capture veth, XDP, AF_XDP; GSO
    /// super-frames as their wire segments) or `ring` (a copy into a BPF ring buffer by the
    /// tc program; super-frames whole, up to 64 KiB).
    #[arg(long, value_enum, default_value_t = capture::Channel::Ring, value_name = "CHANNEL")]
    pub channel: capture::Channel,
    /// Size at which a segment is closed and a new one begun.
    #[arg(long, default_value = "50MB", value_name = "SIZE")]
    pub segment_size: Size,
    /// Time after which a segment with packets is closed.
    #[arg(long, default_value = "1m", value_name = "DUR")]
    pub segment_time: Span,
    /// Total size of the store; oldest segments are deleted beyond it [default: 500MB, or
    /// pcapdump.maxSize of --targeting].
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Time window of the store; older segments are deleted [default: 1h, or
    /// pcapdump.maxTime of --targeting].
    #[arg(long, value_name = "DUR")]
    pub max_time: Option<String>,
    /// Keep this much of the store's file system free by retiring the oldest segments
    /// early (SIZE, or N% of the file system); without it, no segment is ever deleted for
    /// room and a full disk costs new packets instead (counted, and /readyz fails).
    #[arg(long, value_name = "SIZE|N%", value_parser = values::min_free)]
    pub min_free: Option<MinFree>,
    /// Write segments through the page cache. By default they are written with `O_DIRECT`
    /// where the file system allows it (less CPU, no page cache charged to the sensor's
    /// memory); this flag is for file systems or devices where buffered writes are faster.
    #[arg(long)]
    pub buffered_writes: bool,
    /// Read the TLS secrets of the node's Go programs and OpenSSL 3.0 libraries (uprobes)
    /// and write those of the
    /// sessions recorded into the segments, where Wireshark decrypts with them. Sensitive:
    /// whoever reads the store then reads that traffic in clear.
    #[arg(long)]
    pub tls_secrets: bool,
    /// Compress finished segments: `none` or `gzip` (Wireshark reads .pcapng.gz).
    #[arg(long, value_enum, default_value_t = Compression::None, value_name = "HOW")]
    pub compress: Compression,
    /// The longest time range one snapshot may span (e.g. 2h); longer requests are refused.
    #[arg(long, value_name = "DUR")]
    pub max_slice: Option<Span>,
    /// Total size of the snapshots kept on this node (`DATA/snapshots/`), apart from the
    /// store's --max-size; a snapshot that does not fit is refused, none is deleted for it.
    #[arg(long, default_value = "1GB", value_name = "SIZE")]
    pub snapshot_max_size: Size,
    /// Total size of what recording jobs keep on this node (`DATA/recordings/`), apart from
    /// the store and the snapshots; a job that finds it full counts its packets as drops.
    #[arg(long, default_value = "1GB", value_name = "SIZE")]
    pub recordings_max_size: Size,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:9090", value_name = "ADDR", value_parser = values::listen)]
    pub listen: std::net::SocketAddr,
    /// File holding the API's bearer token (required to listen beyond loopback).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The API's bearer token (prefer --token-file: the environment is visible in /proc).
    #[arg(long = "token", env = "PODCAP_TOKEN", hide_env_values = true, hide = true)]
    pub token: Option<String>,
    /// File holding the API's admin token: it alone may change the settings (and it reads
    /// too). Without it, the settings cannot be changed through the API once a read token
    /// is set.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    #[arg(
        long = "admin-token",
        env = "PODCAP_ADMIN_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub admin_token: Option<String>,
    /// Serve the API over TLS with this certificate chain (PEM; with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bytes of the buffer between the kernel and the segments: the kernel's ring buffer
    /// with --channel ring (rounded up to a power of two), and the user-space ring between
    /// the capture and writer threads wherever AF_XDP sockets deliver (--channel af-xdp,
    /// --tap).
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = values::ring_size)]
    pub ring_size: usize,
    /// AF_XDP frames (4 KiB each) per capture queue [default: 64 with --channel ring and no --tap, else
    /// 4096, 1024 with --node].
    #[arg(long, value_name = "N")]
    pub xsk_frames: Option<u32>,
    /// Kubernetes mode: the node this sensor runs on (its pods are watched and the ones the
    /// targeting selects are captured as they come and go).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node: Option<String>,
    /// Kubernetes API URL without authentication (`kubectl proxy`, tests); else the
    /// in-cluster service account or the kubeconfig.
    #[arg(long, value_name = "URL", requires = "node")]
    pub kube_api: Option<String>,
    /// Pod interfaces captured at once in Kubernetes mode.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_pods: u32,
    /// Kubernetes mode: a node interface on which hostNetwork pods are recorded, selected
    /// by cgroup (repeatable) [default: the interfaces of the default routes].
    #[arg(long = "host-iface", value_name = "IF", requires = "node")]
    pub host_ifaces: Vec<String>,
    /// Record only packets matching this tcpdump filter expression (e.g. "tcp port 80").
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Targeting file (Kubeshark keys: tap.regex, tap.namespaces, tap.excludedNamespaces,
    /// tap.bpfOverride, tap.stopped, pcapdump.enabled/maxTime/maxSize), reloaded on change;
    /// at one start a flag wins over it (`--config` is its old name).
    #[arg(long = "targeting", visible_alias = "config", value_name = "FILE")]
    pub targeting_file: Option<PathBuf>,
    /// Print what the kernel sees of the pod with this UID (cgroup, network namespace,
    /// host-side interfaces) as JSON, and exit.
    #[arg(long, value_name = "UID")]
    pub resolve_pod: Option<String>,
    /// Root of the cgroup tree to search for pods [default: the host's cgroup v2 tree].
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// Upload snapshots, finished recording iterations (and with --archive-segments every
    /// finished segment) to object storage: `s3://BUCKET/PREFIX`, `gs://`, `az://` or `file:///DIR`. Credentials the
    /// standard way: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` (S3-compatible servers), web identity (IRSA).
    #[arg(long, value_name = "URL")]
    pub archive: Option<String>,
    /// Upload every finished segment of the rolling store too (a continuous archive).
    #[arg(long, requires = "archive")]
    pub archive_segments: bool,
    /// The cluster's name in the archive's keys.
    #[arg(long, default_value = "default", value_name = "NAME", env = "PODCAP_CLUSTER")]
    pub archive_cluster: String,
    /// This node's name in the archive's keys [default: --node, else the host name].
    #[arg(long, value_name = "NAME", requires = "archive")]
    pub archive_node: Option<String>,
    /// Upload at most this many bytes per second (e.g. 20MB/s) [default: no limit].
    #[arg(long, value_name = "RATE", requires = "archive")]
    pub archive_rate: Option<Rate>,
    /// After SIGTERM, how long to go on uploading what is left (keep it under the pod's
    /// termination grace period).
    #[arg(long, default_value = "20s", value_name = "DURATION")]
    pub archive_drain: Span,
    /// How long one request to the object store may take before it is given up and
    /// retried (the object is checked first, so a retry never makes a second copy).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub archive_timeout: Span,
}

/// Kubernetes mode's settings.
#[derive(Clone, Debug)]
pub struct Kubernetes {
    pub node: String,
    pub api: Option<String>,
    pub max_pods: u32,
    pub cgroup_root: Option<PathBuf>,
    /// Node interfaces on which hostNetwork pods are recorded by cgroup.
    pub host_interfaces: Vec<Interface>,
}

/// Validated configuration: each stage's settings, as the stage takes them.
#[derive(Clone, Debug)]
pub struct Config {
    pub capture: CaptureConfig,
    pub store: StoreConfig,
    pub api: ApiConfig,
    pub kept: KeptConfig,
    /// Kubernetes mode (`--node`).
    pub kubernetes: Option<Kubernetes>,
    /// `--config`, and what it held at start.
    pub targeting_file: Option<PathBuf>,
    pub targeting: Targeting,
    /// `--archive` and its flags.
    pub archive: Option<ArchiveConfig>,
}

/// What is captured, and how it reaches user space.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    pub interfaces: Vec<Interface>,
    pub tap: Option<Interface>,
    pub snaplen: u32,
    pub channel: capture::Channel,
    pub ring_bytes: usize,
    pub xsk_frames: u32,
    /// `--tls-secrets`.
    pub tls_secrets: bool,
    /// `--filter`, compiled; else `tap.bpfOverride` of the file.
    pub filter: Option<Filter>,
    /// `--filter` was given: the file's `tap.bpfOverride` does not apply.
    pub filter_from_flag: bool,
}

/// Where and how the store keeps segments.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub limits: Limits,
    /// What the settings start from: explicit flags and the targeting file's keys
    /// (`settings.rs` has the precedence).
    pub settings: StartInputs,
    /// The smallest retention the store accepts.
    pub floors: Floors,
    /// `--min-free`.
    pub min_free: Option<MinFree>,
    /// How segments are written (`--buffered-writes`).
    pub write_mode: WriteMode,
}

/// The HTTP API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub listen: std::net::SocketAddr,
    pub token: Option<String>,
    pub admin_token: Option<String>,
    /// `--tls-cert` and `--tls-key` (checked: they make a TLS configuration).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--max-slice`.
    pub max_slice: Option<Duration>,
}

/// The budgets of what the node keeps apart from the store.
#[derive(Clone, Copy, Debug)]
pub struct KeptConfig {
    /// `--snapshot-max-size`.
    pub snapshot_max_size: u64,
    /// `--recordings-max-size`.
    pub recordings_max_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: {source}")]
    Unit {
        flag: &'static str,
        #[source]
        source: units::UnitError,
    },
    #[error("--iface: unknown interface {name:?} (not in this network namespace)")]
    UnknownInterface { name: String },
    #[error("--iface: {name:?} is given twice")]
    DuplicateInterface { name: String },
    #[error("--tap: unknown interface {name:?} (not in this network namespace)")]
    UnknownTap { name: String },
    #[error("--tap: {name:?} is also given as --iface")]
    TapIsSelected { name: String },
    #[error("--data-dir: required")]
    NoDataDir,
    #[error("--host-iface: unknown interface {name:?} (not in this network namespace)")]
    UnknownHostInterface { name: String },
    #[error("--host-iface: {name:?} is also given as --iface")]
    HostInterfaceIsSelected { name: String },
    #[error("--tap: not available with --node (Kubernetes mode)")]
    TapWithNode,
    #[error("--max-pods: must be between 1 and 256, got {0}")]
    MaxPods(u32),
    #[error("--iface, --tap or --node: something to capture is needed")]
    NoInterface,
    #[error("--{flag}: cannot read {path}: {source}")]
    TokenFile {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("--{flag}: {path} is empty")]
    EmptyToken { flag: &'static str, path: String },
    #[error("--admin-token-file: the admin token must differ from the read token")]
    SameTokens,
    #[error("--archive: {0}")]
    Archive(String),
    #[error("--archive-segments: --segment-time {0} is longer than an hour; the archive files a segment under the hour it starts in and looks back one hour")]
    ArchiveSegmentTime(String),
    #[error(transparent)]
    Tls(#[from] crate::api::server::TlsError),
    #[error("--listen {0}: listening beyond loopback needs a token (--token-file or PODCAP_TOKEN)")]
    NoToken(std::net::SocketAddr),
    #[error("--snaplen: must be between 64 and 262144, got {0}")]
    Snaplen(u32),
    #[error("--xsk-frames: must be a power of two between 64 and 65536, got {0}")]
    XskFrames(u32),
    #[error("--filter {expression:?}: {source}")]
    Filter {
        expression: String,
        #[source]
        source: crate::filter::FilterError,
    },
    #[error("--targeting {path}: {source}")]
    Targeting {
        path: String,
        #[source]
        source: TargetingError,
    },
    #[error("--{flag} ({value}) keeps fewer than {min} segments of --{segment_flag} ({segment}): give at least {least}", min = crate::config::settings::MIN_SEGMENTS)]
    RetentionTooSmall {
        flag: &'static str,
        value: String,
        segment_flag: &'static str,
        segment: String,
        least: String,
    },
    #[error("--targeting {path}: pcapdump.{source}")]
    FileRetention {
        path: String,
        #[source]
        source: SettingsError,
    },
}

impl Args {
    /// Validates every flag; checks the interfaces exist.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        let write_mode = self.write_mode();
        let targeting = self
            .targeting_file
            .as_deref()
            .map(|p| read_targeting(p, self.snaplen))
            .transpose()?
            .unwrap_or_default();
        let (limits, settings, floors) = self.retention(&targeting)?;
        let archive = self.archive_config(limits.segment_time)?;
        let xsk_frames = self.check_kubernetes_and_frames()?;
        let (channel, snaplen) = self.channel_and_snaplen()?;
        if self.ifaces.is_empty() && self.tap.is_none() && self.node.is_none() {
            return Err(ConfigError::NoInterface);
        }
        let interfaces = resolve_interfaces(std::mem::take(&mut self.ifaces))?;
        let host_interfaces = self.host_interfaces(&interfaces)?;
        let tap = resolve_tap(self.tap, &interfaces)?;
        let listen = self.listen;
        let token = read_token("token-file", self.token_file.as_deref(), self.token)?;
        let admin_token = read_token(
            "admin-token-file",
            self.admin_token_file.as_deref(),
            self.admin_token,
        )?;
        if token.is_some() && token == admin_token {
            return Err(ConfigError::SameTokens);
        }
        if !listen.ip().is_loopback() && token.is_none() && admin_token.is_none() {
            return Err(ConfigError::NoToken(listen));
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => {
                crate::api::server::tls_acceptor(&cert, &key)?;
                Some((cert, key))
            }
            _ => None,
        };
        let filter_from_flag = self.filter.is_some();
        let filter = match self.filter {
            Some(expression) => Some(
                Filter::compile(&expression, self.snaplen)
                    .map_err(|source| ConfigError::Filter { expression, source })?,
            ),
            None => targeting.filter.clone(),
        };
        Ok(Config {
            archive,
            capture: CaptureConfig {
                interfaces,
                tap,
                snaplen,
                channel,
                ring_bytes: self.ring_size,
                xsk_frames,
                tls_secrets: self.tls_secrets,
                filter,
                filter_from_flag,
            },
            store: StoreConfig {
                data_dir: self.data_dir.ok_or(ConfigError::NoDataDir)?,
                limits,
                settings,
                floors,
                min_free: self.min_free,
                write_mode,
            },
            api: ApiConfig {
                listen,
                token,
                admin_token,
                tls,
                max_slice: self.max_slice.map(|span| span.duration),
            },
            kept: KeptConfig {
                snapshot_max_size: self.snapshot_max_size.bytes,
                recordings_max_size: self.recordings_max_size.bytes,
            },
            targeting_file: self.targeting_file,
            targeting,
            kubernetes: self.node.map(|node| Kubernetes {
                node,
                api: self.kube_api,
                max_pods: self.max_pods,
                cgroup_root: self.cgroup_root,
                host_interfaces,
            }),
        })
    }
}
