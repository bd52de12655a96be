//! Response bodies: whole JSON responses and SSE chunk streams, for both endpoints.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use crate::engine::{GenerateEvent, Usage};

/// Which endpoint a response belongs to; they differ only in shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completion,
    Chat,
}

/// The fields every response and chunk repeats.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ResponseMeta {
    pub fn new(endpoint: Endpoint, model: String) -> Self {
        let prefix = match endpoint {
            Endpoint::Completion => "cmpl",
            Endpoint::Chat => "chatcmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{:016x}", rand::random::<u64>()),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Completion, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn chunk(&self, text: Option<&str>, finish_reason: Option<&str>, first: bool) -> Value {
        let choice = match self.endpoint {
            Endpoint::Completion => json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": null,
                "finish_reason": finish_reason,
            }),
            Endpoint::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), "assistant".into());
                }
                if let Some(text) = text {
                    delta.insert("content".into(), text.into());
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason})
            }
        };
        self.envelope(true, json!([choice]))
    }
}

/// The `usage` object, with vLLM's and OpenAI's `prompt_tokens_details.cached_tokens`.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    })
}

/// Waits for the whole generation and returns the non-streaming response body.
pub async fn collect(
    meta: &ResponseMeta,
    mut events: UnboundedReceiver<GenerateEvent>,
) -> Result<Value, ApiError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            GenerateEvent::Text { delta, .. } => text.push_str(&delta),
            GenerateEvent::Failed(message) => {
                return Err(ApiError::from(crate::Error::InvalidSettings(message)));
            }
            GenerateEvent::Finished { reason, usage, .. } => {
                let choice = match meta.endpoint {
                    Endpoint::Completion => json!({
                        "index": 0, "text": text, "logprobs": null,
                        "finish_reason": reason.as_str(),
                    }),
                    Endpoint::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": reason.as_str(),
                    }),
                };
                let mut body = meta.envelope(false, json!([choice]));
                body["usage"] = usage_json(&usage);
                return Ok(body);
            }
        }
    }
    Err(ApiError::from(crate::Error::EngineStopped))
}

struct StreamState {
    meta: ResponseMeta,
    events: Option<UnboundedReceiver<GenerateEvent>>,
    queued: VecDeque<Event>,
    first: bool,
    include_usage: bool,
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

impl StreamState {
    /// Translates one engine event into SSE events; `None` ends the request.
    fn translate(&mut self, event: Option<GenerateEvent>) {
        match event {
            Some(GenerateEvent::Text { delta, .. }) => {
                let chunk = self.meta.chunk(Some(&delta), None, self.first);
                self.first = false;
                self.queued.push_back(data(&chunk));
            }
            Some(GenerateEvent::Finished { reason, usage, .. }) => {
                let text = (self.first && self.meta.endpoint == Endpoint::Chat).then_some("");
                let chunk = self.meta.chunk(text, Some(reason.as_str()), self.first);
                self.queued.push_back(data(&chunk));
                if self.include_usage {
                    let mut last = self.meta.envelope(true, json!([]));
                    last["usage"] = usage_json(&usage);
                    self.queued.push_back(data(&last));
                }
                self.queued.push_back(Event::default().data("[DONE]"));
                self.events = None;
            }
            Some(GenerateEvent::Failed(_)) | None => {
                let error = json!({"error": {"message": "internal error", "type": "server_error",
                    "param": null, "code": null}});
                self.queued.push_back(data(&error));
                self.events = None;
            }
        }
    }
}

/// Streams the generation as OpenAI SSE chunks, ending with `data: [DONE]`.
pub fn sse(
    meta: ResponseMeta,
    events: UnboundedReceiver<GenerateEvent>,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = StreamState {
        meta,
        events: Some(events),
        queued: VecDeque::new(),
        first: true,
        include_usage,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.queued.pop_front() {
                return Some((Ok(event), state));
            }
            let receiver = state.events.as_mut()?;
            let event = receiver.recv().await;
            state.translate(event);
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
