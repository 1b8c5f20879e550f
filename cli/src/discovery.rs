//! Sensors found through the Kubernetes API, reached through the API server's port-forward,
//! and the cluster-wide targeting ConfigMap that `podcap tap` edits.
//!
//! Rules:
//! - The cluster comes from the kubeconfig (`--kubeconfig`, else `KUBECONFIG`, else
//!   `~/.kube/config`; `--context` picks a context) or, without one, the in-cluster service
//!   account. The namespace is the chart's (`-s/--release-namespace`, default `podcap`), not
//!   the kubeconfig's (`-n/--namespace` selects the pods whose traffic is wanted).
//! - Sensors are the pods labelled [`SENSOR_SELECTOR`], named by their node. A pod that is
//!   not running is reported as unreachable with its phase; it is not an error of the whole
//!   command.
//! - Each sensor gets a loopback listener on an ephemeral port; every connection accepted
//!   there becomes one port-forward (one WebSocket) to the pod's `api` port, so the rest of
//!   the CLI speaks plain HTTP to `127.0.0.1` and the laptop needs no route to the nodes.
//!   A port-forward the API server refuses answers that connection with a `502` naming the
//!   reason, which the CLI reports against the node.
//! - Without a token from the command line, the token is read from the Secret the sensor
//!   pods take `PODCAP_TOKEN` from (so the chart's generated token works as is).
//! - The ConfigMap is changed with a merge patch carrying the `resourceVersion` read, so a
//!   concurrent change fails instead of being overwritten; the new document is validated
//!   with the sensor's own parser before anything is sent.
use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    api::{ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::{Handle, Runtime},
};

use crate::source::{Sensor, TunnelFailure};

/// The labels of the chart's sensor pods (`part-of` stays `podcap` whatever
/// `nameOverride` says).
pub const SENSOR_SELECTOR: &str = "app.kubernetes.io/part-of=podcap,app.kubernetes.io/component=sensor";
/// The labels of the chart's objects (the targeting ConfigMap is the one with `config.yaml`).
pub const CHART_SELECTOR: &str = "app.kubernetes.io/part-of=podcap";
/// What releases of the chart before `part-of` labelled their sensor pods and objects with:
/// asked when the selectors above find nothing.
const OLDER_SENSOR_SELECTOR: &str = "app.kubernetes.io/name=podcap,app.kubernetes.io/component=sensor";
const OLDER_CHART_SELECTOR: &str = "app.kubernetes.io/name=podcap";
/// The sensor's API port when its pod does not name one `api`.
const DEFAULT_API_PORT: u16 = 9090;
/// The key of the targeting document in the ConfigMap.
const CONFIG_KEY: &str = "config.yaml";
/// Bounds every API call, so an unreachable API server is named instead of waited for.
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the cluster is.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: String,
}

/// What discovery found.
pub struct Found {
    pub sensors: Vec<Sensor>,
    /// Sensors that exist but cannot be asked, with the reason.
    pub unreachable: Vec<(String, String)>,
    /// The token read from the sensors' Secret, when one was wanted.
    pub token: Option<String>,
}

/// A connection to the cluster; the port-forwards live as long as it does.
pub struct Cluster {
    /// Taken only by `drop`; calls go through `handle`.
    runtime: Option<Runtime>,
    handle: Handle,
    client: Client,
    namespace: String,
    context: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Cluster {
    pub fn connect(options: &ClusterOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the Kubernetes client")?;
        let (client, context) = runtime.block_on(client(options))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            client,
            namespace: options.namespace.clone(),
            context,
        })
    }

    fn runtime(&self) -> &Handle {
        &self.handle
    }

    /// Where the cluster was found, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("namespace {} of {}", self.namespace, self.context)
    }

    /// The chart's sensor pods (by the older labels if none has the current ones).
    fn sensor_pods(&self, runtime: &Handle) -> Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        for selector in [SENSOR_SELECTOR, OLDER_SENSOR_SELECTOR] {
            let items = runtime
                .block_on(timed(pods.list(&ListParams::default().labels(selector))))
                .with_context(|| format!("listing the sensor pods in {}", self.describe()))?
                .items;
            if !items.is_empty() {
                return Ok(items);
            }
        }
        Ok(Vec::new())
    }

    /// Lists the sensor pods and opens a loopback port-forward to each running one; with
    /// `want_token`, reads the token of that role from the Secret the pods name.
    pub fn find_sensors(
        &self,
        agent: &ureq::Agent,
        request_timeout: Option<std::time::Duration>,
        want_token: Option<Role>,
    ) -> Result<Found> {
        let runtime = self.runtime();
        let mut items = self.sensor_pods(runtime)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        if items.is_empty() {
            bail!(
                "no podcap sensor pods in {} (labels {SENSOR_SELECTOR}); install the chart there, \
                 pass -s/--release-namespace, or name sensors with --sensor",
                self.describe()
            );
        }
        let mut found = Found {
            sensors: Vec::new(),
            unreachable: Vec::new(),
            token: None,
        };
        let mut token_source = None;
        let mut tls_secret = None;

        items.sort_by_key(node_of);
        for pod in items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let label = node_of(&pod);
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Unknown".into());
            if pod.metadata.deletion_timestamp.is_some() {
                found
                    .unreachable
                    .push((label, format!("pod {name} is terminating")));
                continue;
            }
            if phase != "Running" {
                found.unreachable.push((label, format!("pod {name} is {phase}")));
                continue;
            }
            if let (None, Some(role)) = (&token_source, want_token) {
                token_source = token_reference(&pod, role);
            }
            if tls_secret.is_none() {
                tls_secret = annotation(&pod, TLS_ANNOTATION);
            }
            let port = api_port(&pod);
            let listener = runtime
                .block_on(TcpListener::bind("127.0.0.1:0"))
                .context("opening a loopback port for a port-forward")?;
            let local = listener.local_addr()?;
            let failure = TunnelFailure::default();
            runtime.spawn(forward(listener, pods.clone(), name, port, Arc::clone(&failure)));
            found.sensors.push(Sensor {
                label,
                base_url: format!("http://{local}"),
                agent: agent.clone(),
                tunnel_failure: Some(failure),
                request_timeout,
            });
        }
        // Sensors serving TLS are checked against the CA in the Secret their pods name,
        // through the loopback end of the port-forward (their certificate names 127.0.0.1).
        if let (Some(name), false) = (tls_secret, found.sensors.is_empty()) {
            let ca = runtime
                .block_on(self.secret_value(&name, "ca.crt"))
                .with_context(|| {
                    format!(
                        "reading the sensors' CA from Secret {}/{name} (your role needs get on it)",
                        self.namespace
                    )
                })?;
            let agent = crate::source::agent_trusting(ca.as_bytes(), request_timeout)
                .with_context(|| format!("the CA in Secret {}/{name}", self.namespace))?;
            for sensor in &mut found.sensors {
                sensor.base_url = sensor.base_url.replacen("http://", "https://", 1);
                sensor.agent = agent.clone();
            }
        }
        if let (Some(role), false) = (want_token, found.sensors.is_empty()) {
            found.token = match token_source {
                None => None,
                Some(TokenSource::Value(value)) => Some(value),
                Some(TokenSource::Secret { name, key }) => Some(
                    runtime
                        .block_on(self.secret_value(&name, &key))
                        .with_context(|| {
                            format!(
                                "reading the sensors' {} from Secret {}/{name} (your role needs \
                                 get on it: the chart's {}; or pass --token-file or PODCAP_TOKEN)",
                                role.token_name(),
                                self.namespace,
                                role.chart_role()
                            )
                        })?,
                ),
            };
        }
        Ok(found)
    }

    async fn secret_value(&self, name: &str, key: &str) -> Result<String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = timed(secrets.get(name)).await?;
        let bytes = secret
            .data
            .and_then(|mut data| data.remove(key))
            .ok_or_else(|| anyhow!("it has no key {key:?}"))?;
        let text = String::from_utf8(bytes.0).map_err(|_| anyhow!("key {key:?} is not text"))?;
        Ok(text.trim().to_owned())
    }

    /// Reads the targeting document, lets `change` edit it, validates it with the sensor's
    /// parser and writes it back. Returns the ConfigMap's name and the new document.
    pub fn retarget(
        &self,
        change: impl FnOnce(&mut serde_norway::Mapping) -> Result<()>,
    ) -> Result<(String, String)> {
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let runtime = self.runtime();
        let mut candidates: Vec<ConfigMap> = Vec::new();
        for selector in [CHART_SELECTOR, OLDER_CHART_SELECTOR] {
            let list = runtime
                .block_on(timed(maps.list(&ListParams::default().labels(selector))))
                .with_context(|| format!("listing ConfigMaps in {}", self.describe()))?;
            candidates = list
                .items
                .into_iter()
                .filter(|m| m.data.as_ref().is_some_and(|d| d.contains_key(CONFIG_KEY)))
                .collect();
            if !candidates.is_empty() {
                break;
            }
        }
        let map = match (candidates.pop(), candidates.is_empty()) {
            (None, _) => bail!(
                "no podcap ConfigMap with {CONFIG_KEY} in {} (labels {CHART_SELECTOR}); is the chart installed there?",
                self.describe()
            ),
            (Some(map), true) => map,
            (Some(another), false) => bail!(
                "several podcap ConfigMaps in {}: {}; one release per namespace is expected",
                self.describe(),
                candidates
                    .iter()
                    .chain([&another])
                    .filter_map(|m| m.metadata.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let name = map.metadata.name.clone().unwrap_or_default();
        let text = map
            .data
            .as_ref()
            .and_then(|d| d.get(CONFIG_KEY))
            .cloned()
            .unwrap_or_default();
        let updated =
            edit_document(&text, change).with_context(|| format!("ConfigMap {}/{name}", self.namespace))?;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": map.metadata.resource_version},
            "data": {CONFIG_KEY: updated},
        });
        runtime
            .block_on(timed(maps.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )))
            .with_context(|| format!("updating ConfigMap {}/{name}", self.namespace))?;
        Ok((name, updated))
    }
}

/// Applies `change` to a targeting document and validates the result as a sensor would.
pub fn edit_document(
    text: &str,
    change: impl FnOnce(&mut serde_norway::Mapping) -> Result<()>,
) -> Result<String> {
    let mut root = match serde_norway::from_str::<serde_norway::Value>(text)
        .with_context(|| format!("{CONFIG_KEY} is not valid YAML"))?
    {
        serde_norway::Value::Null => serde_norway::Mapping::new(),
        serde_norway::Value::Mapping(m) => m,
        _ => bail!("{CONFIG_KEY} is not a mapping"),
    };
    change(&mut root)?;
    let updated = serde_norway::to_string(&root)?;
    let doc = podcap_format::targeting::TargetingDoc::parse(&updated)?;
    if let Some(expression) = &doc.bpf_override {
        check_filter(expression)?;
    }
    for (n, job) in doc.recordings.iter().enumerate() {
        if let Some(expression) = job.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            check_filter(expression).with_context(|| format!("recordings[{n}].filter"))?;
        }
    }
    Ok(updated)
}

/// Checks a tcpdump filter expression as the sensors will compile it, with the local
/// tcpdump's libpcap (`tcpdump -y EN10MB -d`: no capture, no privileges) so that the CLI
/// needs no C library of its own. Without tcpdump the sensors check it: a bad expression
/// shows on their `/readyz`, and the last good one stays in force.
fn check_filter(expression: &str) -> Result<()> {
    let output = std::process::Command::new("tcpdump")
        .args(["-y", "EN10MB", "-d", "--", expression])
        .stdin(std::process::Stdio::null())
        .output();
    match output {
        Err(_) => {
            eprintln!(
                "podcap: tcpdump is not installed here, so the sensors check the filter: a bad one shows on their /readyz and the last good one stays in force"
            );
            Ok(())
        }
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let message = String::from_utf8_lossy(&out.stderr);
            let reason = message
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("refused")
                .trim_start_matches("tcpdump: ");
            bail!("tap.bpfOverride {expression:?}: {reason}")
        }
    }
}

async fn client(options: &ClusterOptions) -> Result<(Client, String)> {
    let config_options = KubeConfigOptions {
        context: options.context.clone(),
        ..KubeConfigOptions::default()
    };
    let (config, context) = if let Some(path) = &options.kubeconfig {
        let kubeconfig =
            Kubeconfig::read_from(path).with_context(|| format!("--kubeconfig {}", path.display()))?;
        let context = context_name(&kubeconfig, options.context.as_deref());
        let config = Config::from_custom_kubeconfig(kubeconfig, &config_options)
            .await
            .with_context(|| format!("--kubeconfig {}", path.display()))?;
        (config, context)
    } else if options.context.is_some() {
        let kubeconfig = Kubeconfig::read().context("reading the kubeconfig for --context")?;
        let context = context_name(&kubeconfig, options.context.as_deref());
        (
            Config::from_kubeconfig(&config_options)
                .await
                .context("--context")?,
            context,
        )
    } else {
        let context = Kubeconfig::read().map_or_else(
            |_| "the in-cluster service account".into(),
            |k| context_name(&k, None),
        );
        let config = Config::infer().await.context(
            "no sensors given (--sensor URL) and no Kubernetes cluster found (KUBECONFIG, \
             ~/.kube/config, in-cluster service account)",
        )?;
        (config, context)
    };
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, context))
}

fn context_name(kubeconfig: &Kubeconfig, chosen: Option<&str>) -> String {
    let name = chosen
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_default();
    format!("context {name:?}")
}

async fn timed<T>(call: impl Future<Output = kube::Result<T>>) -> Result<T> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(result) => result.map_err(explain),
        Err(_) => bail!("the API server did not answer within {}s", API_TIMEOUT.as_secs()),
    }
}

/// kube's errors, said the way `kubectl` users know them.
fn explain(error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Api(status) => anyhow!("{} ({})", status.message, status.code),
        other => anyhow::Error::new(other),
    }
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
}

fn api_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("api"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_API_PORT)
}

enum TokenSource {
    Value(String),
    Secret { name: String, key: String },
}

/// What a command does with the sensors, and so which token it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reading: segments, snapshots, live, the settings.
    Read,
    /// Changing the settings.
    Admin,
}

impl Role {
    /// The pod annotation naming the Secret (key `token`) with this role's token.
    fn annotation(self) -> &'static str {
        match self {
            Self::Read => "podcap.io/token-secret",
            Self::Admin => "podcap.io/admin-token-secret",
        }
    }

    /// The environment variable older charts passed the token in.
    fn env(self) -> &'static str {
        match self {
            Self::Read => "PODCAP_TOKEN",
            Self::Admin => "PODCAP_ADMIN_TOKEN",
        }
    }

    fn token_name(self) -> &'static str {
        match self {
            Self::Read => "read token",
            Self::Admin => "admin token",
        }
    }

    fn chart_role(self) -> &'static str {
        match self {
            Self::Read => "userRoles.snapshot",
            Self::Admin => "userRoles.admin",
        }
    }
}

/// The pod annotation naming the Secret with the API's CA (`ca.crt`) when it serves TLS.
const TLS_ANNOTATION: &str = "podcap.io/tls-secret";

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Where the pod's token of `role` comes from: the Secret its annotation names, else
/// (older charts) the Secret or value of its environment variable.
fn token_reference(pod: &Pod, role: Role) -> Option<TokenSource> {
    if let Some(name) = annotation(pod, role.annotation()) {
        return Some(TokenSource::Secret {
            name,
            key: "token".into(),
        });
    }
    let var = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == role.env())?;
    if let Some(value) = &var.value {
        return Some(TokenSource::Value(value.clone()));
    }
    let reference = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some(TokenSource::Secret {
        name: reference.name.clone(),
        key: reference.key.clone(),
    })
}

/// Serves one sensor's loopback listener: each connection is one port-forward.
async fn forward(listener: TcpListener, pods: Api<Pod>, pod: String, port: u16, failure: TunnelFailure) {
    while let Ok((connection, _)) = listener.accept().await {
        tokio::spawn(forward_connection(
            connection,
            pods.clone(),
            pod.clone(),
            port,
            Arc::clone(&failure),
        ));
    }
}

async fn forward_connection(
    mut connection: TcpStream,
    pods: Api<Pod>,
    pod: String,
    port: u16,
    failure: TunnelFailure,
) {
    let fail = |reason: String| {
        *failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.clone());
        reason
    };
    let mut forwarder = match timed(pods.portforward(&pod, &[port])).await {
        Ok(forwarder) => forwarder,
        Err(e) => {
            let reason = fail(format!("port-forward to pod {pod} refused: {e:#}"));
            refuse(&mut connection, &reason).await;
            return;
        }
    };
    let (Some(stream), Some(error)) = (forwarder.take_stream(port), forwarder.take_error(port)) else {
        return;
    };
    let (mut pod_read, mut pod_write) = tokio::io::split(stream);
    let (mut local_read, mut local_write) = connection.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut local_read, &mut pod_write).await;
        let _ = pod_write.shutdown().await;
    });
    // Relayed by hand so that a forward that brought nothing back can still be answered.
    let mut relayed = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match pod_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if local_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                relayed += n as u64;
            }
        }
    }
    if relayed == 0 {
        let reason = match tokio::time::timeout(Duration::from_secs(1), error).await {
            Ok(Some(message)) => message,
            // The error channel can be lost when the API server closes first; the
            // forwarder's own error is the next best account.
            _ => match tokio::time::timeout(Duration::from_secs(1), forwarder.join()).await {
                Ok(Err(e)) => e.to_string(),
                _ => "the pod closed the connection".into(),
            },
        };
        let answer = bad_gateway(&fail(format!("port-forward to pod {pod}: {reason}")));
        let _ = local_write.write_all(answer.as_bytes()).await;
    }
    let _ = local_write.shutdown().await;
    upstream.abort();
}

/// Answers a local connection with a `502` whose JSON body names `reason`, as a sensor's
/// own errors are shaped.
async fn refuse(connection: &mut TcpStream, reason: &str) {
    let _ = connection.write_all(bad_gateway(reason).as_bytes()).await;
    let _ = connection.shutdown().await;
}

fn bad_gateway(reason: &str) -> String {
    let body = serde_json::json!({ "error": reason }).to_string();
    format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The `tap` keys `podcap tap` sets, in Kubeshark's terms.
#[derive(Clone, Debug, Default)]
pub struct TapScope {
    pub regex: String,
    pub namespaces: Vec<String>,
    pub excluded_namespaces: Vec<String>,
    pub filter: Option<String>,
}

impl TapScope {
    /// Writes the scope into a document's `tap` mapping, keeping every other key.
    pub fn apply(&self, root: &mut serde_norway::Mapping) -> Result<()> {
        use serde_norway::Value;
        let tap = root
            .entry(Value::from("tap"))
            .or_insert_with(|| Value::Mapping(serde_norway::Mapping::new()));
        let Value::Mapping(tap) = tap else {
            bail!("tap: is not a mapping");
        };
        let list =
            |items: &[String]| Value::Sequence(items.iter().map(|s| Value::from(s.as_str())).collect());
        tap.insert("regex".into(), Value::from(self.regex.as_str()));
        tap.insert("namespaces".into(), list(&self.namespaces));
        tap.insert("excludedNamespaces".into(), list(&self.excluded_namespaces));
        if let Some(filter) = &self.filter {
            tap.insert("bpfOverride".into(), Value::from(filter.as_str()));
        }
        Ok(())
    }

    /// One line saying what is now recorded.
    #[must_use]
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut text = if self.regex.is_empty() {
            "all pods".to_owned()
        } else {
            format!("pods matching {:?}", self.regex)
        };
        if self.namespaces.is_empty() {
            text.push_str(" in all namespaces");
        } else {
            let _ = write!(text, " in {}", self.namespaces.join(", "));
        }
        if !self.excluded_namespaces.is_empty() {
            let _ = write!(text, " except {}", self.excluded_namespaces.join(", "));
        }
        if let Some(filter) = self.filter.as_deref().filter(|f| !f.is_empty()) {
            let _ = write!(text, ", filter {filter:?}");
        }
        text
    }
}
