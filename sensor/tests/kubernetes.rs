//! Privileged tests of Kubernetes mode on a real kernel: pods (network namespaces with
//! cgroups as the kubelet makes them) resolved to their host veths and cgroups, captured as
//! they come and go. The API server is the in-process fake of `common::kube_api`, which
//! speaks the Kubernetes API's list and watch JSON (no API server can be installed here).
//!
//! Each test builds its own namespaces (guards delete them on every exit path) and uses
//! only `198.18.0.0/15` and `2001:db8::/32` addresses inside them.
mod common;

use std::time::Duration;

use common::{
    kube_api::{self, KubeApi},
    pcap, *,
};
use podcap_sensor::{pcapng::Direction, sys::realtime_ns};

/// Cgroup directories made for a test, under the host's cgroup v2 tree; removed (deepest
/// first) on drop, after the processes put in them are ended.
struct CgroupTree {
    root: std::path::PathBuf,
    dirs: Vec<std::path::PathBuf>,
    processes: Vec<std::process::Child>,
}

impl CgroupTree {
    fn new(tag: &str) -> Self {
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.join("cgroup.controllers").exists())
            .expect("a cgroup v2 tree");
        let root = base.join(format!("podcap-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&root).unwrap();
        Self {
            root: root.clone(),
            dirs: vec![root],
            processes: Vec::new(),
        }
    }

    /// Makes `path` (relative, several levels) and returns it.
    fn dir(&mut self, path: &str) -> std::path::PathBuf {
        let mut at = self.root.clone();
        for part in path.split('/') {
            at.push(part);
            if !at.exists() {
                std::fs::create_dir(&at).unwrap();
                self.dirs.push(at.clone());
            }
        }
        at
    }

    /// Starts `sleep` in network namespace `ns` and puts it in cgroup `dir`.
    fn process(&mut self, ns: &Netns, dir: &std::path::Path) -> u32 {
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", ns.name))
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        let pid = child.id();
        self.processes.push(child);
        // nsenter execs the command: wait until it is `sleep` in the namespace.
        for _ in 0..100 {
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        pid
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The kubelet's cgroups for four pods: A (systemd driver), B (cgroupfs), a hostNetwork
/// pod H (systemd, its process in the node's namespace) and an idle pod without processes.
/// Returns the tree and H's container directory.
fn kubelet_cgroups(
    node: &Netns,
    pod_a: &Netns,
    pod_b: &Netns,
    uids: [&str; 4],
) -> (CgroupTree, std::path::PathBuf) {
    let [uid_a, uid_b, uid_h, uid_idle] = uids;
    let mut cgroups = CgroupTree::new("resolve");
    let dir_a = cgroups.dir(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-0a.scope",
        uid_a.replace('-', "_")
    ));
    let dir_b = cgroups.dir(&format!("kubepods/burstable/pod{uid_b}/0b0b"));
    let dir_h = cgroups.dir(&format!(
        "kubepods.slice/kubepods-pod{}.slice/cri-containerd-0c.scope",
        uid_h.replace('-', "_")
    ));
    cgroups.dir(&format!("kubepods/besteffort/pod{uid_idle}"));
    cgroups.process(pod_a, &dir_a);
    cgroups.process(pod_b, &dir_b);
    cgroups.process(node, &dir_h);
    (cgroups, dir_h)
}

#[test]
fn pods_resolve_to_their_cgroup_namespace_and_host_veths() {
    let Some(_serial) = privileged() else { return };
    let node = Netns::new("pcrN");
    let pod_a = Netns::new("pcrA");
    let pod_b = Netns::new("pcrB");
    link(
        &pod_a,
        "eth0",
        &["198.18.40.1/30"],
        &node,
        "vpa",
        &["198.18.40.2/30"],
    );
    link(
        &pod_b,
        "eth0",
        &["198.18.41.1/30"],
        &node,
        "vpb",
        &["198.18.41.2/30"],
    );
    // A pod with two interfaces (a second network attached, as Multus does).
    link(
        &pod_b,
        "net1",
        &["198.18.42.1/30"],
        &node,
        "vpb2",
        &["198.18.42.2/30"],
    );
    let (uid_a, uid_b, uid_h, uid_idle) = (
        "aaaaaaaa-1111-2222-3333-444444444444",
        "bbbbbbbb-1111-2222-3333-444444444444",
        "cccccccc-1111-2222-3333-444444444444",
        "dddddddd-1111-2222-3333-444444444444",
    );
    let (cgroups, dir_h) = kubelet_cgroups(&node, &pod_a, &pod_b, [uid_a, uid_b, uid_h, uid_idle]);
    let root = cgroups.root.display().to_string();
    // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup tree, which the
    // sensor on a node (hostNetwork, host /sys) sees.
    let resolve = |uid: &str| {
        try_sh(&format!(
            "nsenter --net=/var/run/netns/{} {} --resolve-pod {uid} --cgroup-root {root}",
            node.name,
            sensor_bin()
        ))
    };
    let json = |uid: &str| -> serde_json::Value {
        let (ok, text) = resolve(uid);
        assert!(ok, "{uid}: {text}");
        serde_json::from_str(&text).unwrap()
    };
    let ifindex = |name: &str| {
        node.sh(&format!("cat /sys/class/net/{name}/ifindex"))
            .trim()
            .parse::<u64>()
            .unwrap()
    };

    let a = json(uid_a);
    assert_eq!(a["hostNetwork"], false);
    assert_eq!(
        a["interfaces"],
        serde_json::json!([{"name": "vpa", "ifindex": ifindex("vpa"), "podSide": "eth0"}])
    );
    let mut b: Vec<(String, String)> = json(uid_b)["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["podSide"].as_str().unwrap().to_owned(),
                i["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    b.sort();
    assert_eq!(
        b,
        [
            ("eth0".to_owned(), "vpb".to_owned()),
            ("net1".to_owned(), "vpb2".to_owned())
        ]
    );
    let h = json(uid_h);
    assert_eq!(h["hostNetwork"], true);
    assert_eq!(h["interfaces"], serde_json::json!([]));
    let pod_dir_h = dir_h.parent().unwrap();
    let inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(pod_dir_h).unwrap().ino()
    };
    assert_eq!(
        h["cgroupId"], inode,
        "the cgroup v2 id is the pod directory's inode"
    );
    assert_eq!(h["cgroupDir"], pod_dir_h.display().to_string());

    let (ok, text) = resolve(uid_idle);
    assert!(!ok && text.contains("no live process"), "{text}");
    let (ok, text) = resolve("eeeeeeee-1111-2222-3333-444444444444");
    assert!(!ok && text.contains("no cgroup"), "{text}");
}

/// A TCP listener on 127.0.0.1 inside network namespace `ns` (the sensor's).
fn listener_in(ns: &Netns) -> std::net::TcpListener {
    let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            // SAFETY: a namespace file, on a thread that ends right after the bind.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            std::net::TcpListener::bind("127.0.0.1:0").unwrap()
        })
        .join()
        .unwrap()
    })
}

/// Runs `f` on a thread inside network namespace `ns` (sockets made there stay there).
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            // SAFETY: a namespace file, on a thread that ends when `f` returns.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            f()
        })
        .join()
        .unwrap()
    })
}

/// UDP port 7007 and TCP port 7008 echo servers on 198.18.55.1 in `outside`, for `secs`.
fn echo_servers(outside: &Netns, secs: u64) -> Vec<std::thread::JoinHandle<()>> {
    let (udp, tcp) = in_netns(outside, || {
        (
            std::net::UdpSocket::bind("198.18.55.1:7007").unwrap(),
            std::net::TcpListener::bind("198.18.55.1:7008").unwrap(),
        )
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    udp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < deadline {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }
    });
    let tcp_thread = std::thread::spawn(move || {
        use std::io::{Read, Write};
        while std::time::Instant::now() < deadline {
            let Ok((mut conn, _)) = tcp.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 2048];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    vec![udp_thread, tcp_thread]
}

/// The hostNetwork pod's traffic, made by a process in its cgroup in the node's namespace:
/// 10 UDP echoes from port 40001, then one TCP connection from port 40003 with 5 echoes.
fn host_pod_traffic(node: &Netns, cgroup: &std::path::Path, scratch: &std::path::Path) {
    let script = "import socket\n\
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
u.bind(('198.18.55.2', 40001)); u.settimeout(2)\n\
for i in range(10):\n    u.sendto(b'pod-udp-%d' % i, ('198.18.55.1', 7007)); u.recv(2048)\n\
t = socket.socket(); t.bind(('198.18.55.2', 40003)); t.settimeout(2)\n\
t.connect(('198.18.55.1', 7008))\n\
for i in range(5):\n    t.sendall(b'pod-tcp-%d' % i); t.recv(2048)\n\
t.close()\n";
    let file = scratch.join("host-pod.py");
    std::fs::write(&file, script).unwrap();
    sh(&format!(
        "nsenter --net=/var/run/netns/{} sh -c 'echo $$ > {}/cgroup.procs && exec python3 {}'",
        node.name,
        cgroup.display(),
        file.display()
    ));
}

/// Node traffic that belongs to no pod: the test process's own UDP echoes from port 40002.
fn node_traffic(node: &Netns) {
    let socket = in_netns(node, || std::net::UdpSocket::bind("198.18.55.2:40002").unwrap());
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..10 {
        socket
            .send_to(format!("node-{i}").as_bytes(), "198.18.55.1:7007")
            .unwrap();
        socket.recv(&mut buf).unwrap();
    }
}

/// The UDP/TCP ports of an IPv4 frame, if it has them.
fn ports(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 38 || frame[12..14] != [0x08, 0x00] || ![6, 17].contains(&frame[23]) {
        return None;
    }
    let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    Some((port(l4), port(l4 + 2)))
}

/// The hostNetwork pod's packets on the node's uplink are exactly tcpdump's packets of its
/// ports there, each in its direction; no other node traffic is recorded.
fn assert_host_pod_recorded(data: &std::path::Path, tcpdump: &std::path::Path) {
    let frames = pcap::read_segments(&segments(data));
    let uses = |f: &pcap::Frame, port: u16| ports(&f.data).is_some_and(|(a, b)| a == port || b == port);
    let recorded: Vec<&pcap::Frame> = frames
        .iter()
        .filter(|f| f.iface == "shop/web-host/uplink")
        .collect();
    assert!(
        recorded.iter().all(|f| uses(f, 40001) || uses(f, 40003)),
        "only the pod's sockets on the uplink"
    );
    assert!(
        !frames.iter().any(|f| uses(f, 40002)),
        "node traffic is not recorded"
    );
    let reference: Vec<pcap::Frame> = pcap::read_pcap(tcpdump, "uplink")
        .into_iter()
        .filter(|f| uses(f, 40001) || uses(f, 40003))
        .collect();
    assert_eq!(
        reference.iter().filter(|f| uses(f, 40001)).count(),
        20,
        "tcpdump saw 10 echoes"
    );
    let mut expected: Vec<&[u8]> = reference.iter().map(|f| f.data.as_slice()).collect();
    let mut got: Vec<&[u8]> = recorded.iter().map(|f| f.data.as_slice()).collect();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(
        got.len(),
        expected.len(),
        "the pod's packets, as many as tcpdump saw"
    );
    assert!(got == expected, "the pod's packets, byte for byte");
    for f in &recorded {
        let (source, _) = ports(&f.data).unwrap();
        let outbound = source == 40001 || source == 40003;
        assert_eq!(
            f.direction,
            if outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            }
        );
    }
}

/// What Kubernetes mode recorded, phase by phase (see the test below).
fn assert_pods_recorded(data: &std::path::Path, uid_web1: &str, [phase1, phase2, phase3]: [u64; 3]) {
    let frames = pcap::read_segments(&segments(data));
    let icmp = |iface: &str, from: u64, to: u64| {
        frames
            .iter()
            .filter(|f| {
                f.iface == iface && f.ts_ns >= from && f.ts_ns < to && f.data.len() > 34 && f.data[23] == 1
            })
            .count()
    };
    let end = u64::MAX;
    assert_eq!(
        icmp("shop/web-1/eth0", phase1, phase2),
        10,
        "web-1 while targeted"
    );
    assert_eq!(icmp("shop/web-2/eth0", phase2, phase3), 10, "web-2 once added");
    assert_eq!(icmp("shop/web-2/eth0", phase3, end), 10);
    assert_eq!(
        icmp("shop/web-1/eth0", phase3, end),
        0,
        "web-1 after its deletion"
    );
    // Directions are the pod's: what it sends (its own address as the source) is
    // outbound, what it receives inbound (tcpdump -Q out/in inside the pod would agree).
    for (iface, own) in [
        ("shop/web-1/eth0", [198, 18, 50, 1]),
        ("shop/web-2/eth0", [198, 18, 51, 1]),
    ] {
        let ipv4: Vec<&pcap::Frame> = frames
            .iter()
            .filter(|f| f.iface == iface && f.data.len() > 34 && f.data[12..14] == [8, 0])
            .collect();
        assert!(ipv4.len() >= 20, "{iface}: {} IPv4 frames", ipv4.len());
        for f in ipv4 {
            let expected = if f.data[26..30] == own {
                Direction::Outbound
            } else if f.data[30..34] == own {
                Direction::Inbound
            } else {
                continue;
            };
            assert_eq!(f.direction, expected, "{iface}: {:?}", &f.data[26..34]);
        }
    }
    let names: std::collections::BTreeSet<&str> = frames.iter().map(|f| f.iface.as_str()).collect();
    assert_eq!(
        names,
        ["shop/web-1/eth0", "shop/web-2/eth0", "shop/web-host/uplink"]
            .into_iter()
            .collect(),
        "db-1 is never captured"
    );
    // tshark shows the pods' names for their addresses and on the interfaces.
    let files = segments(data);
    let shown = sh(&format!(
        "tshark -r {} -N n -T fields -e frame.interface_name -e ip.src_host -e frame.interface_description",
        files[0].display()
    ));
    if std::env::var_os("PODCAP_SHOW").is_some() {
        eprintln!("{shown}");
    }
    assert!(shown.contains("shop/web-1/eth0\tweb-1.shop"), "{shown}");
    assert!(
        shown.contains("node=node-1") && shown.contains(&format!("uid={uid_web1}")),
        "{shown}"
    );
}

/// Serves `api` on a port of the node namespace's loopback (where the sensor finds it);
/// the runtime serving it stops when dropped or shut down.
fn serve_api(node: &Netns, api: &KubeApi) -> (u16, tokio::runtime::Runtime) {
    let listener = listener_in(node);
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let router = api.router();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, router).await.unwrap();
    });
    (port, runtime)
}

/// The sensor in Kubernetes mode in the node namespace, as node `node-1` of the API server
/// on `port`, with the cgroup tree, targeting file and data folder given, and `extra` flags.
fn kubernetes_sensor(
    node: &Netns,
    port: u16,
    (cgroup_root, config, data): (&std::path::Path, &std::path::Path, &std::path::Path),
    extra: &str,
) -> Proc {
    // nsenter, not `ip netns exec`: the sensor must see the host's cgroup tree.
    Proc::spawn(
        "podcap-sensor",
        &format!(
            "env RUST_LOG=info nsenter --net=/var/run/netns/{} {} --node node-1 --kube-api http://127.0.0.1:{port} --cgroup-root {} --config {} --data-dir {}{extra}",
            node.name,
            sensor_bin(),
            cgroup_root.display(),
            config.display(),
            data.display()
        ),
    )
}

/// A targeting file in `dir` that selects the `web-` pods of namespace `shop`.
fn web_pods_of_shop(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(&config, "tap:\n  regex: ^web-\n  namespaces: [shop]\n").unwrap();
    config
}

/// A node N with three pods (their own namespaces, veths vka..vkc) and an uplink to the
/// outside O (N's default route): the hostNetwork pod's traffic and the node's own go there.
fn kubernetes_node() -> (Netns, Vec<Netns>, Netns) {
    let node = Netns::new("pckN");
    let pods: Vec<Netns> = ["pckA", "pckB", "pckC"].iter().map(|n| Netns::new(n)).collect();
    for (i, (pod, host)) in pods.iter().zip(["vka", "vkb", "vkc"]).enumerate() {
        link(
            pod,
            "eth0",
            &[&format!("198.18.5{i}.1/30")],
            &node,
            host,
            &[&format!("198.18.5{i}.2/30")],
        );
    }
    let outside = Netns::new("pckO");
    link(
        &node,
        "uplink",
        &["198.18.55.2/30"],
        &outside,
        "eth0",
        &["198.18.55.1/30"],
    );
    node.sh("ip route add default via 198.18.55.1");
    (node, pods, outside)
}

#[test]
fn kubernetes_mode_captures_the_targeted_pods_as_they_come_and_go() {
    let Some(_serial) = privileged() else { return };
    let (node, pods, outside) = kubernetes_node();
    let uids = [
        "a0000000-0000-0000-0000-00000000000a",
        "b0000000-0000-0000-0000-00000000000b",
        "c0000000-0000-0000-0000-00000000000c",
    ];
    let mut cgroups = CgroupTree::new("k8s");
    for (pod, uid) in pods.iter().zip(uids) {
        let dir = cgroups.dir(&format!("kubepods/besteffort/pod{uid}/ctr"));
        cgroups.process(pod, &dir);
    }
    let uid_host = "d0000000-0000-0000-0000-00000000000d";
    let host_cgroup = cgroups.dir(&format!("kubepods/burstable/pod{uid_host}/ctr"));
    let mut host_pod = kube_api::pod(uid_host, "shop", "web-host", "198.18.55.2");
    host_pod["spec"]["hostNetwork"] = serde_json::json!(true);
    let api = KubeApi::new(
        vec![
            kube_api::pod(uids[0], "shop", "web-1", "198.18.50.1"),
            kube_api::pod(uids[2], "shop", "db-1", "198.18.52.1"),
            host_pod,
        ],
        vec![kube_api::service("shop", "web", &["198.18.59.10"])],
    );
    let (port, runtime) = serve_api(&node, &api);

    let dir = tempfile::tempdir().unwrap();
    let (data, config) = (dir.path().join("data"), web_pods_of_shop(dir.path()));
    let mut sensor = kubernetes_sensor(&node, port, (&cgroups.root, &config, &data), "");
    sensor.wait_for("capturing shop/web-1/eth0", Duration::from_secs(30));
    // The default route's interface is where hostNetwork pods are recorded.
    sensor.wait_for("capturing shop/web-host/uplink", Duration::from_secs(10));
    let dump = dir.path().join("uplink.pcap");
    let mut tcpdump = start_tcpdump(&node, "uplink", &dump, "");
    let echo = echo_servers(&outside, 8);
    host_pod_traffic(&node, &host_cgroup, dir.path());
    node_traffic(&node);
    node.sh("ping -c 3 -i 0.05 198.18.55.1");
    let ping = |i: usize| pods[i].sh(&format!("ping -c 5 -i 0.02 198.18.5{i}.2"));
    let phase1 = realtime_ns();
    for i in 0..3 {
        ping(i);
    }
    // A pod added while running is captured within a second or two.
    let added = std::time::Instant::now();
    api.add(kube_api::pod(uids[1], "shop", "web-2", "198.18.51.1"));
    sensor.wait_for("capturing shop/web-2/eth0", Duration::from_secs(10));
    assert!(
        added.elapsed() < Duration::from_secs(2),
        "took {:?}",
        added.elapsed()
    );
    let phase2 = realtime_ns();
    for i in 0..3 {
        ping(i);
    }
    // A deleted pod stops being captured.
    api.delete(uids[0]);
    sensor.wait_for("stopped capturing shop/web-1/eth0", Duration::from_secs(10));
    let phase3 = realtime_ns();
    for i in 0..3 {
        ping(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_pod_series(&node);
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    tcpdump.stop();
    runtime.shutdown_background();
    for thread in echo {
        thread.join().unwrap();
    }

    assert_pods_recorded(&data, uids[0], [phase1, phase2, phase3]);
    assert_host_pod_recorded(&data, &dump);
    // For the README's picture of a Kubernetes-mode file (docs/wireshark-kubernetes.sh).
    if let Some(keep) = std::env::var_os("PODCAP_KEEP_SEGMENTS") {
        for file in segments(&data) {
            std::fs::copy(&file, std::path::Path::new(&keep).join(file.file_name().unwrap())).unwrap();
        }
    }
}

/// Kubernetes mode with `--tls-secrets`: only processes in a targeted pod's cgroup give
/// secrets. `openssl s_server` on the node (no pod), `curl` in pod web-1's network
/// namespace twice: once in the pod's cgroup, once outside it (as a process that entered
/// the pod's namespace from the node would be). Both ClientHellos cross web-1's recorded
/// veth, so the ClientHello scope alone would keep both sessions' secrets; the fence keeps
/// only those of the session whose end is in the pod (the lines curl in the pod logged),
/// and counts the server's and the outsider's probe hits.
#[test]
fn kubernetes_mode_writes_tls_secrets_only_of_targeted_pods_processes() {
    let Some(_serial) = privileged() else { return };
    let (node, pods, _outside) = kubernetes_node();
    let uid = "e0000000-0000-0000-0000-00000000000e";
    let mut cgroups = CgroupTree::new("k8stls");
    let pod_dir = cgroups.dir(&format!("kubepods/besteffort/pod{uid}/ctr"));
    cgroups.process(&pods[0], &pod_dir);
    let api = KubeApi::new(vec![kube_api::pod(uid, "shop", "web-1", "198.18.50.1")], vec![]);
    let (port, runtime) = serve_api(&node, &api);
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = (dir.path().join("data"), web_pods_of_shop(dir.path()));
    let (cert, key) = self_signed(dir.path());
    let mut sensor = kubernetes_sensor(&node, port, (&cgroups.root, &config, &data), " --tls-secrets");
    sensor.wait_for("capturing shop/web-1/eth0", Duration::from_secs(30));
    let mut server = Proc::spawn(
        "openssl s_server",
        &node.exec(&format!(
            "openssl s_server -accept 198.18.50.2:8443 -cert {} -key {} -www -tls1_3 -naccept 2",
            cert.display(),
            key.display()
        )),
    );
    server.wait_for("ACCEPT", Duration::from_secs(10));
    sensor.wait_for("reading TLS secrets of OpenSSL 3.0.", Duration::from_secs(10));
    let (inside, outside) = (dir.path().join("inside.keys"), dir.path().join("outside.keys"));
    let curl = |keys: &std::path::Path, marker: &str| {
        format!(
            "env SSLKEYLOGFILE={} curl -sk --max-time 10 https://198.18.50.2:8443/{marker}",
            keys.display()
        )
    };
    // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup tree.
    let reply = sh(&format!(
        "nsenter --net=/var/run/netns/{} sh -c 'echo $$ > {}/cgroup.procs && exec {}'",
        pods[0].name,
        pod_dir.display(),
        curl(&inside, "in-pod-marker")
    ));
    assert!(reply.contains("s_server"), "{reply}");
    let reply = pods[0].sh(&curl(&outside, "outsider-marker"));
    assert!(reply.contains("s_server"), "{reply}");
    drop(server);
    // The writer waits for ClientHellos, then flushes once a second.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    runtime.shutdown_background();
    let log = sensor.log_text();
    let said = log
        .lines()
        .find(|l| l.contains("TLS secrets:"))
        .unwrap_or_else(|| panic!("the sensor says what it did:\n{log}"));
    let fenced: u64 = said
        .split(" probe hits outside the targeted pods")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        fenced >= 1,
        "the server's and the outsider's hits are counted: {said}"
    );

    let secrets = pcap::secrets_in(&segments(&data));
    let in_pod = std::fs::read(&inside).unwrap();
    let written = podcap_sensor::pcapng::secrets::client_randoms(&secrets);
    let outsider = podcap_sensor::pcapng::secrets::client_randoms(&std::fs::read(&outside).unwrap());
    assert_eq!(
        written,
        podcap_sensor::pcapng::secrets::client_randoms(&in_pod),
        "only the session of the pod's process:\n{}\n{log}",
        String::from_utf8_lossy(&secrets)
    );
    assert!(
        written.is_disjoint(&outsider),
        "no secret of the outsider's session"
    );
    assert_eq!(pcap::key_log_lines(&secrets), pcap::key_log_lines(&in_pod));
}

/// `/metrics` in Kubernetes mode: a series per targeted pod's interface with its namespace
/// and name, none for a pod deleted or not targeted; the whole text a valid exposition.
fn assert_pod_series(node: &Netns) {
    let text = node.sh("curl -sf http://127.0.0.1:9090/metrics");
    let samples = parse_openmetrics(&text);
    let captured = |pod: &str| -> Option<f64> {
        samples.iter().find_map(|s| {
            s.strip_prefix(&format!(
                "podcap_captured_packets_total{{namespace=shop,pod={pod},interface=eth0}} "
            ))
            .and_then(|v| v.parse().ok())
        })
    };
    // web-2: two rounds of 5 pings, each echoed.
    assert!(
        captured("web-2").is_some_and(|n| n >= 20.0),
        "web-2's series: {samples:#?}"
    );
    assert_eq!(captured("web-1"), None, "a deleted pod keeps no series");
    assert_eq!(captured("db-1"), None, "an untargeted pod has no series");
    assert!(
        samples.iter().any(|s| s.starts_with(
            "podcap_dropped_packets_total{namespace=shop,pod=web-2,interface=eth0,stage=kernel} "
        )),
        "{samples:#?}"
    );
}
