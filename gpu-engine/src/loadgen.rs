//! `cachet-engine throughput` and `cachet-engine prefix-bench`: many concurrent requests
//! through the real engine (scheduler, block pool, prefix cache, sampling) in process.
//!
//! Each level runs a closed loop: `concurrency` clients take requests from a shared
//! queue and send the next as soon as their last one finished, as vLLM's serving
//! benchmark does with `--max-concurrency`. Time to first token (TTFT) runs from when a
//! client sends a request to its first token; time per output token (TPOT) is the rest
//! of the request's time over its other tokens. Every level prints one JSON line.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use cachet_engine::engine::{EngineHandle, GenerateRequest, StepCounters};
use cachet_engine::kv::TenantSalt;
use cachet_engine::sampling::SamplingParams;

use crate::ModelArgs;

/// How the requests of a run sample.
#[derive(Debug, Args, Clone)]
pub struct SamplingArgs {
    /// 0 is greedy (the default, as transformers' `generate`).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
}

#[derive(Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Concurrency levels to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128,256")]
    concurrency: Vec<usize>,
    /// Random prompt tokens per request.
    #[arg(long, default_value_t = 1024)]
    prompt_tokens: usize,
    /// New tokens per request (end-of-sequence ignored).
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Requests per level: the concurrency, but at least this many.
    #[arg(long, default_value_t = 4)]
    min_requests: usize,
}

#[derive(Args)]
pub struct PrefixBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Groups of requests sharing one system prompt.
    #[arg(long, default_value_t = 64)]
    groups: usize,
    #[arg(long, default_value_t = 16)]
    per_group: usize,
    #[arg(long, default_value_t = 2048)]
    system_tokens: usize,
    #[arg(long, default_value_t = 128)]
    question_tokens: usize,
    #[arg(long, default_value_t = 256)]
    new_tokens: usize,
    /// Clients sending the shuffled requests.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// What one request measured.
struct Record {
    ttft: Duration,
    total: Duration,
    completion_tokens: usize,
    cached_tokens: usize,
}

async fn run_request(
    engine: &EngineHandle,
    prompt: Vec<u32>,
    params: SamplingParams,
) -> anyhow::Result<Record> {
    let request = GenerateRequest {
        prompt_ids: prompt,
        params,
        salt: TenantSalt::derive(b"bench"),
    };
    let outcome = crate::bench::timed(engine, request).await?;
    Ok(Record {
        ttft: outcome.first_token,
        total: outcome.total,
        completion_tokens: outcome.usage.completion_tokens,
        cached_tokens: outcome.usage.cached_tokens,
    })
}

/// Runs `prompts` through `concurrency` clients; returns the records and the wall time.
async fn closed_loop(
    engine: &EngineHandle,
    prompts: Vec<Vec<u32>>,
    params: &SamplingParams,
    concurrency: usize,
) -> anyhow::Result<(Vec<Record>, Duration)> {
    let queue = Arc::new(Mutex::new(VecDeque::from(prompts)));
    let started = Instant::now();
    let clients = (0..concurrency.max(1)).map(|_| {
        let (engine, queue, params) = (engine.clone(), queue.clone(), params.clone());
        tokio::spawn(async move {
            let mut records = Vec::new();
            loop {
                let next = queue.lock().pop_front();
                let Some(prompt) = next else {
                    return anyhow::Ok(records);
                };
                records.push(run_request(&engine, prompt, params.clone()).await?);
            }
        })
    });
    let mut records = Vec::new();
    for client in futures::future::join_all(clients).await {
        records.extend(client??);
    }
    Ok((records, started.elapsed()))
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// The JSON summary of a level: throughput, and TTFT / TPOT p50 and p99 in ms.
fn summary(records: &[Record], wall: Duration) -> serde_json::Value {
    let tokens: usize = records.iter().map(|r| r.completion_tokens).sum();
    let mut ttft: Vec<f64> = records.iter().map(|r| r.ttft.as_secs_f64() * 1e3).collect();
    let mut tpot: Vec<f64> = records
        .iter()
        .filter(|r| r.completion_tokens > 1)
        .map(|r| (r.total - r.ttft).as_secs_f64() * 1e3 / (r.completion_tokens - 1) as f64)
        .collect();
    let cached: usize = records.iter().map(|r| r.cached_tokens).sum();
    serde_json::json!({
        "requests": records.len(),
        "output_tokens": tokens,
        "wall_s": wall.as_secs_f64(),
        "output_tokens_per_s": tokens as f64 / wall.as_secs_f64(),
        "ttft_ms_p50": percentile(&mut ttft, 0.5),
        "ttft_ms_p99": percentile(&mut ttft, 0.99),
        "tpot_ms_p50": percentile(&mut tpot, 0.5),
        "tpot_ms_p99": percentile(&mut tpot, 0.99),
        "cached_prompt_tokens": cached,
    })
}

/// Where the engine's time went between two snapshots of its counters: per kind of
/// step, how many, their mean size in tokens and their mean forward time, and the mean
/// host time between forwards.
fn step_summary(before: &StepCounters, after: &StepCounters) -> serde_json::Value {
    let mean_ms = |total: Duration, n: u64| {
        if n == 0 {
            f64::NAN
        } else {
            total.as_secs_f64() * 1e3 / n as f64
        }
    };
    let decode = after.decode_steps - before.decode_steps;
    let mixed = after.mixed_steps - before.mixed_steps;
    serde_json::json!({
        "decode_steps": decode,
        "decode_step_tokens": (after.decode_tokens - before.decode_tokens) as f64 / decode.max(1) as f64,
        "decode_forward_ms": mean_ms(after.decode_forward - before.decode_forward, decode),
        "mixed_steps": mixed,
        "mixed_step_tokens": (after.mixed_tokens - before.mixed_tokens) as f64 / mixed.max(1) as f64,
        "mixed_forward_ms": mean_ms(after.mixed_forward - before.mixed_forward, mixed),
        "host_ms": mean_ms(after.host - before.host, decode + mixed),
    })
}

fn params(sampling: &SamplingArgs, new_tokens: usize, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        seed: Some(seed),
        max_tokens: new_tokens,
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

fn random_tokens(rng: &mut StdRng, vocab: usize, len: usize) -> Vec<u32> {
    // Ids from 3 up: the low ids are special tokens in most vocabularies.
    (0..len)
        .map(|_| rng.random_range(3..vocab.max(4) as u32))
        .collect()
}

pub async fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    let engine = crate::start_engine(&args.model, false)?;
    let vocab = engine.info().vocab_size;
    let mut rng = StdRng::seed_from_u64(0);
    for &concurrency in &args.concurrency {
        let n = concurrency.max(args.min_requests);
        // Warm-up at this concurrency (short prompts), so that graph captures and
        // buffer growth happen before the measurement.
        let warm: Vec<Vec<u32>> = (0..concurrency)
            .map(|_| random_tokens(&mut rng, vocab, 32))
            .collect();
        closed_loop(&engine, warm, &params(&args.sampling, 4, 1), concurrency).await?;
        let before = engine.stats().await?.steps;
        let prompts: Vec<Vec<u32>> = (0..n)
            .map(|_| random_tokens(&mut rng, vocab, args.prompt_tokens))
            .collect();
        let (records, wall) = closed_loop(
            &engine,
            prompts,
            &params(&args.sampling, args.new_tokens, 2),
            concurrency,
        )
        .await?;
        let mut line = summary(&records, wall);
        line["bench"] = "throughput".into();
        line["concurrency"] = concurrency.into();
        line["prompt_tokens"] = args.prompt_tokens.into();
        line["new_tokens"] = args.new_tokens.into();
        line["temperature"] = args.sampling.temperature.into();
        line["steps"] = step_summary(&before, &engine.stats().await?.steps);
        println!("{line}");
    }
    Ok(())
}

pub async fn prefix_bench(args: PrefixBenchArgs) -> anyhow::Result<()> {
    let engine = crate::start_engine(&args.model, false)?;
    let vocab = engine.info().vocab_size;
    let mut rng = StdRng::seed_from_u64(1);
    // Warm-up with unrelated prompts (graph captures, buffer growth).
    let warm: Vec<Vec<u32>> = (0..args.concurrency)
        .map(|_| random_tokens(&mut rng, vocab, 64))
        .collect();
    closed_loop(
        &engine,
        warm,
        &params(&args.sampling, 4, 1),
        args.concurrency,
    )
    .await?;
    let mut prompts = Vec::with_capacity(args.groups * args.per_group);
    for _ in 0..args.groups {
        let system = random_tokens(&mut rng, vocab, args.system_tokens);
        for _ in 0..args.per_group {
            let mut prompt = system.clone();
            prompt.extend(random_tokens(&mut rng, vocab, args.question_tokens));
            prompts.push(prompt);
        }
    }
    prompts.shuffle(&mut rng);
    let before = engine.stats().await?.steps;
    let (records, wall) = closed_loop(
        &engine,
        prompts,
        &params(&args.sampling, args.new_tokens, 3),
        args.concurrency,
    )
    .await?;
    let mut line = summary(&records, wall);
    line["bench"] = "prefix".into();
    line["prefix_caching"] = (!args.model.no_prefix_caching).into();
    line["concurrency"] = args.concurrency.into();
    line["groups"] = args.groups.into();
    line["per_group"] = args.per_group.into();
    line["system_tokens"] = args.system_tokens.into();
    line["question_tokens"] = args.question_tokens.into();
    line["new_tokens"] = args.new_tokens.into();
    let stats = engine.stats().await?;
    line["prefix_cache_hit_tokens"] = stats.cache.hit_tokens.into();
    line["prefix_cache_query_tokens"] = stats.cache.query_tokens.into();
    line["steps"] = step_summary(&before, &stats.steps);
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&mut v, 0.5), 51.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn summary_splits_first_token_from_the_rest() {
        let records = [Record {
            ttft: Duration::from_millis(100),
            total: Duration::from_millis(1100),
            completion_tokens: 11,
            cached_tokens: 5,
        }];
        let s = summary(&records, Duration::from_secs(2));
        assert_eq!(s["output_tokens_per_s"], 5.5);
        assert_eq!(s["ttft_ms_p50"], 100.0);
        assert_eq!(s["tpot_ms_p50"], 100.0);
        assert_eq!(s["cached_prompt_tokens"], 5);
    }
}
