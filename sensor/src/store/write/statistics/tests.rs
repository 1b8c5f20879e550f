//! Statistics blocks a second: a window's counts are those of its own seconds, in finished
//! and active segments, and an idle interface or store writes none.
use super::super::tests::{limits, writer};
use crate::{
    pcapng::{read, Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET},
    store::slice,
};

const SECOND: u64 = 1_000_000_000;

/// The capture's cumulative counters after `k` seconds: `k²` kernel drops, `k` sensor
/// drops, 800 packets a second received besides.
fn cumulative(t0: u64, k: u64) -> InterfaceStatistics {
    InterfaceStatistics {
        start_ns: t0 - SECOND,
        end_ns: t0 + k * SECOND,
        received: 800 * k + k * k + k,
        kernel_drops: k * k,
        sensor_drops: k,
    }
}

/// The counters of slot `slot` after `k` seconds: eth0's move, eth1 (slot 1) saw one
/// packet at the start and nothing since.
fn counters(t0: u64, slot: u32, k: u64) -> InterfaceStatistics {
    if slot == 1 {
        InterfaceStatistics {
            start_ns: t0 - SECOND,
            end_ns: t0 + k * SECOND,
            received: 1,
            ..InterfaceStatistics::default()
        }
    } else {
        cumulative(t0, k)
    }
}

/// (start, end, received, kernel drops, sensor drops) of a statistics block.
type Counts = (u64, u64, u64, u64, u64);

/// The counts of every statistics block of interface `name` in `bytes`.
fn blocks_of(bytes: &[u8], name: &str) -> Vec<Counts> {
    let mut section = read::Section::default();
    let mut found = Vec::new();
    for block in read::Blocks::new(bytes) {
        let block = block.unwrap();
        section.observe(&block).unwrap();
        let Some(s) = read::parse_statistics(&block, &section).unwrap() else {
            continue;
        };
        if section.interfaces[s.interface_id as usize].name == name {
            found.push((
                s.start_ns.unwrap(),
                s.end_ns.unwrap(),
                s.received.unwrap(),
                s.interface_drops.unwrap(),
                s.os_drops.unwrap(),
            ));
        }
    }
    found
}

fn slice_of(
    dir: &std::path::Path,
    segments: &[&crate::store::index::SegmentRecord],
    window: (u64, u64),
    live: &[slice::LiveStatistics],
) -> (Vec<Counts>, slice::SliceStats) {
    let mut out = Vec::new();
    let stats = slice::write_segments(
        dir,
        segments,
        window,
        &slice::Selection::default(),
        (slice::Secrets::LeftOut, live),
        &mut out,
    )
    .unwrap();
    (blocks_of(&out, "eth0"), stats)
}

/// Ten seconds of 800 packets of 1,400 B from a whole second a minute ago (about 11 MB:
/// checkpoints to seek to), a group of statistics blocks after each; the writer and that
/// second.
fn ten_seconds(dir: &std::path::Path) -> (super::SegmentWriter, u64) {
    let mut w = writer(dir, limits(100_000_000, 1_000_000_000));
    let t0 = (crate::sys::realtime_ns() - 60 * SECOND) / SECOND * SECOND;
    w.set_interface(
        1,
        InterfaceDescription {
            name: "eth1".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        },
    );
    w.write_packet(1, t0, 100, &[1u8; 100], Direction::Inbound, |slot| {
        counters(t0, slot, 0)
    })
    .unwrap();
    for second in 0..10 {
        for j in 0..800 {
            let ts = t0 + second * SECOND + j * 1_200_000;
            w.write_packet(0, ts, 1400, &[9u8; 1400], Direction::Inbound, |slot| {
                counters(t0, slot, second)
            })
            .unwrap();
            w.settle(true);
        }
        w.write_statistics_group(|slot| counters(t0, slot, second + 1), false);
        w.flush_now();
    }
    (w, t0)
}

#[test]
fn a_window_counts_the_drops_of_its_own_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, t0) = ten_seconds(dir.path());
    // An idle second: the counters did not move, no group is written.
    w.statistics.last_group = std::time::Instant::now()
        .checked_sub(super::STATISTICS_INTERVAL * 2)
        .unwrap();
    let before = w.buf.len();
    w.maybe_write_statistics(|slot| counters(t0, slot, 10));
    assert_eq!(w.buf.len(), before, "an idle second wrote statistics");

    // The active segment: the groups that reached the file, and what was counted since.
    w.flush_now();
    let active = w.view().read().unwrap().active.clone().unwrap();
    let since = w.view().read().unwrap().active_interfaces[0].since;
    assert_eq!(
        since,
        cumulative(t0, 10),
        "readers count from the last readable group"
    );
    let now = InterfaceStatistics {
        kernel_drops: 107,
        ..cumulative(t0, 10)
    };
    let live = vec![(
        "eth0".to_owned(),
        InterfaceStatistics {
            start_ns: since.end_ns,
            end_ns: t0 + 10 * SECOND + SECOND / 2,
            received: now.received - since.received,
            kernel_drops: now.kernel_drops - since.kernel_drops,
            sensor_drops: 0,
        },
    )];
    let (window, _) = slice_of(dir.path(), &[&active], (t0 + 9 * SECOND, t0 + 11 * SECOND), &live);
    assert_eq!(
        window,
        vec![(
            t0 + 9 * SECOND,
            t0 + 10 * SECOND + SECOND / 2,
            800 + 19 + 1,
            19 + 7,
            1
        )],
        "the last second's group and what the active segment counted since"
    );
    let (window, _) = slice_of(dir.path(), &[&active], (t0 + 3 * SECOND, t0 + 5 * SECOND), &live);
    assert_eq!(
        window,
        vec![(t0 + 3 * SECOND, t0 + 5 * SECOND, 1600 + 16 + 2, 16, 2)],
        "seconds 3 and 4 of the active segment, nothing counted later"
    );

    w.finish(|slot| counters(t0, slot, 10)).unwrap();
    let record = w.index().records()[0].clone();
    assert!(record.checkpoints.len() >= 3, "{:?}", record.checkpoints);
    assert_eq!(record.drops, 110, "the index counts every group once");
    let file = std::fs::read(dir.path().join(&record.file)).unwrap();
    let in_file = blocks_of(&file, "eth0");
    assert_eq!(
        in_file.len(),
        12,
        "a group a second, the last, the totals: {in_file:?}"
    );
    assert_eq!(
        in_file[11],
        (t0 - SECOND, t0 + 10 * SECOND, 8110, 100, 10),
        "the segment's totals come last, for readers that show the last block"
    );
    // eth1 did not move after its first second: its first block, the last group's, the
    // totals.
    let idle = blocks_of(&file, "eth1");
    assert_eq!(idle.len(), 3, "{idle:?}");
    assert_eq!(idle[2], (t0 - SECOND, t0 + 10 * SECOND, 1, 0, 0));
    for (k, &(start, end, ..)) in in_file.iter().enumerate().skip(1).take(9) {
        assert_eq!(
            (start, end),
            (t0 + k as u64 * SECOND, t0 + (k as u64 + 1) * SECOND)
        );
    }

    // Seconds 3 and 4 of the finished segment, whole or cut inside: their counts only,
    // and the time they cover.
    for (from, to) in [
        (t0 + 3 * SECOND, t0 + 5 * SECOND),
        (t0 + 3 * SECOND + SECOND / 2, t0 + 4 * SECOND + SECOND / 2),
    ] {
        let (window, stats) = slice_of(dir.path(), &[&record], (from, to), &[]);
        assert_eq!(
            window,
            vec![(t0 + 3 * SECOND, t0 + 5 * SECOND, 1600 + 16 + 2, 16, 2)],
            "window {}..{} ms",
            (from - t0) / 1_000_000,
            (to - t0) / 1_000_000
        );
        assert!(
            stats.bytes_read < record.bytes / 2,
            "the slice sought to its checkpoint: read {} of {}",
            stats.bytes_read,
            record.bytes
        );
    }
    // The whole recording: everything, from the first block's start.
    let (window, _) = slice_of(dir.path(), &[&record], (t0, t0 + 10 * SECOND), &[]);
    assert_eq!(window, vec![(t0 - SECOND, t0 + 10 * SECOND, 8110, 100, 10)]);
}
