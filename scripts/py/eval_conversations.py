"""Prototype of cachet's conversation context fingerprint, measured on labelled
conversation pairs (a research tool; `policies/src/context.rs` follows it).

The final user message is classified: a confirmation ("yes please", "the first one")
depends on everything said before and needs an equivalent context; a message that
refers back (pronouns, "so ...", words of the preceding turn) needs the same topic
(first user message) and no changed detail in any pair of corresponding turns;
a standalone question is looked up on its own.
"""

import json
import sys

import eval_guards as g
from eval_embed import Embedder

DEFAULT = "/work/shared/data/semcache-dev/conversations.jsonl"
CONFIRM = set("go ahead yes please yep yeah sure ok okay do it that first second third one option let lets fine great proceed confirm thanks thank then".split())
WH = set("how what when where which who why whats".split())
ANAPHORA = set("it that these those they them their he him his she her one ones then instead again else".split())
OPENERS = set("and so also then but ok okay great right yes yeah go".split())


def details(text):
    """Facts a turn states: numbers, named days and months, capitalised names."""
    nums = {v for v in g.numbers(text)[0] if v != "1"}
    ts = g.tokens(text)
    dates = {g.stem(t) for t in ts} & g.DATE_WORDS
    names = {g.stem(e) for e in g.entities(text)} - g.DATE_WORDS
    return nums, dates, names, {g.stem(t) for t in ts}


def detail_conflict(x, y):
    """A fact replaced by another of its kind (an addition alone is no conflict)."""
    nx, dx, ex, tx = details(x)
    ny, dy, ey, ty = details(y)
    if nx - ny and ny - nx:
        return f"numbers {sorted(nx - ny)} vs {sorted(ny - nx)}"
    if dx - dy and dy - dx:
        return f"dates {sorted(dx - dy)} vs {sorted(dy - dx)}"
    ox = {e for e in ex if not any(g.same_word(e, t) for t in ty)}
    oy = {e for e in ey if not any(g.same_word(e, t) for t in tx)}
    if ox and oy:
        return f"names {sorted(ox)} vs {sorted(oy)}"
    return None


def kind(messages):
    users = [m["content"] for m in messages if m["role"] == "user"]
    final = users[-1]
    ts = g.tokens(final)
    if len(messages) == 1:
        return "standalone"
    if not any(t in WH for t in ts) and all(t in CONFIRM or t in g.IGNORABLE for t in ts):
        return "confirmation"
    starts = [w.lower() for w, _, initial in g.split_words(final) if initial]
    if any(t in ANAPHORA for t in ts) or any(t in OPENERS for t in starts):
        return "anaphoric"
    content = [t for t in ts if t not in g.IGNORABLE]
    # A short question leans on what came before.
    if len(content) < 3:
        return "anaphoric"
    return "standalone"


def aligned_pairs(xs, ys, emb, floor):
    """Greedy one-to-one pairing of turns by content-word overlap above a floor."""
    cand = sorted(((overlap(x, y), i, j) for i, x in enumerate(xs) for j, y in enumerate(ys)), reverse=True)
    used_i, used_j, out = set(), set(), []
    for s, i, j in cand:
        if s < floor:
            break
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        out.append((s, xs[i], ys[j]))
    return out


def overlap(x, y):
    """Dice overlap of the content-word stems of two turns."""
    sx = {g.stem(t) for t in g.tokens(x) if t not in g.IGNORABLE}
    sy = {g.stem(t) for t in g.tokens(y) if t not in g.IGNORABLE}
    return 2 * len(sx & sy) / max(1, len(sx) + len(sy))


def compare(a, b, emb, topic_min=0.55, align_floor=0.5):
    # The stricter reading of the two finals decides.
    order = ["standalone", "anaphoric", "confirmation"]
    ka = max(kind(a), kind(b), key=order.index)
    if ka == "confirmation":
        ta = [g.tokens(m["content"]) for m in a[:-1]]
        tb = [g.tokens(m["content"]) for m in b[:-1]]
        if len(ta) != len(tb):
            return "confirmation needs the same context"
        for x, y in zip(ta, tb):
            cx = [t for t in x if t not in g.IGNORABLE]
            cy = [t for t in y if t not in g.IGNORABLE]
            if len(g.align(cx, cy)) != max(len(cx), len(cy)):
                return "confirmation needs the same context"
        return None
    ua = [m["content"] for m in a[:-1] if m["role"] == "user"]
    ub = [m["content"] for m in b[:-1] if m["role"] == "user"]
    if ka == "anaphoric" and ua and ub:
        s = float(emb(ua[0]) @ emb(ub[0]))
        if s < topic_min:
            return f"topic differs ({s:.2f})"
        r = detail_conflict(ua[0], ub[0])
        if r:
            return f"topic detail: {r}"
    for role in ("user", "assistant"):
        xs = [m["content"] for m in a[:-1] if m["role"] == role]
        ys = [m["content"] for m in b[:-1] if m["role"] == role]
        for s, x, y in aligned_pairs(xs, ys, emb, align_floor):
            r = detail_conflict(x, y)
            if r:
                return f"{role} turn detail: {r}"
    return None


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    rows = [json.loads(line) for line in open(path)]
    emb = Embedder()
    import collections
    for topic_min, floor in [(0.55, 0.4), (0.55, 0.5), (0.55, 0.6), (0.55, 0.7), (0.55, 0.8)]:
        by = collections.defaultdict(lambda: [0, 0])
        for r in rows:
            la = [m["content"] for m in r["a"] if m["role"] == "user"][-1]
            lb = [m["content"] for m in r["b"] if m["role"] == "user"][-1]
            sim = float(emb(la) @ emb(lb))
            reason = None if sim >= 0.55 and g.check(la, lb) is None else "last message"
            reason = reason or compare(r["a"], r["b"], emb, topic_min, floor)
            r["reason"] = reason
            by[r["subtype"]][0] += reason is None
            by[r["subtype"]][1] += 1
        pos = [r for r in rows if r["same_answer"]]
        neg = [r for r in rows if not r["same_answer"]]
        s = sum(r["reason"] is None for r in pos) / len(pos)
        w = sum(r["reason"] is None for r in neg) / len(neg)
        print(f"topic>={topic_min} align>={floor}: served {s:.3f} wrong {w:.3f}  " + " ".join(f"{k[:12]}={v[0]}/{v[1]}" for k, v in sorted(by.items())))
    emb.save()
    for r in rows:
        if (r["reason"] is None) != r["same_answer"]:
            print(r["subtype"], r["id"], r["reason"])


if __name__ == "__main__":
    main()
