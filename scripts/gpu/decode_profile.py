"""On the GPU machine: where a batch-1 decode step of cachet-engine spends its time.

Runs `cachet-engine bench` on a checkpoint made by engine_cuda.py (made here if missing)
under Nsight Compute, which times every kernel of a window of launches during the solo
decode (kernels inside CUDA graphs are timed node by node, one at a time, caches left
warm). Prints, per kernel name, the time per decode step and its share, and the sum of
kernel times per step next to the step time the bench measures without the profiler:
their difference is time the GPU spends idle between steps (host work, launches).

    python3 scripts/gpu/decode_profile.py --bin .devbin/cachet-engine --shape llama-3.1-8b \
        --out /tmp/out/profile-8b

With --workload prefix it profiles a window of `cachet-engine prefix-bench` instead (the
prefix-cache benchmark: many sequences of a few thousand tokens decoding together, new
ones arriving with prefill chunks), and reports decode-only steps and steps that carry a
prefill chunk separately, next to the engine's own step counters of an unprofiled run.

    python3 scripts/gpu/decode_profile.py --bin .devbin/cachet-engine --workload prefix \
        --skip 100000 --count 3000 --out /tmp/out/profile-prefix

Nsight Compute serialises kernels, so overlap between kernels (programmatic dependent
launch) does not show here; the sum is an upper bound of the GPU time of a step.
"""

import argparse
import collections
import csv
import io
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_cuda  # noqa: E402

STEP_END = ("argmax_finish", "sample_rows")


def prefix_cmd(binary, folder, caching=True):
    """The prefix-cache benchmark as engine_load.py runs it, 256 clients."""
    cmd = [binary, "prefix-bench", "--model", folder, "--device", "cuda:0", "--kv-blocks",
           "24000", "--block-size", "16", "--max-batch-tokens", "2048", "--max-running-seqs",
           "256", "--groups", "64", "--per-group", "16", "--system-tokens", "2048",
           "--question-tokens", "128", "--new-tokens", "256", "--concurrency", "256"]
    return cmd if caching else cmd + ["--no-prefix-caching"]


def sum_by_kernel(launches):
    """(launches, ns) per kernel name of (name, ns) launches."""
    per_kernel = collections.defaultdict(lambda: [0, 0.0])
    for name, ns in launches:
        per_kernel[name][0] += 1
        per_kernel[name][1] += ns
    return per_kernel


def steps_by_kind(launches):
    """Splits the profiled launches into steps (each ends with its sampling kernel) and
    sums kernel time per name within decode-only and prefill-carrying steps."""
    steps = {"decode": [], "mixed": []}
    current = []
    for name, ns in launches:
        current.append((name, ns))
        if name.startswith(STEP_END):
            kind = "mixed" if any(n.startswith("prefill") for n, _ in current) else "decode"
            steps[kind].append(current)
            current = []
    return {kind: (len(done), sum_by_kernel(l for step in done for l in step))
            for kind, done in steps.items()}


def kernel_rows(steps, per_kernel):
    """The per-kernel table over `steps` steps, largest share first."""
    total = sum(ns for _, ns in per_kernel.values())
    out = [f"{'kernel':<40} {'per step':>8} {'us/step':>9} {'share':>6}"]
    for name, (n, ns) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
        out.append(f"{name[:40]:<40} {n / steps:8.1f} {ns / steps / 1e3:9.1f} "
                   f"{100 * ns / total:5.1f}%")
    return out


def table(title, steps, per_kernel):
    total = sum(ns for _, ns in per_kernel.values())
    return ([f"{title}: {steps} steps, kernel time per step {total / steps / 1e3:.1f} us"]
            + kernel_rows(steps, per_kernel))


def bench_cmd(binary, folder, decode_tokens):
    return [binary, "bench", "--model", folder, "--device", "cuda:0", "--prompt-tokens", "128",
            "--decode-tokens", str(decode_tokens), "--kv-blocks", "2048", "--block-size", "16",
            "--max-batch-tokens", "1024", "--ttft-prompt-tokens", "256",
            "--ttft-cached-tokens", "128"]


def ncu_launches(args, workload):
    """Runs `workload` under Nsight Compute; writes kernels.csv and returns its launches
    in order, as (kernel name, ns)."""
    cmd = [args.ncu, "--clock-control", "none", "--cache-control", "none", "--graph-profiling",
           "node", "--metrics", "gpu__time_duration.sum", "--csv", "--page", "raw",
           "--launch-skip", str(args.skip), "--launch-count", str(args.count), *workload]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('"')]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    if not rows:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"ncu exited {done.returncode} and timed no kernel")
    # The raw page holds every device attribute per kernel; keep what the table uses.
    keep = ["Kernel Name", "Grid Size", "Block Size", "gpu__time_duration.sum"]
    with open(os.path.join(args.out, "kernels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keep)
        writer.writerows([row.get(k, "") for k in keep] for row in rows)
    launches = []
    for row in rows:
        try:
            launches.append((row["Kernel Name"],
                             float(row["gpu__time_duration.sum"].replace(",", ""))))
        except (KeyError, ValueError):
            continue  # a units row, where ncu writes one
    return launches


def profile_prefix(args, folder):
    plain = subprocess.run(prefix_cmd(args.bin, folder), check=True, capture_output=True,
                           text=True).stdout
    summary = [json.loads(l) for l in plain.splitlines() if l.startswith("{")][-1]
    launches = ncu_launches(args, prefix_cmd(args.bin, folder))
    out = ["prefix-bench without profiler: " + json.dumps(summary), ""]
    for kind, (steps, per_kernel) in steps_by_kind(launches).items():
        if steps:
            out += table(f"{kind} steps in the window", steps, per_kernel) + [""]
    text = "\n".join(out)
    print(text)
    with open(os.path.join(args.out, "profile.txt"), "w") as f:
        f.write(text + "\n" + " ".join(prefix_cmd(args.bin, folder)) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--work", default="/tmp/engine-cuda")
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip", type=int, default=3000,
                        help="kernel launches to let pass before the window (model warm-up, prefill)")
    parser.add_argument("--count", type=int, default=1200, help="kernels timed")
    parser.add_argument("--ncu", default="ncu")
    parser.add_argument("--workload", choices=["bench", "prefix"], default="bench")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    shape = engine_cuda.SHAPES[args.shape]
    folder = os.path.join(args.work, args.shape)
    if not os.path.exists(os.path.join(folder, "model.safetensors.index.json")) and not \
            os.path.exists(os.path.join(folder, "model.safetensors")):
        engine_cuda.make_checkpoint(args.shape, shape, args.work)
        import torch
        torch.cuda.empty_cache()

    if args.workload == "prefix":
        return profile_prefix(args, folder)
    plain = subprocess.run(bench_cmd(args.bin, folder, 512), check=True, capture_output=True,
                           text=True).stdout
    rate = float(re.search(r"decode batch 1: ([\d.]+) tokens/s", plain).group(1))
    step_us = 1e6 / rate

    per_kernel = sum_by_kernel(ncu_launches(args, bench_cmd(args.bin, folder, 512)))
    steps = max((n for name, (n, _) in per_kernel.items()
                 if name.startswith(STEP_END)), default=0)
    if steps == 0:
        raise SystemExit("no sampling kernel in the window: change --skip / --count")
    total = sum(ns for _, ns in per_kernel.values())
    out = [f"{args.shape}: bench without profiler {rate:.1f} tok/s = {step_us:.1f} us per step",
           f"window: {sum(n for n, _ in per_kernel.values())} kernels, {steps} decode steps; kernel time per step "
           f"{total / steps / 1e3:.1f} us (GPU idle or overlapping: {step_us - total / steps / 1e3:.1f} us)",
           ""] + kernel_rows(steps, per_kernel)
    text = "\n".join(out)
    print(text)
    with open(os.path.join(args.out, "profile.txt"), "w") as f:
        f.write(text + "\n" + "\n".join(bench_cmd(args.bin, folder, 512)) + "\n" + plain)


if __name__ == "__main__":
    main()
