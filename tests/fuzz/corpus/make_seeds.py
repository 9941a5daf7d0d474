#!/usr/bin/env python3
"""Writes the fuzz seed corpus (tiny valid files). GGUF seeds come from the reference writer
(gguf-py's GGUFWriter), so the C++ tests that read them also check compatibility with it.
Safetensors seeds follow the format of huggingface/safetensors (header padded with spaces to a
multiple of 8). Run from anywhere: python3 tests/fuzz/corpus/make_seeds.py"""
import json
import os
import struct

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def write_gguf(name, fill, alignment=None):
    path = os.path.join(HERE, "gguf", name)
    w = gguf.GGUFWriter(path, arch="llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    fill(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny(w):
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "<|im_end|>"])
    w.add_array("tokenizer.ggml.token_type", [1, 1, 3])
    w.add_int8("test.i8", -5)
    w.add_uint64("test.u64", 2**40)
    w.add_float64("test.f64", 0.25)
    w.add_tensor("norm.weight", np.arange(4, dtype=np.float32))
    w.add_tensor("embd.weight", np.arange(16, dtype=np.float16).reshape(2, 8))
    q8 = np.zeros(34, dtype=np.uint8)
    q8[0:2] = np.frombuffer(np.float16(0.5).tobytes(), dtype=np.uint8)
    q8[2:] = np.arange(32, dtype=np.uint8)
    w.add_tensor("out.weight", q8.reshape(1, 34), raw_dtype=gguf.GGMLQuantizationType.Q8_0)


def quant(w):
    w.add_string("general.name", "quant seed")
    w.add_tensor("a.q4_0", np.zeros((1, 18), dtype=np.uint8),
                 raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor("b.q4_1", np.zeros((1, 40), dtype=np.uint8),
                 raw_dtype=gguf.GGMLQuantizationType.Q4_1)


def kv_only(w):
    w.add_array("test.u16s", [1, 2, 3])
    w.add_string("tokenizer.chat_template", "{{ messages }}")


write_gguf("tiny.gguf", tiny)
write_gguf("quant_align64.gguf", quant, alignment=64)
write_gguf("kv_only.gguf", kv_only)
# Same file as tiny.gguf but labelled version 2: v2 and v3 share one layout.
with open(os.path.join(HERE, "gguf", "tiny.gguf"), "rb") as f:
    data = bytearray(f.read())
struct.pack_into("<I", data, 4, 2)
with open(os.path.join(HERE, "gguf", "tiny_v2.gguf"), "wb") as f:
    f.write(data)


def write_safetensors(name, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for tname, (dtype, shape, raw) in tensors.items():
        header[tname] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(HERE, "safetensors", name), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


write_safetensors("small.safetensors", {
    "model.norm.weight": ("F32", [4], np.arange(4, dtype=np.float32).tobytes()),
    "model.embed.weight": ("F16", [2, 3], np.arange(6, dtype=np.float16).tobytes()),
    "g_idx": ("I32", [3], np.array([0, 0, 1], dtype=np.int32).tobytes()),
}, metadata={"format": "pt"})
write_safetensors("all_dtypes.safetensors", {
    "f32": ("F32", [1], np.ones(1, dtype=np.float32).tobytes()),
    "f16": ("F16", [2], np.ones(2, dtype=np.float16).tobytes()),
    "bf16": ("BF16", [2], b"\x80\x3f\x00\x40"),
    "i32": ("I32", [1, 1], np.ones(1, dtype=np.int32).tobytes()),
    "i8": ("I8", [3], b"\x01\xff\x7f"),
    "u8": ("U8", [0], b""),
    "i64": ("I64", [], np.ones(1, dtype=np.int64).tobytes()),
})
write_safetensors("empty.safetensors", {}, metadata={"note": "no tensors"})
