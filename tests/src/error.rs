//! The error type of the test harness.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while setting up an end-to-end test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} not found at {path}: {hint}")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("failed to start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{program} exited before it was ready ({status}); its stderr ends with:\n{stderr_tail}"
    )]
    ExitedEarly {
        program: String,
        status: String,
        stderr_tail: String,
    },
    #[error("{program} printed no ready line within {timeout:?}")]
    NotReady { program: String, timeout: Duration },
    #[error("failed to bind a local port")]
    Bind(#[source] std::io::Error),
    #[error("{path} is not valid toml")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config has no section that holds key {key}")]
    ConfigKey { key: String },
    #[error("python driver failed: {0}")]
    Driver(String),
    #[error("python driver pipe failed")]
    DriverIo(#[source] std::io::Error),
    #[error("invalid json")]
    Json(#[from] serde_json::Error),
    #[error("redis on port {port}: {reason}")]
    Redis { port: u16, reason: String },
    #[error("failed to send {signal} to process {pid}")]
    Signal {
        pid: u32,
        signal: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not exit within {timeout:?}")]
    NotExited { program: String, timeout: Duration },
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    HttpStatus {
        url: String,
        status: u16,
        body: String,
    },
    #[error("failed to build a tokio runtime")]
    Runtime(#[source] std::io::Error),
    #[error("not a prometheus sample: {line:?}")]
    Metrics { line: String },
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
