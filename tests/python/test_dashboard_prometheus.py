"""The Grafana dashboard against real data: the real `qgate serve` (three real SmolLM2 variants,
shadow scoring on, offline eval results from the real `qgate eval`) is driven with the `openai`
client, a real Prometheus scrapes its admin /metrics every second, and every query the dashboard
holds (panel targets, template variables, annotations) is run against that Prometheus and must
return data.

The static checks (JSON model, every selector documented in docs/METRICS.md and filtered by the
dashboard's variables) need neither; the live test skips without the built qgate, the variants
(scripts/prepare_variants.sh) or the prometheus binary.

Environment:
  QGATE_DASHBOARD_PNG=path     also render the dashboard from the run's data to this PNG
                               (scripts/render_dashboard.py)
  QGATE_DASHBOARD_LOAD_S=secs  keep a mixed load (split change, fault, feedback) running this long
                               before querying, for a PNG with more to show (default 0)
"""
import concurrent.futures
import importlib.util
import json
import math
import os
import re
import subprocess
import tempfile
import threading
import time

import pytest

openai = pytest.importorskip("openai")

import qgate_serve as qs  # noqa: E402  (after the skip: the helpers start openai clients)

DASHBOARD = os.path.join(qs.ROOT, "dashboards", "qgate-variant-comparison.json")
ROUTE = "smollm2"

# Documented metrics the dashboard deliberately leaves out, and why.
NOT_ON_DASHBOARD = {
    "qgate_worker_kv_cache_blocks": "the KV cache panel plots used / total as the usage ratio",
    "qgate_worker_kv_cache_used_blocks": "the KV cache panel plots used / total as the usage ratio",
}


# Panels whose values are legitimately all zero once the load is over (the rest must show some
# value > 0 after the traffic the live test drives).
IDLE_AT_END = {"Queue depth", "Running sequences and batch size", "KV cache usage", "Shadow queue depth",
               "Preemptions and rejections/s"}


def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_queries(dashboard):
    """Every query in the dashboard as (where, kind, text): kind is 'target', 'annotation' or
    'variable'. Walks the whole JSON so nested rows and odd places are not missed."""
    found = []

    def walk(node, title):
        if isinstance(node, dict):
            title = node.get("title", title) if "gridPos" in node else title
            if isinstance(node.get("expr"), str):
                if "iconColor" in node:
                    found.append(("annotation %s" % node.get("name"), "annotation", node["expr"]))
                else:
                    found.append(("%s [%s]" % (title, node.get("refId")), "target", node["expr"]))
            for v in node.values():
                walk(v, title)
        elif isinstance(node, list):
            for v in node:
                walk(v, title)

    walk(dashboard.get("panels", []), "?")
    walk(dashboard.get("annotations", {}), "?")
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query")
            found.append(("variable $" + var["name"], "variable", q))
    return found


def selectors(expr):
    """[(metric name, label matchers text, position)] of the qgate metrics an expression reads."""
    return [(m.group(1), m.group(2) or "", m.start())
            for m in re.finditer(r"(qgate_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?", expr)]


def grafana_values(rate_interval):
    """What Grafana would substitute with route=smollm2 and variant=All (allValue .*)."""
    return {"route": ROUTE, "variant": ".*", "__rate_interval": rate_interval,
            "__interval": "5s", "__range": rate_interval}


def substitute(expr, values):
    def repl(m):
        name = m.group(1) or m.group(2)
        assert name in values, "dashboard uses a variable the test does not know: $" + name
        return values[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


# --- static checks -------------------------------------------------------------------------------

def test_dashboard_model_is_importable():
    d = load_dashboard()
    assert d["title"] == "qgate — variant comparison" and d["uid"]
    assert 36 <= d["schemaVersion"] <= 41
    assert d["id"] is None  # an exported dashboard: Grafana assigns the id on import
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    assert d["__inputs"][0]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    assert variables["variant"]["multi"] and variables["variant"]["includeAll"]
    ids = []
    cells = set()
    for p in d["panels"]:
        ids.append(p["id"])
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, "panels overlap at %s: %s" % ((x, y), p["title"])
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}", p["title"]
    assert len(ids) == len(set(ids))


def test_every_query_reads_documented_metrics_filtered_by_the_variables():
    docs = qs.documented_metrics()
    assert len(docs) > 30, "could not read the metric tables of docs/METRICS.md"
    used = set()
    for where, kind, expr in dashboard_queries(load_dashboard()):
        # In a share's denominator (right of group_left) the route total is wanted, not the
        # selected variants' total; template variable queries define the variables themselves.
        denominator = expr.find("group_left")
        for name, matchers, pos in selectors(expr):
            fam = qs.metric_family(name, docs)
            assert fam in docs, "%s: %s is not in docs/METRICS.md" % (where, name)
            used.add(fam)
            if kind == "variable":
                continue
            labels = docs[fam][1]
            if "route" in labels:
                assert 'route=~"$route"' in matchers, (where, name, matchers)
            if "variant" in labels and not (0 <= denominator < pos):
                assert 'variant=~"$variant"' in matchers, (where, name, matchers)
            if {"from", "to"} <= labels:
                assert 'from=~"$variant"' in matchers, (where, name, matchers)
    missing = set(docs) - used - set(NOT_ON_DASHBOARD)
    assert not missing, "documented metrics the dashboard does not show: %s" % sorted(missing)


# --- live ----------------------------------------------------------------------------------------

def live_skip_reason():
    return qs.missing_prerequisites(need_prometheus=True)


def chat(server, content, variant=None, stream=False, max_tokens=8, **kw):
    headers = {"x-qgate-variant": variant} if variant else None
    if not stream:
        return server.client.chat.completions.create(
            model=ROUTE, messages=[{"role": "user", "content": content}], temperature=0,
            max_tokens=max_tokens, extra_headers=headers, **kw)
    chunks = list(server.client.chat.completions.create(
        model=ROUTE, messages=[{"role": "user", "content": content}], temperature=0,
        max_tokens=max_tokens, extra_headers=headers, stream=True,
        stream_options={"include_usage": True}, **kw))
    assert chunks and chunks[-1].usage is not None
    return chunks[-1]


def drive_traffic(server, next_scrape):
    """Requests to every variant, streaming and not, weighted and pinned; 400s and 404s; feedback;
    and a failing variant so fallbacks, errors and an ejection are recorded.

    rate() cannot see the increment that creates a series (its first sample already holds it), so
    each kind of event happens once, then again after `next_scrape()` has let Prometheus sample
    the new series."""
    prompts = ["What color is the sky?", "Name a fruit.", "Count to three.", "Say hello."]

    def bad_requests():
        with pytest.raises(openai.BadRequestError):
            chat(server, "x", max_tokens=-1)
        with pytest.raises(openai.BadRequestError):
            chat(server, "x", variant="not-a-variant")
        with pytest.raises(openai.NotFoundError):
            server.client.chat.completions.create(model="no-such-model",
                                                  messages=[{"role": "user", "content": "x"}])

    def feedback(rid, score):
        status, body = server.api_call("POST", "/v1/feedback", {"id": rid, "score": score})
        assert status == 200, body

    # Round one creates the series.
    warm = [chat(server, prompts[0], v, max_tokens=4) for v in qs.VARIANTS]
    bad_requests()
    feedback(warm[0].id, 1)
    next_scrape()

    jobs = []
    for v in qs.VARIANTS:
        for i, p in enumerate(prompts):
            jobs.append((p, v, i % 2 == 1, {}))
    for i in range(6):  # weighted by the route's split
        jobs.append((prompts[i % 4], None, i % 2 == 0, {"user": "dash-%d" % i}))
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        responses = list(ex.map(lambda j: chat(server, j[0], j[1], j[2], **j[3]), jobs))
    bad_requests()
    for r, score in zip(warm[1:], (-0.5, 0)):
        feedback(r.id, score)
    feedback(responses[0].id, 0.5)

    # Only gptq in the split. Overloaded, it refuses every request and the route falls back to
    # the baseline (back-pressure: no ejection); failing, it is ejected.
    assert server.admin_call("POST", "/admin/split", {
        "model": ROUTE, "weights": {"smollm2-fp16": 0, "smollm2-gptq": 1, "smollm2-awq": 0}})[0] == 200
    try:
        for fault in ("overload", "fail"):
            assert server.admin_call("POST", "/admin/fault", {"variant": "smollm2-gptq", "fault": fault})[0] == 200
            for i in range(3):
                r = chat(server, "What is 2 + 2?", max_tokens=4, user="%s-%d" % (fault, i))
                assert r.choices[0].finish_reason in ("stop", "length")
                if i == 0:
                    next_scrape()
    finally:
        assert server.admin_call("POST", "/admin/fault", {"variant": "smollm2-gptq", "fault": "none"})[0] == 200
        assert server.admin_call("POST", "/admin/split", {
            "model": ROUTE, "weights": {"smollm2-fp16": 50, "smollm2-gptq": 30, "smollm2-awq": 20}})[0] == 200


def sustained_load(server, seconds):
    """Mixed load for a richer rendering: 3 clients, a split change half-way, a short fault
    window and some feedback. Deterministic (no randomness): the pattern cycles."""
    stop = time.time() + seconds
    errors = []

    def client(k):
        i = 0
        while time.time() < stop and not errors:
            try:
                r = chat(server, "Tell me about %s." % ["rivers", "cats", "tea"][i % 3],
                         stream=(i + k) % 2 == 0, max_tokens=16 + 8 * (i % 3), user="load-%d-%d" % (k, i % 20))
                if i % 5 == k:
                    server.api_call("POST", "/v1/feedback", {"id": r.id, "score": [1, 0.5, -1, 0][i % 4]})
            except openai.APIConnectionError as e:  # no answer at all fails the run
                errors.append(repr(e))
            except openai.APIError:
                pass  # an error status or an in-stream error while awq fails: on the dashboard too
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    t0 = time.time()
    changes = [(0.4, {"smollm2-fp16": 20, "smollm2-gptq": 40, "smollm2-awq": 40}),
               (0.6, "fault"), (0.7, "nofault")]
    for frac, what in changes:
        while time.time() < t0 + frac * seconds and not errors:
            time.sleep(0.2)
        if what == "fault":
            server.admin_call("POST", "/admin/fault", {"variant": "smollm2-awq", "fault": "fail"})
        elif what == "nofault":
            server.admin_call("POST", "/admin/fault", {"variant": "smollm2-awq", "fault": "none"})
        else:
            server.admin_call("POST", "/admin/split", {"model": ROUTE, "weights": what})
    for t in threads:
        t.join()
    assert errors == [], errors[:3]


@pytest.fixture(scope="module")
def stack():
    reason = live_skip_reason()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory() as d:
        eval_json = os.path.join(d, "eval.json")
        qs.run_eval(eval_json)
        server = qs.Server(d, "shadow: {sample_ratio: 1.0, include_baseline: true}\n"
                              "quality: {eval_results: %s}\n" % eval_json)
        server.start()
        prom = qs.Prometheus(d, [server.admin_hostport], scrape_interval="1s")
        try:  # stops both whatever fails
            prom.start()
            t_start = time.time()
            qs.wait_for(lambda: prom.query('qgate_routing_table_version{job="qgate"}')["result"], 60,
                        "prometheus to scrape qgate")

            def next_scrape():  # returns once Prometheus has completed a scrape begun after the call
                n = prom.scrapes_of_target()
                qs.wait_for(lambda: prom.scrapes_of_target() >= n + 2, 30, "two scrapes", poll_s=0.2)

            drive_traffic(server, next_scrape)
            load_s = float(os.environ.get("QGATE_DASHBOARD_LOAD_S", "0"))
            if load_s > 0:
                sustained_load(server, load_s)
            # Shadow scoring runs off the request path: let it finish, then let Prometheus take
            # a few more scrapes so every new series has several samples.
            # The scorer threads run at SCHED_IDLE, so other processes saturating the CPU starve
            # them by design; the wait fails only when the queue stops shrinking.
            qs.wait_for_drain(
                lambda: qs.Metrics(server.metrics_text()[1]).value("qgate_shadow_queue_depth"),
                "the shadow queue to drain (its SCHED_IDLE scorers get no CPU while other "
                "processes saturate it)", alive=server._alive)
            next_scrape()
            yield server, prom, t_start
        finally:
            prom.stop()
            server.stop()


def test_every_dashboard_query_returns_data(stack):
    server, prom, t_start = stack
    now = time.time()
    # The rate window covers the whole run, so every series created during it has >= 2 samples in
    # the window and a rate over real traffic (a 1 s scrape interval would make Grafana's own
    # $__rate_interval 4 s, too short to still hold the traffic when the queries run).
    window = "%ds" % math.ceil(now - t_start + 5)
    values = grafana_values(window)
    report, failures = [], []
    for where, kind, text in dashboard_queries(load_dashboard()):
        if kind == "variable":
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", text, re.S)
            assert m, text
            series = prom.series(substitute(m.group(1), values), start=t_start - 60)
            got = sorted({s[m.group(2)] for s in series if m.group(2) in s})
            want = {"route": {ROUTE}, "variant": set(qs.VARIANTS)}[m.group(2)]
            ok = want <= set(got)
            report.append((ok, "%d values" % len(got), where, text + " -> " + ",".join(got)))
        elif kind == "annotation":
            # Grafana evaluates annotation queries over the dashboard's range.
            data = prom.query_range(substitute(text, values), t_start, now, "1s")
            points = sum(len(s["values"]) for s in data["result"])
            ok = points > 0
            report.append((ok, "%d points" % points, where, text))
        else:
            data = prom.query(substitute(text, values), at=now)
            result = data["result"]
            if data["resultType"] == "scalar":
                result = [{"metric": {}, "value": result}]
            vals = [float(s["value"][1]) for s in result]
            n_positive = sum(1 for v in vals if qs.finite(v) and v > 0)
            ok = any(qs.finite(v) for v in vals) and (n_positive > 0 or where.split(" [")[0] in IDLE_AT_END)
            report.append((ok, "%d series, %d > 0" % (len(vals), n_positive), where, text))
        if not ok:
            failures.append(where)
    print("\nrate window %s; %d queries:" % (window, len(report)))
    for ok, what, where, text in report:
        print("%s %-22s %s: %s" % ("OK  " if ok else "FAIL", what, where, " ".join(text.split())))
    png = os.environ.get("QGATE_DASHBOARD_PNG")
    if png:
        spec = importlib.util.spec_from_file_location(
            "render_dashboard", os.path.join(qs.ROOT, "scripts", "render_dashboard.py"))
        render = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(render)
        drawn = render.render(load_dashboard(), render.PrometheusClient(prom.url), t_start - 5, now, png,
                              {"route": ROUTE}, scrape_interval_s=max(1.0, (now - t_start) / 60))
        print("rendered %s: panels without data: %s" % (png, [t for t, n in drawn.items() if n == 0]))
    assert not failures, "dashboard queries without data: %s" % failures


def test_exposition_with_every_family_passes_promtool(stack):
    # This server has shadow scoring, eval results, feedback and fallbacks: every family is there.
    server, _, _ = stack
    _, text = server.metrics_text()
    r = subprocess.run([qs.PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
