//! A sensor's API for conformance runs (`cargo xtask test` runs schemathesis against it):
//! a real store written by the sensor's writer (two interfaces, 300 packets ending now),
//! the real router and listener, real settings; no capture, no privileges.
//!
//! `api_fixture DIR PORT READ_TOKEN ADMIN_TOKEN [PACKETS BYTES]`: prints `listening` once it
//! serves, and serves until killed. With `PACKETS BYTES` (the dump benchmark, `cargo xtask
//! bench dump`) the store holds that many UDP frames of that size over the last 30 s, to
//! ports 9 to 18 in turn, instead of 300 small packets.
use std::{sync::Arc, time::Duration};

use podcap_sensor::{
    api::{
        router,
        server::{self, ServerLimits},
        ApiState,
    },
    config::settings::{Floors, RuntimeSettings, StartInputs},
    pcapng::{Direction, InterfaceDescription, InterfaceStatistics, LINKTYPE_ETHERNET},
    store::{Limits, SegmentWriter},
};

/// An Ethernet/IPv4/UDP frame of `len` bytes from 198.18.0.1 to 198.18.0.2:`port`.
fn udp_frame(len: usize, port: u16) -> Vec<u8> {
    let mut f = vec![0x41u8; len];
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&u16::try_from(len - 14).unwrap_or(u16::MAX).to_be_bytes());
    // Identification, flags and fragment offset, checksum: zero (not a fragment).
    f[18..22].fill(0);
    f[24..26].fill(0);
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 18, 0, 1]);
    f[30..34].copy_from_slice(&[198, 18, 0, 2]);
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&port.to_be_bytes());
    f[38..40].copy_from_slice(&u16::try_from(len - 34).unwrap_or(u16::MAX).to_be_bytes());
    f
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, port, read, admin, frames) = match args.as_slice() {
        [dir, port, read, admin] => (dir, port, read, admin, None),
        [dir, port, read, admin, packets, bytes] => (
            dir,
            port,
            read,
            admin,
            Some((packets.parse::<u64>()?, bytes.parse::<usize>()?)),
        ),
        _ => anyhow::bail!("usage: api_fixture DIR PORT READ_TOKEN ADMIN_TOKEN [PACKETS BYTES]"),
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
        segment_size: if frames.is_some() { 8_000_000 } else { 4_000 },
        segment_time: Duration::from_hours(1),
        max_size: 1 << 30,
        max_time: Duration::from_hours(24),
    };
    let mut writer = SegmentWriter::open(&dir, limits, interfaces)?;
    let start = podcap_sensor::sys::realtime_ns() - 30_000_000_000;
    if let Some((packets, bytes)) = frames {
        let step = 30_000_000_000 / packets.max(1);
        for i in 0..packets {
            let frame = udp_frame(bytes.max(42), 9 + (i % 10) as u16);
            writer.write_packet(
                (i % 2) as u32,
                start + i * step,
                frame.len() as u32,
                &frame,
                Direction::Inbound,
                |_| InterfaceStatistics::default(),
            )?;
        }
    } else {
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
    }
    writer.finish(|_| InterfaceStatistics::default())?;
    let floors = Floors {
        segment_size: 4_000,
        segment_time: Duration::from_secs(1),
    };
    let state = ApiState::builder(dir.clone())
        .interfaces(["eth0", "eth1"])
        .token(Some(read))
        .admin_token(Some(admin))
        .writer(writer.view(), writer.flush_gate())
        .settings(Arc::new(RuntimeSettings::start(
            &dir,
            StartInputs::flags("1GB", "1h"),
            floors,
        )?))
        .snapshots(Arc::new(podcap_sensor::store::kept::snapshots::Snapshots::open(
            &dir, 50_000_000,
        )?))
        .recordings(Arc::new(
            podcap_sensor::store::kept::recordings::Recordings::open(&dir, 50_000_000, 65535)?,
        ))
        .build()?;
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
