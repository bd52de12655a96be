"""The acceptance figures of the engine's CUDA backend from one `engine-cuda` run.

Reads parity.json (engine_cuda.py) and load.json (engine_load.py) under the run's output
folder and prints, as markdown, each goal next to what was measured and whether it was
met; `engine-cuda` writes this to summary.md last, so that file also marks a finished
run. Standard library only.

    python3 scripts/gpu/engine_summary.py /tmp/engine-cuda-out
"""

import json
import os
import sys

MBU_GOAL = 0.80
TTFT_GOAL = 10.0
THROUGHPUT_GOAL = 3.0
VLLM_8B_TOKENS_PER_S = 5300.0  # published, Llama-3.1-8B on one H100 at 256 concurrent
# Our logits' distance to transformers fp32 may exceed transformers bf16's own by this
# factor: both are bf16 computations that round in different places.
PARITY_SLACK = 1.10


def verdict(ok):
    return "met" if ok else "**not met**"


def load(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def parity_lines(parity):
    lines = ["## Parity (relative L2 of the logits against transformers fp32)", "",
             "| shape | ours, max | transformers bf16, max | verdict |", "| --- | --- | --- | --- |"]
    for name, entry in parity.get("shapes", {}).items():
        if "error" in entry:
            lines.append(f"| {name} | failed: {entry['error']} | | **not met** |")
            continue
        rows = entry["vs_transformers"] + entry.get("vs_transformers_per_head_attention", [])
        ours = max(r["rel_l2_vs_fp32"] for r in rows)
        theirs = max(r["transformers_bf16_rel_l2_vs_fp32"] for r in rows)
        lines.append(f"| {name} | {ours:.4f} | {theirs:.4f} | "
                     f"{verdict(ours <= theirs * PARITY_SLACK)} |")
    return lines


def mbu_lines(parity):
    lines = ["", f"## Batch-1 decode (goal: MBU >= {MBU_GOAL:.0%} of the vendor peak)", "",
             "| shape | tok/s | MBU (vendor peak) | MBU (copy bandwidth) | verdict |",
             "| --- | --- | --- | --- | --- |"]
    for name, entry in parity.get("shapes", {}).items():
        if "mbu_vs_vendor_peak" not in entry:
            continue
        mbu = entry["mbu_vs_vendor_peak"]
        lines.append(f"| {name} | {entry['decode_batch1_tokens_per_s']:.1f} | {mbu:.1%} | "
                     f"{entry['mbu']:.1%} | {verdict(mbu >= MBU_GOAL)} |")
    return lines


def trained_lines(load_json):
    trained = load_json.get("trained")
    if not trained:
        return ["", "## Greedy tokens, CUDA vs CPU (trained model): did not run"]
    same = [row["same_32"] for row in trained["cuda_vs_cpu_greedy"]]
    lines = ["", f"## Greedy tokens, CUDA vs CPU (trained model, 32 tokens): "
                 f"{sum(same)} of {len(same)} prompts identical ({verdict(all(same))})"]
    cascade = trained.get("cascade")
    if cascade:
        lines += ["", f"Cascade attention ({cascade['prompts']} prompts sharing "
                      f"{cascade['prefix_tokens']} tokens), prompts with the same 32 greedy tokens:"]
        for other, label in (("shared_blocks_no_cascade", "same shared blocks, cascade off"),
                             ("own_blocks", "every prompt its own blocks")):
            entry = cascade[f"vs_{other}"]
            lines.append(f"- vs {label}: {entry['same_32']} of {cascade['prompts']}")
    return lines


def throughput_lines(load_json):
    lines = ["", "## Throughput (output tok/s; TTFT and TPOT p50 in ms)"]
    if not load_json.get("throughput"):
        return lines + ["", "did not run"]
    for name, entry in load_json.get("throughput", {}).items():
        theirs = {t["concurrency"]: t for t in entry.get("transformers") or []}
        lines += ["", f"**{name}**", "",
                  "| concurrency | cachet-engine | TTFT | TPOT | transformers | TTFT | TPOT |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for ours in entry["engine"]:
            c = ours["concurrency"]
            t = theirs.get(c)
            other = (f"{t['output_tokens_per_s']:.0f} | {t['ttft_ms_p50']:.1f} | "
                     f"{t['tpot_ms_p50']:.2f}") if t else "not run | | "
            lines.append(f"| {c} | {ours['output_tokens_per_s']:.0f} | "
                         f"{ours['ttft_ms_p50']:.1f} | {ours['tpot_ms_p50']:.2f} | {other} |")
            if name == "llama-3.1-8b" and c == 256:
                share = ours["output_tokens_per_s"] / VLLM_8B_TOKENS_PER_S
                lines.append(f"| | {share:.0%} of vLLM's published "
                             f"{VLLM_8B_TOKENS_PER_S:.0f} | | | | | |")
    return lines


def prefix_lines(load_json):
    lines = ["", f"## Prefix cache (goals: median TTFT >= {TTFT_GOAL:.0f}x lower, "
                 f"throughput >= {THROUGHPUT_GOAL:.0f}x)", ""]
    if not load_json.get("prefix"):
        return lines + ["did not run"]
    lines += ["| shape | clients | TTFT p50 on / off ms | tok/s on / off | TTFT ratio | "
             "throughput ratio | verdict |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, by_clients in load_json.get("prefix", {}).items():
        for clients, entry in by_clients.items():
            on, off = entry["on"], entry["off"]
            ttft = entry["median_ttft_ratio_off_over_on"]
            speed = entry["throughput_ratio_on_over_off"]
            ok = ttft >= TTFT_GOAL and speed >= THROUGHPUT_GOAL
            lines.append(f"| {name} | {clients.removeprefix('clients_')} | "
                         f"{on['ttft_ms_p50']:.0f} / {off['ttft_ms_p50']:.0f} | "
                         f"{on['output_tokens_per_s']:.0f} / {off['output_tokens_per_s']:.0f} | "
                         f"{ttft:.1f}x | {speed:.2f}x | {verdict(ok)} |")
            if "on_no_cascade" in entry:
                plain = entry["on_no_cascade"]["output_tokens_per_s"]
                lines.append(f"| | | cache on, cascade attention off: {plain:.0f} tok/s, "
                             f"{plain / off['output_tokens_per_s']:.2f}x | | | | |")
    return lines


def summary(folder):
    parity = load(folder, "parity.json") or {}
    load_json = load(folder, "load.json") or {}
    gpu = parity.get("gpu") or load_json.get("gpu") or "unknown GPU"
    date = parity.get("date") or load_json.get("date") or "unknown date"
    lines = [f"# cachet-engine CUDA backend: {gpu}, {date}", ""]
    if parity:
        lines += parity_lines(parity) + mbu_lines(parity)
    else:
        lines.append("parity.json missing: the parity part did not run")
    if load_json:
        lines += trained_lines(load_json) + throughput_lines(load_json) + prefix_lines(load_json)
        for section, error in load_json.get("errors", {}).items():
            lines.append(f"\nSection {section} failed: {error}")
    else:
        lines.append("\nload.json missing: the load part did not run")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(summary(sys.argv[1]))
