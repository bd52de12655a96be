"""Quantizes the float32 MiniLM ONNX model to int8 for the CPU: the model cachet ships by default.

Weights become unsigned 8-bit with a zero point, one scale and zero point per output
channel; activations are quantized to unsigned 8-bit at run time, per tensor (ONNX
Runtime's dynamic quantization). Unsigned weights (u8 x u8 products) on purpose: with
signed weights, ONNX Runtime's kernels for x86 CPUs without VNNI (AVX2 only) sum pairs of
u8 x s8 products in 16-bit lanes that saturate, and on such a CPU the shipped model's
embeddings fell to cosine 0.977 of float32's (0.9825 with 7-bit weights); u8 x u8 products
are widened before the sum and agree on every x86 CPU (0.987 on AVX2). On the 2-core
build machines the int8 model embeds a 20-word question in about half the time of the
float32 model. The float32 model stays the one for CUDA (ONNX Runtime runs these int8
operators on the CPU only).

Checks before the file is kept: embeddings of the reference sentences agree with the
float32 model's at cosine >= MIN_COSINE, and a padded batch agrees with one-by-one runs
at cosine >= MIN_BATCH_COSINE. Not 1: the activation scale is taken over the whole
batch, padding included, so a batch moves a vector by rounding (min cosine 0.991 here),
which is why the embedder runs one text per model run on the CPU; an attention mask
that let padding in would move short texts far more.

Usage:
    minilm_quantize.py --model float32/model.onnx --tokenizer tokenizer.json --out int8/model.onnx
"""

import argparse
import logging
import os
import tempfile

import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

import minilm_reference

MIN_COSINE = 0.98
MIN_BATCH_COSINE = 0.98


def quantize(src: str, dst: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        # quantize_dynamic writes intermediate models next to its output; keep them out of assets/.
        tmp = os.path.join(scratch, "model.onnx")
        quantize_dynamic(
            src,
            tmp,
            weight_type=QuantType.QUInt8,
            per_channel=True,
            reduce_range=False,
            op_types_to_quantize=["MatMul", "Attention"],
            # The fused graph's com.microsoft operators have no ONNX shape inference, so the
            # quantizer cannot infer their output types; every activation here is float32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        os.replace(tmp, dst)


def agreement(f32_path: str, int8_path: str, tokenizer_path: str) -> float:
    tok = minilm_reference.load_tokenizer(tokenizer_path)
    a, b = (minilm_reference.session(p) for p in (f32_path, int8_path))
    return min(
        float(minilm_reference.embed(a, tok, s) @ minilm_reference.embed(b, tok, s)) for s in minilm_reference.SENTENCES
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the float32 model.onnx (from minilm_to_onnx.py)")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".part"
    quantize(args.model, tmp)
    cos = agreement(args.model, tmp, args.tokenizer)
    batch_cos = minilm_reference.batch_agreement(tmp, args.tokenizer)
    print(f"  int8 vs float32: min cosine {cos:.5f}; padded batch vs one by one: min cosine {batch_cos:.6f}")
    if cos < MIN_COSINE or batch_cos < MIN_BATCH_COSINE:
        os.unlink(tmp)
        raise SystemExit(
            f"the int8 model is off (cosine to float32 {cos:.5f} < {MIN_COSINE} "
            f"or batch agreement {batch_cos:.6f} < {MIN_BATCH_COSINE})"
        )
    os.replace(tmp, args.out)
    print(f"  {args.out}: {len(onnx.load(args.out).graph.node)} nodes")


if __name__ == "__main__":
    ort.set_default_logger_severity(3)
    # The quantizer advises (on the root logger) a pre-processing pass meant for CNNs.
    logging.getLogger().setLevel(logging.ERROR)
    main()
