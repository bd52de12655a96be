//! Cache policies: the config file's types and validation, and per-request category
//! classification. Pure logic: the only I/O is reading the config file.

mod classify;
mod config;
mod error;
mod raw;

pub use classify::{Classification, RequestFacts};
pub use config::{
    CacheSettings, Category, Config, DeviceSpec, EmbedderSettings, IndexSettings, MatchRules,
    ServerSettings, StoreSettings, Threshold, UpstreamSettings,
};
pub use error::{Error, Problem, Result};
