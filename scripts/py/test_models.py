"""Unit tests of the numpy Llama reference and the MiniLM ONNX builder on tiny random models.

Each is compared with a deliberately plain re-implementation written from the
Hugging Face model code (loops over heads and positions, no KV cache).

Run with: assets/venv/bin/python -m unittest discover -s scripts/py -p 'test_*.py'
"""

import json
import os
import tempfile
import unittest

import numpy as np
import onnxruntime as ort
from safetensors.numpy import save_file

import minilm_to_onnx
import reference_llama


def tiny_llama(d: str, model_type: str = "llama", bias: bool = False, tied: bool = True, scaling=None) -> dict:
    cfg = {
        "model_type": model_type,
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500.0,
        "tie_word_embeddings": tied,
        "vocab_size": 11,
        "rope_scaling": scaling,
        "eos_token_id": 3,
    }
    rng = np.random.default_rng(1)
    w = {
        "model.embed_tokens.weight": rng.standard_normal((11, 16)),
        "model.norm.weight": 1 + 0.1 * rng.standard_normal(16),
    }
    if not tied:
        w["lm_head.weight"] = rng.standard_normal((11, 16))
    for i in range(2):
        p = f"model.layers.{i}."
        shapes = {
            "self_attn.q_proj": (16, 16),
            "self_attn.k_proj": (8, 16),
            "self_attn.v_proj": (8, 16),
            "self_attn.o_proj": (16, 16),
            "mlp.gate_proj": (24, 16),
            "mlp.up_proj": (24, 16),
            "mlp.down_proj": (16, 24),
        }
        for name, shape in shapes.items():
            w[p + name + ".weight"] = rng.standard_normal(shape) * 0.3
            if bias and name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                w[p + name + ".bias"] = rng.standard_normal(shape[0]) * 0.3
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(16)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(16)
    w = {k: v.astype(np.float32) for k, v in w.items()}
    save_file(w, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return w


def plain_llama_logits(w: dict, ids: list[int], inv_freq: np.ndarray, tied: bool) -> np.ndarray:
    """Last-position logits of HF LlamaModel, written as directly as possible in float64."""
    n_heads, n_kv, hd = 4, 2, 4
    w = {k: v.astype(np.float64) for k, v in w.items()}

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * g

    def lin(x, name):
        return x @ w[name + ".weight"].T + w.get(name + ".bias", 0)

    def rope(v, pos):  # v: [hd]
        ang = pos * inv_freq
        cos, sin = np.concatenate([np.cos(ang)] * 2), np.concatenate([np.sin(ang)] * 2)
        return v * cos + np.concatenate([-v[hd // 2 :], v[: hd // 2]]) * sin

    x = w["model.embed_tokens.weight"][ids]
    for i in range(2):
        p = f"model.layers.{i}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").reshape(len(ids), n_heads, hd)
        k = lin(h, p + "self_attn.k_proj").reshape(len(ids), n_kv, hd)
        v = lin(h, p + "self_attn.v_proj").reshape(len(ids), n_kv, hd)
        out = np.zeros((len(ids), n_heads, hd))
        for t in range(len(ids)):
            for hh in range(n_heads):
                kv = hh // (n_heads // n_kv)
                s = np.array([rope(q[t, hh], t) @ rope(k[j, kv], j) / np.sqrt(hd) for j in range(t + 1)])
                pr = np.exp(s - s.max())
                out[t, hh] = (pr / pr.sum()) @ v[: t + 1, kv]
        x = x + lin(out.reshape(len(ids), -1), p + "self_attn.o_proj")
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g = lin(h, p + "mlp.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return norm(x[-1], w["model.norm.weight"]) @ head.T


class ReferenceLlamaTest(unittest.TestCase):
    def check(self, **kwargs):
        ids = [1, 5, 2, 9, 4, 7]
        with tempfile.TemporaryDirectory() as d:
            w = tiny_llama(d, **kwargs)
            model = reference_llama.Model(d, np.float64)
            want = plain_llama_logits(w, ids, model.inv_freq, kwargs.get("tied", True))
            # The whole prompt at once, and one token at a time through the KV cache.
            cache = model.new_cache(len(ids))
            np.testing.assert_allclose(model.forward(ids, 0, cache), want, atol=1e-9)
            cache = model.new_cache(len(ids))
            for pos, tok in enumerate(ids):
                got = model.forward([tok], pos, cache)
            np.testing.assert_allclose(got, want, atol=1e-9)
            model32 = reference_llama.Model(d, np.float32)
            np.testing.assert_allclose(model32.forward(ids, 0, model32.new_cache(len(ids))), want, atol=1e-4)

    def test_llama_gqa_tied(self):
        self.check()

    def test_qwen2_qkv_bias_untied(self):
        self.check(model_type="qwen2", bias=True, tied=False)

    def test_llama3_rope_scaling(self):
        scaling = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8,
        }
        self.check(scaling=scaling)

    def test_llama3_inv_freq_bands(self):
        cfg = reference_llama.Config(
            {
                "model_type": "llama",
                "hidden_size": 128,
                "num_hidden_layers": 1,
                "num_attention_heads": 1,
                "rope_theta": 500000.0,
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                },
            }
        )
        plain = 1.0 / (500000.0 ** (np.arange(0, 128, 2) / 128))
        scaled = reference_llama.rope_inv_freq(cfg)
        wavelen = 2 * np.pi / plain
        np.testing.assert_allclose(scaled[wavelen < 8192 / 4], plain[wavelen < 8192 / 4])
        np.testing.assert_allclose(scaled[wavelen > 8192], plain[wavelen > 8192] / 8)

    def test_generation_stops_at_eos(self):
        with tempfile.TemporaryDirectory() as d:
            tiny_llama(d)
            model = reference_llama.Model(d, np.float32)
            _, gen = reference_llama.generate(model, [1, 2], 20, stop=set(range(11)))
            self.assertEqual(len(gen), 1)
            _, gen = reference_llama.generate(model, [1, 2], 5, stop=set())
            self.assertEqual(len(gen), 5)


def plain_bert(w: dict, ids: np.ndarray, mask: np.ndarray, types: np.ndarray, n_heads: int) -> np.ndarray:
    """HF BertModel's last_hidden_state for one sequence, in float64."""
    from math import erf, sqrt

    w = {k: v.astype(np.float64) for k, v in w.items()}

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    n, hidden = len(ids), w["embeddings.word_embeddings.weight"].shape[1]
    hd = hidden // n_heads
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][types]
    )
    x = ln(x, "embeddings.LayerNorm")
    for i in range(1):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + "attention.self." + m).reshape(n, n_heads, hd) for m in ("query", "key", "value"))
        ctx = np.zeros((n, n_heads, hd))
        for hh in range(n_heads):
            s = q[:, hh] @ k[:, hh].T / np.sqrt(hd) + np.where(mask[None, :] > 0, 0.0, -1e30)
            pr = np.exp(s - s.max(-1, keepdims=True))
            ctx[:, hh] = (pr / pr.sum(-1, keepdims=True)) @ v[:, hh]
        x = ln(lin(ctx.reshape(n, -1), p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        inter = lin(x, p + "intermediate.dense")
        inter = inter * 0.5 * (1 + np.vectorize(erf)(inter / sqrt(2)))
        x = ln(lin(inter, p + "output.dense") + x, p + "output.LayerNorm")
    return x


class MiniLmOnnxTest(unittest.TestCase):
    def test_graph_matches_plain_bert_with_padding(self):
        rng = np.random.default_rng(2)
        cfg = {
            "hidden_size": 8,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "layer_norm_eps": 1e-12,
            "intermediate_size": 12,
        }
        shapes = {
            "embeddings.word_embeddings.weight": (20, 8),
            "embeddings.position_embeddings.weight": (16, 8),
            "embeddings.token_type_embeddings.weight": (2, 8),
        }
        p = "encoder.layer.0."
        for name, out_in in [
            ("attention.self.query", (8, 8)),
            ("attention.self.key", (8, 8)),
            ("attention.self.value", (8, 8)),
            ("attention.output.dense", (8, 8)),
            ("intermediate.dense", (12, 8)),
            ("output.dense", (8, 12)),
        ]:
            shapes[p + name + ".weight"] = out_in
            shapes[p + name + ".bias"] = (out_in[0],)
        for name in ["embeddings.LayerNorm", p + "attention.output.LayerNorm", p + "output.LayerNorm"]:
            shapes[name + ".weight"] = (8,)
            shapes[name + ".bias"] = (8,)
        w = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        model = minilm_to_onnx.build_graph(w, cfg)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        ids = np.array([[3, 7, 1, 9, 4], [5, 2, 8, 0, 0]], np.int64)
        mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64)
        types = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], np.int64)
        (got,) = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        self.assertEqual(got.shape, (2, 5, 8))
        np.testing.assert_allclose(got[0], plain_bert(w, ids[0], mask[0], types[0], 2), atol=1e-4)
        # The padded sequence's real positions equal the unpadded sequence's output.
        np.testing.assert_allclose(got[1, :3], plain_bert(w, ids[1, :3], mask[1, :3], types[1, :3], 2), atol=1e-4)


if __name__ == "__main__":
    unittest.main()
