//! Go programs among the node's processes: the binaries that hold Go's key log function,
//! and where it starts in the file (what a uprobe is attached at).
//!
//! Rules: every running process's executable is looked at once (by device and inode, so a
//! binary shared by many processes or pods is read once), and again only when its probe
//! could not be attached ([`FilesLooked::retry_later`]); it is probed only when it holds
//! [`GO_KEYLOG_SYMBOL`]: named in its symbol table or, in a stripped program (`-s -w`), in
//! Go's own function table (`pclntab.rs`); position-independent or not, the file offset is
//! computed from the section that holds the function, never guessed.
//! The probe reads Go's register ABI on amd64, so only an x86-64 binary of Go 1.18 or later
//! (its version read from `.go.buildinfo`) is probed; any other is said so by its version,
//! never probed on a guess.
use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection, ObjectSymbol};

use super::FilesLooked;

/// The function Go's TLS calls with every secret of every session.
pub const GO_KEYLOG_SYMBOL: &str = "crypto/tls.(*Config).writeKeyLog";

/// A Go binary to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// The file's device and inode: what names it among the binaries looked at.
    pub file: (u64, u64),
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
    pub looked: FilesLooked,
}

impl GoBinaries {
    /// The Go binaries of running processes not looked at before; every executable in use
    /// goes into `in_use` (device, inode).
    pub fn scan(&mut self, in_use: &mut HashSet<(u64, u64)>) -> Vec<GoBinary> {
        let mut found = Vec::new();
        for pid in super::other_processes() {
            let path = PathBuf::from(format!("/proc/{pid}/exe"));
            // Kernel threads and processes gone meanwhile have no executable to read.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let file = (meta.dev(), meta.ino());
            in_use.insert(file);
            if !self.looked.first_look(file) {
                continue;
            }
            match keylog_offset(&path) {
                Ok(Some(offset)) => found.push(GoBinary {
                    file,
                    pid,
                    path,
                    offset,
                }),
                Ok(None) => {}
                // Once per file (`looked`): a Go program whose secrets cannot be read, and why.
                Err(e) => log::info!("{}: its TLS secrets cannot be read: {e}", path.display()),
            }
        }
        found
    }
}

/// Where [`GO_KEYLOG_SYMBOL`] starts in the ELF file at `path` (`None`: not a Go program
/// with TLS).
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
    if file.architecture() != object::Architecture::X86_64 {
        return Err(format!(
            "a Go program for {:?}: only x86-64 programs' TLS secrets are read",
            file.architecture()
        ));
    }
    let buildinfo = file
        .section_by_name(".go.buildinfo")
        .and_then(|section| section.data().ok())
        .ok_or("no .go.buildinfo section: the Go version is unknown")?;
    let version = go_version(buildinfo)?;
    if !register_abi(&version) {
        log::info!(
            "{}: {version}: only programs of Go 1.18 or later are probed (their arguments are in registers)",
            path.display()
        );
        return Ok(None);
    }
    // The symbol table when there is one; else Go's own function table, which a stripped
    // program keeps.
    let address = match file.symbols().find(|s| s.name() == Ok(GO_KEYLOG_SYMBOL)) {
        Some(symbol) => symbol.address(),
        None => match super::pclntab::function_entry(&file, GO_KEYLOG_SYMBOL) {
            Ok(Some(address)) => address,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "{version}: {GO_KEYLOG_SYMBOL} not in the symbol table, and {e}"
                ))
            }
        },
    };
    file_offset(&file, address).map(Some)
}

/// Where the code at virtual `address` lies in the file: from the code section that holds
/// it (sections not loaded, such as debug information, have no address to hold it).
fn file_offset<'data, R: object::ReadRef<'data>>(
    file: &object::File<'data, R>,
    address: u64,
) -> Result<u64, String> {
    let section = file
        .sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .find(|s| s.address() <= address && address - s.address() < s.size())
        .ok_or("the function lies in no code section")?;
    let (section_offset, _) = section
        .file_range()
        .ok_or("the function's section is not in the file")?;
    (address - section.address())
        .checked_add(section_offset)
        .ok_or_else(|| "the function lies outside the file".to_owned())
}

/// The Go version a `.go.buildinfo` section names (`go1.19.8`). Go 1.18 and later write it
/// inline (flag 2): a varint length and the text after the 32-byte header; an older one
/// points at it instead, and is named "before Go 1.18".
pub fn go_version(buildinfo: &[u8]) -> Result<String, String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    const HEADER: usize = 32;
    if !buildinfo.starts_with(MAGIC) {
        return Err("a .go.buildinfo section without its magic".into());
    }
    let flags = *buildinfo.get(15).ok_or("a short .go.buildinfo section")?;
    if flags & 2 == 0 {
        return Ok("before Go 1.18".into());
    }
    let mut length = 0usize;
    let mut at = HEADER;
    for shift in (0..35).step_by(7) {
        let byte = *buildinfo.get(at).ok_or("a short .go.buildinfo section")?;
        at += 1;
        length |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let text = at
                .checked_add(length)
                .and_then(|end| buildinfo.get(at..end))
                .ok_or("a Go version longer than its section")?;
            return std::str::from_utf8(text)
                .map(str::to_owned)
                .map_err(|_| "a Go version that is no text".into());
        }
    }
    Err("a malformed Go version length".into())
}

/// Whether `version` (`go1.N…`) passes arguments in registers as the probe reads them:
/// Go 1.18 and later (1.17 did too on amd64, but its version is not written inline).
fn register_abi(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("go1.") else {
        return false;
    };
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    minor.parse::<u32>().is_ok_and(|minor| minor >= 18)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buildinfo(flags: u8, version: &str) -> Vec<u8> {
        let mut data = b"\xff Go buildinf:".to_vec();
        data.push(8);
        data.push(flags);
        data.resize(32, 0);
        data.push(u8::try_from(version.len()).unwrap());
        data.extend_from_slice(version.as_bytes());
        data
    }

    #[test]
    fn the_version_is_read_and_only_register_abi_programs_pass() {
        assert_eq!(go_version(&buildinfo(2, "go1.19.8")).unwrap(), "go1.19.8");
        assert!(register_abi("go1.19.8") && register_abi("go1.22rc1") && register_abi("go1.18"));
        assert!(!register_abi("go1.17.13") && !register_abi("before Go 1.18") && !register_abi("devel"));
        assert_eq!(go_version(&buildinfo(0, "")).unwrap(), "before Go 1.18");
        assert!(go_version(b"not a buildinfo section at all!!").is_err());
        let mut cut = buildinfo(2, "go1.19.8");
        cut.truncate(36);
        assert!(go_version(&cut).is_err(), "a length past the section is refused");
        let mut endless = buildinfo(2, "");
        endless.truncate(32);
        endless.extend_from_slice(&[0xff; 8]);
        assert!(go_version(&endless).is_err());
    }
}
