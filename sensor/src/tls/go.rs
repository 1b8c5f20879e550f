//! Go programs among the node's processes: the binaries that hold Go's key log function,
//! and where it starts in the file (what a uprobe is attached at).
//!
//! Rules: every running process's executable is looked at once (by device and inode, so a
//! binary shared by many processes or pods is read once); it is probed only when its
//! symbol table names [`GO_KEYLOG_SYMBOL`] (a stripped binary cannot be probed, and is
//! said so once); the file offset is computed from the symbol's section, never guessed.
use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection, ObjectSymbol};

/// The function Go's TLS calls with every secret of every session.
pub const GO_KEYLOG_SYMBOL: &str = "crypto/tls.(*Config).writeKeyLog";

/// A Go binary to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// A process that runs it (its `/proc/PID/exe` reaches the file in any mount
    /// namespace).
    pub pid: u32,
    pub path: PathBuf,
    /// Where [`GO_KEYLOG_SYMBOL`] starts in the file.
    pub offset: u64,
}

/// The binaries looked at so far.
#[derive(Debug, Default)]
pub struct GoBinaries {
    seen: HashSet<(u64, u64)>,
}

impl GoBinaries {
    /// The Go binaries of running processes not looked at before.
    pub fn scan(&mut self) -> Vec<GoBinary> {
        let own = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == own {
                continue;
            }
            let path = PathBuf::from(format!("/proc/{pid}/exe"));
            // Kernel threads and processes gone meanwhile have no executable to read.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !self.seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            match keylog_offset(&path) {
                Ok(Some(offset)) => found.push(GoBinary { pid, path, offset }),
                Ok(None) => {}
                Err(e) => log::debug!("{}: {e}", path.display()),
            }
        }
        found
    }
}

/// Where [`GO_KEYLOG_SYMBOL`] starts in the ELF file at `path` (`None`: not a Go program
/// with TLS, or one whose symbols were stripped).
pub fn keylog_offset(path: &Path) -> Result<Option<u64>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut magic = [0u8; 4];
    if std::io::Read::read_exact(&mut file, &mut magic).is_err() || magic != *b"\x7fELF" {
        return Ok(None);
    }
    // Read on demand: only the headers, and a Go program's symbol table, are read.
    let cache = object::ReadCache::new(file);
    let file = object::File::parse(&cache).map_err(|e| e.to_string())?;
    if file.section_by_name(".gopclntab").is_none() && file.section_by_name(".go.buildinfo").is_none() {
        return Ok(None);
    }
    let Some(symbol) = file.symbols().find(|s| s.name() == Ok(GO_KEYLOG_SYMBOL)) else {
        if file.section_by_name(".gopclntab").is_some() && file.symbols().next().is_none() {
            log::info!(
                "{}: a Go program without a symbol table: its TLS secrets cannot be read",
                path.display()
            );
        }
        return Ok(None);
    };
    let section = symbol
        .section_index()
        .and_then(|index| file.section_by_index(index).ok())
        .ok_or("the symbol has no section")?;
    let (section_offset, _) = section
        .file_range()
        .ok_or("the symbol's section is not in the file")?;
    let offset = symbol
        .address()
        .checked_sub(section.address())
        .and_then(|into| into.checked_add(section_offset))
        .ok_or("the symbol lies outside its section")?;
    Ok(Some(offset))
}
