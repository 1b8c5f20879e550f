//! Recording jobs (Kubeshark's Traffic Recorder): a name, a selection (a tcpdump filter,
//! pods, namespaces), a schedule (`schedule.rs`) and an expiry; each iteration's packets
//! kept in their own folder, past the rolling window, under their own budget.
//!
//! Rules:
//! - A job follows the store: every `POLL` the runner copies what the store received since
//!   the iteration's cursor (up to `DELAY` behind the clock, as the live stream, so every
//!   packet of that time is in the store) through the job's selection into the iteration's
//!   files, with the store's own slicer (exact cuts, time order, pod interfaces, damage
//!   named). The capture path does no work for jobs.
//! - Layout: `DATA/recordings/NAME/job.json` (the job as given) and, per iteration,
//!   `DATA/recordings/NAME/K/` holding `podcap-NNNNNNNNNN.pcapng` files (a new one per
//!   sensor run and past `FILE_SIZE`) and `iteration.json` (the iteration's window, how far
//!   it is copied, its files with the bytes that are whole, packets, drops), rewritten
//!   atomically after each copy. Readers read only the bytes `iteration.json` names, so a
//!   file being written, or cut by a crash, is read only as far as it is whole.
//! - A restart finds each job's iteration again from the clock and goes on from its cursor:
//!   nothing is lost while the store still holds that time. Job folders, and each job's
//!   iteration folders, are made and deleted by the kept-folder protocol (`kept/mod.rs`):
//!   one half added or half deleted by a crash (`.tmp-`, `.deleting-`) is removed at start,
//!   and one being deleted is never listed. An iteration grows while it is recorded; what
//!   `iteration.json` names as whole never changes.
//! - Budget (`--recordings-max-size`): checked before each copy; a job that finds it full
//!   records nothing and counts what it would have recorded as drops (`budgetDrops`), and
//!   no recording, snapshot or segment is deleted to make room. A copy may pass the budget
//!   by one poll's packets of one job.
//! - What the store did not hold when a job's time was copied is counted, never silently
//!   missing: time before the store's oldest packet (a sensor down longer than the store's
//!   window, a start in the past) in `notHeldNs`, segments retired or unreadable while
//!   being read in `missedSegments`.
//! - An iteration's folder is deleted `expire` after the iteration ends; a job's folder
//!   only by deleting the job.
//! - Names follow the snapshots' rule; a name is taken once.
mod docs;
mod runner;
pub mod schedule;

pub use self::docs::{IterationDoc, IterationStatus, JobStatus, Listing, RecordingFile};
use self::runner::Writing;

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use self::schedule::{Phase, Schedule, ScheduleError};
use super::KeptDir;
use crate::{
    filter::Filter,
    store::{index::SegmentRecord, kept::snapshots::check_name, name::SegmentName, slice::Selection},
    units,
};

/// The folder of recordings inside the data directory.
pub const RECORDINGS_DIR: &str = "recordings";
/// How often jobs copy from the store.
pub const POLL: Duration = Duration::from_secs(1);
/// How far behind the clock a copy stays (the writer's flush interval and reorder window).
pub const DELAY: Duration = Duration::from_millis(1500);
/// A recording file is closed past this size and a new one begun.
pub const FILE_SIZE: u64 = 64_000_000;

const JOB_FILE: &str = "job.json";
const ITERATION_FILE: &str = "iteration.json";

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Name(#[from] crate::store::kept::snapshots::SnapshotError),
    #[error("a recording job {0:?} already exists (delete it first, or choose another name)")]
    Exists(String),
    #[error("no recording job {0:?}")]
    NotFound(String),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("the recordings folder")]
    Io(#[from] io::Error),
}

pub use podcap_format::recording::{JobDoc, MANAGED_BY_TARGETING};

/// A job, checked and compiled.
#[derive(Debug)]
struct Job {
    doc: JobDoc,
    schedule: Schedule,
    selection: Selection,
    /// The iteration being written, with its open file.
    writing: Option<Writing>,
}

impl Job {
    fn compile(doc: JobDoc, snaplen: u32) -> Result<Self, RecordingError> {
        check_name(&doc.name)?;
        let invalid = |field, message: String| RecordingError::Invalid { field, message };
        let duration =
            units::parse_duration(&doc.duration).map_err(|e| invalid("duration", e.to_string()))?;
        let expire = doc
            .expire
            .as_deref()
            .map(units::parse_duration)
            .transpose()
            .map_err(|e| invalid("expire", e.to_string()))?;
        let start = doc
            .start
            .as_deref()
            .map(schedule::parse_start)
            .transpose()?
            .unwrap_or(schedule::Start::Now);
        let created = doc
            .created
            .as_deref()
            .map(units::parse_rfc3339)
            .transpose()
            .map_err(|e| invalid("created", e.to_string()))?
            .ok_or_else(|| invalid("created", "missing".into()))?;
        let schedule = Schedule::new(start, doc.days, duration, expire, created)?;
        let filter = doc
            .filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(|f| Filter::compile(f, snaplen).map(Arc::new))
            .transpose()
            .map_err(|e| invalid("filter", e.to_string()))?;
        let pod = doc
            .pod
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| invalid("pod", e.to_string()))?;
        let selection = Selection {
            interfaces: None,
            pod,
            namespaces: doc.namespaces.clone(),
            filter,
        };
        Ok(Self {
            doc,
            schedule,
            selection,
            writing: None,
        })
    }
}

/// The recording jobs of one node.
#[derive(Debug)]
pub struct Recordings {
    dir: KeptDir,
    data_dir: PathBuf,
    max_bytes: u64,
    snaplen: u32,
    jobs: Mutex<BTreeMap<String, Job>>,
}

impl Recordings {
    /// The jobs kept under `data_dir` (`job.json` of each), with a budget of `max_bytes`.
    /// A job whose file cannot be read is skipped with a warning (its folder stays).
    pub fn open(data_dir: &Path, max_bytes: u64, snaplen: u32) -> Result<Self, RecordingError> {
        let dir = KeptDir::open(data_dir.join(RECORDINGS_DIR), "recordings")?;
        let mut jobs = BTreeMap::new();
        for entry in fs::read_dir(dir.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !KeptDir::is_kept_name(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            // Its iterations: what a crash left half made or half deleted goes.
            KeptDir::open(entry.path(), &format!("recordings/{name}"))?;
            let loaded = fs::read(entry.path().join(JOB_FILE))
                .map_err(RecordingError::from)
                .and_then(|text| {
                    serde_json::from_slice::<JobDoc>(&text).map_err(|e| RecordingError::Invalid {
                        field: "job.json",
                        message: e.to_string(),
                    })
                })
                .and_then(|doc| Job::compile(doc, snaplen));
            match loaded {
                Ok(job) if job.doc.name == name => {
                    jobs.insert(name, job);
                }
                Ok(_) => log::warn!("recordings/{name}: job.json names another job; left alone"),
                Err(e) => log::warn!("recordings/{name}: {e}; left alone"),
            }
        }
        Ok(Self {
            dir,
            data_dir: data_dir.to_owned(),
            max_bytes,
            snaplen,
            jobs: Mutex::new(jobs),
        })
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a job (made at `now_ns` unless it says when); it is kept across restarts.
    pub fn create(&self, mut doc: JobDoc, now_ns: u64) -> Result<JobDoc, RecordingError> {
        if doc.created.is_none() {
            doc.created = Some(units::format_rfc3339_ns(now_ns));
        }
        let job = Job::compile(doc, self.snaplen)?;
        let mut jobs = self.jobs();
        let folder = self.dir.folder(&job.doc.name);
        if jobs.contains_key(&job.doc.name) || folder.exists() {
            return Err(RecordingError::Exists(job.doc.name.clone()));
        }
        let staging = self.dir.stage(&job.doc.name)?;
        let mut file = File::create(staging.path().join(JOB_FILE))?;
        serde_json::to_writer_pretty(&mut file, &job.doc).map_err(io::Error::from)?;
        file.sync_all()?;
        staging.complete()?;
        let doc = job.doc.clone();
        log::info!("recording job {:?} made: {}", doc.name, describe(&job.schedule));
        jobs.insert(doc.name.clone(), job);
        Ok(doc)
    }

    /// Makes the targeting document's jobs the ones this node runs for it: new ones are
    /// added, ones it no longer lists are stopped and their recordings deleted (as `podcap
    /// record delete` asked). A job added through the API keeps its name: a document job of
    /// the same name is skipped, with a warning.
    pub fn sync_targeting(&self, wanted: &[JobDoc], now_ns: u64) {
        let managed: Vec<(String, bool)> = self
            .jobs()
            .iter()
            .map(|(name, job)| {
                (
                    name.clone(),
                    job.doc.managed_by.as_deref() == Some(MANAGED_BY_TARGETING),
                )
            })
            .collect();
        for (name, by_targeting) in &managed {
            if *by_targeting && !wanted.iter().any(|w| &w.name == name) {
                match self.delete(name) {
                    Ok(()) => {
                        log::info!("recording job {name:?}: no longer in the targeting document; deleted");
                    }
                    Err(e) => log::warn!("recording job {name:?}: {e}"),
                }
            }
        }
        for doc in wanted {
            match managed.iter().find(|(name, _)| name == &doc.name) {
                Some((_, true)) => {}
                Some((_, false)) => log::warn!(
                    "recording job {:?} of the targeting document: a job of that name was added through the API; it stays",
                    doc.name
                ),
                None => {
                    let doc = JobDoc {
                        managed_by: Some(MANAGED_BY_TARGETING.to_owned()),
                        ..doc.clone()
                    };
                    if let Err(e) = self.create(doc, now_ns) {
                        log::warn!("recording job of the targeting document: {e}");
                    }
                }
            }
        }
    }

    /// Stops a job and deletes everything it recorded.
    pub fn delete(&self, name: &str) -> Result<(), RecordingError> {
        check_name(name)?;
        let mut jobs = self.jobs();
        let known = jobs.remove(name).is_some();
        if !self.dir.delete(name)? && !known {
            return Err(RecordingError::NotFound(name.to_owned()));
        }
        log::info!("recording job {name:?} deleted");
        Ok(())
    }

    /// The iterations a job has on disk, in order.
    /// Every job's iterations copied to their end (what the archive uploads): job name,
    /// folder, record.
    pub fn finished_iterations(&self) -> Vec<(String, PathBuf, IterationDoc)> {
        let names: Vec<String> = self.jobs().keys().cloned().collect();
        names
            .into_iter()
            .flat_map(|name| {
                self.iterations(&name)
                    .into_iter()
                    .filter(|(_, doc)| doc.cursor_ns >= doc.end_ns)
                    .map(move |(dir, doc)| (name.clone(), dir, doc))
            })
            .collect()
    }

    /// An iteration's packets: the whole bytes of each of its files, one after the other
    /// (each file is a pcapng section of its own, so together they are one valid file).
    pub fn iteration_bytes(dir: &Path, doc: &IterationDoc) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        for file in &doc.files {
            let whole = usize::try_from(file.bytes).unwrap_or(usize::MAX);
            let mut reader = io::Read::take(File::open(dir.join(&file.name))?, file.bytes);
            let before = bytes.len();
            io::Read::read_to_end(&mut reader, &mut bytes)?;
            if bytes.len() - before != whole {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} is shorter than its record", file.name),
                ));
            }
        }
        Ok(bytes)
    }

    fn iterations(&self, name: &str) -> Vec<(PathBuf, IterationDoc)> {
        let mut found: Vec<(PathBuf, IterationDoc)> = fs::read_dir(self.dir.folder(name))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                    .filter_map(|e| {
                        let text = fs::read(e.path().join(ITERATION_FILE)).ok()?;
                        Some((e.path(), serde_json::from_slice(&text).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by_key(|(_, doc)| doc.iteration);
        found
    }

    fn used_bytes(&self, names: impl Iterator<Item = String>) -> u64 {
        names
            .flat_map(|name| self.iterations(&name))
            .map(|(_, doc)| doc.bytes)
            .fold(0, u64::saturating_add)
    }

    /// Every job and where it stands.
    pub fn list(&self, now_ns: u64) -> Listing {
        let jobs = self.jobs();
        let mut statuses = Vec::new();
        for job in jobs.values() {
            let iterations: Vec<IterationStatus> = self
                .iterations(&job.doc.name)
                .into_iter()
                .map(|(_, doc)| IterationStatus {
                    iteration: doc.iteration,
                    start: units::format_rfc3339_ns(doc.start_ns),
                    end: units::format_rfc3339_ns(doc.end_ns),
                    packets: doc.packets,
                    bytes: doc.bytes,
                    budget_drops: doc.budget_drops,
                    missed_segments: doc.missed_segments,
                    not_held_seconds: doc.not_held_ns / 1_000_000_000,
                    expires: job
                        .schedule
                        .expiry_of(doc.iteration)
                        .map(units::format_rfc3339_ns),
                })
                .collect();
            let phase = job.schedule.phase(now_ns);
            let (state, next_start) = match phase {
                Phase::Scheduled { start_ns, .. } => ("scheduled", Some(units::format_rfc3339_ns(start_ns))),
                Phase::Recording { .. } => ("recording", None),
                Phase::Finished if iterations.is_empty() && job.schedule.expire_ns.is_some() => {
                    ("expired", None)
                }
                Phase::Finished => ("finished", None),
            };
            let sum = |f: fn(&IterationStatus) -> u64| iterations.iter().map(f).fold(0, u64::saturating_add);
            statuses.push(JobStatus {
                job: job.doc.clone(),
                state: state.to_owned(),
                next_start,
                packets: sum(|i| i.packets),
                bytes: sum(|i| i.bytes),
                drops: sum(|i| i.budget_drops),
                iterations,
            });
        }
        let used_bytes = statuses.iter().map(|s| s.bytes).fold(0, u64::saturating_add);
        Listing {
            jobs: statuses,
            max_bytes: self.max_bytes,
            used_bytes,
        }
    }

    /// A job's iterations overlapping `[from, to)`: their folders and the records of their
    /// whole bytes, for the slicer.
    pub fn slices(
        &self,
        name: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(PathBuf, Vec<SegmentRecord>)>, RecordingError> {
        check_name(name)?;
        if !self.jobs().contains_key(name) {
            return Err(RecordingError::NotFound(name.to_owned()));
        }
        Ok(self
            .iterations(name)
            .into_iter()
            .filter(|(_, doc)| doc.start_ns < to && doc.end_ns > from)
            .map(|(dir, doc)| {
                let records = doc
                    .files
                    .iter()
                    .filter(|f| f.packets > 0 && f.from_ns < to && f.to_ns > from)
                    .filter_map(|f| {
                        Some(SegmentRecord {
                            seq: SegmentName::parse(&f.name)?.seq,
                            file: f.name.clone(),
                            first_ns: f.from_ns,
                            last_ns: f.to_ns,
                            packets: f.packets,
                            bytes: f.bytes,
                            ..SegmentRecord::default()
                        })
                    })
                    .collect();
                (dir, records)
            })
            .collect())
    }
}

fn describe(schedule: &Schedule) -> String {
    let days = match schedule.days {
        0 => "every day".to_owned(),
        1 => "once".to_owned(),
        n => format!("{n} days"),
    };
    format!(
        "{days} from {} for {} s",
        units::format_rfc3339(schedule.first_start_ns()),
        schedule.duration_ns / 1_000_000_000
    )
}

#[cfg(test)]
mod tests;
