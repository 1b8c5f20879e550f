//! Store benchmarks: index lookups among 100k segments, and slice extraction throughput
//! against reading the same segment files (the `cat` baseline).
use std::{hint::black_box, io::Read, path::Path};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use podcap_sensor::{
    pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET},
    store::{
        index::{self, Index, SegmentRecord},
        slice::{write_slice, Slicer},
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
            max_step_back_ns: 0,
            damaged: Vec::new(),
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

/// Segments of 1000-byte frames (Ethernet, IPv4, TCP, a payload that is no TLS record),
/// one per µs; with `disorder`, every 8th packet arrives that many ns late (as capture
/// queues deliver them).
fn write_segments(dir: &Path, count: u64, packets: u64, disorder: u64) -> Index {
    let mut records = Vec::new();
    let mut frame = vec![0x42u8; 1000];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    (frame[14], frame[14 + 9], frame[14 + 20 + 12]) = (0x45, 6, 5 << 4);
    frame[14 + 6..14 + 8].fill(0);
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
            let late = if i % 8 == 7 { disorder } else { 0 };
            let ts = (seq * packets + i) * 1000 + 10_000_000 - late;
            w.packet(0, ts, 1000, &frame, Direction::Inbound);
        }
        let path = dir.join(format!("podcap-{seq:010}.pcapng"));
        std::fs::write(&path, w.bytes()).unwrap();
        records.push(index::scan(&path, seq).unwrap());
    }
    Index::from_records(records)
}

fn slice_extraction(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let index = write_segments(dir.path(), 8, 4000, 0); // 8 x ~4 MB
    let disordered_dir = tempfile::tempdir().unwrap();
    let disordered = write_segments(disordered_dir.path(), 8, 4000, 1_000_000);
    let bytes: u64 = index.records().iter().map(|r| r.bytes).sum();
    let mut group = c.benchmark_group("slice_32MB");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(20);
    group.bench_function("write_slice_all", |b| {
        b.iter(|| {
            write_slice(
                dir.path(),
                &index,
                0,
                u64::MAX,
                &podcap_sensor::store::slice::Selection::default(),
                &mut std::io::sink(),
            )
            .unwrap()
        });
    });
    // The same bytes with every 8th packet 1 ms late: packets wait in the heap.
    group.bench_function("write_slice_all_1ms_disorder", |b| {
        b.iter(|| {
            write_slice(
                disordered_dir.path(),
                &disordered,
                0,
                u64::MAX,
                &podcap_sensor::store::slice::Selection::default(),
                &mut std::io::sink(),
            )
            .unwrap()
        });
    });
    // The same slice asked for TLS secrets: each packet is looked at (is it a ClientHello?).
    group.bench_function("write_slice_all_secrets_asked", |b| {
        b.iter(|| {
            let refs: Vec<&SegmentRecord> = index.records().iter().collect();
            Slicer::with_statistics()
                .with_secrets()
                .write(
                    dir.path(),
                    &refs,
                    0,
                    u64::MAX,
                    &podcap_sensor::store::slice::Selection::default(),
                    &mut std::io::sink(),
                )
                .unwrap()
        });
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

/// gzip of a finished segment: throughput, and the ratio printed for two payload kinds.
fn compression(c: &mut Criterion) {
    use podcap_sensor::store::compress::Compressor;
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let text =
        b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: shop.default.svc\r\nAccept: application/json\r\n\r\n";
    let mut group = c.benchmark_group("gzip_segment_4MB");
    group.sample_size(10);
    for kind in ["random_payload", "http_text_payload"] {
        let mut w = BlockWriter::with_capacity(8 << 20);
        w.section_header("bench");
        w.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        for i in 0..4000u64 {
            let frame: Vec<u8> = if kind == "random_payload" {
                (0..125).flat_map(|_| random().to_ne_bytes()).collect()
            } else {
                text.iter().copied().cycle().take(1000).collect()
            };
            w.packet(0, i * 1000, 1000, &frame, Direction::Inbound);
        }
        let path = dir.path().join(format!(
            "podcap-{}.pcapng",
            if kind == "random_payload" {
                "0000000001"
            } else {
                "0000000002"
            }
        ));
        std::fs::write(&path, w.bytes()).unwrap();
        let plain = w.len() as u64;
        group.throughput(Throughput::Bytes(plain));
        let mut compressed = 0;
        group.bench_function(kind, |b| {
            b.iter(|| {
                let mut compressor = Compressor::start().unwrap();
                compressor.submit(1, path.clone());
                let done = compressor.drain().pop().unwrap().unwrap();
                compressed = done.bytes;
            });
        });
        // Nothing compressed: this benchmark was filtered out of the run.
        if compressed > 0 {
            #[expect(clippy::cast_precision_loss, reason = "a printed ratio")]
            let ratio = plain as f64 / compressed as f64;
            println!("gzip_segment_4MB/{kind}: {plain} -> {compressed} bytes, ratio {ratio:.2}");
        }
    }
    group.finish();
}

criterion_group!(benches, index_lookup, slice_extraction, compression);
criterion_main!(benches);
