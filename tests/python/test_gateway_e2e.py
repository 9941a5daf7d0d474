"""End-to-end: the real `qgate serve` on port 0 with the three real SmolLM2 variants, driven by the
official `openai` client and plain HTTP for the admin API.

Needs the variants scripts/prepare_variants.sh makes (scripts/test.sh runs it); skips otherwise.
"""
import concurrent.futures
import math
import re
import tempfile
import threading
import time

import pytest

from qgate_serve import Server, VARIANTS, missing_prerequisites

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.skipif(missing_prerequisites() is not None,
                                reason=str(missing_prerequisites()))


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        s.start()
        yield s
        s.stop()


def chat(server, content, variant=None, **kw):
    headers = {"x-qgate-variant": variant} if variant else None
    raw = server.client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": content}], temperature=0,
        max_tokens=kw.pop("max_tokens", 24), extra_headers=headers, **kw)
    return raw.headers, raw.parse()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_answers(server, variant):
    # The 4-bit variants of this 135M model lose some answers (README); this one all three keep.
    headers, resp = chat(server, "What color is the sky on a clear day?", variant=variant)
    assert headers["x-qgate-variant"] == variant
    assert int(headers["x-qgate-routing-version"]) >= 1
    text = resp.choices[0].message.content
    assert text.startswith("The sky on a clear day"), text
    assert resp.usage.prompt_tokens > 10 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")


def test_streaming_equals_non_streaming(server):
    _, whole = chat(server, "Give me three tips for staying healthy.", variant="smollm2-fp16",
                    max_tokens=40)
    pieces, finish, usage = [], None, None
    stream = server.client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Give me three tips for staying healthy."}],
        temperature=0, max_tokens=40, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-qgate-variant": "smollm2-fp16"})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason == "length"
    assert usage.completion_tokens == whole.usage.completion_tokens == 40


def test_completions_and_models(server):
    resp = server.client.completions.create(model="smollm2-fp16", prompt="1, 2, 3, 4,",
                                            max_tokens=6, temperature=0)
    assert resp.choices[0].text.startswith(" 5"), resp.choices[0].text
    ids = {m.id for m in server.client.models.list().data}
    assert {"smollm2", *VARIANTS} <= ids


def test_errors_are_openai_shaped(server):
    with pytest.raises(openai.NotFoundError):
        server.client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        server.client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "x"}],
                                              max_tokens=-1)
    assert e.value.body["param"] in ("max_tokens", "max_completion_tokens")
    with pytest.raises(openai.BadRequestError):
        chat(server, "x", variant="not-a-variant")


def test_admin_requires_token(server):
    assert server.admin_call("GET", "/admin/routes", token=None)[0] == 401
    assert server.admin_call("GET", "/admin/routes", token="wrong")[0] == 401
    status, body = server.admin_call("POST", "/admin/split", {"model": "smollm2", "weights": {"smollm2-fp16": -1}})
    assert status == 400, body


def served_shares(server, n, user_prefix):
    counts = {}

    def one(i):
        raw = server.client.completions.with_raw_response.create(
            model="smollm2", prompt="Hi", max_tokens=1, temperature=0, user="%s-%d" % (user_prefix, i))
        return raw.headers["x-qgate-variant"]

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        for v in ex.map(one, range(n)):
            counts[v] = counts.get(v, 0) + 1
    return counts


def test_split_shares_stickiness_and_moves(server):
    status, _ = server.admin_call("POST", "/admin/split", {
        "model": "smollm2", "weights": {"smollm2-fp16": 50, "smollm2-gptq": 30, "smollm2-awq": 20}})
    assert status == 200
    n = 400
    first = {}

    def assign(prefix):
        out = {}

        def one(i):
            raw = server.client.completions.with_raw_response.create(
                model="smollm2", prompt="Hi", max_tokens=1, temperature=0, user="%s-%d" % (prefix, i))
            return i, raw.headers["x-qgate-variant"]

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            for i, v in ex.map(one, range(n)):
                out[i] = v
        return out

    first = assign("u")
    for variant, w in (("smollm2-fp16", .5), ("smollm2-gptq", .3), ("smollm2-awq", .2)):
        share = sum(1 for v in first.values() if v == variant)
        sigma = math.sqrt(n * w * (1 - w))
        assert abs(share - n * w) < 5 * sigma, (variant, share)
    # Sticky: the same users land on the same variants while the split is unchanged.
    assert assign("u") == first
    # Raising gptq 30 -> 55 (shares .5/.3/.2 -> .4/.44/.16): users move only onto gptq, and only
    # its share gain of 14% of them -- the minimum any assignment could move.
    status, table = server.admin_call("POST", "/admin/split", {
        "model": "smollm2", "weights": {"smollm2-fp16": 50, "smollm2-gptq": 55, "smollm2-awq": 20}})
    assert status == 200
    second = assign("u")
    moved = [(first[i], second[i]) for i in range(n) if first[i] != second[i]]
    assert all(to == "smollm2-gptq" for _, to in moved), moved
    assert abs(len(moved) - 0.14 * n) < 5 * math.sqrt(n * 0.14 * 0.86), len(moved)


def test_live_split_changes_under_load(server):
    prompts = ["Count: %d" % k for k in range(4)]
    # Greedy output is the same batched or alone, so each (variant, prompt) has one right answer.
    expected = {}
    for v in VARIANTS:
        for p in prompts:
            _, r = chat(server, p, variant=v, max_tokens=8)
            expected[v, p] = r.choices[0].message.content
    stop = threading.Event()
    results, errors = [], []

    def client_loop(k):
        i = 0
        try:
            while not stop.is_set():
                raw = server.client.chat.completions.with_raw_response.create(
                    model="smollm2", messages=[{"role": "user", "content": prompts[k]}],
                    max_tokens=8, temperature=0, stream=True, user="load-%d-%d" % (k, i))
                variant = raw.headers["x-qgate-variant"]
                text, finish = "", None
                for chunk in raw.parse():
                    for c in chunk.choices:
                        text += c.delta.content or ""
                        finish = c.finish_reason or finish
                results.append((variant, prompts[k], text, finish))
                i += 1
        except Exception as e:  # any non-2xx or broken stream
            errors.append(repr(e))

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    versions = []
    try:
        for j in range(100):
            # Spread the changes over the streams: every 10 changes, wait for another stream to end.
            deadline = time.time() + 60
            while len(results) < j // 10 and time.time() < deadline and not errors:
                time.sleep(0.01)
            if j % 10 == 9:
                status, table = server.admin_call("POST", "/admin/rollback", {"to": "previous"})
            else:
                w = (j * 7) % 10
                status, table = server.admin_call("POST", "/admin/split", {
                    "model": "smollm2", "weights": {"smollm2-fp16": 10 - w, "smollm2-gptq": w, "smollm2-awq": 1}})
            assert status == 200, table
            versions.append(table["version"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert len(results) >= 8
    for variant, prompt, text, finish in results:
        assert finish in ("stop", "length")
        # Not lost, not mixed up: each stream carries exactly its own prompt's answer.
        assert text == expected[variant, prompt], (variant, prompt, text)
    assert len({v for v, _, _, _ in results}) >= 2  # the changes really moved traffic
    assert versions == sorted(versions) and len(set(versions)) == 100
    status, hist = server.admin_call("GET", "/admin/history")
    assert hist["history"][-1]["version"] == versions[-1]


@pytest.mark.parametrize("fault", ["fail", "hang", "overload"])
def test_faulty_variant_falls_back_and_is_readmitted(server, fault):
    assert server.admin_call("POST", "/admin/split", {
        "model": "smollm2", "weights": {"smollm2-fp16": 0, "smollm2-gptq": 1, "smollm2-awq": 0}})[0] == 200
    assert server.admin_call("POST", "/admin/fault", {"variant": "smollm2-gptq", "fault": fault})[0] == 200
    served = []
    try:
        # Under load: 4 concurrent clients, 24 requests, all while the fault is on.
        def one(i):
            headers, resp = chat(server, "What is 2 + 2?", max_tokens=4, user="f-%s-%d" % (fault, i))
            assert resp.choices[0].finish_reason in ("stop", "length")
            return headers["x-qgate-variant"]

        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            served = list(ex.map(one, range(24)))
        # Every request succeeded (a failure would have raised), all through the baseline.
        assert served == ["smollm2-fp16"] * 24
        if fault != "overload":  # overload is back-pressure, not ill health: no ejection
            assert server.variant_state("smollm2-gptq")["health"] in ("ejected", "half_open")
    finally:
        assert server.admin_call("POST", "/admin/fault", {"variant": "smollm2-gptq", "fault": "none"})[0] == 200
    # Once healthy again (back-off 1-2 s, then probes or a trial request readmit it) it serves.
    deadline = time.time() + 30
    while time.time() < deadline:
        headers, _ = chat(server, "What is 2 + 2?", max_tokens=2)
        if headers["x-qgate-variant"] == "smollm2-gptq":
            break
        time.sleep(0.2)
    assert headers["x-qgate-variant"] == "smollm2-gptq"
    assert server.variant_state("smollm2-gptq")["health"] == "healthy"


def generated_tokens(server, variant):
    _, text = server.metrics_text()
    m = re.search(r'^qgate_worker_generated_tokens_total\{variant="%s"\} (\S+)$' % variant, text, re.M)
    return float(m.group(1)) if m else 0.0


def test_non_streaming_request_falls_back_when_its_variant_fails_midway(server):
    # A non-streaming client has received nothing while the variant generates, so a failure
    # after some tokens is still a failure before the first byte: the fallback answers whole.
    result = {}

    def ask():
        result["raw"] = server.client.chat.completions.with_raw_response.create(
            model="smollm2", messages=[{"role": "user", "content": "Count from 1 to 500."}],
            max_tokens=300, temperature=0, extra_body={"ignore_eos": True},
            extra_headers={"x-qgate-variant": "smollm2-gptq"})

    before = generated_tokens(server, "smollm2-gptq")
    t = threading.Thread(target=ask)
    t.start()
    try:
        # Wait until the variant is producing this request's tokens, then make it fail.
        deadline = time.time() + 60
        while generated_tokens(server, "smollm2-gptq") < before + 5 and time.time() < deadline:
            time.sleep(0.05)
        assert generated_tokens(server, "smollm2-gptq") >= before + 5
        assert server.admin_call("POST", "/admin/fault", {"variant": "smollm2-gptq", "fault": "fail"})[0] == 200
        t.join(timeout=120)
    finally:
        assert server.admin_call("POST", "/admin/fault", {"variant": "smollm2-gptq", "fault": "none"})[0] == 200
    raw = result["raw"]
    assert raw.headers["x-qgate-variant"] == "smollm2-fp16"
    assert raw.headers["x-qgate-attempts"] == "2"
    resp = raw.parse()
    assert resp.usage.completion_tokens == 300 and resp.choices[0].finish_reason == "length"
    # Exactly the baseline's own answer: nothing of the failed attempt's text leaked into it.
    direct = server.client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count from 1 to 500."}],
        max_tokens=300, temperature=0, extra_body={"ignore_eos": True},
        extra_headers={"x-qgate-variant": "smollm2-fp16"})
    assert resp.choices[0].message.content == direct.choices[0].message.content
    # Readmission of the ejected variant is covered by the fault test above; wait it out here so
    # later tests see a healthy split.
    deadline = time.time() + 30
    while time.time() < deadline and server.variant_state("smollm2-gptq")["health"] != "healthy":
        time.sleep(0.2)


def test_restart_keeps_the_latest_version():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        s.start()
        status, table = s.admin_call("POST", "/admin/split", {
            "model": "smollm2", "weights": {"smollm2-fp16": 1, "smollm2-gptq": 2, "smollm2-awq": 3}})
        assert status == 200
        status, _ = s.admin_call("POST", "/admin/drain", {"variant": "smollm2-awq"})
        assert status == 200
        s.stop()
        s.start()
        try:
            _, now = s.admin_call("GET", "/admin/routes")
            assert now["version"] == table["version"]
            route = next(r for r in now["routes"] if r["model"] == "smollm2")
            assert route == next(r for r in table["routes"] if r["model"] == "smollm2")
            assert s.variant_state("smollm2-awq")["drained"] is True
            assert s.admin_call("POST", "/admin/rollback", {"to": "version", "version": 1})[0] == 200
        finally:
            s.stop()
