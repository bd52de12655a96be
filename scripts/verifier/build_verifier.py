#!/usr/bin/env python3
"""Builds the hit verifier's ONNX models from the published MiniLM weights and the verifier's
trained layers (models/verifier/, written by gpu_train.py): the first N encoder layers read
`[CLS] cached [SEP] query [SEP] ...` and a linear layer on the `[CLS]` row gives the logit.

Writes, like the embedder's pair: `model.onnx` (float32, plain operators: for CUDA) and
`model-q8.onnx` (ONNX Runtime's fused CPU operators, then unsigned 8-bit weights and dynamic
8-bit activations, as minilm_quantize.py does for the embedder). Checks, before keeping them,
that both give the probabilities training recorded for the reference pairs in
`expected.json` (float32 within 1e-3, int8 within 0.05).

Usage: build_verifier.py --base DIR --trained DIR --out DIR
  --base     folder with the published model.safetensors and config.json
  --trained  models/verifier: verifier-layers-*.safetensors and expected.json
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from safetensors import safe_open
from safetensors.numpy import load_file
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
import minilm_quantize  # noqa: E402
import minilm_to_onnx  # noqa: E402

F32_TOLERANCE, Q8_TOLERANCE = 1e-3, 0.05


def trained_weights(folder: Path) -> tuple[dict, int]:
    weights, layers = {}, None
    for path in sorted(folder.glob("verifier-layers-*.safetensors")):
        with safe_open(str(path), "np") as f:
            layers = int(f.metadata()["layers"])
        weights.update({k: v.astype(np.float32) for k, v in load_file(str(path)).items()})
    if layers is None:
        raise SystemExit(f"no verifier-layers-*.safetensors in {folder}")
    return weights, layers


def with_classifier(model: onnx.ModelProto, weights: dict) -> onnx.ModelProto:
    """Replaces the `last_hidden_state` output by `logit` [batch, 1] of its first row."""
    g = model.graph
    row = np.array(0, np.int64)
    g.initializer.extend([
        onnx.numpy_helper.from_array(row, "c_first_row"),
        onnx.numpy_helper.from_array(np.ascontiguousarray(weights["classifier.weight"].T), "classifier.weight_t"),
        onnx.numpy_helper.from_array(weights["classifier.bias"], "classifier.bias"),
    ])
    g.node.extend([
        helper.make_node("Gather", ["last_hidden_state", "c_first_row"], ["first_row"], name="first_row", axis=1),
        helper.make_node("MatMul", ["first_row", "classifier.weight_t"], ["logit_raw"], name="classifier"),
        helper.make_node("Add", ["logit_raw", "classifier.bias"], ["logit"], name="classifier_bias"),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch", 1]))
    return model


def layout(tok: Tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """The verifier's input for a row `{cached, query, cached_context?, query_context?}`, as
    cross.py and embedder/src/verifier.rs build it."""
    def ids(text, limit):
        return tok.encode(text, add_special_tokens=False).ids[:limit] if text else []
    out, types = [101], [0]
    for t, key in enumerate(("cached", "query")):
        part = ids(row[key], 128) + [102]
        out += part
        types += [t] * len(part)
    if row.get("cached_context") or row.get("query_context"):
        for t, key in enumerate(("cached_context", "query_context")):
            part = ids(row.get(key) or "", 96) + [102]
            out += part
            types += [t] * len(part)
    return out, types


def probabilities(path: Path, tok: Tokenizer, rows: list[dict]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=["SkipLayerNormFusion"])
    names = {i.name for i in session.get_inputs()}
    out = []
    for row in rows:
        ids, types = layout(tok, row)
        feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.array([types], np.int64)
        logit = float(session.run(None, feed)[0][0, 0])
        out.append(1.0 / (1.0 + np.exp(-logit)))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--trained", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cfg = json.loads((args.base / "config.json").read_text())
    weights = load_file(str(args.base / "model.safetensors"))
    trained, layers = trained_weights(args.trained)
    weights = {k: v for k, v in weights.items() if not k.startswith("encoder.layer.")}
    weights.update(trained)
    cfg = dict(cfg, num_hidden_layers=layers)
    tok = Tokenizer.from_file(str(args.tokenizer))
    tok.no_truncation()
    tok.no_padding()
    expected = json.loads((args.trained / "expected.json").read_text())
    want = np.array([r["probability"] for r in expected])
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        plain, fused = Path(scratch) / "plain.onnx", Path(scratch) / "fused.onnx"
        onnx.save(with_classifier(minilm_to_onnx.build_graph(weights, cfg), weights), plain)
        onnx.save(with_classifier(minilm_to_onnx.build_fused_graph(weights, cfg), weights), fused)
        q8 = Path(scratch) / "q8.onnx"
        minilm_quantize.quantize(str(fused), str(q8))
        for path, tolerance, name in ((plain, F32_TOLERANCE, "model.onnx"), (fused, F32_TOLERANCE, None),
                                      (q8, Q8_TOLERANCE, "model-q8.onnx")):
            got = probabilities(path, tok, expected)
            worst = float(np.abs(got - want).max())
            if worst > tolerance:
                raise SystemExit(f"{path.name}: probabilities differ from training's by {worst:.4f} (> {tolerance})")
            print(f"  {name or 'fused'}: {layers} layers, probabilities within {worst:.4f} of training's")
            if name:
                os.replace(path, args.out / name)


if __name__ == "__main__":
    main()
