//! One object of an offline read: streamed into the scratch folder as it arrives (its size
//! and SHA-256 taken on the way), checked against its manifest while it is decompressed,
//! and cut to the window and the selection into a part file.
//!
//! Rules: what is wrong with an object is a loss (the inner error), named by the caller; a
//! scratch folder that cannot be read or written is the outer error and ends the read.
use std::io::{Read, Write};

use anyhow::{Context, Result};
use object_store::path::Path;
use podcap_archive::{Archive, Kind, Manifest};
use podcap_format::pcapng::{
    read::{parse_packet, BlockReader, Section},
    BLOCK_EPB, BLOCK_ISB,
};

use super::{selected, Query};
/// Streams the object `manifest` names into the file `stored`; what it was found to be.
/// An error names the object (the archive's errors name its key).
pub(super) async fn fetch_into_file(
    archive: &Archive,
    manifest: &Manifest,
    stored: &std::path::Path,
) -> Result<Result<podcap_archive::Received, String>> {
    let Some(object) = &manifest.object else {
        return Ok(Err("its manifest names no object".to_owned()));
    };
    let key = Path::from(object.as_str());
    let keeping = || format!("keeping {key} in {}", stored.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(stored).with_context(keeping)?);
    let limit = if manifest.stored_bytes > 0 {
        manifest.stored_bytes
    } else {
        podcap_archive::MAX_OBJECT_BYTES
    };
    match archive.fetch_into(&key, limit, &mut out).await {
        Ok(received) => {
            out.flush().with_context(keeping)?;
            Ok(Ok(received))
        }
        // The scratch folder failed (full, gone): no other object would fare better.
        Err(e @ podcap_archive::ArchiveError::Local(_)) => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Checks a stored object (the file it arrived into, and what it was found to be) against
/// its manifest while it is decompressed and cut into `file`, block by block (memory holds
/// a block, not the object): the packets cut, or what is wrong with the object. Failing to
/// read or write the scratch folder is the outer error. A failed check leaves `file` for
/// the caller to remove.
pub(super) fn cut_checked(
    (stored, received): (&std::path::Path, &podcap_archive::Received),
    manifest: &Manifest,
    query: &Query,
    file: &std::path::Path,
) -> Result<Result<u64, podcap_archive::ObjectError>> {
    let writing = || format!("writing its part to {}", file.display());
    let reading = std::fs::File::open(stored).with_context(|| format!("reading {}", stored.display()))?;
    let mut pcapng =
        match podcap_archive::decompressing_received(std::io::BufReader::new(reading), received, manifest) {
            Ok(pcapng) => pcapng,
            Err(e) => return Ok(Err(e)),
        };
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).with_context(writing)?);
    let packets = cut(&mut pcapng, query, manifest.kind == Kind::Segment, &mut out).with_context(writing)?;
    out.flush().with_context(writing)?;
    Ok(pcapng.finish().map(|()| packets))
}

/// The packets of `pcapng` in the window that the query selects, written to `out` with
/// every section and interface as declared (so interface ids stay valid); statistics
/// blocks are left out for segments (they count the whole segment). A block that cannot
/// be read ends the part; only a failed write is an error.
fn cut(pcapng: impl Read, query: &Query, segment: bool, out: &mut impl Write) -> std::io::Result<u64> {
    let mut reader = BlockReader::new(pcapng);
    let mut section = Section::default();
    let mut packets = 0;
    while let Ok(Some(block)) = reader.next_block() {
        if section.observe(&block).is_err() {
            break;
        }
        match block.block_type {
            BLOCK_EPB => {
                let Ok(Some(packet)) = parse_packet(&block, &section) else {
                    break;
                };
                let in_window = (query.from_ns..query.to_ns).contains(&packet.timestamp_ns);
                let iface = section.interfaces.get(packet.interface_id as usize);
                if in_window
                    && iface.is_some_and(|i| selected(query, &i.name))
                    && query
                        .filter
                        .as_ref()
                        .is_none_or(|f| f.matches(packet.data, packet.original_len))
                {
                    out.write_all(block.raw)?;
                    packets += 1;
                }
            }
            BLOCK_ISB if segment => {}
            _ => out.write_all(block.raw)?,
        }
    }
    Ok(packets)
}
