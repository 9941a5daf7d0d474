"""The /metrics exposition of a live `qgate serve` against docs/METRICS.md: exact counts after a
known amount of traffic to a fresh server, histogram buckets as documented, gauges read at scrape
time, and `promtool check metrics` on the scraped text.

Each test drives its own route (a variant route or an unknown model), so the counts they assert
do not depend on the order the tests run in. Needs the built qgate and the variants from
scripts/prepare_variants.sh; skips otherwise.
"""
import json
import math
import os
import subprocess
import tempfile

import pytest

openai = pytest.importorskip("openai")

import qgate_serve as qs  # noqa: E402  (after the skip: the helpers start openai clients)

# Buckets as docs/METRICS.md fixes them (the contract; a change there is a change here).
TTFT_BUCKETS = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40]
ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15,
               0.2, 0.3, 0.5, 1, 2.5]
E2E_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300]
FEEDBACK_BUCKETS = [-1, -0.5, 0, 0.5, 1]
STATES = {"healthy", "ejected", "half_open", "draining"}
MAX_TOKENS = 5

pytestmark = pytest.mark.skipif(qs.missing_prerequisites() is not None,
                                reason=qs.missing_prerequisites() or "")


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as d:
        # The eval results file does not exist yet: test_offline_eval_gauges_follow_reload
        # writes it and reloads.
        s = qs.Server(d, "quality: {eval_results: %s}\n" % os.path.join(d, "eval.json"))
        s.start()
        s.eval_json = os.path.join(d, "eval.json")
        yield s
        s.stop()


def scrape(server):
    return qs.Metrics(server.metrics_text()[1])


def scrape_when(server, predicate, what):
    """Scrapes until `predicate(metrics)` holds: the end-to-end histogram is observed when the
    last byte has been handed to the connection, which can be just after the client has it."""
    return qs.wait_for(lambda: (lambda m: m if predicate(m) else None)(scrape(server)), 15, what)


def chat(server, model, stream=False, **kw):
    """One greedy chat request with exactly MAX_TOKENS generated tokens (ignore_eos)."""
    args = dict(model=model, messages=[{"role": "user", "content": "Tell me a story."}],
                temperature=0, max_tokens=MAX_TOKENS, extra_body={"ignore_eos": True}, **kw)
    if not stream:
        r = server.client.chat.completions.create(**args)
        return r.id, r.usage
    chunks = list(server.client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    return chunks[0].id, chunks[-1].usage


def assert_histogram(m, name, labels, buckets, count):
    got = m.buckets(name, **labels)
    assert [le for le, _ in got] == [float(b) for b in buckets] + [math.inf], (name, got)
    counts = [c for _, c in got]
    assert counts == sorted(counts), "cumulative bucket counts must not decrease: %s %s" % (name, got)
    assert counts[-1] == count, (name, got)
    assert m.value(name + "_count", **labels) == count
    total = m.value(name + "_sum", **labels)
    assert 0 <= total < math.inf
    return total


def test_non_streaming_requests_are_counted_exactly(server):
    route = variant = "smollm2-gptq"
    usages = [chat(server, route)[1] for _ in range(3)]
    assert [u.completion_tokens for u in usages] == [MAX_TOKENS] * 3
    lab = {"route": route, "variant": variant}
    m = scrape_when(server, lambda m: m.value("qgate_request_duration_seconds_count", **lab) >= 3,
                    "three end-to-end observations")
    assert m.value("qgate_requests_total", **lab, code="200") == 3
    # Nothing else was recorded for this route: no other status, no error, no fallback.
    assert sum(v for _, v in m.select("qgate_requests_total", route=route)) == 3
    assert m.select("qgate_variant_errors_total", route=route) == []
    assert m.select("qgate_fallbacks_total", route=route) == []
    assert m.value("qgate_completion_tokens_total", **lab) == 3 * MAX_TOKENS
    assert m.value("qgate_prompt_tokens_total", **lab) == sum(u.prompt_tokens for u in usages)
    ttft = assert_histogram(m, "qgate_time_to_first_token_seconds", lab, TTFT_BUCKETS, 3)
    assert_histogram(m, "qgate_inter_token_latency_seconds", lab, ITL_BUCKETS, 3 * (MAX_TOKENS - 1))
    e2e = assert_histogram(m, "qgate_request_duration_seconds", lab, E2E_BUCKETS, 3)
    assert 0 < ttft <= e2e
    # The worker counts its own work too (health probes add to it).
    assert m.value("qgate_worker_generated_tokens_total", variant=variant) >= 3 * MAX_TOKENS


def test_streaming_request_is_counted_exactly(server):
    route = variant = "smollm2-awq"
    rid, usage = chat(server, route, stream=True)
    assert rid and usage.completion_tokens == MAX_TOKENS
    lab = {"route": route, "variant": variant}
    m = scrape_when(server, lambda m: m.value("qgate_request_duration_seconds_count", **lab) >= 1,
                    "the end-to-end observation")
    assert m.value("qgate_requests_total", **lab, code="200") == 1
    assert m.value("qgate_completion_tokens_total", **lab) == MAX_TOKENS
    assert m.value("qgate_prompt_tokens_total", **lab) == usage.prompt_tokens
    assert_histogram(m, "qgate_time_to_first_token_seconds", lab, TTFT_BUCKETS, 1)
    assert_histogram(m, "qgate_inter_token_latency_seconds", lab, ITL_BUCKETS, MAX_TOKENS - 1)
    assert_histogram(m, "qgate_request_duration_seconds", lab, E2E_BUCKETS, 1)


def test_unknown_model_and_invalid_request_use_bounded_labels(server):
    with pytest.raises(openai.NotFoundError):
        server.client.chat.completions.create(model="no-such-model",
                                              messages=[{"role": "user", "content": "x"}])
    m = scrape_when(server, lambda m: m.value("qgate_requests_total", route="unknown", variant="none",
                                              code="404") >= 1, "the 404")
    assert m.value("qgate_requests_total", route="unknown", variant="none", code="404") == 1
    assert not any("no-such-model" in labels.values() for _, labels, _ in m.samples)
    # Invalid for every variant: the route is known, no variant took it.
    with pytest.raises(openai.BadRequestError):
        server.client.chat.completions.create(model="smollm2", max_tokens=-1,
                                              messages=[{"role": "user", "content": "x"}])
    m = scrape_when(server, lambda m: m.value("qgate_requests_total", route="smollm2", variant="none",
                                              code="400") >= 1, "the 400")
    assert m.value("qgate_requests_total", route="smollm2", variant="none", code="400") == 1


def test_feedback_is_counted_by_sentiment(server):
    route = variant = "smollm2-fp16"
    ids = [chat(server, route)[0] for _ in range(3)]
    for rid, score in zip(ids, (1, -0.5, 0)):
        status, body = server.api_call("POST", "/v1/feedback", {"id": rid, "score": score})
        assert status == 200, body
        assert (body["route"], body["variant"]) == (route, variant)
    # Refused and not counted: a second score for a response, an unknown id, a score out of range.
    assert server.api_call("POST", "/v1/feedback", {"id": ids[0], "score": 1})[0] == 409
    assert server.api_call("POST", "/v1/feedback", {"id": "chatcmpl-nope", "score": 1})[0] == 404
    assert server.api_call("POST", "/v1/feedback", {"id": ids[0], "score": 2})[0] == 400
    m = scrape(server)
    lab = {"route": route, "variant": variant}
    for sentiment in ("positive", "negative", "neutral"):
        assert m.value("qgate_feedback_total", **lab, sentiment=sentiment) == 1, sentiment
    got = m.buckets("qgate_feedback_score", **lab)
    # Cumulative, le inclusive: -0.5 lands in le=-0.5, 0 in le=0, 1 in le=1.
    assert got == [(-1.0, 0), (-0.5, 1), (0.0, 2), (0.5, 2), (1.0, 3), (math.inf, 3)], got
    assert m.value("qgate_feedback_score_sum", **lab) == 0.5
    assert m.value("qgate_feedback_score_count", **lab) == 3


def test_routing_gauges_are_read_at_scrape_time(server):
    _, routes = server.admin_call("GET", "/admin/routes")
    m = scrape(server)
    assert m.value("qgate_routing_table_version") == routes["version"]
    for v, share in (("smollm2-fp16", 0.5), ("smollm2-gptq", 0.3), ("smollm2-awq", 0.2)):
        assert m.value("qgate_route_weight_ratio", route="smollm2", variant=v) == pytest.approx(share)
        assert m.value("qgate_route_weight_ratio", route=v, variant=v) == 1  # its variant route
        assert m.value("qgate_route_baseline", route="smollm2", variant=v) == (v == qs.BASELINE)
    status, table = server.admin_call("POST", "/admin/split", {
        "model": "smollm2", "weights": {"smollm2-fp16": 1, "smollm2-gptq": 1, "smollm2-awq": 2}})
    assert status == 200, table
    try:
        m = scrape(server)  # no waiting: the next scrape already sees the new table
        assert m.value("qgate_routing_table_version") == table["version"] == routes["version"] + 1
        for v, share in (("smollm2-fp16", .25), ("smollm2-gptq", .25), ("smollm2-awq", .5)):
            assert m.value("qgate_route_weight_ratio", route="smollm2", variant=v) == pytest.approx(share)
    finally:
        assert server.admin_call("POST", "/admin/rollback", {"to": "previous"})[0] == 200


def test_health_gauges_follow_drain(server):
    m = scrape(server)
    for v in qs.VARIANTS:
        states = {l["state"]: val for l, val in m.select("qgate_variant_state", variant=v)}
        assert set(states) == STATES, states
        assert states == {s: float(s == "healthy") for s in STATES}, (v, states)
        assert m.value("qgate_variant_healthy", variant=v) == 1
        assert m.value("qgate_variant_ejections_total", variant=v) == 0
    assert server.admin_call("POST", "/admin/drain", {"variant": "smollm2-awq"})[0] == 200
    try:
        m = scrape(server)
        assert m.value("qgate_variant_state", variant="smollm2-awq", state="draining") == 1
        assert m.value("qgate_variant_state", variant="smollm2-awq", state="healthy") == 0
        assert m.value("qgate_variant_healthy", variant="smollm2-awq") == 0
    finally:
        assert server.admin_call("POST", "/admin/enable", {"variant": "smollm2-awq"})[0] == 200
    assert scrape(server).value("qgate_variant_healthy", variant="smollm2-awq") == 1


def test_worker_gauges(server):
    m = scrape(server)
    for v in qs.VARIANTS:
        info = m.select("qgate_worker_info", variant=v)
        assert len(info) == 1 and info[0][1] == 1, info
        assert info[0][0]["device"] == "cpu" and "layers" in info[0][0]["model"], info
        assert m.value("qgate_worker_weight_bytes", variant=v, device="cpu") > 1e6
        total = m.value("qgate_worker_kv_cache_blocks", variant=v)
        used = m.value("qgate_worker_kv_cache_used_blocks", variant=v)
        assert total > 0 and 0 <= used <= total
        assert 0 <= m.value("qgate_worker_kv_cache_usage_ratio", variant=v) <= 1
        for name in ("qgate_worker_queue_depth", "qgate_worker_running_sequences",
                     "qgate_worker_batch_size", "qgate_worker_preemptions_total",
                     "qgate_worker_rejected_total", "qgate_worker_prompt_tokens_total"):
            assert len(m.select(name, variant=v)) == 1 and m.value(name, variant=v) >= 0, (name, v)
    # The FP16 variant reads about twice the weight bytes of a 4-bit one.
    assert (m.value("qgate_worker_weight_bytes", variant="smollm2-fp16", device="cpu")
            > 1.8 * m.value("qgate_worker_weight_bytes", variant="smollm2-gptq", device="cpu"))
    builds = m.select("qgate_build_info")
    assert len(builds) == 1 and builds[0][1] == 1 and builds[0][0]["version"], builds


def test_offline_eval_gauges_follow_reload(server):
    assert scrape(server).select("qgate_eval_perplexity") == []  # no results file at start
    qs.run_eval(server.eval_json)
    status, body = server.admin_call("POST", "/admin/quality/reload")
    assert status == 200, body
    with open(server.eval_json) as f:
        results = json.load(f)
    by_path = {os.path.normpath(r["model"]): r for r in results}
    m = scrape(server)
    for v, path in qs.VARIANTS.items():
        r = by_path[os.path.normpath(os.path.join(qs.MODELS, path))]
        assert m.value("qgate_eval_perplexity", variant=v) == pytest.approx(r["perplexity"], rel=1e-9)
        assert m.value("qgate_eval_kl_divergence", variant=v) == pytest.approx(r["mean_kl"], rel=1e-9, abs=1e-12)
        assert m.value("qgate_eval_top1_agreement_ratio", variant=v) == pytest.approx(r["top1_agreement"], rel=1e-9)
        assert m.value("qgate_eval_tokens", variant=v) == r["scored_tokens"]
    assert m.value("qgate_eval_top1_agreement_ratio", variant=qs.BASELINE) == 1  # against itself
    assert m.value("qgate_eval_timestamp_seconds") > 1.7e9


def test_exposition_matches_the_documented_types_and_labels(server):
    docs = qs.documented_metrics()
    content_type, text = server.metrics_text()
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type, content_type
    m = qs.Metrics(text)
    families = {n for n in m.types if n.startswith("qgate_")}
    assert families <= set(docs), "undocumented metrics: %s" % sorted(families - set(docs))
    for name in families:
        assert m.types[name] == docs[name][0], (name, m.types[name], docs[name][0])
    for name, labels, _ in m.samples:
        fam = qs.metric_family(name, docs)
        if fam not in docs:
            continue
        want = set(docs[fam][1]) | ({"le"} if name.endswith("_bucket") else set())
        assert set(labels) == want, (name, labels, want)


def test_promtool_check_metrics_passes(server):
    if not os.access(qs.PROMTOOL, os.X_OK):
        pytest.skip("needs promtool (Debian package prometheus)")
    # After the other tests every recorded family has series (shadow and eval aside).
    chat(server, "smollm2")
    _, text = server.metrics_text()
    r = subprocess.run([qs.PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    # promtool prints lint problems (warnings included) and exits non-zero on any of them.
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
