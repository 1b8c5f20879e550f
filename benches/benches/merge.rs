//! The CLI's k-way merge of 8 node files against `mergecap` on the same files (the
//! baseline, run as a process writing to /dev/null, as a user would run it).
use std::{fs::File, hint::black_box, io::BufReader, path::PathBuf, process::Command};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use podcap_format::merge::{merge, Input};
use podcap_sensor::pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET};

fn node_files(dir: &std::path::Path) -> (Vec<PathBuf>, u64) {
    let mut files = Vec::new();
    let mut total = 0;
    for node in 0..8u64 {
        let mut w = BlockWriter::with_capacity(8 << 20);
        w.section_header("bench");
        w.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        for i in 0..5_000u64 {
            // Interleaved clocks: every node has packets all through the slice.
            w.packet(
                0,
                1_700_000_000_000_000_000 + i * 8_000 + node * 1_000,
                600,
                &[node as u8; 600],
                Direction::Inbound,
            );
        }
        let path = dir.join(format!("node{node}.pcapng"));
        std::fs::write(&path, w.bytes()).unwrap();
        total += w.len() as u64;
        files.push(path);
    }
    (files, total)
}

fn merging(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (files, total) = node_files(dir.path());
    let mut group = c.benchmark_group("merge_8_nodes");
    group.throughput(Throughput::Bytes(total));
    group.sample_size(20);
    group.bench_function("podcap_merge", |b| {
        b.iter(|| {
            let inputs = files
                .iter()
                .enumerate()
                .map(|(n, f)| Input {
                    label: format!("node{n}"),
                    reader: BufReader::with_capacity(1 << 20, File::open(f).unwrap()),
                })
                .collect();
            black_box(merge(inputs, &[], &mut std::io::sink()).unwrap())
        });
    });
    if Command::new("mergecap").arg("-h").output().is_ok() {
        group.bench_function("baseline_mergecap", |b| {
            b.iter(|| {
                let status = Command::new("mergecap")
                    .arg("-w")
                    .arg("/dev/null")
                    .args(&files)
                    .status()
                    .unwrap();
                assert!(status.success());
            });
        });
    } else {
        println!("mergecap not installed: no baseline (cargo xtask setup installs wireshark-common)");
    }
    group.finish();
}

criterion_group!(benches, merging);
criterion_main!(benches);
