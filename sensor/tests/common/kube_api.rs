//! The one fake Kubernetes API server of the sensor's tests: an in-process HTTP server that
//! speaks the API's list and watch JSON for pods and services (no API server can be
//! installed here). Tests change the pods while the sensor watches: added, modified and
//! deleted pods are watch events; a bookmark is one; [`KubeApi::expire`] ends the watches
//! with `410 Gone` (reason `Expired`), as an API server does when a resource version is too
//! old, so the client must list again; a pod added quietly shows only in that new list.
//! List queries are recorded, and `fieldSelector=spec.nodeName=…` is honoured.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Query, State},
    response::Response,
    routing::get,
    Router,
};
use serde_json::{json, Value};

/// What a watch stream carries next: an event line, or the end of every watch.
#[derive(Clone, Debug)]
enum WatchItem {
    Line(String),
    Expired,
}

#[derive(Default)]
struct Inner {
    pods: Vec<Value>,
    services: Vec<Value>,
    version: u64,
    /// Every pod request's query string, in order.
    pod_queries: Vec<String>,
    pod_lists: usize,
}

/// The fake API server's state; clones share it.
#[derive(Clone)]
pub struct KubeApi {
    inner: Arc<Mutex<Inner>>,
    events: tokio::sync::broadcast::Sender<WatchItem>,
}

/// A running pod of `namespace/name` on node `node-1`, labelled `app=` the part of its
/// name before the first `-`; its container's id is `containerd://UID`.
pub fn pod(uid: &str, namespace: &str, name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "1",
                     "labels": {"app": name.split('-').next().unwrap_or(name)},
                     "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                                        "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "registry.example/app:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0,
                                          "image": "registry.example/app:1", "imageID": "",
                                          "containerID": format!("containerd://{uid}")}]}
    })
}

/// A ClusterIP service of `namespace/name` with these cluster IPs, port 80.
pub fn service(namespace: &str, name: &str, ips: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("svc-{name}"), "resourceVersion": "5"},
        "spec": {"clusterIP": ips[0], "clusterIPs": ips, "ports": [{"port": 80}]}
    })
}

impl KubeApi {
    pub fn new(pods: Vec<Value>, services: Vec<Value>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                pods,
                services,
                version: 100,
                ..Inner::default()
            })),
            events: tokio::sync::broadcast::channel(64).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stamps `pod` with the next resource version.
    fn stamp(&self, pod: &mut Value) -> String {
        let mut inner = self.lock();
        inner.version += 1;
        let version = inner.version.to_string();
        pod["metadata"]["resourceVersion"] = json!(version);
        version
    }

    fn send(&self, kind: &str, object: &Value) {
        let line = format!("{}\n", json!({"type": kind, "object": object}));
        let _ = self.events.send(WatchItem::Line(line));
    }

    /// A new pod, announced to the watches.
    pub fn add(&self, mut pod: Value) {
        self.stamp(&mut pod);
        self.lock().pods.push(pod.clone());
        self.send("ADDED", &pod);
    }

    /// A new pod the watches are not told of: only a new list shows it.
    pub fn add_quietly(&self, mut pod: Value) {
        self.stamp(&mut pod);
        self.lock().pods.push(pod);
    }

    /// A changed pod (same uid), announced.
    pub fn modify(&self, mut pod: Value) {
        self.stamp(&mut pod);
        {
            let mut inner = self.lock();
            let uid = &pod["metadata"]["uid"];
            inner.pods.retain(|p| &p["metadata"]["uid"] != uid);
            inner.pods.push(pod.clone());
        }
        self.send("MODIFIED", &pod);
    }

    /// The pod with `uid` is gone, announced.
    pub fn delete(&self, uid: &str) {
        let removed = {
            let mut inner = self.lock();
            let at = inner.pods.iter().position(|p| p["metadata"]["uid"] == uid);
            at.map(|i| inner.pods.remove(i))
        };
        if let Some(mut pod) = removed {
            self.stamp(&mut pod);
            self.send("DELETED", &pod);
        }
    }

    /// A bookmark at the current resource version.
    pub fn bookmark(&self) {
        let version = self.lock().version.to_string();
        self.send(
            "BOOKMARK",
            &json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": version}}),
        );
    }

    /// Ends every watch with `410 Gone`: the client has to list again.
    pub fn expire(&self) {
        let version = self.lock().version;
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("too old resource version: {version} ({})", version + 50),
                            "reason": "Expired", "code": 410});
        self.send("ERROR", &status);
        let _ = self.events.send(WatchItem::Expired);
    }

    /// How many pod lists (not watches) were served.
    pub fn pod_lists(&self) -> usize {
        self.lock().pod_lists
    }

    /// Every pod request's query string so far.
    pub fn pod_queries(&self) -> Vec<String> {
        self.lock().pod_queries.clone()
    }

    /// Waits until `count` pod watches are open (events sent before are not seen).
    pub fn wait_for_watches(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.events.receiver_count() < count {
            assert!(Instant::now() < deadline, "no pod watch opened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/pods", get(pods))
            .route("/api/v1/services", get(services))
            .with_state(self.clone())
    }

    /// Serves on `listener` (a tokio listener) until the runtime ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        axum::serve(listener, self.router()).await.unwrap();
    }
}

fn watching(params: &[(String, String)]) -> bool {
    params.iter().any(|(k, v)| k == "watch" && v == "true")
}

fn json_body(value: &Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .unwrap()
}

/// The node a `fieldSelector=spec.nodeName=NODE` asks for.
fn node_selected(params: &[(String, String)]) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == "fieldSelector")
        .and_then(|(_, v)| v.strip_prefix("spec.nodeName="))
        .map(str::to_owned)
}

async fn pods(State(api): State<KubeApi>, Query(params): Query<Vec<(String, String)>>) -> Response {
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    if watching(&params) {
        let rx = api.events.subscribe();
        api.lock().pod_queries.push(query);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(WatchItem::Line(line)) => return Some((Ok::<_, std::io::Error>(line), rx)),
                    Ok(WatchItem::Expired) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return None
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                }
            }
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let node = node_selected(&params);
    let mut inner = api.lock();
    inner.pod_queries.push(query);
    inner.pod_lists += 1;
    let items: Vec<Value> = inner
        .pods
        .iter()
        .filter(|p| node.as_deref().is_none_or(|n| p["spec"]["nodeName"] == n))
        .cloned()
        .collect();
    let version = inner.version.to_string();
    json_body(
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": version}, "items": items}),
    )
}

async fn services(State(api): State<KubeApi>, Query(params): Query<Vec<(String, String)>>) -> Response {
    if watching(&params) {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(futures::stream::pending::<
                Result<String, std::io::Error>,
            >()))
            .unwrap();
    }
    let items = api.lock().services.clone();
    json_body(
        &json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "5"}, "items": items}),
    )
}
