#!/usr/bin/env python3
"""Makes the hit verifier's labelled training data from the hand-written seeds.

Deterministic: the same seeds and `--seed` give byte-identical files. No evaluation data is
read. Each seed is one question (or one conversation) with wordings that share an answer,
alternative slot values that change it, and trap questions that look alike but need another
answer; operators combine them into labelled pairs:

pairs (a = cached question, b = new question):
  near_repeat   same wording with surface noise (case, punctuation, typo, filler, contraction)
  paraphrase    another wording of the same question, same slot values (or their synonyms)
  entity_swap   one named slot value replaced, or an `entity` / `alternative` trap
  number_date   one numeric, date or unit value replaced, or a `number` / `date` / `unit` trap
  negation      a `negation` trap
  scope         a `scope` trap
  role          a `role` trap (reversed direction or roles)
  intent        an `intent` trap (same topic, another ask)
  other         another seed's question from the same domain
conversations (a = cached chat, b = new chat; the final user messages match):
  same_context_reworded       every turn reworded
  irrelevant_history          a self-contained final question after unrelated history
  same_context_extra_chatter  small talk inserted
  context_swap                another conversation ending with the same words
  detail_swap                 one fact of the history replaced
  intent_flip                 a user turn replaced by one that flips what the final asks

Every row carries its seed id and a split (`train`, `val` or `test`) drawn from a hash of the
seed id, so validation and test rows come from seeds the model never saw.

Usage: generate.py [--seeds DIR] [--seed N] --out DIR
"""

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

SLOT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
NUMERIC = re.compile(r"^[\d.,:/£$€%-]+\s*[a-z%]{0,5}$|^\d")
NUMBER_WORDS = {
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "fifteen", "twenty", "thirty", "forty", "fifty", "hundred", "thousand",
    "half", "quarter", "once", "twice", "first", "second", "third",
}
DATE_WORDS = {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january",
    "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "today", "tomorrow", "yesterday", "tonight", "weekend", "morning",
    "afternoon", "evening", "spring", "summer", "autumn", "winter",
}
TRAP_GROUPS = {
    "negation": "negation", "scope": "scope", "role": "role", "intent": "intent",
    "entity": "entity_swap", "alternative": "entity_swap",
    "number": "number_date", "date": "number_date", "unit": "number_date",
}
# Generic English surface noise for near repeats; none of it changes what is asked.
FILLERS = ["hi, ", "hey ", "quick question: ", "hello - ", "um, ", "sorry, ", "hi there. "]
SUFFIXES = [" please", " thanks", " thx", " please?", ", thank you", " cheers"]
CONTRACTIONS = [
    ("what is", "what's"), ("do not", "don't"), ("does not", "doesn't"), ("i am", "i'm"),
    ("cannot", "can't"), ("it is", "it's"), ("is not", "isn't"), ("there is", "there's"),
    ("i would", "i'd"), ("i have", "i've"), ("will not", "won't"), ("that is", "that's"),
]
# Small talk that does not change what a chat is about.
CHATTER = [
    ("sorry, my dog is barking like mad here", "No problem at all, take your time."),
    ("bear with me, I'm on the bus", "Of course, no rush."),
    ("thanks for being so quick by the way", "You're welcome, happy to help!"),
    ("haha my kids are watching me type this", "Ha, an audience! No worries."),
    ("it's been such a long week", "I hear you, let's get this sorted for you."),
    ("hang on, my coffee is going cold", "Sure, I'll be here."),
    ("sorry if I'm slow, typing on my phone", "That's fine, there's no hurry."),
    ("lovely weather today isn't it", "It is! Hope you get to enjoy some of it."),
    ("you've been really helpful", "Thank you, that's kind of you to say."),
    ("one sec, someone's at the door", "No problem, take your time."),
]


def split_of(seed_id: str) -> str:
    h = int(hashlib.sha256(seed_id.encode()).hexdigest()[:8], 16) % 10
    return "test" if h == 0 else "val" if h == 1 else "train"


def read_seeds(directory: Path) -> list[dict]:
    rows = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    rows.sort(key=lambda r: r["id"])
    return rows


def spellings(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def slot_kind(values: list) -> str:
    """`number_date` when the values are quantities, dates or times, else `entity_swap`."""
    def numeric(v: str) -> bool:
        words = re.findall(r"[a-z]+", v.lower())
        return bool(NUMERIC.search(v.strip())) or any(w in NUMBER_WORDS | DATE_WORDS for w in words)
    firsts = [spellings(v)[0] for v in values]
    return "number_date" if all(numeric(v) for v in firsts) else "entity_swap"


def fill(template: str, values: dict, rng: random.Random, synonyms: bool) -> str:
    """Fills the slots; with `synonyms`, each slot takes one of its value's spellings."""
    def one(match):
        spelled = spellings(values[match.group(1)])
        return rng.choice(spelled) if synonyms else spelled[0]
    text = SLOT.sub(one, template)
    return text[:1].upper() + text[1:] if template[:1] == "{" else text


def pick_values(slots: dict, rng: random.Random) -> dict:
    return {name: rng.choice(values) for name, values in sorted(slots.items())}


def typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not long:
        return text
    i = rng.choice(long)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif kind == 1:
        w = w[:j] + w[j + 1:]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def contract(text: str, rng: random.Random) -> str:
    lower = text.lower()
    options = [(a, b) for a, b in CONTRACTIONS if a in lower or b in lower]
    if not options:
        return text
    a, b = rng.choice(options)
    pattern, repl = (a, b) if a in lower else (b, a)
    return re.sub(re.escape(pattern), repl, text, count=1, flags=re.IGNORECASE)


def noise(text: str, rng: random.Random, strength: int) -> str:
    """Applies `strength` random surface edits that keep the meaning."""
    for _ in range(strength):
        op = rng.randrange(7)
        if op == 0:
            text = text.lower()
        elif op == 1:
            text = text.rstrip("?.! ")
        elif op == 2:
            text = typo(text, rng)
        elif op == 3:
            text = rng.choice(FILLERS) + text[:1].lower() + text[1:]
        elif op == 4:
            text = text.rstrip() + rng.choice(SUFFIXES)
        elif op == 5:
            text = contract(text, rng)
        else:
            text = re.sub(r"\s+", " ", text.replace(",", "")).strip()
    return text


def maybe_noise(text: str, rng: random.Random) -> str:
    return noise(text, rng, rng.choice([0, 0, 0, 1, 1, 2]))


class Pairs:
    def __init__(self):
        self.rows, self.seen = [], set()

    def add(self, seed: dict, group: str, a: str, b: str, same: bool, style: str):
        if a == b or (a, b) in self.seen:
            return
        self.seen.add((a, b))
        self.rows.append({
            "id": f"{seed['id']}-{len(self.rows)}", "group": group, "a": a, "b": b,
            "same_answer": same, "style": style, "seed": seed["id"], "split": split_of(seed["id"]),
        })


def overlap(a: str, b: str) -> float:
    """Jaccard overlap of two texts' lower-case words."""
    wa, wb = set(re.findall(r"[a-z0-9]+", a.lower())), set(re.findall(r"[a-z0-9]+", b.lower()))
    return len(wa & wb) / max(1, len(wa | wb))


def question_pairs(seed: dict, others: list[dict], rng: random.Random, out: Pairs):
    forms, slots, traps = seed["forms"], seed.get("slots", {}), seed["traps"]
    for _ in range(4):
        values = pick_values(slots, rng)
        # near repeats: one wording, surface noise only
        for form in rng.sample(forms, min(3, len(forms))):
            base = fill(form, values, rng, synonyms=False)
            out.add(seed, "near_repeat", base, noise(base, rng, rng.choice([1, 1, 2, 3])), True, "noise")
        # paraphrases: two wordings, synonym spellings of the values
        for i, j in rng.sample([(i, j) for i in range(len(forms)) for j in range(len(forms)) if i != j], min(8, len(forms) * (len(forms) - 1))):
            a = fill(forms[i], values, rng, synonyms=True)
            b = maybe_noise(fill(forms[j], values, rng, synonyms=True), rng)
            out.add(seed, "paraphrase", a, b, True, "reworded")
        # slot swaps: the same or another wording with one value replaced
        for name in sorted(slots):
            alternatives = [v for v in slots[name] if v != values[name]]
            if not alternatives:
                continue
            changed = dict(values, **{name: rng.choice(alternatives)})
            group = slot_kind(slots[name])
            same_form = rng.choice(forms)
            if SLOT.search(same_form) and "{" + name + "}" in same_form:
                out.add(seed, group, fill(same_form, values, rng, False),
                        maybe_noise(fill(same_form, changed, rng, False), rng), False, "minimal")
            i, j = rng.sample(range(len(forms)), 2)
            if "{" + name + "}" in forms[i] and "{" + name + "}" in forms[j]:
                out.add(seed, group, fill(forms[i], values, rng, True),
                        maybe_noise(fill(forms[j], changed, rng, True), rng), False, "reworded")
        # traps: each trap wording against the base wording it shares most words with
        # (minimal: a look-alike is what a cache meets above its threshold), then one reworded
        for trap in traps:
            group = TRAP_GROUPS[trap["op"]]
            tforms = trap["forms"]
            for tform in tforms:
                base = max(forms, key=lambda f: overlap(f, tform))
                out.add(seed, group, fill(base, values, rng, False),
                        maybe_noise(fill(tform, values, rng, False), rng), False, "minimal")
            a = fill(rng.choice(forms), values, rng, True)
            b = maybe_noise(fill(rng.choice(tforms), values, rng, True), rng)
            if rng.random() < 0.5:
                a, b = b, a
            out.add(seed, group, a, b, False, "reworded")
    # another question of the same domain
    same_domain = [o for o in others if o["domain"] == seed["domain"] and o["id"] != seed["id"]]
    for other in rng.sample(same_domain, min(3, len(same_domain))):
        a = fill(rng.choice(forms), pick_values(slots, rng), rng, True)
        b = fill(rng.choice(other["forms"]), pick_values(other.get("slots", {}), rng), rng, True)
        out.add(seed, "other", a, b, False, "unrelated")


def render(seed: dict, values: dict, rng: random.Random, *, reword: bool, flip: dict | None = None,
           final: str | None = None) -> list[dict]:
    """One concrete chat of a conversation seed: its earlier turns, then the final message."""
    messages = []
    for i, turn in enumerate(seed["turns"]):
        forms = flip["forms"] if flip and flip["turn"] == i else turn["forms"]
        form = rng.choice(forms) if reword else forms[0]
        messages.append({"role": turn["role"], "content": fill(form, values, rng, synonyms=reword)})
    text = final if final is not None else fill(seed["final"]["forms"][0], values, rng, False)
    messages.append({"role": "user", "content": text})
    return messages


def with_chatter(messages: list[dict], rng: random.Random) -> list[dict]:
    out = list(messages[:-1])
    for _ in range(rng.choice([1, 1, 2])):
        user, assistant = rng.choice(CHATTER)
        at = 2 * rng.randrange(len(out) // 2 + 1)
        out[at:at] = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out + [messages[-1]]


def norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


class Chats:
    def __init__(self):
        self.rows, self.seen = [], set()

    def add(self, seed: dict, subtype: str, a: list, b: list, same: bool):
        key = json.dumps([a, b])
        if a == b or key in self.seen:
            return
        self.seen.add(key)
        self.rows.append({
            "id": f"{seed['id']}-{len(self.rows)}", "subtype": subtype, "a": a, "b": b,
            "same_answer": same, "seed": seed["id"], "split": split_of(seed["id"]),
        })


def conversation_pairs(seed: dict, convs: list[dict], questions: list[dict], rng: random.Random, out: Chats):
    slots = seed.get("slots", {})
    depends = seed["final"]["depends_on_context"]
    finals = seed["final"]["forms"]
    for _ in range(3):
        values = pick_values(slots, rng)
        final = fill(rng.choice(finals), values, rng, False)
        a = render(seed, values, rng, reword=False, final=final)
        out.add(seed, "same_context_reworded", a,
                render(seed, values, rng, reword=True, final=maybe_noise(fill(rng.choice(finals), values, rng, True), rng)), True)
        out.add(seed, "same_context_reworded", a, render(seed, values, rng, reword=True, final=final), True)
        out.add(seed, "same_context_extra_chatter", a, with_chatter(render(seed, values, rng, reword=True, final=final), rng), True)
        # the history replaced by another conversation's: only a self-contained final survives
        other = rng.choice([c for c in convs if c["id"] != seed["id"]])
        b = render(other, pick_values(other.get("slots", {}), rng), rng, reword=True, final=final)
        if depends:
            if norm(final) in {norm(f) for f in other["final"]["forms"]} or rng.random() < 0.5:
                out.add(seed, "context_swap", a, b, False)
        else:
            out.add(seed, "irrelevant_history", a, b, True)
        for name in sorted(slots):
            alternatives = [v for v in slots[name] if v != values[name]]
            changed = dict(values, **{name: rng.choice(alternatives)})
            b = render(seed, changed, rng, reword=rng.random() < 0.5, final=final)
            # only a fact the history mentions can change the answer
            if depends and b[:-1] != render(seed, values, rng, reword=False, final=final)[:-1]:
                out.add(seed, "detail_swap", a, b, False)
        if depends:
            for flip in seed.get("flips", []):
                out.add(seed, "intent_flip", a, render(seed, values, rng, reword=rng.random() < 0.5, flip=flip, final=final), False)
    # a self-contained question from the question seeds after two unrelated histories
    if not depends:
        q = rng.choice(questions)
        text = fill(rng.choice(q["forms"]), pick_values(q.get("slots", {}), rng), rng, False)
        other = rng.choice([c for c in convs if c["id"] != seed["id"]])
        a = render(seed, pick_values(slots, rng), rng, reword=False, final=text)
        b = render(other, pick_values(other.get("slots", {}), rng), rng, reword=True, final=maybe_noise(text, rng))
        out.add(seed, "irrelevant_history", a, b, True)


def write(path: Path, rows: list[dict]):
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=Path, default=Path(__file__).parent / "seeds")
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    seeds = read_seeds(args.seeds)
    questions = [s for s in seeds if s["kind"] == "question"]
    convs = [s for s in seeds if s["kind"] == "conversation"]
    pairs, chats = Pairs(), Chats()
    for seed in questions:
        question_pairs(seed, questions, random.Random(f"{args.seed}:{seed['id']}"), pairs)
    for seed in convs:
        conversation_pairs(seed, convs, questions, random.Random(f"{args.seed}:{seed['id']}"), chats)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "pairs.jsonl", pairs.rows)
    write(args.out / "conversations.jsonl", chats.rows)
    counts = {}
    for r in pairs.rows + chats.rows:
        k = (r.get("group") or r.get("subtype"), r["split"])
        counts[k] = counts.get(k, 0) + 1
    for (group, split), n in sorted(counts.items()):
        print(f"{group:28} {split:5} {n}")


if __name__ == "__main__":
    main()
