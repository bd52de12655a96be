//! `cachet eval`: runs labelled question or conversation pairs through the real embedder and
//! policy (a fresh cache per pair: store `a`, look up `b`) and reports how many should-hits
//! are served and how many traps get a wrong answer, per category and overall.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use cachet_embedder::{Device, Embedder, EmbedderConfig};
use cachet_policies::{
    Candidate, Category, Config, ConversationView, DeviceSpec, Message, RequestFacts,
    conversation_view, judge,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cache::dot;
use crate::policy::Policy;

/// Command-line options of `cachet eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Question pairs, one JSON object per line: `{id, category, a, b, same_answer}`.
    #[arg(
        long,
        conflicts_with = "conversations",
        required_unless_present = "conversations"
    )]
    pub pairs: Option<PathBuf>,
    /// Conversation pairs, one JSON object per line: `{id, subtype, a, b, same_answer}` with
    /// `a` and `b` lists of `{role, content}`.
    #[arg(long)]
    pub conversations: Option<PathBuf>,
    /// Config file whose categories, thresholds and guards are evaluated.
    #[arg(long, default_value = "configs/default.toml")]
    pub config: PathBuf,
    /// Print a JSON summary instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also report every threshold from 0.40 to 0.95 (applied to all categories).
    #[arg(long)]
    pub sweep: bool,
    /// List every wrong answer and every missed should-hit with its reason.
    #[arg(long)]
    pub verbose: bool,
    /// Also write each row's similarity, whether the guards and the context comparison let
    /// it through, its label and group, tab separated: calibration data for
    /// `[calibration] file`.
    #[arg(long)]
    pub scores: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not an evaluation row")]
    Row {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid config")]
    Config(#[from] cachet_policies::Error),
    #[error("failed to start the embedder")]
    Embedder(#[from] cachet_embedder::Error),
    #[error("failed to start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("failed to build the cache policy")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One labelled pair: `cached` is stored, `query` is looked up.
#[derive(Debug, Clone)]
pub struct EvalRow {
    pub id: String,
    /// Category or subtype of the pair, for the per-group table.
    pub group: String,
    pub should_hit: bool,
    pub cached: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct PairLine {
    id: String,
    category: String,
    a: String,
    b: String,
    same_answer: bool,
}

#[derive(Deserialize)]
struct ConversationLine {
    id: String,
    subtype: String,
    a: Vec<MessageLine>,
    b: Vec<MessageLine>,
    same_answer: bool,
}

#[derive(Deserialize)]
struct MessageLine {
    role: String,
    content: String,
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        rows.push(serde_json::from_str(line).map_err(|source| EvalError::Row {
            path: path.to_owned(),
            line: i + 1,
            source,
        })?);
    }
    Ok(rows)
}

/// Reads a pairs file: each side is a single user message.
pub fn load_pairs(path: &Path) -> Result<Vec<EvalRow>, EvalError> {
    let user = |text: String| vec![("user".to_owned(), text)];
    Ok(read_lines::<PairLine>(path)?
        .into_iter()
        .map(|p| EvalRow {
            id: p.id,
            group: p.category,
            should_hit: p.same_answer,
            cached: user(p.a),
            query: user(p.b),
        })
        .collect())
}

/// Reads a conversations file.
pub fn load_conversations(path: &Path) -> Result<Vec<EvalRow>, EvalError> {
    let messages = |m: Vec<MessageLine>| m.into_iter().map(|m| (m.role, m.content)).collect();
    Ok(read_lines::<ConversationLine>(path)?
        .into_iter()
        .map(|c| EvalRow {
            id: c.id,
            group: c.subtype,
            should_hit: c.same_answer,
            cached: messages(c.a),
            query: messages(c.b),
        })
        .collect())
}

/// The embedder with a memory of texts already embedded, so that a threshold sweep embeds
/// every text once. Lookup times are taken on the first, uncached pass.
#[derive(Debug)]
pub struct EmbedMemo<'e> {
    embedder: &'e Embedder,
    seen: HashMap<String, Vec<f32>>,
}

impl<'e> EmbedMemo<'e> {
    pub fn new(embedder: &'e Embedder) -> Self {
        Self {
            embedder,
            seen: HashMap::new(),
        }
    }

    async fn embed(&mut self, text: &str) -> Result<Vec<f32>, EvalError> {
        if let Some(v) = self.seen.get(text) {
            return Ok(v.clone());
        }
        let v = self.embedder.embed(text).await?;
        self.seen.insert(text.to_owned(), v.clone());
        Ok(v)
    }
}

/// What the lookup of one row found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub hit: bool,
    /// `exact`, `semantic`, or why the candidate was refused.
    pub reason: String,
    pub similarity: f32,
    /// Embedding plus judging time of the lookup, in milliseconds.
    pub lookup_ms: f64,
}

fn view(messages: &[(String, String)]) -> Option<ConversationView> {
    let messages: Vec<Message<'_>> = messages
        .iter()
        .map(|(role, content)| Message { role, content })
        .collect();
    conversation_view(&messages)
}

/// The category the gateway would choose for a chat whose lookup text is `text`.
async fn classify<'c>(
    policy: &'c Policy,
    embedder: &mut EmbedMemo<'_>,
    text: &str,
) -> Result<&'c Category, EvalError> {
    let no_headers = |_: &str| None;
    let facts = RequestFacts {
        route: "/v1/chat/completions",
        model: "eval",
        text,
        header: &no_headers,
    };
    let vector = if policy.config.needs_query_vector(&facts) {
        Some(embedder.embed(text).await?)
    } else {
        None
    };
    Ok(policy
        .config
        .classify_with(&facts, vector.as_deref(), &policy.prototypes)
        .category)
}

/// Looks `query` up in a cache holding only `cached`, the way the gateway decides a semantic
/// candidate: same category, exact match first, then [`judge`]. `threshold` overrides the
/// category's threshold when given (for sweeps).
pub async fn lookup_pair(
    policy: &Policy,
    embedder: &mut EmbedMemo<'_>,
    row: &EvalRow,
    threshold: Option<f32>,
) -> Result<Outcome, EvalError> {
    let miss = |reason: &str| Outcome {
        hit: false,
        reason: reason.to_owned(),
        similarity: 0.0,
        lookup_ms: 0.0,
    };
    let (Some(cached), Some(query)) = (view(&row.cached), view(&row.query)) else {
        return Ok(miss("no user message"));
    };
    let category = classify(policy, embedder, &query.lookup_text).await?;
    if !category.cacheable {
        return Ok(miss(&format!("bypass: category {}", category.name)));
    }
    if classify(policy, embedder, &cached.lookup_text).await?.name != category.name {
        return Ok(miss("stored under another category"));
    }
    if row.cached == row.query {
        return Ok(Outcome {
            hit: true,
            reason: "exact".to_owned(),
            similarity: 1.0,
            lookup_ms: 0.0,
        });
    }
    let stored = embedder.embed(&cached.lookup_text).await?;
    let stored_topic = match &cached.topic_text {
        Some(t) => Some(embedder.embed(t).await?),
        None => None,
    };
    let started = Instant::now();
    let vector = embedder.embed(&query.lookup_text).await?;
    let topic = match &query.topic_text {
        Some(t) => Some(embedder.embed(t).await?),
        None => None,
    };
    let similarity = dot(&stored, &vector);
    let topic_similarity = stored_topic
        .as_deref()
        .zip(topic.as_deref())
        .map(|(a, b)| dot(a, b));
    let threshold = threshold
        .and_then(|t| cachet_policies::Threshold::new(f64::from(t)))
        .unwrap_or_else(|| {
            policy
                .operating_point(&category.name, cachet_policies::LoadState::Normal)
                .threshold
        });
    let candidate = Candidate {
        cached: &cached,
        query: &query,
        similarity,
        topic_similarity,
    };
    let verdict = judge(category, threshold, &candidate, &category.context);
    let lookup_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Outcome {
        hit: verdict.is_ok(),
        reason: verdict.map_or_else(|r| r.to_string(), |()| "semantic".to_owned()),
        similarity,
        lookup_ms,
    })
}

/// Calibration data for `[calibration] file`: each row's similarity, whether the default
/// category's guards and context comparison let it through at any threshold (1 or 0), whether
/// serving it would be wrong, and its group. Rows are scored whatever category they would be
/// classified in: calibration is about the judge, not the routing.
pub async fn calibration_scores(
    policy: &Policy,
    embedder: &Embedder,
    rows: &[EvalRow],
) -> Result<String, EvalError> {
    let config = &policy.config;
    let category = &config.categories[config.cache.default_category];
    let mut out = String::from("similarity\tpassed\ttrap\tgroup\n");
    let mut memo = EmbedMemo::new(embedder);
    for row in rows {
        let (Some(cached), Some(query)) = (view(&row.cached), view(&row.query)) else {
            continue;
        };
        let similarity = dot(
            &memo.embed(&cached.lookup_text).await?,
            &memo.embed(&query.lookup_text).await?,
        );
        let topic_similarity = match (&cached.topic_text, &query.topic_text) {
            (Some(a), Some(b)) => Some(dot(&memo.embed(a).await?, &memo.embed(b).await?)),
            _ => None,
        };
        let candidate = Candidate {
            cached: &cached,
            query: &query,
            similarity,
            topic_similarity,
        };
        let zero = cachet_policies::Threshold::new(0.0).unwrap_or(cachet_policies::Threshold::MAX);
        let passed = judge(category, zero, &candidate, &category.context).is_ok();
        out.push_str(&format!(
            "{similarity:.5}\t{}\t{}\t{}\n",
            u8::from(passed),
            u8::from(!row.should_hit),
            row.group
        ));
    }
    Ok(out)
}

/// Served shares for one set of rows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub should_hit: usize,
    pub should_hit_served: usize,
    pub traps: usize,
    pub traps_served: usize,
}

impl Figures {
    fn add(&mut self, should_hit: bool, hit: bool) {
        if should_hit {
            self.should_hit += 1;
            self.should_hit_served += usize::from(hit);
        } else {
            self.traps += 1;
            self.traps_served += usize::from(hit);
        }
    }

    pub fn served(&self) -> f64 {
        self.should_hit_served as f64 / self.should_hit.max(1) as f64
    }

    pub fn wrong(&self) -> f64 {
        self.traps_served as f64 / self.traps.max(1) as f64
    }
}

/// The result of an evaluation run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub overall: Figures,
    pub per_group: BTreeMap<String, Figures>,
    /// `(threshold, figures)` when sweeping.
    pub sweep: Vec<(f32, Figures)>,
    /// Lookup times (query embedding + judging), sorted, in milliseconds.
    pub lookup_ms: Vec<f64>,
    pub outcomes: Vec<(String, bool, Outcome)>,
}

/// Runs every row with the config's own thresholds, and with each swept threshold.
pub async fn evaluate(
    policy: &Policy,
    embedder: &Embedder,
    rows: &[EvalRow],
    sweep: bool,
) -> Result<Report, EvalError> {
    let mut report = Report::default();
    let mut memo = EmbedMemo::new(embedder);
    let embedder = &mut memo;
    for row in rows {
        let outcome = lookup_pair(policy, embedder, row, None).await?;
        report.overall.add(row.should_hit, outcome.hit);
        report
            .per_group
            .entry(row.group.clone())
            .or_default()
            .add(row.should_hit, outcome.hit);
        if outcome.lookup_ms > 0.0 {
            report.lookup_ms.push(outcome.lookup_ms);
        }
        report
            .outcomes
            .push((row.id.clone(), row.should_hit, outcome));
    }
    report.lookup_ms.sort_by(f64::total_cmp);
    if sweep {
        for step in 8..=19 {
            let threshold = step as f32 * 0.05;
            let mut figures = Figures::default();
            for row in rows {
                let outcome = lookup_pair(policy, embedder, row, Some(threshold)).await?;
                figures.add(row.should_hit, outcome.hit);
            }
            report.sweep.push((threshold, figures));
        }
    }
    Ok(report)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

impl Report {
    /// The machine-readable summary.
    pub fn to_json(&self) -> Value {
        let per_category: serde_json::Map<String, Value> = self
            .per_group
            .iter()
            .map(|(group, f)| {
                let value = if f.should_hit > 0 {
                    json!({"should_hit": f.should_hit, "served": f.served()})
                } else {
                    json!({"traps": f.traps, "wrong_answers": f.wrong()})
                };
                (group.clone(), value)
            })
            .collect();
        let sweep: Vec<Value> = self
            .sweep
            .iter()
            .map(|(t, f)| json!({"threshold": t, "should_hit_served": f.served(), "wrong_answers": f.wrong()}))
            .collect();
        json!({
            "should_hit_served": self.overall.served(),
            "wrong_answers": self.overall.wrong(),
            "per_category": per_category,
            "sweep": sweep,
            "lookup_ms": {"p50": percentile(&self.lookup_ms, 0.5), "p99": percentile(&self.lookup_ms, 0.99)},
        })
    }

    /// Tables for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<28} {:>12} {:>12}\n",
            "group", "served", "wrong"
        ));
        for (group, f) in &self.per_group {
            let served = if f.should_hit > 0 {
                format!("{}/{}", f.should_hit_served, f.should_hit)
            } else {
                "-".to_owned()
            };
            let wrong = if f.traps > 0 {
                format!("{}/{}", f.traps_served, f.traps)
            } else {
                "-".to_owned()
            };
            out.push_str(&format!("{group:<28} {served:>12} {wrong:>12}\n"));
        }
        let o = &self.overall;
        out.push_str(&format!(
            "{:<28} {:>11.1}% {:>11.1}%\n",
            "overall",
            o.served() * 100.0,
            o.wrong() * 100.0
        ));
        for (t, f) in &self.sweep {
            out.push_str(&format!(
                "threshold {t:.2}: served {:.1}%, wrong {:.1}%\n",
                f.served() * 100.0,
                f.wrong() * 100.0
            ));
        }
        out.push_str(&format!(
            "lookup (embed query + judge): p50 {:.2} ms, p99 {:.2} ms over {} lookups\n",
            percentile(&self.lookup_ms, 0.5),
            percentile(&self.lookup_ms, 0.99),
            self.lookup_ms.len()
        ));
        out
    }
}

/// The embedder's start-up settings from the config's `[embedder]` section; `cachet serve`
/// and `cachet eval` start the same embedder.
pub fn embedder_config(config: &Config) -> EmbedderConfig {
    let e = &config.embedder;
    let mut out = EmbedderConfig::new(e.model.clone(), e.tokenizer.clone(), e.onnxruntime.clone());
    out.device = match e.device {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(n) => Device::Cuda(n),
    };
    out.max_tokens = e.max_tokens.get();
    out.max_batch = e.max_batch.get();
    out.batch_wait = e.batch_wait;
    out.intra_threads = e.threads;
    out.rows_per_run = e.rows_per_run;
    out
}

/// Runs `cachet eval` and returns what it prints.
pub fn run(args: &EvalArgs) -> Result<String, EvalError> {
    let config = Config::load(&args.config)?;
    let rows = match (&args.pairs, &args.conversations) {
        (Some(path), _) => load_pairs(path)?,
        (None, Some(path)) => load_conversations(path)?,
        (None, None) => Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EvalError::Runtime)?;
    runtime.block_on(async {
        let embedder = Embedder::start(embedder_config(&config))?;
        let policy = Policy::build(std::sync::Arc::new(config), &embedder).await?;
        if let Some(path) = &args.scores {
            let scores = calibration_scores(&policy, &embedder, &rows).await?;
            std::fs::write(path, scores).map_err(|source| EvalError::Write {
                path: path.clone(),
                source,
            })?;
        }
        let report = evaluate(&policy, &embedder, &rows, args.sweep).await?;
        let mut out = if args.json {
            report.to_json().to_string()
        } else {
            report.to_text()
        };
        if args.verbose {
            for (id, should_hit, o) in &report.outcomes {
                if o.hit != *should_hit {
                    let what = if *should_hit { "missed" } else { "wrong" };
                    out.push_str(&format!(
                        "\n{what} {id} (similarity {:.3}): {}",
                        o.similarity, o.reason
                    ));
                }
            }
        }
        Ok(out)
    })
}
