#!/usr/bin/env python3
"""The verifier's training run, as done on the GPU machine in one call:

1. for each candidate depth (`--layers`), fine-tune a cross-encoder on the generated training
   split and score the validation split; the depth with the best validation AUC (the
   shallowest within 0.01, which is faster) is the one shipped — chosen on generated data only;
2. write that model's trained weights (`verifier-layers.safetensors`, float16);
3. leave-one-group-out: for each evaluation group, train the chosen depth again without the
   generated rows of that group, and score the generated test split and the evaluation files.

Every score file carries the embedder's cosine similarity of the two lookup texts (base MiniLM,
float32) so that operating points can be calibrated afterwards. Results go to --out (a tarball
is rewritten after every run, so a cut-off call keeps what it finished).

Usage: gpu_train.py --data DIR --encoder-dir DIR --tokenizer FILE --out DIR [--eval FILE ...]
"""

import argparse
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import data
from cross import Pairs, fit, score, summary, tokenizer_at
from model import mean_pool
from train import load_encoder

# Hand-written pairs in no data set: build_verifier.py checks that the exported models give
# these the probabilities the trained torch model gives.
REFERENCE = [
    {"cached": "How do I reset my router to factory settings?", "query": "what's the way to factory reset my router"},
    {"cached": "How do I reset my router to factory settings?", "query": "How do I restart my router?"},
    {"cached": "Which is longer, the Nile or the Amazon?", "query": "Is the Amazon longer than the Nile?"},
    {"cached": "Can I bring my dog on the train to Leeds?", "query": "Can I bring my cat on the train to Leeds?"},
    {"cached": "What's the fee for a late library return?", "query": "How much is the fine for returning a library book late?"},
    {"cached": "Is it safe to eat raw cookie dough?", "query": "Why is it unsafe to eat raw cookie dough?"},
    {"cached": "How many days of annual leave do part-time staff get?", "query": "How many days of annual leave do staff get?"},
    {"cached": "ok go ahead", "query": "ok go ahead", "cached_context": "user: Can you book me a table for two on Friday?\nassistant: Yes, 7pm is free. Shall I book it?",
     "query_context": "user: Can you cancel my gym membership?\nassistant: I can cancel it from the end of this month. Shall I go ahead?"},
    {"cached": "how much will that cost?", "query": "what will that cost me?", "cached_context": "user: My phone screen is cracked.\nassistant: We can replace the screen in store.",
     "query_context": "user: the screen on my phone has cracked\nassistant: We can replace the screen for you in store."},
    {"cached": "Do you deliver to Ireland?", "query": "Do you ship to Ireland?", "cached_context": "user: Is my order on its way?\nassistant: Yes, it left the warehouse today.",
     "query_context": "user: What are your opening hours?\nassistant: We're open 9 to 5 on weekdays."},
]

LOGO_GROUPS = [
    "near_repeat", "paraphrase", "entity_swap", "negation", "number_date", "scope",
    "same_context_reworded", "irrelevant_history", "same_context_extra_chatter",
    "context_swap", "detail_swap", "intent_flip",
]


def as_row(ref: dict) -> dict:
    """A reference pair as the row `Pairs.encode` reads: contexts become earlier turns whose
    context text is the reference's (the lines are already `role: text`)."""
    def side(final, context):
        if not context:
            return final
        turns = []
        for line in context.split("\n"):
            role, text = line.split(": ", 1)
            turns.append({"role": role, "content": text})
        return turns + [{"role": "user", "content": final}]
    return {"a": side(ref["cached"], ref.get("cached_context")), "b": side(ref["query"], ref.get("query_context")),
            "same_answer": False}


def lookup_cosines(rows: list[dict], tok, encoder, device: str) -> np.ndarray:
    """Cosine similarity of the base embedder's vectors of each row's two final messages."""
    texts = sorted({t for r in rows for t in (data.final_and_context(r["a"])[0], data.final_and_context(r["b"])[0])})
    index = {t: i for i, t in enumerate(texts)}
    vectors = np.zeros((len(texts), 384), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(texts), 256):
            chunk = texts[s:s + 256]
            ids = [tok.encode(t).ids[:256] for t in chunk]
            n = max(len(i) for i in ids)
            x = torch.zeros(len(ids), n, dtype=torch.long)
            m = torch.zeros(len(ids), n, dtype=torch.long)
            for r, i in enumerate(ids):
                x[r, : len(i)] = torch.tensor(i)
                m[r, : len(i)] = 1
            x, m = x.to(device), m.to(device)
            vectors[s:s + len(chunk)] = mean_pool(encoder(x, m), m).cpu().numpy()
    a = np.array([index[data.final_and_context(r["a"])[0]] for r in rows])
    b = np.array([index[data.final_and_context(r["b"])[0]] for r in rows])
    return (vectors[a] * vectors[b]).sum(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--encoder-dir", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--eval", nargs="*", type=Path, default=[])
    ap.add_argument("--layers", nargs="*", type=int, default=[2, 3, 4])
    ap.add_argument("--logo", nargs="*", default=LOGO_GROUPS)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default OUT/work)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds after which no further leave-one-group-out run starts")
    args = ap.parse_args()
    out = args.out
    work = args.work or out / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log_lines = []

    def log(line: str) -> None:
        line = f"[{time.time() - started:6.0f}s] {line}"
        print(line, flush=True)
        log_lines.append(line)
        (work / "log.txt").write_text("\n".join(log_lines) + "\n")

    def pack() -> None:
        # Written aside and renamed, so that a call cut off mid-write keeps the last whole one.
        with tarfile.open(out / "results.tar.gz.part", "w:gz") as tar:
            tar.add(work, arcname="results")
        (out / "results.tar.gz.part").rename(out / "results.tar.gz")

    tok = tokenizer_at(args.tokenizer)
    pairs = Pairs(tok)
    rows = data.read_rows(args.data / "pairs.jsonl") + data.read_rows(args.data / "conversations.jsonl")
    split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    evals = {p.name: data.read_rows(p) for p in args.eval}
    base = load_encoder(args.encoder_dir).to(args.device).eval()
    sets = {"val": split["val"], "test": split["test"], **evals}
    cos = {name: lookup_cosines(rs, tok, base, args.device) for name, rs in sets.items()}
    meta = {name: [{"id": r.get("id"), "group": data.group_of(r), "same": bool(r["same_answer"])} for r in rs]
            for name, rs in sets.items()}
    (work / "rows.json").write_text(json.dumps(meta))
    del base

    def run(name: str, layers: int, train: list[dict], targets: list[str]):
        log(f"{name}: {layers} layers, {len(train)} training rows")
        model = fit(train, pairs, args.encoder_dir, layers, args.epochs, args.batch, args.lr,
                    args.head_lr, args.device, args.seed, log=log)
        result = {}
        for target in targets:
            probs = score(model, pairs, sets[target], args.device)
            np.save(work / f"{name}--{target}.npy", np.stack([probs, cos[target]]))
            result[target] = summary(f"{name} {target}", sets[target], probs)
        pack()
        return model, result

    aucs = {}
    models = {}
    for layers in args.layers:
        model, result = run(f"depth{layers}", layers, split["train"], list(sets))
        aucs[layers] = result["val"]
        models[layers] = model
    best = max(aucs.values())
    # Each layer costs about a third of an embedding at lookup time: the shallowest depth
    # within 0.01 of the best validation AUC is shipped.
    chosen = min(layers for layers, auc in aucs.items() if auc >= best - 0.01)
    log(f"validation AUC by depth {aucs}: shipping {chosen} layers")
    weights = models[chosen].trained_weights()
    # At most three layers a file: a file the GPU machine returns holds 16 MiB at most.
    for part in range(0, chosen, 3):
        keep = {k: v.half() for k, v in weights.items()
                if k.startswith("classifier.") and part + 3 >= chosen
                or any(k.startswith(f"encoder.layer.{i}.") for i in range(part, min(part + 3, chosen)))}
        save_file(keep, str(out / f"verifier-layers-{part // 3}.safetensors"), metadata={"layers": str(chosen)})
    (work / "chosen.json").write_text(json.dumps({"layers": chosen, "val_auc": aucs}))
    probs = score(models[chosen], pairs, [as_row(r) for r in REFERENCE], args.device)
    (out / "expected.json").write_text(json.dumps([dict(r, probability=float(p)) for r, p in zip(REFERENCE, probs)], indent=1))
    del models

    pack()
    for group in args.logo:
        if args.deadline and time.time() - started > args.deadline:
            log(f"deadline reached: leave-one-group-out stops before {group}")
            break
        train = [r for r in split["train"] if data.group_of(r) != group]
        run(f"logo-{group}", chosen, train, ["test", *evals])
    log("done")
    pack()


if __name__ == "__main__":
    main()
