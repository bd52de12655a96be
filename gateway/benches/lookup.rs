//! Measures a semantic lookup as the gateway runs it — classify, embed the question with the
//! real ONNX model, search the category's index, read the candidates and judge them with the
//! hit guards — for 20-word questions against a cache holding every dev-set question and the
//! paraphrases of the questions asked. Prints percentiles of the whole lookup and of its
//! embedding alone, in milliseconds.
//!
//! Run with `cargo bench -p cachet-gateway --bench lookup` (after `scripts/fetch-assets`);
//! `-- --iterations N` changes the number of timed lookups (default 1000), `-- --config FILE`
//! the config (default `configs/default.toml`, relative to the repository). Run it on a quiet
//! machine: on two cores anything else running shows in the tail.

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

fn main() -> anyhow::Result<()> {
    let iterations = std::env::args()
        .skip_while(|a| a != "--iterations")
        .nth(1)
        .map(|n| n.parse::<usize>())
        .transpose()?
        .unwrap_or(1000);
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
    runtime.block_on(run(config, iterations))
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

async fn run(config: Arc<Config>, iterations: usize) -> anyhow::Result<()> {
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
    let headers = HeaderMap::new();

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

    let mut lookup_ms = Vec::with_capacity(iterations);
    let mut embed_ms = Vec::with_capacity(iterations);
    let mut hits = 0usize;
    for i in 0..iterations + 50 {
        let (question, _) = QUESTIONS[i % QUESTIONS.len()];
        let req = request(question)?;
        let started = Instant::now();
        let plan = cache.plan(&req, &headers).await;
        let found = cache.lookup(&req, &plan).await;
        let elapsed = started.elapsed();
        let embed_started = Instant::now();
        embedder.embed(question).await?;
        let embed_elapsed = embed_started.elapsed();
        // The first lookups warm ONNX Runtime's arenas and the caches.
        if i >= 50 {
            hits += usize::from(found.hit.is_some());
            lookup_ms.push(elapsed.as_secs_f64() * 1000.0);
            embed_ms.push(embed_elapsed.as_secs_f64() * 1000.0);
        }
    }
    report(
        "lookup (classify + embed + search + guards)",
        &mut lookup_ms,
    );
    report("embedding alone", &mut embed_ms);
    println!("semantic hits: {hits} of {iterations}");
    Ok(())
}

fn report(what: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "{what}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
        samples.len()
    );
}
