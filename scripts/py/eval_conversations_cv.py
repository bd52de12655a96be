"""2-fold cross-validation of the conversation context settings (topic threshold, turn
overlap floor) on labelled conversation pairs: tune on one half (stratified by subtype,
10 random splits), measure on the other (a research tool)."""

import collections
import json
import random
import sys

import eval_conversations as ec
import eval_guards as g
from eval_embed import Embedder

GRID = [(t, f) for t in (0.45, 0.5, 0.55, 0.6, 0.65) for f in (0.4, 0.5, 0.6, 0.7)]


def main():
    rows = [json.loads(line) for line in open(sys.argv[1] if len(sys.argv) > 1 else ec.DEFAULT)]
    emb = Embedder()
    hits = {}
    for r in rows:
        la = [m["content"] for m in r["a"] if m["role"] == "user"][-1]
        lb = [m["content"] for m in r["b"] if m["role"] == "user"][-1]
        last_ok = float(emb(la) @ emb(lb)) >= 0.55 and g.check(la, lb) is None
        for t, f in GRID:
            hits[(r["id"], t, f)] = last_ok and ec.compare(r["a"], r["b"], emb, t, f) is None
    emb.save()

    def figures(rs, t, f):
        pos = [r for r in rs if r["same_answer"]]
        neg = [r for r in rs if not r["same_answer"]]
        s = sum(hits[(r["id"], t, f)] for r in pos) / len(pos)
        w = sum(hits[(r["id"], t, f)] for r in neg) / len(neg)
        return s, w

    by = collections.defaultdict(list)
    for r in rows:
        by[r["subtype"]].append(r)
    out = []
    for seed in range(10):
        rnd = random.Random(seed)
        folds = [[], []]
        for _, rs in sorted(by.items()):
            rs = rs[:]
            rnd.shuffle(rs)
            for i, r in enumerate(rs):
                folds[i % 2].append(r)
        for i in range(2):
            best = max(GRID, key=lambda p: (figures(folds[i], *p)[1] <= 0.05, figures(folds[i], *p)[0]))
            out.append(figures(folds[1 - i], *best))
    print(f"2-fold CV (10 splits): held-out served {sum(s for s, _ in out) / len(out):.3f}, "
          f"wrong {sum(w for _, w in out) / len(out):.3f}")
    print("shipped (0.55, 0.5) on all rows: served %.3f wrong %.3f" % figures(rows, 0.55, 0.5))


if __name__ == "__main__":
    main()
