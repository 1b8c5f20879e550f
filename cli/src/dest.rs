//! Where a downloaded file goes (`--dest`).
//!
//! Rules:
//! - `-` is standard output, refused when it is a terminal (a pcapng is binary: pipe it, or
//!   give a file).
//! - One rule for every command that takes `--dest`: a path ending in `.pcapng` is the
//!   file itself, one ending in `.pcapng.gz` the file gzip-compressed (Wireshark and tshark
//!   open it as it is); their folder must exist. `.pcap` is refused (podcap writes
//!   pcapng). Any other path is a folder the file is named in (by the window, the snapshot
//!   or the recording); it is created when missing, but only as the last part of the path:
//!   a mistyped parent is named, not created.
//! - A symbolic link whose target does not exist, as `--dest` or as the file a folder's
//!   download would get, is refused before anything is downloaded, naming the link and its
//!   target (the file would otherwise be written nowhere the user meant, or not at all).
//! - Nothing is ever overwritten without `--force`: the file is written as an exclusive
//!   temporary file beside the target and renamed into place without replacing; a file
//!   already there is refused before anything is downloaded.
use std::{
    io::{self, BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use podcap_format::merge;

/// A checked `--dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    /// A folder; the file gets the name the download gives it.
    Folder(PathBuf),
    /// The file's own path.
    File(PathBuf),
    /// The file's own path, written gzip-compressed.
    GzFile(PathBuf),
}

/// `path` is a symbolic link to nothing: the error that names both.
fn refuse_dangling(dest: &str, path: &Path) -> Result<()> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link && std::fs::metadata(path).is_err() {
        let target = std::fs::read_link(path).unwrap_or_default();
        bail!(
            "--dest {dest}: {} is a symbolic link to {}, which does not exist: give the link's \
             target, or remove the link",
            path.display(),
            target.display()
        );
    }
    Ok(())
}

/// Whether `path`'s name ends in `suffix`, in any case.
fn ends_with(path: &Path, suffix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() > suffix.len() && n.to_ascii_lowercase().ends_with(suffix))
}

impl Dest {
    /// Checks `dest` (creating a missing last folder); `file_name` is the name a folder's
    /// file would get, refused early if it exists and `force` is not given.
    pub fn parse(dest: &str, file_name: &str, force: bool) -> Result<Self> {
        if dest == "-" {
            if io::stdout().is_terminal() {
                bail!(
                    "--dest -: standard output is a terminal and a pcapng is binary: pipe it \
                     (podcap dump ... --dest - | wireshark -k -i -) or give a folder or a .pcapng file"
                );
            }
            return Ok(Self::Stdout);
        }
        let path = PathBuf::from(dest);
        let gzipped = ends_with(&path, ".pcapng.gz");
        let named_file = gzipped || ends_with(&path, ".pcapng");
        if ends_with(&path, ".pcap") || ends_with(&path, ".pcap.gz") {
            bail!("--dest {dest}: podcap writes pcapng; name the file .pcapng (or .pcapng.gz)");
        }
        refuse_dangling(dest, &path)?;
        let parent = |p: &Path| {
            p.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        let dest = if named_file {
            let folder = parent(&path);
            if !folder.is_dir() {
                bail!("--dest {dest}: the folder {} does not exist", folder.display());
            }
            if path.is_dir() {
                bail!("--dest {dest}: a folder, not a file");
            }
            if gzipped {
                Self::GzFile(path)
            } else {
                Self::File(path)
            }
        } else {
            if path.exists() && !path.is_dir() {
                bail!(
                    "--dest {dest}: a file, not a folder (a new file's name ends in .pcapng or .pcapng.gz)"
                );
            }
            if !path.exists() {
                let folder = parent(&path);
                if !folder.is_dir() {
                    bail!(
                        "--dest {dest}: the folder {} does not exist (only the last folder of --dest is created)",
                        folder.display()
                    );
                }
                std::fs::create_dir(&path).with_context(|| format!("--dest {dest}: creating the folder"))?;
            }
            Self::Folder(path)
        };
        if let Some(target) = dest.target(file_name) {
            refuse_dangling(&target.display().to_string(), &target)?;
            if target.exists() && !force {
                bail!(
                    "{} already exists: move it away, give another --dest, or --force to replace it",
                    target.display()
                );
            }
        }
        Ok(dest)
    }

    /// The file written (none for stdout).
    #[must_use]
    pub fn target(&self, file_name: &str) -> Option<PathBuf> {
        match self {
            Self::Stdout => None,
            Self::Folder(folder) => Some(folder.join(file_name)),
            Self::File(file) | Self::GzFile(file) => Some(file.clone()),
        }
    }

    /// A folder on the destination's file system for temporary parts (the system's
    /// temporary folder for stdout).
    #[must_use]
    pub fn work_folder(&self) -> PathBuf {
        match self {
            Self::Stdout => std::env::temp_dir(),
            Self::Folder(folder) => folder.clone(),
            Self::File(file) | Self::GzFile(file) => file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        }
    }
}

/// Writes what `produce` makes to `dest` as `file_name` (a folder's) through an exclusive
/// temporary file renamed into place, never over an existing file unless `force`. Returns
/// the file written (none for stdout). `produce` is told whether the output can be
/// rewritten (a plain file): then the totals it reserved room for in the Section Header
/// are written there before the file is renamed into place.
pub fn write(
    dest: &Dest,
    file_name: &str,
    force: bool,
    produce: impl FnOnce(&mut dyn Write, bool) -> Result<merge::MergeStats>,
) -> Result<(Option<PathBuf>, merge::MergeStats)> {
    let Some(target) = dest.target(file_name) else {
        let stats = produce(&mut io::stdout().lock(), false)?;
        return Ok((None, stats));
    };
    let output = temporary(&dest.work_folder(), ".pcapng")?;
    let stats = if matches!(dest, Dest::GzFile(_)) {
        let mut gzip =
            flate2::write::GzEncoder::new(BufWriter::new(output.as_file()), flate2::Compression::default());
        let stats = produce(&mut gzip, false)?;
        gzip.finish()?.flush()?;
        stats
    } else {
        let mut out = BufWriter::new(output.as_file());
        let stats = produce(&mut out, true)?;
        out.flush()?;
        drop(out);
        merge::fill_reserved(&mut output.as_file(), &stats.totals)
            .with_context(|| format!("writing the totals into {}", output.path().display()))?;
        stats
    };
    output.as_file().sync_all()?;
    let persisted = if force {
        output.persist(&target).map(|_| ())
    } else {
        output.persist_noclobber(&target).map(|_| ())
    };
    persisted.with_context(|| format!("writing {}", target.display()))?;
    Ok((Some(target), stats))
}

/// A temporary file in `folder`, created exclusively with a random name (never through a
/// name another user could have planted), removed unless persisted.
pub fn temporary(folder: &Path, suffix: &str) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".podcap-")
        .suffix(suffix)
        .tempfile_in(folder)
        .with_context(|| format!("creating a temporary file in {}", folder.display()))
}
