//! OpenAI request bodies and their translation into engine requests.

use serde::Deserialize;

use super::error::ApiError;
use crate::sampling::SamplingParams;
use crate::text::ChatMessage;

/// `stop` may be one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

/// The sampling fields shared by both endpoints (plus vLLM's `top_k` and `ignore_eos`).
#[derive(Debug, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub seed: Option<u64>,
    pub stop: Option<StopInput>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: bool,
    pub n: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A prompt: text, a one-element list of text, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptInput,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Message content: a string or a list of parts, of which the text parts are used.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentInput {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct MessageInput {
    pub role: String,
    pub content: Option<ContentInput>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<MessageInput>,
    pub max_completion_tokens: Option<usize>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Parses a JSON body, turning serde's complaint into an OpenAI-shaped 400.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

impl ChatRequest {
    pub fn messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_request("messages must not be empty"));
        }
        self.messages
            .iter()
            .map(|m| {
                let content = match &m.content {
                    None => String::new(),
                    Some(ContentInput::Text(text)) => text.clone(),
                    Some(ContentInput::Parts(parts)) => {
                        if let Some(part) = parts.iter().find(|p| p.kind != "text") {
                            return Err(ApiError::bad_request(format!(
                                "content parts of type {:?} are not supported",
                                part.kind
                            )));
                        }
                        parts.iter().filter_map(|p| p.text.as_deref()).collect()
                    }
                };
                Ok(ChatMessage {
                    role: m.role.clone(),
                    content,
                })
            })
            .collect()
    }
}

impl CommonParams {
    /// Checks the fields and builds sampling parameters; `default_max_tokens` applies
    /// when the request sets none.
    pub fn sampling(
        &self,
        max_tokens: Option<usize>,
        default_max_tokens: usize,
    ) -> Result<SamplingParams, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only n = 1 is supported"));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_request("temperature must be between 0 and 2"));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request("top_p must be in (0, 1]"));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => k as usize,
            Some(_) => return Err(ApiError::bad_request("top_k must be -1, 0 or positive")),
        };
        let max_tokens = max_tokens.unwrap_or(default_max_tokens);
        if max_tokens == 0 {
            return Err(ApiError::bad_request("max_tokens must be at least 1"));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopInput::One(s)) => vec![s.clone()],
            Some(StopInput::Many(v)) => v.clone(),
        };
        Ok(SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: self.seed,
            max_tokens,
            stop,
            ignore_eos: self.ignore_eos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_completion_with_ids_and_stop_list() {
        let r: CompletionRequest = parse_body(
            br#"{"model":"m","prompt":[1,2,3],"stop":["a","b"],"temperature":0,"user":"x"}"#,
        )
        .unwrap();
        assert!(matches!(r.prompt, PromptInput::Ids(ref ids) if ids == &[1, 2, 3]));
        let p = r.common.sampling(None, 16).unwrap();
        assert_eq!(p.stop, vec!["a", "b"]);
        assert_eq!(p.temperature, 0.0);
        assert_eq!(p.max_tokens, 16);
    }

    #[test]
    fn bad_values_are_refused() {
        for body in [
            r#"{"prompt":"x","temperature":3}"#,
            r#"{"prompt":"x","top_p":0}"#,
            r#"{"prompt":"x","n":2}"#,
            r#"{"prompt":"x","max_tokens":0}"#,
        ] {
            let r: CompletionRequest = parse_body(body.as_bytes()).unwrap();
            assert!(
                r.common.sampling(r.common.max_tokens, 16).is_err(),
                "{body}"
            );
        }
        assert!(parse_body::<CompletionRequest>(b"{\"prompt\": 5}").is_err());
    }

    #[test]
    fn chat_parts_are_joined() {
        let r: ChatRequest = parse_body(
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.messages().unwrap()[0].content, "ab");
    }
}
