//! The offline dump of a 5-minute window out of an archive of 24 hours x 4 nodes, against a
//! real S3 server (moto's, on loopback, started here; `cargo xtask setup` installs it):
//! what it asks for (listings, manifests, objects, bytes) against what the archive holds,
//! and its time against fetching the same objects by key (the least any reader must do).
//!
//! The archive: 2-minute segments (720 a node), 120 packets of 400 B each, written with
//! plain PUTs (the upload path's checks are measured by the tests, not here).
use std::{
    hint::black_box,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use object_store::{aws::AmazonS3Builder, path::Path, ObjectStore, ObjectStoreExt, PutPayload};
use podcap_archive::{Archive, Kind, Layout, Manifest};
use podcap_cli::archive::{collect, Query};
use podcap_format::pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET};

const PORT: u16 = 9181;
const BUCKET: &str = "podcap-bench";
/// 2026-11-29T00:00:00Z.
const DAY: u64 = 1_795_910_400_000_000_000;
const SEGMENT_NS: u64 = 120_000_000_000;
const SEGMENTS_PER_NODE: u64 = 720;
const NODES: [&str; 4] = ["node-1", "node-2", "node-3", "node-4"];

/// moto's S3 server, ended by PID on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> Option<Server> {
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", PORT)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let made = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("http://127.0.0.1:{PORT}/{BUCKET}")])
        .status()
        .ok()?;
    made.success().then_some(server)
}

fn store() -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(format!("http://127.0.0.1:{PORT}"))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("bench")
            .with_secret_access_key("bench")
            .build()
            .unwrap(),
    )
}

fn segment(first: u64, marker: u8) -> Vec<u8> {
    let mut w = BlockWriter::with_capacity(64 << 10);
    w.section_header("bench");
    w.interface(&InterfaceDescription {
        name: "shop/web-1/eth0".into(),
        description: "node=n pod=shop/web-1".into(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65_535,
    });
    for i in 0..120u64 {
        let mut data = vec![marker; 400];
        data[..8].copy_from_slice(&i.to_be_bytes());
        w.packet(0, first + i * (SEGMENT_NS / 120), 400, &data, Direction::Inbound);
    }
    w.bytes().to_vec()
}

/// Fills the archive; returns its stored bytes.
async fn fill(store: &Arc<dyn ObjectStore>, layout: &Layout) -> u64 {
    let mut work = Vec::new();
    for (n, node) in NODES.iter().enumerate() {
        for s in 0..SEGMENTS_PER_NODE {
            work.push((*node, n as u8, s));
        }
    }
    let sizes: Vec<u64> = futures::stream::iter(work)
        .map(|(node, marker, s)| async move {
            let first = DAY + s * SEGMENT_NS;
            let pcapng = segment(first, marker);
            let stored = podcap_archive::compress(&pcapng).unwrap();
            let keys = layout.segment(node, first, s + 1);
            let mut manifest = Manifest::new(Kind::Segment, "bench", node, first, first + SEGMENT_NS - 1);
            manifest.seq = Some(s + 1);
            manifest.packets = 120;
            podcap_archive::describe(&mut manifest, &pcapng, &stored);
            manifest.object = Some(keys.data.to_string());
            let size = stored.len() as u64;
            store.put(&keys.data, PutPayload::from(stored)).await.unwrap();
            store
                .put(&keys.manifest, PutPayload::from(manifest.to_bytes()))
                .await
                .unwrap();
            size
        })
        .buffer_unordered(16)
        .collect()
        .await;
    sizes.iter().sum()
}

fn offline_window(c: &mut Criterion) {
    let Some(_server) = start_server() else {
        eprintln!(
            "archive bench: skipped (no moto server: `pip install 'moto[server]'` or `cargo xtask setup`)"
        );
        return;
    };
    // Before any other thread starts: the archive reads its credentials from here.
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{PORT}"));
    podcap_archive::install_tls_provider();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let layout = Layout::new("bench").unwrap();
    let raw = store();
    let filled = Instant::now();
    let total = runtime.block_on(fill(&raw, &layout));
    eprintln!(
        "archive bench: {} segments of {} nodes, {} stored, written in {:.1?}",
        SEGMENTS_PER_NODE * NODES.len() as u64,
        NODES.len(),
        podcap_format::units::format_size(total),
        filled.elapsed()
    );
    let archive = Archive::open(&format!("s3://{BUCKET}"), "bench").unwrap();
    // 14:01:30 to 14:06:30 of the day, every node.
    let from = DAY + 14 * 3_600_000_000_000 + 90_000_000_000;
    let query = Query {
        filter: None,
        from_ns: from,
        to_ns: from + 300_000_000_000,
        nodes: Vec::new(),
        pod: None,
        namespaces: Vec::new(),
        interfaces: None,
        kept: None,
    };
    let once = runtime
        .block_on(collect(&archive, &query, &std::env::temp_dir(), &mut |_| {}))
        .unwrap();
    let packets: u64 = once.parts.iter().map(|p| p.packets).sum();
    eprintln!(
        "archive bench: the window took {} listings, {} manifests, {} objects, {} fetched of {} stored (1 in {}), {packets} packets",
        once.lists,
        once.manifests,
        once.objects,
        podcap_format::units::format_size(once.bytes_fetched),
        podcap_format::units::format_size(total),
        total / once.bytes_fetched.max(1)
    );
    assert_eq!(packets, 4 * 300, "one packet a second per node");
    // The same objects by key: what a reader that knew them would fetch.
    let keys: Vec<Path> = NODES
        .iter()
        .flat_map(|node| {
            (0..SEGMENTS_PER_NODE)
                .map(move |s| (s, DAY + s * SEGMENT_NS))
                .filter(|(_, first)| *first < query.to_ns && first + SEGMENT_NS > query.from_ns)
                .map(|(s, first)| layout.segment(node, first, s + 1).data)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        keys.len(),
        once.objects,
        "the dump fetched exactly the window's objects"
    );

    let mut group = c.benchmark_group("archive_5min_of_24h_x4");
    group.sample_size(10);
    group.bench_function("podcap_offline_window", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(collect(&archive, &query, &std::env::temp_dir(), &mut |_| {}))
                    .unwrap()
                    .objects,
            )
        });
    });
    group.bench_function("baseline_get_same_objects", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let got: Vec<usize> = futures::stream::iter(keys.clone())
                    .map(|key| {
                        let raw = Arc::clone(&raw);
                        async move { raw.get(&key).await.unwrap().bytes().await.unwrap().len() }
                    })
                    .buffer_unordered(8)
                    .collect()
                    .await;
                black_box(got.iter().sum::<usize>())
            })
        });
    });
    group.finish();
}

criterion_group!(benches, offline_window);
criterion_main!(benches);
