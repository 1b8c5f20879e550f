//! The pod and service watcher against an in-process HTTP server that speaks the
//! Kubernetes API's list and watch JSON (no API server can be installed here): pods are
//! listed and watched with the node's field selector, bookmarks pass, a `410 Gone` makes
//! the watcher list again, deletions and updates reach the published view, and selection
//! and names follow it.
use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Query, State},
    response::Response,
    routing::get,
    Router,
};
use podcap_sensor::{
    cluster::{watch, ClusterView},
    config::targeting::Targeting,
};
use serde_json::{json, Value};

fn pod(uid: &str, namespace: &str, name: &str, ip: &str, version: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": version,
            "labels": {"app": name.split('-').next().unwrap_or(name)},
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "main", "image": "registry.example/app:1"}]
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "containerStatuses": [{
                "name": "main", "ready": true, "restartCount": 0, "image": "registry.example/app:1",
                "imageID": "", "containerID": format!("containerd://{uid}c")
            }]
        }
    })
}

fn list(kind: &str, version: &str, items: &[Value]) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": version}, "items": items})
}

fn event(kind: &str, object: &Value) -> String {
    format!("{}\n", json!({"type": kind, "object": object}))
}

#[derive(Default)]
struct Server {
    pod_lists: usize,
    pod_queries: Vec<String>,
}

type Shared = Arc<Mutex<Server>>;

/// A watch response: `lines`, then (if `keep_open`) nothing more, never ending.
fn stream(lines: Vec<String>, keep_open: bool) -> Response {
    let events = futures::stream::iter(lines.into_iter().map(Ok::<_, std::io::Error>));
    let body = if keep_open {
        Body::from_stream(futures::StreamExt::chain(events, futures::stream::pending()))
    } else {
        Body::from_stream(events)
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn json_response(value: &Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .unwrap()
}

async fn pods(State(server): State<Shared>, Query(params): Query<Vec<(String, String)>>) -> Response {
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let watching = params.iter().any(|(k, v)| k == "watch" && v == "true");
    let lists = {
        let mut s = server.lock().unwrap();
        s.pod_queries.push(query);
        if !watching {
            s.pod_lists += 1;
        }
        s.pod_lists
    };
    let web1 = pod("uid-a", "shop", "web-1", "198.18.5.1", "90");
    let dns = pod("uid-b", "kube-system", "coredns-1", "198.18.5.2", "91");
    let web2 = pod("uid-c", "shop", "web-2", "198.18.5.3", "101");
    let web3 = pod("uid-d", "shop", "web-3", "198.18.5.4", "201");
    let mut web1_updated = pod("uid-a", "shop", "web-1", "198.18.5.1", "102");
    web1_updated["metadata"]["labels"]["tier"] = json!("front");
    match (watching, lists) {
        (false, 1) => json_response(&list("PodList", "100", &[web1, dns])),
        (false, _) => json_response(&list(
            "PodList",
            "200",
            &[web1_updated.clone(), web2.clone(), web3],
        )),
        (true, 1) => stream(
            vec![
                event("ADDED", &web2),
                event(
                    "BOOKMARK",
                    &json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "103"}}),
                ),
                event("MODIFIED", &web1_updated),
                event("DELETED", &dns),
                event(
                    "ERROR",
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "too old resource version: 103 (150)", "reason": "Expired", "code": 410}),
                ),
            ],
            false,
        ),
        (true, _) => stream(Vec::new(), true),
    }
}

async fn services(Query(params): Query<Vec<(String, String)>>) -> Response {
    if params.iter().any(|(k, v)| k == "watch" && v == "true") {
        return stream(Vec::new(), true);
    }
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "uid": "svc-1", "resourceVersion": "5"},
        "spec": {"clusterIP": "198.18.6.10", "clusterIPs": ["198.18.6.10", "2001:db8:6::10"], "ports": [{"port": 80}]}
    });
    json_response(&list("ServiceList", "5", &[service]))
}

async fn next_view(
    rx: &mut tokio::sync::watch::Receiver<ClusterView>,
    done: impl Fn(&ClusterView) -> bool,
) -> ClusterView {
    let wait = async {
        loop {
            if done(&rx.borrow_and_update()) {
                return rx.borrow().clone();
            }
            rx.changed().await.expect("the watcher stopped");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("the view never got there")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_lists_watches_bookmarks_gone_and_deletions() {
    let server: Shared = Arc::default();
    let app = Router::new()
        .route("/api/v1/pods", get(pods))
        .route("/api/v1/services", get(services))
        .with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(ClusterView::default());
    let watcher = tokio::spawn(async move { watch(client, "node-1", tx).await });

    let uids = |v: &ClusterView| v.pods.keys().cloned().collect::<BTreeSet<_>>();
    // After the first list and watch: c added, b deleted.
    let first = next_view(&mut rx, |v| {
        v.pods.contains_key("uid-c") && !v.pods.contains_key("uid-b")
    })
    .await;
    assert!(!first.pods.contains_key("uid-b"));
    // 410 Gone: listed again, and d (only in the second list) appears.
    let view = next_view(&mut rx, |v| v.pods.contains_key("uid-d")).await;
    assert_eq!(
        uids(&view),
        ["uid-a", "uid-c", "uid-d"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let a = &view.pods["uid-a"];
    assert_eq!(
        a.labels.get("tier").map(String::as_str),
        Some("front"),
        "the update"
    );
    assert_eq!(
        (a.namespace.as_str(), a.name.as_str(), a.node.as_str()),
        ("shop", "web-1", "node-1")
    );
    assert_eq!(a.containers[0].id, "containerd://uid-ac");
    {
        let s = server.lock().unwrap();
        assert!(s.pod_lists >= 2, "no re-list after 410 Gone");
        assert!(
            s.pod_queries
                .iter()
                .all(|q| q.contains("fieldSelector=spec.nodeName=node-1")),
            "{:?}",
            s.pod_queries
        );
        assert!(s
            .pod_queries
            .iter()
            .any(|q| q.contains("allowWatchBookmarks=true")));
    }

    // Selection and names follow the view.
    let targeting = Targeting::parse("tap:\n  regex: ^web-[13]$\n  namespaces: [shop]\n", 65535).unwrap();
    let selected: BTreeSet<&str> = view.selected(&targeting).map(|p| p.name.as_str()).collect();
    assert_eq!(selected, ["web-1", "web-3"].into_iter().collect());
    let names = view.names();
    assert!(
        names.contains(&("198.18.5.4".parse().unwrap(), "web-3.shop".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&("198.18.6.10".parse().unwrap(), "web.shop.svc".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&("2001:db8:6::10".parse().unwrap(), "web.shop.svc".into())),
        "{names:?}"
    );
    watcher.abort();
}
