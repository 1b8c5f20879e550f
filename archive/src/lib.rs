//! podcap-archive: podcap's history in object storage (S3, GCS, Azure Blob, a folder).
//!
//! `layout` says where each object goes, `manifest` what each holds, `client` how it is
//! written exactly once and read back. What travels is pcapng compressed with zstd
//! ([`compress`], [`decompress`]); readers always get plain pcapng.
//!
//! Rules:
//! - Nothing here trusts what it reads: a stored object is decompressed into at most the
//!   size its manifest states (and never more than [`MAX_OBJECT_BYTES`]), and its SHA-256
//!   is compared with the manifest's before it is used.
//! - Compression is deterministic (one zstd level, one library): an upload repeated after
//!   a crash produces the same bytes, so it is recognised by size and digest.
pub mod client;
pub mod layout;
pub mod manifest;

pub use client::{Archive, ArchiveError, Stored};
pub use layout::{Layout, ObjectKeys};
pub use manifest::{Kind, Manifest};

use podcap_format::pcapng::read::{Blocks, Section};

/// The zstd level of every object: fast enough for a sensor (a few hundred MB/s per core),
/// and fixed, so that compression is deterministic.
pub const ZSTD_LEVEL: i32 = 3;

/// The largest object podcap reads back (a segment or a node's part of a snapshot).
pub const MAX_OBJECT_BYTES: u64 = 8 << 30;

/// Makes ring the process's TLS provider (`object_store`'s HTTP client has none of its own:
/// it would refuse to start). Idempotent; call before building any object-store client.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Compresses pcapng for the archive.
pub fn compress(pcapng: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(pcapng, ZSTD_LEVEL)
}

/// Why a stored object cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("what is stored has SHA-256 {found}, its manifest says {expected}")]
    Digest { found: String, expected: String },
    #[error("its pcapng, decompressed, has SHA-256 {found}, its manifest says {expected}")]
    PcapngDigest { found: String, expected: String },
    #[error("it is not zstd, or it is damaged: {0}")]
    Zstd(std::io::Error),
    #[error("it holds {found} bytes of pcapng, its manifest says {expected}")]
    Size { found: u64, expected: u64 },
    #[error("its manifest says {0} bytes, more than podcap reads in one object")]
    TooLarge(u64),
}

/// The pcapng of a stored object, checked against its manifest (digests and size): the
/// whole of [`decompressing`].
pub fn decompress(stored: &[u8], manifest: &Manifest) -> Result<Vec<u8>, ObjectError> {
    let mut pcapng = Vec::new();
    decompressing(stored, manifest)?.drain_into(&mut pcapng)?;
    Ok(pcapng)
}

/// The pcapng of a stored object as a stream, for reading it in bounded memory: the
/// stored bytes' digest and the size are checked first, the pcapng's size and digest as it
/// is read ([`CheckedPcapng::finish`] says whether it was whole). What was read before a
/// failed check must be thrown away by the caller.
pub fn decompressing<'a>(
    stored: &'a [u8],
    manifest: &Manifest,
) -> Result<CheckedPcapng<&'a [u8]>, ObjectError> {
    let received = Received {
        bytes: stored.len() as u64,
        sha256: manifest::sha256_hex(stored),
    };
    decompressing_received(stored, &received, manifest)
}

/// What a stored object was found to be as it arrived ([`Archive::fetch_into`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub bytes: u64,
    /// SHA-256 of the stored bytes, in hex.
    pub sha256: String,
}

/// [`decompressing`] of an object read from elsewhere (the file it was streamed into),
/// whose size and digest were taken as it arrived: the same checks, in the same order.
pub fn decompressing_received<R: std::io::BufRead>(
    stored: R,
    received: &Received,
    manifest: &Manifest,
) -> Result<CheckedPcapng<R>, ObjectError> {
    if received.sha256 != manifest.stored_sha256 {
        return Err(ObjectError::Digest {
            found: received.sha256.clone(),
            expected: manifest.stored_sha256.clone(),
        });
    }
    if manifest.bytes > MAX_OBJECT_BYTES {
        return Err(ObjectError::TooLarge(manifest.bytes));
    }
    Ok(CheckedPcapng {
        decoder: zstd::stream::read::Decoder::with_buffer(stored).map_err(ObjectError::Zstd)?,
        digest: ring::digest::Context::new(&ring::digest::SHA256),
        read: 0,
        expected_bytes: manifest.bytes,
        expected_sha256: manifest.sha256.clone(),
    })
}

/// A stored object's pcapng, decompressed and digested as it is read
/// ([`decompressing`]).
pub struct CheckedPcapng<R: std::io::BufRead> {
    decoder: zstd::stream::read::Decoder<'static, R>,
    digest: ring::digest::Context,
    read: u64,
    expected_bytes: u64,
    expected_sha256: String,
}

impl<R: std::io::BufRead> std::io::Read for CheckedPcapng<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.decoder.read(buf)?;
        self.read = self.read.saturating_add(n as u64);
        if self.read > self.expected_bytes {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("longer than the {} bytes its manifest says", self.expected_bytes),
            ));
        }
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: std::io::BufRead> CheckedPcapng<R> {
    /// Reads what is left and checks the whole pcapng's size and digest.
    pub fn finish(self) -> Result<(), ObjectError> {
        self.drain_into(&mut std::io::sink())
    }

    /// Copies what is left to `out`, then checks the whole pcapng's size and digest.
    fn drain_into(mut self, out: &mut impl std::io::Write) -> Result<(), ObjectError> {
        if let Err(e) = std::io::copy(&mut self, out) {
            return Err(
                if e.kind() == std::io::ErrorKind::InvalidData && self.read > self.expected_bytes {
                    ObjectError::Size {
                        found: self.read,
                        expected: self.expected_bytes,
                    }
                } else {
                    ObjectError::Zstd(e)
                },
            );
        }
        if self.read != self.expected_bytes {
            return Err(ObjectError::Size {
                found: self.read,
                expected: self.expected_bytes,
            });
        }
        let digest = manifest::digest_hex(&self.digest.finish());
        if digest != self.expected_sha256 {
            return Err(ObjectError::PcapngDigest {
                found: digest,
                expected: self.expected_sha256,
            });
        }
        Ok(())
    }
}

/// The interfaces a pcapng file declares (each once, by name), with their pod and
/// namespace when the sensor's Kubernetes mode named them.
#[must_use]
pub fn interfaces_of(pcapng: &[u8]) -> Vec<manifest::Interface> {
    let mut section = Section::default();
    let mut seen: Vec<manifest::Interface> = Vec::new();
    for block in Blocks::new(pcapng) {
        let Ok(block) = block else { break };
        if section.observe(&block).is_err() {
            break;
        }
        if let Some(iface) = section.interfaces.last() {
            if !seen.iter().any(|s| s.name == iface.name) {
                seen.push(manifest::Interface::from_description(
                    &iface.name,
                    &iface.description,
                ));
            }
        }
    }
    seen
}

/// Fills a manifest's contents fields from the pcapng and its stored form.
pub fn describe(manifest: &mut Manifest, pcapng: &[u8], stored: &[u8]) {
    manifest.bytes = pcapng.len() as u64;
    manifest.stored_bytes = stored.len() as u64;
    manifest.sha256 = manifest::sha256_hex(pcapng);
    manifest.stored_sha256 = manifest::sha256_hex(stored);
    manifest.interfaces = interfaces_of(pcapng);
}

#[cfg(test)]
mod tests {
    use podcap_format::pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET};

    use super::*;

    fn pcapng() -> Vec<u8> {
        let mut w = BlockWriter::with_capacity(1 << 16);
        w.section_header("test");
        for name in ["shop/web-1/eth0", "node-eth0"] {
            w.interface(&InterfaceDescription {
                name: name.into(),
                description: if name.starts_with("shop") {
                    "node=n1 pod=shop/web-1 uid=u".into()
                } else {
                    String::new()
                },
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65_535,
            });
        }
        for i in 0..100u32 {
            w.packet(
                i % 2,
                u64::from(i) * 1_000,
                200,
                &[i as u8; 200],
                Direction::Inbound,
            );
        }
        w.bytes().to_vec()
    }

    #[test]
    fn a_stored_object_comes_back_only_as_its_manifest_describes_it() {
        let pcapng = pcapng();
        let stored = compress(&pcapng).unwrap();
        assert!(
            stored.len() < pcapng.len() / 4,
            "{} of {}",
            stored.len(),
            pcapng.len()
        );
        assert_eq!(compress(&pcapng).unwrap(), stored, "deterministic");
        let mut m = Manifest::new(Kind::Segment, "prod", "n1", 0, 99_000);
        describe(&mut m, &pcapng, &stored);
        assert_eq!(decompress(&stored, &m).unwrap(), pcapng);
        assert_eq!(m.interfaces.len(), 2);
        assert_eq!(m.interfaces[0].pod.as_deref(), Some("web-1"));
        assert_eq!(m.interfaces[1].pod, None);

        let mut damaged = stored.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0xff;
        assert!(matches!(
            decompress(&damaged, &m),
            Err(ObjectError::Digest { .. })
        ));
        let mut lying = m.clone();
        lying.bytes = 10;
        assert!(
            decompress(&stored, &lying).is_err(),
            "more than the manifest says"
        );
        lying.bytes = MAX_OBJECT_BYTES + 1;
        assert!(matches!(
            decompress(&stored, &lying),
            Err(ObjectError::TooLarge(_))
        ));
    }

    /// Read as a stream, an object passes the same checks: the stored digest before a byte
    /// comes out, the size and the pcapng's digest at the end.
    #[test]
    fn a_stream_of_an_object_is_checked_as_the_whole_object_is() {
        use std::io::Read;
        let pcapng = pcapng();
        let stored = compress(&pcapng).unwrap();
        let mut m = Manifest::new(Kind::Segment, "prod", "n1", 0, 99_000);
        describe(&mut m, &pcapng, &stored);
        let read = |m: &Manifest| -> Result<Vec<u8>, ObjectError> {
            let mut reader = decompressing(&stored, m)?;
            let mut out = vec![0u8; 100];
            // A part first, as a reader that stops early would; `finish` reads the rest.
            reader.read_exact(&mut out).map_err(ObjectError::Zstd)?;
            reader.finish()?;
            Ok(out)
        };
        assert_eq!(read(&m).unwrap(), pcapng[..100]);
        let mut other = m.clone();
        other.sha256 = manifest::sha256_hex(b"another pcapng");
        assert!(matches!(read(&other), Err(ObjectError::PcapngDigest { .. })));
        let mut shorter = m.clone();
        shorter.bytes = pcapng.len() as u64 - 4;
        assert!(matches!(read(&shorter), Err(ObjectError::Size { .. })));
        let mut longer = m.clone();
        longer.bytes = pcapng.len() as u64 + 4;
        assert!(matches!(read(&longer), Err(ObjectError::Size { .. })));
        let mut damaged = stored.clone();
        damaged[stored.len() / 2] ^= 0xff;
        assert!(matches!(
            decompressing(&damaged, &m),
            Err(ObjectError::Digest { .. })
        ));
    }
}
