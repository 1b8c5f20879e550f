//! What the node keeps past the rolling window: named snapshots (`snapshots.rs`) and the
//! iterations of recording jobs (`recordings/`), and the keeper thread that runs the jobs
//! and expires both (`keeper.rs`). Each has its own budget; none shares a file with the
//! rolling store, so retention, recovery and file recycling never touch them.
//!
//! Rules (the kept-folder protocol, [`KeptDir`], the one way both make and delete folders):
//! - A kept folder is made in a temporary folder `.tmp-NAME/` beside it: its files written
//!   and synced there, the folder synced, then renamed to `NAME/` (never over an existing
//!   one) and the parent synced ([`Staging::complete`]). A crash leaves the whole folder or
//!   a `.tmp-` one; a staging dropped before it completes is removed.
//! - A deletion renames `NAME/` to `.deleting-NAME-NS/` first, then removes it: a half
//!   deleted folder is never listed ([`KeptDir::delete`]).
//! - What starts with `.` is never a kept folder: listings skip it; at start
//!   ([`KeptDir::open`]) every `.tmp-` and `.deleting-` entry, folder or file, is removed
//!   as a run that stopped half way left it.
//! - Complete is immutable for snapshots; a recording's iteration grows only through its
//!   own record file (`iteration.json`, rewritten atomically), never in place of a byte a
//!   reader was told is whole.
use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

pub mod keeper;
pub mod recordings;
pub mod snapshots;

/// A folder half made.
pub const TMP_PREFIX: &str = ".tmp-";
/// A folder half deleted.
pub const DELETING_PREFIX: &str = ".deleting-";

/// A folder of kept folders (the snapshots', the recording jobs', a job's iterations).
#[derive(Debug)]
pub struct KeptDir {
    dir: PathBuf,
}

impl KeptDir {
    /// The kept folders in `dir` (made if missing), with what a run that stopped half way
    /// left (`.tmp-`, `.deleting-`) removed; `what` names them in the log.
    pub fn open(dir: PathBuf, what: &str) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) || name.starts_with(DELETING_PREFIX) {
                log::info!("{what}: removing {name}, left by a run that stopped while making or deleting it");
                if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(entry.path())?;
                } else {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        Ok(Self { dir })
    }

    /// The folder itself.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where kept folder `name` is (or would be).
    #[must_use]
    pub fn folder(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Kept folder `name` as a folder of kept folders itself (a job's iterations); what a
    /// crash left in it was removed when it was opened ([`KeptDir::open`]).
    #[must_use]
    pub fn within(&self, name: &str) -> KeptDir {
        KeptDir {
            dir: self.dir.join(name),
        }
    }

    /// Whether an entry of this folder is a kept folder's name (hidden ones never are).
    #[must_use]
    pub fn is_kept_name(name: &str) -> bool {
        !name.starts_with('.')
    }

    /// Begins kept folder `name`: an empty `.tmp-NAME/` (a stale one is removed first).
    pub fn stage(&self, name: &str) -> io::Result<Staging> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        match fs::remove_dir_all(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir(&tmp)?;
        Ok(Staging {
            tmp,
            parent: self.dir.clone(),
            name: name.to_owned(),
            completed: false,
        })
    }

    /// Deletes kept folder `name`: gone from listings at once (renamed to `.deleting-…`),
    /// its files after. `false` if there is no such folder.
    pub fn delete(&self, name: &str) -> io::Result<bool> {
        let folder = self.dir.join(name);
        if !folder.is_dir() {
            return Ok(false);
        }
        let doomed = self
            .dir
            .join(format!("{DELETING_PREFIX}{name}-{}", crate::sys::realtime_ns()));
        fs::rename(&folder, &doomed)?;
        fs::remove_dir_all(&doomed)?;
        Ok(true)
    }

    /// A temporary file's path in this folder (removed at start if a crash leaves it).
    #[must_use]
    pub fn temporary_file(&self, what: &str) -> PathBuf {
        self.dir
            .join(format!("{TMP_PREFIX}{what}-{}", crate::sys::realtime_ns()))
    }
}

/// A kept folder being made: removed on drop unless [`Staging::complete`] put it in place.
#[derive(Debug)]
pub struct Staging {
    tmp: PathBuf,
    parent: PathBuf,
    name: String,
    completed: bool,
}

impl Staging {
    /// Where its files go.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs the folder, renames it into place (an existing folder of that name is never
    /// replaced: `AlreadyExists`) and syncs the parent, so it survives a crash whole.
    pub fn complete(mut self) -> io::Result<PathBuf> {
        File::open(&self.tmp)?.sync_all()?;
        let folder = self.parent.join(&self.name);
        crate::sys::rename_noreplace(&self.tmp, &folder)?;
        self.completed = true;
        File::open(&self.parent)?.sync_all()?;
        Ok(folder)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.completed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}
