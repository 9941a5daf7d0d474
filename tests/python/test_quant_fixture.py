"""The GPTQ/AWQ fixture: reproducible, self-consistent, and read correctly by qgate.

1. Regenerating it must give the committed bytes (so the fixture cannot drift from its script).
2. Decoding it with the *reading* rules of the reference code (AutoGPTQ's shift-and-mask,
   GPTQModel's whole-word v1 → v2 add, AutoAWQ's AWQ_REVERSE_ORDER) must give back the values the
   script packed: a check of the NumPy packer from the other direction.
3. qgate's unpack_gptq / unpack_awq must match it exactly (the GoogleTest QuantFixtures.*).
"""
import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURE = ROOT / "tests" / "data" / "quant" / "quant_fixtures.safetensors"
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]
NP_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "U8": np.uint8}


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=NP_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out, meta


def unpack_fields(words, bits):
    """uint32 words [...] → fields [..., 32/bits], field j from bits*j."""
    w = words.astype(np.uint32).astype(np.uint64)
    shifts = np.arange(0, 32, bits, dtype=np.uint64)
    return ((w[..., None] >> shifts) & np.uint64(2**bits - 1)).astype(np.int64)


def test_fixture_regenerates_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(HERE / "make_quant_fixture.py"), str(tmp_path)], check=True,
                   capture_output=True, timeout=120)
    fresh = (tmp_path / FIXTURE.name).read_bytes()
    assert fresh == FIXTURE.read_bytes(), "committed fixture differs from make_quant_fixture.py output"


def test_fixture_decodes_with_reference_reading_rules():
    tensors, meta = read_safetensors(FIXTURE)
    names = [k for k in meta if k != "generator"]
    assert len(names) == 4
    for name in names:
        cfg = json.loads(meta[name])
        q_ref = tensors[f"{name}.q_ref"].astype(np.int64)
        z_ref = tensors[f"{name}.zeros_ref"].astype(np.int64)
        n_out, k_in = q_ref.shape
        bits = cfg["bits"]
        if cfg["quant_method"] == "gptq":
            qw = unpack_fields(tensors[f"{name}.qweight"], bits)  # [K/per, N, per]
            q = qw.transpose(0, 2, 1).reshape(k_in, n_out).T
            words = tensors[f"{name}.qzeros"].astype(np.uint32).astype(np.uint64)
            if cfg["checkpoint_format"] == "gptq":
                words = (words + np.uint64(0x11111111 if bits == 4 else 0x01010101)) & np.uint64(0xFFFFFFFF)
            z = unpack_fields(words, bits).reshape(z_ref.shape)
            g_idx = tensors[f"{name}.g_idx"].astype(np.int64)
        else:
            qw = unpack_fields(tensors[f"{name}.qweight"], 4)[:, :, AWQ_REVERSE_ORDER]  # [K, N/8, 8]
            q = qw.reshape(k_in, n_out).T
            z = unpack_fields(tensors[f"{name}.qzeros"], 4)[:, :, AWQ_REVERSE_ORDER].reshape(z_ref.shape)
            g_idx = np.arange(k_in) // cfg["group_size"]
        np.testing.assert_array_equal(q, q_ref, err_msg=name)
        np.testing.assert_array_equal(z, z_ref, err_msg=name)
        s = tensors[f"{name}.scales"].astype(np.float32)
        w = s[g_idx, :].T * (q.astype(np.float32) - z.astype(np.float32)[g_idx, :].T)
        np.testing.assert_array_equal(w, tensors[f"{name}.expected"], err_msg=name)
    # The v1 fixture has a zero of 0: its stored nibble is 15 (and the next one borrowed).
    v1 = tensors["gptq4_v1_asym.qzeros"].astype(np.uint32)
    assert tensors["gptq4_v1_asym.zeros_ref"][0, 0] == 0 and (v1[0, 0] & 0xF) == 0xF


def test_qgate_reads_fixture_exactly(build_dir):
    binary = pathlib.Path(build_dir) / "tests" / "qgate_engine_tests"
    env = dict(os.environ, QGATE_SOURCE_DIR=str(ROOT))
    r = subprocess.run([str(binary), "--gtest_filter=QuantFixtures.*"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[  PASSED  ] 1 test" in r.stdout, r.stdout
