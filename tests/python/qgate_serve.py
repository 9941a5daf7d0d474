"""Helpers shared by the tests that run the real `qgate serve` and a real Prometheus scraping it.

Not a test module: test_metrics_live.py and test_dashboard_prometheus.py import it (pytest puts
this folder on sys.path). Everything binds port 0 and reads back the port it got: qgate through
--ready-file, Prometheus from the kernel's socket table.
"""
import json
import math
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.environ.get("QGATE_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("QGATE_BUILD_DIR", os.path.join(ROOT, "build"))
QGATE = os.path.join(BUILD, "gateway", "qgate")
MODELS = os.environ.get("QGATE_MODEL_DIR", os.path.join(ROOT, "models"))
EVAL_TEXT = os.path.join(MODELS, "corpus", "eval.txt")
VARIANTS = {
    "smollm2-fp16": "variants/smollm2-fp16",
    "smollm2-gptq": "variants/smollm2-gptq-4bit",
    "smollm2-awq": "variants/smollm2-awq-4bit",
}
BASELINE = "smollm2-fp16"
TOKEN = "e2e-admin-token"
PROMETHEUS = os.environ.get("QGATE_PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("QGATE_PROMTOOL", "/usr/bin/promtool")
METRICS_DOC = os.path.join(ROOT, "docs", "METRICS.md")

# The e2e test's configuration; EXTRA is replaced by test-specific top-level keys.
CONFIG = """
listen:
  api: {host: 127.0.0.1, port: 0}
  admin: {host: 127.0.0.1, port: 0}
admin_token: {env: QGATE_E2E_TOKEN}
state_dir: STATE_DIR
models_dir: MODELS_DIR
http:
  first_byte_timeout: 5s
  shutdown_grace: 5s
HTTP_EXTRA
variants:
  - {name: smollm2-fp16, model: variants/smollm2-fp16, worker: &w {threads: 1, max_running: 8, max_batched_tokens: 256, kv_cache_tokens: 4096, max_queued: 64, max_context_tokens: 1024}}
  - {name: smollm2-gptq, model: variants/smollm2-gptq-4bit, worker: *w}
  - {name: smollm2-awq, model: variants/smollm2-awq-4bit, worker: *w}
routes:
  - model: smollm2
    weights: {smollm2-fp16: 50, smollm2-gptq: 30, smollm2-awq: 20}
    baseline: smollm2-fp16
    fallback: [smollm2-fp16]
    sticky: {header: x-session-id, user: true}
    override_header: x-qgate-variant
variant_routes: true
health:
  probe_interval: 500ms
  probe_timeout: 3s
  consecutive_failures: 3
  base_ejection: 1s
  max_ejection: 2s
  half_open_successes: 1
  half_open_max_trials: 1
retry:
  max_attempts: 3
  budget_ratio: 1.0
  min_retries: 16
EXTRA
"""


def missing_prerequisites(need_prometheus=False):
    """Why a live test cannot run here, or None."""
    if not all(os.path.isfile(os.path.join(MODELS, p, "config.json")) for p in VARIANTS.values()):
        return "needs the variants from scripts/prepare_variants.sh under " + MODELS
    if not os.access(QGATE, os.X_OK):
        return "needs the built qgate at " + QGATE
    if need_prometheus and not os.access(PROMETHEUS, os.X_OK):
        return "needs the prometheus server (Debian package prometheus) at " + PROMETHEUS
    return None


def run_eval(json_path, max_tokens=64, context=32):
    """Scores the three variants against the baseline with the real `qgate eval` on the first
    `max_tokens` tokens of the eval corpus (seconds with these sizes) and writes its JSON."""
    cmd = [QGATE, "eval", "--baseline", os.path.join(MODELS, VARIANTS[BASELINE]), "--text", EVAL_TEXT,
           "--context", str(context), "--stride", str(context), "--max-tokens", str(max_tokens),
           "--json", json_path, "--threads", "1"]
    for path in VARIANTS.values():
        cmd += ["--model", os.path.join(MODELS, path)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)


class Server:
    """A `qgate serve` process in `state_dir` (config, state, log, ready file all live there)."""

    def __init__(self, state_dir, extra_config="", http_extra=""):
        self.state_dir = state_dir
        self.extra_config = extra_config
        self.http_extra = http_extra  # more keys of the http: block, indented by two spaces
        self.proc = None

    def start(self):
        import openai  # the callers import-or-skip it
        cfg = os.path.join(self.state_dir, "config.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG.replace("STATE_DIR", os.path.join(self.state_dir, "state"))
                    .replace("MODELS_DIR", MODELS).replace("HTTP_EXTRA", self.http_extra)
                    .replace("EXTRA", self.extra_config))
        ready = os.path.join(self.state_dir, "ready.json")
        if os.path.exists(ready):
            os.remove(ready)
        env = dict(os.environ, QGATE_E2E_TOKEN=TOKEN)
        self.log = open(os.path.join(self.state_dir, "serve.log"), "ab")
        self.proc = subprocess.Popen([QGATE, "serve", "--config", cfg, "--ready-file", ready,
                                      "--enable-test-faults"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: os.path.exists(ready), 120, "qgate serve to become ready",
                     alive=self._alive)
        except Exception:
            self.proc.kill()
            self.proc.wait()
            raise
        with open(ready) as f:
            ports = json.load(f)
        self.api = "http://127.0.0.1:%d" % ports["api_port"]
        self.admin = "http://127.0.0.1:%d" % ports["admin_port"]
        self.admin_hostport = "127.0.0.1:%d" % ports["admin_port"]
        self.client = openai.OpenAI(base_url=self.api + "/v1", api_key="unused", max_retries=0,
                                    timeout=120)

    def _alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError("qgate serve exited: " + self.read_log())

    def read_log(self):
        self.log.flush()
        with open(os.path.join(self.state_dir, "serve.log"), errors="replace") as f:
            return f.read()[-4000:]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.read_log()
        self.log.close()

    def admin_call(self, method, path, body=None, token=TOKEN):
        return http_json(method, self.admin + path, body, token)

    def api_call(self, method, path, body=None):
        return http_json(method, self.api + path, body)

    def metrics_text(self):
        """GET /metrics on the admin listener, without a token (the contract in docs/METRICS.md)."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=30) as r:
            assert r.status == 200
            return r.headers.get("Content-Type", ""), r.read().decode()

    def variant_state(self, name):
        _, body = self.admin_call("GET", "/admin/variants")
        return next(v for v in body["variants"] if v["name"] == name)


def http_json(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_for(predicate, timeout_s, what, alive=None, poll_s=0.05):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout_s` passes."""
    deadline = time.time() + timeout_s
    while True:
        if alive is not None:
            alive()
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError("timed out after %ss waiting for %s" % (timeout_s, what))
        time.sleep(poll_s)


def wait_for_drain(read_depth, what, stall_s=90, alive=None, poll_s=0.2):
    """Polls a queue depth until it reaches 0, failing only when it stops falling for `stall_s`.

    A fixed deadline on a drain fails whenever other work slows the machine down; what indicates a
    bug is a queue that makes no progress, so the clock restarts at every new low."""
    lowest = read_depth()
    last_progress = time.time()
    while lowest > 0:
        time.sleep(poll_s)
        if alive is not None:
            alive()
        depth = read_depth()
        if depth < lowest:
            lowest, last_progress = depth, time.time()
        elif time.time() - last_progress > stall_s:
            raise TimeoutError("%s: stuck at %s for %ss" % (what, depth, stall_s))


def listening_tcp_ports(pid):
    """Ports the process listens on, from /proc: lets a server bind port 0 and still be found."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: TCP_LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


class Prometheus:
    """A Prometheus server with its own config and TSDB in `work_dir`, scraping `targets`
    (host:port, path /metrics) every `scrape_interval`."""

    def __init__(self, work_dir, targets, scrape_interval="1s"):
        self.work_dir = work_dir
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.proc = None

    def start(self):
        cfg = os.path.join(self.work_dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global: {scrape_interval: %s, scrape_timeout: %s, evaluation_interval: %s}\n"
                    "scrape_configs:\n"
                    "  - job_name: qgate\n"
                    "    static_configs: [{targets: %s}]\n"
                    % (self.scrape_interval, self.scrape_interval, self.scrape_interval,
                       json.dumps(self.targets)))
        self.log = open(os.path.join(self.work_dir, "prometheus.log"), "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + cfg,
             "--storage.tsdb.path=" + os.path.join(self.work_dir, "tsdb"),
             "--web.listen-address=127.0.0.1:0", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

        def ready():
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=5) as r:
                    return r.status == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        try:
            port = wait_for(lambda: listening_tcp_ports(self.proc.pid), 60,
                            "prometheus to listen", alive=self._alive)
            self.url = "http://127.0.0.1:%d" % min(port)
            wait_for(ready, 60, "prometheus to be ready", alive=self._alive)
        except Exception:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise

    def _alive(self):
        if self.proc.poll() is not None:
            self.log.flush()
            with open(os.path.join(self.work_dir, "prometheus.log"), errors="replace") as f:
                raise RuntimeError("prometheus exited: " + f.read()[-4000:])

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.proc = None
        self.log.close()

    def api(self, path, **params):
        url = self.url + path + "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
            raise RuntimeError("%s %s: %s" % (path, params, body.get("error", e))) from None
        if body.get("status") != "success":
            raise RuntimeError("%s %s: %s" % (path, params, body))
        return body["data"]

    def query(self, expr, at=None):
        """Instant query; the result vector/scalar as Prometheus returns it."""
        params = {"query": expr}
        if at is not None:
            params["time"] = "%.3f" % at
        return self.api("/api/v1/query", **params)

    def query_range(self, expr, start, end, step):
        return self.api("/api/v1/query_range", query=expr, start="%.3f" % start,
                        end="%.3f" % end, step=step)

    def series(self, selector, start=None):
        params = {"match[]": selector}
        if start is not None:
            params["start"] = "%.3f" % start
        return self.api("/api/v1/series", **params)

    def scrapes_of_target(self):
        """Samples of `up` for the qgate job: grows by one per scrape."""
        data = self.query("count_over_time(up{job=\"qgate\"}[1h])")
        return int(float(data["result"][0]["value"][1])) if data["result"] else 0


# --- the contract: docs/METRICS.md ------------------------------------------------------------

def documented_metrics():
    """{family: (type, set of labels)} from the tables of docs/METRICS.md."""
    out = {}
    with open(METRICS_DOC) as f:
        doc = f.read()
    for m in re.finditer(r"^\| `(qgate_\w+)` \| (\w+) \| ([^|]*) \|", doc, re.M):
        labels = {l.strip() for l in m.group(3).split(",") if l.strip() not in ("", "—", "-")}
        out[m.group(1)] = (m.group(2), labels)
    for m in re.finditer(r"`(qgate_\w+)\{(\w+)\}`", doc):  # qgate_build_info{version}, in prose
        out.setdefault(m.group(1), ("gauge", {m.group(2)}))
    return out


def metric_family(name, docs):
    """The documented family a sample name belongs to (histograms add _bucket, _sum, _count)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[:-len(suffix)] if name.endswith(suffix) else None
        if base and docs.get(base, ("",))[0] == "histogram":
            return base
    return name


# --- text exposition format 0.0.4 ----------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+(-?\d+))?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse_exposition(text):
    """Parses the text format into (samples, types): samples is a list of (name, labels, value),
    types maps a metric family to its # TYPE. Raises ValueError on a malformed line."""
    samples, types = [], {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError("malformed sample line: %r" % line)
        labels = {}
        body = (m.group(2) or "{}")[1:-1]
        pos = 0
        while pos < len(body):
            lm = _LABEL.match(body, pos)
            if not lm:
                raise ValueError("malformed labels in %r" % line)
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
        value = m.group(3)
        samples.append((m.group(1), labels, float(value)))  # float() reads +Inf, -Inf, NaN
    return samples, types


class Metrics:
    """Lookup over one parsed scrape."""

    def __init__(self, text):
        self.samples, self.types = parse_exposition(text)

    def select(self, name, **labels):
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == want for k, want in labels.items())]

    def value(self, name, **labels):
        """The one sample `name` with exactly these labels (0 when absent), else an error."""
        hits = [v for l, v in self.select(name, **labels) if set(l) == set(labels)]
        assert len(hits) <= 1, (name, labels, hits)
        return hits[0] if hits else 0.0

    def buckets(self, name, **labels):
        """[(le, cumulative count)] of histogram `name`, sorted by le (+Inf last)."""
        out = [(float(l["le"]), v) for l, v in self.select(name + "_bucket", **labels)
               if set(l) == set(labels) | {"le"}]
        return sorted(out)


def finite(x):
    return not (math.isnan(x) or math.isinf(x))
