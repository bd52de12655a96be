//! The HTTP surface around the cache: limits and bad requests, health, metrics and the
//! passthrough routes.

use cachet_tests::ChatCall;
use cachet_tests::upstream::{CHAT_PATH, MODELS, fake_embedding};
use serde_json::json;

use crate::support::*;

#[test]
fn a_body_over_the_limit_is_a_413_openai_error() {
    let stack = Stack::start_with(|config| {
        config.set("server.max_body_bytes", 4096).unwrap();
    });
    let body = json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": "x".repeat(10_000)}],
    });
    let response = stack
        .raw()
        .post("/v1/chat/completions", KEY_A, body.to_string());
    assert_eq!(response.status, 413, "{response:?}");
    response.assert_openai_error();
    assert_eq!(stack.upstream.calls(CHAT_PATH), 0);

    // Just under the limit is fine.
    let small = json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}]});
    let response = stack
        .raw()
        .post("/v1/chat/completions", KEY_A, small.to_string());
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn invalid_requests_are_400_openai_errors() {
    let stack = Stack::start();
    let raw = stack.raw();
    for body in [
        "{not json".to_owned(),
        json!({"model": "test-model"}).to_string(),
        json!({"model": "test-model", "messages": "hello"}).to_string(),
        json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(),
    ] {
        let response = raw.post("/v1/chat/completions", KEY_A, body.clone());
        assert_eq!(response.status, 400, "{body} → {response:?}");
        let error = response.assert_openai_error();
        assert_eq!(
            error["type"], "invalid_request_error",
            "{body} → {response:?}"
        );
    }
    let response = raw.post("/v1/completions", KEY_A, "[]".to_owned());
    assert_eq!(response.status, 400, "{response:?}");
    response.assert_openai_error();
    assert_eq!(stack.upstream.completion_calls(), 0);
}

#[test]
fn an_unknown_route_is_a_404_openai_error() {
    let stack = Stack::start();
    let response = stack.raw().get("/v1/no-such-route");
    assert_eq!(response.status, 404, "{response:?}");
    response.assert_openai_error();
}

#[test]
fn healthz_answers() {
    let stack = Stack::start();
    let response = stack.raw().get("/healthz");
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn metrics_count_hits_and_misses() {
    let mut stack = Stack::start();
    let before = stack.raw().get("/metrics");
    assert_eq!(before.status, 200, "{before:?}");
    assert!(
        before
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{before:?}"
    );
    let before = parse_metrics(&before.body);

    stack.chat_stored(&ChatCall::new(EVEREST));
    stack.chat(&ChatCall::new(EVEREST));
    stack.chat(&ChatCall::new(EVEREST_PARAPHRASE));
    let after_text = stack.raw().get("/metrics").body;
    let after = parse_metrics(&after_text);
    let grew: Vec<&String> = after
        .iter()
        .filter(|(series, value)| **value > before.get(*series).copied().unwrap_or(0.0))
        .map(|(series, _)| series)
        .collect();
    for outcome in ["hit-exact", "hit-semantic", "miss"] {
        let label = outcome.replace('-', "_");
        assert!(
            grew.iter()
                .any(|series| series.contains(outcome) || series.contains(&label)),
            "no growing series mentions {outcome}; grew: {grew:#?}\n{after_text}"
        );
    }
}

#[test]
fn models_pass_through_with_the_clients_key() {
    let mut stack = Stack::start();
    let models = stack.client.models(KEY_B).unwrap();
    assert!(models.ok, "{models:#?}");
    assert_eq!(models.data.unwrap(), json!(MODELS));
    assert_eq!(stack.upstream.calls("/v1/models"), 1);
    assert_eq!(
        stack.upstream.authorizations(),
        vec![Some(format!("Bearer {KEY_B}"))]
    );
}

#[test]
fn embeddings_pass_through() {
    let mut stack = Stack::start();
    let embeddings = stack.client.embeddings(KEY_A, &["hello", "world"]).unwrap();
    assert!(embeddings.ok, "{embeddings:#?}");
    let vectors: Vec<Vec<f32>> = serde_json::from_value(embeddings.data.unwrap()).unwrap();
    assert_eq!(
        vectors,
        vec![fake_embedding("hello"), fake_embedding("world")]
    );
    assert_eq!(stack.upstream.calls("/v1/embeddings"), 1);
    // Passthrough, not cached: the same call reaches the upstream again.
    stack.client.embeddings(KEY_A, &["hello", "world"]).unwrap();
    assert_eq!(stack.upstream.calls("/v1/embeddings"), 2);
}
