//! The pod and service watcher against an in-process HTTP server that speaks the
//! Kubernetes API's list and watch JSON (no API server can be installed here): pods are
//! listed and watched with the node's field selector, bookmarks pass, a `410 Gone` makes
//! the watcher list again, deletions and updates reach the published view, and selection
//! and names follow it.
mod common;

use std::{collections::BTreeSet, time::Duration};

use common::kube_api::{self, KubeApi};
use podcap_sensor::{
    cluster::{watch, ClusterView},
    config::targeting::Targeting,
};
use serde_json::json;

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
    let web1 = kube_api::pod("uid-a", "shop", "web-1", "198.18.5.1");
    let dns = kube_api::pod("uid-b", "kube-system", "coredns-1", "198.18.5.2");
    let mut elsewhere = kube_api::pod("uid-e", "shop", "web-9", "198.18.5.9");
    elsewhere["spec"]["nodeName"] = json!("node-2");
    let service = kube_api::service("shop", "web", &["198.18.6.10", "2001:db8:6::10"]);
    let api = KubeApi::new(vec![web1.clone(), dns, elsewhere], vec![service]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api.clone().serve(listener));

    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(ClusterView::default());
    let watcher = tokio::spawn(async move { watch(client, "node-1", tx).await });

    let uids = |v: &ClusterView| v.pods.keys().cloned().collect::<BTreeSet<_>>();
    let listed = next_view(&mut rx, |v| v.pods.contains_key("uid-b")).await;
    assert_eq!(
        uids(&listed),
        ["uid-a", "uid-b"].map(String::from).into_iter().collect(),
        "only this node's pods"
    );
    let waiting = api.clone();
    tokio::task::spawn_blocking(move || waiting.wait_for_watches(1))
        .await
        .unwrap();
    // Watched: c added, a bookmark, a updated, b deleted.
    api.add(kube_api::pod("uid-c", "shop", "web-2", "198.18.5.3"));
    api.bookmark();
    let mut web1_updated = web1;
    web1_updated["metadata"]["labels"]["tier"] = json!("front");
    api.modify(web1_updated);
    api.delete("uid-b");
    let first = next_view(&mut rx, |v| {
        v.pods.contains_key("uid-c") && !v.pods.contains_key("uid-b")
    })
    .await;
    assert!(!first.pods.contains_key("uid-b"));
    // 410 Gone: listed again, and d (only in the new list) appears.
    api.add_quietly(kube_api::pod("uid-d", "shop", "web-3", "198.18.5.4"));
    api.expire();
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
    assert_eq!(a.containers[0].id, "containerd://uid-a");
    assert!(api.pod_lists() >= 2, "no re-list after 410 Gone");
    let queries = api.pod_queries();
    assert!(
        queries
            .iter()
            .all(|q| q.contains("fieldSelector=spec.nodeName=node-1")),
        "{queries:?}"
    );
    assert!(queries.iter().any(|q| q.contains("allowWatchBookmarks=true")));

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
