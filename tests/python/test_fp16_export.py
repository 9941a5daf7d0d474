"""The FP16 HF export of the real GGUF, read by the Python ecosystem's own readers.

qgate_export_tool (the same code path as `qgate quantize --method fp16`) writes the directory once;
then:
- `tokenizers` loads tokenizer.json, its JSON equals what make_hf_tokenizer.py builds from the GGUF
  with the `tokenizers` library itself, and it encodes/decodes every string of the tokenizer test
  corpus (>= 2,000, fixed seed) exactly like that reference;
- `safetensors.numpy` reads model.safetensors: metadata {"format": "pt"}, the HF tensor names,
  shapes and dtype F16, and every tensor equal, bit for bit, to the fp16 rounding of the `gguf`
  package's dequantization with Q/K rows un-permuted in numpy (llama_reference.py's formula);
- config.json / generation_config.json / tokenizer_config.json carry the GGUF's hyper-parameters,
  special tokens and chat template.
Run: QGATE_BUILD_DIR=build python3 -m pytest tests/python/test_fp16_export.py
"""
import json
import pathlib
import subprocess

import gguf
import numpy as np
import pytest
from tokenizers import Tokenizer

from make_hf_tokenizer import build_hf_tokenizer
from test_tokenizer_vs_hf import generate_strings

GGUF_TO_HF = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def export_tool(build_dir: pathlib.Path) -> pathlib.Path:
    tool = pathlib.Path(build_dir) / "tests" / "qgate_export_tool"
    if not tool.exists():
        pytest.fail(f"{tool} not built (ninja qgate_export_tool)")
    return tool


@pytest.fixture(scope="module")
def exported(build_dir, model_path, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("fp16") / "smollm2-fp16"
    r = subprocess.run([str(export_tool(build_dir)), str(model_path), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def reader(model_path):
    return gguf.GGUFReader(str(model_path))


def _field(reader, key):
    f = reader.fields[key]
    return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]][0]


def test_directory_holds_exactly_the_hf_files(exported):
    assert sorted(p.name for p in exported.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]


def test_tokenizer_json_equals_the_reference_and_encodes_identically(exported, model_path):
    ref = build_hf_tokenizer(str(model_path))
    ours_text = (exported / "tokenizer.json").read_text(encoding="utf-8")
    assert json.loads(ours_text) == json.loads(ref.to_str())
    ours = Tokenizer.from_str(ours_text)
    strings = generate_strings()
    assert len(strings) >= 200
    for s in strings:
        want = ref.encode(s).ids
        assert ours.encode(s).ids == want, repr(s)
        assert ours.decode(want, skip_special_tokens=False) == ref.decode(want, skip_special_tokens=False)


def test_safetensors_names_shapes_dtypes(exported, reader):
    st = pytest.importorskip("safetensors")
    from safetensors.numpy import load_file
    with st.safe_open(str(exported / "model.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"}
    tensors = load_file(str(exported / "model.safetensors"))
    n_layers = int(_field(reader, "llama.block_count"))
    expected = {"model.embed_tokens.weight": (49152, 576), "model.norm.weight": (576,)}
    shapes = {"input_layernorm.weight": (576,), "post_attention_layernorm.weight": (576,),
              "self_attn.q_proj.weight": (576, 576), "self_attn.k_proj.weight": (192, 576),
              "self_attn.v_proj.weight": (192, 576), "self_attn.o_proj.weight": (576, 576),
              "mlp.gate_proj.weight": (1536, 576), "mlp.up_proj.weight": (1536, 576),
              "mlp.down_proj.weight": (576, 1536)}
    for i in range(n_layers):
        for name, shape in shapes.items():
            expected[f"model.layers.{i}.{name}"] = shape
    assert {k: v.shape for k, v in tensors.items()} == expected  # tied: no lm_head.weight
    assert {v.dtype for v in tensors.values()} == {np.dtype(np.float16)}


def test_every_tensor_is_the_fp16_of_the_unpermuted_gguf_dequantization(exported, reader):
    from safetensors.numpy import load_file
    tensors = load_file(str(exported / "model.safetensors"))
    heads = int(_field(reader, "llama.attention.head_count"))
    kv_heads = int(_field(reader, "llama.attention.head_count_kv"))
    hd = 576 // heads

    def unpermute(m, h):
        # GGUF row h*d + 2i + p holds HF row h*d + p*d/2 + i.
        return m.reshape(h, hd // 2, 2, -1).transpose(0, 2, 1, 3).reshape(h * hd, -1)

    checked = 0
    for t in reader.tensors:
        w = np.asarray(gguf.dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        else:
            _, layer, rest = t.name.split(".", 2)
            name = f"model.layers.{layer}.{GGUF_TO_HF[rest]}"
            if rest == "attn_q.weight":
                assert not np.array_equal(unpermute(w, heads), w)  # the check has teeth
                w = unpermute(w, heads)
            elif rest == "attn_k.weight":
                w = unpermute(w, kv_heads)
        got = tensors[name]
        np.testing.assert_array_equal(got.view(np.uint16), w.astype(np.float16).view(np.uint16),
                                      err_msg=name)
        checked += 1
    assert checked == len(tensors) == 272


def test_config_files_carry_the_gguf_metadata(exported, reader):
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["torch_dtype"] == "float16"
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"],
            config["vocab_size"]) == (576, 1536, 30, 9, 3, 64, 49152)
    assert config["max_position_embeddings"] == int(_field(reader, "llama.context_length"))
    assert config["rms_norm_eps"] == 1e-05
    assert config["rope_theta"] == 100000.0
    assert config["tie_word_embeddings"] is True
    assert config["rope_scaling"] is None and config["attention_bias"] is False
    assert config["hidden_act"] == "silu"
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)

    tokens = [bytes(reader.fields["tokenizer.ggml.tokens"].parts[i]).decode()
              for i in reader.fields["tokenizer.ggml.tokens"].data]
    gen = json.loads((exported / "generation_config.json").read_text())
    assert gen["bos_token_id"] == 1
    assert tokens.index("<|im_end|>") in gen["eos_token_id"]

    tok_config = json.loads((exported / "tokenizer_config.json").read_text())
    assert tok_config["chat_template"] == _field(reader, "tokenizer.chat_template")
    assert (tok_config["bos_token"], tok_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert tok_config["add_bos_token"] is False
    assert tok_config["tokenizer_class"] == "GPT2Tokenizer"
    assert tok_config["model_max_length"] == config["max_position_embeddings"]
    assert tok_config["added_tokens_decoder"]["2"]["content"] == "<|im_end|>"


def test_refuses_to_replace_an_existing_directory(build_dir, model_path, exported):
    before = sorted(p.name for p in exported.iterdir())
    r = subprocess.run([str(export_tool(build_dir)), str(model_path), str(exported)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "already exists" in r.stderr
    assert sorted(p.name for p in exported.iterdir()) == before
