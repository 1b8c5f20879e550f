//! TLS secrets (`--tls-secrets`): read by uprobes in the node's Go programs and OpenSSL
//! libraries, kept only for
//! sessions the sensor recorded, written into the segments as Decryption Secrets Blocks
//! (`docs/design/tls.md`).
//!
//! Rules: off unless asked for (the secrets decrypt what was recorded: whoever reads the
//! store reads the traffic in clear). The collector thread finds the Go binaries
//! ([`go`]), asks the capture thread (which owns the eBPF programs) to probe them, and
//! hands every secret the probes read to the writer; the writer keeps one only when a
//! captured ClientHello carried its client random (`podcap_format::client_hello`, [`scope`]). A secret that
//! cannot be carried whole is counted, never cut or guessed; a library whose layout is
//! not known is named, never probed ([`openssl`]).
pub mod go;
pub mod openssl;
pub mod pclntab;
pub mod scope;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc::{self, Sender},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use crate::capture::TlsSecretMaps;
use podcap_common::{TlsSecretEvent, TLS_LABEL_MAX, TLS_RANDOM_LEN, TLS_SECRET_MAX, TLS_SECRET_UNREADABLE};

pub use self::scope::Secret;
use self::scope::SecretsInbox;
use crate::{
    capture::{CaptureCommand, TlsProbe},
    shutdown::Shutdown,
    sys,
};

/// How often a file whose probe could not be attached is tried.
pub const PROBE_ATTEMPTS: u32 = 5;

/// The files (device, inode) looked at for probing: each once, and again only when its
/// probe could not be attached ([`FilesLooked::retry_later`]).
#[derive(Debug, Default)]
pub struct FilesLooked {
    seen: HashSet<(u64, u64)>,
    /// Files whose probe failed: the attempts so far, and when to try again.
    retries: HashMap<(u64, u64), (u32, Instant)>,
}

impl FilesLooked {
    /// Whether `file` is to be looked at now: not before, or its retry is due.
    pub fn first_look(&mut self, file: (u64, u64)) -> bool {
        if self
            .retries
            .get(&file)
            .is_some_and(|(_, at)| *at > Instant::now())
        {
            return false;
        }
        self.seen.insert(file)
    }

    /// `file` is to be looked at again when it is next seen (its probe was detached).
    pub fn forget(&mut self, file: (u64, u64)) {
        self.seen.remove(&file);
        self.retries.remove(&file);
    }

    /// `file`'s probe could not be attached (its process may have exited, the capture
    /// thread was busy): it is looked at again after a wait that doubles with each attempt
    /// from 2 s, up to [`PROBE_ATTEMPTS`] in all. Whether it will be.
    pub fn retry_later(&mut self, file: (u64, u64)) -> bool {
        let attempts = self.retries.get(&file).map_or(1, |(n, _)| n + 1);
        if attempts >= PROBE_ATTEMPTS {
            return false;
        }
        let wait = Duration::from_secs(1 << attempts.min(6));
        self.retries.insert(file, (attempts, Instant::now() + wait));
        self.seen.remove(&file);
        true
    }
}

/// The ids of the node's processes (those in `/proc`) but the sensor's own.
fn other_processes() -> impl Iterator<Item = u32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(move |pid| *pid != own)
}

/// Scans in a row that must find no process using a probed file before its probe is
/// detached (a process read halfway through a scan is not taken for gone).
pub const ABSENT_SCANS: u32 = 3;

/// The files probed (device, inode → what they are, for the log), and how many scans in a
/// row found no process using each.
#[derive(Debug, Default)]
pub struct ProbedFiles {
    files: HashMap<(u64, u64), (String, u32)>,
}

impl ProbedFiles {
    pub fn add(&mut self, file: (u64, u64), what: String) {
        self.files.insert(file, (what, 0));
    }

    /// After a scan that found the files in `in_use`: the probed files no process used in
    /// [`ABSENT_SCANS`] scans in a row, forgotten here.
    pub fn gone(&mut self, in_use: &HashSet<(u64, u64)>) -> Vec<((u64, u64), String)> {
        let mut gone = Vec::new();
        self.files.retain(|file, (what, absent)| {
            *absent = if in_use.contains(file) { 0 } else { *absent + 1 };
            if *absent >= ABSENT_SCANS {
                gone.push((*file, std::mem::take(what)));
                return false;
            }
            true
        });
        gone
    }
}

/// What the collector saw (statistics: `Relaxed`, nothing is published through them).
#[derive(Debug, Default)]
pub struct CollectorStats {
    /// Go binaries and OpenSSL libraries probed.
    pub probed: AtomicU64,
    /// TLS libraries found but not probed, by release (`OpenSSL 3.1.4`): their layout is
    /// not known here. Counted per file.
    pub unsupported: Mutex<BTreeMap<String, u64>>,
    /// Secrets read and handed to the writer.
    pub read: AtomicU64,
    /// Secrets the probe could not carry whole (a field longer than its room).
    pub too_long: AtomicU64,
    /// Secrets the probe could not read from the process (a page not in memory).
    pub unreadable: AtomicU64,
    /// Secrets lost because the probe's ring buffer was full (the collector fell behind).
    pub ring_full: AtomicU64,
    /// Probe hits of processes outside the targeted pods (Kubernetes mode): not read.
    pub not_in_pod: AtomicU64,
    /// Secrets left out because the writer had not taken the last [`scope::MAX_IN_FLIGHT`].
    pub writer_behind: AtomicU64,
}

/// What became of the secrets so far, as `/metrics` reads it.
#[derive(Clone, Debug)]
pub struct TlsCounters {
    pub collector: Arc<CollectorStats>,
    pub written: Arc<scope::SharedCounts>,
}

/// How often the node's processes are looked at for new Go binaries.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// The secret in one ring buffer record (`None`: a field did not fit, counted).
fn secret_of(record: &[u8], stats: &CollectorStats) -> Option<Secret> {
    if record.len() < std::mem::size_of::<TlsSecretEvent>() {
        return None;
    }
    // SAFETY: the record holds a whole `TlsSecretEvent` (checked above), a plain `repr(C)`
    // value valid for any bytes; read unaligned, as the ring buffer does not align it.
    let event: TlsSecretEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    if event.secret_len == TLS_SECRET_UNREADABLE {
        stats.unreadable.fetch_add(1, Relaxed);
        return None;
    }
    let (label_len, random_len, secret_len) = (
        event.label_len as usize,
        event.random_len as usize,
        event.secret_len as usize,
    );
    if label_len > TLS_LABEL_MAX
        || random_len != TLS_RANDOM_LEN
        || secret_len > TLS_SECRET_MAX
        || secret_len == 0
    {
        stats.too_long.fetch_add(1, Relaxed);
        log::debug!(
            "pid {}: a TLS secret that does not fit ({label_len}, {random_len}, {secret_len})",
            event.pid
        );
        return None;
    }
    let label = std::str::from_utf8(&event.label[..label_len]).ok()?;
    if label.is_empty()
        || !label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        stats.too_long.fetch_add(1, Relaxed);
        return None;
    }
    Some(Secret {
        label: label.to_owned(),
        random: event.random,
        secret: event.secret[..secret_len].to_vec(),
    })
}

/// Starts the collector: probes Go binaries and OpenSSL libraries as they appear (and
/// detaches them when no process uses them), hands their secrets to the writer, until
/// `stop`.
pub(crate) fn spawn(
    mut maps: TlsSecretMaps,
    capture: Sender<CaptureCommand>,
    writer: Sender<Secret>,
    counters: TlsCounters,
    stop: Shutdown,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("podcap-tls".into()).spawn(move || {
        let mut scanner = Scanner::default();
        let mut last_scan: Option<Instant> = None;
        while !stop.requested() {
            if last_scan.is_none_or(|at| at.elapsed() >= SCAN_INTERVAL) {
                scanner.scan(&capture, &counters.collector);
                last_scan = Some(Instant::now());
            }
            let _ = sys::poll_readable(&[maps.ring.as_raw_fd()], Duration::from_millis(200));
            if !drain(&mut maps, &writer, &counters) {
                return;
            }
        }
    })
}

/// What the collector looked at, and what it probed.
#[derive(Default)]
struct Scanner {
    binaries: go::GoBinaries,
    libraries: openssl::OpenSslLibraries,
    probed: ProbedFiles,
}

impl Scanner {
    /// One look at the node's processes: new Go binaries and OpenSSL libraries probed,
    /// those no process uses any more detached.
    fn scan(&mut self, capture: &Sender<CaptureCommand>, stats: &CollectorStats) {
        let mut in_use = HashSet::new();
        for binary in self.binaries.scan(&mut in_use) {
            let probe = TlsProbe::Go {
                offset: binary.offset,
            };
            let what = format!(
                "Go program {} (pid {}, {} at offset {:#x})",
                std::fs::read_link(&binary.path)
                    .map_or_else(|_| binary.path.display().to_string(), |p| p.display().to_string()),
                binary.pid,
                go::GO_KEYLOG_SYMBOL,
                binary.offset
            );
            let file = (binary.path.as_path(), binary.file);
            if attach(capture, file, probe, &what, &mut self.binaries.looked, stats) {
                self.probed.add(binary.file, what);
            }
        }
        for found in self.libraries.scan(&mut in_use) {
            match found {
                openssl::Found::Probe(library) => {
                    let what = format!(
                        "{} {} (pid {}, {})",
                        library.release,
                        library.path.display(),
                        library.pid,
                        openssl::PROBED_FUNCTIONS.join(", ")
                    );
                    let probe = TlsProbe::OpenSsl {
                        layout: library.layout,
                        offsets: library.offsets.clone(),
                    };
                    let file = (library.path.as_path(), library.file);
                    if attach(capture, file, probe, &what, &mut self.libraries.looked, stats) {
                        self.probed.add(library.file, what);
                    }
                }
                openssl::Found::Unsupported { path, release, why } => {
                    log::warn!(
                        "{}: {release}: its TLS secrets cannot be read: {why}",
                        path.display()
                    );
                    if let Ok(mut unsupported) = stats.unsupported.lock() {
                        *unsupported.entry(release).or_default() += 1;
                    }
                }
            }
        }
        for (file, what) in self.probed.gone(&in_use) {
            log::info!("no process uses {what} any more: its TLS secrets probe is detached");
            let _ = capture.send(CaptureCommand::UnprobeTls { file });
            self.binaries.looked.forget(file);
            self.libraries.looked.forget(file);
        }
    }
}

/// Hands every secret in the probes' ring to the writer (TLS 1.3 handshake events turned
/// into their two secrets); counts what it cannot. Whether the writer is still there.
fn drain(maps: &mut TlsSecretMaps, writer: &Sender<Secret>, counters: &TlsCounters) -> bool {
    let (stats, counts) = (&counters.collector, &counters.written);
    stats.ring_full.store(maps.lost(), Relaxed);
    stats.not_in_pod.store(maps.fenced(), Relaxed);
    while let Some(record) = maps.ring.next() {
        let Some(secret) = secret_of(&record, stats) else {
            continue;
        };
        let secrets = match openssl::handshake_traffic_secrets(&secret) {
            Some(derived) => derived.to_vec(),
            None if secret.label.as_bytes() == podcap_common::TLS_HANDSHAKE_LABEL => {
                stats.too_long.fetch_add(1, Relaxed);
                continue;
            }
            None => vec![secret],
        };
        for secret in secrets {
            stats.read.fetch_add(1, Relaxed);
            if counts.in_flight.load(Relaxed) >= scope::MAX_IN_FLIGHT {
                stats.writer_behind.fetch_add(1, Relaxed);
                continue;
            }
            counts.in_flight.fetch_add(1, Relaxed);
            if writer.send(secret).is_err() {
                return false;
            }
        }
    }
    true
}

/// Asks the capture thread to attach `probe` to the file at `path` (`file`: its device
/// and inode; `what` names it in the log); counts it, or has it tried again later. Whether
/// it was attached.
fn attach(
    capture: &Sender<CaptureCommand>,
    (path, file): (&std::path::Path, (u64, u64)),
    probe: TlsProbe,
    what: &str,
    looked: &mut FilesLooked,
    stats: &CollectorStats,
) -> bool {
    let (reply, replied) = mpsc::channel();
    let command = CaptureCommand::ProbeTls {
        path: path.to_owned(),
        file,
        probe,
        reply,
    };
    let attached = capture.send(command).is_ok()
        && match replied.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {
                log::info!("reading TLS secrets of {what}");
                true
            }
            Ok(Err(e)) => {
                log::warn!("cannot probe {what}: {e}");
                false
            }
            Err(_) => false,
        };
    if attached {
        stats.probed.fetch_add(1, Relaxed);
    } else if !looked.retry_later(file) {
        log::warn!(
            "{}: its TLS secrets cannot be read: the probe could not be attached {PROBE_ATTEMPTS} times",
            path.display()
        );
    }
    attached
}

/// The running collector and what it and the writer counted.
pub(crate) struct TlsSecrets {
    thread: thread::JoinHandle<()>,
    counters: TlsCounters,
}

impl TlsSecrets {
    /// With `enabled` (`--tls-secrets`): starts the collector on the capture's ring buffer
    /// of secrets; the writer's end of their channel comes with it.
    pub(crate) fn start(
        enabled: bool,
        capture: &mut crate::capture::Capture,
        capture_commands: &Sender<CaptureCommand>,
        stop: &Shutdown,
    ) -> std::io::Result<Option<(Self, SecretsInbox)>> {
        let Some(maps) = capture.take_tls_secrets().filter(|_| enabled) else {
            return Ok(None);
        };
        log::info!(
            "--tls-secrets: reading the TLS secrets of Go programs and OpenSSL 3.0 libraries; those of recorded sessions are written"
        );
        let counters = TlsCounters {
            collector: Arc::default(),
            written: Arc::default(),
        };
        let (to_writer, incoming) = std::sync::mpsc::channel();
        let inbox = SecretsInbox {
            incoming,
            counts: Arc::clone(&counters.written),
        };
        let thread = spawn(
            maps,
            capture_commands.clone(),
            to_writer,
            counters.clone(),
            stop.clone(),
        )?;
        Ok(Some((Self { thread, counters }, inbox)))
    }

    /// What `/metrics` reads.
    #[must_use]
    pub(crate) fn counters(&self) -> TlsCounters {
        self.counters.clone()
    }

    /// Waits for the collector (after the stop) and says what it did.
    pub(crate) fn finish(self) {
        let _ = self.thread.join();
        let (collector, written) = (&self.counters.collector, self.counters.written.get());
        log::info!(
            "TLS secrets: {} Go programs and OpenSSL libraries probed, {} secrets read, {} written ({} after their session's first packets), {} of sessions not recorded left out, {} too long to carry, {} unreadable, {} lost to a full ring, {} left out while the writer was behind, {} probe hits outside the targeted pods",
            collector.probed.load(Relaxed),
            collector.read.load(Relaxed),
            written.written,
            written.late,
            written.not_recorded,
            collector.too_long.load(Relaxed),
            collector.unreadable.load(Relaxed),
            collector.ring_full.load(Relaxed),
            collector.writer_behind.load(Relaxed),
            collector.not_in_pod.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_probe_is_tried_again_a_few_times() {
        let file = (1, 2);
        let mut looked = FilesLooked::default();
        assert!(
            looked.first_look(file) && !looked.first_look(file),
            "looked at once"
        );
        for attempt in 1..PROBE_ATTEMPTS {
            assert!(looked.retry_later(file), "attempt {attempt}");
            assert!(!looked.first_look(file), "not before its wait is over");
            looked.retries.get_mut(&file).unwrap().1 = Instant::now();
            assert!(looked.first_look(file), "looked at again after the wait");
        }
        assert!(!looked.retry_later(file), "given up after {PROBE_ATTEMPTS}");
        let mut fresh = FilesLooked::default();
        fresh.first_look(file);
        fresh.retry_later(file);
        fresh.retry_later(file);
        let (_, at) = fresh.retries[&file];
        assert!(at > Instant::now() + Duration::from_secs(3), "the wait doubles");
    }
}
