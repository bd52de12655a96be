//! The validated configuration: types that cannot hold an invalid value, built from the raw
//! file by [`Config::from_toml`], which reports every problem with its field path.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;

use crate::context::ContextSettings;
use crate::error::{Error, Problem, Result};
use crate::guards::{Guard, GuardSet};
use crate::raw::{RawCategory, RawConfig, RawMatch};

/// A similarity threshold, checked to lie in `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Threshold(f32);

impl Threshold {
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=1.0).contains(&value).then_some(Self(value as f32))
    }

    pub fn get(self) -> f32 {
        self.0
    }
}

/// Where the embedding model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(u32),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "cpu" {
            return Ok(Self::Cpu);
        }
        if let Some(ordinal) = s.strip_prefix("cuda:")
            && let Ok(ordinal) = ordinal.parse()
        {
            return Ok(Self::Cuda(ordinal));
        }
        Err(format!(
            "{s:?} is not a device (expected \"cpu\" or \"cuda:N\")"
        ))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    /// The bundled engine to start as the upstream, if configured.
    pub engine: Option<EngineSettings>,
    pub embedder: EmbedderSettings,
    pub index: IndexSettings,
    pub store: StoreSettings,
    pub cache: CacheSettings,
    /// In the order written: the first whose rules match classifies a request.
    pub categories: Vec<Category>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Base URL, ending without a slash (`http://host:8000/v1`).
    pub url: url::Url,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// How the gateway starts and supervises the bundled `cachet-engine` as its upstream.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The engine executable; `None` means `cachet-engine` beside the `cachet` executable.
    pub binary: Option<PathBuf>,
    /// Hugging Face checkpoint directory to serve.
    pub model: PathBuf,
    /// `cpu` or `cuda:N`, passed to the engine.
    pub device: String,
    /// Extra flags for `cachet-engine serve`.
    pub args: Vec<String>,
    /// How long the engine may take to load and start listening.
    pub startup_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct EmbedderSettings {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    pub onnxruntime: PathBuf,
    pub device: DeviceSpec,
    pub max_tokens: NonZeroUsize,
    pub max_batch: NonZeroUsize,
    pub batch_wait: Duration,
    /// ONNX Runtime intra-op threads; 0 lets it choose.
    pub threads: usize,
}

#[derive(Debug, Clone)]
pub struct IndexSettings {
    pub m: NonZeroUsize,
    pub ef_construction: NonZeroUsize,
    pub ef_search: NonZeroUsize,
    /// Nearest neighbours fetched per semantic lookup.
    pub candidates: NonZeroUsize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// Entries live in this process.
    Memory,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Index into [`Config::categories`] of the category used when no rule matches.
    pub default_category: usize,
    pub max_entry_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub threshold: Threshold,
    pub ttl: Duration,
    pub max_entries: Option<NonZeroUsize>,
    pub cacheable: bool,
    pub shared: bool,
    pub max_temperature: Option<f32>,
    /// Hit guards run on every semantic candidate above the threshold.
    pub guards: GuardSet,
    /// How the context of a multi-turn request is matched.
    pub context: ContextSettings,
    pub rules: MatchRules,
}

/// What makes a request belong to a category. Each non-empty list must have a match;
/// a category with no rules at all matches only as the default or by explicit header.
#[derive(Debug, Clone, Default)]
pub struct MatchRules {
    pub models: Vec<glob::Pattern>,
    pub routes: Vec<String>,
    /// Lower-cased header names with the value they must have.
    pub headers: Vec<(String, String)>,
    /// One case-insensitive whole-word alternation of every keyword.
    pub keywords: Option<Regex>,
    pub patterns: Vec<Regex>,
}

impl MatchRules {
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
            && self.routes.is_empty()
            && self.headers.is_empty()
            && self.keywords.is_none()
            && self.patterns.is_empty()
    }
}

const ROUTES: [&str; 2] = ["/v1/chat/completions", "/v1/completions"];

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates config text, reporting every problem at once.
    pub fn from_toml(text: &str) -> Result<Self> {
        let deserializer = toml::Deserializer::parse(text).map_err(Error::Syntax)?;
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            Error::Invalid(vec![Problem {
                path,
                message: e.into_inner().message().to_owned(),
            }])
        })?;
        validate(raw)
    }

    pub fn category(&self, name: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.name == name)
    }
}

/// Collects problems while building validated values.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: &str) -> Duration {
        let text = value.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(_) => {
                self.report(
                    path,
                    format!("{text:?} is not a duration (e.g. \"30s\", \"5m\", \"7d\")"),
                );
                Duration::ZERO
            }
        }
    }

    fn positive(&mut self, path: &str, value: Option<i64>, default: usize) -> NonZeroUsize {
        let value = value.unwrap_or(default as i64);
        match usize::try_from(value).ok().and_then(NonZeroUsize::new) {
            Some(n) => n,
            None => {
                self.report(path, format!("{value} must be a positive integer"));
                NonZeroUsize::MIN
            }
        }
    }

    fn non_negative(&mut self, path: &str, value: Option<i64>, default: usize) -> usize {
        let value = value.unwrap_or(default as i64);
        usize::try_from(value).unwrap_or_else(|_| {
            self.report(path, format!("{value} must not be negative"));
            0
        })
    }

    fn regex(&mut self, path: &str, pattern: &str) -> Option<Regex> {
        match Regex::new(pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                self.report(
                    path,
                    format!("{pattern:?} is not a regular expression: {e}"),
                );
                None
            }
        }
    }
}

fn validate(raw: RawConfig) -> Result<Config> {
    let mut c = Checker::default();

    let listen_text = raw.server.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen = listen_text.parse().unwrap_or_else(|_| {
        c.report(
            "server.listen",
            format!("{listen_text:?} is not an address like \"127.0.0.1:8080\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let server = ServerSettings {
        listen,
        max_body_bytes: c
            .positive("server.max_body_bytes", raw.server.max_body_bytes, 4 << 20)
            .get(),
        request_timeout: c.duration(
            "server.request_timeout",
            raw.server.request_timeout.as_deref(),
            "10m",
        ),
    };

    let url_text = raw
        .upstream
        .url
        .as_deref()
        .unwrap_or("http://127.0.0.1:8000/v1");
    let url = parse_base_url(url_text)
        .map_err(|message| c.report("upstream.url", message))
        .ok();
    let connect_timeout = c.duration(
        "upstream.connect_timeout",
        raw.upstream.connect_timeout.as_deref(),
        "5s",
    );
    let timeout = c.duration("upstream.timeout", raw.upstream.timeout.as_deref(), "10m");

    let engine = raw.engine.as_ref().map(|raw| {
        let device = raw.device.clone().unwrap_or_else(|| "cpu".to_owned());
        if let Err(message) = device.parse::<DeviceSpec>() {
            c.report("engine.device", message);
        }
        EngineSettings {
            binary: raw.binary.as_ref().map(PathBuf::from),
            model: path_or(&raw.model, "assets/smollm2-135m"),
            device,
            args: raw.args.clone(),
            startup_timeout: c.duration(
                "engine.startup_timeout",
                raw.startup_timeout.as_deref(),
                "5m",
            ),
        }
    });

    let e = &raw.embedder;
    let device_text = e.device.as_deref().unwrap_or("cpu");
    let device = device_text.parse().unwrap_or_else(|message: String| {
        c.report("embedder.device", message);
        DeviceSpec::Cpu
    });
    let embedder = EmbedderSettings {
        model: path_or(&e.model, "assets/minilm-int8/model.onnx"),
        tokenizer: path_or(&e.tokenizer, "assets/minilm-int8/tokenizer.json"),
        onnxruntime: path_or(
            &e.onnxruntime,
            "assets/onnxruntime/libonnxruntime.so.1.32.0",
        ),
        device,
        max_tokens: c.positive("embedder.max_tokens", e.max_tokens, 256),
        max_batch: c.positive("embedder.max_batch", e.max_batch, 32),
        batch_wait: c.duration("embedder.batch_wait", e.batch_wait.as_deref(), "0ms"),
        threads: c.non_negative("embedder.threads", e.threads, 0),
    };

    let i = &raw.index;
    let m = c.positive("index.m", i.m, 16);
    if m.get() > 256 {
        c.report("index.m", format!("{m} is above the maximum of 256"));
    }
    let index = IndexSettings {
        m,
        ef_construction: c.positive("index.ef_construction", i.ef_construction, 200),
        ef_search: c.positive("index.ef_search", i.ef_search, 64),
        candidates: c.positive("index.candidates", i.candidates, 4),
    };

    let store = match raw.store.kind.as_deref().unwrap_or("memory") {
        "memory" => StoreSettings::Memory,
        other => {
            c.report(
                "store.kind",
                format!("{other:?} is not a store kind (expected \"memory\")"),
            );
            StoreSettings::Memory
        }
    };

    let mut categories = Vec::with_capacity(raw.categories.len());
    for (name, raw_category) in &raw.categories {
        categories.push(validate_category(&mut c, name, raw_category));
    }

    let default_name = raw.cache.default_category.as_deref().unwrap_or("general");
    let default_category = match categories.iter().position(|cat| cat.name == default_name) {
        Some(i) => i,
        None if raw.categories.is_empty() && raw.cache.default_category.is_none() => {
            // A config without categories caches everything under one general category.
            categories.push(Category::general());
            0
        }
        None => {
            c.report(
                "cache.default_category",
                format!("{default_name:?} is not a configured category"),
            );
            0
        }
    };
    let cache = CacheSettings {
        default_category,
        max_entry_bytes: c
            .positive("cache.max_entry_bytes", raw.cache.max_entry_bytes, 1 << 20)
            .get(),
    };

    let (Some(url), true) = (url, c.problems.is_empty()) else {
        return Err(Error::Invalid(c.problems));
    };
    let upstream = UpstreamSettings {
        url,
        connect_timeout,
        timeout,
    };
    Ok(Config {
        server,
        upstream,
        engine,
        embedder,
        index,
        store,
        cache,
        categories,
    })
}

impl Category {
    fn general() -> Self {
        Self {
            name: "general".to_owned(),
            threshold: Threshold(0.9),
            ttl: Duration::from_secs(24 * 3600),
            max_entries: None,
            cacheable: true,
            shared: false,
            max_temperature: None,
            guards: GuardSet::all(),
            context: ContextSettings::default(),
            rules: MatchRules::default(),
        }
    }
}

fn validate_category(c: &mut Checker, name: &str, raw: &RawCategory) -> Category {
    let at = |field: &str| format!("categories.{name}.{field}");
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    {
        c.report(
            format!("categories.{name}"),
            "a category name uses only letters, digits, '_' and '-'",
        );
    }
    let threshold_value = raw.threshold.unwrap_or(0.9);
    let threshold = Threshold::new(threshold_value).unwrap_or_else(|| {
        c.report(
            at("threshold"),
            format!("{threshold_value} is not between 0 and 1"),
        );
        Threshold(1.0)
    });
    let ttl = c.duration(&at("ttl"), raw.ttl.as_deref(), "1d");
    if ttl.is_zero() && raw.ttl.is_some() {
        c.report(at("ttl"), "must be longer than zero");
    }
    let max_entries = raw
        .max_entries
        .map(|n| c.positive(&at("max_entries"), Some(n), 1));
    let max_temperature = raw.max_temperature.and_then(|t| {
        if (0.0..=2.0).contains(&t) {
            Some(t as f32)
        } else {
            c.report(at("max_temperature"), format!("{t} is not between 0 and 2"));
            None
        }
    });
    let guards = match &raw.guards {
        None => GuardSet::all(),
        Some(names) => names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let guard = Guard::from_name(name);
                if guard.is_none() {
                    let known: Vec<&str> = Guard::ALL.iter().map(|g| g.name()).collect();
                    c.report(
                        format!("{}[{i}]", at("guards")),
                        format!("{name:?} is not a guard ({})", known.join(", ")),
                    );
                }
                guard
            })
            .collect(),
    };
    let defaults = ContextSettings::default();
    let mut fraction = |field: &str, value: Option<f64>, default: f32| match value {
        None => default,
        Some(v) if (0.0..=1.0).contains(&v) => v as f32,
        Some(v) => {
            c.report(at(field), format!("{v} is not between 0 and 1"));
            default
        }
    };
    let context = ContextSettings {
        topic_threshold: fraction(
            "context_topic_threshold",
            raw.context_topic_threshold,
            defaults.topic_threshold,
        ),
        turn_overlap: fraction(
            "context_turn_overlap",
            raw.context_turn_overlap,
            defaults.turn_overlap,
        ),
    };
    Category {
        name: name.to_owned(),
        guards,
        context,
        threshold,
        ttl,
        max_entries,
        cacheable: raw.cacheable.unwrap_or(true),
        shared: raw.shared.unwrap_or(false),
        max_temperature,
        rules: validate_rules(c, &at("match"), &raw.rules),
    }
}

fn validate_rules(c: &mut Checker, at: &str, raw: &RawMatch) -> MatchRules {
    let mut rules = MatchRules::default();
    for (i, model) in raw.models.iter().enumerate() {
        match glob::Pattern::new(model) {
            Ok(p) => rules.models.push(p),
            Err(e) => c.report(
                format!("{at}.models[{i}]"),
                format!("{model:?} is not a glob: {e}"),
            ),
        }
    }
    for (i, route) in raw.routes.iter().enumerate() {
        if ROUTES.contains(&route.as_str()) {
            rules.routes.push(route.clone());
        } else {
            c.report(
                format!("{at}.routes[{i}]"),
                format!("{route:?} is not a cached route ({})", ROUTES.join(", ")),
            );
        }
    }
    for (header, value) in &raw.headers {
        rules
            .headers
            .push((header.to_ascii_lowercase(), value.clone()));
    }
    for (i, keyword) in raw.keywords.iter().enumerate() {
        if keyword.trim().is_empty() {
            c.report(format!("{at}.keywords[{i}]"), "must not be empty");
        }
    }
    if !raw.keywords.is_empty() {
        let alternation = raw
            .keywords
            .iter()
            .map(|k| regex::escape(k.trim()))
            .collect::<Vec<_>>()
            .join("|");
        rules.keywords = c.regex(
            &format!("{at}.keywords"),
            &format!(r"(?i)\b(?:{alternation})\b"),
        );
    }
    for (i, pattern) in raw.patterns.iter().enumerate() {
        if let Some(re) = c.regex(&format!("{at}.patterns[{i}]"), pattern) {
            rules.patterns.push(re);
        }
    }
    rules
}

fn path_or(value: &Option<String>, default: &str) -> PathBuf {
    PathBuf::from(value.as_deref().unwrap_or(default))
}

fn parse_base_url(text: &str) -> std::result::Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must be an http:// or https:// url"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    // Keep the base without a trailing slash so that routes append cleanly.
    let trimmed = text.trim_end_matches('/');
    url::Url::parse(trimmed).map_err(|e| format!("{text:?} is not a url: {e}"))
}
