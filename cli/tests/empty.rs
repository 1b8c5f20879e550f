//! A download never misleads: a dump that matched no packet writes no file, says per sensor
//! what it holds and why nothing matched, and exits 3; `--allow-empty` writes it anyway.
//! Real sensor routers and stores on loopback (120 packets on eth0, 20 s to 8 s ago).
mod common;

use std::net::SocketAddr;

use common::{packets, sensor, sensor_state, serve, stderr, ADMIN_TOKEN, SMALL_FLOORS, TOKEN};
use podcap_sensor::{sys::realtime_ns, units::format_rfc3339};

const EXIT_EMPTY: i32 = 3;

async fn dump(sensors: &[SocketAddr], dest: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["dump", "--dest", dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    common::podcap_with(sensors, TOKEN, &args).await
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_that_matches_nothing_writes_nothing_and_says_why_per_sensor() {
    let store = tempfile::tempdir().unwrap();
    let sensors = [sensor(&store, 0, 0xaa).await];
    let hour = 3_600_000_000_000;
    let (before_from, before_to) = (
        format_rfc3339(realtime_ns() - 2 * hour),
        format_rfc3339(realtime_ns() - hour),
    );
    let cases: [(&[&str], &str); 5] = [
        (
            &["--from", &before_from, "--to", &before_to],
            "the window ends before its oldest packet",
        ),
        // The newest packet is 8 s old.
        (&["--time", "4s"], "the window starts after its newest packet"),
        (
            &["--time", "5m", "--pod", "^web-"],
            "no interface matched --pod \"^web-\"; its packets in the window are on other interfaces (such as eth0",
        ),
        (&["--time", "5m", "-n", "shop"], "no interface matched -n shop"),
        (
            &["--time", "5m", "--filter", "tcp port 443"],
            "the filter \"tcp port 443\" matched none of its packets in the window",
        ),
    ];
    for (window, why) in cases {
        let dest = tempfile::tempdir().unwrap();
        let out = dump(&sensors, dest.path(), window).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(EXIT_EMPTY), "{window:?}: {err}");
        assert_eq!(files_in(dest.path()), 0, "{window:?}: no file: {err}");
        assert!(
            err.contains("node-0 holds 20"),
            "{window:?}: the extent is named: {err}"
        );
        assert!(err.contains(why), "{window:?}: {err}");
        assert!(err.contains("--allow-empty"), "{window:?}: {err}");
    }

    // Nothing on standard output either.
    let dest = tempfile::tempdir().unwrap();
    let out = common::podcap_with(&sensors, TOKEN, &["dump", "--time", "4s", "--dest", "-"]).await;
    assert_eq!(out.status.code(), Some(EXIT_EMPTY), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "{} bytes on stdout", out.stdout.len());

    // --allow-empty writes the empty file, and says why it is empty.
    let out = dump(&sensors, dest.path(), &["--time", "4s", "--allow-empty"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("starts after its newest packet"),
        "{}",
        stderr(&out)
    );
    let file = common::dumped(dest.path());
    assert!(packets(&file).is_empty());

    // What matches is still written, with exit 0.
    let dest = tempfile::tempdir().unwrap();
    let out = dump(&sensors, dest.path(), &["--time", "5m"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(packets(&common::dumped(dest.path())).len(), 120);
}

/// A recording job that has not run yet holds nothing: no file, the job's state and next
/// start named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_has_not_run_yet_writes_nothing_and_names_its_next_start() {
    let store = tempfile::tempdir().unwrap();
    let state = sensor_state(&store, 0, 0xaa, SMALL_FLOORS);
    let sensors = [serve(state, None).await];
    let start = format_rfc3339(realtime_ns() + 3_600_000_000_000);
    let made = common::podcap_with(
        &sensors,
        ADMIN_TOKEN,
        &["record", "create", "later", "--duration", "5m", "--start", &start],
    )
    .await;
    assert!(made.status.success(), "{}", stderr(&made));
    let dest = tempfile::tempdir().unwrap();
    let out = dump(&sensors, dest.path(), &["--recording", "later"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_EMPTY), "{err}");
    assert_eq!(files_in(dest.path()), 0, "{err}");
    assert!(
        err.contains("node-0: recording job later is") && err.contains(&format!("next run starts {start}")),
        "{err}"
    );
}
