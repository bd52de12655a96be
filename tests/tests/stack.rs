//! The whole stack from the shipped default config: the gateway starts the bundled engine
//! serving the SmolLM2 checkpoint, and a chat request through the gateway gets a real answer
//! from the model, then the same question is a cache hit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

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
