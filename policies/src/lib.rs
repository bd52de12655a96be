//! Cache policies: the config file's types and validation, and per-request category
//! classification. Pure logic: the only I/O is reading the config file.

mod classify;
mod config;
mod context;
mod error;
mod guards;
mod raw;

pub use classify::{Classification, RequestFacts};
pub use config::{
    CacheSettings, Category, Config, DeviceSpec, EmbedderSettings, EngineSettings, IndexSettings,
    MatchRules, ServerSettings, StoreSettings, Threshold, UpstreamSettings,
};
pub use context::{
    ContextSettings, ConversationView, FinalKind, Message, compare_context, conversation_view,
};
pub use error::{Error, Problem, Result};
pub use guards::{Candidate, Guard, GuardSet, Refusal, check_guards, judge};
