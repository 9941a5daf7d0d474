"""Online shadow scoring on the real model: a real `qgate serve` re-scores every response (sample
ratio 1.0, the baseline's own responses included as the control) with the FP16 baseline, and the
metrics must show the expected ordering -- the baseline agrees with its own greedy tokens on every
token, the 4-bit variants less, with higher NLL under the baseline.
"""
import concurrent.futures
import tempfile

import pytest

import qgate_serve as qs

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.skipif(qs.missing_prerequisites() is not None,
                                reason=str(qs.missing_prerequisites()))

PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a short poem about the sea.",
    "List three uses of a paperclip.",
    "What is the capital of France, and why is it famous?",
]
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as d:
        s = qs.Server(d, extra_config="shadow: {sample_ratio: 1.0, include_baseline: true, "
                                      "queue_capacity: 64, threads: 1}")
        s.start()
        yield s
        s.stop()


def ask(server, variant, prompt):
    r = server.client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=MAX_TOKENS, extra_headers={"x-qgate-variant": variant})
    assert r.headers["x-qgate-variant"] == variant
    return r.parse().usage.completion_tokens


def test_shadow_scores_order_the_variants(server):
    completion_tokens = {v: 0 for v in qs.VARIANTS}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        jobs = {pool.submit(ask, server, v, p): v for v in qs.VARIANTS for p in PROMPTS}
        for job, variant in jobs.items():
            completion_tokens[variant] += job.result()

    def all_scored():
        m = qs.Metrics(server.metrics_text()[1])
        return all(m.value("qgate_shadow_responses_total", route="smollm2", variant=v,
                           outcome="scored") == len(PROMPTS) for v in qs.VARIANTS)
    # Scoring runs at idle priority after the requests; the queue holds all 12 responses.
    qs.wait_for(all_scored, 300, "every response to be shadow-scored", alive=server._alive)

    m = qs.Metrics(server.metrics_text()[1])
    agreement, mean_nll = {}, {}
    for v in qs.VARIANTS:
        tokens = m.value("qgate_shadow_tokens_total", route="smollm2", variant=v)
        # Every generated token is scored, the end-of-turn token included.
        assert tokens == completion_tokens[v], v
        agreement[v] = m.value("qgate_shadow_top1_agreements_total", route="smollm2", variant=v) / tokens
        mean_nll[v] = (m.value("qgate_shadow_token_nll_sum", route="smollm2", variant=v)
                       / m.value("qgate_shadow_token_nll_count", route="smollm2", variant=v))
        assert m.value("qgate_shadow_token_nll_count", route="smollm2", variant=v) == tokens
    print("shadow agreement", agreement, "mean NLL", mean_nll)
    # Greedy tokens of the baseline are its own argmax: teacher forcing must reproduce them all.
    assert agreement["smollm2-fp16"] == 1.0
    for v in ("smollm2-gptq", "smollm2-awq"):
        assert 0.3 < agreement[v] < 1.0, (v, agreement)
        assert mean_nll[v] > mean_nll["smollm2-fp16"], (v, mean_nll)
    assert m.value("qgate_shadow_queue_depth") == 0
    # Nothing was dropped: the queue had room for every response.
    assert not m.select("qgate_shadow_responses_total", outcome="dropped")
