"""qgate's safetensors writer, checked outside C++.

The GoogleTest SafetensorsWriter.WritesFileForPython writes a file into $QGATE_WRITER_OUT; here it
is parsed with nothing but json + numpy (layout, padding, offsets, alignment, values, and the
GPTQ tensors decoded by the AutoGPTQ rules), then, when the `safetensors` package is installed,
loaded with it and compared byte for byte with what the reference serializer writes for the same
tensors and metadata.
"""
import json
import os
import pathlib
import struct
import subprocess

import numpy as np
import pytest

NP_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64, "I8": np.int8,
             "U8": np.uint8}
PREFIX = "model.layers.0.mlp.down_proj."


@pytest.fixture(scope="module")
def written(build_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("writer")
    binary = pathlib.Path(build_dir) / "tests" / "qgate_engine_tests"
    env = dict(os.environ, QGATE_WRITER_OUT=str(out))
    r = subprocess.run([str(binary), "--gtest_filter=SafetensorsWriter.WritesFileForPython"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "[  PASSED  ] 1 test" in r.stdout, r.stdout + r.stderr
    return out / "writer_check.safetensors"


def parse(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8:8 + n].decode("utf-8")
    return raw, n, text, json.loads(text)


def test_layout_by_json_and_numpy(written):
    raw, n, text, header = parse(written)
    assert n % 8 == 0
    assert text.rstrip(" ").endswith("}") and len(text) - len(text.rstrip(" ")) < 8
    assert text.startswith('{"__metadata__":')
    assert header.pop("__metadata__") == {"format": "pt", "quantizer": 'qgate "test"'}
    data = raw[8 + n:]
    # Data order is the header order; offsets contiguous, covering the data section exactly, and
    # every tensor aligned to its element size (the data section starts 8-aligned).
    end = 0
    tensors = {}
    for name, info in header.items():
        begin, stop = info["data_offsets"]
        dtype = np.dtype(NP_DTYPES[info["dtype"]])
        assert begin == end, name
        assert (8 + n + begin) % dtype.itemsize == 0, name
        assert stop - begin == int(np.prod(info["shape"], dtype=np.int64)) * dtype.itemsize, name
        tensors[name] = np.frombuffer(data[begin:stop], dtype=dtype).reshape(info["shape"])
        end = stop
    assert end == len(data)
    assert len(tensors) == 10
    np.testing.assert_array_equal(tensors["model.embed.f32"],
                                  (0.5 * np.arange(15, dtype=np.float32) - 3).reshape(3, 5))
    np.testing.assert_array_equal(tensors["model.norm.f16"].view(np.uint16), 0x3C00 + np.arange(7))
    np.testing.assert_array_equal(tensors["i8"], [-128, -1, 0, 1, 127])
    assert tensors["step"].shape == () and int(tensors["step"]) == -(1 << 40)
    assert tensors["empty"].shape == (0,)
    assert tensors['name with "quotes" and \\'].shape == (0,)

    # GPTQ: q[n][k] = (k + n) % 16 packed along K, sym zero 8 stored as 7 (v1), scales (1+n)/64.
    qweight = tensors[PREFIX + "qweight"].astype(np.uint32).astype(np.uint64)
    assert qweight.shape == (8, 32)
    nib = (qweight[:, :, None] >> np.arange(0, 32, 4, dtype=np.uint64)) & np.uint64(15)
    q = nib.transpose(0, 2, 1).reshape(64, 32).T
    np.testing.assert_array_equal(q, (np.arange(64)[None, :] + np.arange(32)[:, None]) % 16)
    assert tensors[PREFIX + "qzeros"].shape == (2, 4)
    assert (tensors[PREFIX + "qzeros"].astype(np.uint32) == 0x77777777).all()
    np.testing.assert_array_equal(tensors[PREFIX + "scales"].astype(np.float32),
                                  np.tile((1 + np.arange(32, dtype=np.float32)) / 64, (2, 1)))
    np.testing.assert_array_equal(tensors[PREFIX + "g_idx"], np.arange(64) // 32)


def test_matches_reference_safetensors_package(written):
    st = pytest.importorskip("safetensors.numpy")
    loaded = st.load_file(str(written))
    _, _, _, header = parse(written)
    meta = header.pop("__metadata__")
    assert set(loaded) == set(header)
    # The reference serializer writes the same file for the same tensors and metadata, up to the
    # order of the metadata keys (a Rust HashMap there, so it varies from run to run): same header
    # length and padding, same tensor entries in the same order, same data bytes.
    ours_raw, ours_n, _, ours = parse(written)
    ref_path = written.parent / "reference.safetensors"
    ref_path.write_bytes(st.save(loaded, metadata=meta))
    ref_raw, ref_n, _, ref = parse(ref_path)
    assert ours_n == ref_n
    assert ours.pop("__metadata__") == ref.pop("__metadata__")
    assert list(ours.items()) == list(ref.items())
    assert ours_raw[8 + ours_n:] == ref_raw[8 + ref_n:]
