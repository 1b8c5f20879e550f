//! The archive tests' fixture: an archive in a local folder written with podcap-archive's
//! own upload (two nodes, one-minute segments over two hours, pod interfaces, a gap), and
//! `podcap` run as a user runs it.
use std::{path::Path, process::Command};

use bytes::Bytes;
use podcap_archive::{Archive, Kind, Manifest};
use podcap_sensor::pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET};

use super::PODCAP;

/// 2026-11-30T10:00:00Z.
pub const T0: u64 = 1_796_032_800_000_000_000;
pub const MINUTE: u64 = 60_000_000_000;
pub const SECOND: u64 = 1_000_000_000;

pub fn iface(name: &str, pod: Option<&str>) -> InterfaceDescription {
    InterfaceDescription {
        name: name.into(),
        description: pod.map(|p| format!("node=n pod={p} uid=u")).unwrap_or_default(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 65_535,
    }
}

/// A segment of one minute from `first`: one packet a second on each of `shop/web-1/eth0`,
/// `kube-system/dns-1/eth0` and the node's `eth0`, the payload's first byte `marker`: IPv4
/// UDP to port 53 in even seconds, TCP to port 443 in odd ones.
pub fn segment(first: u64, marker: u8) -> Vec<u8> {
    let mut w = BlockWriter::with_capacity(1 << 16);
    w.section_header("test");
    w.interface(&iface("shop/web-1/eth0", Some("shop/web-1")));
    w.interface(&iface("kube-system/dns-1/eth0", Some("kube-system/dns-1")));
    w.interface(&iface("eth0", None));
    for s in 0..60 {
        for id in 0..3u32 {
            let mut data = vec![0u8; 60];
            data[8] = marker;
            data[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            data[14] = 0x45;
            let (protocol, port) = if s % 2 == 0 { (17, 53u16) } else { (6, 443) };
            data[23] = protocol;
            data[36..38].copy_from_slice(&port.to_be_bytes());
            w.packet(
                id,
                first + s * SECOND + u64::from(id),
                60,
                &data,
                Direction::Inbound,
            );
        }
    }
    w.bytes().to_vec()
}

/// Uploads `pcapng` as segment `seq` of `node`, as a sensor does.
pub async fn upload(archive: &Archive, node: &str, seq: u64, first: u64, pcapng: &[u8]) {
    let keys = archive.layout().segment(node, first, seq);
    let stored = podcap_archive::compress(pcapng).unwrap();
    let mut manifest = Manifest::new(Kind::Segment, "prod", node, first, first + MINUTE - SECOND + 2);
    manifest.seq = Some(seq);
    manifest.packets = 180;
    podcap_archive::describe(&mut manifest, pcapng, &stored);
    manifest.object = Some(keys.data.to_string());
    archive
        .upload(&keys, Bytes::from(stored), &manifest)
        .await
        .unwrap();
}

/// Two nodes, 120 one-minute segments each from 10:00; node-b's segment of 10:31 was given
/// up (a gap). Returns the archive's URL.
pub fn archive_of_two_hours(dir: &Path) -> String {
    let url = format!("file://{}", dir.display());
    let archive = Archive::open(&url, "prod").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (node, marker) in [("node-a", 0xa), ("node-b", 0xb)] {
            for m in 0..120u64 {
                let first = T0 + m * MINUTE;
                if node == "node-b" && m == 31 {
                    let mut gap = Manifest::new(Kind::Gap, "prod", node, first, first + MINUTE - SECOND);
                    gap.seq = Some(m + 1);
                    gap.packets = 180;
                    gap.reason = Some("retired by the store's size bound before upload".into());
                    let key = archive.layout().gap(node, first, m + 1);
                    archive.put_new(&key, Bytes::from(gap.to_bytes())).await.unwrap();
                    continue;
                }
                upload(&archive, node, m + 1, first, &segment(first, marker)).await;
            }
        }
    });
    url
}

pub fn podcap(args: &[&str]) -> std::process::Output {
    Command::new(PODCAP)
        .args(args)
        .env_remove("PODCAP_CLUSTER")
        .output()
        .unwrap()
}

pub fn rfc3339(ns: u64) -> String {
    podcap_format::units::format_rfc3339_ns(ns)
}

/// The keys (data, manifest) of `node`'s segment of minute `minute` in
/// [`archive_of_two_hours`] (its sequence number is `minute + 1`).
pub fn segment_key(node: &str, minute: u64) -> (String, String) {
    let keys = podcap_archive::Layout::new("prod")
        .unwrap()
        .segment(node, T0 + minute * MINUTE, minute + 1);
    (keys.data.to_string(), keys.manifest.to_string())
}
