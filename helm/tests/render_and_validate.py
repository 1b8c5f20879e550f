"""Chart tests (run by `cargo xtask test`): render helm/podcap for the default values and
for several combinations with the Helm v4 library (PyPI `helm-python-sdk`), lint it
strictly, and validate every rendered object against the Kubernetes JSON schemas offline
(PyPI `kubernetes-validate`, strict: unknown fields are errors). No cluster is needed.
"""
import sys
from pathlib import Path

import helm_python
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parent.parent / "podcap"
# The oldest and the newest Kubernetes the schemas cover.
KUBERNETES = ["1.25.0", "1.37.0"]
# Custom resources whose schemas kubernetes-validate does not carry.
NOT_IN_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

CASES = {
    "defaults": {},
    "pvc, existing secret, service monitor": {
        "persistence": {"type": "persistentVolumeClaim", "existingClaim": "podcap-data"},
        "api": {"existingSecret": "podcap-api", "existingSecretKey": "bearer",
                "tls": {"enabled": True, "existingSecret": "podcap-cert"}},
        "serviceMonitor": {"enabled": True},
    },
    "no tls, no min-free, unconfined": {
        "api": {"tls": {"enabled": False}},
        "pcapdump": {"minFree": ""},
        "podSecurity": {"seccompProfile": ""},
        "sensor": {"bufferedWrites": True, "tlsSecrets": True},
    },
    "emptyDir, privileged, targeting": {
        "persistence": {"type": "emptyDir"},
        "podSecurity": {"privileged": True},
        "tap": {"regex": "^web-", "namespaces": ["shop", "blog"], "excludedNamespaces": ["kube-system"],
                "bpfOverride": "tcp port 80"},
        "pcapdump": {"maxSize": "2GiB", "maxTime": "30m"},
        "snapshots": {"maxSize": "5GB"},
        "recordings": {"maxSize": "20GB", "jobs": [
            {"name": "nightly-web", "filter": "tcp port 443", "start": "02:00", "days": 7,
             "duration": "1h", "expire": "3d"}]},
    },
    "placement and resources": {
        "tolerations": [],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "priorityClassName": "system-node-critical",
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "api": {"token": "s3cret"},
    },
    "stopped": {"tap": {"stopped": True}, "pcapdump": {"enabled": False}},
    "archive to an S3-compatible server": {
        "archive": {"url": "s3://podcap-archive/prod", "endpoint": "http://minio.storage:9000",
                    "region": "eu-west-1", "existingSecret": "podcap-s3", "segments": True,
                    "rate": "20MB/s", "cluster": "prod-eu", "drain": "15s"},
        "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "podcap@p.iam.gserviceaccount.com"}},
    },
    "Kubeshark's tap.snapshots.cloud keys": {
        "tap": {"snapshots": {"cloud": {"provider": "s3", "prefix": "snapshots",
                                        "s3": {"bucket": "ks-bucket", "region": "us-east-2",
                                               "accessKey": "AKIDEXAMPLE", "secretKey": "wJalr",
                                               "roleArn": "arn:aws:iam::111122223333:role/podcap"}}}},
    },
    "emptyDir sized by a Kubernetes quantity": {
        "persistence": {"type": "emptyDir"},
        "pcapdump": {"maxSize": "2Gi"},
    },
    "standard chart knobs": {
        "podLabels": {"team": "net"},
        "podAnnotations": {"example.com/owner": "sre"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In",
                                                          "values": ["linux"]}]}]}}},
        "imagePullSecrets": [{"name": "registry"}],
        "updateStrategy": {"maxUnavailable": "25%"},
    },
    "a current Kubeshark values file": {
        "tap": {"regex": ".*", "capture": {"stopped": False, "stopAfter": "5m", "dbMaxSize": "",
                                           "raw": {"enabled": True, "storageSize": "2Gi"}},
                "persistentStorage": False, "storageLimit": "5Gi", "storageClass": "standard",
                "securityContext": {"privileged": True}, "misc": {"jsonTTL": "5m"}},
        "pcapdump": {"enabled": True, "timeInterval": "1m", "maxTime": "1h", "time": "time"},
        "persistence": {"type": "emptyDir"},
    },
    "names overridden, an existing service account": {
        "nameOverride": "netrec",
        "serviceAccount": {"create": False, "name": "node-capture"},
    },
    "user roles": {
        "userRoles": {
            "snapshot": {"create": True, "subjects": [{"kind": "User", "name": "dev@example.com",
                                                       "apiGroup": "rbac.authorization.k8s.io"}]},
            "admin": {"create": True, "subjects": [{"kind": "Group", "name": "sre",
                                                    "apiGroup": "rbac.authorization.k8s.io"}]},
            "tap": {"create": True},
        },
    },
}

# Values the chart's values.schema.json refuses at install/template time, and what the
# refusal names. (A tcpdump filter's syntax, tap.bpfOverride, needs libpcap: the sensor
# refuses it at start, naming the key; a schema cannot.)
REFUSED = {
    "namespaces as a string (--set tap.namespaces=shop)": ({"tap": {"namespaces": "shop"}}, "/tap/namespaces"),
    "a regex that does not compile": ({"tap": {"regex": "[unclosed"}}, "/tap/regex"),
    "a size without a unit": ({"pcapdump": {"maxSize": "500"}}, "/pcapdump/maxSize"),
    "a duration in words": ({"pcapdump": {"maxTime": "one hour"}}, "/pcapdump/maxTime"),
    "a segment time in words": ({"pcapdump": {"timeInterval": "a minute"}}, "/pcapdump/timeInterval"),
    "a port out of range": ({"sensor": {"port": 70000}}, "/sensor/port"),
    "an unknown volume type": ({"persistence": {"type": "nfs"}}, "/persistence/type"),
    "an archive URL of no store": ({"archive": {"url": "ftp://bucket/x"}}, "/archive/url"),
    "a namespace name Kubernetes refuses": ({"tap": {"namespaces": ["Shop_1"]}}, "/tap/namespaces/0"),
    # Else the chart would bind its ClusterRole to the namespace's default account.
    "no service account made and none named": ({"serviceAccount": {"create": False}}, "/serviceAccount"),
}

failures = []


def check(case, condition, what):
    if not condition:
        failures.append(f"{case}: {what}")


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with the same key twice (Kubernetes would take
    the last one silently; kubectl and strict parsers complain)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(duplicates)}",
                                                    node.start_mark)
        return super().construct_mapping(node, deep)


def objects(manifests):
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.load_all(text, Loader=UniqueKeyLoader):
            if doc:
                yield path, doc


chart = helm_python.Chart.load(str(CHART))
for case, (values, named) in REFUSED.items():
    try:
        chart.render(values, name="podcap", namespace="podcap", is_install=True)
        failures.append(f"refused: {case}: rendered")
    except Exception as e:  # helm_python raises its own error type with Helm's message
        check(f"refused: {case}", named in str(e), f"the refusal names {named}: {e}")
print(f"chart: {len(REFUSED)} bad value sets refused by values.schema.json, each naming its key")
for case, values in CASES.items():
    report = helm_python.lint(str(CHART), values, strict=True, namespace="podcap")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    check(case, not problems, f"helm lint --strict: {problems}")
    manifests = chart.render(values, name="podcap", namespace="podcap", is_install=True)
    kinds = {}
    for path, obj in objects(manifests):
        kinds[obj["kind"]] = obj
        if (obj["apiVersion"], obj["kind"]) in NOT_IN_SCHEMAS:
            continue
        for version in KUBERNETES:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{case}: {path}: {obj['kind']} on {version}: {e.message} at {list(e.path)}")
    ds = kinds.get("DaemonSet")
    check(case, ds is not None, "no DaemonSet")
    if ds is None:
        continue
    pod = ds["spec"]["template"]["spec"]
    sensor = pod["containers"][0]
    check(case, pod.get("hostNetwork") and pod.get("hostPID"), "hostNetwork and hostPID")
    check(case, "--node=$(NODE_NAME)" in sensor["args"], "sensor runs in Kubernetes mode")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in sensor["volumeMounts"]}
    for path in ["/sys/fs/cgroup", "/data", "/etc/podcap", "/var/run/podcap/token", "/var/run/podcap/admin-token"]:
        check(case, path in mounts, f"mount {path}")
    # Nothing the sensor does not use: no bpffs (nothing is pinned), no host /proc mount
    # (hostPID gives /proc), no token in the environment.
    for path in ["/sys/fs/bpf", "/host/proc"]:
        check(case, path not in mounts, f"{path} is mounted but unused")
    check(case, all(e["name"] not in ("PODCAP_TOKEN", "PODCAP_ADMIN_TOKEN") for e in sensor.get("env", [])),
          "tokens come from files, not the environment")
    check(case, all(m.get("readOnly") for p, m in mounts.items() if p != "/data"), "only /data is writable")
    check(case, "--token-file=/var/run/podcap/token/token" in sensor["args"]
          and "--admin-token-file=/var/run/podcap/admin-token/token" in sensor["args"], "both token files")
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    token_secret = volumes["token"]["secret"]
    admin_secret = volumes["admin-token"]["secret"]
    check(case, annotations["podcap.io/token-secret"] == token_secret["secretName"], "the CLI finds the read token")
    check(case, annotations["podcap.io/admin-token-secret"] == admin_secret["secretName"], "the CLI finds the admin token")
    check(case, token_secret["secretName"] != admin_secret["secretName"], "two tokens, two Secrets")
    tls = values.get("api", {}).get("tls", {}).get("enabled", True)
    probe = sensor["readinessProbe"]["httpGet"]
    check(case, (probe.get("scheme") == "HTTPS") == tls, f"probe scheme {probe}")
    check(case, ("--tls-cert=/var/run/podcap/tls/tls.crt" in sensor["args"]) == tls, "TLS flags")
    check(case, ("podcap.io/tls-secret" in annotations) == tls, "the CLI finds the CA")
    check(case, sensor["securityContext"].get("readOnlyRootFilesystem") is True, "read-only root")
    seccomp = values.get("podSecurity", {}).get("seccompProfile", "RuntimeDefault")
    check(case, pod.get("securityContext", {}).get("seccompProfile", {}).get("type") == (seccomp or None),
          f"seccomp {pod.get('securityContext')}")
    snapshot_budget = values.get("snapshots", {}).get("maxSize", "1GB")
    check(case, f"--snapshot-max-size={snapshot_budget}" in sensor["args"], f"snapshot budget {sensor['args']}")
    recordings_budget = values.get("recordings", {}).get("maxSize", "1GB")
    check(case, f"--recordings-max-size={recordings_budget}" in sensor["args"], f"recordings budget {sensor['args']}")
    buffered = values.get("sensor", {}).get("bufferedWrites", False)
    check(case, ("--buffered-writes" in sensor["args"]) == buffered, f"buffered writes {sensor['args']}")
    interval = values.get("pcapdump", {}).get("timeInterval", "")
    check(case, (f"--segment-time={interval}" in sensor["args"]) == bool(interval)
          and (interval or not any(a.startswith("--segment-time") for a in sensor["args"])),
          f"segment time from pcapdump.timeInterval {sensor['args']}")
    secrets = values.get("sensor", {}).get("tlsSecrets", False)
    check(case, ("--tls-secrets" in sensor["args"]) == secrets, f"TLS secrets off by default {sensor['args']}")
    added = sensor["securityContext"].get("capabilities", {}).get("add", [])
    check(case, ("SYS_PTRACE" in added) == secrets, f"SYS_PTRACE only to read TLS secrets: {added}")
    if values.get("pcapdump", {}).get("maxSize") == "2Gi":
        limit = volumes["data"].get("emptyDir", {}).get("sizeLimit")
        check(case, limit == "2516582Ki", f"emptyDir sizeLimit 2Gi plus 20 %: {limit}")
    template = ds["spec"]["template"]["metadata"]
    for key, value in values.get("podLabels", {}).items():
        check(case, template["labels"].get(key) == value, f"pod label {key}")
    for key, value in values.get("podAnnotations", {}).items():
        check(case, template["annotations"].get(key) == value, f"pod annotation {key}")
    check(case, pod.get("affinity") == values.get("affinity"), f"affinity {pod.get('affinity')}")
    check(case, pod.get("imagePullSecrets") == values.get("imagePullSecrets"), "imagePullSecrets")
    unavailable = values.get("updateStrategy", {}).get("maxUnavailable", 1)
    check(case, ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == unavailable,
          f"maxUnavailable {ds['spec']['updateStrategy']}")
    config = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
    raw = values.get("tap", {}).get("capture", {}).get("raw", {})
    want_size = raw.get("storageSize", values.get("pcapdump", {}).get("maxSize", "500MB"))
    check(case, config["pcapdump"]["maxSize"] == want_size, f"store size {config['pcapdump']}")
    if "storageSize" in raw and values.get("persistence", {}).get("type") == "emptyDir":
        limit = volumes["data"].get("emptyDir", {}).get("sizeLimit")
        check(case, limit == "2516582Ki", f"emptyDir sizeLimit from tap.capture.raw.storageSize: {limit}")
    # The sensor reads the rendered file as a Kubeshark document (format/src/targeting.rs).
    check(case, config["tap"]["stopped"] == (values.get("tap", {}).get("stopped", False)
                                              or values.get("tap", {}).get("capture", {}).get("stopped", False)),
          f"stopped {config['tap']}")
    test_pods = [o for o in kinds.values() if o["kind"] == "Pod"]
    check(case, len(test_pods) == 1 and test_pods[0]["metadata"]["annotations"].get("helm.sh/hook") == "test",
          "a helm test pod")
    if test_pods:
        url = test_pods[0]["spec"]["containers"][0]["args"][-1]
        check(case, url.endswith("/readyz") and url.startswith("https://" if tls else "http://")
              and ".podcap.svc:" in url, f"the test asks /readyz through the Service: {url}")
    min_free = values.get("pcapdump", {}).get("minFree", "15%")
    check(case, (f"--min-free={min_free}" in sensor["args"]) == bool(min_free), f"min-free {sensor['args']}")
    role = kinds["ClusterRole"]
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    check(case, verbs == {"get", "list", "watch"}, f"ClusterRole verbs {verbs}")
    config = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
    check(case, set(config) == {"tap", "pcapdump", "recordings"}, f"config keys {set(config)}")
    jobs = values.get("recordings", {}).get("jobs", [])
    check(case, config["recordings"] == jobs, f"recording jobs {config['recordings']}")
    token_ref = token_secret["secretName"], token_secret["items"][0]["key"]
    secrets = {o["metadata"]["name"]: o for _, o in objects(manifests) if o["kind"] == "Secret"}
    security = sensor["securityContext"]
    if case == "defaults":
        check(case, "hostPath" in volumes["data"], "hostPath data by default")
        default_limit = chart.render({"persistence": {"type": "emptyDir"}}, name="podcap", namespace="podcap")
        check(case, "sizeLimit: 600000k" in "".join(default_limit.values()), "500MB plus 20 %")
        check(case, pod["tolerations"] == [{"operator": "Exists"}], "tolerates every taint")
        check(case, security["capabilities"]["drop"] == ["ALL"] and not security["privileged"], "least privilege")
        check(case, token_ref[0] in secrets and admin_secret["secretName"] in secrets, "generated tokens")
        generated = secrets["podcap-tls"]["data"]
        check(case, {"tls.crt", "tls.key", "ca.crt"} <= set(generated), "a generated certificate and its CA")
        check(case, config["pcapdump"] == {"enabled": True, "maxTime": "1h", "maxSize": "500MB"}, f"{config}")
    if case == "pvc, existing secret, service monitor":
        check(case, volumes["data"]["persistentVolumeClaim"]["claimName"] == "podcap-data", "claim")
        check(case, "--data-dir=/data/$(NODE_NAME)" in sensor["args"], "a directory per node on shared storage")
        check(case, "podcap-api" not in secrets and token_ref == ("podcap-api", "bearer"), f"{token_ref}")
        check(case, set(secrets) == {"podcap-admin-token"}, f"only the admin token is made: {sorted(secrets)}")
        monitor = kinds.get("ServiceMonitor", {"spec": {"endpoints": [{}]}})["spec"]["endpoints"][0]
        check(case, monitor.get("scheme") == "https"
              and monitor["tlsConfig"]["ca"]["secret"] == {"name": "podcap-cert", "key": "ca.crt"}, f"{monitor}")
    if case == "emptyDir, privileged, targeting":
        limit = volumes["data"]["emptyDir"]["sizeLimit"]
        check(case, limit == "2516582Ki", f"emptyDir sizeLimit {limit}: 2GiB plus 20 %")
        check(case, security["privileged"] is True, "privileged")
        check(case, config["tap"]["regex"] == "^web-" and config["tap"]["namespaces"] == ["shop", "blog"], f"{config}")
        check(case, config["tap"]["bpfOverride"] == "tcp port 80", f"{config}")
    if case == "placement and resources":
        check(case, "tolerations" not in pod and pod["nodeSelector"] == {"kubernetes.io/os": "linux"}, "placement")
        check(case, pod["priorityClassName"] == "system-node-critical", "priority class")
        check(case, secrets["podcap-token"]["data"]["token"] == "czNjcmV0", "the given token")
    env = {e["name"]: e.get("value") for e in sensor.get("env", [])}
    # The CLI finds the sensors by part-of and component, whatever the names.
    check(case, all(o["metadata"]["labels"].get("app.kubernetes.io/part-of") == "podcap"
                    for _, o in objects(manifests) if o["kind"] != "Pod"), "every object is part-of podcap")
    template_labels = ds["spec"]["template"]["metadata"]["labels"]
    check(case, template_labels.get("app.kubernetes.io/part-of") == "podcap"
          and template_labels.get("app.kubernetes.io/component") == "sensor", f"sensor pod labels {template_labels}")
    account_name = pod["serviceAccountName"]
    subjects = kinds["ClusterRoleBinding"]["subjects"]
    check(case, subjects[0]["name"] == account_name, f"the binding names the pods' account {subjects}")
    creates = values.get("serviceAccount", {}).get("create", True)
    check(case, ("ServiceAccount" in kinds) == creates, "a ServiceAccount only when asked")
    if case == "names overridden, an existing service account":
        check(case, ds["metadata"]["name"] == "podcap-netrec", f"name {ds['metadata']['name']}")
        check(case, template_labels.get("app.kubernetes.io/name") == "netrec", f"{template_labels}")
        check(case, account_name == "node-capture", f"serviceAccountName {account_name}")
        continue
    check(case, account_name == ds["metadata"]["name"], f"the chart's own account {account_name}")
    account = kinds["ServiceAccount"]["metadata"].get("annotations", {})
    if case == "defaults":
        check(case, not any(a.startswith("--archive") for a in sensor["args"]), "no archive by default")
    if case == "archive to an S3-compatible server":
        for flag in ["--archive=s3://podcap-archive/prod", "--archive-segments", "--archive-rate=20MB/s",
                     "--archive-cluster=prod-eu", "--archive-drain=15s"]:
            check(case, flag in sensor["args"], f"{flag} in {sensor['args']}")
        check(case, env.get("AWS_ENDPOINT_URL") == "http://minio.storage:9000" and env.get("AWS_REGION") == "eu-west-1",
              f"endpoint and region {env}")
        check(case, sensor.get("envFrom") == [{"secretRef": {"name": "podcap-s3"}}], f"credentials {sensor.get('envFrom')}")
        check(case, account == {"iam.gke.io/gcp-service-account": "podcap@p.iam.gserviceaccount.com"}, f"{account}")
    if case == "Kubeshark's tap.snapshots.cloud keys":
        check(case, "--archive=s3://ks-bucket/snapshots" in sensor["args"], f"{sensor['args']}")
        check(case, "--archive-segments" not in sensor["args"], "Kubeshark uploads snapshots only")
        check(case, env.get("AWS_REGION") == "us-east-2", f"region {env}")
        keys = secrets.get("podcap-archive-keys", {}).get("data", {})
        check(case, set(keys) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, f"static keys as a Secret: {keys}")
        check(case, sensor.get("envFrom") == [{"secretRef": {"name": "podcap-archive-keys"}}], f"{sensor.get('envFrom')}")
        check(case, account.get("eks.amazonaws.com/role-arn") == "arn:aws:iam::111122223333:role/podcap", f"IRSA {account}")
        check(case, set(config["tap"]) == {"regex", "namespaces", "excludedNamespaces", "bpfOverride", "stopped"},
              f"the archive's keys stay out of the targeting file: {config['tap']}")
    if case == "stopped":
        check(case, config["tap"]["stopped"] is True and config["pcapdump"]["enabled"] is False, f"{config}")
    roles = {o["metadata"]["name"]: o for _, o in objects(manifests) if o["kind"] == "Role"}
    bindings = [o for _, o in objects(manifests) if o["kind"] == "RoleBinding"]
    if case == "user roles":
        tap_rules = roles.get("podcap-tap", {}).get("rules", [])
        check(case, {"podcap-snapshot", "podcap-admin", "podcap-tap"} <= set(roles), f"{sorted(roles)}")
        secret_names = lambda role: [n for r in roles.get(role, {}).get("rules", []) if r["resources"] == ["secrets"]
                                     for n in r.get("resourceNames", [])]
        check(case, secret_names("podcap-snapshot") == ["podcap-token", "podcap-tls"],
              f"the snapshot role reads the read token and the CA only: {secret_names('podcap-snapshot')}")
        check(case, "podcap-admin-token" in secret_names("podcap-admin"), "the admin role reads the admin token")
        check(case, any(r.get("resourceNames") == ["podcap-config"] and "patch" in r["verbs"] for r in tap_rules),
              f"tap may patch only the ConfigMap: {tap_rules}")
        check(case, all(not set(r["verbs"]) & {"create", "delete", "patch", "update"} or r.get("resourceNames")
                        or r["resources"] == ["pods/portforward"]
                        for o in roles.values() for r in o.get("rules", [])), "nothing else writable")
        check(case, [b["roleRef"]["name"] for b in bindings] == ["podcap-snapshot", "podcap-admin"],
              f"only the Roles with subjects are bound: {[b['roleRef']['name'] for b in bindings]}")
    else:
        check(case, not roles and not bindings, "user Roles are opt-in")
    print(f"chart: {case}: {len(list(objects(manifests)))} objects rendered and validated")

# Bad values are refused with a message naming the value.
for bad, needle in [({"persistence": {"type": "nfs"}}, "persistence.type"),
                    ({"persistence": {"type": "persistentVolumeClaim"}}, "persistence.existingClaim"),
                    ({"persistence": {"type": "emptyDir"}, "pcapdump": {"maxSize": "lots"}}, "pcapdump.maxSize"),
                    ({"tap": {"snapshots": {"cloud": {"provider": "ftp"}}}}, "tap.snapshots.cloud.provider"),
                    ({"tap": {"snapshots": {"cloud": {"provider": "s3"}}}}, "tap.snapshots.cloud.s3.bucket"),
                    ({"tap": {"persistentStorage": True}}, "tap.persistentStorage")]:
    try:
        chart.render(bad, name="podcap", namespace="podcap")
        failures.append(f"{bad}: rendered")
    except helm_python.HelmError as e:
        # Named by the schema (a JSON pointer) or by the template's own check.
        named = needle in str(e) or "/" + needle.replace(".", "/") in str(e)
        check(str(bad), named, f"error does not name {needle}: {e}")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"chart: {len(CASES)} value sets rendered, linted and validated against Kubernetes {' and '.join(KUBERNETES)}")
