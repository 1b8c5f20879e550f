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
    #[error("its SHA-256 is {found}, its manifest says {expected}")]
    Digest { found: String, expected: String },
    #[error("it is not zstd, or it is damaged: {0}")]
    Zstd(std::io::Error),
    #[error("it holds {found} bytes of pcapng, its manifest says {expected}")]
    Size { found: u64, expected: u64 },
    #[error("its manifest says {0} bytes, more than podcap reads in one object")]
    TooLarge(u64),
}

/// The pcapng of a stored object, checked against its manifest (digests and size).
pub fn decompress(stored: &[u8], manifest: &Manifest) -> Result<Vec<u8>, ObjectError> {
    let digest = manifest::sha256_hex(stored);
    if digest != manifest.stored_sha256 {
        return Err(ObjectError::Digest {
            found: digest,
            expected: manifest.stored_sha256.clone(),
        });
    }
    if manifest.bytes > MAX_OBJECT_BYTES {
        return Err(ObjectError::TooLarge(manifest.bytes));
    }
    let pcapng = zstd::bulk::decompress(stored, manifest.bytes as usize).map_err(ObjectError::Zstd)?;
    if pcapng.len() as u64 != manifest.bytes {
        return Err(ObjectError::Size {
            found: pcapng.len() as u64,
            expected: manifest.bytes,
        });
    }
    let digest = manifest::sha256_hex(&pcapng);
    if digest != manifest.sha256 {
        return Err(ObjectError::Digest {
            found: digest,
            expected: manifest.sha256.clone(),
        });
    }
    Ok(pcapng)
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
}
