//! Benchmark: load time, batch-1 latency, batch-64 throughput, length bucketing and reference parity, as JSON.
//!
//! Takes every path as a flag so that the release binary can run on a machine without cargo:
//! `embed_bench --model M --tokenizer T --onnxruntime LIB --device cpu|cuda:0 [--reference R]`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cachet_embedder::pooling::cosine_similarity;
use cachet_embedder::{Device, EmbedBackend, Embedder, EmbedderConfig, OrtBackend};
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    tokenizer: PathBuf,
    #[arg(long)]
    onnxruntime: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// `{"items": [{"text", "embedding"}]}` vectors to compare against.
    #[arg(long)]
    reference: Option<PathBuf>,
    #[arg(long, default_value_t = cachet_embedder::DEFAULT_MAX_TOKENS)]
    max_tokens: usize,
    /// ONNX Runtime intra-op threads (0 = its default).
    #[arg(long, default_value_t = 0)]
    intra_threads: usize,
    /// How long the worker waits to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    batch_wait_ms: f64,
    /// Batch-1 latency samples.
    #[arg(long, default_value_t = 200)]
    latency_runs: usize,
    /// Batch-64 throughput samples.
    #[arg(long, default_value_t = 10)]
    throughput_runs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Cap on rows × padded length per model run.
    #[arg(long, default_value_t = cachet_embedder::DEFAULT_MAX_PADDED_TOKENS_PER_RUN)]
    max_padded_tokens_per_run: usize,
}

const SUBJECTS: [&str; 8] = [
    "the semantic cache",
    "a junior engineer",
    "our billing service",
    "the vector index",
    "this python script",
    "the weather in paris",
    "a large language model",
    "the kubernetes cluster",
];
const ACTIONS: [&str; 8] = [
    "keeps returning stale answers after",
    "needs to be explained in plain words before",
    "should be tested against real traffic during",
    "was rewritten in rust to run faster after",
    "stopped responding to health checks right after",
    "gets much more expensive to run during",
    "must handle twice as many requests after",
    "was configured with the wrong threshold before",
];
const ENDINGS: [&str; 8] = [
    "the last deployment on friday evening",
    "the quarterly review with the whole team",
    "the migration to the new database cluster",
    "the holiday season traffic peak",
    "we enabled the new eviction policy",
    "the upstream provider changed its api",
    "the incident report was finally published",
    "the benchmark numbers came back",
];

/// About twenty-word sentences, all different, so no cache inside ONNX Runtime can help.
fn sentences(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            format!(
                "Could you tell me why {} {} {}, and what should we do next time? (case {i})",
                SUBJECTS[i % 8],
                ACTIONS[(i / 8) % 8],
                ENDINGS[(i / 64 + i) % 8]
            )
        })
        .collect()
}

/// Texts from 3 to about 250 tokens, the shape of a mixed chat workload.
fn mixed_lengths(count: usize) -> Vec<String> {
    let base = sentences(count);
    (0..count)
        .map(|i| match i % 4 {
            0 => "hi there".to_owned(),
            1 => base[i].clone(),
            2 => base[i..]
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            _ => base
                .iter()
                .cycle()
                .skip(i)
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect()
}

fn percentile_ms(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A memory figure from `/proc/self/status` in MiB: `VmHWM` (peak resident) or `VmRSS` (now).
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn latency(embedder: &Embedder, runs: usize) -> Result<serde_json::Value> {
    let texts = sentences(runs.max(1));
    for text in texts.iter().take(10) {
        embedder.embed(text).await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for text in &texts {
        let start = Instant::now();
        embedder.embed(text).await?;
        samples.push(start.elapsed());
    }
    samples.sort();
    Ok(json!({
        "runs": runs,
        "p50_ms": percentile_ms(&samples, 0.5),
        "p99_ms": percentile_ms(&samples, 0.99),
        "min_ms": percentile_ms(&samples, 0.0),
    }))
}

async fn throughput(embedder: &Embedder, batch: usize, runs: usize) -> Result<serde_json::Value> {
    let texts = sentences(batch * runs.max(1));
    let mut rates = Vec::new();
    for chunk in texts.chunks(batch) {
        let start = Instant::now();
        embedder.embed_many(chunk.to_vec()).await?;
        rates.push(chunk.len() as f64 / start.elapsed().as_secs_f64());
    }
    // The same number of texts sent by separate concurrent callers, one text each: this is what
    // the micro-batching in the handle has to turn back into batches.
    let mut concurrent_rates = Vec::new();
    for chunk in texts.chunks(batch) {
        let start = Instant::now();
        let tasks: Vec<_> = chunk
            .iter()
            .map(|text| {
                let embedder = embedder.clone();
                let text = text.clone();
                tokio::spawn(async move { embedder.embed(&text).await })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        concurrent_rates.push(chunk.len() as f64 / start.elapsed().as_secs_f64());
    }
    Ok(json!({
        "batch": batch,
        "runs": rates.len(),
        "sentences_per_s_median": median(rates),
        "concurrent_single_callers_sentences_per_s_median": median(concurrent_rates),
    }))
}

/// Mixed-length batches three ways: the default (length buckets, token budget per run), one
/// padded run within the budget, and one padded run with no budget (the peak-memory case, last
/// because peak RSS only grows).
fn bucketing(
    config: &EmbedderConfig,
    batch: usize,
    runs: usize,
    budget: usize,
) -> Result<serde_json::Value> {
    let mut backend = OrtBackend::new(config)?;
    backend.set_max_padded_tokens_per_run(budget);
    let texts = mixed_lengths(batch);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let measure = |backend: &mut OrtBackend| -> Result<serde_json::Value> {
        backend.embed_batch(&texts)?;
        let mut rates = Vec::new();
        for _ in 0..runs.max(1) {
            let start = Instant::now();
            backend.embed_batch(&texts)?;
            rates.push(texts.len() as f64 / start.elapsed().as_secs_f64());
        }
        Ok(json!({
            "sentences_per_s_median": median(rates),
            "peak_rss_mib_so_far": status_mib("VmHWM:"),
        }))
    };
    let bucketed = measure(&mut backend)?;
    backend.set_length_buckets(false);
    let single_run_in_budget = measure(&mut backend)?;
    backend.set_max_padded_tokens_per_run(usize::MAX);
    let single_run_unbounded = measure(&mut backend)?;
    Ok(json!({
        "batch": batch,
        "max_padded_tokens_per_run": budget,
        "buckets_and_budget": bucketed,
        "one_padded_run_within_budget": single_run_in_budget,
        "one_padded_run_unbounded": single_run_unbounded,
    }))
}

#[derive(Debug, serde::Deserialize)]
struct Reference {
    items: Vec<ReferenceItem>,
}

#[derive(Debug, serde::Deserialize)]
struct ReferenceItem {
    text: String,
    embedding: Vec<f32>,
}

async fn parity(embedder: &Embedder, path: &PathBuf) -> Result<serde_json::Value> {
    let json =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let reference: Reference =
        serde_json::from_str(&json).with_context(|| format!("parsing {}", path.display()))?;
    let texts = reference
        .items
        .iter()
        .map(|item| item.text.clone())
        .collect();
    let vectors = embedder.embed_many(texts).await?;
    let min_cosine = reference
        .items
        .iter()
        .zip(&vectors)
        .map(|(item, vector)| cosine_similarity(&item.embedding, vector))
        .fold(f32::INFINITY, f32::min);
    Ok(json!({ "path": path, "items": vectors.len(), "min_cosine": min_cosine }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = EmbedderConfig {
        device: args.device,
        max_tokens: args.max_tokens,
        max_batch: args.batch,
        batch_wait: Duration::from_secs_f64(args.batch_wait_ms / 1e3),
        intra_threads: args.intra_threads,
        ..EmbedderConfig::new(
            args.model.clone(),
            args.tokenizer.clone(),
            args.onnxruntime.clone(),
        )
    };
    let start = Instant::now();
    let mut backend = OrtBackend::new(&config).context("loading the model")?;
    backend.set_max_padded_tokens_per_run(args.max_padded_tokens_per_run);
    let embedder = Embedder::with_backend(backend, config.batch_options())?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let rss_after_load = status_mib("VmRSS:");

    let latency = latency(&embedder, args.latency_runs).await?;
    let rss_after_latency = status_mib("VmRSS:");
    let throughput = throughput(&embedder, args.batch, args.throughput_runs).await?;
    let rss_after_throughput = status_mib("VmRSS:");
    let parity = match &args.reference {
        Some(path) => Some(parity(&embedder, path).await?),
        None => None,
    };
    let peak_before_bucketing = status_mib("VmHWM:");
    let bucketing = bucketing(
        &config,
        args.batch,
        args.throughput_runs,
        args.max_padded_tokens_per_run,
    )?;
    let report = json!({
        "device": args.device.to_string(),
        "provider": embedder.provider(),
        "dim": embedder.dim(),
        "max_tokens": args.max_tokens,
        "intra_threads": args.intra_threads,
        "batch_wait_ms": args.batch_wait_ms,
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "load_ms": load_ms,
        "latency_batch1": latency,
        "throughput": throughput,
        "mixed_lengths": bucketing,
        "reference": parity,
        "memory_mib": {
            "rss_after_load": rss_after_load,
            "rss_after_latency": rss_after_latency,
            "rss_after_throughput": rss_after_throughput,
            "peak_before_length_bucketing": peak_before_bucketing,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
