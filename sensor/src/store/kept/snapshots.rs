//! Snapshots: named copies of a time slice of the store, kept past the rolling window.
//!
//! Rules:
//! - A snapshot is a folder `DATA/snapshots/NAME/` holding `snapshot.pcapng` (the slice,
//!   with its selection, its window statistics and any damage notes, exactly as a download
//!   of the store would give it to the admin, the TLS secrets of its sessions included)
//!   and `manifest.json` ([`Manifest`]: the window, the selection, packets, bytes, the
//!   file's SHA-256, the drops the window's segments saw; with secrets, how many lines and
//!   the SHA-256 of the file without them, which is what the read token gets).
//! - It is a copy: it shares no file with the rolling store, so retention, recovery and
//!   file recycling never touch it. It never changes after it is made, and goes only by
//!   [`Snapshots::delete`] or its expiry.
//! - Made and deleted by the kept-folder protocol (`kept/mod.rs`): both files are written
//!   and synced in `.tmp-NAME/`, which is then renamed to `NAME/` (never over an existing
//!   one). A crash leaves the whole snapshot or a `.tmp-` folder that the next start
//!   removes; a deletion renames to `.deleting-…` first, so a half-deleted snapshot is
//!   never listed.
//! - Snapshots have their own budget (`--snapshot-max-size`): one that would not fit in
//!   what is left is refused and its partial copy removed; another snapshot is never
//!   deleted to make room. Creations run one at a time, so the budget is exact.
//! - Names are `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`: never a path, never hidden.
//! - A creation that failed here is remembered (`.failed-NAME.json`, with the reason) so
//!   the cluster's list can say where and why, until the name is made or deleted; only the
//!   newest [`MAX_FAILED_RECORDS`] are kept (older ones are deleted when one more is
//!   written), so a client that keeps failing cannot fill the folder.
//! - Nothing is hidden: a folder whose manifest cannot be read, or whose file is not the
//!   size its manifest says, is listed as damaged with the reason, and never deleted but
//!   by its name.
use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use super::KeptDir;
use crate::{
    pcapng::secrets::WithoutSecrets,
    store::{
        index::SegmentRecord,
        slice::{self, Selection, SliceStats},
    },
    units,
};

/// The folder of snapshots inside the data directory.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// A snapshot's packets.
pub const PCAPNG_FILE: &str = "snapshot.pcapng";
/// A snapshot's description.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The longest name.
pub const MAX_NAME_LEN: usize = 64;

/// Failed creations remembered at most (the newest).
pub const MAX_FAILED_RECORDS: usize = 32;

const FAILED_PREFIX: &str = ".failed-";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("name {0:?}: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit")]
    BadName(String),
    #[error("snapshot {0:?} already exists on this node (delete it first, or choose another name)")]
    Exists(String),
    #[error("no snapshot {0:?} on this node")]
    NotFound(String),
    #[error(
        "snapshot {name:?} does not fit: it grew past the {} left of the snapshots' budget ({} of {} used; --snapshot-max-size); no snapshot was deleted to make room",
        units::format_size(*left),
        units::format_size(*used),
        units::format_size(*max)
    )]
    TooLarge {
        name: String,
        left: u64,
        used: u64,
        max: u64,
    },
    #[error("writing snapshot {name:?}")]
    Write {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {name:?} is damaged: {reason}")]
    Damaged { name: String, reason: String },
    #[error("the snapshots folder")]
    Io(#[from] io::Error),
}

/// What a snapshot selected, as asked (kept in its manifest).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectionDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// A snapshot's `manifest.json`. Times are RFC 3339 to the nanosecond.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// The window, `[from, to)`.
    pub from: String,
    pub to: String,
    pub selection: SelectionDoc,
    pub created: String,
    /// When it is deleted; none: kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub packets: u64,
    /// Size of `snapshot.pcapng`.
    pub bytes: u64,
    /// SHA-256 of `snapshot.pcapng`, lower-case hex.
    pub sha256: String,
    /// TLS key log lines the file holds (`--tls-secrets`): given to the admin token only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub secrets: u64,
    /// SHA-256 of the file without its Decryption Secrets Blocks, as the read token gets
    /// it (only with secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_without_secrets: Option<String>,
    /// What the window's segments lost, by the kernel and by podcap (also in the file's
    /// statistics blocks).
    pub kernel_drops: u64,
    pub sensor_drops: u64,
    /// Parts of the store that could not be read (named in the file's notes).
    pub damaged_parts: usize,
    pub sensor_version: String,
}

/// A creation that failed on this node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failure {
    pub name: String,
    pub at: String,
    pub reason: String,
}

/// A folder that should be a snapshot and cannot be read as one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Damaged {
    pub name: String,
    pub reason: String,
}

/// What this node holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    pub snapshots: Vec<Manifest>,
    pub failed: Vec<Failure>,
    pub damaged: Vec<Damaged>,
    pub max_bytes: u64,
    pub used_bytes: u64,
}

/// What to make.
#[derive(Debug)]
pub struct Request {
    pub name: String,
    pub from_ns: u64,
    pub to_ns: u64,
    pub selection: Selection,
    pub described: SelectionDoc,
    pub expires_ns: Option<u64>,
    /// What the active segment's interfaces counted so far, for the window's statistics.
    pub live: Vec<slice::LiveStatistics>,
}

/// The snapshots of one node.
#[derive(Debug)]
pub struct Snapshots {
    dir: KeptDir,
    max_bytes: u64,
    /// Held while one is made: creations run one at a time (the budget is exact).
    creating: Mutex<()>,
}

/// Whether `name` may name a snapshot.
pub fn check_name(name: &str) -> Result<(), SnapshotError> {
    if podcap_format::recording::valid_name(name) {
        Ok(())
    } else {
        Err(SnapshotError::BadName(name.to_owned()))
    }
}

impl Snapshots {
    /// The snapshots under `data_dir`, with a budget of `max_bytes`; removes what a crash
    /// left half made or half deleted.
    pub fn open(data_dir: &Path, max_bytes: u64) -> Result<Self, SnapshotError> {
        let dir = KeptDir::open(data_dir.join(SNAPSHOTS_DIR), "snapshots")?;
        Ok(Self {
            dir,
            max_bytes,
            creating: Mutex::new(()),
        })
    }

    #[must_use]
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Everything this node holds (expired snapshots are deleted first).
    pub fn list(&self, now_ns: u64) -> Result<Listing, SnapshotError> {
        self.expire(now_ns)?;
        let mut listing = Listing {
            snapshots: Vec::new(),
            failed: Vec::new(),
            damaged: Vec::new(),
            max_bytes: self.max_bytes,
            used_bytes: 0,
        };
        for entry in fs::read_dir(self.dir.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(FAILED_PREFIX) {
                if let Some(snapshot) = rest.strip_suffix(".json") {
                    match read_json::<Failure>(&entry.path()) {
                        Ok(failure) => listing.failed.push(failure),
                        Err(e) => listing.damaged.push(Damaged {
                            name: snapshot.to_owned(),
                            reason: format!("its failure record cannot be read: {e}"),
                        }),
                    }
                }
                continue;
            }
            if !KeptDir::is_kept_name(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            match self.read(&name) {
                Ok(manifest) => {
                    listing.used_bytes = listing.used_bytes.saturating_add(manifest.bytes);
                    listing.snapshots.push(manifest);
                }
                Err(reason) => {
                    listing.used_bytes = listing.used_bytes.saturating_add(folder_size(&entry.path()));
                    listing.damaged.push(Damaged { name, reason });
                }
            }
        }
        listing.snapshots.sort_by(|a, b| a.name.cmp(&b.name));
        listing.failed.sort_by(|a, b| a.name.cmp(&b.name));
        listing.damaged.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    /// A snapshot's manifest, checked against its file's size.
    fn read(&self, name: &str) -> Result<Manifest, String> {
        let folder = self.dir.folder(name);
        let manifest: Manifest = read_json(&folder.join(MANIFEST_FILE))
            .map_err(|e| format!("its manifest cannot be read: {e}"))?;
        if manifest.name != name {
            return Err(format!("its manifest names {:?}", manifest.name));
        }
        let size = fs::metadata(folder.join(PCAPNG_FILE))
            .map_err(|e| format!("{PCAPNG_FILE}: {e}"))?
            .len();
        if size != manifest.bytes {
            return Err(format!(
                "{PCAPNG_FILE} holds {size} bytes, its manifest says {}",
                manifest.bytes
            ));
        }
        Ok(manifest)
    }

    /// One snapshot's manifest.
    pub fn get(&self, name: &str, now_ns: u64) -> Result<Manifest, SnapshotError> {
        check_name(name)?;
        self.expire(now_ns)?;
        if !self.dir.folder(name).is_dir() {
            return Err(SnapshotError::NotFound(name.to_owned()));
        }
        self.read(name).map_err(|reason| SnapshotError::Damaged {
            name: name.to_owned(),
            reason,
        })
    }

    /// A snapshot's file, opened (it stays readable if the snapshot is deleted meanwhile),
    /// with its manifest.
    pub fn open_file(&self, name: &str, now_ns: u64) -> Result<(File, Manifest), SnapshotError> {
        let manifest = self.get(name, now_ns)?;
        let file = File::open(self.dir.folder(name).join(PCAPNG_FILE))?;
        Ok((file, manifest))
    }

    /// Makes a snapshot of `segments` (those of the store overlapping the window) read
    /// from `data_dir`. A failure other than a bad or taken name is remembered.
    pub fn create(
        &self,
        data_dir: &Path,
        segments: &[SegmentRecord],
        request: &Request,
        now_ns: u64,
    ) -> Result<Manifest, SnapshotError> {
        check_name(&request.name)?;
        let _one_at_a_time = self
            .creating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let listing = self.list(now_ns)?;
        if self.dir.folder(&request.name).exists() {
            return Err(SnapshotError::Exists(request.name.clone()));
        }
        let failed_record = self.dir.folder(&format!("{FAILED_PREFIX}{}.json", request.name));
        match self.make(data_dir, segments, request, now_ns, listing.used_bytes) {
            Ok(manifest) => {
                let _ = fs::remove_file(&failed_record);
                log::info!(
                    "snapshot {:?}: {} packets, {} ({} to {})",
                    manifest.name,
                    manifest.packets,
                    units::format_size(manifest.bytes),
                    manifest.from,
                    manifest.to
                );
                Ok(manifest)
            }
            Err(e) => {
                let reason = error_chain(&e);
                log::warn!("snapshot {:?} failed: {reason}", request.name);
                let failure = Failure {
                    name: request.name.clone(),
                    at: units::format_rfc3339_ns(now_ns),
                    reason,
                };
                if let Err(e) = write_json_atomically(&self.dir, &failed_record, &failure) {
                    log::warn!("snapshot {:?}: cannot record the failure: {e}", request.name);
                }
                self.forget_old_failures();
                Err(e)
            }
        }
    }

    /// Deletes the oldest failure records beyond [`MAX_FAILED_RECORDS`] (by the time each
    /// says; one that cannot be read goes first).
    fn forget_old_failures(&self) {
        let Ok(entries) = fs::read_dir(self.dir.path()) else {
            return;
        };
        let mut records: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with(FAILED_PREFIX) && name.ends_with(".json")
            })
            .map(|entry| {
                let at = read_json::<Failure>(&entry.path())
                    .ok()
                    .and_then(|failure| units::parse_rfc3339(&failure.at).ok())
                    .unwrap_or(0);
                (at, entry.path())
            })
            .collect();
        let Some(excess) = records.len().checked_sub(MAX_FAILED_RECORDS).filter(|n| *n > 0) else {
            return;
        };
        records.sort();
        for (_, path) in &records[..excess] {
            if let Err(e) = fs::remove_file(path) {
                log::warn!(
                    "snapshots: cannot delete the old failure record {}: {e}",
                    path.display()
                );
            }
        }
        log::info!(
            "snapshots: {excess} older failure records deleted; the newest {MAX_FAILED_RECORDS} are kept"
        );
    }

    fn make(
        &self,
        data_dir: &Path,
        segments: &[SegmentRecord],
        request: &Request,
        now_ns: u64,
        used: u64,
    ) -> Result<Manifest, SnapshotError> {
        let name = &request.name;
        let write_error = |source| SnapshotError::Write {
            name: name.clone(),
            source,
        };
        let staging = self.dir.stage(name).map_err(write_error)?;
        let tmp = staging.path();
        let left = self.max_bytes.saturating_sub(used);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(tmp.join(PCAPNG_FILE))
            .map_err(write_error)?;
        let mut out = Budgeted {
            inner: BufWriter::with_capacity(1 << 20, file),
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            without_secrets: (
                WithoutSecrets::default(),
                ring::digest::Context::new(&ring::digest::SHA256),
            ),
            written: 0,
            left,
            over: false,
        };
        let refs: Vec<&SegmentRecord> = segments.iter().collect();
        // The secrets of its sessions are kept with them; served to the admin only.
        let stats: SliceStats = match slice::write_segments(
            data_dir,
            &refs,
            (request.from_ns, request.to_ns),
            &request.selection,
            (slice::Secrets::Delivered, &request.live),
            &mut out,
        ) {
            Ok(stats) => stats,
            Err(_) if out.over => {
                return Err(SnapshotError::TooLarge {
                    name: name.clone(),
                    left,
                    used,
                    max: self.max_bytes,
                })
            }
            Err(slice::SliceError::Write(source)) => return Err(write_error(source)),
        };
        let file = out.inner.into_inner().map_err(|e| write_error(e.into_error()))?;
        file.sync_all().map_err(write_error)?;
        let manifest = Manifest {
            name: name.clone(),
            from: units::format_rfc3339_ns(request.from_ns),
            to: units::format_rfc3339_ns(request.to_ns),
            selection: request.described.clone(),
            created: units::format_rfc3339_ns(now_ns),
            expires: request.expires_ns.map(units::format_rfc3339_ns),
            packets: stats.packets,
            bytes: out.written,
            sha256: hex(out.digest.finish().as_ref()),
            secrets: stats.secrets_written,
            sha256_without_secrets: (stats.secrets_written > 0)
                .then(|| hex(out.without_secrets.1.finish().as_ref())),
            kernel_drops: stats.kernel_drops,
            sensor_drops: stats.sensor_drops,
            damaged_parts: stats.damaged,
            sensor_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        write_json_synced(&tmp.join(MANIFEST_FILE), &manifest).map_err(write_error)?;
        match staging.complete() {
            Ok(_) => Ok(manifest),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SnapshotError::Exists(name.clone())),
            Err(e) => Err(write_error(e)),
        }
    }

    /// Deletes a snapshot (or the record of its failed creation); `NotFound` when there
    /// is neither.
    pub fn delete(&self, name: &str) -> Result<(), SnapshotError> {
        check_name(name)?;
        let failed = fs::remove_file(self.dir.folder(&format!("{FAILED_PREFIX}{name}.json"))).is_ok();
        if !self.dir.delete(name)? {
            return if failed {
                Ok(())
            } else {
                Err(SnapshotError::NotFound(name.to_owned()))
            };
        }
        log::info!("snapshot {name:?} deleted");
        Ok(())
    }

    /// Deletes the snapshots whose expiry is at or before `now_ns`; their names.
    pub fn expire(&self, now_ns: u64) -> Result<Vec<String>, SnapshotError> {
        let mut expired = Vec::new();
        for entry in fs::read_dir(self.dir.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !KeptDir::is_kept_name(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            let Ok(manifest) = read_json::<Manifest>(&entry.path().join(MANIFEST_FILE)) else {
                continue;
            };
            let due = manifest
                .expires
                .as_deref()
                .and_then(|t| units::parse_rfc3339(t).ok())
                .is_some_and(|at| at <= now_ns);
            if due {
                match self.delete(&name) {
                    Ok(()) => expired.push(name),
                    // Deleted meanwhile by a request: what was due is gone.
                    Err(SnapshotError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for name in &expired {
            log::info!("snapshot {name:?} expired");
        }
        Ok(expired)
    }
}

/// The slice's output: hashed (whole, and without its secrets), counted, and refused
/// past the budget.
struct Budgeted {
    inner: BufWriter<File>,
    digest: ring::digest::Context,
    without_secrets: (WithoutSecrets, ring::digest::Context),
    written: u64,
    left: u64,
    over: bool,
}

impl Write for Budgeted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let total = self.written.saturating_add(len);
        if total > self.left {
            self.over = true;
            return Err(io::Error::other("over the snapshots' budget"));
        }
        self.inner.write_all(buf)?;
        self.digest.update(buf);
        let (stripper, digest) = &mut self.without_secrets;
        stripper
            .feed(buf, |kept| digest.update(kept))
            .map_err(io::Error::other)?;
        self.written = total;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Copies a kept file to `out` without its Decryption Secrets Blocks (what a reader without
/// the admin token gets of a snapshot holding secrets).
pub fn copy_without_secrets(file: &mut impl io::Read, out: &mut impl Write) -> io::Result<()> {
    let mut stripper = WithoutSecrets::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut written = Ok(());
        stripper
            .feed(&buf[..n], |kept| {
                if written.is_ok() {
                    written = out.write_all(kept);
                }
            })
            .map_err(io::Error::other)?;
        written?;
    }
    if !stripper.at_block_boundary() {
        return Err(io::Error::other("the file ends inside a block"));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

fn write_json_synced(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut file = File::options().write(true).create_new(true).open(path)?;
    serde_json::to_writer_pretty(&mut file, value)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Writes `path` through a temporary file in `dir` and a rename (replacing it).
fn write_json_atomically(dir: &KeptDir, path: &Path, value: &impl Serialize) -> io::Result<()> {
    let tmp = dir.temporary_file("record");
    let written = write_json_synced(&tmp, value).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn folder_size(path: &Path) -> u64 {
    fs::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(fs::Metadata::is_file)
            .map(|m| m.len())
            .fold(0u64, u64::saturating_add)
    })
}

#[cfg(test)]
mod tests;
