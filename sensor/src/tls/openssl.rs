//! OpenSSL 3.0 libraries among the node's processes: the `libssl.so.3` files they map,
//! the release each is, where its secrets lie in `SSL` (that release's layout), and where
//! the functions a probe reads them at start in the file.
//!
//! Rules: every mapped `libssl.so.3` is looked at once (by the device and inode its
//! processes' `/proc/PID/maps` name, so a library shared by many processes or pods is
//! read once), reached through `/proc/PID/root` (the process's own mount namespace: a
//! container image's own libssl is covered). OpenSSL 3 writes its version text into
//! `libcrypto.so.3` only: the release is read from the libcrypto the same process maps
//! (the two are one build). It is probed only when its release is in
//! [`layout_of`]'s table and the library's own accessors (`SSL_get_session`,
//! `SSL_get_client_random`) read the same offsets the table gives; any other release is
//! named (log, `podcap_tls_libraries_unsupported`) and never probed on a guess. OpenSSL
//! keeps no TLS 1.3 handshake traffic secret; [`handshake_traffic_secrets`] derives both
//! from the handshake secret and transcript hash the probe reads (RFC 8446 7.1).
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection, ObjectSymbol};
use podcap_common::{OpenSslLayout, TLS_HANDSHAKE_HASH_AT, TLS_HANDSHAKE_LABEL};

use super::{FilesLooked, Secret};

/// The functions the probe runs at: every read and write of a session.
pub const PROBED_FUNCTIONS: [&str; 4] = ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"];

/// An OpenSSL library to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSslLibrary {
    /// The file's device and inode: what names it among the libraries looked at.
    pub file: (u64, u64),
    /// A process that maps it (through whose root the file is reached).
    pub pid: u32,
    pub path: PathBuf,
    /// `OpenSSL 3.0.19`.
    pub release: String,
    pub layout: OpenSslLayout,
    /// Where each of [`PROBED_FUNCTIONS`] starts in the file.
    pub offsets: Vec<u64>,
}

/// What looking at a library found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Probe(OpenSslLibrary),
    /// A release whose layout is not known here: named, never probed.
    Unsupported {
        path: PathBuf,
        release: String,
        why: String,
    },
}

/// The libraries looked at so far.
#[derive(Debug, Default)]
pub struct OpenSslLibraries {
    pub looked: FilesLooked,
}

impl OpenSslLibraries {
    /// The `libssl.so.3` files mapped by running processes, not looked at before; every
    /// one mapped goes into `in_use` (device, inode).
    pub fn scan(&mut self, in_use: &mut HashSet<(u64, u64)>) -> Vec<Found> {
        let mut found = Vec::new();
        for pid in super::other_processes() {
            // Processes gone meanwhile, and kernel threads, have no maps to read.
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                continue;
            };
            let mut in_process = HashSet::new();
            let libcrypto = mappings(&maps, "libcrypto.so.3").first().map(|(_, path)| *path);
            for (file, mapped) in mappings(&maps, "libssl.so.3") {
                in_use.insert(file);
                if !in_process.insert(file) || !self.looked.first_look(file) {
                    continue;
                }
                let root = |path: &str| PathBuf::from(format!("/proc/{pid}/root{path}"));
                let path = root(mapped);
                let Some(libcrypto) = libcrypto.map(root) else {
                    log::debug!("{}: no libcrypto.so.3 mapped beside it", path.display());
                    continue;
                };
                match look_at(&path, &libcrypto) {
                    Ok(Verdict::Probe {
                        release,
                        layout,
                        offsets,
                    }) => found.push(Found::Probe(OpenSslLibrary {
                        file,
                        pid,
                        path,
                        release,
                        layout,
                        offsets,
                    })),
                    Ok(Verdict::Unsupported { release, why }) => found.push(Found::Unsupported {
                        path: PathBuf::from(mapped),
                        release,
                        why,
                    }),
                    Err(e) => log::debug!("{}: {e}", path.display()),
                }
            }
        }
        found
    }
}

/// The files whose name starts with `name` (`libssl.so.3`) a `/proc/PID/maps` text
/// names: each one's (device, inode) and path in the process's mount namespace.
#[must_use]
pub fn mappings<'a>(maps: &'a str, name: &str) -> Vec<((u64, u64), &'a str)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (_range, _perms, _offset) = (fields.next()?, fields.next()?, fields.next()?);
            let (device, inode) = (fields.next()?, fields.next()?);
            let path = fields.next()?;
            // A path with spaces, or " (deleted)": not a file to probe.
            if fields.next().is_some() {
                return None;
            }
            if !path.rsplit('/').next()?.starts_with(name) {
                return None;
            }
            let (major, minor) = device.split_once(':')?;
            let (major, minor) = (
                u64::from_str_radix(major, 16).ok()?,
                u64::from_str_radix(minor, 16).ok()?,
            );
            let inode = inode.parse::<u64>().ok().filter(|i| *i != 0)?;
            // The encoding of `st_dev` (glibc's makedev), so the key matches a stat's.
            let device = ((major & 0xffff_f000) << 32)
                | ((major & 0xfff) << 8)
                | ((minor & 0xffff_ff00) << 12)
                | (minor & 0xff);
            Some(((device, inode), path))
        })
        .collect()
}

/// What looking at a library found: where to probe it, or a release that is not probed,
/// and why.
enum Verdict {
    Probe {
        release: String,
        layout: OpenSslLayout,
        offsets: Vec<u64>,
    },
    Unsupported {
        release: String,
        why: String,
    },
}

/// Why a library could not be looked at (not one podcap can read: logged, not named).
#[derive(Debug, thiserror::Error)]
enum LookError {
    #[error("no OpenSSL release named in {}", .0.display())]
    NoRelease(PathBuf),
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Parse(#[from] object::read::Error),
    #[error("{0} is not in the library's symbols")]
    MissingSymbol(&'static str),
}

/// A library's release and probe points, or why it is not probed.
fn look_at(path: &Path, libcrypto: &Path) -> Result<Verdict, LookError> {
    let release = std::fs::read(libcrypto)
        .ok()
        .and_then(|data| release_of(&data))
        .ok_or_else(|| LookError::NoRelease(libcrypto.to_owned()))?;
    let data = std::fs::read(path)?;
    let Some(layout) = layout_of(&release) else {
        return Ok(Verdict::Unsupported {
            release,
            why: "its layout is not in podcap's table (OpenSSL 3.0.0-3.0.21)".into(),
        });
    };
    let file = object::File::parse(&*data)?;
    if file.architecture() != object::Architecture::X86_64 {
        return Ok(Verdict::Unsupported {
            release,
            why: format!("a library for {:?}: only x86-64 is probed", file.architecture()),
        });
    }
    let code = |name: &str| -> Option<(u64, &[u8])> {
        let symbol = file
            .dynamic_symbols()
            .find(|s| s.name() == Ok(name) && s.is_definition())?;
        let section = file.section_by_index(symbol.section_index()?).ok()?;
        let (section_offset, section_size) = section.file_range()?;
        let into = symbol.address().checked_sub(section.address())?;
        let offset = section_offset.checked_add(into)?;
        let end = section_offset.checked_add(section_size)?;
        let bytes = data.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)?;
        Some((offset, &bytes[..bytes.len().min(64)]))
    };
    if let Some(why) = accessors_disagree(&layout, code("SSL_get_session"), code("SSL_get_client_random")) {
        return Ok(Verdict::Unsupported { release, why });
    }
    let mut offsets = Vec::with_capacity(PROBED_FUNCTIONS.len());
    for name in PROBED_FUNCTIONS {
        let (offset, _) = code(name).ok_or(LookError::MissingSymbol(name))?;
        offsets.push(offset);
    }
    Ok(Verdict::Probe {
        release,
        layout,
        offsets,
    })
}

/// The release a library names in its version text (`OpenSSL 3.0.19`).
#[must_use]
pub fn release_of(data: &[u8]) -> Option<String> {
    const PREFIX: &[u8] = b"OpenSSL 3.";
    let at = data.windows(PREFIX.len()).position(|w| w == PREFIX)?;
    // "OpenSSL " then the version up to the first character that is not in one.
    let version: Vec<u8> = data[at + "OpenSSL ".len()..]
        .iter()
        .copied()
        .take(16)
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .collect();
    let version = String::from_utf8(version).ok()?;
    (version.split('.').count() == 3).then(|| format!("OpenSSL {version}"))
}

/// The layout of `release`'s `SSL`, from eCapture's offsets generated with `offsetof`
/// from each release's sources (`kern/openssl_3_0_0_kern.c`, `openssl_3_0_12_kern.c`):
/// 3.0.12 keeps `session` 32 bytes further on; every other 3.0 release up to 3.0.21 is
/// the same. Checked on this machine's 3.0.19 by its accessors' code.
#[must_use]
pub fn layout_of(release: &str) -> Option<OpenSslLayout> {
    let patch: u32 = release.strip_prefix("OpenSSL 3.0.")?.parse().ok()?;
    if patch > 21 {
        return None;
    }
    Some(OpenSslLayout {
        version: 0,
        session: if patch == 12 { 0x938 } else { 0x918 },
        client_random: 0x160,
        handshake_secret: 0x584,
        handshake_traffic_hash: 0x704,
        client_app_traffic_secret: 0x744,
        server_app_traffic_secret: 0x784,
        exporter_master_secret: 0x7c4,
        master_key_length: 0x8,
        master_key: 0x50,
        session_cipher: 0x2f8,
        session_cipher_id: 0x300,
        cipher_id: 0x18,
    })
}

/// Why the library's own accessors contradict `layout`, if they do: `SSL_get_session`
/// starts `mov rax, [rdi + session]`, `SSL_get_client_random` holds `lea rsi, [rdi +
/// client_random]` (x86-64, as compilers build them). Code of another shape is not
/// judged: the release's table stands.
#[must_use]
pub fn accessors_disagree(
    layout: &OpenSslLayout,
    get_session: Option<(u64, &[u8])>,
    get_client_random: Option<(u64, &[u8])>,
) -> Option<String> {
    let displacement = |code: &[u8], opcode: &[u8]| -> Option<u32> {
        let at = code.windows(opcode.len()).position(|w| w == opcode)? + opcode.len();
        Some(u32::from_le_bytes(code.get(at..at + 4)?.try_into().ok()?))
    };
    if let Some(read) =
        get_session.and_then(|(_, code)| code.strip_prefix(&[0x48, 0x8b, 0x87][..]).map(|_| code))
    {
        let offset = displacement(read, &[0x48, 0x8b, 0x87])?;
        if offset != layout.session {
            return Some(format!(
                "SSL_get_session reads the session at {offset:#x}, the table says {:#x}",
                layout.session
            ));
        }
    }
    if let Some(offset) = get_client_random.and_then(|(_, code)| displacement(code, &[0x48, 0x8d, 0xb7])) {
        if offset != layout.client_random {
            return Some(format!(
                "SSL_get_client_random reads the client random at {offset:#x}, the table says {:#x}",
                layout.client_random
            ));
        }
    }
    None
}

/// The two handshake traffic secrets of the OpenSSL probe's TLS 1.3 handshake event
/// (`None` for any other secret, or one whose lengths are not a hash's):
/// `Derive-Secret(handshake_secret, "c hs traffic" | "s hs traffic", ClientHello..ServerHello)`.
#[must_use]
pub fn handshake_traffic_secrets(secret: &Secret) -> Option<[Secret; 2]> {
    if secret.label.as_bytes() != TLS_HANDSHAKE_LABEL {
        return None;
    }
    let hash_len = secret.secret.len().checked_sub(TLS_HANDSHAKE_HASH_AT)?;
    let algorithm = match hash_len {
        32 => ring::hkdf::HKDF_SHA256,
        48 => ring::hkdf::HKDF_SHA384,
        _ => return None,
    };
    let handshake_secret = secret.secret.get(..hash_len)?;
    let transcript = secret
        .secret
        .get(TLS_HANDSHAKE_HASH_AT..TLS_HANDSHAKE_HASH_AT + hash_len)?;
    let derive = |label: &str, name: &str| -> Option<Secret> {
        Some(Secret {
            label: name.to_owned(),
            random: secret.random,
            secret: expand_label(algorithm, handshake_secret, label, transcript, hash_len)?,
        })
    };
    Some([
        derive("c hs traffic", "CLIENT_HANDSHAKE_TRAFFIC_SECRET")?,
        derive("s hs traffic", "SERVER_HANDSHAKE_TRAFFIC_SECRET")?,
    ])
}

/// `HKDF-Expand-Label(secret, label, context, length)` of RFC 8446 7.1.
fn expand_label(
    algorithm: ring::hkdf::Algorithm,
    secret: &[u8],
    label: &str,
    context: &[u8],
    length: usize,
) -> Option<Vec<u8>> {
    struct Length(usize);
    impl ring::hkdf::KeyType for Length {
        fn len(&self) -> usize {
            self.0
        }
    }
    let full_label = format!("tls13 {label}");
    let length_field = u16::try_from(length).ok()?.to_be_bytes();
    let label_length = [u8::try_from(full_label.len()).ok()?];
    let context_length = [u8::try_from(context.len()).ok()?];
    let info: [&[u8]; 5] = [
        &length_field,
        &label_length,
        full_label.as_bytes(),
        &context_length,
        context,
    ];
    let prk = ring::hkdf::Prk::new_less_safe(algorithm, secret);
    let okm = prk.expand(&info, Length(length)).ok()?;
    let mut out = vec![0; length];
    okm.fill(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn handshake_traffic_secrets_are_those_of_rfc_8448() {
        // RFC 8448 3 (Simple 1-RTT Handshake): handshake secret, the hash of
        // ClientHello..ServerHello, and the client's handshake traffic secret.
        let handshake_secret = hex(
            "1d c8 26 e9 36 06 aa 6f dc 0a ad c1 2f 74 1b 01 04 6a a6 b9 9f 69 1e d2 21 a9 f0 ca 04 3f be ac",
        );
        let transcript = hex(
            "86 0c 06 ed c0 78 58 ee 8e 78 f0 e7 42 8c 58 ed d6 b4 3f 2c a3 e6 e9 5f 02 ed 06 3c f0 e1 ca d8",
        );
        // As the probe sends it: the secret at 0, the hash at TLS_HANDSHAKE_HASH_AT.
        let mut event = handshake_secret;
        event.resize(TLS_HANDSHAKE_HASH_AT, 0);
        event.extend(transcript);
        let secret = Secret {
            label: String::from_utf8(TLS_HANDSHAKE_LABEL.to_vec()).unwrap(),
            random: [7; 32],
            secret: event,
        };
        let [client, server] = handshake_traffic_secrets(&secret).expect("derived");
        assert_eq!(client.label, "CLIENT_HANDSHAKE_TRAFFIC_SECRET");
        assert_eq!(
            client.secret,
            hex("b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d 8f 3b 1a 95 07 38 f5 2e 96 00 74 6a 0e 27 a5 5a 21")
        );
        assert_eq!(
            server.secret,
            hex("b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38")
        );
        assert_eq!(client.random, [7; 32]);
        let other = Secret {
            label: "CLIENT_RANDOM".into(),
            random: [7; 32],
            secret: vec![1; 48],
        };
        assert!(handshake_traffic_secrets(&other).is_none());
    }

    #[test]
    fn the_release_is_read_and_only_known_layouts_pass() {
        let data = b"\0junk\0OpenSSL 3.0.19 27 Jan 2026\0more";
        assert_eq!(release_of(data).as_deref(), Some("OpenSSL 3.0.19"));
        assert_eq!(release_of(b"OpenSSL 3.0\0"), None);
        assert_eq!(layout_of("OpenSSL 3.0.19").unwrap().session, 0x918);
        assert_eq!(layout_of("OpenSSL 3.0.12").unwrap().session, 0x938);
        assert!(layout_of("OpenSSL 3.1.4").is_none() && layout_of("OpenSSL 3.0.22").is_none());
        assert!(layout_of("OpenSSL 3.0.x").is_none());
    }

    #[test]
    fn accessors_that_read_other_offsets_refuse_the_table() {
        let layout = layout_of("OpenSSL 3.0.19").unwrap();
        // This machine's 3.0.19, as objdump shows them.
        let session = [0x48, 0x8b, 0x87, 0x18, 0x09, 0, 0, 0x31, 0xff, 0xc3];
        let random = [
            0x48, 0x89, 0xf1, 0xb8, 0x20, 0, 0, 0, 0x48, 0x8d, 0xb7, 0x60, 0x01, 0, 0,
        ];
        assert_eq!(
            accessors_disagree(&layout, Some((0, &session)), Some((0, &random))),
            None
        );
        let moved = [0x48, 0x8b, 0x87, 0x38, 0x09, 0, 0, 0xc3];
        let why = accessors_disagree(&layout, Some((0, &moved)), Some((0, &random))).unwrap();
        assert!(why.contains("0x938"), "{why}");
        let random_moved = [0x48, 0x8d, 0xb7, 0x70, 0x01, 0, 0];
        assert!(accessors_disagree(&layout, None, Some((0, &random_moved))).is_some());
        // Code of another shape is not judged.
        assert_eq!(accessors_disagree(&layout, Some((0, &[0xc3])), None), None);
    }

    #[test]
    fn libssl_is_found_in_maps_with_its_device_and_inode() {
        let maps = "\
7f0000000000-7f0000001000 r--p 00000000 fd:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000001000-7f0000002000 r-xp 00001000 fd:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000002000-7f0000003000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f0000003000-7f0000004000 r--p 00000000 00:00 0
7f0000004000-7f0000005000 r--p 00000000 fd:01 77 /tmp/libssl.so.3 (deleted)
";
        let found = mappings(maps, "libssl.so.3");
        assert_eq!(found.len(), 2);
        assert_eq!(
            mappings(maps, "libcrypto.so.3")[0].1,
            "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
        );
        assert_eq!(found[0].1, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(found[0].0, ((0xfd << 8) | 1, 1234));
    }
}
