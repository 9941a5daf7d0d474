#!/usr/bin/env python3
"""Builds an HF `tokenizers` Tokenizer from the tokenizer metadata of a GGUF file.

The result is the reference qgate's C++ tokenizer is compared with (tests/python/
test_tokenizer_vs_hf.py): it is assembled only from the GGUF's own data (vocab, merges, token
types) plus the HF pre-tokenizer that llama.cpp's `tokenizer.ggml.pre` names, so the comparison
checks qgate's BPE and split patterns against HF's implementation of the same definition.

Usage: make_hf_tokenizer.py MODEL.gguf OUT/tokenizer.json
"""
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

CONTROL, USER_DEFINED = 3, 4


def _strings(reader, key):
    field = reader.fields[key]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def _ints(reader, key):
    field = reader.fields[key]
    return [int(field.parts[i][0]) for i in field.data]


def _string(reader, key):
    return _strings(reader, key)[0]


def pre_tokenizer_for(pre: str):
    byte_level_split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    if pre == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("llama-bpe", "llama3"):
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"),
                                        byte_level_split])
    if pre == "qwen2":
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), "isolated"),
                                        byte_level_split])
    raise ValueError(f"tokenizer.ggml.pre {pre!r} has no HF equivalent here")


def build_hf_tokenizer(gguf_path: str) -> Tokenizer:
    reader = gguf.GGUFReader(gguf_path)
    model = _string(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"tokenizer.ggml.model {model!r} is not byte-level BPE")
    pre = _string(reader, "tokenizer.ggml.pre")
    tokens = _strings(reader, "tokenizer.ggml.tokens")
    types = _ints(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _strings(reader, "tokenizer.ggml.merges")]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in ("llama-bpe", "llama3"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizer_for(pre)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t == CONTROL])
    tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                    for i, t in enumerate(types) if t == USER_DEFINED])
    return tok


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    build_hf_tokenizer(sys.argv[1]).save(sys.argv[2])


if __name__ == "__main__":
    main()
