//! Offline: the archive read with no cluster and no sensor (`podcap dump --archive`,
//! `podcap archive ls`).
//!
//! Rules:
//! - Only what the window needs is asked for: per node, one listing of its keys from the
//!   hour before the window to the window's end (`Layout::node_range`: S3's `start-after`,
//!   stopped past the end), a few nodes at once; a segment's key names its first packet, so only the manifests of segments that may overlap are read (those that
//!   start in the window, and the last one before it), and only the objects whose manifest
//!   overlaps and that holds an interface the selection takes (the manifest names them)
//!   are fetched, at most [`OBJECTS_AT_ONCE`] at once. Nodes go a group at a time
//!   ([`NODES_AT_ONCE`] listings at once), their segments a batch at a time ([`BATCH`]:
//!   [`MANIFESTS_AT_ONCE`] manifests read at once, then the objects): never more than 32
//!   requests in flight.
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
mod ls;
mod object;
mod parts;

use std::{
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
use regex::Regex;

use self::object::{cut_checked, fetch_into_file};
pub use self::{
    ls::list,
    parts::{inputs_by_node, PartFiles},
};

/// Nodes whose keys are listed at once (a group: their segments are held, 24 bytes each,
/// until their objects are cut).
pub const NODES_AT_ONCE: usize = 8;
/// Manifests read at once.
pub const MANIFESTS_AT_ONCE: usize = 32;
/// Objects fetched at once.
pub const OBJECTS_AT_ONCE: usize = 8;
/// Segments whose manifests are read, then whose objects are fetched, before the next
/// ones: memory holds a batch of manifests (~2 KB each), never a window's.
pub const BATCH: usize = 256;

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
    /// Objects given a number for their scratch files so far.
    files: usize,
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

/// The first packet time and sequence number a segment's key names
/// (`FIRST_NS-SEQ.json`, `FIRST_NS-SEQ.gap.json`).
fn first_and_seq(key: &Path) -> Option<(u64, u64)> {
    let (first, rest) = key.filename()?.split_once('-')?;
    Some((first.parse().ok()?, rest.split('.').next()?.parse().ok()?))
}

/// One node's part of a window, as its keys name it: (first packet, sequence number) of
/// the segments that may overlap and of its gaps there (16 bytes each, however long the
/// window), keys the layout would not write, and the listing requests it took.
struct NodeKeys {
    segments: Vec<(u64, u64)>,
    gaps: Vec<(u64, u64)>,
    /// Manifest keys in the node's folders that are not as the layout writes them.
    foreign: Vec<String>,
    lists: usize,
}

/// The keys of `node`'s segments that may overlap `[from, to)`, and of its gaps there:
/// one listing of the node's keys from the hour before the window to its end
/// ([`podcap_archive::layout::Layout::node_range`]), so a window's cost follows what the
/// archive holds in it, not its length (a century over two hours of segments lists two
/// hours). A listing that fails is an error (the node's part is unknown).
async fn node_keys(archive: &Archive, node: &str, from: u64, to: u64) -> Result<NodeKeys> {
    let layout = archive.layout();
    let (after, before) = layout.node_range(node, from, to);
    let mut segments: Vec<(u64, u64)> = Vec::new();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut foreign = Vec::new();
    let lists = archive
        .visit_range(&layout.node(node), &after, &before, |meta| {
            let key = &meta.location;
            let (gap, manifest) = (is_gap(key), is_segment_manifest(key));
            if !gap && !manifest {
                return;
            }
            // The key is rebuilt from these two numbers when it is read: one the layout
            // would not write is said, never read as another.
            let Some((first, seq)) = first_and_seq(key).filter(|&(first, seq)| {
                if gap {
                    layout.gap(node, first, seq) == *key
                } else {
                    layout.segment(node, first, seq).manifest == *key
                }
            }) else {
                foreign.push(key.to_string());
                return;
            };
            if gap {
                gaps.push((first, seq));
            } else if first < to {
                segments.push((first, seq));
            }
        })
        .await?;
    segments.sort_unstable();
    // The last segment starting before the window may reach into it; earlier ones do not
    // (a node's segments follow each other in time).
    if let Some(before) = segments.iter().rposition(|(first, _)| *first < from) {
        segments.drain(..before);
    }
    Ok(NodeKeys {
        segments,
        gaps,
        foreign,
        lists,
    })
}

/// The manifests at `keys` (each with its node), [`MANIFESTS_AT_ONCE`] at a time, and
/// each that could not be read, said in words (a manifest that is gone is no failure: its
/// object was never complete).
async fn read_manifests(archive: &Archive, keys: Vec<(String, Path)>) -> (Vec<Manifest>, Vec<String>) {
    let read: Vec<(
        String,
        Path,
        Result<Option<Manifest>, podcap_archive::ArchiveError>,
    )> = futures::stream::iter(keys)
        .map(|(node, key)| async move {
            let got = archive.manifest(&key).await;
            (node, key, got)
        })
        .buffered(MANIFESTS_AT_ONCE)
        .collect()
        .await;
    let mut manifests = Vec::new();
    let mut failures = Vec::new();
    for (node, key, got) in read {
        match got {
            Ok(Some(manifest)) => manifests.push(manifest),
            Ok(None) => {}
            Err(e) => failures.push(format!("{node}: {key}: {e}")),
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
    let keys = keys
        .into_iter()
        .map(|key| {
            (
                key.filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .unwrap_or_default()
                    .to_owned(),
                key,
            )
        })
        .collect();
    let (manifests, failures) = read_manifests(archive, keys).await;
    collected.failures.extend(failures);
    Ok(manifests)
}

/// The nodes to read: every node, or the ones asked for, which must exist.
fn chosen_nodes(query: &Query, all_nodes: Vec<String>) -> Result<Vec<String>> {
    if query.nodes.is_empty() {
        return Ok(all_nodes);
    }
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
    let mut nodes = query.nodes.clone();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// Reads everything `query` asks for: manifests, then the objects, checked, cut, selected.
/// The rolling stores' window goes a group of nodes at a time ([`NODES_AT_ONCE`]: their
/// keys listed at once), each group's segments a batch at a time ([`BATCH`]: manifests
/// read, then objects fetched and cut), so memory follows neither the window's length
/// nor the node count.
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
    let folder = scratch.path().to_owned();
    let mut collected = Collected::default();
    let all_nodes = nodes(archive).await?;
    collected.lists += 1;
    if let Some(kept) = &query.kept {
        let mut manifests = kept_manifests(archive, kept, &mut collected).await?;
        manifests.retain(|m| query.nodes.is_empty() || query.nodes.contains(&m.node));
        manifests.retain(|m| m.overlaps(query.from_ns, query.to_ns));
        collected.nodes = manifests.iter().map(|m| m.node.clone()).collect();
        collected.nodes.sort();
        collected.nodes.dedup();
        fetch_and_cut(archive, manifests, query, &folder, &mut collected, progress).await?;
    } else {
        collected.nodes = chosen_nodes(query, all_nodes)?;
        let nodes = collected.nodes.clone();
        for group in nodes.chunks(NODES_AT_ONCE) {
            let segments = group_keys(archive, group, query, &mut collected).await;
            let layout = archive.layout();
            for batch in segments.chunks(BATCH) {
                let keys = batch
                    .iter()
                    .map(|&(index, first, seq)| {
                        let node = &group[index];
                        (node.clone(), layout.segment(node, first, seq).manifest)
                    })
                    .collect();
                let (manifests, failures) = read_manifests(archive, keys).await;
                collected.failures.extend(failures);
                let manifests = manifests
                    .into_iter()
                    .filter(|m| m.overlaps(query.from_ns, query.to_ns))
                    .collect();
                fetch_and_cut(archive, manifests, query, &folder, &mut collected, progress).await?;
            }
        }
    }
    // A failure is said on one line (a server's XML answer spans several).
    for failure in &mut collected.failures {
        *failure = failure.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    collected.scratch = Some(scratch);
    collected.parts.sort_by_key(|p| (p.node.clone(), p.first_ns));
    Ok(collected)
}

/// Lists the keys of a group of nodes at once; their gaps (read now) go to `collected`, as
/// does a node whose keys cannot be listed (a loss, named; the others are read). The
/// segments that may overlap: (the node's index in `group`, first packet, sequence
/// number), 24 bytes each.
async fn group_keys(
    archive: &Archive,
    group: &[String],
    query: &Query,
    collected: &mut Collected,
) -> Vec<(usize, u64, u64)> {
    let layout = archive.layout();
    let listed: Vec<Result<NodeKeys>> = futures::stream::iter(group)
        .map(|node| node_keys(archive, node, query.from_ns, query.to_ns))
        .buffered(NODES_AT_ONCE)
        .collect()
        .await;
    let mut segments = Vec::new();
    for (index, (node, keys)) in group.iter().zip(listed).enumerate() {
        let keys = match keys {
            Ok(keys) => keys,
            Err(e) => {
                collected.lists += 1;
                collected
                    .failures
                    .push(format!("{node}: its keys could not be listed: {e:#}"));
                continue;
            }
        };
        collected.lists += keys.lists;
        collected.manifests += keys.segments.len() + keys.gaps.len();
        collected.failures.extend(
            keys.foreign
                .iter()
                .map(|key| format!("{node}: {key}: not a key podcap writes; left unread")),
        );
        let gap_keys = keys
            .gaps
            .iter()
            .map(|&(first, seq)| (node.clone(), layout.gap(node, first, seq)))
            .collect();
        let (gaps, failures) = read_manifests(archive, gap_keys).await;
        collected.failures.extend(failures);
        for gap in gaps.iter().filter(|m| m.overlaps(query.from_ns, query.to_ns)) {
            collected.gaps.push(format!(
                "{node}: {} to {} ({}) was never uploaded: {}",
                gap.from,
                gap.to,
                crate::output::count(gap.packets, "packet"),
                gap.reason.as_deref().unwrap_or("given up")
            ));
        }
        segments.extend(keys.segments.iter().map(|&(first, seq)| (index, first, seq)));
    }
    segments
}

/// Fetches the objects `manifests` name, [`OBJECTS_AT_ONCE`] at a time, each streamed into
/// a scratch file as it arrives (its size and digest taken on the way), then checked and
/// cut into a part file of its own: memory holds a chunk of each object in flight, never
/// an object. An object none of whose interfaces the selection takes (a manifest names
/// them) is not fetched; one that fails is a loss in `collected`; a scratch folder that
/// fails (full, gone) ends the read.
async fn fetch_and_cut(
    archive: &Archive,
    manifests: Vec<Manifest>,
    query: &Query,
    folder: &std::path::Path,
    collected: &mut Collected,
    progress: &mut impl FnMut(&str),
) -> Result<()> {
    let (manifests, unselected): (Vec<Manifest>, Vec<Manifest>) = manifests
        .into_iter()
        .partition(|m| m.interfaces.is_empty() || m.interfaces.iter().any(|i| selected(query, &i.name)));
    collected.unselected += unselected.len();
    let first_index = collected.files;
    collected.files += manifests.len();
    let mut fetched = futures::stream::iter(manifests.into_iter().enumerate())
        .map(|(index, manifest)| async move {
            let stored = folder.join(format!("{:08}.zst", first_index + index));
            let got = fetch_into_file(archive, &manifest, &stored).await;
            (first_index + index, manifest, stored, got)
        })
        .buffer_unordered(OBJECTS_AT_ONCE);
    while let Some((index, manifest, stored, got)) = fetched.next().await {
        let name = manifest.object.as_deref().unwrap_or_default();
        let received = match got {
            Ok(Ok(received)) => received,
            Ok(Err(e)) => {
                let _ = std::fs::remove_file(&stored);
                collected.failures.push(format!("{}: {name}: {e}", manifest.node));
                continue;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&stored);
                return Err(e);
            }
        };
        collected.objects += 1;
        collected.bytes_fetched += received.bytes;
        let file = folder.join(format!("{index:08}.pcapng"));
        let cut = cut_checked((&stored, &received), &manifest, query, &file);
        let _ = std::fs::remove_file(&stored);
        let packets = match cut {
            Ok(Ok(packets)) => packets,
            Ok(Err(e)) => {
                let _ = std::fs::remove_file(&file);
                collected.failures.push(format!("{}: {name}: {e}", manifest.node));
                continue;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                return Err(e);
            }
        };
        if manifest.kind == Kind::Segment {
            collected.drops = collected.drops.saturating_add(manifest.drops);
        }
        progress(&format!(
            "{} fetched of {}",
            crate::output::count(collected.objects as u64, "object"),
            crate::output::count(collected.nodes.len() as u64, "node")
        ));
        collected.parts.push(Part {
            node: manifest.node,
            first_ns: manifest.first_ns,
            file,
            packets,
        });
    }
    Ok(())
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
