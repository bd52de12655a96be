//! The whole stack from the shipped default config: the gateway starts the bundled engine
//! serving the SmolLM2 checkpoint, and a chat request through the gateway gets a real answer
//! from the model, then the same question is a cache hit; and the engine's prefix cache is
//! partitioned by the gateway's tenants.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use cachet_gateway::keys::Tenant;
use cachet_tests::{ChatCall, Gateway, GatewayConfig, OpenAiPy};

#[test]
fn default_config_serves_real_answers_from_the_bundled_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut config =
        GatewayConfig::from_file(&root.join("configs/default.toml")).expect("default config");
    config.set("server.listen", "127.0.0.1:0").expect("listen");
    let gateway = Gateway::start(&config).expect("gateway with the bundled engine starts");
    let mut client = OpenAiPy::start(&gateway.api_url()).expect("openai client");

    let question = ChatCall::new("What is the capital of France?")
        .model("smollm2-135m")
        .param("temperature", serde_json::json!(0))
        .param("max_tokens", serde_json::json!(24));
    let first = client.chat(&question).expect("first answer");
    assert_eq!(
        first.cache(),
        Some("miss"),
        "{first:#?}\n{}",
        gateway.log_tail()
    );
    assert!(
        first.text().contains("Paris"),
        "the model should answer the question: {first:#?}"
    );

    let again = (0..50)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            client.chat(&question).expect("second answer")
        })
        .find(|r| r.cache() == Some("hit-exact"))
        .expect("the answer is stored and served again");
    assert_eq!(again.text(), first.text());

    // The engine goes with the gateway, even when the gateway is killed outright.
    let health = http_get_json(gateway.base_url(), "/healthz");
    let engine = health["upstream"]
        .as_str()
        .expect("upstream url")
        .to_owned();
    let engine_addr = engine
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    assert!(
        TcpStream::connect(&engine_addr).is_ok(),
        "the engine listens at {engine_addr}"
    );
    drop(gateway); // SIGKILL
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        TcpStream::connect(&engine_addr).is_err()
    });
    assert!(
        gone,
        "the engine at {engine_addr} outlived its killed gateway"
    );
}

/// A minimal HTTP/1.0 GET returning the JSON body.
fn http_get_json(base_url: &str, path: &str) -> serde_json::Value {
    let addr = base_url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).expect("gateway accepts connections");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let (_, body) = response.split_once("\r\n\r\n").expect("headers end");
    serde_json::from_str(body).expect("json body")
}

/// A system prompt of well over ten 16-token KV blocks, as an assistant's instructions are.
const SYSTEM_PROMPT: &str = "You are the support assistant of a mid-sized online bookshop. \
    Answer in one short paragraph, in plain English, without lists or headings. Be polite but \
    brief. Orders ship within two working days from our warehouse; delivery inside the country \
    takes three to five days and abroad up to three weeks. Returns are accepted within thirty \
    days of delivery if the book is unread and in its original condition; the customer pays \
    the return postage unless the book arrived damaged. Gift cards never expire and cannot be \
    exchanged for cash. We do not sell e-books or audiobooks. If a question is about anything \
    other than books, orders, delivery, returns or gift cards, say politely that you can only \
    help with the bookshop. Never invent an order number, a price or a delivery date.";

/// The engine's `cached_tokens` for one chat through the gateway, skipping the gateway's own
/// cache (`no-cache, no-store` bypasses it) so that every request reaches the engine.
fn engine_cached_tokens(gateway: &Gateway, key: Option<&str>, question: &str) -> u64 {
    engine_cached_tokens_with(gateway, key, question, &[])
}

/// [`engine_cached_tokens`] with extra request headers.
fn engine_cached_tokens_with(
    gateway: &Gateway,
    key: Option<&str>,
    question: &str,
    headers: &[(&str, &str)],
) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut request = reqwest::Client::new()
        .post(format!("{}/chat/completions", gateway.api_url()))
        .header("cache-control", "no-cache, no-store")
        .json(&serde_json::json!({
            "model": "smollm2-135m",
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": question},
            ],
            "max_tokens": 1,
            "temperature": 0,
        }));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body: serde_json::Value = runtime.block_on(async {
        let response = request.send().await.expect("gateway answers");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json answer")
    });
    body["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens in {body}"))
}

#[test]
fn tenants_sharing_a_system_prompt_share_no_engine_prefix() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut config =
        GatewayConfig::from_file(&root.join("configs/default.toml")).expect("default config");
    config.set("server.listen", "127.0.0.1:0").expect("listen");
    config.remove("store.snapshot").expect("snapshot");
    let gateway = Gateway::start(&config).expect("gateway with the bundled engine starts");
    let (a, b, c) = (
        Some("sk-stack-tenant-a"),
        Some("sk-stack-tenant-b"),
        Some("sk-stack-tenant-c"),
    );
    assert_eq!(
        engine_cached_tokens(&gateway, a, "When will my order ship?"),
        0
    );
    // The control: A's second question reuses A's cached system prompt.
    let a_again = engine_cached_tokens(&gateway, a, "Can I return a book I did not like?");
    assert!(a_again >= 160, "A's own prefix is cached: {a_again} tokens");
    // C sends the very same system prompt: nothing of A's reaches it.
    assert_eq!(
        engine_cached_tokens(&gateway, c, "Do gift cards expire?"),
        0,
        "C was served A's cached prefix"
    );
    // Nor does B by naming A's tenant itself: the gateway replaces any x-cachet-tenant it is
    // sent with the tenant it derives from B's key...
    let a_tenant = Tenant::from_api_key("sk-stack-tenant-a");
    let forged = [("x-cachet-tenant", a_tenant.as_str())];
    assert_eq!(
        engine_cached_tokens_with(&gateway, b, "Do you sell e-books?", &forged),
        0,
        "B claimed A's prefix by naming A's tenant"
    );
    // ...which is what the engine salted that request with: B's next one reuses it.
    let b_again = engine_cached_tokens(&gateway, b, "Do you sell audiobooks?");
    assert!(b_again >= 160, "B's own prefix is cached: {b_again} tokens");
    // Keyless requests are not one tenant: each gets a salt of its own.
    assert_eq!(
        engine_cached_tokens(&gateway, None, "Where do you ship from?"),
        0
    );
    assert_eq!(
        engine_cached_tokens(&gateway, None, "How long does delivery take?"),
        0
    );
}
