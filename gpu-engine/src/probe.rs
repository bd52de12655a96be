//! `cachet-engine probe`: runs prompts straight through the model (no scheduler) and
//! writes every generated token's logits, for parity checks against other backends
//! and against transformers (`scripts/gpu/parity.py`).
//!
//! All prompts run together in each step, prefill in chunks and then one greedy token
//! per sequence per step, so the mixed batches the scheduler builds are exercised too.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use cachet_engine::backend::{KvLayout, StepBatch};
use cachet_engine::checkpoint::ModelConfig;
use cachet_engine::model::{self, Device};
use cachet_engine::sampling::argmax;

#[derive(Args)]
pub struct ProbeArgs {
    /// Hugging Face checkpoint folder.
    #[arg(long)]
    model: PathBuf,
    /// Compute device: "cpu" or "cuda:N".
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run every CUDA step eagerly (no graph replay).
    #[arg(long)]
    no_cuda_graphs: bool,
    /// Take each step's greedy tokens from the model (on a GPU: argmax on the device,
    /// only ids copied back) instead of its logits; no logits files are written.
    #[arg(long)]
    greedy_on_device: bool,
    /// JSON file holding a list of prompts, each a list of token ids.
    #[arg(long)]
    prompts: PathBuf,
    /// Greedy tokens generated per prompt (the first comes from the prefill).
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Most prompt tokens of one sequence per step: longer prompts are prefilled in
    /// chunks over the KV of the earlier ones.
    #[arg(long, default_value_t = 256)]
    chunk_tokens: usize,
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Folder for result.json (the tokens) and logits-<i>.bin (little-endian f32,
    /// [new_tokens, vocab] per prompt).
    #[arg(long)]
    out: PathBuf,
}

struct Seq {
    prompt: Vec<u32>,
    table: Vec<u32>,
    prefilled: usize,
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.new_tokens > 0, "--new-tokens must be at least 1");
    anyhow::ensure!(args.chunk_tokens > 0, "--chunk-tokens must be at least 1");
    let prompts: Vec<Vec<u32>> = serde_json::from_slice(
        &std::fs::read(&args.prompts)
            .with_context(|| format!("failed to read {}", args.prompts.display()))?,
    )
    .context("the prompts file must be a json list of lists of token ids")?;
    anyhow::ensure!(
        prompts.iter().all(|p| !p.is_empty()),
        "every prompt needs a token"
    );
    let mut device: Device = args.device.parse()?;
    if args.no_cuda_graphs {
        device = device.without_graphs();
    }
    let config = ModelConfig::from_dir(&args.model)?;
    let bs = args.block_size;
    let mut next_block = 0u32;
    let mut seqs: Vec<Seq> = prompts
        .into_iter()
        .map(|prompt| {
            let n_blocks = (prompt.len() + args.new_tokens).div_ceil(bs) as u32;
            let table = (next_block..next_block + n_blocks).collect();
            next_block += n_blocks;
            Seq {
                prompt,
                table,
                prefilled: 0,
                tokens: Vec::new(),
                logits: Vec::new(),
            }
        })
        .collect();
    let kv = KvLayout {
        n_blocks: next_block as usize,
        block_size: bs,
    };
    let mut model = model::load(&args.model, &config, &device, kv, false)?;
    let started = Instant::now();
    let mut n_steps = 0usize;
    loop {
        let mut batch = StepBatch::default();
        let mut sampled = Vec::new();
        for (index, seq) in seqs.iter().enumerate() {
            if seq.prefilled < seq.prompt.len() {
                let end = (seq.prefilled + args.chunk_tokens).min(seq.prompt.len());
                let done = end == seq.prompt.len();
                let chunk = &seq.prompt[seq.prefilled..end];
                batch.push_seq(chunk, seq.prefilled, seq.table.clone(), bs, done);
                if done {
                    sampled.push(index);
                }
            } else if seq.tokens.len() < args.new_tokens {
                let position = seq.prompt.len() + seq.tokens.len() - 1;
                let last = seq.tokens[seq.tokens.len() - 1];
                batch.push_seq(&[last], position, seq.table.clone(), bs, true);
                sampled.push(index);
            }
        }
        if batch.seqs.is_empty() {
            break;
        }
        for seq in seqs.iter_mut() {
            seq.prefilled = (seq.prefilled + args.chunk_tokens).min(seq.prompt.len());
        }
        n_steps += 1;
        if args.greedy_on_device {
            let ids = model.forward_greedy(&batch)?;
            anyhow::ensure!(ids.len() == sampled.len(), "one token per sequence");
            for (index, id) in sampled.into_iter().zip(ids) {
                seqs[index].tokens.push(id);
            }
            continue;
        }
        let logits = model.forward(&batch)?;
        anyhow::ensure!(logits.len() == sampled.len(), "one logits row per sequence");
        for (index, row) in sampled.into_iter().zip(logits) {
            let seq = &mut seqs[index];
            seq.tokens.push(argmax(&row));
            seq.logits.extend_from_slice(&row);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.out)?;
    for (i, seq) in seqs.iter().enumerate().filter(|_| !args.greedy_on_device) {
        let path = args.out.join(format!("logits-{i}.bin"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for v in &seq.logits {
            file.write_all(&v.to_le_bytes())?;
        }
        file.flush()?;
    }
    let result = serde_json::json!({
        "device": device.to_string(),
        "vocab_size": config.vocab_size,
        "steps": n_steps,
        "elapsed_s": elapsed,
        "prompts": seqs.iter().map(|s| serde_json::json!({
            "prompt_len": s.prompt.len(),
            "tokens": s.tokens,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(args.out.join("result.json"), result.to_string())?;
    println!(
        "probe on {device}: {} prompts, {n_steps} steps in {elapsed:.2} s",
        seqs.len()
    );
    Ok(())
}
