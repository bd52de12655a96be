"""Writes reference sentence embeddings for a MiniLM ONNX model, for the Rust embedder's tests.

The embedding is computed the way cachet's embedder must compute it, but with
independent code (Python onnxruntime + numpy): the tokenizer with padding disabled
and truncation at 256 tokens, one sentence per run, mean pooling over the
attention mask, L2 normalisation.

Usage:
    minilm_reference.py --model-dir assets/minilm-int8 --name minilm-int8 --out OUT.json

Output: {"model": NAME, "max_tokens": 256, "items": [{"text": ..., "embedding": [384 floats]}]}
"""

import argparse
import json
import os

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_TOKENS = 256
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# Mixed lengths, punctuation, unicode (accents, CJK, emoji, RTL script), a code
# snippet, and one passage far over 256 tokens so that truncation is exercised.
LONG_TEXT = " ".join(
    f"Paragraph {i}: semantic caches answer repeated and paraphrased questions "
    "from stored responses, which saves latency and money when the threshold is right."
    for i in range(1, 21)
)
SENTENCES = [
    "What is the capital of France?",
    "Tell me the capital city of France.",
    "How do I reverse a list in Python?",
    'fn main() { println!("hello, world"); }',
    "hi",
    "The weather in Zürich is mild today, around 14 °C with light rain.",
    "東京の天気は今日どうですか？",
    "Ça coûte combien, ce café crème ? 🙂☕",
    "مرحبا بالعالم",
    "Explain the difference between TCP and UDP in two sentences, with one example each.",
    "   leading and trailing whitespace, MIXED case, and   repeated   spaces   ",
    LONG_TEXT,
]


def load_tokenizer(path: str) -> Tokenizer:
    tok = Tokenizer.from_file(path)
    # The shipped tokenizer pads and truncates to 128; cachet embeds unpadded
    # sequences truncated at 256, so the reference does the same.
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    return tok


def session(model_path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    # The embedder's CPU session turns this fusion off (its kernel is slow); with an int8 model
    # the fused and unfused sums round differently into the next layer's int8 activations.
    return ort.InferenceSession(
        model_path, opts, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
    )


def batch_agreement(model_path: str, tokenizer_path: str) -> float:
    """Embeds sentences of different lengths as one padded batch; returns the lowest cosine
    to the same sentences embedded one by one."""
    tok = load_tokenizer(tokenizer_path)
    sess = session(model_path)
    texts = SENTENCES[:4]
    encs = [tok.encode(t) for t in texts]
    width = max(len(e.ids) for e in encs)
    feeds = {
        name: np.array([getattr(e, attr) + [0] * (width - len(e.ids)) for e in encs], np.int64)
        for name, attr in zip(INPUT_NAMES, ("ids", "attention_mask", "type_ids"), strict=True)
    }
    (hidden,) = sess.run(["last_hidden_state"], feeds)
    mask = feeds["attention_mask"][..., None].astype(np.float64)
    pooled = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    return min(float(p @ embed(sess, tok, t)) for p, t in zip(pooled, texts, strict=True))


def embed(sess: ort.InferenceSession, tok: Tokenizer, text: str) -> np.ndarray:
    enc = tok.encode(text)
    ids = np.array([enc.ids], dtype=np.int64)
    mask = np.array([enc.attention_mask], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if any(i.name == "token_type_ids" for i in sess.get_inputs()):
        feeds["token_type_ids"] = np.array([enc.type_ids], dtype=np.int64)
    (hidden,) = sess.run(["last_hidden_state"], feeds)
    weights = mask[..., None].astype(np.float64)
    pooled = (hidden.astype(np.float64) * weights).sum(axis=1) / weights.sum(axis=1)
    vec = pooled[0]
    return vec / np.linalg.norm(vec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True, help="folder with model.onnx + tokenizer.json")
    ap.add_argument("--name", required=True, help="value of the JSON's model field")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    tok = load_tokenizer(os.path.join(args.model_dir, "tokenizer.json"))
    sess = session(os.path.join(args.model_dir, "model.onnx"))
    items = []
    for text in SENTENCES:
        vec = embed(sess, tok, text)
        items.append({"text": text, "embedding": [float(np.float32(x)) for x in vec]})
    n_long = len(tok.encode(LONG_TEXT).ids)
    assert n_long == MAX_TOKENS, f"long text should truncate to {MAX_TOKENS}, got {n_long}"

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"model": args.name, "max_tokens": MAX_TOKENS, "items": items}, f, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, args.out)
    sims = np.array([i["embedding"] for i in items]) @ np.array(items[0]["embedding"])
    print(
        f"  {args.out}: {len(items)} sentences; cos(q0, q1 paraphrase) = {sims[1]:.4f}, cos(q0, code) = {sims[3]:.4f}"
    )


if __name__ == "__main__":
    main()
