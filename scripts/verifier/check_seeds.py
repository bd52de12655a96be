#!/usr/bin/env python3
"""Checks hand-written seed files for the verifier's training-data generator.

Usage: check_seeds.py FILE.jsonl...   (exit 1 and one line per problem when any is wrong)
"""
import json
import re
import sys

SLOT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
TRAP_OPS = {"negation", "scope", "role", "alternative", "intent", "number", "date", "unit", "entity"}


def slots_in(text):
    return set(SLOT.findall(text))


def check_forms(where, forms, slots, problems, need=2):
    if not isinstance(forms, list) or len(forms) < need or not all(isinstance(f, str) and f.strip() for f in forms):
        problems.append(f"{where}: needs a list of at least {need} non-empty strings")
        return
    if len(set(forms)) != len(forms):
        problems.append(f"{where}: repeated form")
    for f in forms:
        for s in slots_in(f):
            if s not in slots:
                problems.append(f"{where}: {{{s}}} is not a slot of this seed")
        if "{" in SLOT.sub("", f) or "}" in SLOT.sub("", f):
            problems.append(f"{where}: stray brace in {f!r}")


def check_slots(where, slots, problems):
    if not isinstance(slots, dict):
        problems.append(f"{where}.slots: must be an object")
        return {}
    for name, values in slots.items():
        if not SLOT.fullmatch("{" + name + "}"):
            problems.append(f"{where}.slots.{name}: bad slot name")
        if not isinstance(values, list) or len(values) < 2:
            problems.append(f"{where}.slots.{name}: needs at least 2 alternative values")
            continue
        for v in values:
            ok = isinstance(v, str) and v.strip() or (
                isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v))
            if not ok:
                problems.append(f"{where}.slots.{name}: a value is a string or a list of synonyms")
    return slots


def check_question(where, row, problems):
    slots = check_slots(where, row.get("slots", {}), problems)
    check_forms(f"{where}.forms", row.get("forms"), slots, problems, need=5)
    used = set().union(*(slots_in(f) for f in row.get("forms") or [] if isinstance(f, str)))
    for s in slots:
        if s not in used:
            problems.append(f"{where}.slots.{s}: no form uses it")
    traps = row.get("traps")
    if not isinstance(traps, list) or len(traps) < 4:
        problems.append(f"{where}.traps: needs at least 4 traps")
        return
    ops = set()
    for i, t in enumerate(traps):
        op = t.get("op")
        if op not in TRAP_OPS:
            problems.append(f"{where}.traps[{i}].op: {op!r} is not one of {sorted(TRAP_OPS)}")
        ops.add(op)
        check_forms(f"{where}.traps[{i}].forms", t.get("forms"), slots, problems)
    if len(ops) < 3:
        problems.append(f"{where}.traps: needs at least 3 different ops")


def check_conversation(where, row, problems):
    slots = check_slots(where, row.get("slots", {}), problems)
    turns = row.get("turns")
    if not isinstance(turns, list) or not 2 <= len(turns) <= 12:
        problems.append(f"{where}.turns: needs 2 to 12 earlier turns")
        turns = []
    for i, t in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if t.get("role") != want:
            problems.append(f"{where}.turns[{i}].role: must be {want} (turns alternate, user first)")
        check_forms(f"{where}.turns[{i}].forms", t.get("forms"), slots, problems)
    if turns and len(turns) % 2 != 0:
        problems.append(f"{where}.turns: must end with an assistant turn")
    final = row.get("final", {})
    check_forms(f"{where}.final.forms", final.get("forms"), slots, problems)
    if not isinstance(final.get("depends_on_context"), bool):
        problems.append(f"{where}.final.depends_on_context: must be true or false")
    for i, f in enumerate(row.get("flips", [])):
        n = f.get("turn")
        if not isinstance(n, int) or not 0 <= n < len(turns) or n % 2 != 0:
            problems.append(f"{where}.flips[{i}].turn: must index a user turn")
        check_forms(f"{where}.flips[{i}].forms", f.get("forms"), slots, problems, need=1)


def main(paths):
    problems, seen = [], set()
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(f"{where}: not JSON ({e})")
                    continue
                rid = row.get("id")
                if not isinstance(rid, str) or rid in seen:
                    problems.append(f"{where}.id: missing or repeated")
                seen.add(rid)
                where = f"{where} ({rid})"
                kind = row.get("kind")
                if kind == "question":
                    check_question(where, row, problems)
                elif kind == "conversation":
                    check_conversation(where, row, problems)
                else:
                    problems.append(f"{where}.kind: must be \"question\" or \"conversation\"")
    for p in problems:
        print(p)
    print(f"{len(seen)} seeds, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
