//! The HTTP API on a tiny model: shapes of responses, errors, tenants, metrics, the binary's start line.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use cachet_engine::server::TenantPolicy;
use serde_json::json;

use common::server::{TestServer, settings, start, streamed_text};

async fn tiny_server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 3);
    let server = start(dir.path(), settings(16), TenantPolicy::default()).await;
    (dir, server)
}

#[tokio::test]
async fn completion_reports_usage_and_finish_reason() {
    let (_dir, s) = tiny_server().await;
    let (status, body) = s
        .post("/v1/completions", None, json!({"model": "test-model", "prompt": "w5 w6 w7", "max_tokens": 5, "temperature": 0, "ignore_eos": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 8);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    // One step prefilled the 3-token prompt and sampled the first token; each of the
    // other 4 came from a one-token decode step.
    let steps = s.engine.stats().await.unwrap().steps;
    assert_eq!((steps.mixed_steps, steps.mixed_tokens), (1, 3));
    assert_eq!((steps.decode_steps, steps.decode_tokens), (4, 4));
    assert!(!steps.decode_forward.is_zero() && !steps.mixed_forward.is_zero());
}

#[tokio::test]
async fn streaming_chat_matches_non_streaming() {
    let (_dir, s) = tiny_server().await;
    let request = json!({"messages": [{"role": "user", "content": "w9 w10"}], "max_tokens": 6,
        "temperature": 0, "ignore_eos": true});
    let (status, whole) = s.post("/v1/chat/completions", None, request.clone()).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    let mut streaming = request;
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let chunks = s.post_stream("/v1/chat/completions", None, streaming).await;
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let first: serde_json::Value = serde_json::from_str(&chunks[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let usage: serde_json::Value = serde_json::from_str(&chunks[chunks.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert_eq!(
        streamed_text(&chunks),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
}

#[tokio::test]
async fn errors_are_openai_shaped() {
    let (_dir, s) = tiny_server().await;
    // 16 blocks of 16 tokens hold 256 tokens; a 300-token prompt is refused, not truncated.
    let long = vec!["w7"; 300].join(" ");
    let cases = [
        (
            json!({"prompt": long}),
            400,
            Some("context_length_exceeded"),
        ),
        (
            json!({"prompt": "w1", "model": "other"}),
            404,
            Some("model_not_found"),
        ),
        (json!({"prompt": "w1", "temperature": 9}), 400, None),
        (json!({"prompt": [999999]}), 400, None),
        (json!({"nonsense": true}), 400, None),
    ];
    for (body, status, code) in cases {
        let (got, response) = s.post("/v1/completions", None, body.clone()).await;
        assert_eq!(got, status, "{body} -> {response}");
        assert!(response["error"]["message"].is_string(), "{response}");
        assert!(response["error"]["type"].is_string(), "{response}");
        if let Some(code) = code {
            assert_eq!(response["error"]["code"], code);
        }
    }
}

#[tokio::test]
async fn models_health_and_metrics() {
    let (_dir, s) = tiny_server().await;
    let models: serde_json::Value = reqwest::get(format!("{}/v1/models", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "test-model");
    assert_eq!(
        reqwest::get(format!("{}/health", s.url))
            .await
            .unwrap()
            .status(),
        200
    );
    // Three prompt tokens: the first step is a mixed one (a prefill chunk), the second
    // decode-only; a one-token prompt's first step would count as decode-only. The
    // second step must happen: an end-of-sequence token sampled first would skip it.
    s.post(
        "/v1/completions",
        None,
        json!({"prompt": "w3 w4 w5", "max_tokens": 2, "temperature": 0, "ignore_eos": true}),
    )
    .await;
    let metrics = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "cachet_engine_prefix_cache_query_tokens_total",
        "cachet_engine_prefix_cache_hit_tokens_total",
        "cachet_engine_kv_blocks_free",
        "cachet_engine_kv_blocks_used",
        "cachet_engine_queue_length",
        "cachet_engine_ttft_seconds_bucket",
        "cachet_engine_step_forward_seconds_bucket{kind=\"mixed\"",
        "cachet_engine_step_forward_seconds_bucket{kind=\"decode\"",
        "cachet_engine_step_host_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn tenant_header_counts_only_when_trusted() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 3);
    let prompt: Vec<u32> = (0..40).map(|i| (i * 3 % 60) as u32).collect();
    for trusted in [false, true] {
        let s = start(
            dir.path(),
            settings(32),
            TenantPolicy {
                trust_gateway_header: trusted,
            },
        )
        .await;
        let send = |key: &'static str| {
            let request = s
                .client
                .post(format!("{}/v1/completions", s.url))
                .bearer_auth(key)
                .header("x-cachet-tenant", "acme")
                .json(&json!({"prompt": prompt, "max_tokens": 1}));
            async move {
                request
                    .send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };
        send("key-one").await;
        let second = send("key-two").await;
        let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        // Trusted: both keys are tenant "acme" and share; untrusted: the keys separate them.
        assert_eq!(cached, if trusted { 32 } else { 0 }, "trusted = {trusted}");
    }
}

#[test]
fn binary_prints_its_real_address_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachet-engine"))
        .args(["serve", "--model"])
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--device",
            "cpu",
            "--kv-blocks",
            "8",
            "--threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    assert!(!url.ends_with(":0"), "{url}");
    let status = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            reqwest::get(format!("{url}/health"))
                .await
                .unwrap()
                .status()
        })
    })
    .join()
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
}

#[test]
fn unknown_device_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 3);
    let output = Command::new(env!("CARGO_BIN_EXE_cachet-engine"))
        .args(["serve", "--model"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--device", "cuda:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cuda:0"));
}

#[test]
fn the_tenant_header_is_trusted_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 3);
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let output = Command::new(env!("CARGO_BIN_EXE_cachet-engine"))
            .args(["serve", "--model"])
            .arg(dir.path())
            .args(["--listen", listen, "--trust-gateway-header"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{listen}: {stderr}");
        assert!(
            stderr.contains("--trust-gateway-header needs a loopback --listen address"),
            "{listen}: {stderr}"
        );
    }
}

#[tokio::test]
async fn seed_reproduces_sampling_and_stop_strings_end_output() {
    let (_dir, s) = tiny_server().await;
    let sampled = |seed: u64| json!({"prompt": "w8 w9", "max_tokens": 12, "temperature": 1.0, "seed": seed, "ignore_eos": true});
    let text = |body: serde_json::Value| body["choices"][0]["text"].as_str().unwrap().to_owned();
    let (_, a) = s.post("/v1/completions", None, sampled(11)).await;
    let (_, b) = s.post("/v1/completions", None, sampled(11)).await;
    assert_eq!(text(a.clone()), text(b));
    let (_, c) = s.post("/v1/completions", None, sampled(12)).await;
    assert_ne!(text(a.clone()), text(c), "another seed samples differently");

    // Stop at the third word of the seeded output: the answer ends before it.
    let full = text(a);
    let words: Vec<&str> = full.split_whitespace().collect();
    let stop = format!(" {}", words[2]);
    let mut request = sampled(11);
    request["stop"] = json!([stop]);
    let (_, stopped) = s.post("/v1/completions", None, request).await;
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let cut = text(stopped);
    assert_eq!(cut, full[..full.find(&stop).unwrap()]);
}
