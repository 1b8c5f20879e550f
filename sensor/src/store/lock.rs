//! The data directory's lock: one sensor per data directory, whatever its network
//! namespace (Prometheus TSDB's `lock` file).
//!
//! Rules:
//! - `DIR/podcap.lock` is locked with `flock(LOCK_EX)` before anything reads, repairs or
//!   changes the store, and held for the process's life: the kernel releases it when the
//!   process ends, `kill -9` included, so a lock is never stale.
//! - The holder writes its pid into the file; a second sensor is refused naming that pid
//!   and the file, and touches nothing. A holder that is exiting (killed a moment ago) is
//!   waited for, up to [`EXITING_HOLDER_WAIT`].
//! - The lock is checked while the sensor runs ([`DirLock::check`]): if the file at that
//!   path was removed or replaced, another sensor could take the directory, so recording
//!   is not trusted (readiness fails, "lock lost") until this sensor holds a lock on the
//!   file at that path again.
//! - The lock file is the store's, not a segment: recovery never reads it, retention never
//!   deletes it. It is left in place at exit (removing it would race a starting sensor).
use std::{
    fs::{self, File},
    io::{self, Read, Seek, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The lock file's name in the data directory.
pub const LOCK_NAME: &str = "podcap.lock";
/// How long a lock held by a process that is exiting is waited for.
pub const EXITING_HOLDER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another podcap-sensor (pid {pid}) records into {dir} (it holds {lock}): run one sensor per data directory, or give this one its own --data-dir", dir = dir.display(), lock = lock.display())]
    Held {
        pid: String,
        dir: PathBuf,
        lock: PathBuf,
    },
    #[error("cannot lock the data directory with {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// This process's hold on a data directory; released when dropped (or when the process
/// ends).
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    file: File,
}

impl DirLock {
    /// Locks `dir` (which exists) for this process: see the module rules.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_NAME);
        let started = Instant::now();
        loop {
            match Self::try_acquire(&path)? {
                Ok(lock) => return Ok(lock),
                Err(holder) => {
                    let exiting = holder.parse::<u32>().is_ok_and(crate::sys::process_is_gone);
                    if !exiting || started.elapsed() >= EXITING_HOLDER_WAIT {
                        return Err(LockError::Held {
                            pid: if holder.is_empty() {
                                "unknown".into()
                            } else {
                                holder
                            },
                            dir: dir.to_owned(),
                            lock: path,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// One attempt: the lock, or what the file says of its holder.
    fn try_acquire(path: &Path) -> Result<Result<Self, String>, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err)?;
        if !file.metadata().map_err(io_err)?.is_file() {
            return Err(io_err(io::Error::other("not a regular file")));
        }
        if !crate::sys::try_lock_exclusive(&file).map_err(io_err)? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Ok(Err(holder.trim().chars().take(20).collect()));
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(Ok(Self {
            path: path.to_owned(),
            file,
        }))
    }

    /// Whether the file at the lock's path is still the one this process holds; if it was
    /// removed or replaced, tries to lock the file there now (`Err` says why it cannot).
    pub fn check(&mut self) -> Result<(), String> {
        let held = self.file.metadata().map(|m| (m.dev(), m.ino()));
        let there = fs::symlink_metadata(&self.path).map(|m| (m.dev(), m.ino()));
        if let (Ok(held), Ok(there)) = (&held, &there) {
            if held == there {
                return Ok(());
            }
        }
        match Self::try_acquire(&self.path) {
            Ok(Ok(lock)) => {
                log::warn!(
                    "{}: the lock file was removed or replaced while this sensor held it; locked again",
                    self.path.display()
                );
                *self = lock;
                Ok(())
            }
            Ok(Err(holder)) => Err(format!(
                "lock lost: {} was replaced and another process (pid {holder}) holds it; restart this sensor",
                self.path.display()
            )),
            Err(e) => Err(format!("lock lost: {e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let second = DirLock::acquire(dir.path()).unwrap_err();
        let text = second.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains(LOCK_NAME),
            "{text}"
        );
        drop(first);
        DirLock::acquire(dir.path()).expect("released with its holder");
    }

    #[test]
    fn a_removed_lock_file_is_noticed_and_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut lock = DirLock::acquire(dir.path()).unwrap();
        lock.check().unwrap();
        fs::remove_file(dir.path().join(LOCK_NAME)).unwrap();
        // Someone else takes the directory in the meantime.
        let intruder = DirLock::acquire(dir.path()).unwrap();
        let lost = lock.check().unwrap_err();
        assert!(lost.contains("lock lost"), "{lost}");
        drop(intruder);
        lock.check().expect("locked again once the file is free");
        lock.check().unwrap();
    }

    #[test]
    fn a_lock_path_that_is_not_a_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(LOCK_NAME)).unwrap();
        let error = format!("{:#}", DirLock::acquire(dir.path()).unwrap_err());
        assert!(error.contains(LOCK_NAME), "{error}");
        fs::remove_dir(dir.path().join(LOCK_NAME)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(LOCK_NAME)).unwrap();
        assert!(DirLock::acquire(dir.path()).is_err(), "a symlink is not followed");
    }
}
