//! Cache policies: the config file's types and validation, per-request category
//! classification (rules, then embedding prototypes), and the load governor that relaxes
//! categories while the upstream is loaded. Pure logic: the only I/O is reading the config
//! file.

mod calibrate;
mod classify;
mod config;
mod context;
mod error;
mod governor;
mod guards;
mod prototypes;
mod raw;
mod secret;

pub use calibrate::{
    Calibrated, CalibrationPoint, OperatingPoint, calibrate, cutoff_grid, lower_bound,
    threshold_grid, upper_bound,
};
pub use classify::{CATEGORY_HEADER, Classification, RequestFacts};
pub use config::{
    AdaptiveSettings, AdminSettings, Anonymous, CacheSettings, CalibrationSettings, Category,
    ClassifierSettings, Config, DEFAULT_CONFIDENCE, DEFAULT_SHADOW_RATE, DeviceSpec,
    EmbedderSettings, EngineSettings, EnvLookup, ErrorBudget, Eviction, IndexSettings, MatchRules,
    ServerSettings, ShadowSettings, StoreBreaker, StoreSettings, Threshold, UpstreamSettings,
    weak_token,
};
pub use context::{
    ContextSettings, ConversationView, FinalKind, Message, compare_context, conversation_view,
};
pub use error::{Error, Problem, Result};
pub use governor::{LoadGovernor, LoadSample, LoadState};
pub use guards::{Candidate, Guard, GuardSet, Refusal, RefusalReason, check_guards, judge};
pub use prototypes::{PrototypeMatch, Prototypes};
pub use secret::Secret;
