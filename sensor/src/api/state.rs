//! What the handlers share ([`ApiState`]) and how it is put together ([`ApiStateBuilder`]).
//!
//! Rules:
//! - The state holds services, never "absent in tests": the store's view and its flush
//!   gate, the live settings, the kept snapshots and recording jobs are always there, so no
//!   handler checks for them. What is optional is optional for the sensor too: the tokens
//!   (none: open, loopback only), `--max-slice`, `--archive` and `--tls-secrets`.
//! - The sensor builds its state from the running writer and what it opened at start
//!   (`run.rs`); tests and embedders use the builder, which opens what they do not give in
//!   the data directory the way the sensor would: the store as its manifest says (finished
//!   segments, no writer: a flush is answered at once), the settings with no flags, and
//!   snapshots and recording jobs with the flags' default budgets.
use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use super::{ApiTraffic, BODY_TIMEOUT, MAX_LIVE, MAX_SNAPSHOTS};
use crate::{
    archive::ArchiveStats,
    config::settings::{Floors, RuntimeSettings, SettingsError, StartInputs},
    health::Health,
    shutdown::Shutdown,
    stats::Stats,
    store::{
        flush::FlushGate,
        index::{Index, ManifestError},
        kept::{
            recordings::{RecordingError, Recordings},
            snapshots::{SnapshotError, Snapshots},
        },
        recover::RecoveryReport,
        SharedView, StoreView,
    },
    tls::TlsCounters,
};

/// The budget of the builder's snapshots and recording jobs when none are given (the
/// flags' default, 1 GB each).
pub const DEFAULT_KEPT_BUDGET: u64 = 1_000_000_000;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub data_dir: PathBuf,
    /// The interfaces `iface=` may name (empty: any, as in Kubernetes mode).
    pub interfaces: Vec<String>,
    /// The interfaces given at start, in slot order: their counters are `/metrics`'s
    /// per-interface series (pods' come from [`Stats::pods`]).
    pub recorded_interfaces: Vec<String>,
    /// Capture attached, and the store's file system as the writer last saw it.
    pub health: Arc<Health>,
    pub stats: Arc<Stats>,
    /// The read token.
    pub token: Option<Arc<str>>,
    /// The admin token (changes the settings; reads too).
    pub admin_token: Option<Arc<str>>,
    /// Slices (downloads, snapshots being made) running at once.
    pub slice_permits: Arc<Semaphore>,
    pub live: Arc<Semaphore>,
    /// The longest time range one snapshot may span (`--max-slice`); longer ones get 400.
    pub max_slice: Option<Duration>,
    /// Why the targeting file's last change could not apply (shown by `/readyz`).
    pub config_error: Arc<std::sync::Mutex<Option<String>>>,
    /// Set when the sensor stops: live streams end so the server can shut down.
    pub stopping: Shutdown,
    /// The store as the writer publishes it: finished segments and the readable part of
    /// the active one.
    pub view: SharedView,
    /// The writer's flush on demand (`store/flush.rs`).
    pub flush: Arc<FlushGate>,
    /// The live recording settings (`/api/v1/config`).
    pub settings: Arc<RuntimeSettings>,
    /// What start-up recovery found in the store.
    pub recovery: Arc<RecoveryReport>,
    /// The snapshots kept on this node.
    pub snapshots: Arc<Snapshots>,
    /// The recording jobs of this node.
    pub recordings: Arc<Recordings>,
    /// The archive's counters and its hold on the store; absent: no `--archive`.
    pub archive: Option<Arc<ArchiveStats>>,
    /// What became of the TLS secrets; absent: no `--tls-secrets` (a download that asks
    /// for secrets without the admin token is then not told they were withheld).
    pub tls: Option<TlsCounters>,
    /// Time a request's body has to arrive whole ([`BODY_TIMEOUT`]).
    pub body_timeout: Duration,
    /// What the API served (`/metrics`: requests by route and status, download bytes).
    pub traffic: Arc<ApiTraffic>,
    /// The sensor follows the pods of a Kubernetes node (`--kubernetes`), rather than
    /// interfaces named at start (`/api/v1/status`'s `mode`).
    pub kubernetes: bool,
}

impl ApiState {
    /// A builder for the state of a sensor whose store is `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> ApiStateBuilder {
        ApiStateBuilder {
            data_dir: data_dir.into(),
            interfaces: Vec::new(),
            stats: None,
            token: None,
            admin_token: None,
            writer: None,
            settings: None,
            snapshots: None,
            recordings: None,
        }
    }
}

/// Why the builder could not open what it was not given.
#[derive(Debug, thiserror::Error)]
pub enum ApiStateError {
    #[error("reading the store's manifest")]
    Manifest(#[from] ManifestError),
    #[error("the recording settings")]
    Settings(#[from] SettingsError),
    #[error("the snapshots")]
    Snapshots(#[from] SnapshotError),
    #[error("the recording jobs")]
    Recordings(#[from] RecordingError),
}

/// Puts an [`ApiState`] together (rules in the module header).
#[must_use]
pub struct ApiStateBuilder {
    data_dir: PathBuf,
    interfaces: Vec<String>,
    stats: Option<Arc<Stats>>,
    token: Option<Arc<str>>,
    admin_token: Option<Arc<str>>,
    writer: Option<(SharedView, Arc<FlushGate>)>,
    settings: Option<Arc<RuntimeSettings>>,
    snapshots: Option<Arc<Snapshots>>,
    recordings: Option<Arc<Recordings>>,
}

impl ApiStateBuilder {
    /// The interfaces recorded since start (and the ones `iface=` may name).
    pub fn interfaces<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.interfaces = names.into_iter().map(Into::into).collect();
        self
    }

    /// The capture's counters (default: one slot per interface, all zero).
    pub fn stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The read token (none, and no admin token: everything is open).
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(Arc::from);
        self
    }

    /// The admin token.
    pub fn admin_token(mut self, token: Option<&str>) -> Self {
        self.admin_token = token.map(Arc::from);
        self
    }

    /// The running writer's view and flush gate.
    pub fn writer(mut self, view: SharedView, flush: Arc<FlushGate>) -> Self {
        self.writer = Some((view, flush));
        self
    }

    pub fn settings(mut self, settings: Arc<RuntimeSettings>) -> Self {
        self.settings = Some(settings);
        self
    }

    pub fn snapshots(mut self, snapshots: Arc<Snapshots>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    pub fn recordings(mut self, recordings: Arc<Recordings>) -> Self {
        self.recordings = Some(recordings);
        self
    }

    /// The state, opening in the data directory what was not given.
    pub fn build(self) -> Result<ApiState, ApiStateError> {
        let dir = self.data_dir;
        let (view, flush) = if let Some(writer) = self.writer {
            writer
        } else {
            let view = StoreView {
                index: Index::load(&dir)?.unwrap_or_default(),
                ..StoreView::default()
            };
            (
                Arc::new(std::sync::RwLock::new(view)),
                Arc::new(FlushGate::without_writer()),
            )
        };
        let settings = match self.settings {
            Some(settings) => settings,
            None => Arc::new(RuntimeSettings::start(
                &dir,
                StartInputs::default(),
                Floors::DEFAULT,
            )?),
        };
        let snapshots = match self.snapshots {
            Some(snapshots) => snapshots,
            None => Arc::new(Snapshots::open(&dir, DEFAULT_KEPT_BUDGET)?),
        };
        let recordings = match self.recordings {
            Some(recordings) => recordings,
            None => Arc::new(Recordings::open(&dir, DEFAULT_KEPT_BUDGET, u32::from(u16::MAX))?),
        };
        let stats = self
            .stats
            .unwrap_or_else(|| Arc::new(Stats::new(self.interfaces.len().max(1))));
        Ok(ApiState {
            data_dir: dir,
            recorded_interfaces: self.interfaces.clone(),
            interfaces: self.interfaces,
            health: Arc::default(),
            stats,
            token: self.token,
            admin_token: self.admin_token,
            slice_permits: Arc::new(Semaphore::new(MAX_SNAPSHOTS)),
            live: Arc::new(Semaphore::new(MAX_LIVE)),
            max_slice: None,
            config_error: Arc::default(),
            stopping: Shutdown::new(),
            view,
            flush,
            settings,
            recovery: Arc::default(),
            snapshots,
            recordings,
            archive: None,
            tls: None,
            body_timeout: BODY_TIMEOUT,
            traffic: Arc::default(),
            kubernetes: false,
        })
    }
}
