"""On the GPU machine: sampling, trained-model parity, throughput and prefix-cache figures
of cachet-engine's CUDA backend (the parity / decode-bandwidth part is engine_cuda.py).

Sections (--sections, comma-separated, in this order):
  sample     `cachet-engine sample-check`: the GPU sampling kernel against the host sampler
             (same token for the same key, and the distribution of many draws).
  trained    a small Llama trained here for --train-steps steps (about a minute) on the machine's own Python
             sources (SmolLM2's tokenizer), so that its logits are peaked like a real
             model's; greedy tokens of the CUDA backend against the CPU backend for 32
             steps on held-out code, and logits against transformers fp32.
  throughput random 1,024-token prompts, 128 new tokens (greedy), concurrency 1, 8, 32,
             128, 256: cachet-engine (`throughput`, in process through the scheduler) and
             transformers `generate` with a static KV cache, batched at the same
             concurrency, same card, same checkpoint.
  prefix     64 groups x 16 requests sharing a 2,048-token system prompt, 128-token
             questions, 256 new tokens, shuffled, sent by 256 and by 64 clients:
             prefix cache on vs off.

Writes load.json (every figure) under --out.
"""

import argparse
import contextlib
import glob
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import engine_cuda  # noqa: E402

log = engine_cuda.log

TRAINED = dict(arch="LlamaForCausalLM", model_type="llama", hidden_size=384,
               intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
               num_key_value_heads=2, head_dim=64, vocab_size=49152, rope_theta=10000.0,
               rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=2048)


def kv_bytes_per_token(shape):
    d = shape.get("head_dim", shape["hidden_size"] // shape["num_attention_heads"])
    return shape["num_hidden_layers"] * 2 * shape["num_key_value_heads"] * d * 2


@contextlib.contextmanager
def cascade(value):
    """CACHET_ENGINE_CASCADE=value ("1" on, "0" off) for the engine runs inside."""
    os.environ["CACHET_ENGINE_CASCADE"] = value
    try:
        yield
    finally:
        os.environ.pop("CACHET_ENGINE_CASCADE", None)


def run_json_lines(cmd, out_path):
    log(" ".join(cmd))
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    with open(out_path, "a") as f:
        f.write(" ".join(cmd) + "\n" + proc.stdout + proc.stderr[-4000:] + "\n")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    for line in lines:
        log(json.dumps(line))
    log(f"  ({time.time() - started:.0f} s)")
    return lines


# ---------------------------------------------------------------- sampling


def section_sample(args, results):
    path = os.path.join(args.out, "sample-check.json")
    cmd = [args.bin, "sample-check", "--out", path]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True)
    with open(path) as f:
        results["sample_check"] = json.load(f)


# ---------------------------------------------------------------- trained model


def python_sources():
    roots = sorted({os.path.dirname(os.__file__)})
    files = []
    for root in roots:
        files += sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))
    return [f for f in files if "site-packages" not in f and os.path.getsize(f) > 2000]


def train_small(args, folder):
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    os.makedirs(folder, exist_ok=True)
    config_dict = engine_cuda.hub_config(TRAINED)
    config_dict.update(bos_token_id=1, eos_token_id=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_dict, f)
    tok = Tokenizer.from_file(args.tokenizer)
    files = python_sources()
    held_out = files[-40:]
    train_ids = []
    for path in files[:-40]:
        with open(path, errors="replace") as f:
            train_ids.extend(tok.encode(f.read()).ids)
        if len(train_ids) > 30_000_000:
            break
    data = torch.tensor(train_ids, dtype=torch.long, device="cuda")
    log(f"trained: {len(files) - 40} source files, {len(train_ids)} tokens")
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01, betas=(0.9, 0.95))
    seq, batch = 256, 64
    started, step, loss_value = time.time(), 0, float("nan")
    while step < args.train_steps:
        lr = 2e-3 * min(1.0, (step + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(data) - seq - 1, (batch,), device="cuda")
        x = torch.stack([data[s:s + seq + 1] for s in starts.tolist()])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x[:, :-1], labels=x[:, :-1].clone()).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            loss_value = loss.item()
            log(f"  step {step}: loss {loss_value:.3f}")
    loss_value = loss.item()
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(folder, safe_serialization=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_dict, f)
    with open(args.tokenizer) as src, open(os.path.join(folder, "tokenizer.json"), "w") as dst:
        dst.write(src.read())
    prompts = []
    for path in held_out[:: max(1, len(held_out) // 8)][:8]:
        with open(path, errors="replace") as f:
            ids = tok.encode(f.read()).ids
        start = len(ids) // 3
        prompts.append(ids[start:start + 96])
    return model, prompts, dict(steps=step, seconds=time.time() - started, final_loss=loss_value,
                                train_tokens=len(train_ids))


def section_trained(args, results):
    folder = os.path.join(args.work, "trained")
    model, prompts, info = train_small(args, folder)
    model32 = engine_cuda.copy.deepcopy(model).float()
    work = os.path.join(args.work, "trained-run")
    cuda = engine_cuda.probe(args.bin, folder, "cuda:0", prompts, 32, 64, work + "-cuda")
    cpu = engine_cuda.probe(args.bin, folder, "cpu", prompts, 32, 64, work + "-cpu")
    rows = []
    for c, g in zip(cpu, cuda):
        div = engine_cuda.first_divergence(c["tokens"], g["tokens"])
        top2 = np.sort(c["logits"], -1)[:, -2:]
        gaps = top2[:, 1] - top2[:, 0]
        rows.append(dict(same_32=c["tokens"] == g["tokens"], first_divergence=div,
                         cpu_top2_gap_at_divergence=float(gaps[div]) if div < len(gaps) else None,
                         cpu_min_top2_gap=float(gaps.min()),
                         max_abs_logit_diff=float(np.abs(c["logits"] - g["logits"]).max()),
                         cpu_logit_abs_max=float(np.abs(c["logits"]).max())))
    info["cuda_vs_cpu_greedy"] = rows
    info["cascade"] = cascade_check(args, folder, prompts, work)
    info["cuda_vs_transformers"] = engine_cuda.compare(model, model32, prompts, cuda)
    info["cpu_vs_transformers"] = engine_cuda.compare(model, model32, prompts, cpu)
    log(json.dumps(info["cuda_vs_cpu_greedy"]))
    results["trained"] = info
    del model, model32
    torch.cuda.empty_cache()


def cascade_check(args, folder, prompts, work):
    """Cascade attention against the per-token kernel, end to end on the trained model.

    160 prompts share a 128-token prefix, each with its own 24 tokens: with
    `probe --share-prefix` they read the first prompt's KV blocks, so that every decode
    step is a batch of 160 sequences sharing 8 blocks, which the backend cascades (2 kv
    heads: from 132 decode tokens on, its launch is not split). Greedy tokens on the
    device, 32 per prompt, with the cascade; with the same shared blocks and the cascade
    off; and with every prompt computing its own KV.
    """
    prefix = prompts[0][:96] + prompts[1][:32]
    many = [prefix + prompts[i % len(prompts)][i // len(prompts):][:24] for i in range(160)]
    runs = {}
    for label, extra, on in (("cascade", ["--share-prefix"], "1"),
                             ("shared_blocks_no_cascade", ["--share-prefix"], "0"),
                             ("own_blocks", [], "1")):
        with cascade(on):
            runs[label] = engine_cuda.probe(args.bin, folder, "cuda:0", many, 32, 64,
                                            f"{work}-{label}", extra=["--greedy-on-device",
                                                                      *extra])
    out = dict(prompts=len(many), prefix_tokens=len(prefix))
    for other in ("shared_blocks_no_cascade", "own_blocks"):
        divs = [engine_cuda.first_divergence(a["tokens"], b["tokens"])
                for a, b in zip(runs["cascade"], runs[other])]
        out[f"vs_{other}"] = dict(same_32=sum(d >= 32 for d in divs),
                                  first_divergences=sorted(d for d in divs if d < 32))
    log("cascade: " + json.dumps(out))
    return out


# ---------------------------------------------------------------- throughput


@torch.no_grad()
def hf_throughput(folder, vocab, levels, prompt_tokens, new_tokens, min_requests):
    """transformers' generate, greedy, static KV cache, one batch of `c` at a time.

    Eager: recent transformers compile the decoding forward when the cache is static, once
    per batch size and cache length, which took most of a minute per level at 8B (the
    2026-11-26 run's concurrency-1 level spent 62 s on 512 tokens) and would not fit the
    device time of one run. The warm-up runs the measured prompt length, so that what is
    measured is steady state.
    """
    from transformers import (AutoModelForCausalLM, GenerationConfig, LogitsProcessor,
                              LogitsProcessorList)
    eager = {"disable_compile": True} if hasattr(GenerationConfig(), "disable_compile") else {}

    class FirstToken(LogitsProcessor):
        """Records when the first token's logits exist (the end of the prefill)."""

        def __init__(self):
            self.at = None

        def __call__(self, input_ids, scores):
            if self.at is None:
                torch.cuda.synchronize()
                self.at = time.perf_counter()
            return scores

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).cuda().eval()
    gen = torch.Generator(device="cpu").manual_seed(0)
    out = []
    for c in levels:
        n = max(c, min_requests)
        try:
            # Warm-up at this batch size.
            warm = torch.randint(3, vocab, (c, prompt_tokens), generator=gen).cuda()
            model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=4,
                           min_new_tokens=4, do_sample=False, cache_implementation="static",
                           pad_token_id=0, **eager)
            ttft, tpot, tokens = [], [], 0
            started = time.perf_counter()
            for _ in range(math.ceil(n / c)):
                ids = torch.randint(3, vocab, (c, prompt_tokens), generator=gen).cuda()
                first = FirstToken()
                t0 = time.perf_counter()
                result = model.generate(ids, attention_mask=torch.ones_like(ids),
                                        max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        do_sample=False, cache_implementation="static",
                                        pad_token_id=0,
                                        logits_processor=LogitsProcessorList([first]),
                                        **eager)
                torch.cuda.synchronize()
                t1 = time.perf_counter()
                produced = result.shape[1] - prompt_tokens
                tokens += produced * c
                ttft += [(first.at - t0) * 1e3] * c
                tpot += [(t1 - first.at) * 1e3 / max(1, produced - 1)] * c
            wall = time.perf_counter() - started
            line = dict(engine="transformers", concurrency=c, requests=len(ttft),
                        compiled=not eager,
                        output_tokens=tokens, wall_s=wall, output_tokens_per_s=tokens / wall,
                        ttft_ms_p50=float(np.percentile(ttft, 50)),
                        ttft_ms_p99=float(np.percentile(ttft, 99)),
                        tpot_ms_p50=float(np.percentile(tpot, 50)),
                        tpot_ms_p99=float(np.percentile(tpot, 99)))
        except torch.OutOfMemoryError as error:
            line = dict(engine="transformers", concurrency=c, error=f"out of memory: {error}"[:300])
        torch.cuda.empty_cache()
        log(json.dumps(line))
        out.append(line)
    del model
    torch.cuda.empty_cache()
    return out


def section_throughput(args, results):
    levels = [int(c) for c in args.concurrency.split(",")]
    results.setdefault("throughput", {})
    for name in args.throughput_shapes.split(","):
        shape = engine_cuda.SHAPES[name]
        folder, model = engine_cuda.make_checkpoint(name, shape, args.work)
        del model
        torch.cuda.empty_cache()
        per_seq_blocks = math.ceil((args.prompt_tokens + args.new_tokens) / 16)
        blocks = max(levels) * per_seq_blocks + 1024
        cmd = [args.bin, "throughput", "--model", folder, "--device", "cuda:0",
               "--kv-blocks", str(blocks), "--block-size", "16",
               "--max-batch-tokens", str(args.max_batch_tokens),
               "--max-running-seqs", str(max(levels)),
               "--concurrency", args.concurrency, "--prompt-tokens", str(args.prompt_tokens),
               "--new-tokens", str(args.new_tokens)]
        engine = run_json_lines(cmd, os.path.join(args.out, f"throughput-{name}.txt"))
        for line in engine:
            line["engine"] = "cachet-engine"
        entry = dict(engine=engine, kv_blocks=blocks,
                     kv_gib=blocks * 16 * kv_bytes_per_token(shape) / 2**30)
        results["throughput"][name] = entry
        if not args.skip_transformers:
            entry["transformers"] = hf_throughput(folder, shape["vocab_size"], levels,
                                                  args.prompt_tokens, args.new_tokens, 4)
        with open(os.path.join(args.out, "load.json"), "w") as f:
            json.dump(results, f, indent=1)


# ---------------------------------------------------------------- prefix cache


def section_prefix(args, results):
    name = args.prefix_shape
    shape = engine_cuda.SHAPES[name]
    folder = os.path.join(args.work, name)
    if not os.path.exists(os.path.join(folder, "model.safetensors")) and not glob.glob(
            os.path.join(folder, "*.safetensors")):
        folder, model = engine_cuda.make_checkpoint(name, shape, args.work)
        del model
        torch.cuda.empty_cache()
    entries = {}
    for clients in args.prefix_concurrency.split(","):
        entry = entries[f"clients_{clients}"] = {}
        # Cache on, on with the cascade attention off (how much of the gain it is), off.
        for label, caching, on in (("on", True, "1"), ("on_no_cascade", True, "0"),
                                   ("off", False, "1")):
            cmd = [args.bin, "prefix-bench", "--model", folder, "--device", "cuda:0",
                   "--kv-blocks", "24000", "--block-size", "16",
                   "--max-batch-tokens", str(args.max_batch_tokens),
                   "--max-running-seqs", "256", "--groups", "64", "--per-group", "16",
                   "--system-tokens", "2048", "--question-tokens", "128",
                   "--new-tokens", "256", "--concurrency", clients]
            if not caching:
                cmd.append("--no-prefix-caching")
            with cascade(on):
                lines = run_json_lines(cmd, os.path.join(args.out, f"prefix-{name}.txt"))
            entry[label] = lines[-1]
        on, off = entry["on"], entry["off"]
        entry["median_ttft_ratio_off_over_on"] = off["ttft_ms_p50"] / on["ttft_ms_p50"]
        entry["throughput_ratio_on_over_off"] = (on["output_tokens_per_s"]
                                                 / off["output_tokens_per_s"])
        log(f"prefix, {clients} clients: median TTFT {off['ttft_ms_p50']:.0f} -> "
            f"{on['ttft_ms_p50']:.0f} ms ({entry['median_ttft_ratio_off_over_on']:.1f}x), "
            f"throughput {off['output_tokens_per_s']:.0f} -> "
            f"{on['output_tokens_per_s']:.0f} tok/s ({entry['throughput_ratio_on_over_off']:.2f}x)")
    results["prefix"] = {name: entries}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/engine-cuda")
    parser.add_argument("--sections", default="sample,trained,throughput,prefix")
    parser.add_argument("--tokenizer", default=".devbin/tokenizer.json")
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--throughput-shapes", default="llama-3.2-1b,llama-3.1-8b")
    parser.add_argument("--concurrency", default="1,8,32,128,256")
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--prefix-shape", default="llama-3.2-1b")
    parser.add_argument("--prefix-concurrency", default="256",
                        help="comma-separated numbers of clients")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    results = {"gpu": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d")}
    sections = dict(sample=section_sample, trained=section_trained,
                    throughput=section_throughput, prefix=section_prefix)
    for name in args.sections.split(","):
        started = time.time()
        try:
            sections[name](args, results)
        except Exception as error:  # one section failing must not hide the others
            log(f"{name}: FAILED: {error!r}")
            results.setdefault("errors", {})[name] = repr(error)
        log(f"== {name} done in {time.time() - started:.0f} s")
        with open(os.path.join(args.out, "load.json"), "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
