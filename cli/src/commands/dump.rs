//! `podcap dump`: each sensor's slice (or kept snapshot, or recording) downloaded into a
//! temporary file of its own, then merged into one file; or, with `--archive`, the window
//! read from the archive (rules in the parent module and in `archive.rs`). A dump with TLS
//! secrets writes every secret the parts carry right after the file's header, before any
//! packet: one-pass readers then decrypt every session, also one whose secret a sensor
//! received late and placed after its packets.
use std::{
    fs::File,
    io::{self, BufReader, BufWriter, IsTerminal, Write},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{bail, Result};
use clap::Args;
use podcap_format::{merge, units};

mod offline;

use super::{
    check_name,
    empty::{explain, Asked, EXIT_EMPTY},
    query, reach, Connection, OfflineArgs, SelectArgs, WindowArgs,
};
use crate::{
    dest::Dest,
    discovery::Role,
    output::count,
    progress::{Board, Tally},
    reached::{run_bounded, Reached},
    source::{Refused, Sensor},
};

/// `podcap dump`'s flags.
#[derive(Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "clap flags: each is one --flag of its own"
)]
pub(super) struct DumpArgs {
    #[command(flatten)]
    window: WindowArgs,
    #[command(flatten)]
    select: SelectArgs,
    /// Download this kept snapshot (`podcap snapshot list`) instead of a window of the
    /// stores; its window and selection were fixed when it was made.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["time", "from", "to", "filter", "pod", "namespaces", "iface"])]
    snapshot: Option<String>,
    /// Download what this recording job recorded (`podcap record list`): every
    /// iteration, or the --time/--from/--to of it, with any selection.
    #[arg(long, value_name = "NAME", conflicts_with = "snapshot")]
    recording: Option<String>,
    /// Where the file goes: a file ending in .pcapng, one ending in .pcapng.gz (written
    /// gzip-compressed; Wireshark opens it), - for stdout (not a terminal), or anything
    /// else a folder (the file is named by the window, snapshot or recording; created if
    /// only its last part is missing). Nothing is overwritten without --force.
    #[arg(long, default_value = ".", value_name = "DIR|FILE.pcapng[.gz]|-")]
    dest: String,
    /// Exit 0 even if some sensors failed or data was lost (the file says what).
    #[arg(long)]
    allow_partial: bool,
    /// Write the file (and exit 0) even when no packet matched. Without it such a dump
    /// writes nothing, says per sensor what it holds and why nothing matched, and exits 3.
    #[arg(long)]
    allow_empty: bool,
    /// Replace a file of the same name in --dest.
    #[arg(long)]
    force: bool,
    /// Write once each packet a node recorded on two of its pods' interfaces (traffic
    /// routed between two recorded pods of one node), on the interface it left through
    /// (the sending pod's), so Wireshark does not take the second copy for a
    /// retransmission. Without it the file is as recorded: both copies.
    #[arg(long)]
    one_copy: bool,
    /// Leave the TLS secrets out. Without it, a window of the stores carries the
    /// secrets of the sessions it holds (from sensors run with --tls-secrets, to the
    /// admin token only), so Wireshark reads them in clear; kept snapshots, recordings
    /// and the archive never hold secrets.
    #[arg(long)]
    no_secrets: bool,
    /// Read from this archive instead of the sensors (`s3://BUCKET/PREFIX`, `gs://`,
    /// `az://`, `file:///DIR`): no cluster and no sensor needed. Credentials as the
    /// sensors take them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`...).
    #[arg(long, value_name = "URL")]
    archive: Option<String>,
    #[command(flatten)]
    offline: OfflineArgs,
    #[command(flatten)]
    connection: Connection,
}

/// `podcap dump`: from the archive, or from the sensors.
pub(super) fn command(args: DumpArgs) -> Result<ExitCode> {
    let DumpArgs {
        window,
        select,
        snapshot,
        recording,
        dest,
        allow_partial,
        allow_empty,
        force,
        one_copy,
        no_secrets,
        archive,
        offline,
        connection,
    } = args;
    let writing = Writing {
        force,
        merge: merge::MergeOptions {
            one_copy,
            ..merge::MergeOptions::default()
        },
    };
    if let Some(url) = archive {
        let kept = match (snapshot, recording) {
            (Some(name), _) => Some(crate::archive::Kept::Snapshot(name)),
            (None, Some(name)) => Some(crate::archive::Kept::Recording(name)),
            (None, None) => None,
        };
        return offline::offline_dump(
            &url,
            &offline,
            (&window, &select),
            kept,
            &dest,
            Tolerance {
                allow_partial,
                allow_empty,
            },
            &writing,
        );
    }
    let wanted = wanted(&window, &select, (snapshot, recording), !no_secrets)?;
    dump(
        &reach(&connection, Role::Read)?,
        &wanted,
        &dest,
        Tolerance {
            allow_partial,
            allow_empty,
        },
        &writing,
    )
}

/// What a dump of the sensors asks each for: a kept snapshot, a recording job (a window of
/// it, a selection), or a window of the stores with a selection.
fn wanted(
    window: &WindowArgs,
    select: &SelectArgs,
    (snapshot, recording): (Option<String>, Option<String>),
    secrets: bool,
) -> Result<Wanted> {
    Ok(if let Some(name) = snapshot {
        check_name(&name)?;
        Wanted {
            path: format!("/api/v1/snapshots/{name}/pcapng"),
            title: format!("snapshot {name}"),
            file_name: format!("podcap-snapshot-{name}.pcapng"),
            kept: true,
            secrets,
            asked: Asked::Snapshot(name),
        }
    } else if let Some(name) = recording {
        check_name(&name)?;
        let mut params = if window.time.is_some() || window.from.is_some() || window.to.is_some() {
            window.resolve(units::now_ns())?.params
        } else {
            Vec::new()
        };
        params.extend(select.params());
        Wanted {
            path: format!("/api/v1/recordings/{name}/pcapng?{}", query(&params)),
            title: format!("recording {name}"),
            file_name: format!("podcap-recording-{name}.pcapng"),
            kept: true,
            secrets,
            asked: Asked::Recording(name),
        }
    } else {
        {
            let window = window.resolve(podcap_format::units::now_ns())?;
            let mut params = window.params.clone();
            params.extend(select.params());
            let (from, to) = (
                units::format_utc_compact(window.from_ns),
                units::format_utc_compact(window.to_ns),
            );
            Wanted {
                path: format!("/api/v1/snapshot?{}", query(&params)),
                title: format!("{from} to {to}"),
                file_name: format!("podcap-{from}-{to}.pcapng"),
                kept: false,
                secrets,
                asked: Asked::Window {
                    from_ns: window.from_ns,
                    to_ns: window.to_ns,
                    select: select.clone(),
                },
            }
        }
    })
}

/// What a dump downloads from each sensor.
struct Wanted {
    /// The API path, with its query.
    path: String,
    /// What it is, for the file's comment.
    title: String,
    file_name: String,
    /// A snapshot or a recording: a sensor that does not hold it (404) has nothing to give,
    /// and that is no failure.
    kept: bool,
    /// Ask for the TLS secrets of the sessions it holds.
    secrets: bool,
    /// What it is, for saying why nothing matched.
    asked: Asked,
}

/// How a dump's result may fall short and still be written with exit status 0.
#[derive(Clone, Copy)]
struct Tolerance {
    /// Some sensors failed, or data was lost (the file says what).
    allow_partial: bool,
    /// No packet matched: write the file anyway.
    allow_empty: bool,
}

/// What the Section Header says of a `--one-copy` file.
const ONE_COPY_NOTE: &str = "one copy (--one-copy): a packet a node recorded on two of its interfaces \
     (routed between two of its pods) is written once, on the interface it left through";

/// Names each sensor whose statistics say it lost packets in the window (the file's
/// statistics blocks, and its Section Header when it is a file, say it too).
fn say_capture_losses(stats: &merge::MergeStats) {
    for totals in stats
        .totals
        .iter()
        .filter(|t| t.kernel_drops.saturating_add(t.sensor_drops) > 0)
    {
        eprintln!(
            "podcap: {} lost {} of {} received in this window's time ({} in the kernel, {} in podcap)",
            totals.label,
            count(totals.kernel_drops.saturating_add(totals.sensor_drops), "packet"),
            totals.received,
            totals.kernel_drops,
            totals.sensor_drops
        );
    }
}

/// Says how many copies `--one-copy` left out.
fn say_copies_left_out(stats: &merge::MergeStats) {
    if stats.copies_left_out > 0 {
        eprintln!(
            "podcap: --one-copy: {} recorded on two interfaces of one node written once",
            count(stats.copies_left_out, "packet")
        );
    }
}

/// How the file is written: over an existing one (`--force`), and merged how.
#[derive(Clone)]
struct Writing {
    force: bool,
    merge: merge::MergeOptions,
}

impl Wanted {
    /// The path asked of a sensor: with `secrets=true` when the secrets are wanted and the
    /// sensor knows the parameter (`older`: it said it does not).
    fn path(&self, older: bool) -> String {
        if self.secrets && !older {
            let joint = if self.path.contains('?') { '&' } else { '?' };
            format!("{}{joint}secrets=true", self.path)
        } else {
            self.path.clone()
        }
    }
}

fn dump(
    reached: &Reached,
    wanted: &Wanted,
    dest: &str,
    tolerance: Tolerance,
    writing: &Writing,
) -> Result<ExitCode> {
    let dest = Dest::parse(dest, &wanted.file_name, writing.force)?;
    let to_stdout = dest == Dest::Stdout;
    let folder = dest.work_folder();
    let sensors = &reached.sensors;
    if sensors.is_empty() {
        reached.report_unreachable();
        bail!("no sensor can be reached");
    }
    let Downloads {
        parts,
        failed,
        absent,
        packets,
        with_secrets,
    } = download(reached, wanted, &folder)?;
    if wanted.kept && absent.iter().all(|absent| *absent) && reached.unreachable.is_empty() {
        bail!(
            "no sensor holds {} (podcap snapshot list and podcap record list show what they keep)",
            wanted.title
        );
    }
    let (holders, opened) = open_parts(sensors, &parts, &absent)?;
    let comments = header_comments(wanted, &holders, &failed, writing);
    let asked = holders.len() + reached.unreachable.len();
    let every_sensor_failed = failed.len() == asked;
    if to_stdout && every_sensor_failed {
        bail!("no sensor could give its slice; nothing written");
    }
    if !every_sensor_failed && packets.iter().flatten().sum::<u64>() == 0 {
        // Said per sensor that answered: what it holds, and why none of it matched.
        for (sensor, held) in sensors.iter().zip(&packets) {
            if held.is_some() {
                eprintln!(
                    "podcap: {}",
                    explain(sensor, reached.token.as_deref(), &wanted.asked)
                );
            }
        }
        if !tolerance.allow_empty {
            eprintln!(
                "podcap: no packet matched {}: no file written (--allow-empty writes it anyway)",
                wanted.title
            );
            return Ok(if failed.is_empty() {
                ExitCode::from(EXIT_EMPTY)
            } else {
                ExitCode::FAILURE
            });
        }
    }
    let (target, stats) =
        crate::dest::write(&dest, &wanted.file_name, writing.force, |mut out, rewritable| {
            let options = merge::MergeOptions {
                reserve_totals: rewritable,
                leading_secrets: leading_secrets(&parts, &with_secrets)?,
                ..writing.merge.clone()
            };
            let stats = merge::merge_with(opened, &comments, &mut out, options)?;
            if every_sensor_failed && stats.packets == 0 {
                bail!("no sensor could give its slice; nothing written");
            }
            Ok(stats)
        })?;
    if let Some(target) = target {
        eprintln!(
            "podcap: wrote {} ({}, {}) from {}",
            target.display(),
            count(stats.packets, "packet"),
            units::format_size(stats.bytes),
            // The sensors that gave their whole answer (`failed` also names those never reached).
            count(packets.iter().flatten().count() as u64, "sensor")
        );
    }
    say_copies_left_out(&stats);
    say_capture_losses(&stats);
    for loss in &stats.losses {
        eprintln!("podcap: lost: {loss}");
    }
    let partial = !failed.is_empty() || !stats.losses.is_empty();
    if partial && !tolerance.allow_partial {
        eprintln!(
            "podcap: the file is incomplete: {} of {} failed, {} noted in it (--allow-partial exits 0)",
            failed.len(),
            count(asked as u64, "sensor"),
            count(stats.losses.len() as u64, "loss")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The merged file's Section Header comments: what it holds, from whom, who failed.
fn header_comments(
    wanted: &Wanted,
    holders: &[&Sensor],
    failed: &[String],
    writing: &Writing,
) -> Vec<String> {
    let from: Vec<&str> = holders.iter().map(|s| s.label.as_str()).collect();
    let mut comments = vec![format!(
        "podcap dump of {} from {}",
        wanted.title,
        from.join(", ")
    )];
    if !failed.is_empty() {
        comments.push(format!("failed: {}", failed.join("; ")));
    }
    if writing.merge.one_copy {
        comments.push(ONE_COPY_NOTE.to_owned());
    }
    comments
}

/// The TLS secrets of the parts whose sensor said they carry some, to go ahead of every
/// packet: a sensor that received a secret after its session's first packets placed it
/// after them, where a reader that decrypts in one pass (`tshark -r`, Wireshark's first
/// pass) would come to it too late. Only those parts are read twice.
fn leading_secrets(parts: &[tempfile::NamedTempFile], with_secrets: &[bool]) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut secrets = Vec::new();
    for (part, with_secrets) in parts.iter().zip(with_secrets) {
        if *with_secrets {
            secrets.extend(merge::decryption_secrets(BufReader::new(part.reopen()?)));
        }
    }
    Ok(secrets)
}

/// The sensors that had something to give, and what they gave, opened for the merge.
type Opened<'a> = (Vec<&'a Sensor>, Vec<merge::Input<BufReader<File>>>);

/// Opens the parts of the sensors that are not `absent`.
fn open_parts<'a>(
    sensors: &'a [Sensor],
    parts: &[tempfile::NamedTempFile],
    absent: &[bool],
) -> Result<Opened<'a>> {
    let mut holders = Vec::new();
    let mut opened = Vec::new();
    for ((sensor, part), absent) in sensors.iter().zip(parts).zip(absent) {
        if !absent {
            holders.push(sensor);
            opened.push(merge::Input {
                label: sensor.label.clone(),
                reader: BufReader::new(part.reopen()?),
            });
        }
    }
    Ok((holders, opened))
}

/// What [`download`] got.
struct Downloads {
    /// Per sensor: what arrived, also from a sensor that failed half way.
    parts: Vec<tempfile::NamedTempFile>,
    /// The sensors that failed, with their reason.
    failed: Vec<String>,
    /// Per sensor: it does not hold the snapshot asked for.
    absent: Vec<bool>,
    /// Per sensor that gave its whole answer: how many packets it held (none: it failed,
    /// or does not hold what was asked).
    packets: Vec<Option<u64>>,
    /// Per sensor: its answer carries TLS secrets.
    with_secrets: Vec<bool>,
}

/// Each sensor's slice into a temporary file of its own in `folder`, `--parallel` at a
/// time, progress on a terminal.
fn download(reached: &Reached, wanted: &Wanted, folder: &std::path::Path) -> Result<Downloads> {
    let (sensors, token) = (&reached.sensors, reached.token.as_deref());
    // Each sensor's slice goes into a temporary file of its own, created exclusively with
    // a random name (never through a name another user could have planted).
    let parts = sensors
        .iter()
        .map(|_| crate::dest::temporary(folder, ".part"))
        .collect::<Result<Vec<_>>>()?;
    // `--parallel` sensors at a time; progress on a terminal.
    let tallies: Vec<Arc<Tally>> = sensors.iter().map(|_| Arc::default()).collect();
    let board = Board::start(
        sensors.iter().map(|s| s.label.clone()).collect(),
        tallies.clone(),
        io::stderr().is_terminal(),
    );
    let fetch = |n: usize| -> Result<u64> {
        let mut file = BufWriter::new(parts[n].as_file());
        let mut bytes = sensors[n].download(&wanted.path(false), token, &mut file, &tallies[n]);
        // A sensor older than the secrets refuses the parameter before it sends anything
        // (one of the release before recordings and snapshots kept secrets refuses it for
        // them).
        let older = |e: &anyhow::Error| {
            e.downcast_ref::<Refused>().is_some_and(|r| {
                r.status == 400
                    && (r.message.contains("\"secrets\"")
                        || r.message.starts_with("secrets: a recording holds no TLS secrets")
                        || r.message.starts_with("this endpoint takes no query parameters"))
            })
        };
        if wanted.secrets && bytes.as_ref().is_err_and(older) {
            bytes = sensors[n].download(&wanted.path(true), token, &mut file, &tallies[n]);
        }
        if bytes.is_err() {
            tallies[n]
                .failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        file.flush()?;
        bytes
    };
    let results = run_bounded(sensors.len(), reached.parallel, fetch);
    board.finish();
    reached.report_unreachable();
    let withheld: Vec<&str> = sensors
        .iter()
        .zip(&tallies)
        // Relaxed: the downloads' threads were joined by `run_bounded`.
        .filter(|(_, tally)| tally.secrets_withheld.load(std::sync::atomic::Ordering::Relaxed))
        .map(|(sensor, _)| sensor.label.as_str())
        .collect();
    if !withheld.is_empty() {
        eprintln!(
            "podcap: TLS secrets left out by {}: they are given to the admin token only (--no-secrets does not ask)",
            withheld.join(", ")
        );
    }
    let mut failed: Vec<String> = reached
        .unreachable
        .iter()
        .map(|(label, reason)| format!("{label} ({reason})"))
        .collect();
    let mut absent = vec![false; sensors.len()];
    let mut packets: Vec<Option<u64>> = tallies
        .iter()
        // Relaxed: the downloads' threads were joined by `run_bounded`.
        .map(|tally| Some(tally.packets.load(std::sync::atomic::Ordering::Relaxed)))
        .collect();
    for (n, result) in results.iter().enumerate() {
        if let Err(e) = result {
            packets[n] = None;
            let not_held = e.downcast_ref::<Refused>().is_some_and(|r| r.status == 404);
            if wanted.kept && not_held {
                absent[n] = true;
                continue;
            }
            // What arrived before the failure is kept: the merge takes its whole blocks.
            eprintln!("podcap: sensor {} failed: {e:#}", sensors[n].label);
            failed.push(format!("{} ({e:#})", sensors[n].label));
        }
    }
    // Relaxed: the downloads' threads were joined by `run_bounded`.
    let with_secrets = tallies
        .iter()
        .map(|tally| tally.secrets_included.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    Ok(Downloads {
        parts,
        failed,
        absent,
        packets,
        with_secrets,
    })
}
