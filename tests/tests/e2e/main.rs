//! End-to-end tests: the real `cachet` binary between the official `openai` Python SDK and a
//! scripted OpenAI-compatible upstream, all over real HTTP on 127.0.0.1.
//!
//! One test binary with one module per area, so the suite links once. Build the gateway
//! first: `cargo build -p cachet-gateway && cargo test -p cachet-tests` (see the crate docs).

// Tests may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used)]

mod adaptive;
mod admin;
mod cache_control;
mod cache_flow;
mod category_policies;
mod cli;
mod concurrency;
mod eviction;
mod fleet;
mod hit_guards;
mod http_surface;
mod paraphrases;
mod policy_support;
mod prototypes;
mod reload;
mod replicas;
mod restarts;
mod sdk_upstream;
mod security;
mod shadow;
mod store_faults;
mod support;
mod tenancy_audit;
mod tenants;
mod upstream_failures;
