//! `cachet-engine bench`: decode tokens/s at batch 1 and 8, and TTFT of a long prompt cold vs. cached.

use std::time::{Duration, Instant};

use clap::Args;

use cachet_engine::engine::{EngineHandle, GenerateEvent, GenerateRequest, Usage};
use cachet_engine::kv::TenantSalt;
use cachet_engine::sampling::SamplingParams;

use crate::ModelArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens generated per request in the decode measurements.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Prompt length of the decode measurements.
    #[arg(long, default_value_t = 16)]
    prompt_tokens: usize,
    /// Length of the long prompt for the time-to-first-token measurement.
    #[arg(long, default_value_t = 1024)]
    ttft_prompt_tokens: usize,
    /// How much of it is cached in the warm measurement.
    #[arg(long, default_value_t = 960)]
    ttft_cached_tokens: usize,
}

/// What one request measured: its first token and its end, from when it was sent.
pub(crate) struct Outcome {
    pub first_token: Duration,
    pub total: Duration,
    pub usage: Usage,
}

async fn run_one(
    engine: &EngineHandle,
    prompt: Vec<u32>,
    salt: TenantSalt,
    n: usize,
) -> anyhow::Result<Outcome> {
    let params = SamplingParams {
        max_tokens: n,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    timed(
        engine,
        GenerateRequest {
            prompt_ids: prompt,
            params,
            salt,
        },
    )
    .await
}

/// Sends one request through the engine and times its first token and its end.
pub(crate) async fn timed(
    engine: &EngineHandle,
    request: GenerateRequest,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut events = engine.generate(request).await?;
    let mut first_token = None;
    while let Some(event) = events.recv().await {
        let elapsed = started.elapsed();
        match event {
            GenerateEvent::Text { .. } => {
                first_token.get_or_insert(elapsed);
            }
            GenerateEvent::Finished { usage, .. } => {
                return Ok(Outcome {
                    first_token: first_token.unwrap_or(elapsed),
                    total: elapsed,
                    usage,
                });
            }
            GenerateEvent::Failed(message) => anyhow::bail!("generation failed: {message}"),
        }
    }
    anyhow::bail!("the engine stopped")
}

/// Token ids spread over the vocabulary, different for each `seed`.
fn synthetic_prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 1000 + (i * 7919 + seed * 104_729) % 30_000)
        .collect()
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let engine = crate::start_engine(&args.model, true)?;
    let n = args.decode_tokens;
    let salt = |i: u32| TenantSalt::derive(&i.to_le_bytes());

    // Warm-up, so that page faults of the weights are not measured.
    run_one(&engine, synthetic_prompt(0, 16), salt(0), 4).await?;

    let solo = run_one(&engine, synthetic_prompt(1, args.prompt_tokens), salt(1), n).await?;
    let decode_s = (solo.total - solo.first_token).as_secs_f64();
    println!(
        "decode batch 1: {:.1} tokens/s ({} tokens after the first in {:.2} s)",
        (n - 1) as f64 / decode_s,
        n - 1,
        decode_s
    );

    let started = Instant::now();
    let runs = (0..8).map(|i| {
        run_one(
            &engine,
            synthetic_prompt(10 + i, args.prompt_tokens),
            salt(10 + i),
            n,
        )
    });
    let outcomes = futures::future::try_join_all(runs).await?;
    let wall = started.elapsed().as_secs_f64();
    let tokens: usize = outcomes.iter().map(|o| o.usage.completion_tokens).sum();
    // Each request's own decode rate (tokens after its first, over the time they took),
    // summed: the throughput of the batch once every request is decoding.
    let decode_rate: f64 = outcomes
        .iter()
        .map(|o| (o.usage.completion_tokens - 1) as f64 / (o.total - o.first_token).as_secs_f64())
        .sum();
    println!(
        "decode 8 concurrent: {decode_rate:.1} tokens/s summed decode rate; \
         {:.1} tokens/s overall ({tokens} tokens in {wall:.2} s, prefill included)",
        tokens as f64 / wall,
    );

    let long = synthetic_prompt(99, args.ttft_prompt_tokens);
    let cold = run_one(&engine, long.clone(), salt(100), 1).await?;
    println!(
        "ttft {}-token prompt cold: {:.0} ms (cached tokens {})",
        long.len(),
        cold.first_token.as_secs_f64() * 1e3,
        cold.usage.cached_tokens
    );
    // Cache the first part under another tenant's salt, then ask for the whole prompt.
    let mut prefix = long[..args.ttft_cached_tokens].to_vec();
    prefix.push(5);
    run_one(&engine, prefix, salt(101), 1).await?;
    let warm = run_one(&engine, long.clone(), salt(101), 1).await?;
    println!(
        "ttft {}-token prompt with {} cached: {:.0} ms (cached tokens {})",
        long.len(),
        args.ttft_cached_tokens,
        warm.first_token.as_secs_f64() * 1e3,
        warm.usage.cached_tokens
    );
    Ok(())
}
