//! Hot-path benchmarks: the capture → writer ring and pcapng encoding.
//!
//! Each prints the comparison it stands for: the ring against a plain `memcpy` of the same
//! bytes (the floor any ring pays), the encoder against copying the packet bytes alone, the
//! capture filter against libpcap's own `bpf_filter` on the same program and frame.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use podcap_sensor::{
    pcapng::{BlockWriter, Direction},
    ring::{record_ring, RecordHeader},
};

const FRAME_SIZES: [usize; 3] = [64, 512, 1500];

fn ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    for size in FRAME_SIZES {
        let frame = vec![0xa5u8; size];
        let (mut producer, mut consumer) = record_ring(1 << 20);
        let mut out = Vec::with_capacity(2048);
        let header = RecordHeader {
            captured_len: size as u32,
            original_len: size as u32,
            ..Default::default()
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("push_pop_{size}B"), |b| {
            b.iter(|| {
                assert!(producer.push(black_box(&header), black_box(&frame)));
                black_box(consumer.pop(&mut out));
            });
        });
        // Baseline: copying the same bytes twice (in and out), with no ring at all.
        let mut scratch = vec![0u8; size];
        group.bench_function(format!("baseline_memcpy_twice_{size}B"), |b| {
            b.iter(|| {
                scratch.copy_from_slice(black_box(&frame));
                out.clear();
                out.extend_from_slice(black_box(&scratch));
            });
        });
    }
    group.finish();
}

fn pcapng(c: &mut Criterion) {
    let mut group = c.benchmark_group("pcapng_encode");
    for size in FRAME_SIZES {
        let frame = vec![0x5au8; size];
        let mut writer = BlockWriter::with_capacity(4 << 20);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("epb_{size}B"), |b| {
            b.iter(|| {
                if writer.len() > (3 << 20) {
                    writer.clear();
                }
                writer.packet(
                    0,
                    black_box(1_700_000_000_000_000_000),
                    size as u32,
                    black_box(&frame),
                    Direction::Inbound,
                );
            });
        });
        let mut buf: Vec<u8> = Vec::with_capacity(4 << 20);
        group.bench_function(format!("baseline_copy_{size}B"), |b| {
            b.iter(|| {
                if buf.len() > (3 << 20) {
                    buf.clear();
                }
                buf.extend_from_slice(black_box(&frame));
            });
        });
    }
    group.finish();
}

#[link(name = "pcap")]
unsafe extern "C" {
    fn bpf_filter(
        insns: *const podcap_filter::BpfInsn,
        packet: *const u8,
        wire_len: u32,
        buf_len: u32,
    ) -> u32;
}

fn filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("filter");
    // A TCP frame to port 443 that the expression rejects only at its last test.
    let mut frame = vec![0u8; 1514];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14] = 0x45;
    frame[23] = 6;
    frame[36..38].copy_from_slice(&443u16.to_be_bytes());
    let f =
        podcap_sensor::filter::Filter::compile("udp or icmp or tcp port 80 or tcp port 8080", 65535).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("podcap_filter_1514B", |b| {
        b.iter(|| black_box(f.matches(black_box(&frame), 1514)));
    });
    let insns = f.program().as_ptr();
    group.bench_function("baseline_libpcap_bpf_filter_1514B", |b| {
        // SAFETY: the program is checked and outlives the call; the frame is 1514 bytes.
        b.iter(|| black_box(unsafe { bpf_filter(insns, black_box(frame.as_ptr()), 1514, 1514) }));
    });
    group.finish();
}

criterion_group!(benches, ring, pcapng, filter);
criterion_main!(benches);
