//! Serving SmolLM2-135M: chat parity, prefix caching across requests and tenants, and
//! 16 concurrent streams that match solo runs without leaking KV blocks.

#![allow(clippy::unwrap_used)]

mod common;

use cachet_engine::server::TenantPolicy;
use serde_json::{Value, json};

use common::server::{TestServer, settings, start, streamed_text};

async fn smol() -> TestServer {
    start(
        &common::smollm2_dir(),
        settings(192),
        TenantPolicy::default(),
    )
    .await
}

fn completion(prompt: &Value, max_tokens: usize) -> Value {
    json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true})
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_answer_matches_reference() {
    let dir = common::smollm2_dir();
    let question = "What is the capital of France?";
    let reference = common::reference_with(&dir, &["--chat", "--prompt", question], 32, false);
    let s = smol().await;
    let (status, body) = s
        .post(
            "/v1/chat/completions",
            None,
            json!({"messages": [{"role": "user", "content": question}], "max_tokens": 32, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], reference.prompt_ids.len());
    assert_eq!(body["choices"][0]["message"]["content"], reference.text);
}

/// Token ids of a long shared document followed by a question.
fn prompt_with(prefix_len: usize, question: &[u32]) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..prefix_len as u32)
        .map(|i| 300 + (i * 37) % 9000)
        .collect();
    ids.extend_from_slice(question);
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn second_request_reuses_prefix_blocks_only_within_a_tenant() {
    let s = smol().await;
    let first = prompt_with(200, &[504, 1201, 17]);
    let second = prompt_with(200, &[980, 33, 2046, 7]);
    let (_, a) = s
        .post(
            "/v1/completions",
            Some("alice"),
            completion(&json!(first), 8),
        )
        .await;
    assert_eq!(a["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let before = s.engine.stats().await.unwrap().cache;

    let (_, warm) = s
        .post(
            "/v1/completions",
            Some("alice"),
            completion(&json!(second), 8),
        )
        .await;
    // 200 shared tokens are 12 full blocks of 16: those come from the cache.
    assert_eq!(warm["usage"]["prompt_tokens_details"]["cached_tokens"], 192);
    let after = s.engine.stats().await.unwrap().cache;
    assert_eq!(after.hit_tokens - before.hit_tokens, 192);
    assert_eq!(
        after.query_tokens - before.query_tokens,
        second.len() as u64
    );

    // Bob sends the same prompt: nothing is shared across tenants, and the cold run
    // produces the same tokens as alice's cached one.
    let (_, cold) = s
        .post(
            "/v1/completions",
            Some("bob"),
            completion(&json!(second), 8),
        )
        .await;
    assert_eq!(cold["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(cold["choices"][0]["text"], warm["choices"][0]["text"]);
    let (_, anonymous) = s
        .post("/v1/completions", None, completion(&json!(first), 8))
        .await;
    assert_eq!(
        anonymous["usage"]["prompt_tokens_details"]["cached_tokens"],
        0
    );
    let (free, total) = s.settled_blocks().await;
    assert_eq!(free, total);
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_streams_match_solo_runs() {
    let s = smol().await;
    let prompts: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "Question {i}: name a fruit that is {} and explain why",
                ["red", "green", "sweet", "sour"][i % 4]
            )
        })
        .collect();
    let mut solo = Vec::new();
    for prompt in &prompts {
        let (_, body) = s
            .post("/v1/completions", Some("k"), completion(&json!(prompt), 12))
            .await;
        solo.push(body["choices"][0]["text"].as_str().unwrap().to_owned());
    }
    let streams = prompts.iter().map(|prompt| {
        let mut request = completion(&json!(prompt), 12);
        request["stream"] = json!(true);
        // A different tenant than the solo runs, so every stream computes its prompt.
        s.post_stream("/v1/completions", Some("other"), request)
    });
    let results = futures::future::join_all(streams).await;
    for (i, chunks) in results.iter().enumerate() {
        assert_eq!(chunks.last().unwrap(), "[DONE]");
        assert_eq!(streamed_text(chunks), solo[i], "prompt {i}");
    }
    let (free, total) = s.settled_blocks().await;
    assert_eq!(free, total, "blocks leaked");
}
