"""An independent NumPy implementation of the Llama forward pass over a GGUF file.

Weights are read and dequantized by the `gguf` package (llama.cpp's own Python reader), not by
qgate. Q/K rows are un-permuted back to the HF layout and RoPE is applied HF-style (rotate half),
so this also checks that qgate's handling of the converter's Q/K permutation is right.
Computation is float64 throughout.
"""
from __future__ import annotations

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def _field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


class LlamaReference:
    def __init__(self, path: str):
        r = GGUFReader(path)
        arch = _field(r, "general.architecture")
        assert arch == "llama", arch
        self.hidden = int(_field(r, "llama.embedding_length"))
        self.n_layers = int(_field(r, "llama.block_count"))
        self.n_heads = int(_field(r, "llama.attention.head_count"))
        self.n_kv = int(_field(r, "llama.attention.head_count_kv"))
        self.eps = float(_field(r, "llama.attention.layer_norm_rms_epsilon"))
        self.theta = float(_field(r, "llama.rope.freq_base"))
        self.hd = self.hidden // self.n_heads
        t = {x.name: x for x in r.tensors}

        def w(name: str) -> np.ndarray:
            x = t[name]
            rows = int(np.prod(x.shape[1:])) if len(x.shape) > 1 else 1
            cols = int(x.shape[0])
            a = np.asarray(dequantize(x.data, x.tensor_type), dtype=np.float64)
            return a.reshape(rows, cols) if len(x.shape) > 1 else a.reshape(cols)

        def unpermute(m: np.ndarray, heads: int) -> np.ndarray:
            # GGUF row h*d + 2i + p holds HF row h*d + p*d/2 + i.
            d = self.hd
            return m.reshape(heads, d // 2, 2, -1).transpose(0, 2, 1, 3).reshape(heads * d, -1)

        self.embed = w("token_embd.weight")
        self.lm_head = w("output.weight") if "output.weight" in t else self.embed
        self.out_norm = w("output_norm.weight")
        self.layers = []
        for i in range(self.n_layers):
            p = f"blk.{i}."
            self.layers.append(dict(
                attn_norm=w(p + "attn_norm.weight"), ffn_norm=w(p + "ffn_norm.weight"),
                q=unpermute(w(p + "attn_q.weight"), self.n_heads),
                k=unpermute(w(p + "attn_k.weight"), self.n_kv),
                v=w(p + "attn_v.weight"), o=w(p + "attn_output.weight"),
                gate=w(p + "ffn_gate.weight"), up=w(p + "ffn_up.weight"),
                down=w(p + "ffn_down.weight")))

    def _rms(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * g

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        # x: [n, heads, d]; HF rotate_half convention.
        d = self.hd
        inv = 1.0 / (self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        ang = positions[:, None] * inv[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
        rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
        return x * cos + rot * sin

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits [n, vocab] of every position of `ids` (causal)."""
        n = len(ids)
        pos = np.arange(n, dtype=np.float64)
        x = self.embed[np.asarray(ids)]
        group = self.n_heads // self.n_kv
        mask = np.triu(np.full((n, n), -np.inf), k=1)
        for L in self.layers:
            h = self._rms(x, L["attn_norm"])
            q = self._rope((h @ L["q"].T).reshape(n, self.n_heads, self.hd), pos)
            k = self._rope((h @ L["k"].T).reshape(n, self.n_kv, self.hd), pos)
            v = (h @ L["v"].T).reshape(n, self.n_kv, self.hd)
            k = np.repeat(k, group, axis=1)
            v = np.repeat(v, group, axis=1)
            s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = np.einsum("hqk,khd->qhd", s, v).reshape(n, -1)
            x = x + a @ L["o"].T
            h = self._rms(x, L["ffn_norm"])
            g = h @ L["gate"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ L["up"].T)) @ L["down"].T
        return self._rms(x, self.out_norm) @ self.lm_head.T

    def greedy(self, ids: list[int], n_new: int) -> list[int]:
        seq = list(ids)
        out = []
        for _ in range(n_new):
            nxt = int(np.argmax(self.logits(seq)[-1]))
            out.append(nxt)
            seq.append(nxt)
        return out
