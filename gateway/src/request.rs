//! The parts of a chat or completion request that caching depends on, read from the JSON body
//! without losing any field: the body itself is forwarded upstream byte for byte.

use cachet_policies::{ConversationView, Message, conversation_view};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The routes whose answers are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Completions,
}

impl Route {
    /// The path clients call, as matched by category rules.
    pub fn path(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
        }
    }

    /// The path appended to the upstream's base URL.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Route::Chat => "/chat/completions",
            Route::Completions => "/completions",
        }
    }
}

/// A validated request with the facts the cache needs.
#[derive(Debug, Clone)]
pub struct CacheRequest {
    pub route: Route,
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: the client wants a usage chunk at the end of a stream.
    pub include_usage: bool,
    pub temperature: Option<f64>,
    /// Why this request can never be served from or stored in the cache, if it can't.
    pub uncacheable: Option<&'static str>,
    /// The text embedded for semantic lookup: the last user message, or the prompt.
    pub lookup_text: Option<String>,
    /// System and developer messages: a semantic neighbour must have the same ones.
    pub system: Vec<Value>,
    /// The conversation as the context comparison sees it; `None` when any message is not
    /// plain text (then only exact matches are served).
    pub view: Option<ConversationView>,
}

/// Body fields that do not change the answer, left out of the exact-match key.
const NON_OUTPUT_FIELDS: [&str; 8] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

impl CacheRequest {
    pub fn parse(route: Route, bytes: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
        let Value::Object(body) = value else {
            return Err(ApiError::invalid(
                "request body must be a JSON object",
                None,
            ));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "model must be a non-empty string",
                    Some("model"),
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    "you must provide a model parameter",
                    Some("model"),
                ));
            }
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid(
                    "stream must be a boolean",
                    Some("stream"),
                ));
            }
        };
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let temperature = match body.get("temperature") {
            None | Some(Value::Null) => None,
            Some(t) => Some(t.as_f64().ok_or_else(|| {
                ApiError::invalid("temperature must be a number", Some("temperature"))
            })?),
        };
        let n = match body.get("n") {
            None | Some(Value::Null) => 1,
            Some(n) => n
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::invalid("n must be a positive integer", Some("n")))?,
        };
        let mut request = Self {
            route,
            model,
            stream,
            include_usage,
            temperature,
            uncacheable: None,
            lookup_text: None,
            system: Vec::new(),
            view: None,
            body: Map::new(),
        };
        if n > 1 {
            request.uncacheable = Some("n>1");
        } else if ["logprobs", "top_logprobs", "echo", "best_of", "suffix"]
            .iter()
            .any(|f| {
                body.get(*f)
                    .is_some_and(|v| !v.is_null() && *v != Value::Bool(false))
            })
        {
            request.uncacheable = Some("logprobs");
        } else if ["tools", "functions", "tool_choice", "function_call"]
            .iter()
            .any(|f| body.get(*f).is_some_and(|v| !v.is_null()))
        {
            request.uncacheable = Some("tools");
        }
        match route {
            Route::Chat => request.read_messages(&body)?,
            Route::Completions => request.read_prompt(&body)?,
        }
        request.body = body;
        Ok(request)
    }

    fn read_messages(&mut self, body: &Map<String, Value>) -> Result<(), ApiError> {
        let Some((last, earlier)) = body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.split_last())
        else {
            return Err(ApiError::invalid(
                "messages must be a non-empty array",
                Some("messages"),
            ));
        };
        let messages = earlier.iter().chain(std::iter::once(last));
        for message in messages {
            if !message.get("role").is_some_and(Value::is_string) {
                return Err(ApiError::invalid(
                    "every message needs a string role",
                    Some("messages"),
                ));
            }
        }
        self.system = earlier
            .iter()
            .filter(|m| {
                matches!(
                    m.get("role").and_then(Value::as_str),
                    Some("system" | "developer")
                )
            })
            .cloned()
            .collect();
        if last.get("role").and_then(Value::as_str) != Some("user") {
            return Ok(());
        }
        let texts: Option<Vec<(&str, String)>> = earlier
            .iter()
            .chain(std::iter::once(last))
            .map(|m| Some((m.get("role").and_then(Value::as_str)?, message_text(m)?)))
            .collect();
        if let Some(texts) = texts {
            let messages: Vec<Message<'_>> = texts
                .iter()
                .map(|(role, content)| Message { role, content })
                .collect();
            self.view = conversation_view(&messages);
            self.lookup_text = self.view.as_ref().map(|v| v.lookup_text.clone());
        }
        Ok(())
    }

    fn read_prompt(&mut self, body: &Map<String, Value>) -> Result<(), ApiError> {
        match body.get("prompt") {
            Some(Value::String(p)) => self.set_prompt(p),
            Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
                self.set_prompt(items[0].as_str().unwrap_or_default());
            }
            // Token-id prompts and batches of prompts still get exact matching.
            Some(Value::Array(_)) => {}
            _ => {
                return Err(ApiError::invalid(
                    "prompt must be a string or an array",
                    Some("prompt"),
                ));
            }
        }
        Ok(())
    }

    fn set_prompt(&mut self, prompt: &str) {
        self.view = conversation_view(&[Message {
            role: "user",
            content: prompt,
        }]);
        self.lookup_text = Some(prompt.to_owned());
    }

    /// The body without fields that do not change the answer, in canonical form.
    pub fn canonical_output_fields(&self) -> String {
        self.canonical_fields(&[])
    }

    /// The output-affecting parameters alone, in canonical form: the exact key's fields less
    /// the conversation (or prompt) and the model, which semantic lookup compares its own way.
    pub fn canonical_parameters(&self) -> String {
        self.canonical_fields(&["messages", "prompt", "model"])
    }

    fn canonical_fields(&self, also_skipped: &[&str]) -> String {
        let mut out = String::new();
        let mut fields: Vec<(&String, &Value)> = self
            .body
            .iter()
            .filter(|(k, _)| {
                !NON_OUTPUT_FIELDS.contains(&k.as_str()) && !also_skipped.contains(&k.as_str())
            })
            .collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        out.push('{');
        for (i, (key, value)) in fields.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_canonical(&Value::String(key.clone()), &mut out);
            out.push(':');
            write_canonical(value, &mut out);
        }
        out.push('}');
        out
    }
}

/// The text of a message: a string content, or its text parts joined by newlines.
pub fn message_text(message: &Value) -> Option<String> {
    match message.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            // A message with images or audio parts is not only its text: exact match only.
            (texts.len() == parts.len() && !texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// JSON with object keys sorted at every level, independent of how serde_json orders maps.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(&Value::String(key.clone()), out);
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(route: Route, body: &str) -> Result<CacheRequest, ApiError> {
        CacheRequest::parse(route, body.as_bytes())
    }

    #[test]
    fn reads_lookup_text_and_context() {
        let r = parse(
            Route::Chat,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
        )
        .expect("valid");
        assert_eq!(r.lookup_text.as_deref(), Some("hi"));
        assert_eq!(r.system.len(), 1);
        assert_eq!(r.view.as_ref().map(|v| v.lookup_text.as_str()), Some("hi"));
        assert!(!r.stream);
        assert_eq!(r.uncacheable, None);
    }

    #[test]
    fn text_parts_are_joined_and_images_are_not_text() {
        let r = parse(
            Route::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .expect("valid");
        assert_eq!(r.lookup_text.as_deref(), Some("a\nb"));
        let r = parse(
            Route::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        )
        .expect("valid");
        assert_eq!(r.lookup_text, None);
    }

    #[test]
    fn refuses_malformed_bodies_naming_the_field() {
        let check = |route, body: &str, param: Option<&str>| match parse(route, body) {
            Err(ApiError::InvalidRequest { param: got, .. }) => assert_eq!(got, param, "{body}"),
            other => panic!("expected invalid request for {body}, got {other:?}"),
        };
        check(Route::Chat, "not json", None);
        check(Route::Chat, "[1]", None);
        check(
            Route::Chat,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        );
        check(
            Route::Chat,
            r#"{"model":"m","messages":[]}"#,
            Some("messages"),
        );
        check(
            Route::Chat,
            r#"{"model":"m","messages":[{"content":"x"}]}"#,
            Some("messages"),
        );
        check(
            Route::Chat,
            r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
            Some("stream"),
        );
        check(Route::Completions, r#"{"model":"m"}"#, Some("prompt"));
        check(
            Route::Completions,
            r#"{"model":"m","prompt":"x","n":0}"#,
            Some("n"),
        );
    }

    #[test]
    fn marks_uncacheable_requests() {
        let reason = |body: &str| parse(Route::Chat, body).expect("valid").uncacheable;
        let base = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
        assert_eq!(reason(&format!("{{{base},\"n\":2}}")), Some("n>1"));
        assert_eq!(reason(&format!("{{{base},\"tools\":[]}}")), Some("tools"));
        assert_eq!(
            reason(&format!("{{{base},\"logprobs\":true}}")),
            Some("logprobs")
        );
        assert_eq!(reason(&format!("{{{base},\"logprobs\":false}}")), None);
    }

    #[test]
    fn canonical_form_ignores_key_order_and_transport_fields() {
        let a = parse(Route::Chat, r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"x"}],"stream":true,"user":"u1"}"#)
            .expect("valid");
        let b = parse(
            Route::Chat,
            r#"{"messages":[{"content":"x","role":"user"}],"temperature":0,"model":"m"}"#,
        )
        .expect("valid");
        assert_eq!(a.canonical_output_fields(), b.canonical_output_fields());
        let c = parse(
            Route::Chat,
            r#"{"messages":[{"content":"x","role":"user"}],"temperature":0.5,"model":"m"}"#,
        )
        .expect("valid");
        assert_ne!(a.canonical_output_fields(), c.canonical_output_fields());
    }
}
