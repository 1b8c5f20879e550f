//! The runner against a real store (the segment writer's files and view) with the clock
//! given by the test.
use super::*;
use crate::{
    pcapng::{
        read::packets_with_names, Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET,
    },
    store::{Limits, SegmentWriter, SharedView},
};

const SECOND: u64 = 1_000_000_000;
/// The store's first packet.
const T0: u64 = 1_800_000_000 * SECOND;

/// A store of 300 packets on eth0, one per 100 ms from `T0`; each packet's bytes are its
/// timestamp.
fn store(dir: &Path) -> SharedView {
    let ifaces = vec![InterfaceDescription {
        name: "eth0".into(),
        description: String::new(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65535,
    }];
    let limits = Limits {
        compress: false,
        segment_size: 4_000,
        segment_time: Duration::from_hours(1),
        max_size: 100_000_000,
        max_time: Duration::from_hours(1_000_000),
    };
    let mut writer = SegmentWriter::open(dir, limits, ifaces).unwrap();
    for i in 0..300u64 {
        let ts = T0 + i * SECOND / 10;
        writer
            .write_packet(0, ts, 100, &ts.to_be_bytes(), Direction::Inbound, |_| {
                InterfaceStatistics::default()
            })
            .unwrap();
    }
    let view = writer.view();
    writer.finish(|_| InterfaceStatistics::default()).unwrap();
    view
}

fn job(name: &str, duration: &str, filter: Option<&str>, expire: Option<&str>) -> JobDoc {
    JobDoc {
        name: name.into(),
        filter: filter.map(str::to_owned),
        pod: None,
        namespaces: Vec::new(),
        start: None,
        days: 1,
        duration: duration.into(),
        expire: expire.map(str::to_owned),
        created: None,
        managed_by: None,
    }
}

/// Timestamps of the packets a job recorded, read from its files as a reader would.
fn recorded(recordings: &Recordings, name: &str) -> Vec<u64> {
    let mut all = Vec::new();
    for (dir, records) in recordings.slices(name, 0, u64::MAX).unwrap() {
        for record in records {
            let bytes = fs::read(dir.join(&record.file)).unwrap();
            let whole = &bytes[..usize::try_from(record.bytes).unwrap()];
            all.extend(
                packets_with_names(whole)
                    .unwrap()
                    .into_iter()
                    .map(|(_, p)| p.timestamp_ns),
            );
        }
    }
    all
}

/// The store's packets in `[from, to)` that `keep` selects.
fn expected(from: u64, to: u64, keep: impl Fn(u64) -> bool) -> Vec<u64> {
    (0..300u64)
        .map(|i| T0 + i * SECOND / 10)
        .filter(|&ts| ts >= from && ts < to && keep(ts))
        .collect()
}

const DELAY_NS: u64 = 1_500_000_000;

#[test]
fn a_job_records_exactly_its_window_and_selection_across_polls() {
    let dir = tempfile::tempdir().unwrap();
    let view = store(dir.path());
    let recordings = Recordings::open(dir.path(), 100_000_000, 65535).unwrap();
    let created = T0 + 5 * SECOND;
    recordings
        .create(job("odd", "10s", Some("ether[6] & 1 = 1"), None), created)
        .unwrap();
    assert_eq!(recordings.list(created).jobs[0].state, "recording");
    // Polls as the clock moves on (each copies up to DELAY behind it).
    for at in [
        created,
        created + 2 * SECOND,
        created + 7 * SECOND,
        created + 30 * SECOND,
    ] {
        recordings.poll(&view, at + DELAY_NS);
    }
    let want = expected(created, created + 10 * SECOND, |ts| (ts >> 8) & 1 == 1);
    assert!(want.len() > 20);
    assert_eq!(recorded(&recordings, "odd"), want);
    let listing = recordings.list(created + 60 * SECOND);
    let status = &listing.jobs[0];
    assert_eq!(status.state, "finished");
    assert_eq!(status.packets, want.len() as u64);
    assert_eq!(status.iterations.len(), 1);
    assert_eq!(listing.used_bytes, status.bytes);
    assert!(status.bytes > 0);
}

#[test]
fn a_restart_in_the_middle_goes_on_from_the_cursor_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let view = store(dir.path());
    let created = T0 + 2 * SECOND;
    {
        let recordings = Recordings::open(dir.path(), 100_000_000, 65535).unwrap();
        recordings.create(job("all", "20s", None, None), created).unwrap();
        recordings.poll(&view, created + 6 * SECOND + DELAY_NS);
    }
    // A new sensor run, some time later: the job is found again and catches up.
    let recordings = Recordings::open(dir.path(), 100_000_000, 65535).unwrap();
    recordings.poll(&view, created + 15 * SECOND + DELAY_NS);
    recordings.poll(&view, created + 40 * SECOND);
    assert_eq!(
        recorded(&recordings, "all"),
        expected(created, created + 20 * SECOND, |_| true)
    );
    let (_, records) = &recordings.slices("all", 0, u64::MAX).unwrap()[0];
    assert_eq!(records.len(), 2, "one file per run");
}

#[test]
fn iterations_expire_and_deleting_a_job_deletes_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let view = store(dir.path());
    let recordings = Recordings::open(dir.path(), 100_000_000, 65535).unwrap();
    let created = T0;
    recordings
        .create(job("short", "5s", None, Some("1m")), created)
        .unwrap();
    recordings.poll(&view, created + 10 * SECOND);
    assert_eq!(recorded(&recordings, "short").len(), 50);
    recordings.poll(&view, created + 5 * SECOND + 60 * SECOND - 1);
    assert_eq!(recordings.list(created + 64 * SECOND).jobs[0].iterations.len(), 1);
    recordings.poll(&view, created + 5 * SECOND + 60 * SECOND);
    let listing = recordings.list(created + 66 * SECOND);
    assert!(listing.jobs[0].iterations.is_empty());
    assert_eq!(listing.jobs[0].state, "expired");
    assert!(!dir.path().join("recordings/short/0").exists());
    // Taken names, bad input, and deletion.
    assert!(matches!(
        recordings.create(job("short", "5s", None, None), created),
        Err(RecordingError::Exists(_))
    ));
    for (bad, field) in [
        (job("../x", "5s", None, None), "name"),
        (job("x", "5", None, None), "duration"),
        (job("x", "5s", Some("tcp prot 80"), None), "filter"),
        (job("x", "5s", None, Some("7")), "expire"),
    ] {
        let error = recordings.create(bad, created).unwrap_err().to_string();
        assert!(error.contains(field), "{error}");
    }
    let mut daily = job("x", "25h", None, None);
    daily.days = 0;
    assert!(recordings.create(daily, created).is_err());
    assert!(
        !dir.path().join("recordings/x").exists(),
        "nothing made by bad input"
    );
    recordings.delete("short").unwrap();
    assert!(!dir.path().join("recordings/short").exists());
    assert!(matches!(
        recordings.delete("short"),
        Err(RecordingError::NotFound(_))
    ));
}

#[test]
fn a_job_over_the_budget_counts_drops_and_leaves_other_data_intact() {
    let dir = tempfile::tempdir().unwrap();
    let view = store(dir.path());
    // Room for the first job's copy (about 6 kB) and nothing after it.
    let recordings = Recordings::open(dir.path(), 3_000, 65535).unwrap();
    recordings.create(job("first", "10s", None, None), T0).unwrap();
    recordings.create(job("second", "10s", None, None), T0).unwrap();
    recordings.poll(&view, T0 + 20 * SECOND);
    let listing = recordings.list(T0 + 20 * SECOND);
    let [first, second] = &listing.jobs[..] else {
        panic!("{listing:?}")
    };
    assert_eq!(first.packets, 100, "{first:?}");
    assert_eq!(first.drops, 0);
    assert_eq!(second.packets, 0, "{second:?}");
    assert_eq!(second.drops, 100, "what it could not record is counted");
    assert_eq!(
        recorded(&recordings, "first").len(),
        100,
        "the first job's data is intact"
    );
}

#[test]
fn the_targeting_documents_jobs_come_and_go_with_it_and_api_jobs_stay() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = Recordings::open(dir.path(), 100_000_000, 65535).unwrap();
    recordings.create(job("from-api", "10s", None, None), T0).unwrap();
    let wanted = [
        job("nightly", "1h", Some("udp"), None),
        job("from-api", "5s", None, None),
    ];
    recordings.sync_targeting(&wanted, T0);
    let names = |r: &Recordings| -> Vec<(String, Option<String>)> {
        r.list(T0)
            .jobs
            .into_iter()
            .map(|s| (s.job.name, s.job.managed_by))
            .collect()
    };
    assert_eq!(
        names(&recordings),
        [
            ("from-api".to_owned(), None),
            ("nightly".to_owned(), Some(MANAGED_BY_TARGETING.to_owned()))
        ]
    );
    // Kept across a restart, and not added twice.
    let recordings = Recordings::open(dir.path(), 100_000_000, 65535).unwrap();
    recordings.sync_targeting(&wanted, T0 + SECOND);
    assert_eq!(names(&recordings).len(), 2);
    // Gone from the document: stopped and deleted; the API's job is not the document's.
    recordings.sync_targeting(&[], T0 + 2 * SECOND);
    assert_eq!(names(&recordings), [("from-api".to_owned(), None)]);
    assert!(!dir.path().join("recordings/nightly").exists());
}

#[test]
fn time_the_store_did_not_hold_is_counted_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let view = store(dir.path());
    let recordings = Recordings::open(dir.path(), 100_000_000, 65535).unwrap();
    // A job whose window began 5 s before the store's first packet.
    let mut early = job("early", "10s", None, None);
    early.start = Some(units::format_rfc3339_ns(T0 - 5 * SECOND));
    recordings.create(early, T0 - 10 * SECOND).unwrap();
    recordings.poll(&view, T0 + 20 * SECOND);
    let listing = recordings.list(T0 + 20 * SECOND);
    let iteration = &listing.jobs[0].iterations[0];
    assert_eq!(iteration.not_held_seconds, 5, "{iteration:?}");
    assert_eq!(iteration.packets, 50);
}

#[test]
fn what_a_crash_left_half_added_or_deleted_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("recordings");
    fs::create_dir_all(root.join(".tmp-half/0")).unwrap();
    fs::create_dir_all(root.join(".deleting-old-1/0")).unwrap();
    let recordings = Recordings::open(dir.path(), 100_000_000, 65535).unwrap();
    assert!(!root.join(".tmp-half").exists() && !root.join(".deleting-old-1").exists());
    assert!(recordings.list(T0).jobs.is_empty());
}
