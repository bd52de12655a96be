//! Cache policies: the config file's types and validation, per-request category
//! classification (rules, then embedding prototypes), and the load governor that relaxes
//! categories while the upstream is loaded. Pure logic: the only I/O is reading the config
//! file.

mod classify;
mod config;
mod context;
mod error;
mod governor;
mod guards;
mod prototypes;
mod raw;
mod secret;

pub use classify::{CATEGORY_HEADER, Classification, RequestFacts};
pub use config::{
    AdaptiveSettings, AdminSettings, Anonymous, CacheSettings, Category, ClassifierSettings,
    Config, DeviceSpec, EmbedderSettings, EngineSettings, EnvLookup, Eviction, IndexSettings,
    MatchRules, ServerSettings, StoreBreaker, StoreSettings, Threshold, UpstreamSettings,
    weak_token,
};
pub use context::{
    ContextSettings, ConversationView, FinalKind, Message, compare_context, conversation_view,
};
pub use error::{Error, Problem, Result};
pub use governor::{LoadGovernor, LoadSample, LoadState};
pub use guards::{Candidate, Guard, GuardSet, Refusal, check_guards, judge};
pub use prototypes::{PrototypeMatch, Prototypes};
pub use secret::Secret;
