//! Runs the sensor until SIGTERM/SIGINT, wiring the stages: capture → (ring →) writer →
//! store, the API beside them, the targeting file's reloader and in Kubernetes mode the
//! pod watcher; capture thread → ring → writer thread, or, for the ring channel without
//! `--tap`, one thread from the kernel's ring buffer to the segments.
//!
//! Rules: the capture path is attached last and detached first; on a stop signal the
//! capture thread drains what is in flight, then the writer drains the ring and closes the
//! segment with exact statistics, then everything kernel-side is released.
use std::{sync::Arc, thread};

use crate::{
    api::{self, ApiState},
    archive::{ledger::Ledger, ArchiveHandle},
    capture::{Capture, CaptureError, CaptureOptions},
    cluster::{
        reconcile::{self, Reconciler},
        resolve::Resolver,
    },
    config::{
        settings::RuntimeSettings,
        targeting::{ConfigFile, FilterSlot, Targeting, RELOAD_INTERVAL},
    },
    flags::Config,
    pcapng::{InterfaceDescription, LINKTYPE_ETHERNET},
    ring::record_ring,
    shutdown::Shutdown,
    stats::Stats,
    store::kept::{keeper, recordings::Recordings, snapshots::Snapshots},
    store::{SegmentWriter, SharedView, StoreError},
    sys,
    tls::TlsSecrets,
    writer::{spawn_writer, Recorder, WriterCommand},
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("--listen {addr}: cannot serve the API")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Settings(crate::config::settings::SettingsError),
    #[error("the API's state")]
    ApiState(#[source] crate::api::ApiStateError),
    #[error("TLS: {0}")]
    Tls(#[source] api::server::TlsError),
    #[error("the {0} thread failed")]
    Thread(&'static str),
    #[error("--targeting: {0}")]
    Targeting(#[source] crate::config::targeting::TargetingError),
    #[error("snapshots: {0}")]
    Snapshots(#[source] crate::store::kept::snapshots::SnapshotError),
    #[error("recordings: {0}")]
    Recordings(#[source] crate::store::kept::recordings::RecordingError),
    #[error("Kubernetes: {0}")]
    Kubernetes(#[source] reconcile::WatchStartError),
    #[error(transparent)]
    Archive(#[from] podcap_archive::ArchiveError),
}

/// One Interface Description Block per captured interface, in slot order.
fn interface_descriptions(config: &Config) -> Vec<InterfaceDescription> {
    config
        .capture
        .interfaces
        .iter()
        .map(|i| (i, "tc ingress and egress"))
        .chain(config.capture.tap.iter().map(|i| (i, "tap: frames received")))
        .map(|(i, how)| InterfaceDescription {
            name: i.name.clone(),
            description: format!("podcap: {} (ifindex {}, {how})", i.name, i.ifindex),
            link_type: LINKTYPE_ETHERNET,
            snaplen: config.capture.snaplen,
        })
        .collect()
}

/// Runs until a stop signal (or `stop` is set).
pub fn run(config: &Config, stop: &Shutdown) -> Result<(), RunError> {
    let interfaces = interface_descriptions(config);
    let pool = config.kubernetes.as_ref().map_or(0, |k| k.max_pods);
    let stats = Arc::new(Stats::new(interfaces.len() + pool as usize));
    let mut store = SegmentWriter::open(&config.store.data_dir, config.store.limits, interfaces)?;
    let settings = Arc::new(
        RuntimeSettings::start(
            &config.store.data_dir,
            config.store.settings.clone(),
            config.store.floors,
        )
        .map_err(RunError::Settings)?,
    );
    let targeting = Arc::new(std::sync::Mutex::new(config.targeting.clone()));
    let (kept, keeper) = keep(config, store.view(), &targeting, stop)?;
    let archive = start_archive(config, &mut store, &kept)?;
    let filter = Arc::new(FilterSlot::new(config.capture.filter.clone()));
    store.set_retention(settings.max_size(), settings.max_time());
    store.set_write_mode(config.store.write_mode);
    store.set_min_free(config.store.min_free);
    let mut capture = Capture::start(&capture_options(config, pool, Arc::clone(&filter)))?;
    let (capture_commands, capture_rx) = std::sync::mpsc::channel();
    capture.set_commands(capture_rx);
    let (writer_commands, writer_rx) = std::sync::mpsc::channel();
    settings.on_retention_change({
        let writer = writer_commands.clone();
        // A writer that stopped has no store to retire from: nothing to tell.
        move |max_size, max_time| drop(writer.send(WriterCommand::SetRetention { max_size, max_time }))
    });
    let names: Vec<&str> = config
        .capture
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    log::info!(
        "capturing on {} into {} (snaplen {})",
        names.join(", "),
        config.store.data_dir.display(),
        config.capture.snaplen
    );
    log::info!("settings: {}", settings.describe());
    let api_state = api_state(config, &stats, &store, &settings, kept, archive.as_ref())?;
    let health = Arc::clone(&api_state.health);
    api_state.health.set_disk(store.disk());
    api_state.health.set_attached(true);
    let reloader = match &config.targeting_file {
        Some(path) => Some(spawn_reloader(
            path,
            config,
            Arc::clone(&settings),
            Arc::clone(&filter),
            Arc::clone(&targeting),
            Arc::clone(&api_state.config_error),
            stop.clone(),
        )?),
        None => None,
    };
    let (secrets, secrets_inbox) =
        match TlsSecrets::start(config.capture.tls_secrets, &mut capture, &capture_commands, stop)
            .map_err(|_| RunError::Thread("TLS secrets"))?
        {
            Some((secrets, inbox)) => (Some(secrets), Some(inbox)),
            None => (None, None),
        };
    let commands = (capture_commands, writer_commands);
    let pods = start_pods(config, commands, &targeting, &stats, stop)?;
    let api = start_api(config, api_state, secrets.as_ref(), stop)?;
    let recorder = Recorder::new(
        store,
        Arc::clone(&stats),
        Arc::clone(&health),
        sys::realtime_ns(),
        writer_rx,
    )
    .with_tls_secrets(secrets_inbox);
    let closed = record(&mut capture, recorder, config, &stats, &settings, stop)?;
    health.set_attached(false);
    drop(capture);
    log_totals(&stats);
    if let (Some(archive), Some(archive_config)) = (archive, &config.archive) {
        // The writer has closed its segment: it can go up too.
        archive.finish(archive_config.drain);
    }
    stop.request();
    let _ = api.join();
    let _ = keeper.join();
    for thread in [reloader, pods].into_iter().flatten() {
        let _ = thread.join();
    }
    if let Some(secrets) = secrets {
        secrets.finish();
    }
    closed?;
    Ok(())
}

/// What the capture is started with: the flags' capture settings, `pool` slots for pods
/// and the filter's slot.
fn capture_options(config: &Config, pool: u32, filter: Arc<FilterSlot>) -> CaptureOptions {
    let capture = &config.capture;
    CaptureOptions {
        interfaces: capture.interfaces.clone(),
        tap: capture.tap.clone(),
        snaplen: capture.snaplen,
        frames_per_queue: capture.xsk_frames,
        pool,
        filter,
        channel: capture.channel,
        ring_bytes: capture.ring_bytes,
        tls_secrets: capture.tls_secrets,
        tls_fence: config.kubernetes.is_some(),
        host_interfaces: config
            .kubernetes
            .as_ref()
            .map(|k| k.host_interfaces.clone())
            .unwrap_or_default(),
    }
}

/// The API's listener (HTTPS with `--tls-cert`), serving until `stop`.
fn start_api(
    config: &Config,
    api_state: ApiState,
    secrets: Option<&TlsSecrets>,
    stop: &Shutdown,
) -> Result<thread::JoinHandle<()>, RunError> {
    let api_state = ApiState {
        tls: secrets.map(TlsSecrets::counters),
        ..api_state
    };
    let tls = match &config.api.tls {
        Some((cert, key)) => Some(api::server::tls_acceptor(cert, key).map_err(RunError::Tls)?),
        None => None,
    };
    let api_url = api::server::describe(config.api.listen, tls.is_some());
    let api =
        api::serve(config.api.listen, api_state, tls, stop.clone()).map_err(|source| RunError::Listen {
            addr: config.api.listen,
            source,
        })?;
    log::info!("API on {api_url}");
    Ok(api)
}

fn log_totals(stats: &Stats) {
    let totals = stats.totals();
    log::info!(
        "stopped: {} packets seen, {} written; drops: kernel {}, ring {}, writer {}",
        totals.seen,
        totals.written,
        totals.kernel_drops,
        totals.ring_drops,
        totals.writer_drops
    );
}

/// Runs the capture into the segments until a stop signal; returns how the segments closed.
fn record(
    capture: &mut Capture,
    recorder: Recorder,
    config: &Config,
    stats: &Stats,
    settings: &RuntimeSettings,
    stop: &Shutdown,
) -> Result<Result<(), StoreError>, RunError> {
    let stopping = || stop.requested();
    if capture.delivers_only_copies() {
        log::info!("one thread from the kernel's ring buffer to the segments");
        let mut recorder = recorder;
        capture.run(&mut recorder, stats, settings, stopping);
        Ok(recorder.finish())
    } else {
        let (mut producer, consumer) = record_ring(config.capture.ring_bytes);
        let writer = spawn_writer(recorder, consumer).map_err(|_| RunError::Thread("writer"))?;
        capture.run(&mut producer, stats, settings, stopping);
        drop(producer);
        writer.join().map_err(|_| RunError::Thread("writer"))
    }
}

/// Follows the targeting file: a good new document applies at once (what changed of the
/// settings, persisted; the filter swapped unless `--filter` was given); a bad one is
/// logged and shown on `/readyz` while the last good one stays in force.
fn spawn_reloader(
    path: &std::path::Path,
    config: &Config,
    settings: Arc<RuntimeSettings>,
    filter: Arc<FilterSlot>,
    targeting: Arc<std::sync::Mutex<Targeting>>,
    config_error: Arc<std::sync::Mutex<Option<String>>>,
    stop: Shutdown,
) -> Result<thread::JoinHandle<()>, RunError> {
    let (mut file, _) = ConfigFile::open(path, config.capture.snaplen).map_err(RunError::Targeting)?;
    let filter_from_flag = config.capture.filter_from_flag;
    let path = path.display().to_string();
    thread::Builder::new()
        .name("podcap-targeting".into())
        .spawn(move || {
            while !stop.requested() {
                thread::sleep(RELOAD_INTERVAL);
                let error = match file.poll() {
                    None => continue,
                    Some(Err(e)) => Some(e.to_string()),
                    Some(Ok(next)) => match settings.apply_targeting(&next.settings()) {
                        Ok(()) => {
                            if !filter_from_flag {
                                filter.set(next.filter.clone());
                            }
                            *targeting
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
                            log::info!("{path}: reloaded");
                            None
                        }
                        Err(e) => Some(e.to_string()),
                    },
                };
                if let Some(e) = &error {
                    log::error!("{path}: {e}; the last good configuration stays in force");
                }
                *config_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
            }
        })
        .map_err(|_| RunError::Thread("config"))
}

/// What the node keeps past the rolling window: its snapshots and recording jobs.
struct Kept {
    snapshots: Arc<Snapshots>,
    recordings: Arc<Recordings>,
}

/// The node's snapshots and recording jobs, opened with the store, and the thread that
/// keeps them.
fn keep(
    config: &Config,
    view: SharedView,
    targeting: &Arc<std::sync::Mutex<Targeting>>,
    stop: &Shutdown,
) -> Result<(Kept, thread::JoinHandle<()>), RunError> {
    let kept = Kept {
        snapshots: Arc::new(
            Snapshots::open(&config.store.data_dir, config.kept.snapshot_max_size)
                .map_err(RunError::Snapshots)?,
        ),
        recordings: Arc::new(
            Recordings::open(
                &config.store.data_dir,
                config.kept.recordings_max_size,
                config.capture.snaplen,
            )
            .map_err(RunError::Recordings)?,
        ),
    };
    // Jobs follow a targeting file only when there is one: a restart without it deletes none.
    let wanted_jobs = config.targeting_file.is_some().then(|| {
        let targeting = Arc::clone(targeting);
        Box::new(move || targeting.lock().map(|t| t.recordings.clone()).unwrap_or_default())
            as keeper::WantedJobs
    });
    let keeper = keeper::spawn(
        Arc::clone(&kept.snapshots),
        Arc::clone(&kept.recordings),
        view,
        wanted_jobs,
        stop.clone(),
    )
    .map_err(|_| RunError::Thread("keeper"))?;
    Ok((kept, keeper))
}

/// What the API serves.
fn api_state(
    config: &Config,
    stats: &Arc<Stats>,
    store: &SegmentWriter,
    settings: &Arc<RuntimeSettings>,
    kept: Kept,
    archive: Option<&ArchiveHandle>,
) -> Result<ApiState, RunError> {
    let recorded: Vec<String> = config
        .capture
        .interfaces
        .iter()
        .chain(&config.capture.tap)
        .map(|i| i.name.clone())
        .collect();
    let built = ApiState::builder(config.store.data_dir.clone())
        .interfaces(recorded.clone())
        .stats(Arc::clone(stats))
        .token(config.api.token.as_deref())
        .admin_token(config.api.admin_token.as_deref())
        .writer(store.view(), store.flush_gate())
        .settings(Arc::clone(settings))
        .snapshots(kept.snapshots)
        .recordings(kept.recordings)
        .build()
        .map_err(RunError::ApiState)?;
    Ok(ApiState {
        // In Kubernetes mode interfaces come and go: `iface=` is not checked against a list.
        interfaces: if config.kubernetes.is_some() {
            Vec::new()
        } else {
            recorded
        },
        recovery: Arc::new(store.recovery().clone()),
        max_slice: config.api.max_slice,
        archive: archive.map(|a| Arc::clone(&a.stats)),
        kubernetes: config.kubernetes.is_some(),
        ..built
    })
}

/// The uploader, with `--archive`; with `--archive-segments` the store keeps what it waits
/// for from age retirement.
fn start_archive(
    config: &Config,
    store: &mut SegmentWriter,
    kept: &Kept,
) -> Result<Option<ArchiveHandle>, RunError> {
    let Some(archive) = &config.archive else {
        return Ok(None);
    };
    let ledger = Arc::new(Ledger::default());
    if archive.segments {
        store.set_archive_hold(Arc::clone(&ledger) as _);
    }
    let handle = crate::archive::start(
        archive.clone(),
        config.store.data_dir.clone(),
        store.view(),
        ledger,
        Some(Arc::clone(&kept.snapshots)),
        Some(Arc::clone(&kept.recordings)),
    )?;
    Ok(Some(handle))
}

/// Kubernetes mode: the pod watcher and the reconciler (`None` in standalone mode).
fn start_pods(
    config: &Config,
    (capture_commands, writer_commands): (
        std::sync::mpsc::Sender<crate::capture::CaptureCommand>,
        std::sync::mpsc::Sender<WriterCommand>,
    ),
    targeting: &Arc<std::sync::Mutex<Targeting>>,
    stats: &Arc<Stats>,
    stop: &Shutdown,
) -> Result<Option<thread::JoinHandle<()>>, RunError> {
    Ok(match &config.kubernetes {
        Some(k) => {
            let resolver = k.cgroup_root.clone().map_or_else(Resolver::detect, Resolver::new);
            let host: Vec<&str> = k.host_interfaces.iter().map(|i| i.name.as_str()).collect();
            log::info!(
                "Kubernetes mode: node {}, up to {} pod interfaces, cgroups under {}, hostNetwork pods on {}",
                k.node,
                k.max_pods,
                resolver.cgroup_root().display(),
                if host.is_empty() {
                    "no interface".into()
                } else {
                    host.join(", ")
                }
            );
            let reconciler = Reconciler::new(
                k.node.clone(),
                resolver,
                config.capture.snaplen,
                config.capture.interfaces.len() as u32,
                k.max_pods,
                capture_commands,
                writer_commands,
            )
            .with_host_interfaces(k.host_interfaces.clone())
            .with_stats(Arc::clone(stats))
            .with_tls_fence(config.capture.tls_secrets);
            Some(
                reconcile::spawn(k.api.as_deref(), reconciler, Arc::clone(targeting), stop.clone())
                    .map_err(RunError::Kubernetes)?,
            )
        }
        None => None,
    })
}
