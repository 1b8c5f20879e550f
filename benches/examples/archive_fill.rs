//! Fills an S3 bucket with an archive as sensors write it, for `cargo xtask bench archive`:
//! `archive_fill ENDPOINT BUCKET NODES SEGMENTS_PER_NODE SEGMENT_SECONDS PACKETS BYTES`.
//!
//! Each node's segments follow each other from 2026-11-29T00:00:00Z, each a well-formed
//! pcapng (a pod interface `shop/web-N/eth0` and the node's `eth0`, packets alternating
//! between them, payloads pseudo-random so zstd finds what it finds in encrypted traffic),
//! compressed, with its manifest, under the layout's keys (plain PUTs, 64 at once: the
//! upload path's checks are measured by the tests). Prints one line: segments, objects,
//! stored bytes, seconds.
use std::{sync::Arc, time::Instant};

use futures::StreamExt;
use object_store::{aws::AmazonS3Builder, ObjectStore, ObjectStoreExt, PutPayload};
use podcap_archive::{Kind, Layout, Manifest};
use podcap_format::pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET};

/// 2026-11-29T00:00:00Z.
const DAY: u64 = 1_795_910_400_000_000_000;

struct Shape {
    segment_ns: u64,
    packets: u64,
    bytes: usize,
}

fn segment(node: usize, first: u64, shape: &Shape) -> Vec<u8> {
    let mut w = BlockWriter::with_capacity(shape.packets as usize * (shape.bytes + 64));
    w.section_header("podcap archive bench");
    for (name, description) in [
        (
            format!("shop/web-{node}/eth0"),
            format!("node=node-{node} pod=shop/web-{node}"),
        ),
        ("eth0".to_owned(), String::new()),
    ] {
        w.interface(&InterfaceDescription {
            name,
            description,
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65_535,
        });
    }
    let mut seed = first ^ (node as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = vec![0u8; shape.bytes];
    for i in 0..shape.packets {
        for byte in &mut data {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = seed as u8;
        }
        data[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let at = first + i * (shape.segment_ns / shape.packets);
        w.packet((i % 2) as u32, at, shape.bytes as u32, &data, Direction::Inbound);
    }
    w.bytes().to_vec()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, bucket, nodes, segments, seconds, packets, bytes] = args.as_slice() else {
        eprintln!(
            "usage: archive_fill ENDPOINT BUCKET NODES SEGMENTS_PER_NODE SEGMENT_SECONDS PACKETS BYTES"
        );
        std::process::exit(2);
    };
    let number = |text: &str| -> u64 { text.parse().unwrap_or_else(|_| panic!("not a number: {text}")) };
    let (nodes, segments) = (number(nodes) as usize, number(segments));
    let shape = Arc::new(Shape {
        segment_ns: number(seconds) * 1_000_000_000,
        packets: number(packets),
        bytes: number(bytes) as usize,
    });
    podcap_archive::install_tls_provider();
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("bench")
            .with_secret_access_key("bench")
            .build()
            .expect("an S3 client"),
    );
    let layout = Layout::new("bench").expect("a layout");
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let work: Vec<(usize, u64)> = (0..nodes)
        .flat_map(|n| (0..segments).map(move |s| (n, s)))
        .collect();
    let stored: u64 = runtime.block_on(async {
        futures::stream::iter(work)
            .map(|(n, s)| {
                let (store, layout, shape) = (Arc::clone(&store), layout.clone(), Arc::clone(&shape));
                async move {
                    let node = format!("node-{n}");
                    let first = DAY + s * shape.segment_ns;
                    let pcapng = segment(n, first, &shape);
                    let compressed = podcap_archive::compress(&pcapng).expect("zstd");
                    let keys = layout.segment(&node, first, s + 1);
                    let mut manifest =
                        Manifest::new(Kind::Segment, "bench", &node, first, first + shape.segment_ns - 1);
                    manifest.seq = Some(s + 1);
                    manifest.packets = shape.packets;
                    podcap_archive::describe(&mut manifest, &pcapng, &compressed);
                    manifest.object = Some(keys.data.to_string());
                    let size = compressed.len() as u64;
                    store
                        .put(&keys.data, PutPayload::from(compressed))
                        .await
                        .expect("PUT of a segment");
                    store
                        .put(&keys.manifest, PutPayload::from(manifest.to_bytes()))
                        .await
                        .expect("PUT of a manifest");
                    size
                }
            })
            .buffer_unordered(64)
            .fold(0u64, |sum, size| async move { sum + size })
            .await
    });
    println!(
        "segments {} objects {} stored {stored} seconds {:.1}",
        nodes as u64 * segments,
        nodes as u64 * segments * 2,
        started.elapsed().as_secs_f64()
    );
}
