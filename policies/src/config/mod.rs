//! The validated configuration: types that cannot hold an invalid value, built from the file
//! by [`Config::from_toml`], which reports every problem with its field path at once.

mod admin;
mod calibration;
mod category;
mod checker;
mod parse;
mod policy;
mod service;
mod store;

use std::path::Path;

pub use admin::{AdminSettings, EnvLookup, weak_token};
pub use calibration::{CalibrationSettings, DEFAULT_CONFIDENCE, ShadowSettings};
pub use category::{Category, DEFAULT_SHADOW_RATE, ErrorBudget, Eviction, MatchRules, Threshold};
pub use policy::{AdaptiveSettings, ClassifierSettings};
pub use service::{
    DeviceSpec, EmbedderSettings, EngineSettings, IndexSettings, ServerSettings, UpstreamSettings,
};
pub use store::{StoreBreaker, StoreSettings};

use crate::error::{Error, Problem, Result};
use crate::raw::RawConfig;
use crate::secret::Secret;
use checker::Checker;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    /// The bundled engine to start as the upstream, if configured.
    pub engine: Option<EngineSettings>,
    pub embedder: EmbedderSettings,
    pub index: IndexSettings,
    pub store: StoreSettings,
    pub store_breaker: StoreBreaker,
    pub cache: CacheSettings,
    /// The admin API's settings; `None` turns the admin API off.
    pub admin: Option<AdminSettings>,
    /// The bearer token `/metrics` requires; `None` leaves it open.
    pub metrics_token: Option<Secret<String>>,
    pub classifier: ClassifierSettings,
    pub adaptive: AdaptiveSettings,
    pub calibration: CalibrationSettings,
    pub shadow: ShadowSettings,
    /// In the order written: the first whose rules match classifies a request.
    pub categories: Vec<Category>,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Index into [`Config::categories`] of the category used when no rule matches.
    pub default_category: usize,
    pub max_entry_bytes: usize,
    /// What happens to requests without an API key.
    pub anonymous: Anonymous,
}

/// `[cache] anonymous`: whether requests without an API key use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anonymous {
    /// Forwarded uncached (`x-cachet-bypass: anonymous`): keyless callers cannot be told
    /// apart, so caching for them would let any one of them read what another asked.
    #[default]
    Bypass,
    /// Cached as one tenant, `anonymous`, shared by every keyless caller.
    Tenant,
}

impl Anonymous {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Tenant => "tenant",
        }
    }
}

impl Config {
    /// Reads and validates a config file, with no environment variables (a token named by
    /// `admin.token_env` is then reported missing).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_env(path, &|_| None)
    }

    /// Reads and validates a config file; `env` looks up the variables the file names.
    pub fn load_with_env(path: &Path, env: EnvLookup<'_>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with_env(&text, env)
    }

    /// Parses and validates config text, reporting every problem at once: unknown keys and
    /// values of the wrong type in every section, then every invalid value.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_toml_with_env(text, &|_| None)
    }

    /// [`Config::from_toml`], with `env` to look up the environment variables it names.
    pub fn from_toml_with_env(text: &str, env: EnvLookup<'_>) -> Result<Self> {
        let (raw, mut problems) = parse::parse(text)?;
        let (config, checked) = match validate(raw, env) {
            Ok(config) => (Some(config), Vec::new()),
            Err(checked) => (None, checked),
        };
        // A field that could not be read was validated with its default; what validation
        // says about it would only repeat the first problem, or mislead.
        let unread: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
        problems.extend(
            checked
                .into_iter()
                .filter(|p| !unread.iter().any(|path| is_within(&p.path, path))),
        );
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(Error::Invalid(problems)),
        }
    }

    pub fn category(&self, name: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.name == name)
    }

    /// The sections that differ in `new` but take effect only when the gateway restarts:
    /// the listeners (`server`, `admin.listen`), the upstream, the engine, the embedder, the
    /// index's graph parameters and the store. Everything else (categories, cache, classifier,
    /// adaptive, the index's `ef_search` and `candidates`, the admin and metrics tokens)
    /// applies to a running gateway.
    pub fn restart_required(&self, new: &Config) -> Vec<&'static str> {
        [
            ("server", self.server != new.server),
            (
                "admin.listen",
                self.admin.as_ref().and_then(|a| a.listen)
                    != new.admin.as_ref().and_then(|a| a.listen),
            ),
            ("upstream", self.upstream != new.upstream),
            ("engine", self.engine != new.engine),
            ("embedder", self.embedder != new.embedder),
            ("index", self.index.graph_differs(&new.index)),
            (
                "store",
                self.store != new.store || self.store_breaker != new.store_breaker,
            ),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
    }
}

/// Whether `path` is `parent` or a field inside it.
fn is_within(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

fn validate(raw: RawConfig, env: EnvLookup<'_>) -> std::result::Result<Config, Vec<Problem>> {
    let mut c = Checker::default();

    let server = service::server(&mut c, &raw.server);
    let upstream = service::upstream(&mut c, &raw.upstream);
    let engine = raw.engine.as_ref().map(|e| service::engine(&mut c, e));
    let embedder = service::embedder(&mut c, &raw.embedder);
    let index = service::index(&mut c, &raw.index);
    let store = store::store(&mut c, &raw.store);
    let store_breaker = store::breaker(&mut c, &raw.store);
    let (admin, metrics_token) = match raw.admin.as_ref() {
        Some(raw_admin) => admin::admin(&mut c, raw_admin, env),
        None => (None, None),
    };
    let classifier = policy::classifier(&mut c, &raw.classifier);
    let adaptive = policy::adaptive(&mut c, &raw.adaptive);
    let calibration = calibration::calibration(&mut c, &raw.calibration);
    let shadow = calibration::shadow(&mut c, &raw.shadow);

    let mut categories = Vec::with_capacity(raw.categories.len());
    for (name, raw_category) in &raw.categories {
        categories.push(category::category(&mut c, name, raw_category));
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
    for category in &categories {
        if category.budget.is_some() && calibration.file.is_none() {
            c.report(
                format!("categories.{}.max_wrong_rate", category.name),
                "needs calibration data: set [calibration] file",
            );
        }
    }
    let cache = CacheSettings {
        default_category,
        max_entry_bytes: c
            .positive("cache.max_entry_bytes", raw.cache.max_entry_bytes, 1 << 20)
            .get(),
        anonymous: match raw.cache.anonymous.as_deref() {
            None | Some("bypass") => Anonymous::Bypass,
            Some("tenant") => Anonymous::Tenant,
            Some(other) => {
                c.report(
                    "cache.anonymous",
                    format!("{other:?} is neither \"bypass\" nor \"tenant\""),
                );
                Anonymous::Bypass
            }
        },
    };

    let (Some(upstream), true) = (upstream, c.problems.is_empty()) else {
        return Err(c.problems);
    };
    Ok(Config {
        server,
        upstream,
        engine,
        embedder,
        index,
        store,
        store_breaker,
        cache,
        admin,
        metrics_token,
        classifier,
        adaptive,
        calibration,
        shadow,
        categories,
    })
}
