"""qgate's tokenizer against HF `tokenizers`, id for id.

The reference is an HF Tokenizer built from the GGUF's own vocab, merges and token types
(make_hf_tokenizer.py). qgate encodes the same strings twice through qgate_tokenize_tool: once
loaded from the GGUF, once from the tokenizer.json the reference saved. Every id list must equal
HF's and decoding must give back the input. The split patterns of the other pre-tokenizers
(GPT-2, Llama-3, Qwen2) are compared piece for piece with HF's Split on the same strings, and a
sweep pushes every code point of planes 0-3 and 14 through the real tokenizer so the generated
Unicode tables are checked where they matter.

The strings (>= 2,000) are generated from a fixed seed. Run:
  QGATE_BUILD_DIR=build python3 -m pytest tests/python/test_tokenizer_vs_hf.py
"""
import json
import pathlib
import random
import subprocess
import unicodedata

import pytest
from tokenizers import Regex, Tokenizer, pre_tokenizers

from make_hf_tokenizer import GPT2_PATTERN, LLAMA3_PATTERN, QWEN2_PATTERN, build_hf_tokenizer

SEED = 20240611

PROSE = ("The quick brown fox jumps over the lazy dog. It's a truth universally acknowledged that "
         "a single man in possession of a good fortune must be in want of a wife. We'll see; "
         "they've said they'd come, but I'm not sure you're right. HELLO World, don't SHOUT! "
         "Mr. O'Neil paid $1,234.56 (approx. 12%) on 2024-06-11 at 10:30am.").split(" ")
CODE = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "fn main() { let v: Vec<u8> = (0..=255).collect(); println!(\"{:?}\", &v[..]); }",
    "const f = async (x) => { await fetch(`/api/${x}`); return x?.y ?? 0; };",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%ann%';",
    "<div class=\"x\">&nbsp;<a href='#'>link</a></div>\r\n",
    "    for (int i = 0; i < n; ++i) {\r\n        sum += a[i] * b[i];\r\n    }\r\n",
    "x = [1, 2, 3]\ny = {'a': 1, \"b\": 2}\nprint(x[-1], y.get('a'))",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
    "template <typename T> T max(T a, T b) { return a > b ? a : b; }",
]
WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", " \t ", "\u00a0",
              "\u3000", "\u2028", "\u2029", "\u0085", "\u000b", "\u000c", "\u2003", "\u200b", "\u001c"]
NUMBERS = ["0", "7", "42", "123", "1234", "12345678901234567890", "3.14159", "-17", "1e-9", "0x1F",
           "1,000,000", "٣٤٥", "१२३", "½", "²", "Ⅻ", "①②", "𝟘𝟙𝟚"]
EMOJI = ["😀", "🤗", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "🧑🏿‍🚀", "✨", "🫠", "1️⃣"]
SCRIPTS = ["你好，世界", "日本語のテキストです。", "한국어 문장", "مرحبا بالعالم", "שלום עולם",
           "नमस्ते दुनिया", "Привет, мир", "Γειά σου Κόσμε", "สวัสดีครับ", "ሰላም ልዑል", "ქართული",
           "Ελληνικά", "Tiếng Việt có dấu", "Zürich Straße façade naïve", "e\u0301 a\u0308 n\u0303",
           "ﬁ ﬂ ǅ ǈ", "ſ x'ſ y'ſx z'Sx a'LLama b'Rex c'Ve'DX"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL",
                "'D", "'x", "'", "''", "it's", "IT'S", "we're", "We'Re", "they've", "I'm", "you'll",
                "she'd", "rock'n'roll", "'''", "' s"]
PUNCT = ["!!!", "...", "?!", "---", "***", "()", "[]{}", "<>", "@#$%^&*", "~`|\\", "«»", "“”", "—",
         "…", "¿¡", "。、", "!!\n", "?\r\n\r\n", "::", "->", "=>", "!=", "==="]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|", "<|im_start", "|im_start|>",
           "<|im_end|>>", "<<|im_end|>", "<|IM_START|>", "<repo_name>", "<file_sep>", "<jupyter_code>",
           "<|im_start|>user\n", "<|im_start|><|im_end|>", "<empty_output>", "<filename", "</s>", "<s>"]
EDGE = ["\ufffd", "\ufffd\ufffd", "\u0080", "\u00ff", "\u00ad", "\u00c0", "\ufffe", "\uffff",
        "\U0001fffe", "\U0010ffff", "\U00010000", "a\U0001f600b", "\U0001d400x", "\u200d", "\ufeff",
        "\u0000", "\u0001", "\u007f", "\u202e", "\U000e0001", "\ue000", "𝐀𝐁𝐂"]


def _assigned(cp: int) -> bool:
    return unicodedata.category(chr(cp)) not in ("Cn", "Cs")


BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x9FF),
          (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF), (0x3000, 0x30FF),
          (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFB00, 0xFFFD), (0x10000, 0x1FFFF), (0x20000, 0x2A6DF)]


def _random_unicode(rng: random.Random, n: int) -> str:
    out = []
    while len(out) < n:
        lo, hi = rng.choice(BLOCKS)
        cp = rng.randint(lo, hi)
        if _assigned(cp):
            out.append(chr(cp))
    return "".join(out)


def generate_strings() -> list[str]:
    rng = random.Random(SEED)
    pools = [PROSE, CODE, WHITESPACE, NUMBERS, EMOJI, SCRIPTS, CONTRACTIONS, PUNCT, SPECIAL, EDGE]
    strings = []
    # Each pool on its own first, so every listed case is seen in isolation.
    for pool in pools:
        strings.extend(pool)
    strings.extend(CODE)
    for _ in range(1500):  # mixtures of pieces from several pools
        k = rng.randint(1, 12)
        parts = []
        for _ in range(k):
            pool = rng.choice(pools)
            parts.append(rng.choice(pool))
            if rng.random() < 0.5:
                parts.append(rng.choice([" ", "", "", "\n", "  ", "\t"]))
        strings.append("".join(parts))
    for _ in range(300):  # random code points from many blocks, with some ASCII glue
        s = _random_unicode(rng, rng.randint(1, 40))
        if rng.random() < 0.5:
            pos = rng.randint(0, len(s))
            s = s[:pos] + rng.choice([" ", "  ", "a", "1", "'s", "\n"]) + s[pos:]
        strings.append(s)
    for _ in range(200):  # whitespace and digit runs, where the split patterns are subtle
        alphabet = [" ", "\t", "\n", "\r", "a", "1", "!", "'", "\u00a0", "é", "5"]
        strings.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20))))
    strings.append("")
    strings.append(" ".join(PROSE) * 20)  # a few KB in one piece
    return strings


def codepoint_sweep() -> list[str]:
    """Every non-surrogate code point of planes 0-3 and 14, 64 per line, each in four contexts."""
    cps = [c for c in list(range(0x40000)) + list(range(0xE0000, 0xF0000))
           if not 0xD800 <= c <= 0xDFFF and c not in (0x0A, 0x0D)]
    lines = []
    for k in range(0, len(cps), 64):
        chunk = [chr(c) for c in cps[k:k + 64]]
        lines.append("".join(f"a{c} {c}1{c}'{c}\t" for c in chunk))
    return lines


def run_tool(build_dir: pathlib.Path, args: list[str], texts: list[str]) -> list[dict]:
    tool = build_dir / "tests" / "qgate_tokenize_tool"
    if not tool.exists():
        pytest.fail(f"{tool} not built (ninja qgate_tokenize_tool)")
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    proc = subprocess.run([str(tool), *args], input=stdin.encode(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    # split("\n"), not splitlines(): U+2028 and friends may appear raw inside the JSON strings.
    out = [json.loads(line) for line in proc.stdout.decode().split("\n") if line]
    assert len(out) == len(texts)
    return out


@pytest.fixture(scope="module")
def hf(model_path, tmp_path_factory):
    tok = build_hf_tokenizer(str(model_path))
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tok.save(str(path))
    return tok, path


@pytest.fixture(scope="module")
def strings():
    s = generate_strings()
    assert len(s) >= 2000
    return s


def _mismatches(texts, expected, got):
    return [(t, e, g["ids"]) for t, e, g in zip(texts, expected, got) if e != g["ids"]]


def test_ids_match_hf_via_gguf_and_json(hf, strings, model_path, build_dir):
    tok, json_path = hf
    expected = [e.ids for e in tok.encode_batch(strings, add_special_tokens=False)]
    via_gguf = run_tool(build_dir, ["--gguf", str(model_path)], strings)
    via_json = run_tool(build_dir, ["--tokenizer-json", str(json_path)], strings)
    bad_gguf = _mismatches(strings, expected, via_gguf)
    bad_json = _mismatches(strings, expected, via_json)
    paths_differ = sum(a["ids"] != b["ids"] for a, b in zip(via_gguf, via_json))
    bad_round_trip = [(t, g["decoded"]) for t, g in zip(strings, via_gguf) if g["decoded"] != t]
    print(f"\ntokenizer vs HF: {len(strings)} strings, {sum(map(len, expected))} tokens; "
          f"mismatches gguf={len(bad_gguf)} json={len(bad_json)}, gguf-vs-json={paths_differ}, "
          f"round-trip failures={len(bad_round_trip)}")
    assert not bad_gguf[:5], bad_gguf[:5]
    assert not bad_json[:5], bad_json[:5]
    assert paths_differ == 0
    assert not bad_round_trip[:5], bad_round_trip[:5]
    # The reference itself must round-trip, or the comparison would prove little.
    assert all(tok.decode(e, skip_special_tokens=False) == t for t, e in zip(strings, expected))


def test_every_codepoint_matches_hf(hf, model_path, build_dir):
    tok, _ = hf
    lines = codepoint_sweep()
    expected = [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
    got = run_tool(build_dir, ["--gguf", str(model_path)], lines)
    bad = _mismatches(lines, expected, got)
    print(f"\ncode point sweep: {len(lines)} lines, mismatches={len(bad)}")
    assert not bad[:3], [b[0][:80] for b in bad[:3]]


@pytest.mark.parametrize("mode,pattern", [("gpt2", GPT2_PATTERN), ("llama3", LLAMA3_PATTERN),
                                          ("qwen2", QWEN2_PATTERN)])
def test_split_patterns_match_hf(mode, pattern, strings, build_dir):
    split = pre_tokenizers.Split(Regex(pattern), "isolated")
    texts = strings + codepoint_sweep()[::16]
    got = run_tool(build_dir, ["--pretokenize", mode], texts)
    bad = []
    for t, g in zip(texts, got):
        want = [p for p, _ in split.pre_tokenize_str(t)]
        if want != g["pieces"]:
            bad.append((t, want, g["pieces"]))
    print(f"\n{mode} split: {len(texts)} strings, mismatches={len(bad)}")
    assert not bad[:3], bad[:3]


def test_smollm_split_matches_hf(strings, build_dir):
    seq = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.Split(Regex(GPT2_PATTERN), "isolated")])
    got = run_tool(build_dir, ["--pretokenize", "smollm"], strings)
    bad = [(t, g["pieces"]) for t, g in zip(strings, got)
           if [p for p, _ in seq.pre_tokenize_str(t)] != g["pieces"]]
    assert not bad[:3], bad[:3]


def test_hf_json_loads_the_same_metadata(hf, model_path, build_dir):
    # Special-token text is matched on both paths; a near miss stays ordinary text.
    _, json_path = hf
    texts = ["<|im_start|>user\nhi<|im_end|>", "<|im_start|"]
    a = run_tool(build_dir, ["--gguf", str(model_path)], texts)
    b = run_tool(build_dir, ["--tokenizer-json", str(json_path)], texts)
    assert [x["ids"] for x in a] == [x["ids"] for x in b]
    assert a[0]["ids"][0] == 1 and a[0]["ids"][-1] == 2
    assert 1 not in a[1]["ids"]


def test_bytes_without_tokens_are_dropped_like_hf(hf, model_path, build_dir):
    # SmolLM2 has no token for some bytes (control bytes, lead bytes of planes 4+); HF's BPE
    # without an unk token drops them, and so must qgate. Round trip cannot hold here.
    tok, _ = hf
    texts = ["a\x04b\x06", "\x13\x14\x16\x1d", "x\U00040000y", "\U000f0000\U00100000 z", "\x7f\x04 7"]
    expected = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    got = run_tool(build_dir, ["--gguf", str(model_path)], texts)
    assert [g["ids"] for g in got] == expected
