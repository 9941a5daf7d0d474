"""deploy/: the Prometheus config and rules checked and unit-tested with promtool, the rules held to
the metric contract in docs/METRICS.md, the Kubernetes manifests validated offline against the
Kubernetes 1.30 schemas (strict) and against each other, and the ConfigMap's qgate config served by
the real `qgate serve`.

promtool comes from Debian's `prometheus` package and kubernetes-validate from PyPI; both are
installed by scripts/install_deps.sh, so a missing one is a failure, not a skip.
"""
import copy
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
KUBE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
# Labels Prometheus adds to every scraped series (target labels), as opposed to qgate's own.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "node"}
SEVERITIES = {"critical", "warning", "info"}


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: scripts/install_deps.sh installs it (Debian package "
                    "`prometheus`)")
    return path


def run_promtool(*args, cwd=None):
    r = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert r.returncode == 0, f"promtool {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def alert_rules():
    rules = [r for g in load_yaml(PROM / "alerts.yml")["groups"] for r in g["rules"]]
    return [r for r in rules if "alert" in r]


def all_rules():
    return [r for g in load_yaml(PROM / "alerts.yml")["groups"] for r in g["rules"]]


# --------------------------------------------------------------------------------- Prometheus


def test_prometheus_config_is_valid():
    # Also checks the rule files it names (alerts.yml).
    run_promtool("check", "config", str(PROM / "prometheus.yml"))


def kubernetes_sd_supported(tmp):
    probe = pathlib.Path(tmp) / "probe.yml"
    probe.write_text("scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs:\n"
                     "      - role: pod\n")
    r = subprocess.run([promtool(), "check", "config", str(probe)], capture_output=True,
                       timeout=60)
    return r.returncode == 0


def test_prometheus_kubernetes_config_is_valid(tmp_path):
    path = PROM / "prometheus-kubernetes.yml"
    if kubernetes_sd_supported(tmp_path):
        run_promtool("check", "config", str(path))
        return
    # Debian's Prometheus is built without Kubernetes SD: check everything else with the SD block
    # swapped for a static target, and the SD block itself here.
    cfg = load_yaml(path)
    for job in cfg["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            assert sd["role"] == "pod", sd
            assert sd["namespaces"]["names"] == ["qgate"], sd
            job.setdefault("static_configs", []).append({"targets": ["127.0.0.1:8081"]})
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    run_promtool("check", "config", str(tmp_path / "prometheus.yml"))


def test_prometheus_kubernetes_config_keeps_the_qgate_admin_port():
    cfg = load_yaml(PROM / "prometheus-kubernetes.yml")
    (job,) = cfg["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"]
            if r.get("action") == "keep"}
    pod = deployment()["spec"]["template"]
    assert keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == \
        pod["metadata"]["labels"]["app.kubernetes.io/name"]
    assert keep[("__meta_kubernetes_pod_container_port_name",)] in container_ports(pod)
    assert keep[("__meta_kubernetes_pod_container_port_name",)] == "admin"


def test_rules_are_valid():
    run_promtool("check", "rules", str(PROM / "alerts.yml"))


def test_rule_unit_tests_pass():
    # rule_files in alerts_test.yml are relative to it.
    run_promtool("test", "rules", str(PROM / "alerts_test.yml"))


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = load_yaml(PROM / "alerts_test.yml")["tests"]
    firing, quiet = set(), set()
    for group in tests:
        for t in group.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names, "alerts.yml has no alerts"
    assert not names - firing, f"alerts without a firing test case: {sorted(names - firing)}"
    assert not names - quiet, f"alerts without a non-firing test case: {sorted(names - quiet)}"
    assert not (firing | quiet) - names, "tests for alerts that do not exist"


def test_alerts_carry_severity_and_what_to_do():
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert ann.get(key), f"{name}: annotation {key} missing"
        assert re.search(r"(POST|GET) /admin/\w+", ann["runbook"]), \
            f"{name}: the runbook names no admin call"
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name}: needs a `for` duration"


def documented_metrics():
    """{name: (type, set of labels)} from the tables of docs/METRICS.md."""
    text = (ROOT / "docs" / "METRICS.md").read_text()
    out = {}
    for m in re.finditer(r"^\|\s*`(qgate_\w+)`\s*\|\s*(\w+)\s*\|\s*([^|]*)\|", text, re.M):
        labels = {s.strip() for s in m.group(3).split(",")} - {"—", "-", ""}
        out[m.group(1)] = (m.group(2), labels)
    assert len(out) > 20, "docs/METRICS.md tables not found"
    return out


def series_labels(metric, documented):
    """The labels a series name may carry: histograms' _bucket/_sum/_count included."""
    if metric in documented:
        return documented[metric][1]
    for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
        base = metric[: -len(suffix)] if metric.endswith(suffix) else None
        if base in documented and documented[base][0] == "histogram":
            return documented[base][1] | extra
    return None


def test_rules_use_only_documented_metrics_and_labels():
    documented = documented_metrics()
    recorded = {r["record"] for r in all_rules() if "record" in r}
    all_labels = set().union(*(labels for _, labels in documented.values())) | {"le"}
    for rule in all_rules():
        expr = rule["expr"]
        for name in re.findall(r"\bqgate_\w+", expr):
            assert series_labels(name, documented) is not None, \
                f"{rule.get('alert') or rule.get('record')}: {name} is not in docs/METRICS.md"
        for name, selector in re.findall(r"\b(qgate_\w+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                assert label in series_labels(name, documented), f"{name} has no label {label}"
        for name in re.findall(r"\bqgate:[\w:]+", expr):
            assert name in recorded, f"{name} is used but never recorded"
        grouping = r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)"
        for group in re.findall(grouping, expr):
            for label in filter(None, (s.strip() for s in group.split(","))):
                assert label in all_labels, f"{rule}: grouping by undocumented label {label}"


def test_rule_test_inputs_follow_the_metric_contract():
    documented = documented_metrics()
    for group in load_yaml(PROM / "alerts_test.yml")["tests"]:
        for s in group["input_series"]:
            m = re.fullmatch(r"(\w+)\{(.*)\}", s["series"])
            assert m, s["series"]
            allowed = series_labels(m.group(1), documented)
            assert allowed is not None, f"{m.group(1)} is not in docs/METRICS.md"
            labels = set(re.findall(r'(\w+)="', m.group(2)))
            assert labels - TARGET_LABELS == allowed, \
                f"{s['series']}: labels {sorted(labels)}, documented {sorted(allowed)}"


# --------------------------------------------------------------------------------- Kubernetes


def manifests():
    """[(file name, document)] for every Kubernetes object under deploy/kubernetes."""
    out = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        with open(path) as f:
            out.extend((path.name, d) for d in yaml.safe_load_all(f) if d)
    return out


def objects(kind):
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


def deployment():
    (d,) = objects("Deployment").values()
    return d


def container_ports(pod_template):
    (c,) = pod_template["spec"]["containers"]
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def serve_config():
    (cm,) = objects("ConfigMap").values()
    (key,) = cm["data"].keys()
    return yaml.safe_load(cm["data"][key])


def test_manifests_validate_against_kubernetes_schemas():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate missing: scripts/install_deps.sh installs it")
    checked = 0
    for name, doc in manifests():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # no schema in kubernetes-validate: checked in test_servicemonitor_*
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{name}: {e.message}")
        assert doc["metadata"].get("namespace", "qgate") == "qgate", name
        checked += 1
    assert checked >= 8


def test_kustomization_lists_every_manifest():
    k = load_yaml(KUBE / "kustomization.yaml")
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(k["resources"]) == sorted(files)
    assert k["namespace"] == "qgate"


def test_deployment_references_exist():
    d = deployment()
    pod = d["spec"]["template"]
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert d["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    configmaps, secrets = objects("ConfigMap"), objects("Secret")
    pvcs = objects("PersistentVolumeClaim")
    volumes = {v["name"]: v for v in spec["volumes"]}
    for v in volumes.values():
        if "configMap" in v:
            assert v["configMap"]["name"] in configmaps, v
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in pvcs, v
        if "secret" in v:
            assert v["secret"]["secretName"] in secrets, v
    for m in c["volumeMounts"]:
        assert m["name"] in volumes, m
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            s = secrets[ref["name"]]
            assert ref["key"] in {**s.get("data", {}), **s.get("stringData", {})}, ref
    assert {"qgate-models", "qgate-state"} <= {
        v["persistentVolumeClaim"]["claimName"] for v in volumes.values()
        if "persistentVolumeClaim" in v}

    # --config names the ConfigMap's key where the config volume is mounted.
    args = c["args"]
    config_path = args[args.index("--config") + 1]
    (mount,) = [m for m in c["volumeMounts"] if "configMap" in volumes[m["name"]]]
    (cm,) = configmaps.values()
    assert config_path in {f"{mount['mountPath']}/{k}" for k in cm["data"]}
    assert args[0] == "serve"

    ports = container_ports(pod)
    assert ports == {"http": 8080, "admin": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, \
        "model loading needs minutes"

    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    for key in ("cpu", "memory"):
        assert key in c["resources"]["requests"] and key in c["resources"]["limits"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_services_select_the_pods_and_name_their_ports():
    pod = deployment()["spec"]["template"]
    ports = container_ports(pod)
    services = objects("Service")
    assert {"http", "admin"} == {p["name"] for s in services.values() for p in s["spec"]["ports"]}
    for s in services.values():
        assert s["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), s
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in ports, p
            assert p["port"] == ports[p["targetPort"]], p
    # The admin port is never on the API's Service.
    assert [p["name"] for p in services["qgate"]["spec"]["ports"]] == ["http"]


def test_servicemonitor_scrapes_metrics_on_the_admin_port():
    monitors = [d for _, d in manifests() if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert len(monitors) == 1
    (m,) = monitors
    assert m["apiVersion"] == "monitoring.coreos.com/v1"
    assert m["kind"] == "ServiceMonitor"
    assert m["metadata"]["name"] and m["metadata"]["namespace"] == "qgate"
    assert set(m["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert m["spec"]["namespaceSelector"] == {"matchNames": ["qgate"]}
    selected = [s for s in objects("Service").values()
                if m["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == ["qgate-admin"]
    (endpoint,) = m["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    assert endpoint["port"] == "admin"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"


def test_networkpolicy_ports_exist():
    ports = container_ports(deployment()["spec"]["template"])
    (np,) = objects("NetworkPolicy").values()
    named = [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]]
    assert sorted(named) == sorted(ports)


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def test_configmap_config_fits_the_deployment():
    cfg = serve_config()
    pod = deployment()["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    ports = container_ports(pod)
    assert cfg["listen"]["api"] == {"host": "0.0.0.0", "port": ports["http"]}
    assert cfg["listen"]["admin"] == {"host": "0.0.0.0", "port": ports["admin"]}
    env = {e["name"] for e in c.get("env", [])}
    assert cfg["admin_token"]["env"] in env

    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claim_of = {name: volumes[name].get("persistentVolumeClaim", {}).get("claimName")
                for name in mounts}
    state_mount = next(m for n, m in mounts.items() if claim_of[n] == "qgate-state")
    models_mount = next(m for n, m in mounts.items() if claim_of[n] == "qgate-models")
    assert pathlib.PurePosixPath(cfg["state_dir"]).is_relative_to(state_mount["mountPath"])
    assert not state_mount.get("readOnly", False)
    assert cfg["models_dir"] == models_mount["mountPath"]

    grace = duration_seconds(cfg["http"]["shutdown_grace"])
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace + pre_stop

    names = {v["name"] for v in cfg["variants"]}
    for v in cfg["variants"]:
        assert re.fullmatch(r"cpu|cuda|cuda:\d+", v["device"]), v
        assert not pathlib.PurePosixPath(v["model"]).is_absolute(), "resolved against models_dir"
    for r in cfg["routes"]:
        assert r["baseline"] in names and set(r["weights"]) <= names, r


# ------------------------------------------------------------------------- the real qgate serve


def qgate_binary():
    dirs = [os.environ["QGATE_BUILD_DIR"]] if os.environ.get("QGATE_BUILD_DIR") else \
        [ROOT / "build", ROOT / "build-lead"]
    for d in dirs:
        exe = pathlib.Path(d) / "gateway" / "qgate"
        if os.access(exe, os.X_OK):
            return exe
    return None


MODELS = pathlib.Path(os.environ.get("QGATE_MODEL_DIR", ROOT / "models"))
TOKEN = "deploy-test-token"


def http_get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def configmap_server():
    """`qgate serve` with the ConfigMap's config, changed only where a test machine must differ:
    listeners on 127.0.0.1 port 0, device cpu, the local models and a temporary state_dir."""
    exe = qgate_binary()
    cfg = serve_config()
    missing = [v["model"] for v in cfg["variants"]
               if not (MODELS / v["model"] / "config.json").is_file()]
    if exe is None or missing:
        pytest.skip("needs the built qgate and the variants from scripts/prepare_variants.sh "
                    f"(qgate: {exe}, missing: {missing})")
    local = copy.deepcopy(cfg)
    local["listen"] = {"api": {"host": "127.0.0.1", "port": 0},
                       "admin": {"host": "127.0.0.1", "port": 0}}
    for v in local["variants"]:
        v["device"] = "cpu"
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        local["models_dir"] = str(MODELS)
        local["state_dir"] = str(d / "state")
        (d / "config.yaml").write_text(yaml.safe_dump(local))
        ready = d / "ready.json"
        env = dict(os.environ, **{cfg["admin_token"]["env"]: TOKEN})
        with open(d / "serve.log", "wb") as log:
            proc = subprocess.Popen([str(exe), "serve", "--config", str(d / "config.yaml"),
                                     "--ready-file", str(ready)],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 180
                while not ready.exists():
                    assert proc.poll() is None, "qgate serve (ConfigMap config) exited before " \
                        "it was ready:\n" + (d / "serve.log").read_text()
                    assert time.monotonic() < deadline, "qgate serve did not become ready"
                    time.sleep(0.05)
                ports = json.loads(ready.read_text())
                yield {"api": f"http://127.0.0.1:{ports['api_port']}",
                       "admin": f"http://127.0.0.1:{ports['admin_port']}",
                       "config": cfg}
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0, (d / "serve.log").read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def test_configmap_config_is_served_and_probes_answer(configmap_server):
    api = configmap_server["api"]
    assert http_get(api + "/healthz")[0] == 200
    assert http_get(api + "/readyz")[0] == 200
    status, body = http_get(configmap_server["admin"] + "/admin/routes", TOKEN)
    assert status == 200, body
    routes = {r["model"]: r for r in json.loads(body)["routes"]}
    for r in configmap_server["config"]["routes"]:
        assert routes[r["model"]]["baseline"] == r["baseline"]


def parse_exposition(text):
    """[(name, {label: value}, value)] from Prometheus text format."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?", line)
        assert m, f"unparsable exposition line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def test_metrics_on_the_admin_port_feed_the_alerts(configmap_server):
    # What the ServiceMonitor scrapes, and the series the alerts join on, read at scrape time (so
    # present before any traffic).
    status, body = http_get(configmap_server["admin"] + "/metrics")
    assert status == 200, body[:500]
    samples = parse_exposition(body)
    cfg = configmap_server["config"]
    baseline = {(l["route"], l["variant"]): v for n, l, v in samples if n == "qgate_route_baseline"}
    # 1 on each route's baseline; the other variants have 0 or no series (the rules accept both).
    expected = {(r["model"], r["baseline"]) for r in cfg["routes"]}
    if cfg.get("variant_routes", True):
        expected |= {(v["name"], v["name"]) for v in cfg["variants"]}
    assert {k for k, v in baseline.items() if v == 1.0} == expected
    assert all(v in (0.0, 1.0) for v in baseline.values()), baseline
    ejected = {l["variant"]: v for n, l, v in samples
               if n == "qgate_variant_state" and l.get("state") == "ejected"}
    assert ejected == {v["name"]: 0.0 for v in cfg["variants"]}
