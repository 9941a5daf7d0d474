#!/usr/bin/env python3
"""Batch-1 prefill and decode tokens/s: qgate vs llama.cpp on the same GGUF, in the same run.

llama.cpp comes from the PyPI package llama-cpp-python, which builds it from source on this
machine (GGML_NATIVE, so it gets the same -march=native treatment as qgate). Both engines get the
same prompt token ids, the same thread count, greedy decoding, and are measured alternately, so
machine noise hits both. llama.cpp is timed around its eval() calls from Python, so each decode
token also pays one Python call and a numpy argmax over the vocabulary (tens of microseconds, well
under 1% of a step here); qgate's own benchmark binary times its steps in C++.

--qgate-baseline-bench adds a second qgate build (e.g. the previous commit) to the same rounds,
so a change is measured against its predecessor and llama.cpp under the same machine noise.

  python3 bench/compare_llamacpp.py --qgate-bench build/bench/qgate_engine_bench \
      --model models/SmolLM2-135M-Instruct.Q4_1.gguf --threads 2 --rounds 3 \
      [--qgate-baseline-bench /tmp/old/build/bench/qgate_engine_bench]
"""
import argparse
import json
import statistics
import subprocess
import time


def prompt_ids(n):
    return [1000 + (i * 7) % 30000 for i in range(n)]


def bench_llamacpp(model, threads, n_prompt, n_gen):
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    def next_token():
        # The last evaluated token's logits, read from the context: with logits_all=False
        # llama-cpp-python (0.3.x) no longer copies them into Llama.scores.
        logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).argmax())

    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=n_prompt + n_gen + 8,
                n_batch=512, verbose=False, logits_all=False)
    ids = prompt_ids(n_prompt)
    llm.reset()
    llm.eval(ids[:8])  # warm-up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill_s = time.perf_counter() - t0
    tok = next_token()
    t0 = time.perf_counter()
    for _ in range(n_gen):
        llm.eval([tok])
        tok = next_token()
    decode_s = time.perf_counter() - t0
    del llm
    return n_prompt / prefill_s, n_gen / decode_s


def bench_qgate(binary, model, threads, n_prompt, n_gen):
    out = subprocess.run([binary, "--model", model, "--threads", str(threads), "--prompt-tokens",
                          str(n_prompt), "--gen-tokens", str(n_gen), "--repeats", "1"],
                         check=True, capture_output=True, text=True).stdout
    summary = [json.loads(l) for l in out.splitlines() if '"summary"' in l][0]
    return summary["prefill_tps"], summary["decode_tps"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qgate-bench", required=True)
    ap.add_argument("--qgate-baseline-bench", help="another qgate build's qgate_engine_bench")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows = {"qgate": [], "llama.cpp": []}
    if a.qgate_baseline_bench:
        rows["qgate baseline"] = []
    for r in range(a.rounds):
        rows["qgate"].append(bench_qgate(a.qgate_bench, a.model, a.threads, a.prompt_tokens, a.gen_tokens))
        if a.qgate_baseline_bench:
            rows["qgate baseline"].append(bench_qgate(a.qgate_baseline_bench, a.model, a.threads,
                                                      a.prompt_tokens, a.gen_tokens))
        rows["llama.cpp"].append(bench_llamacpp(a.model, a.threads, a.prompt_tokens, a.gen_tokens))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]}" for k, v in rows.items()), flush=True)
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in rows.items()}
    print(f"\n| engine | prefill tokens/s ({a.prompt_tokens}-token prompt) | decode tokens/s |")
    print("|---|---|---|")
    for k, (p, d) in med.items():
        print(f"| {k} | {p:.1f} | {d:.1f} |")
    for peer in [k for k in med if k != "qgate"]:
        print(f"| ratio qgate / {peer} | {med['qgate'][0] / med[peer][0]:.2f}x | "
              f"{med['qgate'][1] / med[peer][1]:.2f}x |")

if __name__ == "__main__":
    main()
