//! Why a download holds no packet, as far as the CLI can tell, said per sensor.
//!
//! Rules:
//! - A dump that holds no packet writes no file (an empty pcapng that looks like a
//!   download is the worst outcome: it reads as "there was no traffic") and exits with
//!   [`EXIT_EMPTY`]; `--allow-empty` writes it anyway. The same holds for `dump --archive`
//!   (what the archive holds for the window, and that the selection matched none of it, is
//!   said in `dump.rs`; no probes there).
//! - Each sensor that answered is named with its extent (the oldest and newest packet its
//!   store holds, from `GET /api/v1/status`) or, for a recording job, the job's state and
//!   next start (`GET /api/v1/recordings`), and with the first reason that holds: the
//!   window is outside the extent; the filter matched nothing (the same window and pods
//!   without the filter hold a packet); no interface matched `--pod`/`-n`/`--iface` (the
//!   window without the selection holds a packet); or the store recorded nothing then.
//! - The probes behind the last three read up to the first packet and drop the connection:
//!   they cost a sensor one packet, never a download. A probe that fails is said, not
//!   guessed around.
use podcap_api::{RecordingListing, Status};
use podcap_format::units;

use super::{query, SelectArgs};
use crate::source::Sensor;

/// The exit status of a dump that matched nothing (documented in `podcap dump --help`).
pub(crate) const EXIT_EMPTY: u8 = 3;

/// What a dump asked the sensors for, as far as the explanation needs it.
pub(super) enum Asked {
    /// `[from_ns, to_ns)` of the stores, with a selection.
    Window {
        from_ns: u64,
        to_ns: u64,
        select: SelectArgs,
    },
    Snapshot(String),
    Recording(String),
}

/// One line saying what `sensor` holds and why none of it matched `asked`.
pub(super) fn explain(sensor: &Sensor, token: Option<&str>, asked: &Asked) -> String {
    match asked {
        Asked::Window {
            from_ns,
            to_ns,
            select,
        } => explain_window(sensor, token, (*from_ns, *to_ns), select),
        Asked::Snapshot(name) => format!(
            "{}: snapshot {name} holds no packet (its window and selection were fixed when it was made)",
            sensor.label
        ),
        Asked::Recording(name) => explain_recording(sensor, token, name),
    }
}

fn explain_window(
    sensor: &Sensor,
    token: Option<&str>,
    (from_ns, to_ns): (u64, u64),
    select: &SelectArgs,
) -> String {
    let label = &sensor.label;
    let status: Status = match sensor.get("/api/v1/status", token) {
        Ok(status) => status,
        Err(e) => return format!("{label}: holds nothing in the window; its extent is unknown ({e:#})"),
    };
    let time = |said: Option<&str>| said.and_then(|t| units::parse_rfc3339(t).ok());
    let (Some(oldest), Some(newest)) = (
        time(status.store.oldest_packet.as_deref()),
        time(status.store.newest_packet.as_deref()),
    ) else {
        return format!("{label}: its store holds no packet at all");
    };
    let extent = format!(
        "{label} holds {} to {}",
        units::format_rfc3339(oldest),
        units::format_rfc3339(newest)
    );
    // The extent is said to the second, cut down: the newest packet may be up to a second
    // later than `newest`.
    if to_ns <= oldest {
        return format!("{extent}: the window ends before its oldest packet");
    }
    if from_ns >= newest.saturating_add(1_000_000_000) {
        return format!("{extent}: the window starts after its newest packet");
    }
    let window = [
        ("from", units::format_rfc3339_ns(from_ns)),
        ("to", units::format_rfc3339_ns(to_ns)),
    ];
    let probe = |select: &SelectArgs| {
        let mut params = window.to_vec();
        params.extend(select.params());
        sensor.first_packet_interface(&format!("/api/v1/snapshot?{}", query(&params)), token)
    };
    let selects_interfaces = select.pod.is_some() || !select.namespaces.is_empty() || select.iface.is_some();
    if let Some(filter) = &select.filter {
        let unfiltered = SelectArgs {
            filter: None,
            ..select.clone()
        };
        match probe(&unfiltered) {
            Ok(Some(_)) => {
                return format!(
                    "{extent}: the filter {filter:?} matched none of its packets in the window{}",
                    if selects_interfaces { " and selection" } else { "" }
                );
            }
            Ok(None) => {}
            Err(e) => {
                return format!("{extent}: nothing matched; asking it without the filter failed: {e:#}")
            }
        }
    }
    if selects_interfaces {
        match probe(&SelectArgs::default()) {
            Ok(Some(interface)) => {
                return format!(
                    "{extent}: no interface matched {}; its packets in the window are on other interfaces{}",
                    describe_selection(select),
                    if interface.is_empty() {
                        String::new()
                    } else {
                        format!(" (such as {interface}; pods are matched by interfaces named namespace/pod/interface)")
                    }
                );
            }
            Ok(None) => {}
            Err(e) => {
                return format!("{extent}: nothing matched; asking it without the selection failed: {e:#}")
            }
        }
    }
    format!("{extent}: it recorded no packet in the window")
}

/// `--pod REGEX`, `-n NS` and `--iface LIST` as given.
fn describe_selection(select: &SelectArgs) -> String {
    let mut parts = Vec::new();
    if let Some(pod) = &select.pod {
        parts.push(format!("--pod {pod:?}"));
    }
    for namespace in &select.namespaces {
        parts.push(format!("-n {namespace}"));
    }
    if let Some(iface) = &select.iface {
        parts.push(format!("--iface {iface}"));
    }
    parts.join(" ")
}

fn explain_recording(sensor: &Sensor, token: Option<&str>, name: &str) -> String {
    let label = &sensor.label;
    let listing: RecordingListing = match sensor.get("/api/v1/recordings", token) {
        Ok(listing) => listing,
        Err(e) => {
            return format!("{label}: recording job {name} holds no packet; its state is unknown ({e:#})")
        }
    };
    let Some(job) = listing.jobs.iter().find(|job| job.job.name == name) else {
        return format!("{label}: has no recording job {name}");
    };
    let state = job.state.as_str();
    let next = job
        .next_start
        .as_deref()
        .and_then(|t| units::parse_rfc3339(t).ok())
        .map_or_else(String::new, |t| {
            format!(", next run starts {}", units::format_rfc3339(t))
        });
    format!("{label}: recording job {name} is {state}{next}, and has recorded no packet that matched")
}
