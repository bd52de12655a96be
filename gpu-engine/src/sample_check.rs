//! `cachet-engine sample-check`: the GPU sampling kernel against the host sampler.
//!
//! On fixed logits, for several temperature / top-k / top-p settings, it draws many
//! tokens on the GPU (one row per key) and reports how often each equals the host
//! reference's token for the same key, and how far the GPU's empirical distribution is
//! from the exact one of the rule (total variation and a chi-square statistic). Also
//! checks that top_k = 1 gives the argmax on a large vocabulary.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use cachet_engine::backend::cuda::CudaBackend;
use cachet_engine::backend::{KvLayout, ModelDims};
use cachet_engine::sampling::{RowSampling, argmax, probabilities, sample_row};

#[derive(Args)]
pub struct SampleCheckArgs {
    /// GPU ordinal.
    #[arg(long, default_value_t = 0)]
    ordinal: usize,
    /// Draws per setting on the small vocabulary (the distribution tests).
    #[arg(long, default_value_t = 200_000)]
    draws: usize,
    /// Size of the small vocabulary.
    #[arg(long, default_value_t = 64)]
    small_vocab: usize,
    /// Size of the large vocabulary (agreement with the host and greedy checks).
    #[arg(long, default_value_t = 128_256)]
    large_vocab: usize,
    /// Rows of the large vocabulary per setting.
    #[arg(long, default_value_t = 512)]
    large_rows: usize,
    /// Where the JSON report goes.
    #[arg(long)]
    out: PathBuf,
}

fn backend(ordinal: usize, vocab: usize) -> anyhow::Result<CudaBackend> {
    let dims = ModelDims {
        n_layers: 1,
        hidden_size: 64,
        intermediate_size: 64,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 64,
        vocab_size: vocab,
        rms_norm_eps: 1e-5,
        rope_inv_freq: vec![1.0; 32],
    };
    let kv = KvLayout {
        n_blocks: 1,
        block_size: 16,
    };
    Ok(CudaBackend::new(ordinal, dims, kv, false)?)
}

/// Logits with a few likely tokens and a long tail, deterministic.
fn logits(vocab: usize, salt: u64) -> Vec<f32> {
    (0..vocab)
        .map(|i| {
            let u = cachet_engine::sampling::uniform(salt, i as u32);
            // A Gumbel-shaped spread (scale 1.5) plus a bonus for the first few ids.
            let bump = if i % 97 < 3 { 2.0 } else { 0.0 };
            1.5 * -(-u.ln()).ln() + bump
        })
        .collect()
}

fn settings() -> Vec<(&'static str, RowSampling)> {
    let row = |temperature, top_k, top_p| RowSampling {
        temperature,
        top_k,
        top_p,
        key: 0,
    };
    vec![
        ("t1", row(1.0, 0, 1.0)),
        ("t0.7", row(0.7, 0, 1.0)),
        ("t1.5_k10", row(1.5, 10, 1.0)),
        ("t1_p0.9", row(1.0, 0, 0.9)),
        ("t0.8_k40_p0.95", row(0.8, 40, 0.95)),
        ("t1_p0.5", row(1.0, 0, 0.5)),
    ]
}

/// Samples `n` rows of `logits` (keys `first_key..`) on the GPU, `chunk` rows a launch.
fn gpu_draws(
    gpu: &mut CudaBackend,
    logits: &[f32],
    template: RowSampling,
    first_key: u64,
    n: usize,
    chunk: usize,
) -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::with_capacity(n);
    let mut batch = Vec::with_capacity(chunk * logits.len());
    let mut key = first_key;
    while ids.len() < n {
        let rows = chunk.min(n - ids.len());
        batch.clear();
        let params: Vec<RowSampling> = (0..rows)
            .map(|_| {
                batch.extend_from_slice(logits);
                key += 1;
                RowSampling { key, ..template }
            })
            .collect();
        ids.extend(gpu.sample_host_logits(&batch, logits.len(), &params)?);
    }
    Ok(ids)
}

/// Chi-square of `counts` against `p` (outcomes expected under 5 draws pooled), its
/// degrees of freedom, and (chi2 - dof) / sqrt(2 dof), about N(0, 1) when they agree.
fn chi_square(counts: &[f64], p: &[f64], n: f64) -> (f64, usize, f64) {
    let (mut chi2, mut bins) = (0.0, 0usize);
    let (mut pooled_obs, mut pooled_exp) = (0.0, 0.0);
    for (&c, &pi) in counts.iter().zip(p) {
        let e = pi * n;
        if e >= 5.0 {
            chi2 += (c - e) * (c - e) / e;
            bins += 1;
        } else {
            pooled_obs += c;
            pooled_exp += e;
        }
    }
    if pooled_exp > 0.0 {
        chi2 += (pooled_obs - pooled_exp) * (pooled_obs - pooled_exp) / pooled_exp.max(1e-9);
        bins += 1;
    }
    let dof = bins.saturating_sub(1).max(1);
    (chi2, dof, (chi2 - dof as f64) / (2.0 * dof as f64).sqrt())
}

pub fn run(args: SampleCheckArgs) -> anyhow::Result<()> {
    let mut report = serde_json::Map::new();
    // The distribution tests, on a small vocabulary.
    let small = logits(args.small_vocab, 11);
    let mut gpu = backend(args.ordinal, args.small_vocab)?;
    let mut cases = Vec::new();
    for (name, template) in settings() {
        let started = std::time::Instant::now();
        let ids = gpu_draws(&mut gpu, &small, template, 0, args.draws, 16_384)?;
        let elapsed = started.elapsed().as_secs_f64();
        let mut counts = vec![0.0; small.len()];
        let mut same_as_host = 0usize;
        for (i, &id) in ids.iter().enumerate() {
            counts[id as usize] += 1.0;
            let host = sample_row(
                &small,
                &RowSampling {
                    key: i as u64 + 1,
                    ..template
                },
            );
            same_as_host += usize::from(host == id);
        }
        let n = ids.len() as f64;
        let p = probabilities(&small, &template);
        let tv = counts
            .iter()
            .zip(&p)
            .map(|(c, pi)| (c / n - pi).abs())
            .sum::<f64>()
            / 2.0;
        let outside = counts
            .iter()
            .zip(&p)
            .filter(|(c, pi)| **c > 0.0 && **pi == 0.0)
            .count();
        let (chi2, dof, z) = chi_square(&counts, &p, n);
        let case = serde_json::json!({
            "setting": name, "temperature": template.temperature, "top_k": template.top_k,
            "top_p": template.top_p, "vocab": small.len(), "draws": ids.len(),
            "same_token_as_host_fraction": same_as_host as f64 / n,
            "total_variation_vs_exact": tv, "chi2": chi2, "dof": dof, "chi2_z": z,
            "tokens_drawn_outside_the_kept_set": outside,
            "kept_tokens": p.iter().filter(|&&x| x > 0.0).count(),
            "seconds": elapsed,
        });
        eprintln!("{case}");
        cases.push(case);
    }
    report.insert("small_vocab".into(), cases.into());
    drop(gpu);

    // Agreement with the host and greedy, on a large vocabulary.
    let large = logits(args.large_vocab, 12);
    let mut gpu = backend(args.ordinal, args.large_vocab)?;
    let mut cases = Vec::new();
    let greedy_template = RowSampling {
        temperature: 1.0,
        top_k: 1,
        top_p: 1.0,
        key: 0,
    };
    let mut all = settings();
    all.push(("top_k1", greedy_template));
    for (name, template) in all {
        let started = std::time::Instant::now();
        let ids = gpu_draws(&mut gpu, &large, template, 0, args.large_rows, 256)?;
        let elapsed = started.elapsed().as_secs_f64();
        let same = ids
            .iter()
            .enumerate()
            .filter(|&(i, &id)| {
                id == sample_row(
                    &large,
                    &RowSampling {
                        key: i as u64 + 1,
                        ..template
                    },
                )
            })
            .count();
        let case = serde_json::json!({
            "setting": name, "vocab": large.len(), "rows": ids.len(),
            "same_token_as_host_fraction": same as f64 / ids.len() as f64,
            "all_argmax": ids.iter().all(|&id| id == argmax(&large)),
            "seconds_incl_upload": elapsed,
        });
        eprintln!("{case}");
        cases.push(case);
    }
    report.insert("large_vocab".into(), cases.into());
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, text)
        .with_context(|| format!("failed to write {}", args.out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi_square_is_small_for_expected_counts_and_large_otherwise() {
        let p = [0.5, 0.25, 0.25];
        let (chi2, dof, _) = chi_square(&[500.0, 250.0, 250.0], &p, 1000.0);
        assert_eq!((chi2, dof), (0.0, 2));
        let (_, _, z) = chi_square(&[700.0, 150.0, 150.0], &p, 1000.0);
        assert!(z > 10.0);
    }
}
