//! The JSON bodies and SSE chunks of the scripted upstream's answers, in OpenAI's format.

use serde_json::{Value, json};

/// Which completion API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
}

/// An answer being written: shared fields of the body and of every chunk.
#[derive(Debug, Clone)]
pub struct Answer {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub prompt_tokens: u64,
}

impl Answer {
    /// The complete non-streamed body.
    pub fn body(&self, text: &str, finish_reason: Option<&str>) -> Value {
        let choice = match self.api {
            Api::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish_reason,
            }),
            Api::Completions => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_scripted",
            "choices": [choice],
            "usage": self.usage(text),
        })
    }

    /// The chunks of a stream of `text` (without `[DONE]`): a role chunk for chat, one chunk
    /// per word, then a chunk carrying `finish_reason` when there is one, then a usage chunk
    /// when asked for.
    pub fn chunks(&self, text: &str, finish_reason: Option<&str>, usage: bool) -> Vec<Value> {
        let mut chunks = Vec::new();
        if self.api == Api::Chat {
            chunks.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        for piece in text.split_inclusive(' ') {
            chunks.push(self.chunk_text(piece));
        }
        if let Some(reason) = finish_reason {
            let empty = match self.api {
                Api::Chat => json!({}),
                Api::Completions => json!(""),
            };
            chunks.push(self.chunk(empty, Some(reason)));
        }
        if usage {
            let mut chunk = self.chunk(json!({}), None);
            chunk["choices"] = json!([]);
            chunk["usage"] = self.usage(text);
            chunks.push(chunk);
        }
        chunks
    }

    fn chunk_text(&self, piece: &str) -> Value {
        match self.api {
            Api::Chat => self.chunk(json!({"content": piece}), None),
            Api::Completions => self.chunk(json!(piece), None),
        }
    }

    /// A chunk; `delta` is the chat delta object, or the completion's text.
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let choice = match self.api {
            Api::Chat => json!({
                "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason,
            }),
            Api::Completions => json!({
                "index": 0, "text": delta, "logprobs": null, "finish_reason": finish_reason,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_scripted",
            "choices": [choice],
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Completions, _) => "text_completion",
        }
    }

    fn usage(&self, text: &str) -> Value {
        let completion_tokens = text.split_whitespace().count() as u64;
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }
}

/// An OpenAI-shaped error body.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The question a request asks: the last user message of a chat, or the prompt.
pub fn question(api: Api, body: &Value) -> String {
    let found = match api {
        Api::Chat => body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|messages| {
                messages
                    .iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            })
            .and_then(|message| message.get("content"))
            .map(content_text),
        Api::Completions => body.get("prompt").map(content_text),
    };
    found.unwrap_or_default()
}

/// Text of a message content or prompt: a string, or the text parts of an array.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.as_str().or_else(|| part.get("text")?.as_str()))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A made-up 8-dimensional embedding that depends only on the text.
pub fn fake_embedding(text: &str) -> Vec<f32> {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        state = (state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..8)
        .map(|i| {
            let bits = state.rotate_left(i * 8) & 0xffff;
            (bits as f32 / 65535.0) * 2.0 - 1.0
        })
        .collect()
}

/// Little-endian f32 bytes in standard base64, the SDK's default `encoding_format`.
pub fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(api: Api) -> Answer {
        Answer {
            api,
            id: "x".into(),
            created: 1,
            model: "m".into(),
            prompt_tokens: 3,
        }
    }

    #[test]
    fn chat_chunks_start_with_a_role_and_end_with_the_reason() {
        let chunks = answer(Api::Chat).chunks("one two", Some("stop"), true);
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "one ");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[4]["usage"]["completion_tokens"], 2);
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
    }

    #[test]
    fn completion_bodies_carry_text() {
        let body = answer(Api::Completions).body("hi", Some("length"));
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "hi");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn the_question_is_the_last_user_message() {
        let body = serde_json::json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ]});
        assert_eq!(question(Api::Chat, &body), "second");
        let body = serde_json::json!({"prompt": "say hi"});
        assert_eq!(question(Api::Completions, &body), "say hi");
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 is 00 00 80 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0]), "AACAPwAAgD8=");
        assert_eq!(fake_embedding("a"), fake_embedding("a"));
        assert_ne!(fake_embedding("a"), fake_embedding("b"));
    }
}
