//! What the CLI's tests share: a real sensor API on loopback (the sensor's own router and
//! store) and readers of what `podcap` wrote.
#![allow(dead_code, reason = "each test target uses some of these")]
pub mod archive;

use std::{net::SocketAddr, path::Path, process::Output, sync::Arc, time::Duration};

use podcap_sensor::{
    api::{
        router,
        server::{self, ServerLimits},
        ApiState,
    },
    config::settings::{Floors, RuntimeSettings, StartInputs},
    pcapng::{
        read::packets_with_names, Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET,
    },
    store::{Limits, SegmentWriter},
    sys::realtime_ns,
};
use tokio::net::TcpListener;

pub const TOKEN: &str = "tok-3f9a";
pub const ADMIN_TOKEN: &str = "adm-77c1";
pub const PODCAP: &str = env!("CARGO_BIN_EXE_podcap");

/// Floors for the tiny segments of [`sensor`]'s store (3 kB, 1 s).
pub const SMALL_FLOORS: Floors = Floors {
    segment_size: 3_000,
    segment_time: Duration::from_secs(1),
};

/// A real sensor API on loopback serving a store of 120 packets on eth0, one per 100 ms
/// from 20 s ago, offset by `offset_ms` so two sensors interleave.
pub async fn sensor(dir: &tempfile::TempDir, offset_ms: u64, marker: u8) -> SocketAddr {
    sensor_with(dir, offset_ms, marker, Floors::DEFAULT).await
}

/// [`sensor`] whose settings take `floors`.
pub async fn sensor_with(dir: &tempfile::TempDir, offset_ms: u64, marker: u8, floors: Floors) -> SocketAddr {
    serve(sensor_state(dir, offset_ms, marker, floors), None).await
}

/// The state of [`sensor_with`]: a store of 120 packets and settings with `floors`.
pub fn sensor_state(dir: &tempfile::TempDir, offset_ms: u64, marker: u8, floors: Floors) -> ApiState {
    let ifaces = vec![InterfaceDescription {
        name: "eth0".into(),
        description: String::new(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65535,
    }];
    let limits = Limits {
        compress: false,
        segment_size: 3_000,
        segment_time: Duration::from_hours(1),
        max_size: 100_000_000,
        max_time: Duration::from_hours(1),
    };
    let mut writer = SegmentWriter::open(dir.path(), limits, ifaces).unwrap();
    let start = realtime_ns() - 20_000_000_000 + offset_ms * 1_000_000;
    // The capture's counters: every packet received, none lost.
    let counters = |received: u64, end_ns: u64| InterfaceStatistics {
        start_ns: start,
        end_ns,
        received,
        ..InterfaceStatistics::default()
    };
    for i in 0..120u64 {
        let ts = start + i * 100_000_000;
        let mut frame = vec![marker; 60];
        frame[..8].copy_from_slice(&i.to_be_bytes());
        writer
            .write_packet(0, ts, 60, &frame, Direction::Outbound, |_| counters(i, ts))
            .unwrap();
        // On disk before the next packet: rotation (which waits for a write in flight
        // rather than the capture) then falls on every 3 kB.
        writer.flush_now();
    }
    let (view, flush) = (writer.view(), writer.flush_gate());
    writer
        .finish(|_| counters(120, start + 120 * 100_000_000))
        .unwrap();
    let state = ApiState::builder(dir.path())
        .interfaces(["eth0"])
        .token(Some(TOKEN))
        .admin_token(Some(ADMIN_TOKEN))
        .writer(view, flush)
        .settings(Arc::new(
            RuntimeSettings::start(dir.path(), StartInputs::flags("500MB", "1h"), floors).unwrap(),
        ))
        .recordings(Arc::new(
            podcap_sensor::store::kept::recordings::Recordings::open(dir.path(), 50_000_000, 65535).unwrap(),
        ))
        .snapshots(Arc::new(
            podcap_sensor::store::kept::snapshots::Snapshots::open(dir.path(), 50_000_000).unwrap(),
        ))
        .build()
        .unwrap();
    state.health.set_attached(true);
    state
}

/// Serves `state` on a loopback port with the sensor's own listener (TLS with `tls`).
pub async fn serve(state: ApiState, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = podcap_sensor::shutdown::Shutdown::new();
    tokio::spawn(server::run(
        listener,
        router(state),
        tls,
        ServerLimits::default(),
        stop,
    ));
    addr
}

/// A certificate authority and a server certificate it signed for `localhost` and
/// 127.0.0.1, made by openssl: (CA certificate, server certificate, server key) files.
pub fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let script = r"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=podcap-test-ca -keyout ca.key -out ca.crt
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
  -keyout tls.key -out tls.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out tls.crt
";
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("sh");
    assert!(
        status.success(),
        "openssl could not make the certificates (cargo xtask setup installs openssl)"
    );
    (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The one pcapng file `dump` wrote into `dir`.
pub fn dumped(dir: &Path) -> Vec<u8> {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read(&files[0]).unwrap()
}

/// (interface name, timestamp, first payload byte) of every packet.
pub fn packets(bytes: &[u8]) -> Vec<(String, u64, u8)> {
    packets_with_names(bytes)
        .unwrap()
        .into_iter()
        .map(|(name, p)| (name, p.timestamp_ns, p.data[8]))
        .collect()
}

/// The bytes after the first block (the Section Header).
pub fn after_section_header(bytes: &[u8]) -> &[u8] {
    let len = u32::from_ne_bytes(bytes[4..8].try_into().unwrap()) as usize;
    &bytes[len..]
}

/// Runs `podcap ARGS --sensor node-N=http://ADDR ...` with `token`, off the runtime's threads.
pub async fn podcap_with(sensors: &[SocketAddr], token: &str, args: &[&str]) -> Output {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    for (n, s) in sensors.iter().enumerate() {
        all.extend(["--sensor".into(), format!("node-{n}=http://{s}")]);
    }
    let token = token.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(PODCAP)
            .args(&all)
            .env("PODCAP_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}
