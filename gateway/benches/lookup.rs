//! Measures a semantic lookup as the gateway runs it — classify, embed the question with the
//! real ONNX model, search the category's index, read the candidates and judge them with the
//! hit guards — for 20-word questions against a cache holding every dev-set question and the
//! paraphrases of the questions asked. Prints percentiles of the whole lookup and of its
//! embedding alone, in milliseconds, for each of several rounds, then the median of the rounds'
//! percentiles: on a shared two-core machine one round's p99 moves with whatever else ran in
//! those seconds (on the host too), so a figure to compare is a median over rounds.
//!
//! Run with `cargo bench -p cachet-gateway --bench lookup` (after `scripts/fetch-assets`);
//! `-- --iterations N` changes the number of timed lookups per round (default 1000),
//! `-- --rounds R` the number of rounds (default 5), `-- --config FILE` the config (default
//! `configs/default.toml`, relative to the repository). Run it on a quiet machine: on two cores
//! anything else running shows in the tail.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::HeaderMap;
use cachet_embedder::Embedder;
use cachet_gateway::breaker::Breaker;
use cachet_gateway::cache::Cache;
use cachet_gateway::eval::embedder_config;
use cachet_gateway::load::LoadTracker;
use cachet_gateway::policy::Policy;
use cachet_gateway::request::{CacheRequest, Route};
use cachet_gateway::store::StoreClient;
use cachet_index::MemoryStore;
use cachet_policies::Config;
use serde_json::json;

/// Twenty-word questions (the benchmark size), each stored as the paraphrase after it, so that lookups find
/// candidates above the threshold and the guards run.
const QUESTIONS: [(&str, &str); 6] = [
    (
        "How much statutory redundancy pay will I get after working here for twenty years of service in England this year?",
        "What statutory redundancy pay am I owed after twenty years of service with my employer here in England?",
    ),
    (
        "Can I cancel my table booking at the Italian place two days in advance without being charged any extra fee?",
        "Is it possible to cancel my table reservation at the Italian restaurant two days ahead without a charge?",
    ),
    (
        "What's the deadline for submitting my self-assessment tax return online if I am self-employed this year in the United Kingdom?",
        "When is the deadline for filing my self-assessment tax return online if I'm self-employed this year?",
    ),
    (
        "Which foods and drinks should I avoid eating in the days before my surgery at the local hospital next week?",
        "What should I not eat or drink in the days before my operation at the hospital next week?",
    ),
    (
        "How do I move my money from my Premium Bonds into my bank account without paying any fees at all?",
        "What is the way to transfer money out of Premium Bonds into my bank account with no fees?",
    ),
    (
        "What is the best way to keep my sourdough starter alive while I am away on holiday for two weeks?",
        "How can I keep a sourdough starter going while I'm away on holiday for a couple of weeks?",
    ),
];

fn number_arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let value = std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|n| n.parse::<usize>())
        .transpose()
        .with_context(|| format!("{name} takes a whole number"))?
        .unwrap_or(default);
    anyhow::ensure!(value > 0, "{name} must be at least 1");
    Ok(value)
}

fn main() -> anyhow::Result<()> {
    let iterations = number_arg("--iterations", 1000)?;
    let rounds = number_arg("--rounds", 5)?;
    let config_path = std::env::args()
        .skip_while(|a| a != "--config")
        .nth(1)
        .unwrap_or_else(|| "configs/default.toml".to_owned());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root)?;
    let config = Arc::new(Config::load(Path::new(&config_path))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(config, iterations, rounds))
}

fn request(text: &str) -> anyhow::Result<CacheRequest> {
    let body = json!({"model": "bench", "messages": [{"role": "user", "content": text}]});
    Ok(CacheRequest::parse(
        Route::Chat,
        body.to_string().as_bytes(),
    )?)
}

fn answer(text: &str) -> serde_json::Value {
    json!({"id": "x", "object": "chat.completion", "created": 1, "model": "bench",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop"}]})
}

fn dev_questions(root: &Path) -> Vec<String> {
    let path = root.join("../shared/data/semcache-dev/pairs.jsonl");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .flat_map(|row| ["a", "b"].map(|k| row[k].as_str().map(str::to_owned)))
        .flatten()
        .collect()
}

async fn run(config: Arc<Config>, iterations: usize, rounds: usize) -> anyhow::Result<()> {
    let embedder_settings = embedder_config(&config);
    let embedder = tokio::task::spawn_blocking(move || Embedder::start(embedder_settings))
        .await?
        .context("embedder (run scripts/fetch-assets first)")?;
    let store = StoreClient::new(
        Arc::new(MemoryStore::new()),
        Breaker::new(3, Duration::from_secs(2)),
        Duration::from_secs(5),
    );
    let load = Arc::new(LoadTracker::new(&config.adaptive));
    let policy = Policy::build(Arc::clone(&config), &embedder).await?;
    let cache = Cache::new(policy, embedder.clone(), store, load)?;
    // One tenant, as a client with an API key (keyless requests bypass the cache).
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        axum::http::HeaderValue::from_static("Bearer sk-bench"),
    );

    let mut stored = dev_questions(Path::new("."));
    stored.extend(
        QUESTIONS
            .iter()
            .map(|(_, paraphrase)| (*paraphrase).to_owned()),
    );
    for text in &stored {
        let req = request(text)?;
        let plan = cache.plan(&req, &headers).await;
        cache
            .fill(&req, &plan, None, answer(text), Duration::from_millis(500))
            .await;
    }
    println!("cache holds {} entries", stored.len());

    // The first lookups warm ONNX Runtime's arenas and the caches.
    for (question, _) in QUESTIONS.iter().cycle().take(50) {
        let req = request(question)?;
        let plan = cache.plan(&req, &headers).await;
        cache.lookup(&req, &plan).await;
    }
    let mut lookup_rounds = Vec::with_capacity(rounds);
    let mut embed_rounds = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let mut lookup_ms = Vec::with_capacity(iterations);
        let mut embed_ms = Vec::with_capacity(iterations);
        let mut hits = 0usize;
        for (question, _) in QUESTIONS.iter().cycle().take(iterations) {
            let req = request(question)?;
            let started = Instant::now();
            let plan = cache.plan(&req, &headers).await;
            let found = cache.lookup(&req, &plan).await;
            lookup_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            let embed_started = Instant::now();
            embedder.embed(question).await?;
            embed_ms.push(embed_started.elapsed().as_secs_f64() * 1000.0);
            hits += usize::from(found.hit.is_some());
        }
        println!("round {round}: semantic hits {hits} of {iterations}");
        lookup_rounds.push(report(
            "  lookup (classify + embed + search + guards)",
            &mut lookup_ms,
        ));
        embed_rounds.push(report("  embedding alone", &mut embed_ms));
    }
    println!("median of {rounds} rounds:");
    median_report(
        "  lookup (classify + embed + search + guards)",
        &lookup_rounds,
    );
    median_report("  embedding alone", &embed_rounds);
    Ok(())
}

/// One round's p50, p90, p99 and max, in milliseconds.
type Percentiles = [f64; 4];

fn report(what: &str, samples: &mut [f64]) -> Percentiles {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let percentiles = [at(0.50), at(0.90), at(0.99), at(1.0)];
    let [p50, p90, p99, max] = percentiles;
    println!(
        "{what}: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({} samples)",
        samples.len()
    );
    percentiles
}

/// Prints the median over rounds of each percentile, and the rounds' range of p99.
fn median_report(what: &str, rounds: &[Percentiles]) {
    let median = |i: usize| {
        let mut values: Vec<f64> = rounds.iter().map(|round| round[i]).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let p99s = rounds.iter().map(|round| round[2]);
    let (low, high) = p99s.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    println!(
        "{what}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms (rounds' p99 {low:.2}-{high:.2} ms), max {:.2} ms",
        median(0),
        median(1),
        median(2),
        median(3),
    );
}
