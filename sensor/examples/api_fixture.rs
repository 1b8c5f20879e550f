//! A sensor's API for conformance runs (`cargo xtask test` runs schemathesis against it):
//! a real store written by the sensor's writer (two interfaces, 300 packets ending now),
//! the real router and listener, real settings; no capture, no privileges.
//!
//! `api_fixture DIR PORT READ_TOKEN ADMIN_TOKEN`: prints `listening` once it serves, and
//! serves until killed.
use std::{sync::Arc, time::Duration};

use podcap_sensor::{
    api::{
        router,
        server::{self, ServerLimits},
        ApiState,
    },
    config::settings::{Floors, RuntimeSettings, StartInputs},
    pcapng::{Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET},
    stats::Stats,
    store::{Limits, SegmentWriter},
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, port, read, admin] = args.as_slice() else {
        anyhow::bail!("usage: api_fixture DIR PORT READ_TOKEN ADMIN_TOKEN");
    };
    let dir = std::path::PathBuf::from(dir);
    let interfaces = ["eth0", "eth1"]
        .map(|name| InterfaceDescription {
            name: name.into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        })
        .to_vec();
    let limits = Limits {
        compress: false,
        segment_size: 4_000,
        segment_time: Duration::from_hours(1),
        max_size: 1 << 30,
        max_time: Duration::from_hours(24),
    };
    let mut writer = SegmentWriter::open(&dir, limits, interfaces)?;
    let start = podcap_sensor::sys::realtime_ns() - 30_000_000_000;
    for i in 0..300u64 {
        let ts = start + i * 100_000_000;
        writer.write_packet(
            (i % 2) as u32,
            ts,
            100,
            &ts.to_be_bytes(),
            Direction::Inbound,
            |_| InterfaceStatistics::default(),
        )?;
    }
    writer.finish(|_| InterfaceStatistics::default())?;
    let mut state = ApiState::new(
        dir.clone(),
        vec!["eth0".into(), "eth1".into()],
        Arc::new(Stats::new(2)),
        Some(read.clone()),
    );
    state.admin_token = Some(admin.as_str().into());
    let floors = Floors {
        segment_size: 4_000,
        segment_time: Duration::from_secs(1),
    };
    state.settings = Some(Arc::new(RuntimeSettings::start(
        &dir,
        StartInputs::flags("1GB", "1h"),
        floors,
    )?));
    state.view = Some(writer.view());
    state.snapshots = Some(Arc::new(podcap_sensor::snapshots::Snapshots::open(
        &dir, 50_000_000,
    )?));
    state.recordings = Some(Arc::new(podcap_sensor::recordings::Recordings::open(
        &dir, 50_000_000, 65535,
    )?));
    state.health.set_attached(true);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")))?;
    println!("listening");
    let stop = podcap_sensor::shutdown::Shutdown::new();
    runtime.block_on(server::run(
        listener,
        router(state),
        None,
        ServerLimits::default(),
        stop,
    ));
    Ok(())
}
