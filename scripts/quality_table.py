#!/usr/bin/env python3
"""Prints the docs/QUALITY.md table from the results scripts/quality_report.sh leaves in a folder:
eval.json (qgate eval --json with several --model, all against the fp16 baseline),
<name>/qgate_quantize.json and <name>.quantize.log (GNU time -v output of qgate quantize)."""
import json
import os
import re
import sys

ORDER = ["fp16", "gguf-q4_1", "rtn-g64", "gptq-g64", "gptq-g64-actorder", "gptq-g128", "awq-g64"]


def dir_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def time_log(path):
    """(wall seconds, peak RSS bytes) from a GNU time -v log, or (None, None)."""
    if not os.path.exists(path):
        return None, None
    text = open(path).read()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    seconds = None
    if wall:
        parts = [float(p) for p in wall.group(1).split(":")]
        seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return seconds, int(rss.group(1)) * 1024 if rss else None


def main(folder):
    results = json.load(open(os.path.join(folder, "eval.json")))
    if isinstance(results, dict):
        results = [results]
    by_name = {}
    for ev in results:
        path = ev["model"].rstrip("/")
        name = "gguf-q4_1" if path.endswith(".gguf") else os.path.basename(path)
        by_name[name] = ev
    first = results[0]
    fp16_ppl = first["baseline_perplexity"]
    # The baseline's own row: its perplexity comes with every result; KL 0 and agreement 1 by
    # definition.
    by_name.setdefault("fp16", {"model": first["baseline"], "perplexity": fp16_ppl,
                                "mean_kl": 0.0, "top1_agreement": 1.0, "weight_bytes": None})
    print("| variant | perplexity | vs FP16 | mean KL vs FP16 (nats/token) | top-1 agreement | "
          "size on disk (MB) | weight memory (MB) | quantize time (s) | quantize peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ORDER:
        ev = by_name.get(name)
        if ev is None:
            continue
        model_path = ev["model"]
        secs, rss = time_log(os.path.join(folder, name + ".quantize.log"))
        manifest = os.path.join(model_path, "qgate_quantize.json")
        if os.path.exists(manifest):
            secs = json.load(open(manifest))["seconds"]
        delta = 100.0 * (ev["perplexity"] / fp16_ppl - 1.0)
        wb = ev.get("weight_bytes")
        print(f"| {name} | {ev['perplexity']:.3f} | {delta:+.2f}% | {ev['mean_kl']:.4f} | "
              f"{ev['top1_agreement']:.4f} | {dir_bytes(model_path) / 1e6:.1f} | "
              f"{'see note' if wb is None else f'{wb / 1e6:.1f}'} | "
              f"{'-' if secs is None else f'{secs:.1f}'} | {'-' if rss is None else f'{rss / 1e6:.0f}'} |")
    print(f"\nscored tokens: {first['scored_tokens']} of {first['tokens']} "
          f"(context {first['context']}, stride {first['stride']}, text {first['text']}), "
          f"eval wall time {first['seconds']:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/quality")
