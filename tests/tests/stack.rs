//! The whole stack from the shipped default config: the gateway starts the bundled engine
//! serving the SmolLM2 checkpoint, and a chat request through the gateway gets a real answer
//! from the model, then the same question is a cache hit.

use std::path::Path;

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
}
