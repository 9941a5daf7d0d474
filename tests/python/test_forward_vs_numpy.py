"""Forward-pass correctness: qgate's logits against an independent NumPy reference.

The reference (llama_reference.py) dequantizes the GGUF with the `gguf` package and runs the
model in float64 with HF conventions (Q/K rows un-permuted, rotate-half RoPE).

Two checks, with these tolerances (per position, relative to the spread `std` of the reference
logits at that position):

1. Logic: qgate in verification mode (matmuls on dequantized weights in double precision)
   must match to max |d| <= 1e-3 * std, identical argmax everywhere, and identical greedy
   continuations of 16 tokens. Measured: max |d| / std < 1e-4.
2. Serving path: qgate's int8-activation kernels (the llama.cpp scheme: activations rounded to
   8 bits per block of 32) must stay within max |d| <= 1.0 * std and mean |d| <= 0.5 * std at
   every position, with top-1 agreement >= 85% over all positions. The rounding is inherent to
   the scheme, and SmolLM2's activations are sensitive to it: on the same file and prompts,
   llama.cpp's own logits are off the reference by worst max 0.66 * std, worst mean 0.33 * std,
   top-1 agreement 74/79; qgate measured 0.73, 0.37, 74/79 (docs/TESTING.md). A real kernel bug
   (wrong scale, offset or nibble order) moves logits by several std.
"""
import pathlib
import subprocess

import numpy as np
import pytest

from llama_reference import LlamaReference
from make_hf_tokenizer import build_hf_tokenizer

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. It",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "1, 2, 3, 4, 5,",
    "Water boils at 100 degrees Celsius at sea level, but at higher altitudes the boiling point",
]
GREEDY = 16


@pytest.fixture(scope="module")
def reference(model_path):
    return LlamaReference(str(model_path))


@pytest.fixture(scope="module")
def prompt_ids(model_path):
    tok = build_hf_tokenizer(str(model_path))
    return [tok.encode(p, add_special_tokens=False).ids for p in PROMPTS]


def run_engine(model_path, build_dir, out, ids, mode):
    tool = pathlib.Path(build_dir) / "tests" / "qgate_logits_tool"
    stdin = "\n".join(" ".join(map(str, x)) for x in ids) + "\n"
    args = [str(tool), str(model_path), str(out), str(GREEDY)] + (["reference"] if mode == "reference" else [])
    subprocess.run(args, input=stdin, text=True, check=True, timeout=900)
    return out


@pytest.fixture(scope="module")
def engine_reference_mode(model_path, build_dir, prompt_ids, tmp_path_factory):
    return run_engine(model_path, build_dir, tmp_path_factory.mktemp("ref"), prompt_ids, "reference")


@pytest.fixture(scope="module")
def engine_serving_mode(model_path, build_dir, prompt_ids, tmp_path_factory):
    return run_engine(model_path, build_dir, tmp_path_factory.mktemp("fast"), prompt_ids, "fast")


@pytest.fixture(scope="module")
def reference_logits(reference, prompt_ids):
    return [reference.logits(ids) for ids in prompt_ids]


def load_logits(out, i, shape):
    return np.fromfile(out / f"logits_{i}.f32", dtype=np.float32).reshape(shape)


@pytest.mark.parametrize("i", range(len(PROMPTS)))
def test_forward_logic_matches_reference(reference_logits, engine_reference_mode, i):
    ref = reference_logits[i]
    got = load_logits(engine_reference_mode, i, ref.shape)
    rel = np.abs(got - ref).max(axis=-1) / ref.std(axis=-1)
    print(f"prompt {i}: verification mode max |d| / std = {rel.max():.2e}")
    assert np.all(rel <= 1e-3), rel
    assert np.array_equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("i", range(len(PROMPTS)))
def test_greedy_continuation_matches_reference(reference, prompt_ids, engine_reference_mode, i):
    got = [int(t) for t in (engine_reference_mode / f"greedy_{i}.txt").read_text().split()]
    assert got == reference.greedy(prompt_ids[i], GREEDY)


def test_serving_kernels_stay_within_int8_tolerance(reference_logits, engine_serving_mode):
    agree = total = 0
    worst_max = worst_mean = 0.0
    for i, ref in enumerate(reference_logits):
        got = load_logits(engine_serving_mode, i, ref.shape)
        spread = ref.std(axis=-1)
        max_rel = np.abs(got - ref).max(axis=-1) / spread
        mean_rel = np.abs(got - ref).mean(axis=-1) / spread
        worst_max = max(worst_max, float(max_rel.max()))
        worst_mean = max(worst_mean, float(mean_rel.max()))
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += ref.shape[0]
    print(f"serving path: worst max |d| / std = {worst_max:.3f}, worst mean |d| / std = "
          f"{worst_mean:.3f}, top-1 agreement {agree}/{total} = {agree / total:.3f}")
    assert worst_max <= 1.0
    assert worst_mean <= 0.5
    assert agree / total >= 0.85
