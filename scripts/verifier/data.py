"""What the verifier sees of a labelled row, shared by training, calibration and the tests.

A row is either a question pair (`a`, `b` strings) or a conversation pair (`a`, `b` lists of
`{role, content}`). Both become two *views*: the final user message and the context text.
`context_text` must build exactly what the gateway builds (`policies/src/context.rs`,
`context_text`): the first earlier user turn and the last `RECENT_TURNS` earlier turns, in
order, each prefixed with its role and cut to `TURN_WORDS` words, one per line.
"""

import json
from pathlib import Path

RECENT_TURNS = 4
TURN_WORDS = 48


def final_and_context(messages) -> tuple[str, str]:
    if isinstance(messages, str):
        return messages, ""
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    earlier = [m for m in messages[:last] if m["role"] in ("user", "assistant")]
    return messages[last]["content"], context_text(earlier)


def context_text(earlier: list[dict]) -> str:
    if not earlier:
        return ""
    keep = set(range(max(0, len(earlier) - RECENT_TURNS), len(earlier)))
    first_user = next((i for i, m in enumerate(earlier) if m["role"] == "user"), None)
    if first_user is not None:
        keep.add(first_user)
    lines = []
    for i in sorted(keep):
        words = earlier[i]["content"].split()
        lines.append(f"{earlier[i]['role']}: {' '.join(words[:TURN_WORDS])}")
    return "\n".join(lines)


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def group_of(row: dict) -> str:
    return row.get("group") or row.get("category") or row.get("subtype")
