//! Offline: the archive read with no cluster and no sensor (`podcap dump --archive`,
//! `podcap archive ls`).
//!
//! Rules:
//! - Only what the window needs is asked for: per node, one listing of its keys from the
//!   hour before the window to the window's end (`Layout::node_range`: S3's `start-after`,
//!   stopped past the end), a few nodes at once; a segment's key names its first packet, so only the manifests of segments that may overlap are read (those that
//!   start in the window, and the last one before it), and only the objects whose manifest
//!   overlaps and that holds an interface the selection takes (the manifest names them)
//!   are fetched, at most [`OBJECTS_AT_ONCE`] at once; never more than 32
//!   requests are in flight (a few per node, a few nodes at once).
//! - Every object is checked against its manifest (SHA-256 of what is stored and of the
//!   pcapng, size) while it is used; one that fails is a loss, named, like a sensor that
//!   failed, and so is a manifest that cannot be read, an object that is missing or cut
//!   off, and a node whose keys cannot be listed: each costs what it holds, never the rest.
//!   Requests are retried with back-off by `podcap-archive` (503 `SlowDown`, a connection
//!   cut) before they count as failed.
//! - Packets are cut exactly at the window's edges and selected by pod, namespace and
//!   interface name as a sensor selects them (pods by the interface they were recorded on);
//!   each node's parts are merged with the node's name in front of its interfaces, as a
//!   live dump does. Memory holds a chunk of each object in flight, not an object or the
//!   window: each object streams into a file of a scratch folder beside the destination
//!   (its size and SHA-256 taken as it arrives), is checked while it is decompressed and
//!   cut, block by block, into a part file there, and the merge reads those files; the
//!   folder is removed at the end. Statistics blocks describe whole segments, not the window, so they are
//!   left out; the drops the window's segments counted are said in the file's comments.
//! - Gaps (segments a node gave up before they were uploaded) in the window are said on
//!   stderr, in the file, and in the exit status, as losses are.
//! - `--filter` is compiled by this machine's libpcap (`podcap-filter`, loaded when a
//!   filter is given; its absence is said) and run on each packet as recorded, as a
//!   sensor runs it on a slice. Without the right to open a packet socket libpcap compiles
//!   with `tcpdump -r` semantics: the verdicts differ from a sensor's only for the outer
//!   VLAN tag of tagged frames (`vlan 42` and `udp` over a tag), as between tcpdump live
//!   and `tcpdump -r`.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use object_store::path::Path;
use podcap_archive::{
    layout::{self, is_gap, is_segment_manifest},
    Archive, Kind, Manifest,
};
use podcap_format::{
    pcapng::{
        read::{parse_packet, BlockReader, Section},
        BLOCK_EPB, BLOCK_ISB,
    },
    units,
};
use regex::Regex;

use crate::table::{render, Row};

/// Nodes whose keys are listed and manifests read at once.
pub const NODES_AT_ONCE: usize = 8;
/// Manifests read at once for one node: with [`NODES_AT_ONCE`], at most 32 requests are
/// in flight while manifests are read.
pub const MANIFESTS_PER_NODE: usize = 4;
/// Objects fetched at once (after every manifest is read).
pub const OBJECTS_AT_ONCE: usize = 8;

/// What to read from the archive.
pub struct Query {
    pub from_ns: u64,
    pub to_ns: u64,
    /// Nodes to read (none: every node).
    pub nodes: Vec<String>,
    pub pod: Option<Regex>,
    pub namespaces: Vec<String>,
    pub interfaces: Option<Vec<String>>,
    /// Only packets this tcpdump filter accepts.
    pub filter: Option<podcap_filter::Filter>,
    /// Kept snapshot or recording job instead of the rolling store's segments.
    pub kept: Option<Kept>,
}

/// A kept object set in the archive.
pub enum Kept {
    Snapshot(String),
    /// A recording job: every iteration.
    Recording(String),
}

/// One node's part, cut and selected, as a pcapng file in the scratch folder.
pub struct Part {
    pub node: String,
    pub first_ns: u64,
    pub file: PathBuf,
    pub packets: u64,
}

/// What [`collect`] found.
#[derive(Default)]
pub struct Collected {
    pub parts: Vec<Part>,
    /// The folder holding the parts' files, removed with it.
    pub scratch: Option<tempfile::TempDir>,
    /// Gaps in the window, each said in words.
    pub gaps: Vec<String>,
    /// Objects that could not be used, each said in words.
    pub failures: Vec<String>,
    pub nodes: Vec<String>,
    /// Requests and bytes, for the summary: lists, manifests read, objects fetched.
    pub lists: usize,
    pub manifests: usize,
    pub objects: usize,
    pub bytes_fetched: u64,
    /// Objects of the window not fetched: none of their interfaces is selected.
    pub unselected: usize,
    /// Drops the segments of the window counted.
    pub drops: u64,
}

/// Opens the archive and a runtime to read it with.
pub fn open(url: &str, cluster: &str) -> Result<(Archive, tokio::runtime::Runtime)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let archive = Archive::open(url, cluster)?;
    runtime.block_on(archive.check())?;
    Ok((archive, runtime))
}

/// Every node with segments in the archive.
pub async fn nodes(archive: &Archive) -> Result<Vec<String>> {
    let folders = archive.folders(&archive.layout().nodes()).await?;
    Ok(folders
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect())
}

/// The first packet time a segment's key names (`FIRST_NS-SEQ.json`).
fn first_ns_of(key: &Path) -> Option<u64> {
    key.filename()?.split('-').next()?.parse().ok()
}

/// What one node's part of a window is: the manifests of its segments that overlap, its
/// gaps there, the manifests that could not be read (each said in words), and the requests
/// it took.
struct NodeWindow {
    segments: Vec<Manifest>,
    gaps: Vec<Manifest>,
    failures: Vec<String>,
    lists: usize,
    manifests: usize,
}

/// The manifests of `node`'s segments that may overlap `[from, to)`, and its gaps there:
/// one listing of the node's keys from the hour before the window to its end
/// ([`podcap_archive::layout::Layout::node_range`]), so a window's cost follows what the
/// archive holds in it, not its length (a century over two hours of segments lists two
/// hours). A listing that fails is an error (the node's part is unknown); a manifest that
/// cannot be read costs its segment only.
async fn node_window(archive: &Archive, node: &str, from: u64, to: u64) -> Result<NodeWindow> {
    let layout = archive.layout();
    let (after, before) = layout.node_range(node, from, to);
    let (listed, lists) = archive.list_range(&layout.node(node), &after, &before).await?;
    let mut manifests: Vec<(u64, Path)> = Vec::new();
    let mut gaps: Vec<Path> = Vec::new();
    for meta in listed {
        let Some(first) = first_ns_of(&meta.location) else {
            continue;
        };
        if is_gap(&meta.location) {
            gaps.push(meta.location);
        } else if is_segment_manifest(&meta.location) && first < to {
            manifests.push((first, meta.location));
        }
    }
    manifests.sort();
    // The last segment starting before the window may reach into it; earlier ones do not
    // (a node's segments follow each other in time).
    let before = manifests.iter().rposition(|(first, _)| *first < from);
    let wanted: Vec<Path> = manifests
        .into_iter()
        .enumerate()
        .filter(|(i, _)| before.is_none_or(|b| *i >= b))
        .map(|(_, (_, key))| key)
        .collect();
    let read = wanted.len() + gaps.len();
    let (segments, mut failures) = read_manifests(archive, wanted, MANIFESTS_PER_NODE).await;
    let (gaps, gap_failures) = read_manifests(archive, gaps, MANIFESTS_PER_NODE).await;
    failures.extend(gap_failures);
    Ok(NodeWindow {
        segments: segments.into_iter().filter(|m| m.overlaps(from, to)).collect(),
        gaps: gaps.into_iter().filter(|m| m.overlaps(from, to)).collect(),
        failures: failures
            .into_iter()
            .map(|failure| format!("{node}: {failure}"))
            .collect(),
        lists,
        manifests: read,
    })
}

/// The manifests at `keys`, `at_once` at a time, and each that could not be read, said in
/// words (a manifest that is gone is no failure: its object was never complete).
async fn read_manifests(archive: &Archive, keys: Vec<Path>, at_once: usize) -> (Vec<Manifest>, Vec<String>) {
    let read: Vec<(Path, Result<Option<Manifest>, podcap_archive::ArchiveError>)> =
        futures::stream::iter(keys)
            .map(|key| async move {
                let got = archive.manifest(&key).await;
                (key, got)
            })
            .buffered(at_once)
            .collect()
            .await;
    let mut manifests = Vec::new();
    let mut failures = Vec::new();
    for (key, got) in read {
        match got {
            Ok(Some(manifest)) => manifests.push(manifest),
            Ok(None) => {}
            Err(e) => failures.push(format!("{key}: {e}")),
        }
    }
    (manifests, failures)
}

/// The manifests of a kept snapshot or recording job (every node, every iteration).
async fn kept_manifests(archive: &Archive, kept: &Kept, collected: &mut Collected) -> Result<Vec<Manifest>> {
    let layout = archive.layout();
    let prefix = match kept {
        Kept::Snapshot(name) => Path::from(format!("{}/{name}", layout.snapshots())),
        Kept::Recording(name) => Path::from(format!("{}/{name}", layout.recordings())),
    };
    collected.lists += 1;
    let keys: Vec<Path> = archive
        .list(&prefix)
        .await?
        .into_iter()
        .map(|meta| meta.location)
        .filter(layout::is_manifest)
        .collect();
    collected.manifests += keys.len();
    let (manifests, failures) = read_manifests(archive, keys, NODES_AT_ONCE * MANIFESTS_PER_NODE).await;
    collected.failures.extend(failures);
    Ok(manifests)
}

/// The manifests of the rolling stores' segments in the window, node by node at once
/// (every node, or the ones asked for, which must exist); gaps go to `collected`.
async fn window_manifests(
    archive: &Archive,
    query: &Query,
    all_nodes: Vec<String>,
    collected: &mut Collected,
) -> Result<Vec<Manifest>> {
    let nodes: Vec<String> = if query.nodes.is_empty() {
        all_nodes
    } else {
        for node in &query.nodes {
            if !all_nodes.contains(node) {
                bail!(
                    "the archive has no node {node:?} (it has: {})",
                    if all_nodes.is_empty() {
                        "none".to_owned()
                    } else {
                        all_nodes.join(", ")
                    }
                );
            }
        }
        query.nodes.clone()
    };
    let mut manifests = Vec::new();
    // A few nodes at once, each one listing at a time. A node whose keys cannot be listed
    // is a loss, named; the others are read.
    let windows: Vec<Result<NodeWindow>> = futures::stream::iter(&nodes)
        .map(|node| node_window(archive, node, query.from_ns, query.to_ns))
        .buffered(NODES_AT_ONCE)
        .collect()
        .await;
    for (node, window) in nodes.iter().zip(windows) {
        let window = match window {
            Ok(window) => window,
            Err(e) => {
                collected.lists += 1;
                collected
                    .failures
                    .push(format!("{node}: its keys could not be listed: {e:#}"));
                continue;
            }
        };
        collected.lists += window.lists;
        collected.manifests += window.manifests;
        collected.failures.extend(window.failures);
        for gap in window.gaps {
            collected.gaps.push(format!(
                "{node}: {} to {} ({}) was never uploaded: {}",
                gap.from,
                gap.to,
                crate::output::count(gap.packets, "packet"),
                gap.reason.as_deref().unwrap_or("given up")
            ));
        }
        manifests.extend(window.segments);
    }
    collected.nodes = nodes;
    Ok(manifests)
}

/// Reads everything `query` asks for: manifests, then the objects, checked, cut, selected.
pub async fn collect(
    archive: &Archive,
    query: &Query,
    scratch: &std::path::Path,
    progress: &mut impl FnMut(&str),
) -> Result<Collected> {
    let scratch = tempfile::Builder::new()
        .prefix(".podcap-archive-")
        .tempdir_in(scratch)
        .with_context(|| format!("creating a scratch folder in {}", scratch.display()))?;
    let mut collected = Collected::default();
    let all_nodes = nodes(archive).await?;
    collected.lists += 1;
    let manifests = if let Some(kept) = &query.kept {
        let mut manifests = kept_manifests(archive, kept, &mut collected).await?;
        manifests.retain(|m| query.nodes.is_empty() || query.nodes.contains(&m.node));
        manifests.retain(|m| m.overlaps(query.from_ns, query.to_ns));
        collected.nodes = manifests.iter().map(|m| m.node.clone()).collect();
        collected.nodes.sort();
        collected.nodes.dedup();
        manifests
    } else {
        window_manifests(archive, query, all_nodes, &mut collected).await?
    };
    // A manifest names its object's interfaces: an object none of whose interfaces the
    // selection takes is not fetched (one pod's day reads that pod's node's objects).
    let (manifests, unselected): (Vec<Manifest>, Vec<Manifest>) = manifests
        .into_iter()
        .partition(|m| m.interfaces.is_empty() || m.interfaces.iter().any(|i| selected(query, &i.name)));
    collected.unselected = unselected.len();
    let total = manifests.len();
    progress(&format!(
        "{} to fetch from {}",
        crate::output::count(total as u64, "object"),
        crate::output::count(collected.nodes.len() as u64, "node")
    ));
    // Each object streams into a scratch file as it arrives (its size and digest taken on
    // the way), then is checked and cut into a part file of its own: memory holds a chunk
    // of each object in flight, never an object or the window.
    let folder = scratch.path().to_owned();
    let folder = &folder;
    let mut fetched = futures::stream::iter(manifests.into_iter().enumerate())
        .map(|(index, manifest)| async move {
            let stored = folder.join(format!("{index:08}.zst"));
            let got = fetch_into_file(archive, &manifest, &stored).await;
            (index, manifest, stored, got)
        })
        .buffer_unordered(OBJECTS_AT_ONCE);
    while let Some((index, manifest, stored, got)) = fetched.next().await {
        let received = match got {
            Ok(received) => received,
            Err(e) => {
                let _ = std::fs::remove_file(&stored);
                collected.failures.push(format!("{}: {e:#}", manifest.node));
                continue;
            }
        };
        collected.objects += 1;
        collected.bytes_fetched += received.bytes;
        let file = folder.join(format!("{index:08}.pcapng"));
        let cut = cut_checked((&stored, &received), &manifest, query, &file);
        let _ = std::fs::remove_file(&stored);
        let packets = match cut {
            Ok(packets) => packets,
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                let name = manifest.object.as_deref().unwrap_or_default();
                collected
                    .failures
                    .push(format!("{}: {name}: {e:#}", manifest.node));
                continue;
            }
        };
        if manifest.kind == Kind::Segment {
            collected.drops = collected.drops.saturating_add(manifest.drops);
        }
        progress(&format!("{} of {total} objects fetched", collected.objects));
        collected.parts.push(Part {
            node: manifest.node,
            first_ns: manifest.first_ns,
            file,
            packets,
        });
    }
    // A failure is said on one line (a server's XML answer spans several).
    for failure in &mut collected.failures {
        *failure = failure.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    collected.scratch = Some(scratch);
    collected.parts.sort_by_key(|p| (p.node.clone(), p.first_ns));
    Ok(collected)
}

/// Whether an interface of this name is selected (the sensor's rule, `store/select.rs`).
fn selected(query: &Query, name: &str) -> bool {
    if let Some(interfaces) = &query.interfaces {
        if !interfaces.iter().any(|i| i == name) {
            return false;
        }
    }
    if query.pod.is_none() && query.namespaces.is_empty() {
        return true;
    }
    // A pod interface is `namespace/pod/iface`; any other belongs to no pod.
    let mut parts = name.splitn(3, '/');
    let (Some(namespace), Some(pod), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    query.pod.as_ref().is_none_or(|re| re.is_match(pod))
        && (query.namespaces.is_empty() || query.namespaces.iter().any(|n| n == namespace))
}

/// Streams the object `manifest` names into the file `stored`; what it was found to be.
/// An error names the object (the archive's errors name its key).
async fn fetch_into_file(
    archive: &Archive,
    manifest: &Manifest,
    stored: &std::path::Path,
) -> Result<podcap_archive::Received> {
    let key = Path::from(manifest.object.clone().unwrap_or_default());
    let keeping = || format!("keeping {key} in {}", stored.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(stored).with_context(keeping)?);
    let received = archive.fetch_into(&key, &mut out).await?;
    out.flush().with_context(keeping)?;
    Ok(received)
}

/// Checks a stored object (the file it arrived into, and what it was found to be) against
/// its manifest while it is decompressed and cut into `file`, block by block (memory holds
/// a block, not the object); the packets cut. A failed check leaves `file` for the caller
/// to remove.
fn cut_checked(
    (stored, received): (&std::path::Path, &podcap_archive::Received),
    manifest: &Manifest,
    query: &Query,
    file: &std::path::Path,
) -> Result<u64> {
    let writing = || format!("writing its part to {}", file.display());
    let reading = std::fs::File::open(stored).with_context(|| format!("reading {}", stored.display()))?;
    let mut pcapng =
        podcap_archive::decompressing_received(std::io::BufReader::new(reading), received, manifest)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).with_context(writing)?);
    let packets = cut(&mut pcapng, query, manifest.kind == Kind::Segment, &mut out).with_context(writing)?;
    out.flush().with_context(writing)?;
    pcapng.finish()?;
    Ok(packets)
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

/// One row per node and hour (segments, stored bytes, gaps), then the snapshots and
/// recording jobs kept, from listings only (no object is read).
pub async fn list(archive: &Archive, from: u64, to: u64, only: &[String]) -> Result<String> {
    let layout = archive.layout();
    let mut nodes = nodes(archive).await?;
    if !only.is_empty() {
        nodes.retain(|n| only.contains(n));
    }
    let mut rows = Vec::new();
    for node in &nodes {
        // (segments, bytes, gaps) per hour, by the hour's start.
        let mut hours: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
        let (after, before) = layout.node_range(node, from, to);
        let (listed, _) = archive.list_range(&layout.node(node), &after, &before).await?;
        for meta in listed {
            let Some(first) = first_ns_of(&meta.location) else {
                continue;
            };
            if first >= to || first.saturating_add(layout::LOOKBACK_NS) < from {
                continue;
            }
            let entry = hours.entry(layout::hour_start(first)).or_default();
            if is_gap(&meta.location) {
                entry.2 += 1;
            } else if is_segment_manifest(&meta.location) {
                entry.0 += 1;
            } else {
                entry.1 += meta.size;
            }
        }
        for (hour, (segments, bytes, gaps)) in hours {
            rows.push(Row {
                cells: vec![
                    node.clone(),
                    units::format_rfc3339(hour),
                    segments.to_string(),
                    units::format_size(bytes),
                    gaps.to_string(),
                ],
                notes: Vec::new(),
            });
        }
    }
    let mut text = render(&["NODE", "HOUR", "SEGMENTS", "STORED", "GAPS"], &rows);
    for (what, prefix) in [
        ("SNAPSHOT", layout.snapshots()),
        ("RECORDING", layout.recordings()),
    ] {
        // Name -> (nodes, stored bytes).
        let mut kept: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
        for meta in archive.list(&prefix).await? {
            let key = meta.location.as_ref();
            let rest = key
                .strip_prefix(prefix.as_ref())
                .unwrap_or_default()
                .trim_start_matches('/');
            let name = rest.split('/').next().unwrap_or_default().to_owned();
            let entry = kept.entry(name).or_default();
            if let Some(node) = meta.location.filename().and_then(|f| f.strip_suffix(".json")) {
                entry.0.push(node.to_owned());
            } else {
                entry.1 += meta.size;
            }
        }
        if kept.is_empty() {
            continue;
        }
        let rows: Vec<Row> = kept
            .into_iter()
            .map(|(name, (mut nodes, bytes))| {
                nodes.sort();
                nodes.dedup();
                Row {
                    cells: vec![name, nodes.join(","), units::format_size(bytes)],
                    notes: Vec::new(),
                }
            })
            .collect();
        text.push('\n');
        text.push_str(&render(&[what, "NODES", "STORED"], &rows));
    }
    Ok(text)
}

/// One merge input per node: its parts' files in time order, read one after the other
/// (each part is a whole pcapng section, so together they are one valid stream).
#[must_use]
pub fn inputs_by_node(parts: Vec<Part>) -> Vec<podcap_format::merge::Input<PartFiles>> {
    let mut by_node: BTreeMap<String, Vec<Part>> = BTreeMap::new();
    for part in parts {
        by_node.entry(part.node.clone()).or_default().push(part);
    }
    by_node
        .into_iter()
        .map(|(node, mut parts)| {
            parts.sort_by_key(|p| p.first_ns);
            podcap_format::merge::Input {
                label: node,
                reader: PartFiles {
                    files: parts.into_iter().map(|p| p.file).collect(),
                    current: None,
                },
            }
        })
        .collect()
}

/// A node's part files read as one stream, each opened when the one before ends.
pub struct PartFiles {
    files: std::collections::VecDeque<PathBuf>,
    current: Option<std::io::BufReader<std::fs::File>>,
}

impl Read for PartFiles {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(current) = &mut self.current {
                let n = current.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some(next) = self.files.pop_front() else {
                return Ok(0);
            };
            self.current = Some(std::io::BufReader::new(std::fs::File::open(next)?));
        }
    }
}

/// Says what a long fetch is doing, at most every half second, on stderr.
pub fn progress_printer(quiet: bool) -> impl FnMut(&str) {
    let mut last = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(Instant::now);
    move |text: &str| {
        if !quiet && last.elapsed() >= Duration::from_millis(500) {
            eprintln!("podcap: archive: {text}");
            last = Instant::now();
        }
    }
}
