#!/usr/bin/env python3
"""Two qgate builds against each other: batch-1 prefill and decode tokens/s by context length.

Runs qgate_engine_bench of build A (the baseline, e.g. a worktree of the previous commit) and of
build B alternately, for every prompt length and KV cache element type asked for, round after
round, so the machine's drift hits both; prints the medians and the B/A ratios as a Markdown
table. Both binaries must accept --kv-cache-dtype (qgate 2026-12-04 or later).

  python3 bench/engine_ab.py --a /tmp/old/build/bench/qgate_engine_bench \
      --b build/bench/qgate_engine_bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --threads 2 --prompt-tokens 128 512 1536 --kv-cache-dtypes f32 f16 --rounds 3
"""
import argparse
import json
import statistics
import subprocess
import sys


def run_bench(binary, model, threads, prompt_tokens, gen_tokens, dtype):
    cmd = [binary, "--model", model, "--threads", str(threads), "--prompt-tokens",
           str(prompt_tokens), "--gen-tokens", str(gen_tokens), "--repeats", "1",
           "--kv-cache-dtype", dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        row = json.loads(line)
        if row.get("summary"):
            return row["prefill_tps"], row["decode_tps"]
    sys.exit("no summary line from %s" % " ".join(cmd))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="baseline qgate_engine_bench")
    ap.add_argument("--b", required=True, help="qgate_engine_bench under test")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, nargs="+", default=[128, 512, 1536])
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--kv-cache-dtypes", nargs="+", default=["f32", "f16"])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    results = {}  # (prompt, dtype, build) -> [(prefill, decode)]
    for r in range(args.rounds):
        for p in args.prompt_tokens:
            for d in args.kv_cache_dtypes:
                for name, binary in (("a", args.a), ("b", args.b)):
                    res = run_bench(binary, args.model, args.threads, p, args.gen_tokens, d)
                    results.setdefault((p, d, name), []).append(res)
                    print("round %d prompt %d %s %s: prefill %.1f decode %.1f"
                          % (r + 1, p, d, name, *res), file=sys.stderr, flush=True)

    print("| prompt tokens | KV | prefill A | prefill B | B/A | decode A | decode B | B/A |")
    print("|---|---|---|---|---|---|---|---|")
    for p in args.prompt_tokens:
        for d in args.kv_cache_dtypes:
            med = {name: [statistics.median(x[i] for x in results[(p, d, name)]) for i in (0, 1)]
                   for name in ("a", "b")}
            print("| %d | %s | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx |"
                  % (p, d, med["a"][0], med["b"][0], med["b"][0] / med["a"][0],
                     med["a"][1], med["b"][1], med["b"][1] / med["a"][1]))


if __name__ == "__main__":
    main()
