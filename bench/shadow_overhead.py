#!/usr/bin/env python3
"""Does online shadow scoring cost user traffic anything? User-visible latency of the same load
against `qgate serve` with shadow scoring off and with every response sampled (ratio 1.0, the
worst case), in alternating rounds of one run so drift on a shared machine hits both alike.

Each round starts a fresh server (the three real SmolLM2 variants, one compute thread per worker,
the tests' 50/30/20 split fp16/gptq/awq, sticky by session), drives it with CONCURRENCY streaming chat clients (greedy, MAX_TOKENS tokens, prompts
cycled) for DURATION seconds, and records per request the time to the first content chunk (TTFT)
and to the end of the stream (e2e), as the client sees them. With shadow on it also reads how many
responses the scorer scored, and how many it dropped or had not reached when the load ended: the scorer runs at idle CPU priority with a bounded queue,
so under load it must shed work rather than slow requests.

Usage: bench/shadow_overhead.py [--rounds 2] [--duration 30] [--concurrency 4] [--max-tokens 16]
Needs: build/gateway/qgate (or QGATE_BUILD_DIR), the variants (scripts/prepare_variants.sh) and the
`openai` package (the project venv).
"""
import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import qgate_serve as qs  # noqa: E402  (the tests' server fixture: port 0, ready file, teardown)

PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a short poem about the sea.",
    "List three uses of a paperclip.",
    "What is the capital of France, and why is it famous?",
    "Give me three tips for staying healthy.",
]


def one_request(client, i, max_tokens):
    t0 = time.perf_counter()
    ttft = None
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        temperature=0, max_tokens=max_tokens, stream=True, extra_headers={"x-session-id": str(i)})
    for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - t0
    return ttft if ttft is not None else time.perf_counter() - t0, time.perf_counter() - t0


def run_round(shadow, args):
    extra = ("shadow: {sample_ratio: 1.0, include_baseline: false, queue_capacity: 16, "
                     "threads: 1}\n" if shadow else "shadow: {sample_ratio: 0}\n")
    with tempfile.TemporaryDirectory() as d:
        server = qs.Server(d, extra_config=extra)
        server.start()
        try:
            ttfts, e2es = [], []
            deadline = time.time() + args.duration
            counter = iter(range(10 ** 9))

            def client_loop():
                while time.time() < deadline:
                    t, e = one_request(server.client, next(counter), args.max_tokens)
                    ttfts.append(t)
                    e2es.append(e)
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                for f in [pool.submit(client_loop) for _ in range(args.concurrency)]:
                    f.result()
            m = qs.Metrics(server.metrics_text()[1])
            scored = sum(v for _, v in m.select("qgate_shadow_responses_total", outcome="scored"))
            dropped = sum(v for _, v in m.select("qgate_shadow_responses_total", outcome="dropped"))
            dropped += m.value("qgate_shadow_queue_depth")  # still waiting when the load stopped
        finally:
            server.stop()
    return ttfts, e2es, scored, dropped


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if qs.missing_prerequisites():
        sys.exit(qs.missing_prerequisites())

    results = {False: ([], [], 0, 0), True: ([], [], 0, 0)}
    for r in range(args.rounds):
        for shadow in (False, True):
            t, e, s, dr = run_round(shadow, args)
            old = results[shadow]
            results[shadow] = (old[0] + t, old[1] + e, old[2] + s, old[3] + dr)
            print(f"round {r + 1} shadow={'on ' if shadow else 'off'}: {len(e)} requests, "
                  f"p99 e2e {pct(e, 99) * 1e3:.0f} ms", flush=True)

    out = {"machine": platform.node(), "cpus": os.cpu_count(), "args": vars(args)}
    for shadow in (False, True):
        t, e, s, dr = results[shadow]
        key = "shadow_on" if shadow else "shadow_off"
        out[key] = {"requests": len(e), "ttft_p50_ms": pct(t, 50) * 1e3, "ttft_p99_ms": pct(t, 99) * 1e3,
                    "e2e_p50_ms": pct(e, 50) * 1e3, "e2e_p99_ms": pct(e, 99) * 1e3,
                    "e2e_mean_ms": statistics.mean(e) * 1e3}
        if shadow:
            out[key].update({"shadow_scored": s, "shadow_dropped": dr})
    off, on = out["shadow_off"], out["shadow_on"]
    out["ratios_on_over_off"] = {k: on[k] / off[k] for k in
                                 ("ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "e2e_p99_ms")}
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
