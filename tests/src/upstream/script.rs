//! What the scripted upstream answers, and what it saw.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use serde_json::Value;

/// One scripted answer to a `/v1/chat/completions` or `/v1/completions` call.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `Answer {n} to: {question}`, where `n` counts the upstream's completion calls and the
    /// question is the last user message (or the prompt). Two calls never answer alike, so a
    /// test can tell a cached answer from a fresh one.
    Echo,
    /// This text, finished with `stop`.
    Text(String),
    /// This text, finished with this `finish_reason` (`length`, `content_filter`, ...).
    Finish { text: String, finish_reason: String },
    /// An HTTP error with an OpenAI-shaped body.
    Error {
        status: u16,
        message: String,
        kind: String,
        code: Option<String>,
    },
    /// The body breaks off after this text: no `finish_reason`, no `[DONE]`, the connection
    /// is cut mid-body (stream or not).
    Cut(String),
    /// A stream that ends cleanly with `[DONE]` but never sends a `finish_reason`.
    Unfinished(String),
    /// A stream that sends `before`, then waits until the test opens `gate`, then sends
    /// `after` and finishes with `stop` (a plain answer waits for the gate first). A client
    /// that sees `before` while the gate is closed proves the stream is relayed as it arrives.
    Gated {
        before: String,
        after: String,
        gate: Gate,
    },
    /// The inner reply once the test opens `gate` (for requests that must stay in flight
    /// until the test has seen something, e.g. every coalesced follower arrive).
    Held(Gate, Box<Reply>),
    /// The inner reply after a pause; a streamed reply also pauses this long between chunks
    /// (for requests that must overlap).
    Delayed(Duration, Box<Reply>),
    /// The inner reply with the headers a real API sends only to the caller it answers,
    /// naming that caller's bearer key: `set-cookie: session=KEY`,
    /// `x-ratelimit-remaining-requests: KEY`, `openai-organization: org-KEY` (outermost only).
    WithCallerHeaders(Box<Reply>),
    /// A `307 Temporary Redirect` to this URL.
    Redirect(String),
}

impl Reply {
    /// A 429 rate-limit error as OpenAI sends it.
    pub fn rate_limited() -> Self {
        Self::Error {
            status: 429,
            message: "Rate limit reached for test-model (scripted)".into(),
            kind: "requests".into(),
            code: Some("rate_limit_exceeded".into()),
        }
    }

    /// A 500 server error as OpenAI sends it.
    pub fn server_error() -> Self {
        Self::Error {
            status: 500,
            message: "The server had an error while processing your request (scripted)".into(),
            kind: "server_error".into(),
            code: None,
        }
    }
}

/// A gate a scripted reply waits at until the test opens it.
#[derive(Debug, Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    /// Opens the gate for good.
    pub fn open(&self) {
        self.0.close();
    }

    /// Waits until the gate is open.
    pub(crate) async fn passed(&self) {
        // A closed semaphore fails every acquire at once: that is the open gate.
        let _ = self.0.acquire().await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body, if there was one and it parsed.
    pub body: Option<Value>,
    /// All headers, names lowercase (a repeated header keeps its last value).
    pub headers: BTreeMap<String, String>,
}

/// The upstream's mutable state, behind a lock.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pub(crate) queue: VecDeque<Reply>,
    pub(crate) fallback: Option<Reply>,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) completion_calls: u64,
}

impl Script {
    /// The next reply: the queue's head, else the fallback, else [`Reply::Echo`].
    pub(crate) fn next_reply(&mut self) -> Reply {
        self.queue
            .pop_front()
            .or_else(|| self.fallback.clone())
            .unwrap_or(Reply::Echo)
    }

    pub(crate) fn calls(&self, path: &str) -> usize {
        self.requests.iter().filter(|r| r.path == path).count()
    }
}
