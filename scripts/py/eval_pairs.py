"""Measures should-hit served / wrong answers on labelled question pairs for a threshold
sweep with and without the prototype hit guards, plus 2-fold cross-validation of the
threshold (a research tool for tuning `configs/default.toml`).

Usage: eval_pairs.py [PAIRS.jsonl] [--show-misses T] [--show-wrong T]
"""

import argparse
import collections
import json
import random

import eval_guards
from eval_embed import Embedder

DEFAULT = "/work/shared/data/semcache-dev/pairs.jsonl"


def served(rows, t, guards=True):
    pos = [r for r in rows if r["same_answer"]]
    neg = [r for r in rows if not r["same_answer"]]
    hit = lambda r: r["sim"] >= t and (not guards or r["refusal"] is None)  # noqa: E731
    return sum(map(hit, pos)) / max(1, len(pos)), sum(map(hit, neg)) / max(1, len(neg))


def best_threshold(rows, max_wrong):
    best = (0.0, 1.0)
    for i in range(300, 1000, 5):
        t = i / 1000
        s, w = served(rows, t)
        if w <= max_wrong and s > best[0]:
            best = (s, t)
    return best[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", nargs="?", default=DEFAULT)
    ap.add_argument("--show-misses", type=float)
    ap.add_argument("--show-wrong", type=float)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.pairs)]
    emb = Embedder()
    for r in rows:
        r["sim"] = float(emb(r["a"]) @ emb(r["b"]))
        r["refusal"] = eval_guards.check(r["a"], r["b"])
    emb.save()
    for t in [0.5, 0.55, 0.6, 0.62, 0.65, 0.68, 0.7, 0.75, 0.8]:
        s0, w0 = served(rows, t, guards=False)
        s, w = served(rows, t)
        print(f"t={t:.2f}  no guards {s0:.3f}/{w0:.3f}   guards {s:.3f}/{w:.3f}")
    t = args.show_misses or args.show_wrong or 0.65
    by = collections.defaultdict(list)
    for r in rows:
        by[r["category"] + "/" + r["style"]].append(r)
    for k, rs in sorted(by.items()):
        h = sum(r["sim"] >= t and r["refusal"] is None for r in rs)
        print(f"  {k:24s} {h}/{len(rs)}")
    guard_counts = collections.Counter(r["refusal"][0] for r in rows if r["refusal"] and r["same_answer"])
    print("guards refusing should-hits:", dict(guard_counts))
    # 2-fold cross-validation of the threshold, stratified by category, 10 random splits.
    res = []
    for seed in range(10):
        rnd = random.Random(seed)
        folds = [[], []]
        for k, rs in sorted(by.items()):
            rs = rs[:]
            rnd.shuffle(rs)
            for i, r in enumerate(rs):
                folds[i % 2].append(r)
        for i in range(2):
            tt = best_threshold(folds[i], 0.02)
            res.append((tt,) + served(folds[1 - i], tt))
    mean = [sum(x[i] for x in res) / len(res) for i in range(3)]
    print(f"2-fold CV (10 splits): threshold {mean[0]:.3f}, held-out served {mean[1]:.3f}, wrong {mean[2]:.3f}")
    if args.show_misses:
        for r in sorted(rows, key=lambda r: r["sim"]):
            if r["same_answer"] and not (r["sim"] >= t and r["refusal"] is None):
                print(f"MISS {r['sim']:.3f} {r['refusal']} | {r['a']} | {r['b']}")
    if args.show_wrong:
        for r in sorted(rows, key=lambda r: r["sim"]):
            if not r["same_answer"] and r["sim"] >= t and r["refusal"] is None:
                print(f"WRONG {r['category']} {r['sim']:.3f} | {r['a']} | {r['b']}")


if __name__ == "__main__":
    main()
