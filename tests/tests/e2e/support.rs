//! What every scenario needs: a scripted upstream, a gateway in front of it, the SDK driver,
//! and raw HTTP for what the SDK would hide.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cachet_tests::{ChatCall, Gateway, GatewayConfig, OpenAiPy, ScriptedUpstream};
use serde_json::Value;

/// Questions and paraphrases, with their all-MiniLM-L6-v2 (int8) cosine similarity measured
/// with the fetch script's reference recipe (mean pooling over the attention mask, L2
/// normalisation). Paraphrases are ≥ 0.95, so they clear any threshold up to that; unrelated
/// questions are ≤ 0.40, below the default `general` threshold of 0.55
/// (`paraphrases.rs` checks both with the project's embedder).
pub const EVEREST: &str = "How tall is Mount Everest?";
/// Cosine 0.975 to [`EVEREST`].
pub const EVEREST_PARAPHRASE: &str = "What is the height of Mount Everest?";
pub const FRANCE: &str = "What is the capital of France?";
/// Cosine 0.962 to [`FRANCE`].
pub const FRANCE_PARAPHRASE: &str = "What is the capital city of France?";
/// Cosine 0.661 to [`FRANCE`]: close in wording, different answer; above the default
/// threshold, so only the entity hit guard keeps it from being served France's answer.
pub const GERMANY: &str = "What is the capital of Germany?";
pub const PHOTOSYNTHESIS: &str = "Explain photosynthesis in simple terms.";
/// Cosine 0.979 to [`PHOTOSYNTHESIS`].
pub const PHOTOSYNTHESIS_PARAPHRASE: &str = "Can you explain photosynthesis in simple terms?";
pub const BOILING: &str = "What is the boiling point of water at sea level?";
/// Cosine 0.991 to [`BOILING`].
pub const BOILING_PARAPHRASE: &str = "At sea level, what is the boiling point of water?";
/// Cosine ≤ 0.11 to all of the above.
pub const SOURDOUGH: &str = "How do I bake sourdough bread at home?";

/// Longest wait for the gateway to store an answer it has sent.
const FILL_TIMEOUT: Duration = Duration::from_secs(20);

/// Look-alike questions whose answers differ: cosine ≥ 0.90 (all far above the default
/// threshold), told apart only by the hit guard named third.
pub const LOOK_ALIKES: [(&str, &str, &str); 6] = [
    (
        "Is coffee good for your health?",
        "Is coffee not good for your health?",
        "negation",
    ),
    (
        "What is the best way to store fresh basil?",
        "What is the worst way to store fresh basil?",
        "antonyms",
    ),
    (
        "How long should I boil an egg for a soft yolk?",
        "How long should I boil an egg for a hard yolk?",
        "contrast",
    ),
    (
        "How do I convert Celsius to Fahrenheit?",
        "How do I convert Fahrenheit to Celsius?",
        "roles",
    ),
    (
        "How many calories are in one apple?",
        "How many calories are in two apples?",
        "numbers",
    ),
    (
        "How do I convert 5 miles to kilometers?",
        "How do I convert 50 miles to kilometers?",
        "numbers",
    ),
];

pub const KEY_A: &str = "sk-tenant-a";
pub const KEY_B: &str = "sk-tenant-b";

/// Upstream + gateway + SDK driver, torn down in reverse order on drop.
pub struct Stack {
    pub client: OpenAiPy,
    pub gateway: Gateway,
    pub upstream: ScriptedUpstream,
}

impl Stack {
    /// The default config in front of a fresh scripted upstream.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// The default config, changed by `edit`, in front of a fresh scripted upstream.
    pub fn start_with(edit: impl FnOnce(&mut GatewayConfig)) -> Self {
        // The driver imports the SDK while the gateway loads its model.
        let mut client = OpenAiPy::spawn().expect("start the python driver");
        let upstream = ScriptedUpstream::start().expect("start the scripted upstream");
        let mut config =
            GatewayConfig::default_with_upstream(&upstream.base_url()).expect("default config");
        // One ONNX Runtime thread: several gateways share two cores during a test run, and
        // idle pool threads spin-wait.
        config.set("embedder.threads", 1).expect("embedder section");
        edit(&mut config);
        let gateway = Gateway::start(&config).expect("start the gateway");
        client.set_base_url(&gateway.api_url());
        client.wait_ready().expect("python driver ready");
        Self {
            client,
            gateway,
            upstream,
        }
    }

    /// A chat call through the SDK; panics if the driver itself fails.
    pub fn chat(&mut self, call: &ChatCall) -> cachet_tests::CallOutcome {
        self.client.chat(call).expect("python driver")
    }

    /// A chat call whose answer the gateway must store; returns once it is stored.
    ///
    /// The gateway fills the cache off the response path (in a task spawned when the upstream
    /// body ends, which embeds the question first when the lookup did not), so a client that
    /// asks again at once can still miss. The tests wait on `cachet_fills_total` instead of
    /// sleeping, which also checks that the fill happens.
    pub fn chat_stored(&mut self, call: &ChatCall) -> cachet_tests::CallOutcome {
        let before = self.fills();
        let outcome = self.chat(call);
        self.wait_for_fills(before + 1.0, &outcome);
        outcome
    }

    /// The `completion` twin of [`Stack::chat_stored`].
    pub fn completion_stored(&mut self, call: &ChatCall) -> cachet_tests::CallOutcome {
        let before = self.fills();
        let outcome = self.client.completion(call).expect("python driver");
        self.wait_for_fills(before + 1.0, &outcome);
        outcome
    }

    /// Answers stored so far (`cachet_fills_total` over all categories).
    pub fn fills(&self) -> f64 {
        let metrics = self.raw().get("/metrics");
        parse_metrics(&metrics.body)
            .iter()
            .filter(|(series, _)| series.starts_with("cachet_fills_total"))
            .map(|(_, value)| value)
            .sum()
    }

    /// Waits until `cachet_fills_total` reaches `count`; `context` is shown if it doesn't.
    pub fn wait_for_fills(&self, count: f64, context: &dyn std::fmt::Debug) {
        let deadline = Instant::now() + FILL_TIMEOUT;
        while self.fills() < count {
            assert!(
                Instant::now() < deadline,
                "the answer was not stored within {FILL_TIMEOUT:?}: {context:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Raw HTTP to this gateway.
    pub fn raw(&self) -> Raw {
        Raw::new(self.gateway.base_url())
    }
}

impl Drop for Stack {
    /// Every scenario also checks that the gateway survived it.
    fn drop(&mut self) {
        if !std::thread::panicking() && !self.gateway.is_running() {
            panic!(
                "the gateway exited during the test; its log ends with:\n{}",
                self.gateway.log_tail()
            );
        }
    }
}

/// An HTTP response read whole.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    /// The body as far as it arrived.
    pub body: String,
    /// Why the body broke off, if it did.
    pub body_error: Option<String>,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not json ({err}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// `x-cachet-cache`: `hit-exact`, `hit-semantic`, `miss` or `bypass`.
    pub fn cache(&self) -> Option<&str> {
        self.header("x-cachet-cache")
    }

    /// The answer's text: a chat body's message content, or a stream's deltas joined.
    pub fn content(&self) -> String {
        if self.body.trim_start().starts_with("data:") {
            return stream_content(&self.body);
        }
        let body = self.json();
        body.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no message content: {body}"))
            .to_owned()
    }

    /// Asserts the body is an OpenAI-shaped error: `{"error": {"message", "type", "code",
    /// "param"}}` with a non-empty message; returns the error object.
    pub fn assert_openai_error(&self) -> Value {
        let body = self.json();
        let error = body
            .get("error")
            .unwrap_or_else(|| panic!("no `error` object: {body}"))
            .clone();
        let message = error["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "error without message: {body}");
        assert!(error["type"].is_string(), "error without type: {body}");
        for key in ["code", "param"] {
            assert!(error.get(key).is_some(), "error without `{key}`: {body}");
        }
        error
    }
}

/// A small blocking HTTP client over reqwest, so that the scenarios stay synchronous.
pub struct Raw {
    base_url: String,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Raw {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: reqwest::Client::new(),
        }
    }

    pub fn get(&self, path: &str) -> RawResponse {
        self.send(self.client.get(format!("{}{path}", self.base_url)))
    }

    /// POSTs `body` as `application/json` with a bearer key.
    pub fn post(&self, path: &str, key: &str, body: impl Into<reqwest::Body>) -> RawResponse {
        self.post_with(path, key, body, &[])
    }

    /// Like [`Raw::post`], with extra request headers.
    pub fn post_with(
        &self,
        path: &str,
        key: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> RawResponse {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    /// POSTs `body` as `application/json` with no `Authorization` header at all.
    pub fn post_keyless(&self, path: &str, body: impl Into<reqwest::Body>) -> RawResponse {
        self.send(
            self.client
                .post(format!("{}{path}", self.base_url))
                .header("content-type", "application/json")
                .body(body),
        )
    }

    /// GETs `path` with a bearer token.
    pub fn get_with_token(&self, path: &str, token: &str) -> RawResponse {
        self.send(
            self.client
                .get(format!("{}{path}", self.base_url))
                .bearer_auth(token),
        )
    }

    /// POSTs `body` and reads the answer as it arrives. Once the body so far contains `marker`
    /// (or `patience` passed without it), calls `then` and reads the rest. Returns the response
    /// and whether the marker arrived before `then` was called.
    pub fn post_watching(
        &self,
        path: &str,
        key: &str,
        body: String,
        marker: &str,
        patience: Duration,
        then: impl FnOnce(),
    ) -> (RawResponse, bool) {
        let request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        self.runtime.block_on(async {
            let mut response = request.send().await.expect("http request");
            let status = response.status().as_u16();
            let headers = header_map(response.headers());
            let mut received = Vec::new();
            let mut body_error = None;
            let deadline = tokio::time::Instant::now() + patience;
            let mut marker_seen = false;
            while !marker_seen {
                match tokio::time::timeout_at(deadline, response.chunk()).await {
                    Ok(Ok(Some(chunk))) => received.extend_from_slice(&chunk),
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(err)) => {
                        body_error = Some(format!("{err:?}"));
                        break;
                    }
                }
                marker_seen = String::from_utf8_lossy(&received).contains(marker);
            }
            then();
            while body_error.is_none() {
                match response.chunk().await {
                    Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                    Ok(None) => break,
                    Err(err) => body_error = Some(format!("{err:?}")),
                }
            }
            let response = RawResponse {
                status,
                headers,
                body: String::from_utf8_lossy(&received).into_owned(),
                body_error,
            };
            (response, marker_seen)
        })
    }

    fn send(&self, request: reqwest::RequestBuilder) -> RawResponse {
        self.runtime
            .block_on(async { read_raw(request.send().await.expect("http request")).await })
    }
}

/// A response's status, headers and whole body, keeping a body read error instead of failing.
pub async fn read_raw(response: reqwest::Response) -> RawResponse {
    let status = response.status().as_u16();
    let headers = header_map(response.headers());
    let (body, body_error) = match response.bytes().await {
        Ok(bytes) => (String::from_utf8_lossy(&bytes).into_owned(), None),
        Err(err) => (String::new(), Some(format!("{err:?}"))),
    };
    RawResponse {
        status,
        headers,
        body,
        body_error,
    }
}

fn header_map(headers: &reqwest::header::HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// The content deltas of a chat stream, joined; panics unless the stream has a
/// `finish_reason` and ends with `[DONE]`.
pub fn stream_content(body: &str) -> String {
    use cachet_tests::sse::{self, SseData};
    let events = sse::parse(body);
    assert_eq!(
        events.last(),
        Some(&SseData::Done),
        "stream without [DONE]: {body}"
    );
    assert!(
        sse::finish_reason(&events).is_some(),
        "stream without finish_reason: {body}"
    );
    sse::streamed_text(&events)
}

/// Samples of a Prometheus text exposition: `name{labels}` → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a prometheus sample: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a prometheus value: {line:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// The similarity header as a number.
pub fn similarity(outcome: &cachet_tests::CallOutcome) -> f64 {
    outcome
        .header("x-cachet-similarity")
        .unwrap_or_else(|| panic!("no x-cachet-similarity on a hit: {outcome:#?}"))
        .parse()
        .unwrap_or_else(|_| panic!("x-cachet-similarity is not a number: {outcome:#?}"))
}
