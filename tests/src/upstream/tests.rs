//! Tests of the scripted upstream over real HTTP.

use serde_json::{Value, json};

use super::*;
use crate::sse::{self, SseData};

fn chat_body(question: &str, stream: bool) -> Value {
    json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": question}],
        "stream": stream,
    })
}

async fn post(upstream: &ScriptedUpstream, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", upstream.addr()))
        .bearer_auth("sk-test-one")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn echo_answers_differ_per_call_and_calls_are_counted() {
    let upstream = ScriptedUpstream::start().unwrap();
    let first: Value = post(
        &upstream,
        CHAT_PATH,
        &chat_body("Why is the sky blue?", false),
    )
    .await
    .json()
    .await
    .unwrap();
    let second: Value = post(
        &upstream,
        CHAT_PATH,
        &chat_body("Why is the sky blue?", false),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        first["choices"][0]["message"]["content"],
        "Answer 1 to: Why is the sky blue?"
    );
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "Answer 2 to: Why is the sky blue?"
    );
    assert_eq!(first["choices"][0]["finish_reason"], "stop");
    assert_eq!(upstream.calls(CHAT_PATH), 2);
    assert_eq!(upstream.calls(COMPLETIONS_PATH), 0);
    assert_eq!(
        upstream.authorizations(),
        vec![Some("Bearer sk-test-one".to_owned()); 2]
    );
    let recorded = upstream.requests();
    assert_eq!(recorded[0].body.as_ref().unwrap()["model"], "test-model");
}

#[tokio::test]
async fn a_stream_is_well_formed_sse_ending_in_done() {
    let upstream = ScriptedUpstream::start().unwrap();
    upstream.push(Reply::Text("Paris is the capital".into()));
    let mut body = chat_body("capital of France?", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = post(&upstream, CHAT_PATH, &body).await;
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = sse::parse(&response.text().await.unwrap());
    assert_eq!(events.last(), Some(&SseData::Done));
    assert_eq!(sse::streamed_text(&events), "Paris is the capital");
    assert_eq!(sse::finish_reason(&events).as_deref(), Some("stop"));
    let SseData::Json(usage_chunk) = &events[events.len() - 2] else {
        panic!("no usage chunk: {events:?}");
    };
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn completions_stream_and_not() {
    let upstream = ScriptedUpstream::start().unwrap();
    let body = json!({"model": "test-model", "prompt": "Once upon a time"});
    let plain: Value = post(&upstream, COMPLETIONS_PATH, &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain["object"], "text_completion");
    assert_eq!(plain["choices"][0]["text"], "Answer 1 to: Once upon a time");
    let mut body = body;
    body["stream"] = json!(true);
    let events = sse::parse(
        &post(&upstream, COMPLETIONS_PATH, &body)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(sse::streamed_text(&events), "Answer 2 to: Once upon a time");
    assert_eq!(upstream.completion_calls(), 2);
}

#[tokio::test]
async fn errors_have_the_scripted_status_and_openai_body() {
    let upstream = ScriptedUpstream::start().unwrap();
    upstream.push(Reply::rate_limited());
    let response = post(&upstream, CHAT_PATH, &chat_body("hi", false)).await;
    assert_eq!(response.status().as_u16(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    // The queue is used up: the next call is answered.
    let response = post(&upstream, CHAT_PATH, &chat_body("hi", false)).await;
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn content_filter_and_unfinished_streams() {
    let upstream = ScriptedUpstream::start().unwrap();
    upstream.push(Reply::Finish {
        text: "I cannot".into(),
        finish_reason: "content_filter".into(),
    });
    upstream.push(Reply::Unfinished("no reason given".into()));
    let first = sse::parse(
        &post(&upstream, CHAT_PATH, &chat_body("a", true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(
        sse::finish_reason(&first).as_deref(),
        Some("content_filter")
    );
    let second = sse::parse(
        &post(&upstream, CHAT_PATH, &chat_body("b", true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(second.last(), Some(&SseData::Done));
    assert_eq!(sse::finish_reason(&second), None);
}

#[tokio::test]
async fn a_cut_body_fails_on_the_client() {
    let upstream = ScriptedUpstream::start().unwrap();
    upstream.set_fallback(Reply::Cut("partial answer".into()));
    for stream in [true, false] {
        let response = post(&upstream, CHAT_PATH, &chat_body("q", stream)).await;
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.bytes().await.is_err(), "stream={stream}");
    }
}

#[tokio::test]
async fn delayed_replies_arrive() {
    let upstream = ScriptedUpstream::start().unwrap();
    upstream.push(Reply::Delayed(
        Duration::from_millis(20),
        Box::new(Reply::Text("slow but sure".into())),
    ));
    let events = sse::parse(
        &post(&upstream, CHAT_PATH, &chat_body("q", true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(sse::streamed_text(&events), "slow but sure");
}

#[tokio::test]
async fn a_held_reply_waits_for_its_gate() {
    let upstream = ScriptedUpstream::start().unwrap();
    let gate = Gate::new();
    upstream.push(Reply::Held(gate.clone(), Box::new(Reply::server_error())));
    let body = chat_body("q", false);
    let request = post(&upstream, CHAT_PATH, &body);
    tokio::pin!(request);
    let early = tokio::time::timeout(Duration::from_millis(200), &mut request).await;
    assert!(early.is_err(), "the reply came before the gate opened");
    gate.open();
    assert_eq!(request.await.status().as_u16(), 500);
}

#[tokio::test]
async fn models_embeddings_and_unknown_routes() {
    let upstream = ScriptedUpstream::start().unwrap();
    let client = reqwest::Client::new();
    let base = upstream.base_url();
    let models: Value = client
        .get(format!("{base}/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], MODELS[0]);
    let embeddings: Value = client
        .post(format!("{base}/embeddings"))
        .json(&json!({"model": "e", "input": ["a", "b"], "encoding_format": "base64"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
    assert!(embeddings["data"][0]["embedding"].is_string());
    let missing = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(upstream.calls("/v1/models"), 1);
    assert_eq!(upstream.calls("/v1/embeddings"), 1);
    assert_eq!(upstream.calls("/v1/nope"), 1);
}

#[test]
fn drop_stops_serving() {
    let upstream = ScriptedUpstream::start().unwrap();
    let addr = upstream.addr();
    drop(upstream);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn a_gated_stream_sends_its_first_part_before_the_gate_opens() {
    let upstream = ScriptedUpstream::start().unwrap();
    let gate = Gate::new();
    upstream.push(Reply::Gated {
        before: "first part ".into(),
        after: "second part".into(),
        gate: gate.clone(),
    });
    let mut response = post(&upstream, CHAT_PATH, &chat_body("q", true)).await;
    let mut seen = String::new();
    while !seen.contains("first ") {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the first part arrives");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("second"), "{seen}");
    gate.open();
    while let Some(chunk) = response.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = sse::parse(&seen);
    assert_eq!(sse::streamed_text(&events), "first part second part");
    assert_eq!(sse::finish_reason(&events).as_deref(), Some("stop"));
    assert_eq!(events.last(), Some(&SseData::Done));
    let roles = events
        .iter()
        .filter(|e| matches!(e, SseData::Json(c) if c.pointer("/choices/0/delta/role").is_some()))
        .count();
    assert_eq!(roles, 1);
}
