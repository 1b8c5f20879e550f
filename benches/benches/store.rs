//! Store benchmarks: index lookups among 100k segments, and slice extraction throughput
//! against reading the same segment files (the `cat` baseline).
use std::{hint::black_box, io::Read, path::Path};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use podcap_sensor::{
    pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET},
    store::{
        index::{Index, SegmentRecord},
        slice::write_slice,
    },
};

fn index_lookup(c: &mut Criterion) {
    let second = 1_000_000_000u64;
    let records: Vec<SegmentRecord> = (0..100_000u64)
        .map(|seq| SegmentRecord {
            seq,
            file: format!("podcap-{seq:010}.pcapng"),
            first_ns: seq * 10 * second,
            last_ns: seq * 10 * second + 10 * second - 1,
            packets: 1000,
            bytes: 1 << 20,
            drops: 0,
            per_interface: vec![1000],
            checkpoints: Vec::new(),
        })
        .collect();
    let index = Index::from_records(records.clone());
    let (from, to) = (500_000 * second, 500_300 * second); // a 5-minute slice
    let mut group = c.benchmark_group("index_100k_segments");
    group.bench_function("overlapping_5min", |b| {
        b.iter(|| black_box(index.overlapping(black_box(from), black_box(to)).len()));
    });
    // Baseline: the directory-scan approach the index replaces.
    group.bench_function("baseline_full_scan", |b| {
        b.iter(|| {
            black_box(
                records
                    .iter()
                    .filter(|r| r.overlaps(black_box(from), black_box(to)))
                    .count(),
            )
        });
    });
    group.finish();
}

fn write_segments(dir: &Path, count: u64, packets: u64) -> Index {
    let mut records = Vec::new();
    let frame = vec![0x42u8; 1000];
    for seq in 1..=count {
        let mut w = BlockWriter::with_capacity(8 << 20);
        w.section_header("bench");
        w.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        for i in 0..packets {
            w.packet(0, (seq * packets + i) * 1000, 1000, &frame, Direction::Inbound);
        }
        let path = dir.join(format!("podcap-{seq:010}.pcapng"));
        std::fs::write(&path, w.bytes()).unwrap();
        records.push(SegmentRecord::scan(&path, seq).unwrap());
    }
    Index::from_records(records)
}

fn slice_extraction(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let index = write_segments(dir.path(), 8, 4000); // 8 x ~4 MB
    let bytes: u64 = index.records().iter().map(|r| r.bytes).sum();
    let mut group = c.benchmark_group("slice_32MB");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(20);
    group.bench_function("write_slice_all", |b| {
        b.iter(|| write_slice(dir.path(), &index, 0, u64::MAX, None, &mut std::io::sink()).unwrap());
    });
    let mut buf = vec![0u8; 1 << 20];
    group.bench_function("baseline_cat_same_files", |b| {
        b.iter(|| {
            for r in index.records() {
                let mut f = std::fs::File::open(dir.path().join(&r.file)).unwrap();
                while f.read(&mut buf).unwrap() > 0 {}
            }
        });
    });
    group.finish();
}

criterion_group!(benches, index_lookup, slice_extraction);
criterion_main!(benches);
