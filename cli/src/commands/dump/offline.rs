//! `podcap dump --archive`: the window, kept snapshot or recording job read from the
//! archive with no sensor, checked, cut, selected and merged (rules in `crate::archive`).
use std::process::ExitCode;

use anyhow::{Context, Result};
use podcap_format::{merge, units};

use super::{say_copies_left_out, Tolerance, Writing, ONE_COPY_NOTE};
use crate::{
    commands::{check_name, empty::EXIT_EMPTY, OfflineArgs, SelectArgs, WindowArgs},
    dest::Dest,
    output::count,
};

/// What an offline read selects: the window, the nodes, pods, namespaces and interfaces.
fn offline_query(
    offline: &OfflineArgs,
    window: &WindowArgs,
    select: &SelectArgs,
    kept: Option<crate::archive::Kept>,
) -> Result<crate::archive::Query> {
    let (from_ns, to_ns) = window.resolve_or_all(
        kept.is_none()
            .then_some("give --time DUR, or --from TIME [--to TIME]"),
    )?;
    Ok(crate::archive::Query {
        from_ns,
        to_ns,
        nodes: offline.nodes.clone(),
        pod: select
            .pod
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .context("--pod")?,
        namespaces: select.namespaces.clone(),
        interfaces: select
            .iface
            .as_ref()
            .map(|list| list.split(',').map(str::to_owned).collect()),
        filter: select
            .filter
            .as_deref()
            .filter(|text| !text.is_empty())
            .map(|text| podcap_filter::Filter::compile(text, SNAPLEN))
            .transpose()
            .context("--filter")?,
        kept,
    })
}

/// The snap length a filter is compiled for: the largest packet a sensor records.
const SNAPLEN: u32 = 262_144;

/// What an offline read is called (for the file's comment and messages) and the name of
/// its file in a folder.
fn offline_names(query: &crate::archive::Query) -> Result<(String, String)> {
    Ok(match &query.kept {
        Some(crate::archive::Kept::Snapshot(name)) => {
            check_name(name)?;
            (
                format!("snapshot {name}"),
                format!("podcap-snapshot-{name}.pcapng"),
            )
        }
        Some(crate::archive::Kept::Recording(name)) => {
            check_name(name)?;
            (
                format!("recording {name}"),
                format!("podcap-recording-{name}.pcapng"),
            )
        }
        None => {
            let (from, to) = (
                units::format_utc_compact(query.from_ns),
                units::format_utc_compact(query.to_ns),
            );
            (format!("{from} to {to}"), format!("podcap-{from}-{to}.pcapng"))
        }
    })
}

/// `podcap dump --archive`: the window (or kept snapshot or job) read from the archive,
/// checked, cut, selected and merged (rules in `archive.rs`).
pub(super) fn offline_dump(
    url: &str,
    offline: &OfflineArgs,
    (window, select): (&WindowArgs, &SelectArgs),
    kept: Option<crate::archive::Kept>,
    dest: &str,
    tolerance: Tolerance,
    writing: &Writing,
) -> Result<ExitCode> {
    let query = offline_query(offline, window, select, kept)?;
    let dest_arg = dest;
    let (title, file_name) = offline_names(&query)?;
    let dest = Dest::parse(dest_arg, &file_name, writing.force)?;
    let (archive, runtime) = crate::archive::open(url, &offline.cluster)?;
    let collected = runtime.block_on(crate::archive::collect(
        &archive,
        &query,
        &dest.work_folder(),
        &mut crate::archive::progress_printer(false),
    ))?;
    // The same rule as a dump of the sensors: no packet matched, no file (a gap or a failed
    // object is a loss, said below with the file that has the rest).
    let held: u64 = collected.parts.iter().map(|p| p.packets).sum();
    if held == 0 && collected.failures.is_empty() && collected.gaps.is_empty() {
        if collected.parts.is_empty() && collected.unselected > 0 {
            eprintln!(
                "podcap: the archive holds {} of {} for {title}, and none of their interfaces matched the selection",
                count(collected.unselected as u64, "object"),
                collected.nodes.join(", ")
            );
        } else if collected.parts.is_empty() {
            eprintln!(
                "podcap: the archive holds nothing for {title} (podcap archive ls {url} shows what it holds)"
            );
        } else {
            eprintln!(
                "podcap: the archive holds {} of {} for {title}, and none of their packets matched the selection",
                count(collected.parts.len() as u64, "object"),
                collected.nodes.join(", ")
            );
        }
        if !tolerance.allow_empty {
            eprintln!("podcap: no packet matched {title}: no file written (--allow-empty writes it anyway)");
            return Ok(ExitCode::from(EXIT_EMPTY));
        }
    }
    let mut comments = vec![format!(
        "podcap dump of {title} from the archive {url} (cluster {}), nodes {}",
        offline.cluster,
        collected.nodes.join(", ")
    )];
    if let Some(filter) = select.filter.as_deref().filter(|f| !f.is_empty()) {
        comments.push(format!("filter (applied by this machine's libpcap): {filter}"));
    }
    comments.extend(collected.gaps.iter().map(|g| format!("gap: {g}")));
    comments.extend(collected.failures.iter().map(|f| format!("failed: {f}")));
    if collected.drops > 0 {
        comments.push(format!(
            "the archived segments of this window counted {} packets lost at capture",
            collected.drops
        ));
    }
    let inputs = crate::archive::inputs_by_node(collected.parts);
    if writing.merge.one_copy {
        comments.push(ONE_COPY_NOTE.to_owned());
    }
    let (target, stats) = crate::dest::write(&dest, &file_name, writing.force, |mut out, rewritable| {
        let options = merge::MergeOptions {
            reserve_totals: rewritable,
            ..writing.merge.clone()
        };
        Ok(merge::merge_with(inputs, &comments, &mut out, options)?)
    })?;
    say_copies_left_out(&stats);
    if let Some(target) = &target {
        eprintln!(
            "podcap: wrote {} ({}, {}) from {} of {}: {}, {} read, {} fetched",
            target.display(),
            count(stats.packets, "packet"),
            units::format_size(stats.bytes),
            count(collected.objects as u64, "object"),
            count(collected.nodes.len() as u64, "node"),
            count(collected.lists as u64, "listing"),
            count(collected.manifests as u64, "manifest"),
            units::format_size(collected.bytes_fetched)
        );
    }
    for line in collected
        .gaps
        .iter()
        .chain(&collected.failures)
        .chain(&stats.losses)
    {
        eprintln!("podcap: lost: {line}");
    }
    let lost = collected.gaps.len() + collected.failures.len() + stats.losses.len();
    if lost > 0 && !tolerance.allow_partial {
        eprintln!("podcap: the file is incomplete: {lost} losses noted in it (--allow-partial exits 0)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
