//! Harness for the end-to-end tests: the real `cachet` binary, a scripted upstream and the
//! official `openai` Python SDK as the client.
//!
//! The tests drive the gateway binary that `cargo build -p cachet-gateway` wrote into the
//! same target directory as the test executable, so the test command is
//! `cargo build -p cachet-gateway && cargo test -p cachet-tests` (cargo cannot build another
//! package's binary for an integration test). `CACHET_BIN` overrides the binary and
//! `CACHET_PYTHON` the Python interpreter (default `assets/venv/bin/python`, made by
//! `scripts/fetch-assets`).

// Tests may unwrap: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod error;
pub mod gateway;
pub mod ks;
pub mod openai_py;
pub mod paths;
pub mod ports;
pub mod probe;
pub mod process;
pub mod redis;
pub mod signal;
pub mod sse;
pub mod upstream;

pub use config::GatewayConfig;
pub use error::{Error, Result};
pub use gateway::Gateway;
pub use openai_py::{CallOutcome, ChatCall, OpenAiPy};
pub use probe::{Health, Metrics};
pub use redis::RedisServer;
pub use upstream::{Reply, ScriptedUpstream};
