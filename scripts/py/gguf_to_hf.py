"""Converts a llama-architecture GGUF (e.g. SmolLM2-135M-Instruct Q4_1) into a float32 Hugging Face checkpoint.

Writes config.json, model.safetensors (HF tensor names, dequantised with the gguf
package), tokenizer.json (byte-level BPE rebuilt from the GGUF vocab and merges),
tokenizer_config.json (with the GGUF's chat template) and generation_config.json.

llama.cpp's converter permutes the rows of the Q and K projections for its RoPE
layout (pairs (i, i + d/2) become adjacent rows); this script undoes that so the
checkpoint is in Hugging Face order and runs with HF's rotate_half RoPE.

Usage:
    gguf_to_hf.py --gguf MODEL.gguf --out DIR
"""

import argparse
import json
import os

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

import gguf_tokenizer

LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def field(reader: GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_name(gguf_name: str) -> str:
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    blk, idx, kind, suffix = gguf_name.split(".", 3)
    if blk != "blk" or kind not in LAYER_TENSORS:
        raise SystemExit(f"unexpected tensor {gguf_name} in a llama gguf")
    return f"model.layers.{int(idx)}.{LAYER_TENSORS[kind]}.{suffix}"


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverts llama.cpp's `permute`: rows (h, i, 2) of each head go back to (h, 2, i)."""
    rows, cols = w.shape
    head_dim = rows // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def read_config(reader: GGUFReader) -> dict:
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"only llama-architecture gguf files are supported, got {arch}")
    hidden = int(field(reader, "llama.embedding_length"))
    n_heads = int(field(reader, "llama.attention.head_count"))
    n_kv = int(field(reader, "llama.attention.head_count_kv", n_heads))
    tokens = field(reader, "tokenizer.ggml.tokens")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    # GGUF stores float32; print-round so config.json reads 1e-05, not 9.999999747378752e-06.
    eps = float(f"{field(reader, 'llama.attention.layer_norm_rms_epsilon'):.6g}")
    bos = int(field(reader, "tokenizer.ggml.bos_token_id"))
    eos = int(field(reader, "tokenizer.ggml.eos_token_id"))
    pad = field(reader, "tokenizer.ggml.padding_token_id")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": hidden // n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "rms_norm_eps": eps,
        "rope_theta": float(field(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "tie_word_embeddings": not has_output,
        "vocab_size": int(field(reader, "llama.vocab_size", len(tokens))),
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": None if pad is None else int(pad),
        "torch_dtype": "float32",
        "use_cache": True,
    }


def convert_weights(reader: GGUFReader, config: dict) -> dict[str, np.ndarray]:
    tensors = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        # GGUF lists dims fastest-first; numpy (and HF) want them slowest-first.
        w = w.reshape([int(d) for d in reversed(t.shape)])
        if t.name.endswith("attn_q.weight"):
            w = unpermute_rope_rows(w, config["num_attention_heads"])
        elif t.name.endswith("attn_k.weight"):
            w = unpermute_rope_rows(w, config["num_key_value_heads"])
        tensors[hf_name(t.name)] = np.ascontiguousarray(w)
    expected = 3 + 9 * config["num_hidden_layers"] - (1 if config["tie_word_embeddings"] else 0)
    if len(tensors) != expected:
        raise SystemExit(f"expected {expected} tensors, converted {len(tensors)}")
    emb = tensors["model.embed_tokens.weight"]
    if emb.shape != (config["vocab_size"], config["hidden_size"]):
        raise SystemExit(f"embedding shape {emb.shape} does not match the config")
    return tensors


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    reader = GGUFReader(args.gguf)
    config = read_config(reader)
    os.makedirs(args.out, exist_ok=True)

    tokens = field(reader, "tokenizer.ggml.tokens")
    token_types = field(reader, "tokenizer.ggml.token_type")
    merges = field(reader, "tokenizer.ggml.merges")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    tok_json = gguf_tokenizer.build_tokenizer_json(tokens, token_types, merges, pre)
    gguf_tokenizer.check_tokenizer(tok_json, tokens, merges, pre)
    write_json(os.path.join(args.out, "tokenizer.json"), tok_json)

    bos = tokens[config["bos_token_id"]]
    eos = tokens[config["eos_token_id"]]
    pad_id = config["pad_token_id"]
    write_json(
        os.path.join(args.out, "tokenizer_config.json"),
        {
            "tokenizer_class": "GPT2Tokenizer",
            "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
            "add_prefix_space": False,
            "bos_token": bos,
            "eos_token": eos,
            "pad_token": None if pad_id is None else tokens[pad_id],
            "unk_token": tokens[int(field(reader, "tokenizer.ggml.unknown_token_id", 0))],
            "model_max_length": config["max_position_embeddings"],
            "clean_up_tokenization_spaces": False,
            "additional_special_tokens": [t for t, k in zip(tokens, token_types, strict=True) if k == 3],
            "chat_template": field(reader, "tokenizer.chat_template"),
        },
    )
    write_json(
        os.path.join(args.out, "generation_config.json"),
        {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"],
            "pad_token_id": pad_id,
        },
    )
    write_json(os.path.join(args.out, "config.json"), config)

    tensors = convert_weights(reader, config)
    tmp = os.path.join(args.out, "model.safetensors.part")
    save_file(tensors, tmp, metadata={"format": "pt"})
    # safetensors creates the file owner-only; the checkpoint is meant to be shared.
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(args.out, "model.safetensors"))
    n_params = sum(t.size for t in tensors.values())
    print(f"  {args.out}: {len(tensors)} tensors, {n_params / 1e6:.1f}M parameters (float32)")


if __name__ == "__main__":
    main()
