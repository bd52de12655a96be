#!/usr/bin/env python3
"""Trains a cross-encoder hit verifier: the first `--layers` layers of MiniLM read
`[CLS] cached [SEP] query [SEP]` (for conversations: `[CLS] cached [SEP] query [SEP] cached
context [SEP] query context [SEP]`) and a linear layer on the `[CLS]` row gives the logit.

Usage: cross.py --data DIR --out DIR [--layers N] [--epochs E] [--exclude GROUP ...] [--eval FILE ...]
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from torch.nn import functional as F

import data
from model import Bert, bert_layer
from train import load_encoder

ROOT = Path(__file__).resolve().parents[2]
# The gateway lays inputs out the same way (embedder/src/verifier.rs).
FINAL_TOKENS, CONTEXT_TOKENS = 128, 96


class CrossEncoder(nn.Module):
    """The first `layers` encoder layers and a linear layer on the first row. The embeddings
    (and their LayerNorm) stay frozen: they are the published model's, so only the layers and
    the output need storing."""

    def __init__(self, bert: Bert, layers: int):
        super().__init__()
        self.bert = bert
        self.bert.layers = self.bert.layers[:layers]
        for module in (bert.word, bert.position, bert.token_type, bert.emb_norm):
            for p in module.parameters():
                p.requires_grad_(False)
        self.out = nn.Linear(bert.word.weight.shape[1], 1)

    def trained_weights(self) -> dict[str, torch.Tensor]:
        """The layers and the output in the checkpoint's names (`classifier.*` for the output)."""
        names = {
            "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
            "o": "attention.output.dense", "norm1": "attention.output.LayerNorm",
            "up": "intermediate.dense", "down": "output.dense", "norm2": "output.LayerNorm",
        }
        out = {}
        for i, layer in enumerate(self.bert.layers):
            for ours, theirs in names.items():
                out[f"encoder.layer.{i}.{theirs}.weight"] = layer[ours].weight.detach()
                out[f"encoder.layer.{i}.{theirs}.bias"] = layer[ours].bias.detach()
        out["classifier.weight"] = self.out.weight.detach()
        out["classifier.bias"] = self.out.bias.detach()
        return {k: v.cpu().contiguous() for k, v in out.items()}

    def forward(self, ids, types, mask):
        b, n = ids.shape
        pos = torch.arange(n, device=ids.device)
        x = self.bert.emb_norm(self.bert.word(ids) + self.bert.position(pos)[None] + self.bert.token_type(types))
        for layer in self.bert.layers:
            x = bert_layer(layer, x, mask, self.bert.heads)
        return self.out(x[:, 0])[:, 0]


class Pairs:
    """Token ids of each row as one cross-encoder input."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.cache = {}

    def ids(self, text: str, limit: int) -> list[int]:
        key = (text, limit)
        if key not in self.cache:
            self.cache[key] = self.tok.encode(text, add_special_tokens=False).ids[:limit] if text else []
        return self.cache[key]

    def encode(self, row: dict, swap: bool = False) -> tuple[list[int], list[int]]:
        fa, ca = data.final_and_context(row["a"])
        fb, cb = data.final_and_context(row["b"])
        if swap:
            fa, fb, ca, cb = fb, fa, cb, ca
        cls, sep = 101, 102
        ids, types = [cls], [0]
        for seg, (text, limit) in enumerate([(fa, FINAL_TOKENS), (fb, FINAL_TOKENS)]):
            part = self.ids(text, limit) + [sep]
            ids += part
            types += [seg] * len(part)
        if ca or cb:
            for seg, text in enumerate([ca, cb]):
                part = self.ids(text, CONTEXT_TOKENS) + [sep]
                ids += part
                types += [seg] * len(part)
        return ids, types


def batch_tensors(encoded, device):
    n = max(len(i) for i, _ in encoded)
    ids = torch.zeros(len(encoded), n, dtype=torch.long)
    types = torch.zeros(len(encoded), n, dtype=torch.long)
    mask = torch.zeros(len(encoded), n, dtype=torch.long)
    for r, (i, t) in enumerate(encoded):
        ids[r, : len(i)] = torch.tensor(i)
        types[r, : len(t)] = torch.tensor(t)
        mask[r, : len(i)] = 1
    return ids.to(device), types.to(device), mask.to(device)


def score(model, pairs, rows, device, batch=128):
    model.eval()
    enc = [pairs.encode(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(enc[i][0]))
    out = np.zeros(len(rows), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            out[idx] = torch.sigmoid(model(*batch_tensors([enc[i] for i in idx], device))).float().cpu().numpy()
    model.train()
    return out


def summary(name, rows, probs):
    labels = np.array([r["same_answer"] for r in rows], dtype=bool)
    pos, neg = probs[labels], probs[~labels]
    auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()) if len(pos) and len(neg) else 0.0
    lines = [f"{name}: auc {auc:.3f}"]
    for c in (0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98):
        lines.append(f"  cut {c}: served {np.mean(pos >= c) if len(pos) else 0:.3f} wrong {np.mean(neg >= c) if len(neg) else 0:.3f}")
    groups = {}
    for r, p in zip(rows, probs):
        groups.setdefault(data.group_of(r), []).append(p)
    lines.append("  at 0.5: " + ", ".join(f"{g} {np.mean(np.array(v) >= 0.5):.2f}" for g, v in sorted(groups.items())))
    print("\n".join(lines), flush=True)
    return auc


def fit(train: list[dict], pairs: Pairs, encoder_dir: Path, layers: int, epochs: float, batch: int,
        lr: float, head_lr: float, device: str, seed: int, log=print) -> CrossEncoder:
    """Fine-tunes a cross-encoder of `layers` layers on `train` for `epochs` passes."""
    torch.manual_seed(seed)
    model = CrossEncoder(load_encoder(encoder_dir), layers).to(device)
    opt = torch.optim.AdamW([
        {"params": [p for p in model.bert.parameters() if p.requires_grad], "lr": lr},
        {"params": model.out.parameters(), "lr": head_lr}], weight_decay=0.01)
    steps = max(1, int(epochs * len(train) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, head_lr], total_steps=steps, pct_start=0.1)
    rng = random.Random(seed)
    order = []
    while len(order) < steps * batch:
        chunk = train[:]
        rng.shuffle(chunk)
        order += chunk
    t = time.time()
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        enc = [pairs.encode(r, swap=rng.random() < 0.5) for r in rows]
        labels = torch.tensor([float(r["same_answer"]) for r in rows], device=device)
        loss = F.binary_cross_entropy_with_logits(model(*batch_tensors(enc, device)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            log(f"step {step}/{steps} loss {loss.item():.4f} ({time.time() - t:.0f}s)")
    return model


def tokenizer_at(path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--encoder-dir", type=Path, default=ROOT / "assets/.cache/extracted/all-minilm-l6-v2")
    ap.add_argument("--tokenizer", type=Path, default=ROOT / "assets/minilm-f32/tokenizer.json")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--exclude", nargs="*", default=[])
    ap.add_argument("--eval", nargs="*", type=Path, default=[])
    ap.add_argument("--pairs-only", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = Pairs(tokenizer_at(args.tokenizer))
    rows = data.read_rows(args.data / "pairs.jsonl")
    if not args.pairs_only:
        rows += data.read_rows(args.data / "conversations.jsonl")
    train = [r for r in rows if r["split"] == "train" and data.group_of(r) not in args.exclude]
    val = [r for r in rows if r["split"] == "val"]
    model = fit(train, pairs, args.encoder_dir, args.layers, args.epochs, args.batch, args.lr,
                args.head_lr, args.device, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.out / "cross.pt")
    result = {"val": summary("synthetic val", val, probs := score(model, pairs, val, args.device))}
    np.save(args.out / "scores-val", probs)
    for path in args.eval:
        erows = data.read_rows(path)
        probs = score(model, pairs, erows, args.device)
        result[path.name] = summary(path.name, erows, probs)
        np.save(args.out / f"scores-{path.name}", probs)
    (args.out / "results.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
