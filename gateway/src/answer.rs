//! Cached answers: assembled from a complete upstream response (JSON or SSE stream), and replayed
//! to a client as JSON or as an SSE stream, with a fresh `id` and `created`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cachet_policies::ConversationView;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::request::Route;

/// What the store keeps for one cached request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// Hex exact-match key, compared on every read so that an id collision never serves
    /// another request's answer.
    pub key: String,
    /// The text that was embedded for this entry, for hit guards and traces.
    pub question: Option<String>,
    /// The conversation the answer was given in, compared with a query's by `judge`.
    #[serde(default)]
    pub view: Option<ConversationView>,
    /// Embedding of the conversation's topic (its first user message), when it has one.
    #[serde(default)]
    pub topic_vector: Option<Vec<f32>>,
    /// The complete answer in its non-streamed shape.
    pub response: Value,
}

const CACHEABLE_FINISH: [&str; 2] = ["stop", "length"];

/// The complete answer in a successful upstream body, or `None` when it must not be cached:
/// an error, a cut stream, a refusal by a content filter, or tool calls.
pub fn assemble(route: Route, streamed: bool, body: &[u8]) -> Option<Value> {
    let response = if streamed {
        assemble_stream(route, body)?
    } else {
        serde_json::from_slice::<Value>(body).ok()?
    };
    if response.get("error").is_some_and(|e| !e.is_null()) {
        return None;
    }
    let choices = response.get("choices")?.as_array()?;
    let complete = !choices.is_empty()
        && choices.iter().all(|c| {
            let finished = c
                .get("finish_reason")
                .and_then(Value::as_str)
                .is_some_and(|r| CACHEABLE_FINISH.contains(&r));
            let tool_calls = c
                .get("message")
                .and_then(|m| m.get("tool_calls"))
                .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));
            let has_text = match route {
                Route::Chat => c
                    .get("message")
                    .and_then(|m| m.get("content"))
                    .is_some_and(Value::is_string),
                Route::Completions => c.get("text").is_some_and(Value::is_string),
            };
            finished && !tool_calls && has_text
        });
    complete.then_some(response)
}

#[derive(Default)]
struct ChoiceParts {
    role: Option<String>,
    text: String,
    finish_reason: Option<String>,
    tool_calls: bool,
}

fn assemble_stream(route: Route, body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    let mut head: Option<Map<String, Value>> = None;
    let mut choices: Vec<ChoiceParts> = Vec::new();
    let mut usage = Value::Null;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).ok()?;
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return None;
        }
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            usage = chunk["usage"].clone();
        }
        if head.is_none() {
            let mut h = Map::new();
            for field in ["id", "created", "model", "system_fingerprint"] {
                if let Some(v) = chunk.get(field) {
                    h.insert(field.to_owned(), v.clone());
                }
            }
            head = Some(h);
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index =
                usize::try_from(choice.get("index").and_then(Value::as_u64).unwrap_or(0)).ok()?;
            if index >= 128 {
                return None;
            }
            if choices.len() <= index {
                choices.resize_with(index + 1, ChoiceParts::default);
            }
            let parts = &mut choices[index];
            let piece = match route {
                Route::Chat => {
                    let delta = choice.get("delta");
                    if let Some(role) = delta.and_then(|d| d.get("role")).and_then(Value::as_str) {
                        parts.role = Some(role.to_owned());
                    }
                    if delta
                        .and_then(|d| d.get("tool_calls"))
                        .is_some_and(|t| !t.is_null())
                    {
                        parts.tool_calls = true;
                    }
                    delta.and_then(|d| d.get("content")).and_then(Value::as_str)
                }
                Route::Completions => choice.get("text").and_then(Value::as_str),
            };
            parts.text.push_str(piece.unwrap_or(""));
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                parts.finish_reason = Some(reason.to_owned());
            }
        }
    }
    if choices.iter().any(|c| c.tool_calls) {
        return None;
    }
    let mut response = head?;
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| match route {
            Route::Chat => json!({
                "index": index,
                "message": { "role": c.role.unwrap_or_else(|| "assistant".to_owned()), "content": c.text },
                "logprobs": null,
                "finish_reason": c.finish_reason,
            }),
            Route::Completions => json!({
                "index": index, "text": c.text, "logprobs": null, "finish_reason": c.finish_reason,
            }),
        })
        .collect();
    response.insert("object".to_owned(), json!(object_name(route, false)));
    response.insert("choices".to_owned(), Value::Array(choices));
    if !usage.is_null() {
        response.insert("usage".to_owned(), usage);
    }
    Some(Value::Object(response))
}

fn object_name(route: Route, chunk: bool) -> &'static str {
    match (route, chunk) {
        (Route::Chat, false) => "chat.completion",
        (Route::Chat, true) => "chat.completion.chunk",
        (Route::Completions, _) => "text_completion",
    }
}

fn fresh_id(route: Route) -> String {
    let prefix = match route {
        Route::Chat => "chatcmpl",
        Route::Completions => "cmpl",
    };
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}-cachet{suffix}")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The stored answer as a fresh non-streamed response.
pub fn replay_json(route: Route, stored: &Value) -> Value {
    let mut response = stored.clone();
    if let Some(obj) = response.as_object_mut() {
        obj.insert("id".to_owned(), json!(fresh_id(route)));
        obj.insert("created".to_owned(), json!(now_secs()));
    }
    response
}

/// The stored answer as the events of a fresh SSE stream, ending with `data: [DONE]`.
pub fn replay_sse(route: Route, stored: &Value, include_usage: bool) -> Vec<Bytes> {
    let id = fresh_id(route);
    let created = now_secs();
    let model = stored.get("model").cloned().unwrap_or(Value::Null);
    let chunk = |choices: Value| {
        let mut c = json!({
            "id": id, "object": object_name(route, true), "created": created, "model": model, "choices": choices,
        });
        if let Some(fp) = stored.get("system_fingerprint") {
            c["system_fingerprint"] = fp.clone();
        }
        c
    };
    let mut events = Vec::new();
    for (index, choice) in stored
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        match route {
            Route::Chat => {
                let message = choice.get("message");
                let role = message
                    .and_then(|m| m.get("role"))
                    .cloned()
                    .unwrap_or(json!("assistant"));
                let content = message
                    .and_then(|m| m.get("content"))
                    .cloned()
                    .unwrap_or(json!(""));
                events.push(chunk(json!([{ "index": index, "delta": { "role": role, "content": "" }, "logprobs": null, "finish_reason": null }])));
                events.push(chunk(json!([{ "index": index, "delta": { "content": content }, "logprobs": null, "finish_reason": null }])));
                events.push(chunk(json!([{ "index": index, "delta": {}, "logprobs": null, "finish_reason": finish }])));
            }
            Route::Completions => {
                let text = choice.get("text").cloned().unwrap_or(json!(""));
                events.push(chunk(json!([{ "index": index, "text": text, "logprobs": null, "finish_reason": null }])));
                events.push(chunk(json!([{ "index": index, "text": "", "logprobs": null, "finish_reason": finish }])));
            }
        }
    }
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = stored.get("usage").cloned().unwrap_or(Value::Null);
        events.push(last);
    }
    let mut out: Vec<Bytes> = events
        .into_iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(chunks: &[Value], done: bool) -> Vec<u8> {
        let mut s = String::new();
        for c in chunks {
            s.push_str(&format!("data: {c}\n\n"));
        }
        if done {
            s.push_str("data: [DONE]\n\n");
        }
        s.into_bytes()
    }

    fn chat_chunk(delta: Value, finish: Value) -> Value {
        json!({"id":"x","object":"chat.completion.chunk","created":1,"model":"m",
               "choices":[{"index":0,"delta":delta,"finish_reason":finish}]})
    }

    #[test]
    fn assembles_a_complete_chat_stream() {
        let body = sse(
            &[
                chat_chunk(json!({"role":"assistant","content":""}), Value::Null),
                chat_chunk(json!({"content":"Par"}), Value::Null),
                chat_chunk(json!({"content":"is."}), Value::Null),
                chat_chunk(json!({}), json!("stop")),
            ],
            true,
        );
        let answer = assemble(Route::Chat, true, &body).expect("complete");
        assert_eq!(answer["choices"][0]["message"]["content"], "Paris.");
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(answer["model"], "m");
    }

    #[test]
    fn refuses_cut_filtered_and_tool_streams() {
        let cut = sse(&[chat_chunk(json!({"content":"Par"}), Value::Null)], false);
        assert!(assemble(Route::Chat, true, &cut).is_none());
        let filtered = sse(
            &[chat_chunk(json!({"content":"x"}), json!("content_filter"))],
            true,
        );
        assert!(assemble(Route::Chat, true, &filtered).is_none());
        let tools = sse(
            &[chat_chunk(
                json!({"tool_calls":[{"index":0}]}),
                json!("stop"),
            )],
            true,
        );
        assert!(assemble(Route::Chat, true, &tools).is_none());
        assert!(assemble(Route::Chat, true, b"data: {not json\n\n").is_none());
    }

    #[test]
    fn refuses_errors_in_json_bodies() {
        let error = br#"{"error":{"message":"rate limited"}}"#;
        assert!(assemble(Route::Chat, false, error).is_none());
        let ok = br#"{"id":"a","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}]}"#;
        assert!(assemble(Route::Chat, false, ok).is_some());
    }

    #[test]
    fn replayed_stream_reassembles_to_the_same_answer() {
        let stored = json!({"id":"old","object":"text_completion","created":1,"model":"m",
            "choices":[{"index":0,"text":"hello","logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}});
        let events: Vec<u8> = replay_sse(Route::Completions, &stored, true).concat();
        let again = assemble(Route::Completions, true, &events).expect("complete");
        assert_eq!(again["choices"], stored["choices"]);
        assert_eq!(again["usage"], stored["usage"]);
        assert_ne!(again["id"], "old");
        let replayed = replay_json(Route::Completions, &stored);
        assert_ne!(replayed["id"], "old");
        assert_eq!(replayed["choices"], stored["choices"]);
    }
}
