#!/usr/bin/env python3
"""Trains the hit verifier's pair head on generated data (generate.py), with the MiniLM encoder
frozen (`--encoder frozen`: its token states are computed once) or fine-tuned with it.

Usage: train.py --data DIR --out DIR [--exclude GROUP ...] [--eval FILE ...] [--steps N]
  --data      folder with pairs.jsonl and conversations.jsonl from generate.py
  --exclude   leave these groups (and subtypes) out of training (leave-one-group-out runs)
  --eval      labelled files to report on (e.g. the dev half); never used for training
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from torch.nn import functional as F

import data
from model import Bert, JointHead, PairHead, add_lora, lora_delta, mean_pool

ROOT = Path(__file__).resolve().parents[2]
FINAL_TOKENS, CONTEXT_TOKENS = 128, 256


def load_encoder(src: Path) -> Bert:
    """all-MiniLM-L6-v2 from a folder with its model.safetensors and config.json."""
    cfg = json.loads((src / "config.json").read_text())
    bert = Bert(cfg)
    bert.load_hf(load_file(src / "model.safetensors"))
    return bert.eval()


class Texts:
    """Token ids of every distinct text, and (frozen encoder) their states."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.index: dict[str, int] = {}
        self.ids: list[list[int]] = []
        self.limits: list[int] = []
        # The layer whose states the head reads (None: the last).
        self.split: int | None = None

    def add(self, text: str, limit: int) -> int:
        key = f"{limit}\0{text}"
        if key not in self.index:
            self.index[key] = len(self.ids)
            ids = self.tokenizer.encode(text).ids if text else []
            if len(ids) > limit:
                ids = ids[: limit - 1] + [ids[-1]]
            self.ids.append(ids)
            self.limits.append(limit)
        return self.index[key]

    def encode_all(self, bert, cache: Path | None = None, batch: int = 64, device: str = "cpu") -> None:
        """Frozen-encoder states of every text; `cache` keeps them across runs (keyed by ids)."""
        order = sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))
        self.states = [None] * len(self.ids)
        self.pooled = np.zeros((len(self.ids), 384), dtype=np.float32)
        known = torch.load(cache) if cache and cache.exists() else {}
        todo = []
        for i in order:
            hit = known.get(tuple(self.ids[i])) if self.ids[i] else None
            if hit is None:
                todo.append(i)
            else:
                self.states[i], self.pooled[i] = hit[0], hit[1]
        with torch.no_grad():
            for s in range(0, len(todo), batch):
                chunk = [i for i in todo[s:s + batch] if self.ids[i]]
                if not chunk:
                    continue
                ids, mask = pad([self.ids[i] for i in chunk])
                ids, mask = ids.to(device), mask.to(device)
                if self.split is None:
                    out = full = bert(ids, mask)
                else:
                    out, full = bert.split_and_final(ids, mask, self.split)
                pooled = mean_pool(full, mask).cpu()
                out = out.cpu()
                for row, i in enumerate(chunk):
                    n = len(self.ids[i])
                    self.states[i] = out[row, :n].to(torch.float16)
                    self.pooled[i] = pooled[row].numpy()
                    known[tuple(self.ids[i])] = (self.states[i], self.pooled[i].copy())
        if cache and todo:
            torch.save(known, cache)


class OnnxEncoder:
    """The gateway's encoder as it runs on the CPU: one text per ONNX Runtime run, one thread."""

    def __init__(self, path: Path):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        # The gateway disables this fusion on the CPU (embedder/src/ort_backend.rs).
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=["SkipLayerNormFusion"])
        self.names = {i.name for i in self.session.get_inputs()}

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows = []
        for row in range(ids.shape[0]):
            n = int(mask[row].sum())
            feed = {"input_ids": ids[row:row + 1, :n].numpy(), "attention_mask": mask[row:row + 1, :n].numpy()}
            if "token_type_ids" in self.names:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            out = torch.from_numpy(self.session.run(None, feed)[0])
            rows.append(torch.nn.functional.pad(out, (0, 0, 0, ids.shape[1] - n)))
        return torch.cat(rows)


def pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(1, max(len(s) for s in seqs))
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def examples(rows: list[dict], texts: Texts) -> list[tuple]:
    out = []
    for r in rows:
        fa, ca = data.final_and_context(r["a"])
        fb, cb = data.final_and_context(r["b"])
        out.append((texts.add(fa, FINAL_TOKENS), texts.add(fb, FINAL_TOKENS),
                    texts.add(ca, CONTEXT_TOKENS), texts.add(cb, CONTEXT_TOKENS),
                    float(r["same_answer"]), data.group_of(r), r.get("id", "")))
    return out


def stack_states(texts: Texts, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(1, max(len(texts.ids[i]) for i in idx))
    x = torch.zeros(len(idx), n, 384)
    m = torch.zeros(len(idx), n)
    for row, i in enumerate(idx):
        if texts.ids[i]:
            k = len(texts.ids[i])
            x[row, :k] = texts.states[i].float()
            m[row, :k] = 1
    return x, m


def cosines(texts: Texts, ia: list[int], ib: list[int]) -> torch.Tensor:
    a, b = texts.pooled[ia], texts.pooled[ib]
    both = np.array([bool(texts.ids[i]) and bool(texts.ids[j]) for i, j in zip(ia, ib)])
    return torch.from_numpy(((a * b).sum(1) * both).astype(np.float32))


class Live:
    """Token states and pooled vectors computed by a trainable encoder for one batch."""

    def __init__(self, encoder, texts: Texts, idx: list[int], device: str):
        self.texts, self.device = texts, device
        unique = sorted({i for i in idx if texts.ids[i]})
        self.row = {i: r for r, i in enumerate(unique)}
        if unique:
            ids, mask = pad([texts.ids[i] for i in unique])
            ids, mask = ids.to(device), mask.to(device)
            if texts.split is None:
                self.states = encoder(ids, mask)
                self.pooled = mean_pool(self.states, mask)
            else:
                self.states, final = encoder.split_and_final(ids, mask, texts.split)
                self.pooled = mean_pool(final, mask)

    def stack(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(1, max(len(self.texts.ids[i]) for i in idx))
        x = torch.zeros(len(idx), n, 384, device=self.device)
        m = torch.zeros(len(idx), n, device=self.device)
        rows = [r for r, i in enumerate(idx) if self.texts.ids[i]]
        for r in rows:
            i = idx[r]
            k = len(self.texts.ids[i])
            x[r, :k] = self.states[self.row[i], :k]
            m[r, :k] = 1
        return x, m

    def cosines(self, ia: list[int], ib: list[int]) -> torch.Tensor:
        out = torch.zeros(len(ia), device=self.device)
        for r, (i, j) in enumerate(zip(ia, ib)):
            if self.texts.ids[i] and self.texts.ids[j]:
                out[r] = (self.pooled[self.row[i]] * self.pooled[self.row[j]]).sum()
        return out


def forward(head: PairHead, texts: Texts, batch: list[tuple], swap: bool = False,
            live: "Live | None" = None) -> torch.Tensor:
    cols = list(zip(*batch))
    fa, fb, ca, cb = (list(c) for c in cols[:4])
    if swap:
        fa, fb, ca, cb = fb, fa, cb, ca
    segs, masks = [], []
    dev = next(head.parameters()).device
    for idx in (fa, fb, ca, cb):
        x, m = live.stack(idx) if live else (t.to(dev) for t in stack_states(texts, idx))
        segs.append(head.project(x))
        masks.append(m)
    if live:
        return head.judge(segs, masks, live.cosines(fa, fb), live.cosines(ca, cb))
    return head.judge(segs, masks, cosines(texts, fa, fb).to(dev), cosines(texts, ca, cb).to(dev))


def contrastive(live: Live, batch: list[tuple], temperature: float = 0.05) -> torch.Tensor:
    """In-batch InfoNCE on the finals: each should-hit's cached question must be nearer its
    query than every other query of the batch (traps' queries are the hard negatives)."""
    a = torch.stack([live.pooled[live.row[e[0]]] for e in batch])
    b = torch.stack([live.pooled[live.row[e[1]]] for e in batch])
    positive = torch.tensor([e[4] == 1.0 for e in batch], device=a.device)
    if not positive.any():
        return torch.zeros((), device=a.device)
    logits = a @ b.t() / temperature
    target = torch.arange(len(batch), device=a.device)
    return F.cross_entropy(logits[positive], target[positive])


def scores(head: PairHead, texts: Texts, exs: list[tuple], batch: int = 128) -> np.ndarray:
    """Probabilities in the order of `exs`, computed in batches of similar length."""
    head.eval()
    out = np.zeros(len(exs), dtype=np.float32)
    size = lambda e: sum(len(texts.ids[i]) for i in e[:4])  # noqa: E731
    order = sorted(range(len(exs)), key=lambda i: size(exs[i]))
    with torch.no_grad():
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            out[idx] = torch.sigmoid(forward(head, texts, [exs[i] for i in idx])).cpu().numpy()
    head.train()
    return out


def report(name: str, exs: list[tuple], probs: np.ndarray, cos: np.ndarray, cut: float, min_cos: float) -> dict:
    groups: dict[str, list[int]] = {}
    hits = (probs >= cut) & (cos >= min_cos)
    for i, e in enumerate(exs):
        groups.setdefault(e[5], []).append(i)
    should = [i for i, e in enumerate(exs) if e[4] == 1.0]
    traps = [i for i, e in enumerate(exs) if e[4] == 0.0]
    served = hits[should].mean() if should else 0.0
    wrong = hits[traps].mean() if traps else 0.0
    lines = [f"{name}: served {served:.3f} wrong {wrong:.3f} (cut {cut:.3f}, min cos {min_cos})"]
    per = {}
    for g, idx in sorted(groups.items()):
        k = int(hits[idx].sum())
        per[g] = (k, len(idx))
        lines.append(f"  {g:28} {k}/{len(idx)}")
    for c in (0.5, 0.8, 0.9, 0.95, 0.98, 0.99):
        h = (probs >= c) & (cos >= min_cos)
        lines.append(f"  at cut {c}: served {h[should].mean() if should else 0:.3f} wrong {h[traps].mean() if traps else 0:.3f}")
    print("\n".join(lines))
    return {"served": float(served), "wrong": float(wrong), "groups": per}


def pick_cut(probs: np.ndarray, labels: np.ndarray, cos: np.ndarray, min_cos: float, max_wrong: float) -> float:
    best = 1.0
    for cut in np.unique(np.round(probs, 4))[::-1]:
        hits = (probs >= cut) & (cos >= min_cos)
        wrong = hits[labels == 0].mean() if (labels == 0).any() else 0.0
        if wrong <= max_wrong:
            best = float(cut)
        else:
            break
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--assets", type=Path, default=ROOT / "assets")
    ap.add_argument("--encoder-dir", type=Path, default=ROOT / "assets/.cache/extracted/all-minilm-l6-v2",
                    help="folder with the encoder's model.safetensors and config.json")
    ap.add_argument("--tokenizer", type=Path, default=ROOT / "assets/minilm-f32/tokenizer.json")
    ap.add_argument("--exclude", nargs="*", default=[])
    ap.add_argument("--eval", nargs="*", type=Path, default=[])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-cos", type=float, default=0.5)
    ap.add_argument("--max-wrong", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--finetune", action="store_true",
                    help="train low-rank updates of the encoder with the head (else it is frozen)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--head", choices=["narrow", "joint"], default="narrow")
    ap.add_argument("--joint-lr", type=float, default=5e-5)
    ap.add_argument("--split", type=int, default=4,
                    help="joint head: layers each text runs alone before the joint ones")
    ap.add_argument("--enc-lr", type=float, default=2e-4)
    ap.add_argument("--contrastive", type=float, default=0.2,
                    help="weight of the in-batch contrastive loss on the finals' vectors")
    ap.add_argument("--encoder-onnx", type=Path, default=None,
                    help="take token states from this ONNX encoder (e.g. the int8 one) instead of torch")
    ap.add_argument("--state-cache", type=Path, default=None,
                    help="file keeping frozen-encoder states between runs")
    args = ap.parse_args()
    # More threads than free cores make small products many times slower (2-core build box).
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tokenizer = Tokenizer.from_file(str(args.tokenizer))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    texts = Texts(tokenizer)
    rows = data.read_rows(args.data / "pairs.jsonl") + data.read_rows(args.data / "conversations.jsonl")
    train_rows = [r for r in rows if r["split"] == "train" and data.group_of(r) not in args.exclude]
    val_rows = [r for r in rows if r["split"] == "val"]
    train, val = examples(train_rows, texts), examples(val_rows, texts)
    evals = {p.name: examples(data.read_rows(p), texts) for p in args.eval}
    device = args.device
    if args.head == "joint":
        texts.split = args.split
        head = JointHead(load_encoder(args.encoder_dir), args.split).to(device)
    else:
        head = PairHead(d=args.d, layers=args.layers).to(device)
    if args.head == "joint":
        # Pretrained layers take small steps; the new segment, first-row and output weights big ones.
        fresh = [head.segment, head.cls] + list(head.out.parameters())
        groups = [{"params": list(head.layers.parameters()), "lr": args.joint_lr},
                  {"params": fresh, "lr": args.lr}]
    else:
        groups = [{"params": list(head.parameters()), "lr": args.lr}]
    encoder = None
    if args.finetune:
        encoder = load_encoder(args.encoder_dir)
        trainable = add_lora(encoder, args.rank)
        encoder = encoder.to(device)
        groups.append({"params": trainable, "lr": args.enc_lr})
    else:
        t = time.time()
        frozen = OnnxEncoder(args.encoder_onnx) if args.encoder_onnx else load_encoder(args.encoder_dir)
        texts.encode_all(frozen, args.state_cache)
        print(f"encoded {len(texts.ids)} texts in {time.time() - t:.0f}s")
    print(f"train {len(train)} val {len(val)}", flush=True)
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=args.steps, pct_start=0.1)
    rng = random.Random(args.seed)
    # Question pairs and conversation pairs in separate batches: one 256-token context would
    # pad every row of a mixed batch to it.
    empty = texts.add("", CONTEXT_TOKENS)
    pools = [[e for e in train if e[2] == empty and e[3] == empty],
             [e for e in train if e[2] != empty or e[3] != empty]]
    pools = [p for p in pools if p]
    weights = [len(p) for p in pools]
    t = time.time()
    for step in range(args.steps):
        pool = rng.choices(pools, weights)[0]
        batch = rng.sample(pool, min(args.batch, len(pool)))
        labels = torch.tensor([e[4] for e in batch], device=device)
        swap = rng.random() < 0.5
        if encoder is not None:
            live = Live(encoder, texts, [i for e in batch for i in e[:4]], device)
            logits = forward(head, texts, batch, swap=swap, live=live)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            loss = loss + args.contrastive * contrastive(live, batch)
        else:
            logits = forward(head, texts, batch, swap=swap)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - t:.0f}s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in head.state_dict().items()}, args.out / "head.pt")
    if encoder is not None:
        from safetensors.torch import save_file
        save_file({k: v.cpu().contiguous() for k, v in lora_delta(encoder).items()}, args.out / "encoder-delta.safetensors")
        encoder.eval()
        with torch.no_grad():
            texts.encode_all(encoder.to(device), None, device=device)
    cos_of = lambda exs: cosines(texts, [e[0] for e in exs], [e[1] for e in exs]).numpy()  # noqa: E731
    vp = scores(head, texts, val)
    vl = np.array([e[4] for e in val])
    cut = pick_cut(vp, vl, cos_of(val), args.min_cos, args.max_wrong)
    results = {"val": report("synthetic val", val, vp, cos_of(val), cut, args.min_cos), "cut": cut,
               "args": {k: str(v) for k, v in vars(args).items()}}
    np.save(args.out / "scores-val", np.stack([vp, cos_of(val), vl]))
    for name, exs in evals.items():
        probs = scores(head, texts, exs)
        results[name] = report(name, exs, probs, cos_of(exs), cut, args.min_cos)
        np.save(args.out / f"scores-{name}", np.stack([probs, cos_of(exs), [e[4] for e in exs]]))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
