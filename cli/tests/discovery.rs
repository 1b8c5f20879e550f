//! CLI discovery through the Kubernetes API, against an in-process HTTP server that serves
//! the endpoints the CLI uses with the API's JSON (no API server can be installed here):
//! the sensor pod list by label, the token Secret, the ConfigMap, and the port-forward
//! WebSocket upgrade (`v4.channel.k8s.io`: one binary channel pair per port, each opened by
//! a frame carrying the port) carried to real sensors (the sensor's own router and store,
//! on loopback). The `podcap` and `kubectl-podcap` binaries run as a user would run them.
mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::{Command, Output},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use axum::{
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        Path as UrlPath, Query, State,
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use common::{after_section_header, dumped, packets, stderr, ADMIN_TOKEN, PODCAP, TOKEN};
use futures::{SinkExt, StreamExt};
use podcap_sensor::config::settings::Floors;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const NAMESPACE: &str = "podcap";
const SENSOR_SELECTOR: &str = "app.kubernetes.io/part-of=podcap,app.kubernetes.io/component=sensor";

/// What the fixture API server knows and saw.
#[derive(Default)]
struct Cluster {
    /// Pod name → where its sensor listens (None: nothing does).
    sensors: HashMap<String, Option<SocketAddr>>,
    pods: Vec<Value>,
    config: Mutex<(u64, String)>,
    forwards: AtomicUsize,
    selectors: Mutex<Vec<String>>,
    /// The user may not read the admin token's Secret (only the snapshot role).
    forbid_admin: std::sync::atomic::AtomicBool,
    /// The CA of the sensors' certificate (`ca.crt` of the TLS Secret).
    ca: String,
}

fn sensor_pod(name: &str, node: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NAMESPACE, "uid": format!("uid-{name}"),
            "resourceVersion": "4100",
            "labels": {"app.kubernetes.io/name": "podcap", "app.kubernetes.io/instance": "podcap",
                       "app.kubernetes.io/part-of": "podcap", "app.kubernetes.io/component": "sensor"},
            "annotations": {"podcap.io/token-secret": "podcap-token",
                            "podcap.io/admin-token-secret": "podcap-admin-token",
                            "podcap.io/tls-secret": "podcap-tls"}
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "containers": [{
                "name": "sensor",
                "image": "ghcr.io/podcap/podcap-sensor:0.1.0",
                "ports": [{"name": "api", "containerPort": 9090, "protocol": "TCP"}],
                "env": [
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}
                ]
            }]
        },
        "status": {"phase": phase, "podIP": "198.18.0.10", "hostIP": "198.18.0.10"}
    })
}

fn config_map(cluster: &Cluster) -> Value {
    let (version, text) = cluster.config.lock().unwrap().clone();
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "podcap-config", "namespace": NAMESPACE, "resourceVersion": version.to_string(),
                     "labels": {"app.kubernetes.io/name": "podcap", "app.kubernetes.io/instance": "podcap",
                                "app.kubernetes.io/part-of": "podcap"}},
        "data": {"config.yaml": text}
    })
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

async fn list_pods(
    State(cluster): State<Arc<Cluster>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    cluster.selectors.lock().unwrap().push(selector.clone());
    let items = if selector == SENSOR_SELECTOR {
        cluster.pods.clone()
    } else {
        Vec::new()
    };
    Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "4200"}, "items": items}))
        .into_response()
}

async fn get_secret(
    State(cluster): State<Arc<Cluster>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    if ns == NAMESPACE && name == "podcap-tls" {
        return Json(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": name, "namespace": ns, "resourceVersion": "18"},
                    "data": {"ca.crt": base64_free::encode(cluster.ca.as_bytes())}}),
        )
        .into_response();
    }
    let token = match name.as_str() {
        _ if ns != NAMESPACE => None,
        "podcap-token" => Some(TOKEN),
        "podcap-admin-token" if cluster.forbid_admin.load(Ordering::Relaxed) => {
            return status(
                403,
                "Forbidden",
                &format!("secrets \"{name}\" is forbidden: User \"viewer\" cannot get resource \"secrets\""),
            );
        }
        "podcap-admin-token" => Some(ADMIN_TOKEN),
        _ => None,
    };
    let Some(token) = token else {
        return status(404, "NotFound", &format!("secrets \"{name}\" not found"));
    };
    Json(json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": ns, "resourceVersion": "17"},
                "data": {"token": base64_free::encode(token.as_bytes())}}))
    .into_response()
}

async fn list_config_maps(State(cluster): State<Arc<Cluster>>) -> Response {
    Json(
        json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "4200"},
                "items": [config_map(&cluster)]}),
    )
    .into_response()
}

async fn patch_config_map(
    State(cluster): State<Arc<Cluster>>,
    UrlPath((_, name)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/merge-patch+json"
    );
    if name != "podcap-config" {
        return status(404, "NotFound", &format!("configmaps \"{name}\" not found"));
    }
    let patch: Value = serde_json::from_str(&body).unwrap();
    {
        let mut config = cluster.config.lock().unwrap();
        if patch["metadata"]["resourceVersion"].as_str() != Some(&config.0.to_string()) {
            return status(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            );
        }
        config.0 += 1;
        patch["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .clone_into(&mut config.1);
    }
    Json(config_map(&cluster)).into_response()
}

/// The port-forward upgrade: relays channel 0 to the pod's sensor; if nothing listens,
/// the error channel says so, as the kubelet does.
async fn port_forward(
    State(cluster): State<Arc<Cluster>>,
    UrlPath((_, name)): UrlPath<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(target) = cluster.sensors.get(&name).copied() else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    };
    let port: u16 = query["ports"].parse().unwrap();
    cluster.forwards.fetch_add(1, Ordering::Relaxed);
    upgrade
        .protocols(["v4.channel.k8s.io"])
        .on_upgrade(move |socket| relay(socket, name, target, port))
}

async fn relay(socket: WebSocket, pod: String, target: Option<SocketAddr>, port: u16) {
    let (mut sink, mut stream) = socket.split();
    let [lo, hi] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if sink
            .send(Message::Binary(vec![channel, lo, hi].into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let connected = match target {
        Some(addr) => TcpStream::connect(addr).await.ok(),
        None => None,
    };
    let Some(tcp) = connected else {
        // Like the kubelet, the failure to reach the pod is said once the client sends.
        let _ = stream.next().await;
        let message = format!(
            "error forwarding port {port} to pod {pod}, uid : failed to connect to localhost:{port}: connection refused"
        );
        let mut frame = vec![1u8];
        frame.extend_from_slice(message.as_bytes());
        let _ = sink.send(Message::Binary(frame.into())).await;
        let _ = sink.close().await;
        return;
    };
    let (mut from_sensor, mut to_sensor) = tcp.into_split();
    let up = async move {
        while let Some(Ok(message)) = stream.next().await {
            let data = match &message {
                Message::Binary(bytes) if bytes.len() > 1 && bytes[0] == 0 => &bytes[1..],
                Message::Close(_) => break,
                _ => continue,
            };
            if to_sensor.write_all(data).await.is_err() {
                break;
            }
        }
        let _ = to_sensor.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_sensor.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0);
                    frame.extend_from_slice(&buf[..n]);
                    if sink.send(Message::Binary(frame.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::join!(up, down);
}

/// Base64 without another dependency (the Secret's `data` encoding).
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

struct Fixture {
    api: SocketAddr,
    cluster: Arc<Cluster>,
    sensors: Vec<SocketAddr>,
    _stores: Vec<tempfile::TempDir>,
    home: tempfile::TempDir,
    /// The CA the sensors' TLS certificate was signed by.
    ca: std::path::PathBuf,
}

const CONFIG: &str = "tap:\n  regex: ''\n  namespaces: []\n  excludedNamespaces: []\n  bpfOverride: ''\n  stopped: false\npcapdump:\n  enabled: true\n  maxTime: 1h\n  maxSize: 500MB\n";

/// Two running sensors (node-a, node-b), a pending one (node-c) and a running pod whose
/// sensor does not answer (node-d).
async fn fixture() -> Fixture {
    let stores = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // The sensors serve TLS, as the chart sets them up.
    let home = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::certificates(home.path());
    let tls = || Some(podcap_sensor::api::server::tls_acceptor(&cert, &key).unwrap());
    let a = common::serve(common::sensor_state(&stores[0], 0, 0xaa, Floors::DEFAULT), tls()).await;
    let b = common::serve(common::sensor_state(&stores[1], 50, 0xbb, Floors::DEFAULT), tls()).await;
    let cluster = Arc::new(Cluster {
        sensors: HashMap::from([
            ("podcap-7xk2p".into(), Some(a)),
            ("podcap-m4q9z".into(), Some(b)),
            ("podcap-d8w3v".into(), None),
        ]),
        pods: vec![
            sensor_pod("podcap-m4q9z", "node-b", "Running"),
            sensor_pod("podcap-7xk2p", "node-a", "Running"),
            sensor_pod("podcap-r2n6c", "node-c", "Pending"),
            sensor_pod("podcap-d8w3v", "node-d", "Running"),
        ],
        config: Mutex::new((7, CONFIG.into())),
        ca: std::fs::read_to_string(&ca).unwrap(),
        ..Cluster::default()
    });
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/portforward",
            get(port_forward),
        )
        .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret))
        .route("/api/v1/namespaces/{ns}/configmaps", get(list_config_maps))
        .route(
            "/api/v1/namespaces/{ns}/configmaps/{name}",
            axum::routing::patch(patch_config_map),
        )
        .with_state(Arc::clone(&cluster));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{api}\n\
         - name: elsewhere\n  cluster:\n    server: http://127.0.0.1:9\n\
         users:\n- name: dev\n  user: {{}}\n\
         contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: dev\n\
         - name: elsewhere\n  context:\n    cluster: elsewhere\n    user: dev\n\
         current-context: elsewhere\n"
    );
    std::fs::write(home.path().join("kubeconfig"), kubeconfig).unwrap();
    Fixture {
        api,
        cluster,
        sensors: vec![a, b],
        _stores: stores,
        home,
        ca,
    }
}

impl Fixture {
    /// Runs a CLI binary with the fixture's kubeconfig (context `lab`) and no token.
    async fn run(&self, binary: &'static str, args: &[&str]) -> Output {
        let kubeconfig = self.home.path().join("kubeconfig");
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(binary)
                .args(&args)
                .env("KUBECONFIG", kubeconfig)
                .env_remove("PODCAP_TOKEN")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    }
}

const KUBECTL_PODCAP: &str = env!("CARGO_BIN_EXE_kubectl-podcap");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_through_port_forward_equals_dump_from_named_sensors() {
    let f = fixture().await;
    // One window for both paths, so their files can be compared byte for byte.
    let now = podcap_sensor::sys::realtime_ns();
    let from = podcap_sensor::units::format_rfc3339(now - 300_000_000_000);
    let to = podcap_sensor::units::format_rfc3339(now - 1_000_000_000);
    // Through the API: sensors found by label, token from their Secret, each reached by
    // port-forward; node-c (pending) and node-d (nothing answers) are named.
    let through_api = tempfile::tempdir().unwrap();
    let output = f
        .run(
            PODCAP,
            &[
                "dump",
                "--from",
                &from,
                "--to",
                &to,
                "--context",
                "lab",
                "--allow-partial",
                "--dest",
                through_api.path().to_str().unwrap(),
            ],
        )
        .await;
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("sensor node-c failed: pod podcap-r2n6c is Pending"),
        "{err}"
    );
    assert!(
        err.contains("sensor node-d failed") && err.contains("connection refused"),
        "{err}"
    );
    assert!(f.cluster.forwards.load(Ordering::Relaxed) >= 3);
    assert!(f
        .cluster
        .selectors
        .lock()
        .unwrap()
        .iter()
        .all(|s| s == SENSOR_SELECTOR));

    // The same sensors named on the command line.
    let direct = tempfile::tempdir().unwrap();
    let (a, b) = (
        format!("node-a=https://localhost:{}", f.sensors[0].port()),
        format!("node-b=https://localhost:{}", f.sensors[1].port()),
    );
    let output = tokio::task::spawn_blocking({
        let dest = direct.path().to_owned();
        let ca = f.ca.clone();
        move || {
            Command::new(PODCAP)
                .args([
                    "dump",
                    "--from",
                    &from,
                    "--to",
                    &to,
                    "--sensor",
                    &a,
                    "--sensor",
                    &b,
                    "--ca-file",
                ])
                .arg(&ca)
                .arg("--dest")
                .arg(dest)
                .env("PODCAP_TOKEN", TOKEN)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let (via_api, via_urls) = (dumped(through_api.path()), dumped(direct.path()));
    let list = packets(&via_api);
    assert_eq!(list.len(), 240);
    assert!(list.windows(2).all(|w| w[0].1 <= w[1].1), "time order");
    assert_eq!(
        list.iter()
            .filter(|p| p.0 == "node-a/eth0" && p.2 == 0xaa)
            .count(),
        120
    );
    assert_eq!(
        list.iter()
            .filter(|p| p.0 == "node-b/eth0" && p.2 == 0xbb)
            .count(),
        120
    );
    // The files differ only in their Section Header, which names the sensors that failed.
    assert!(
        after_section_header(&via_api) == after_section_header(&via_urls),
        "the two paths gave different packets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_config_and_the_kubectl_plugin_use_discovery() {
    let f = fixture().await;
    let output = f.run(KUBECTL_PODCAP, &["segments", "--context", "lab"]).await;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    // node-c and node-d fail, so the exit status says so; the others answer.
    assert!(!output.status.success());
    assert!(
        out.starts_with("NODE") && out.contains("\nnode-a ") && out.contains("\nnode-b "),
        "{out}"
    );
    assert!(stderr(&output).contains("node-c"), "{}", stderr(&output));

    // node-c and node-d cannot be asked: the change stops before any sensor changes, unless
    // the user says to leave them.
    let output = f
        .run(PODCAP, &["config", "--context", "lab", "--max-time", "2h"])
        .await;
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains("sensor node-c cannot be asked") && err.contains("no sensor was changed"),
        "{err}"
    );
    let output = f
        .run(
            PODCAP,
            &[
                "config",
                "--context",
                "lab",
                "--max-time",
                "2h",
                "--skip-unreachable",
            ],
        )
        .await;
    // A change prints the settings as `podcap config` does (#32): the table, not JSON.
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        out.starts_with("NODE") && out.matches("2h (api)").count() == 2,
        "{out} {}",
        stderr(&output)
    );
    // A user with only the snapshot role cannot read the admin token: the change is refused
    // naming the Secret and the role it takes; reading still works.
    f.cluster.forbid_admin.store(true, Ordering::Relaxed);
    let output = f
        .run(PODCAP, &["config", "--context", "lab", "--max-time", "3h"])
        .await;
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(
        err.contains("admin token from Secret podcap/podcap-admin-token") && err.contains("userRoles.admin"),
        "{err}"
    );
    let output = f.run(PODCAP, &["config", "--context", "lab", "-o", "json"]).await;
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let times: Vec<&str> = shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["settings"]["maxTime"].as_str())
        .collect();
    assert_eq!(times, ["2h", "2h"], "{shown}");
    let output = f.run(PODCAP, &["config", "--context", "lab"]).await;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        out.starts_with("NODE") && out.matches("2h (api)").count() == 2,
        "{out}"
    );
    let output = f.run(PODCAP, &["config", "--context", "lab", "-o", "yaml"]).await;
    let shown: serde_norway::Value = serde_norway::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["nodes"][0]["settings"]["maxTime"].as_str(), Some("2h"));

    // As a kubectl plugin it names itself the way kubectl users call it.
    let output = f.run(KUBECTL_PODCAP, &["dump", "--help"]).await;
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: kubectl podcap dump"));

    // The default context points at a dead address: the failure is named, quickly.
    let output = f.run(PODCAP, &["segments"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("listing the sensor pods"),
        "{}",
        stderr(&output)
    );
    let _ = f.api;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_rewrites_the_config_map_and_refuses_bad_input() {
    let f = fixture().await;
    let output = f
        .run(
            PODCAP,
            &[
                "tap",
                "^web-",
                "-n",
                "shop",
                "-n",
                "blog",
                "--exclude-namespace",
                "kube-system",
                "--filter",
                "tcp port 80",
                "--context",
                "lab",
            ],
        )
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("podcap/podcap-config now records pods matching \"^web-\" in shop, blog")
    );
    let (version, text) = f.cluster.config.lock().unwrap().clone();
    assert_eq!(version, 8);
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(doc["tap"]["regex"], "^web-");
    assert_eq!(doc["tap"]["namespaces"], json!(["shop", "blog"]));
    assert_eq!(doc["tap"]["excludedNamespaces"], json!(["kube-system"]));
    assert_eq!(doc["tap"]["bpfOverride"], "tcp port 80");
    assert_eq!(doc["pcapdump"]["maxSize"], "500MB", "other keys are kept");

    // Without a filter the filter is kept; no regex means all pods.
    let output = f.run(PODCAP, &["tap", "--context", "lab"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = f.cluster.config.lock().unwrap().1.clone();
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(doc["tap"]["regex"], "");
    assert_eq!(doc["tap"]["namespaces"], json!([]));
    assert_eq!(doc["tap"]["bpfOverride"], "tcp port 80");

    // Bad input is named and changes nothing.
    for (args, expected) in [
        (vec!["tap", "web-(", "--context", "lab"], "tap.regex"),
        (
            vec!["tap", "--filter", "tcp port", "--context", "lab"],
            "syntax error",
        ),
    ] {
        let before = f.cluster.config.lock().unwrap().clone();
        let output = f.run(PODCAP, &args).await;
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(*f.cluster.config.lock().unwrap(), before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_create_and_delete_edit_the_config_map_every_sensor_follows() {
    let f = fixture().await;
    let create = [
        "record",
        "create",
        "nightly",
        "--filter",
        "tcp port 443",
        "--pod",
        "^web-",
        "-n",
        "shop",
        "--start",
        "02:00",
        "--days",
        "7",
        "--duration",
        "1h",
        "--expire",
        "3d",
        "--context",
        "lab",
    ];
    let output = f.run(PODCAP, &create).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("now has recording job nightly"),
        "{}",
        stderr(&output)
    );
    let text = f.cluster.config.lock().unwrap().1.clone();
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let job = &doc["recordings"][0];
    assert_eq!(job["name"], "nightly");
    assert_eq!(job["filter"], "tcp port 443");
    assert_eq!(job["namespaces"], json!(["shop"]));
    assert_eq!(
        (job["start"].as_str(), job["days"].as_u64()),
        (Some("02:00"), Some(7))
    );
    assert!(job["created"].is_string(), "{job}");
    assert_eq!(doc["pcapdump"]["maxSize"], "500MB", "other keys are kept");
    // What the sensors read back is a valid targeting document with this job.
    let parsed = podcap_format::targeting::TargetingDoc::parse(&text).unwrap();
    assert_eq!(parsed.recordings.len(), 1);

    // A taken name, a bad filter, a bad start: named, and the ConfigMap is unchanged.
    for (args, expected) in [
        (create.to_vec(), "already exists"),
        (
            vec![
                "record",
                "create",
                "x",
                "--filter",
                "tcp prot 80",
                "--duration",
                "1h",
                "--context",
                "lab",
            ],
            "recordings[1].filter",
        ),
        (
            vec![
                "record",
                "create",
                "x",
                "--start",
                "2am",
                "--duration",
                "1h",
                "--context",
                "lab",
            ],
            "start",
        ),
    ] {
        let before = f.cluster.config.lock().unwrap().clone();
        let output = f.run(PODCAP, &args).await;
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(*f.cluster.config.lock().unwrap(), before);
    }

    let output = f
        .run(PODCAP, &["record", "delete", "nightly", "--context", "lab"])
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = f.cluster.config.lock().unwrap().1.clone();
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(doc["recordings"], json!([]));
}
