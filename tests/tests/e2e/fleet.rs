//! What the scenarios with several gateways, a shared store or many clients need: gateways on
//! one Redis, chat requests over raw HTTP that say how they were answered, the admin API, and
//! polling instead of sleeping.

use std::time::{Duration, Instant};

use cachet_tests::{Gateway, GatewayConfig, RedisServer, ScriptedUpstream};
use serde_json::{Value, json};

use crate::support::{Raw, RawResponse};

/// The admin token of every gateway these scenarios start.
pub const ADMIN_TOKEN: &str = "fleet-4b9e1d7a2c6f8305e1b7d9a3";
/// How soon a change made through one gateway must show on another.
pub const PROPAGATION: Duration = Duration::from_secs(1);
/// Longest wait for a gateway to store an answer it has sent.
const FILL_TIMEOUT: Duration = Duration::from_secs(20);
/// The chat route.
const CHAT: &str = "/v1/chat/completions";

/// The default config in front of `upstream`, with one embedder thread (several gateways
/// share two cores) and the admin API on.
pub fn base_config(upstream: &ScriptedUpstream) -> GatewayConfig {
    let mut config =
        GatewayConfig::default_with_upstream(&upstream.base_url()).expect("default config");
    config.set("embedder.threads", 1).expect("embedder section");
    config.admin_token(ADMIN_TOKEN);
    config
}

/// Starts one gateway per config, all at once: each loads its model meanwhile.
pub fn start_gateways(configs: Vec<GatewayConfig>) -> Vec<Gateway> {
    let starts: Vec<_> = configs
        .into_iter()
        .map(|config| std::thread::spawn(move || Gateway::start(&config)))
        .collect();
    starts
        .into_iter()
        .map(|start| {
            start
                .join()
                .expect("gateway start thread")
                .expect("start the gateway")
        })
        .collect()
}

/// A scripted upstream and a Redis that gateways share.
pub struct Fleet {
    pub upstream: ScriptedUpstream,
    pub redis: RedisServer,
}

impl Fleet {
    pub fn start() -> Self {
        Self {
            upstream: ScriptedUpstream::start().expect("start the scripted upstream"),
            redis: RedisServer::start().expect("start redis-server"),
        }
    }

    /// A gateway config on this upstream and this Redis.
    pub fn config(&self) -> GatewayConfig {
        let mut config = base_config(&self.upstream);
        config.redis_store(&self.redis.url(), "cachet");
        config
    }

    /// `count` gateways on [`Fleet::config`], started at once.
    pub fn gateways(&self, count: usize) -> Vec<Gateway> {
        start_gateways(vec![self.config(); count])
    }
}

/// The JSON body of a one-message chat request.
pub fn chat_body(question: &str, stream: bool) -> String {
    json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": question}],
        "stream": stream,
    })
    .to_string()
}

/// Asks `question` as tenant `key`.
pub fn ask(gateway: &Gateway, key: &str, question: &str) -> RawResponse {
    let response = Raw::new(gateway.base_url()).post(CHAT, key, chat_body(question, false));
    assert_eq!(response.status, 200, "{response:#?}");
    response
}

/// Asks with `Cache-Control: no-store`: the gateway looks the question up but stores nothing,
/// so asking again and again (polling) never fills the cache by itself.
pub fn peek(gateway: &Gateway, key: &str, question: &str) -> RawResponse {
    let response = Raw::new(gateway.base_url()).post_with(
        CHAT,
        key,
        chat_body(question, false),
        &[("cache-control", "no-store")],
    );
    assert_eq!(response.status, 200, "{response:#?}");
    response
}

/// Answers this gateway has stored so far (`cachet_fills_total`).
pub fn fills(gateway: &Gateway) -> f64 {
    gateway
        .metrics()
        .expect("read /metrics")
        .sum("cachet_fills_total")
}

/// Asks `question` and waits until the gateway has stored the answer (it stores after
/// answering, so an immediate second request could still miss).
pub fn ask_stored(gateway: &Gateway, key: &str, question: &str) -> RawResponse {
    let before = fills(gateway);
    let response = ask(gateway, key, question);
    assert_eq!(response.cache(), Some("miss"), "{response:#?}");
    let deadline = Instant::now() + FILL_TIMEOUT;
    while fills(gateway) < before + 1.0 {
        assert!(
            Instant::now() < deadline,
            "the answer was not stored within {FILL_TIMEOUT:?}: {response:#?}\n{}",
            gateway.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    response
}

/// Peeks until `x-cachet-cache` is `expected`; panics with the last answer after `timeout`.
/// Returns the matching answer and how long it took.
pub fn peek_until(
    gateway: &Gateway,
    key: &str,
    question: &str,
    expected: &str,
    timeout: Duration,
) -> (RawResponse, Duration) {
    let started = Instant::now();
    loop {
        let response = peek(gateway, key, question);
        if response.cache() == Some(expected) {
            return (response, started.elapsed());
        }
        assert!(
            started.elapsed() < timeout,
            "{question:?} ({key}) was not {expected} within {timeout:?}; last answer: \
             {response:#?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The entries the gateway's indexes hold: `/healthz`'s per-category counts, summed.
pub fn indexed_entries(gateway: &Gateway) -> u64 {
    let health = gateway.healthz().expect("read /healthz");
    let categories = health
        .body
        .get("categories")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("/healthz has no categories: {:?}", health.body));
    categories
        .values()
        .map(|category| category["entries"].as_u64().unwrap_or(0))
        .sum()
}

/// Polls [`indexed_entries`] until it is `expected`; panics after `timeout`.
pub fn wait_for_indexed(gateway: &Gateway, expected: u64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let count = indexed_entries(gateway);
        if count == expected {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the gateway indexes {count} entries, not {expected}, after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `POST /admin/invalidate` with `body`; returns `deleted`.
pub fn invalidate(gateway: &Gateway, body: Value) -> u64 {
    let response = admin_post(gateway, "/admin/invalidate", ADMIN_TOKEN, body.clone());
    assert_eq!(response.status, 200, "invalidate {body}: {response:#?}");
    response.json()["deleted"]
        .as_u64()
        .unwrap_or_else(|| panic!("no `deleted` count: {response:#?}"))
}

/// A POST to an admin route with this bearer token.
pub fn admin_post(gateway: &Gateway, path: &str, token: &str, body: Value) -> RawResponse {
    Raw::new(gateway.base_url()).post(path, token, body.to_string())
}

/// The 16-hex entry id an answer is (or will be) stored under.
pub fn entry_id(response: &RawResponse) -> String {
    let id = response
        .header("x-cachet-entry")
        .unwrap_or_else(|| panic!("no x-cachet-entry: {response:#?}"))
        .to_owned();
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "x-cachet-entry is not 16 hex digits: {id:?}"
    );
    id
}
