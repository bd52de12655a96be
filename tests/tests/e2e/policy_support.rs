//! What the live-policy scenarios (reload, admin, adaptive load, prototypes, eviction) share:
//! a gateway in front of a scripted upstream, driven over plain HTTP, whose config file the
//! test can rewrite while it runs.
//!
//! No Python driver here: these scenarios are about policy, not the SDK, and starting one
//! costs seconds on two shared cores.

use std::time::{Duration, Instant};

use cachet_tests::{Gateway, GatewayConfig, Metrics, ScriptedUpstream};
use serde_json::{Value, json};
use toml::Table;

use crate::support::{KEY_A, RawResponse, read_raw};

/// The admin token of the scenarios that enable the admin API.
pub const ADMIN_TOKEN: &str = "e2e-7c1f9a3d5b80e24f6a1c9d3e";

/// Longest wait for the gateway to store an answer it has sent.
const FILL_TIMEOUT: Duration = Duration::from_secs(20);

/// Upstream + gateway + an HTTP client, torn down in reverse order on drop.
pub struct PolicyStack {
    pub gateway: Gateway,
    pub upstream: ScriptedUpstream,
    config: GatewayConfig,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl PolicyStack {
    /// The default config, changed by `edit`, in front of a fresh scripted upstream.
    pub fn start(edit: impl FnOnce(&mut GatewayConfig)) -> Self {
        let upstream = ScriptedUpstream::start().expect("start the scripted upstream");
        let mut config =
            GatewayConfig::default_with_upstream(&upstream.base_url()).expect("default config");
        // One ONNX Runtime thread: several gateways share two cores during a test run.
        config.set("embedder.threads", 1).expect("embedder section");
        // The default file snapshots to one path under the repository; gateways of parallel
        // tests must not restore each other's entries from it.
        let _ = config.remove("store.snapshot");
        edit(&mut config);
        let gateway = Gateway::start(&config).expect("start the gateway");
        Self {
            gateway,
            upstream,
            config,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: reqwest::Client::new(),
        }
    }

    /// A plain chat request for `question` as tenant [`KEY_A`].
    pub fn chat(&self, question: &str) -> RawResponse {
        self.chat_with(question, &[])
    }

    /// Like [`PolicyStack::chat`], naming its category with the `x-cachet-category` header.
    pub fn chat_in(&self, category: &str, question: &str) -> RawResponse {
        self.chat_with(question, &[("x-cachet-category", category)])
    }

    /// A chat request with extra headers; panics unless the gateway answers 200.
    pub fn chat_with(&self, question: &str, headers: &[(&str, &str)]) -> RawResponse {
        let response = self.post_chat(question, headers);
        assert_eq!(response.status, 200, "{question:?}: {response:#?}");
        response
    }

    /// A chat request whatever the answer's status (an upstream error passes through).
    pub fn post_chat(&self, question: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.post_chat_as(KEY_A, question, headers)
    }

    /// [`PolicyStack::post_chat`] as tenant `key`.
    pub fn post_chat_as(&self, key: &str, question: &str, headers: &[(&str, &str)]) -> RawResponse {
        let body = json!({
            "model": "test-model",
            "messages": [{"role": "user", "content": question}],
        });
        self.send(
            reqwest::Method::POST,
            "/v1/chat/completions",
            Some(key),
            headers,
            Some(body.to_string()),
        )
    }

    /// A chat request whose answer the gateway must store; returns once it is stored.
    pub fn chat_stored(&self, question: &str) -> RawResponse {
        self.stored(|| self.chat(question))
    }

    /// [`PolicyStack::chat_in`], waiting until the answer is stored.
    pub fn chat_in_stored(&self, category: &str, question: &str) -> RawResponse {
        self.stored(|| self.chat_in(category, question))
    }

    fn stored(&self, call: impl FnOnce() -> RawResponse) -> RawResponse {
        let before = self.fills();
        let response = call();
        assert_eq!(response.cache(), Some("miss"), "{response:#?}");
        self.wait_for("the answer to be stored", FILL_TIMEOUT, || {
            self.fills() > before
        });
        response
    }

    /// Answers stored so far (`cachet_fills_total` over all categories).
    pub fn fills(&self) -> f64 {
        self.metrics().sum("cachet_fills_total")
    }

    /// `/metrics`, parsed.
    pub fn metrics(&self) -> Metrics {
        self.gateway.metrics().expect("GET /metrics")
    }

    /// An admin request with the right token.
    pub fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> RawResponse {
        self.admin_as(Some(ADMIN_TOKEN), method, path, body)
    }

    /// An admin request with this bearer token, or none.
    pub fn admin_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> RawResponse {
        self.send(method, path, token, &[], body.map(|b| b.to_string()))
    }

    /// `GET /admin/stats`, which must answer 200.
    pub fn stats(&self) -> Value {
        let response = self.admin(reqwest::Method::GET, "/admin/stats", None);
        assert_eq!(response.status, 200, "{response:#?}");
        response.json()
    }

    /// The `/admin/stats` object of category `name`.
    pub fn category_stats(&self, name: &str) -> Value {
        let stats = self.stats();
        stats["categories"]
            .as_array()
            .unwrap_or_else(|| panic!("no categories array in stats: {stats}"))
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no category {name:?} in stats: {stats}"))
            .clone()
    }

    /// The config the gateway was started with, as the test last wrote it.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Changes the config and writes it over the gateway's file. The new file is written
    /// beside the old one and renamed over it, so the gateway never reads half a file.
    pub fn rewrite_config(&mut self, edit: impl FnOnce(&mut GatewayConfig)) {
        edit(&mut self.config);
        self.write_raw_config(&self.config.to_toml());
    }

    /// Writes `text` over the gateway's config file (atomically), leaving the stack's own
    /// copy of the config as it was.
    pub fn write_raw_config(&self, text: &str) {
        let path = self.gateway.config_path();
        let staging = path.with_extension("toml.next");
        std::fs::write(&staging, text).expect("write the new config");
        std::fs::rename(&staging, path).expect("replace the config");
    }

    /// Polls `ready` every 50 ms until it holds; panics after `timeout` with the gateway's log.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}; the gateway's log ends with:\n{}",
                self.gateway.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> RawResponse {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.gateway.base_url()))
            .timeout(Duration::from_secs(30));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        self.runtime
            .block_on(async { read_raw(request.send().await.expect("http request")).await })
    }
}

impl Drop for PolicyStack {
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

/// A config section written as TOML text (`threshold = 0.9` and so on).
pub fn section(text: &str) -> Table {
    toml::from_str(text).unwrap_or_else(|err| panic!("bad test section ({err}): {text}"))
}

/// The value of the series of metric `name` that carries `label` (`category="general"`).
pub fn labelled(metrics: &Metrics, name: &str, label: &str) -> Option<f64> {
    metrics
        .0
        .iter()
        .find(|(series, _)| {
            series.split('{').next() == Some(name)
                && series
                    .split_once('{')
                    .is_some_and(|(_, labels)| labels.contains(label))
        })
        .map(|(_, value)| *value)
}

/// Asserts `value` is `expected`, allowing for the `f32` a threshold is kept in.
#[track_caller]
pub fn assert_close(value: Option<f64>, expected: f64, context: &dyn std::fmt::Display) {
    assert!(
        value.is_some_and(|v| (v - expected).abs() < 1e-5),
        "expected {expected}, got {value:?}: {context}"
    );
}

/// Whether an answer came from the cache.
pub fn is_hit(response: &RawResponse) -> bool {
    response.cache().unwrap_or_default().starts_with("hit")
}

/// The `x-cachet-category` response header.
pub fn category_of(response: &RawResponse) -> &str {
    response
        .header("x-cachet-category")
        .unwrap_or_else(|| panic!("no x-cachet-category header: {response:#?}"))
}
