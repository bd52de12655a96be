//! `[categories.NAME]`: one category's policy (threshold, TTL, quotas, eviction, guards,
//! context matching, the relaxed values used under load) and the rules that select it.

use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;

use super::checker::Checker;
use crate::context::ContextSettings;
use crate::governor::LoadState;
use crate::guards::{Guard, GuardSet};
use crate::raw::{RawCategory, RawMatch};

/// A similarity threshold, checked to lie in `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Threshold(f32);

impl Threshold {
    /// Serves only identical vectors.
    pub const MAX: Threshold = Threshold(1.0);

    pub fn new(value: f64) -> Option<Self> {
        (0.0..=1.0).contains(&value).then_some(Self(value as f32))
    }

    pub fn get(self) -> f32 {
        self.0
    }
}

/// The share of look-alike questions a category may answer wrongly, as calibrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorBudget {
    pub max_wrong_rate: f64,
    /// The budget while the upstream is under load; at least `max_wrong_rate`.
    pub relaxed_max_wrong_rate: f64,
}

impl ErrorBudget {
    pub fn effective(&self, state: LoadState) -> f64 {
        match state {
            LoadState::Normal => self.max_wrong_rate,
            LoadState::Relaxed => self.relaxed_max_wrong_rate,
        }
    }
}

/// The share of semantic hits shadow-checked by default.
pub const DEFAULT_SHADOW_RATE: f64 = 0.01;

/// Which entry a full category drops first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// Least recently used.
    #[default]
    Lru,
    /// Least frequently used.
    Lfu,
    /// Greedy-dual-size-frequency: the lowest `frequency × cost / size` first (cost: what the
    /// answer cost upstream), aged so that entries once popular do not stay forever; keeps
    /// many small, popular, expensive answers within a byte quota.
    Gdsf,
}

impl Eviction {
    pub const ALL: [Eviction; 3] = [Eviction::Lru, Eviction::Lfu, Eviction::Gdsf];

    pub fn name(self) -> &'static str {
        match self {
            Self::Lru => "lru",
            Self::Lfu => "lfu",
            Self::Gdsf => "gdsf",
        }
    }
}

impl FromStr for Eviction {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("{s:?} is not an eviction policy (\"lru\", \"lfu\", \"gdsf\")"))
    }
}

#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub threshold: Threshold,
    pub ttl: Duration,
    /// Threshold while the upstream is under load; at most `threshold`.
    pub relaxed_threshold: Threshold,
    /// TTL of answers stored while the upstream is under load; at least `ttl`.
    pub relaxed_ttl: Duration,
    pub max_entries: Option<NonZeroUsize>,
    /// Most entries one tenant's answers may hold, so that no tenant evicts another's.
    pub max_entries_per_tenant: Option<NonZeroUsize>,
    /// Most bytes of stored answers kept.
    pub max_bytes: Option<NonZeroUsize>,
    /// Which entry goes first when a quota is reached.
    pub eviction: Eviction,
    pub cacheable: bool,
    pub shared: bool,
    /// Whether a client may choose this category with the `x-cachet-category` header (and,
    /// for a shared category, with `match.headers`). Off by default: a client that names a
    /// category bypasses its rules, and for a shared one that means reading and writing every
    /// tenant's entries.
    pub selectable_by_header: bool,
    pub max_temperature: Option<f32>,
    /// Hit guards run on every semantic candidate above the threshold.
    pub guards: GuardSet,
    /// How the context of a multi-turn request is matched.
    pub context: ContextSettings,
    /// With an error budget, the threshold is chosen from calibration data when the policy is
    /// built, and `threshold` / `relaxed_threshold` are not set.
    pub budget: Option<ErrorBudget>,
    /// Share (`0..=1`) of semantic hits also sent upstream to check the cached answer.
    pub shadow_rate: f64,
    /// Example queries; their embeddings make the category's prototype.
    pub examples: Vec<String>,
    pub rules: MatchRules,
}

impl Category {
    /// The threshold that applies in the given load state.
    pub fn effective_threshold(&self, state: LoadState) -> Threshold {
        match state {
            LoadState::Normal => self.threshold,
            LoadState::Relaxed => self.relaxed_threshold,
        }
    }

    /// The TTL given to answers stored in the given load state.
    pub fn effective_ttl(&self, state: LoadState) -> Duration {
        match state {
            LoadState::Normal => self.ttl,
            LoadState::Relaxed => self.relaxed_ttl,
        }
    }

    /// The category a config without categories caches everything under.
    pub(super) fn general() -> Self {
        let ttl = Duration::from_secs(24 * 3600);
        Self {
            name: "general".to_owned(),
            threshold: Threshold(0.9),
            ttl,
            relaxed_threshold: Threshold(0.9),
            relaxed_ttl: ttl,
            max_entries: None,
            max_entries_per_tenant: None,
            max_bytes: None,
            eviction: Eviction::Lru,
            cacheable: true,
            shared: false,
            selectable_by_header: false,
            max_temperature: None,
            guards: GuardSet::all(),
            context: ContextSettings::default(),
            budget: None,
            shadow_rate: DEFAULT_SHADOW_RATE,
            examples: Vec::new(),
            rules: MatchRules::default(),
        }
    }
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

pub(super) fn category(c: &mut Checker, name: &str, raw: &RawCategory) -> Category {
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
    // An invalid value is replaced by one that raises no further problem: 1 (serve nothing)
    // for the threshold, the threshold itself for the relaxed one.
    let mut threshold_at = |field: &str, value: f64, placeholder: Threshold| {
        Threshold::new(value).unwrap_or_else(|| {
            c.report(at(field), format!("{value} is not between 0 and 1"));
            placeholder
        })
    };
    let threshold = threshold_at("threshold", raw.threshold.unwrap_or(0.9), Threshold(1.0));
    let relaxed_threshold = match raw.relaxed_threshold {
        None => threshold,
        Some(value) => threshold_at("relaxed_threshold", value, threshold),
    };
    if relaxed_threshold > threshold {
        c.report(
            at("relaxed_threshold"),
            format!(
                "{} is above threshold {}: relaxing may only lower it",
                relaxed_threshold.get(),
                threshold.get()
            ),
        );
    }
    let ttl = c.positive_duration(&at("ttl"), raw.ttl.as_deref(), "1d");
    let relaxed_ttl = match raw.relaxed_ttl.as_deref() {
        None => ttl,
        Some(text) => {
            let known = c.problems.len();
            let relaxed_ttl = c.duration(&at("relaxed_ttl"), Some(text), text);
            if c.problems.len() == known && relaxed_ttl < ttl {
                c.report(
                    at("relaxed_ttl"),
                    format!(
                        "{text} is shorter than ttl {}: relaxing may only extend it",
                        humantime::format_duration(ttl)
                    ),
                );
            }
            relaxed_ttl
        }
    };
    let max_entries = raw
        .max_entries
        .map(|n| c.positive(&at("max_entries"), Some(n), 1));
    let max_entries_per_tenant = raw
        .max_entries_per_tenant
        .map(|n| c.positive(&at("max_entries_per_tenant"), Some(n), 1));
    if let (Some(per_tenant), Some(max)) = (max_entries_per_tenant, max_entries)
        && per_tenant > max
    {
        c.report(
            at("max_entries_per_tenant"),
            format!("{per_tenant} is above max_entries {max}: it would never apply"),
        );
    }
    let max_bytes = raw
        .max_bytes
        .map(|n| c.positive(&at("max_bytes"), Some(n), 1));
    let eviction = match raw.eviction.as_deref().map(str::parse) {
        None => Eviction::Lru,
        Some(Ok(eviction)) => eviction,
        Some(Err(message)) => {
            c.report(at("eviction"), message);
            Eviction::Lru
        }
    };
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
    let context = ContextSettings {
        topic_threshold: c.fraction(
            &at("context_topic_threshold"),
            raw.context_topic_threshold,
            f64::from(defaults.topic_threshold),
        ) as f32,
        turn_overlap: c.fraction(
            &at("context_turn_overlap"),
            raw.context_turn_overlap,
            f64::from(defaults.turn_overlap),
        ) as f32,
    };
    let budget = raw.max_wrong_rate.map(|max| {
        let rate = |c: &mut Checker, field: &str, value: f64| {
            if value > 0.0 && value < 1.0 {
                value
            } else {
                c.report(at(field), format!("{value} is not between 0 and 1 (exclusive)"));
                0.01
            }
        };
        let max_wrong_rate = rate(c, "max_wrong_rate", max);
        let relaxed_max_wrong_rate = match raw.relaxed_max_wrong_rate {
            None => max_wrong_rate,
            Some(value) => {
                let relaxed = rate(c, "relaxed_max_wrong_rate", value);
                if relaxed < max_wrong_rate {
                    c.report(
                        at("relaxed_max_wrong_rate"),
                        format!(
                            "{relaxed} is below max_wrong_rate {max_wrong_rate}: relaxing may only raise it"
                        ),
                    );
                }
                relaxed
            }
        };
        for (field, set) in [
            ("threshold", raw.threshold.is_some()),
            ("relaxed_threshold", raw.relaxed_threshold.is_some()),
        ] {
            if set {
                c.report(
                    at(field),
                    "is chosen from calibration data when max_wrong_rate is set: set one or the other",
                );
            }
        }
        ErrorBudget {
            max_wrong_rate,
            relaxed_max_wrong_rate,
        }
    });
    if raw.relaxed_max_wrong_rate.is_some() && raw.max_wrong_rate.is_none() {
        c.report(at("relaxed_max_wrong_rate"), "needs max_wrong_rate");
    }
    let cacheable = raw.cacheable.unwrap_or(true);
    let shadow_rate = match (raw.shadow_rate, cacheable) {
        (Some(rate), false) if rate > 0.0 => {
            c.report(
                at("shadow_rate"),
                "never applies: the category is not cached (cacheable = false)",
            );
            0.0
        }
        (_, false) => 0.0,
        (rate, true) => c.fraction(&at("shadow_rate"), rate, DEFAULT_SHADOW_RATE),
    };
    for (i, example) in raw.examples.iter().enumerate() {
        if example.trim().is_empty() {
            c.report(format!("{}[{i}]", at("examples")), "must not be empty");
        }
    }
    let shared = raw.shared.unwrap_or(false);
    let selectable_by_header = raw.selectable_by_header.unwrap_or(false);
    if shared && !selectable_by_header && !raw.rules.headers.is_empty() {
        c.report(
            at("match.headers"),
            "selects a shared category by a header the client sets, so any caller could read \
             and write it; set selectable_by_header = true if that is intended",
        );
    }
    Category {
        name: name.to_owned(),
        guards,
        context,
        budget,
        shadow_rate,
        threshold,
        ttl,
        relaxed_threshold,
        relaxed_ttl,
        max_entries,
        max_entries_per_tenant,
        max_bytes,
        eviction,
        cacheable,
        shared,
        selectable_by_header,
        max_temperature,
        examples: raw.examples.clone(),
        rules: rules(c, &at("match"), &raw.rules),
    }
}

fn rules(c: &mut Checker, at: &str, raw: &RawMatch) -> MatchRules {
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
