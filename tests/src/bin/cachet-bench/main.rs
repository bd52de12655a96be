//! `cachet-bench`: the latency the release gateway adds over a direct call to the same
//! upstream, under open-loop load on 127.0.0.1, plus its memory use per cached entry.
//!
//! `cargo build --release -p cachet-gateway` first, then
//! `cargo run --release -p cachet-tests --bin cachet-bench -- [--rate N] [--seconds S]
//! [--store memory|redis] [--json OUT]`. With `--store redis` the benchmark starts its own
//! `redis-server` on a free loopback port and the gateway keeps its entries there.

mod load;
mod questions;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use cachet_tests::{Gateway, GatewayConfig, RedisServer, Reply, ScriptedUpstream};
use clap::{Parser, ValueEnum};
use reqwest::Client;
use serde_json::Value;

use load::{ChatRequest, Summary};
use report::{Memory, Report, ScenarioResult};

/// Measures the gateway's added latency against a direct call to the same upstream.
#[derive(Debug, Parser)]
struct Args {
    /// Requests per second sent in each scenario.
    #[arg(long, default_value_t = 75.0)]
    rate: f64,
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 15.0)]
    seconds: f64,
    /// Where the gateway keeps its entries: the embedded store, or a Redis on loopback that
    /// the benchmark starts.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    store: StoreKind,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The gateway's entry store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Memory,
    Redis,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

/// What the scripted upstream answers to every request: the same text, so that every
/// scenario moves bodies of the same size (about 70 words, 14 stream chunks more or less).
const FIXED_ANSWER: &str = "A cache in front of a language model answers repeated questions \
from memory instead of asking the model again. It stores each complete answer with the \
question that produced it, finds later questions that mean the same thing by comparing \
their embeddings, and replays the stored answer, as a stream when the client asked for one. \
Questions that differ in what changes the answer are refused and forwarded.";

/// Longest time one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests sent one by one before each scenario, to open connections and warm caches.
const WARMUP_REQUESTS: usize = 20;
/// Longest wait for the gateway to finish storing the answers of a scenario.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Fewest verified paraphrases a semantic scenario may run on.
const MIN_PARAPHRASES: usize = 8;

// The misses and the hits use separate tenants, so that the many miss entries never become
// the nearest neighbours of a paraphrase.
const DIRECT_KEY: &str = "sk-bench-direct";
const MISS_KEY: &str = "sk-bench-miss";
const HIT_KEY: &str = "sk-bench-hit";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.rate > 0.0 && args.rate <= 2000.0,
        "--rate must be in (0, 2000]"
    );
    ensure!(
        args.seconds > 0.0 && args.seconds <= 300.0,
        "--seconds must be in (0, 300]"
    );
    if cfg!(debug_assertions) {
        eprintln!("note: cachet-bench is a debug build; its own overhead inflates every figure");
    }
    let binary = gateway_binary()?;
    let upstream = ScriptedUpstream::start().context("failed to start the scripted upstream")?;
    upstream.set_fallback(Reply::Text(FIXED_ANSWER.to_owned()));
    let mut config = GatewayConfig::default_with_upstream(&upstream.base_url())?;
    // Kept alive until the end: dropping it stops the server.
    let redis = match args.store {
        StoreKind::Memory => None,
        StoreKind::Redis => {
            let redis = RedisServer::start().context("failed to start redis-server")?;
            config.redis_store(&redis.url(), "cachet-bench");
            eprintln!("entries in redis at {}", redis.url());
            Some(redis)
        }
    };
    eprintln!("starting {}", binary.display());
    let gateway = Gateway::start_binary(&binary, &config).context("failed to start the gateway")?;
    // A gateway that ignored the store settings would measure the wrong thing.
    let health = gateway.healthz().context("failed to read /healthz")?;
    ensure!(
        health.store_kind() == Some(args.store.name()),
        "the gateway reports store {:?}, not {}",
        health.store_kind(),
        args.store.name()
    );
    let pid = gateway.pid();
    let rss_at_start_bytes = proc_status_bytes(pid, "VmRSS")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bench = Bench {
        client: Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .context("failed to build the http client")?,
        rate_per_s: args.rate,
        count: (args.rate * args.seconds).round().max(1.0) as usize,
        direct_url: format!("{}/chat/completions", upstream.base_url()).into(),
        gateway_url: format!("{}/chat/completions", gateway.api_url()).into(),
        healthz_url: format!("{}/healthz", gateway.base_url()),
        metrics_url: format!("{}/metrics", gateway.base_url()),
    };
    let (scenarios, semantic_probe) = runtime.block_on(bench.run())?;
    let (store_entries, store_bytes) = runtime.block_on(bench.store())?;

    let rss_at_end_bytes = proc_status_bytes(pid, "VmRSS")?;
    let entries = store_entries.max(1) as f64;
    let mut report = Report {
        store: args.store.name(),
        rate_per_s: args.rate,
        seconds_per_scenario: args.seconds,
        machine: machine(),
        gateway_binary: binary.display().to_string(),
        semantic_probe,
        scenarios,
        memory: Memory {
            peak_rss_bytes: proc_status_bytes(pid, "VmHWM")?,
            rss_at_start_bytes,
            rss_at_end_bytes,
            store_entries,
            store_bytes,
            store_bytes_per_entry: store_bytes as f64 / entries,
            rss_growth_per_entry_bytes: rss_at_end_bytes.saturating_sub(rss_at_start_bytes) as f64
                / entries,
        },
    };
    report.compare_with_direct();
    println!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    drop(gateway);
    drop(redis);
    Ok(())
}

/// The release gateway beside this executable (`target/release/cachet`), or `CACHET_BIN`.
fn gateway_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("CACHET_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark executable has no directory")?
            .join("cachet"),
    };
    if !path.is_file() {
        bail!(
            "the gateway binary is missing at {}: build it first with \
             `cargo build --release -p cachet-gateway`",
            path.display()
        );
    }
    Ok(path)
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("{path} has no {field}"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{path}: unreadable {field}: {line}"))?;
    Ok(kib * 1024)
}

/// The CPU model and how many cores this process may use.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} cores, {model}")
}

/// The scenarios, in order, against one upstream and one gateway.
#[derive(Debug)]
struct Bench {
    client: Client,
    rate_per_s: f64,
    /// Measured requests per scenario.
    count: usize,
    direct_url: Arc<str>,
    gateway_url: Arc<str>,
    healthz_url: String,
    metrics_url: String,
}

impl Bench {
    async fn run(&self) -> anyhow::Result<(Vec<ScenarioResult>, String)> {
        let mut results = Vec::new();
        let mut unique = (0..).map(questions::unique_question);
        let per_scenario = WARMUP_REQUESTS + self.count;
        for stream in [false, true] {
            let asked = unique.by_ref().take(per_scenario).collect();
            results.push(
                self.measure("direct", stream, &self.direct_url, DIRECT_KEY, asked)
                    .await?,
            );
        }
        for stream in [false, true] {
            let asked = unique.by_ref().take(per_scenario).collect();
            results.push(
                self.measure("miss", stream, &self.gateway_url, MISS_KEY, asked)
                    .await?,
            );
            // Misses are stored off the response path; let that work end before the next
            // scenario starts.
            self.settle().await?;
        }

        let stored: Vec<String> = questions::PARAPHRASES
            .iter()
            .map(|(q, _)| (*q).to_owned())
            .collect();
        let before = self.store().await?.0;
        self.one_by_one(&stored, HIT_KEY, false).await?;
        let after = self.settle().await?;
        eprintln!(
            "stored {} of {} questions for the hit scenarios",
            after - before,
            stored.len()
        );

        let paraphrases: Vec<String> = questions::PARAPHRASES
            .iter()
            .map(|(_, p)| (*p).to_owned())
            .collect();
        let probe = self.one_by_one(&paraphrases, HIT_KEY, false).await?;
        let kept: Vec<String> = paraphrases
            .iter()
            .zip(&probe)
            .filter(|(_, sample)| sample.cache == "hit-semantic")
            .map(|(p, _)| p.clone())
            .collect();
        for (paraphrase, sample) in paraphrases.iter().zip(&probe) {
            if sample.cache != "hit-semantic" {
                eprintln!("dropped paraphrase ({}): {paraphrase}", sample.cache);
            }
        }
        let semantic_probe = format!(
            "{} of {} paraphrases are semantic hits",
            kept.len(),
            paraphrases.len()
        );
        eprintln!("{semantic_probe}");
        ensure!(
            kept.len() >= MIN_PARAPHRASES,
            "too few paraphrases are semantic hits to measure them: {semantic_probe}"
        );

        for stream in [false, true] {
            let asked = stored.iter().cycle().take(per_scenario).cloned().collect();
            results.push(
                self.measure("hit-exact", stream, &self.gateway_url, HIT_KEY, asked)
                    .await?,
            );
        }
        for stream in [false, true] {
            let asked = kept.iter().cycle().take(per_scenario).cloned().collect();
            results.push(
                self.measure("hit-semantic", stream, &self.gateway_url, HIT_KEY, asked)
                    .await?,
            );
        }
        Ok((results, semantic_probe))
    }

    /// Warms up with the first questions one by one, then sends the rest open-loop.
    async fn measure(
        &self,
        name: &'static str,
        stream: bool,
        url: &Arc<str>,
        api_key: &'static str,
        mut asked: Vec<String>,
    ) -> anyhow::Result<ScenarioResult> {
        let measured = asked.split_off(WARMUP_REQUESTS.min(asked.len()));
        let requests = |questions: Vec<String>| -> Vec<ChatRequest> {
            questions
                .into_iter()
                .map(|question| ChatRequest {
                    url: Arc::clone(url),
                    api_key,
                    question,
                    stream,
                })
                .collect()
        };
        let refusals_before = self.guard_refusals().await?;
        let warmup = load::one_by_one(&self.client, requests(asked), REQUEST_TIMEOUT).await;
        if let Some(error) = warmup.iter().find_map(|s| s.error.as_ref()) {
            bail!("{name}: a warm-up request failed: {error}");
        }
        let samples = load::open_loop(
            &self.client,
            requests(measured),
            self.rate_per_s,
            REQUEST_TIMEOUT,
        )
        .await;
        let summary = Summary::of(&samples);
        let guard_refusals = self.guard_refusals().await? - refusals_before;
        eprintln!(
            "{name}{}: p50 {:.2} ms, p99 {:.2} ms, {} errors, {:?}",
            if stream { " (stream)" } else { "" },
            summary.p50_ms,
            summary.p99_ms,
            summary.errors,
            summary.cache
        );
        Ok(ScenarioResult {
            name,
            stream,
            summary,
            guard_refusals,
            added_p50_ms: None,
            added_p99_ms: None,
        })
    }

    async fn one_by_one(
        &self,
        questions: &[String],
        api_key: &'static str,
        stream: bool,
    ) -> anyhow::Result<Vec<load::Sample>> {
        let requests = questions
            .iter()
            .map(|question| ChatRequest {
                url: Arc::clone(&self.gateway_url),
                api_key,
                question: question.clone(),
                stream,
            })
            .collect();
        let samples = load::one_by_one(&self.client, requests, REQUEST_TIMEOUT).await;
        if let Some(error) = samples.iter().find_map(|s| s.error.as_ref()) {
            bail!("a request failed: {error}");
        }
        Ok(samples)
    }

    /// The entries the gateway holds and the bytes it accounts for them, from `/healthz`:
    /// its per-category figures, or the store's totals where a gateway reports those.
    async fn store(&self) -> anyhow::Result<(u64, u64)> {
        let health: Value = self
            .client
            .get(&self.healthz_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let total = |name: &str| -> Option<u64> {
            if let Some(value) = health.pointer(&format!("/store/{name}")) {
                return value.as_u64();
            }
            health
                .get("categories")?
                .as_object()?
                .values()
                .map(|category| category.get(name)?.as_u64())
                .sum()
        };
        let field = |name: &str| {
            total(name).with_context(|| format!("/healthz has no {name} figures: {health}"))
        };
        Ok((field("entries")?, field("bytes")?))
    }

    /// Semantic candidates the hit guards refused so far (`cachet_guard_refusals_total`).
    async fn guard_refusals(&self) -> anyhow::Result<u64> {
        let text = self
            .client
            .get(&self.metrics_url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let total: f64 = text
            .lines()
            .filter(|line| line.starts_with("cachet_guard_refusals_total"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        Ok(total as u64)
    }

    /// Waits until the store's entry count has not changed for a second; returns it.
    async fn settle(&self) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let mut last = self.store().await?.0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.store().await?.0;
            if now == last {
                return Ok(now);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the store kept changing for {SETTLE_TIMEOUT:?}"
            );
            last = now;
        }
    }
}
