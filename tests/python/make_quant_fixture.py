"""Writes tests/data/quant/quant_fixtures.safetensors: tiny GPTQ and AWQ layers packed by an
independent NumPy implementation of the published layouts, with NumPy's own dequantization.

This file never calls qgate. It follows the rules as documented by the reference code:
- GPTQ (AutoGPTQ qlinear_cuda_old.py): qweight int32 [K*bits/32, N], value j of a word at bit
  bits*j, packed along K; qzeros int32 [G, N*bits/32] packed the same way along N; scales fp16
  [G, N]; g_idx int32 [K]. v1 ("gptq") stores zero-1 by subtracting 0x11111111 (8-bit 0x01010101)
  from each whole word, mod 2^32 (AutoGPTQ/GPTQModel convert_gptq_v2_to_v1_format); v2 stores the
  zero as is.
- AWQ GEMM (AutoAWQ gemm.py): qweight int32 [K, N/8] packed along N, nibble i holding column
  8c + [0,2,4,6,1,3,5,7][i]; qzeros int32 [K/g, N/8] the same; scales fp16 [K/g, N]; zeros as is.
- W[n, k] = scale[g, n] * (q[n, k] - zero[g, n]) with g = g_idx[k], computed in float32.

The safetensors container is written by hand (json + numpy) as well. Values come from a fixed
64-bit LCG rather than numpy's RNG, whose streams may change between numpy versions: the output
is byte-for-byte reproducible, and test_quant_fixture.py checks that the committed file matches.

Usage: python tests/python/make_quant_fixture.py [OUTPUT_DIR]   (default: tests/data/quant)
"""
import json
import pathlib
import struct
import sys

import numpy as np

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
FILE_NAME = "quant_fixtures.safetensors"


class Lcg:
    """Knuth's MMIX LCG; the top bits are used."""

    def __init__(self, seed: int):
        self.x = seed & (2**64 - 1)

    def next(self, hi: int) -> int:
        self.x = (6364136223846793005 * self.x + 1442695040888963407) & (2**64 - 1)
        return (self.x >> 33) % hi

    def ints(self, shape, hi: int) -> np.ndarray:
        n = int(np.prod(shape))
        return np.array([self.next(hi) for _ in range(n)], dtype=np.int64).reshape(shape)


def pack_words(values: np.ndarray, bits: int) -> np.ndarray:
    """values [..., 32/bits] → uint32 [...], element j at bit bits*j."""
    per = 32 // bits
    assert values.shape[-1] == per
    words = np.zeros(values.shape[:-1], dtype=np.uint64)
    for j in range(per):
        words |= values[..., j].astype(np.uint64) << np.uint64(bits * j)
    return words


def gptq_tensors(q, zeros, scales16, g_idx, bits, v1):
    n_out, k_in = q.shape
    per = 32 // bits
    # Along K: row r of qweight holds input rows r*per .. r*per+per-1 of every column n.
    qweight = pack_words(q.T.reshape(k_in // per, per, n_out).transpose(0, 2, 1), bits)
    g = zeros.shape[0]
    qzeros = pack_words(zeros.reshape(g, n_out // per, per), bits)
    if v1:
        offset = 0x11111111 if bits == 4 else 0x01010101
        qzeros = (qzeros + np.uint64(2**32 - offset)) & np.uint64(0xFFFFFFFF)
    return {
        "qweight": qweight.astype(np.uint32).view(np.int32),
        "qzeros": qzeros.astype(np.uint32).view(np.int32),
        "scales": scales16,
        "g_idx": g_idx.astype(np.int32),
    }


def awq_tensors(q, zeros, scales16):
    n_out, k_in = q.shape
    qt = q.T.reshape(k_in, n_out // 8, 8)
    qweight = pack_words(qt[:, :, AWQ_ORDER], 4)
    g = zeros.shape[0]
    qzeros = pack_words(zeros.reshape(g, n_out // 8, 8)[:, :, AWQ_ORDER], 4)
    return {
        "qweight": qweight.astype(np.uint32).view(np.int32),
        "qzeros": qzeros.astype(np.uint32).view(np.int32),
        "scales": scales16,
    }


def dequantize(q, zeros, scales16, g_idx):
    s = scales16.astype(np.float32)[g_idx, :].T  # [N, K]
    z = zeros.astype(np.float32)[g_idx, :].T
    return (s * (q.astype(np.float32) - z)).astype(np.float32)


def make_layer(rng, k_in, n_out, bits, group, act_order=False, sym=False):
    g = k_in if group == -1 else group
    groups = -(-k_in // g)
    maxq = 2**bits - 1
    q = rng.ints((n_out, k_in), maxq + 1)
    if sym:
        zeros = np.full((groups, n_out), (maxq + 1) // 2, dtype=np.int64)
    else:
        zeros = rng.ints((groups, n_out), maxq + 1)
        zeros[0, 0] = 0  # a zero of 0: in v1 it borrows from the next field
        zeros[-1, 7] = 0  # the top nibble of a word: the borrow leaves the word
    # Scales of a few significant bits; float16() makes the stored value the truth.
    scales16 = ((rng.ints((groups, n_out), 2000) + 1) / 8192.0).astype(np.float16)
    if act_order:
        # desc_act: columns quantized in the order perm, group j // g for the j-th of them.
        perm = np.argsort(rng.ints((k_in,), 1 << 30), kind="stable")
        g_idx = np.empty(k_in, dtype=np.int64)
        g_idx[perm] = np.arange(k_in) // g
    else:
        g_idx = np.arange(k_in) // g
    return q, zeros, scales16, g_idx


FIXTURES = [
    # name, method, bits, K, N, group, format, act_order, sym
    ("gptq4_v1_asym", "gptq", 4, 64, 32, 32, "gptq", False, False),
    ("gptq4_v2_actorder_partial", "gptq", 4, 96, 32, 64, "gptq_v2", True, False),
    ("gptq8_v1_sym_perchannel", "gptq", 8, 32, 32, -1, "gptq", False, True),
    ("awq4_g16", "awq", 4, 64, 16, 16, "gemm", False, False),
]


def build() -> bytes:
    rng = Lcg(20240611)
    tensors = {}
    metadata = {"generator": "tests/python/make_quant_fixture.py"}
    for name, method, bits, k_in, n_out, group, fmt, act_order, sym in FIXTURES:
        q, zeros, scales16, g_idx = make_layer(rng, k_in, n_out, bits, group, act_order, sym)
        if method == "gptq":
            packed = gptq_tensors(q, zeros, scales16, g_idx, bits, fmt == "gptq")
            cfg = {"quant_method": "gptq", "bits": bits, "group_size": group,
                   "desc_act": act_order, "sym": sym, "checkpoint_format": fmt}
        else:
            packed = awq_tensors(q, zeros, scales16)
            cfg = {"quant_method": "awq", "bits": bits, "group_size": group,
                   "zero_point": True, "version": fmt}
        for key, value in packed.items():
            tensors[f"{name}.{key}"] = value
        tensors[f"{name}.expected"] = dequantize(q, zeros, scales16, g_idx)
        tensors[f"{name}.q_ref"] = q.astype(np.uint8)
        tensors[f"{name}.zeros_ref"] = zeros.astype(np.uint8)
        metadata[name] = json.dumps(cfg, sort_keys=True)
    return serialize(tensors, metadata)


DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32",
          np.dtype(np.uint8): "U8"}


def serialize(tensors: dict, metadata: dict) -> bytes:
    """safetensors: u64 header length, JSON header padded with spaces to 8, contiguous data.
    Wider dtypes first, then by name, so every tensor is aligned to its element size."""
    order = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in order:
        arr = np.ascontiguousarray(tensors[name])
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main() -> None:
    out_dir = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else (
        pathlib.Path(__file__).resolve().parents[1] / "data" / "quant")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FILE_NAME).write_bytes(build())
    print(out_dir / FILE_NAME)


if __name__ == "__main__":
    main()
