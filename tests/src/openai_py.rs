//! The official `openai` Python SDK as the gateway's client: `tests/py/openai_client.py`
//! runs as a child process and answers one JSON line per request line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{Error, Result, paths};

/// Longest wait for one answer; the SDK's own timeout (60 s) fires first.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// A chat or completion request for the driver.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCall {
    pub api_key: String,
    pub model: String,
    /// `(role, content)` pairs; for the completions API the last content is the prompt.
    pub messages: Vec<(String, String)>,
    pub stream: bool,
    /// Extra request headers (`Cache-Control`, `x-cachet-category`, ...).
    pub headers: BTreeMap<String, String>,
    /// Extra body parameters (`max_tokens`, `temperature`, `stream_options`, ...).
    pub params: Map<String, Value>,
}

impl ChatCall {
    /// One user question to `test-model` with key `sk-tenant-a`, not streamed.
    pub fn new(question: &str) -> Self {
        Self {
            api_key: "sk-tenant-a".into(),
            model: "test-model".into(),
            messages: vec![("user".into(), question.into())],
            stream: false,
            headers: BTreeMap::new(),
            params: Map::new(),
        }
    }

    pub fn key(mut self, api_key: &str) -> Self {
        api_key.clone_into(&mut self.api_key);
        self
    }

    pub fn model(mut self, model: &str) -> Self {
        model.clone_into(&mut self.model);
        self
    }

    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Puts a system message first.
    pub fn system(mut self, content: &str) -> Self {
        self.messages.insert(0, ("system".into(), content.into()));
        self
    }

    /// Puts an earlier conversation turn before the question (after earlier turns).
    pub fn turn(mut self, role: &str, content: &str) -> Self {
        let before_question = self.messages.len().saturating_sub(1);
        self.messages
            .insert(before_question, (role.into(), content.into()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn param(mut self, name: &str, value: Value) -> Self {
        self.params.insert(name.into(), value);
        self
    }
}

/// What the SDK saw.
#[derive(Debug, Clone, Deserialize)]
pub struct CallOutcome {
    /// The call completed without an exception.
    pub ok: bool,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Response headers, names lowercase.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The answer text (for a stream: the concatenated deltas received, even if it broke).
    pub content: Option<String>,
    /// The response id (for a stream: the first chunk's).
    pub id: Option<String>,
    /// Every distinct chunk id of a stream.
    #[serde(default)]
    pub chunk_ids: Vec<String>,
    pub created: Option<u64>,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    /// Chunks received in a stream.
    #[serde(default)]
    pub chunks: usize,
    pub usage: Option<Value>,
    /// The `error` object of an API error (what the SDK parsed out of the body).
    pub error: Option<Value>,
    /// The raw body text of an API error.
    pub body_text: Option<String>,
    /// The SDK exception's class name, when one was raised.
    pub exception: Option<String>,
    /// The exception's message.
    pub message: Option<String>,
    /// Model ids of a `models` call, or vectors of an `embeddings` call.
    pub data: Option<Value>,
}

impl CallOutcome {
    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// `x-cachet-cache`.
    pub fn cache(&self) -> Option<&str> {
        self.header("x-cachet-cache")
    }

    /// The answer text; panics with the whole outcome when there is none.
    pub fn text(&self) -> &str {
        match &self.content {
            Some(content) if self.ok => content,
            _ => panic!("the call failed or had no content: {self:#?}"),
        }
    }
}

/// A running driver process.
#[derive(Debug)]
pub struct OpenAiPy {
    base_url: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// The version of the `openai` package, once the driver said hello.
    sdk_version: Option<String>,
}

impl OpenAiPy {
    /// Starts the driver for a gateway (or any server) at `base_url` (ending in `/v1`) and
    /// waits until it has imported the SDK.
    pub fn start(base_url: &str) -> Result<Self> {
        let mut driver = Self::spawn()?;
        driver.set_base_url(base_url);
        driver.wait_ready()?;
        Ok(driver)
    }

    /// Starts the driver without waiting for it and without a server yet: importing the SDK
    /// takes about as long as the gateway takes to load its model, so the two can overlap.
    /// Set the server with [`OpenAiPy::set_base_url`] before the first call.
    pub fn spawn() -> Result<Self> {
        let mut child = Command::new(paths::python()?)
            .arg(paths::openai_client_script())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "openai_client.py".into(),
                source,
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::Driver("child pipes missing".into()));
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[openai_client.py] {line}");
            }
        });
        Ok(Self {
            base_url: String::new(),
            child,
            stdin,
            lines,
            sdk_version: None,
        })
    }

    /// The server the calls go to (a base URL ending in `/v1`).
    pub fn set_base_url(&mut self, base_url: &str) {
        base_url.clone_into(&mut self.base_url);
    }

    /// Waits for the driver's hello line and returns the `openai` package's version.
    pub fn wait_ready(&mut self) -> Result<&str> {
        if self.sdk_version.is_none() {
            let hello: Value = serde_json::from_str(&self.read_line()?)?;
            let version = hello["openai"].as_str().unwrap_or_default().to_owned();
            self.sdk_version = Some(version);
        }
        Ok(self.sdk_version.as_deref().unwrap_or_default())
    }

    /// `client.chat.completions.create(...)`.
    pub fn chat(&mut self, call: &ChatCall) -> Result<CallOutcome> {
        self.call("chat", call)
    }

    /// `client.completions.create(...)` with the last message's content as the prompt.
    pub fn completion(&mut self, call: &ChatCall) -> Result<CallOutcome> {
        self.call("completion", call)
    }

    /// `client.models.list()`; `data` holds the model ids.
    pub fn models(&mut self, api_key: &str) -> Result<CallOutcome> {
        self.request(json!({"op": "models", "base_url": self.base_url, "api_key": api_key}))
    }

    /// `client.embeddings.create(...)`; `data` holds the vectors.
    pub fn embeddings(&mut self, api_key: &str, inputs: &[&str]) -> Result<CallOutcome> {
        self.request(json!({
            "op": "embeddings", "base_url": self.base_url, "api_key": api_key,
            "model": "test-embedder", "input": inputs,
        }))
    }

    fn call(&mut self, op: &str, call: &ChatCall) -> Result<CallOutcome> {
        let mut request = serde_json::to_value(call)?;
        request["op"] = json!(op);
        request["base_url"] = json!(self.base_url);
        request["messages"] = call
            .messages
            .iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        self.request(request)
    }

    fn request(&mut self, request: Value) -> Result<CallOutcome> {
        self.wait_ready()?;
        let line = request.to_string();
        writeln!(self.stdin, "{line}").map_err(Error::DriverIo)?;
        self.stdin.flush().map_err(Error::DriverIo)?;
        let answer = self.read_line()?;
        Ok(serde_json::from_str(&answer)?)
    }

    fn read_line(&mut self) -> Result<String> {
        self.lines.recv_timeout(ANSWER_TIMEOUT).map_err(|err| {
            let status = self.child.try_wait().ok().flatten();
            Error::Driver(format!("no answer ({err}); driver exit status {status:?}"))
        })
    }
}

impl Drop for OpenAiPy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
