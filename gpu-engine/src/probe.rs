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
    /// Prompts that begin with the same whole blocks of tokens as the first prompt take
    /// those blocks' KV from it, as the prefix cache would hand them out: the first
    /// prompt prefills them before the others start. Decode batches of sequences that
    /// share blocks are what the CUDA backend's cascade attention serves.
    #[arg(long)]
    share_prefix: bool,
    /// Folder for result.json (the tokens) and logits-<i>.bin (little-endian f32,
    /// [new_tokens, vocab] per prompt).
    #[arg(long)]
    out: PathBuf,
}

struct Seq {
    prompt: Vec<u32>,
    table: Vec<u32>,
    prefilled: usize,
    /// Tokens of the first prompt's KV this one reads: it waits until they exist.
    borrowed: usize,
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
                borrowed: 0,
                tokens: Vec::new(),
                logits: Vec::new(),
            }
        })
        .collect();
    if args.share_prefix {
        share_prefix(&mut seqs, bs);
    }
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
        let mut chunked = Vec::new();
        let first_prefilled = seqs[0].prefilled;
        for (index, seq) in seqs.iter().enumerate() {
            if seq.borrowed > first_prefilled {
                continue;
            }
            if seq.prefilled < seq.prompt.len() {
                chunked.push(index);
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
        for &index in &chunked {
            let seq = &mut seqs[index];
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
    let shared_tokens: usize = seqs.iter().map(|s| s.borrowed).sum();
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
        "shared_prefix_tokens": shared_tokens,
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

/// Points every later prompt's leading blocks at the first prompt's where their tokens
/// are the same, in whole blocks and short of the prompt's last token (whose logits it
/// computes itself).
fn share_prefix(seqs: &mut [Seq], block_size: usize) {
    let Some((first, rest)) = seqs.split_first_mut() else {
        return;
    };
    for seq in rest {
        let same = first
            .prompt
            .iter()
            .zip(&seq.prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let blocks = same.min(seq.prompt.len() - 1).min(first.prompt.len() - 1) / block_size;
        seq.table[..blocks].copy_from_slice(&first.table[..blocks]);
        seq.borrowed = blocks * block_size;
        seq.prefilled = seq.borrowed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(prompt: Vec<u32>, first_block: u32) -> Seq {
        Seq {
            table: (first_block..first_block + 4).collect(),
            prompt,
            prefilled: 0,
            borrowed: 0,
            tokens: Vec::new(),
            logits: Vec::new(),
        }
    }

    #[test]
    fn later_prompts_borrow_the_whole_blocks_they_share_with_the_first() {
        let first: Vec<u32> = (0..10).collect();
        let mut seqs = vec![
            seq(first.clone(), 0),
            seq([&first[..9], &[99]].concat(), 4), // 9 tokens alike: 2 blocks of 4
            seq(first[..8].to_vec(), 8),           // all 8 alike, but the last is its own
            seq(vec![5; 10], 12),                  // nothing alike
        ];
        share_prefix(&mut seqs, 4);
        assert_eq!(seqs[1].table, [0, 1, 6, 7]);
        assert_eq!((seqs[1].borrowed, seqs[1].prefilled), (8, 8));
        assert_eq!(seqs[2].table, [0, 9, 10, 11]);
        assert_eq!(seqs[2].borrowed, 4);
        assert_eq!(seqs[3].table, [12, 13, 14, 15]);
        assert_eq!(seqs[3].borrowed, 0);
        assert_eq!(seqs[0].table, [0, 1, 2, 3]);
    }
}
