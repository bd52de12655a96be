//! Server-sent events as the OpenAI API uses them: `data: <json>` events ending in
//! `data: [DONE]`. Written by the scripted upstream, read by tests that talk raw HTTP.

use serde_json::Value;

/// One event's data.
#[derive(Debug, Clone, PartialEq)]
pub enum SseData {
    /// A JSON chunk.
    Json(Value),
    /// The `[DONE]` terminator.
    Done,
    /// Data that is neither (a protocol error the test should see).
    Other(String),
}

/// One SSE event carrying `data`.
pub fn event(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// The `data` of every event in `body`, in order. Comment lines and other fields are skipped;
/// an event's several `data:` lines are joined with newlines, as the SSE spec says.
pub fn parse(body: &str) -> Vec<SseData> {
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    for line in body.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push(classify(data));
            }
            continue;
        }
        if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    if let Some(data) = data {
        events.push(classify(data));
    }
    events
}

/// The concatenated text of a chat (`delta.content`) or completion (`text`) stream.
pub fn streamed_text(events: &[SseData]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            SseData::Json(chunk) => chunk.pointer("/choices/0").cloned(),
            _ => None,
        })
        .filter_map(|choice| {
            choice
                .pointer("/delta/content")
                .or_else(|| choice.get("text"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

/// The last non-null `finish_reason` of a stream.
pub fn finish_reason(events: &[SseData]) -> Option<String> {
    events
        .iter()
        .filter_map(|event| match event {
            SseData::Json(chunk) => chunk
                .pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        })
        .next_back()
}

fn classify(data: String) -> SseData {
    if data == "[DONE]" {
        return SseData::Done;
    }
    match serde_json::from_str(&data) {
        Ok(value) => SseData::Json(value),
        Err(_) => SseData::Other(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_chunks_done_and_multiline_data() {
        let body = format!(
            "{}: keep-alive comment\r\n\r\n{}data: line one\ndata: line two\n\n{}",
            event(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#),
            event(r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}"#),
            event("[DONE]"),
        );
        let events = parse(&body);
        assert_eq!(events.len(), 4);
        assert_eq!(events[2], SseData::Other("line one\nline two".into()));
        assert_eq!(events[3], SseData::Done);
        assert_eq!(streamed_text(&events), "Hello");
        assert_eq!(finish_reason(&events).as_deref(), Some("stop"));
    }

    #[test]
    fn completion_chunks_carry_text() {
        let events = vec![
            SseData::Json(json!({"choices": [{"text": "a", "finish_reason": null}]})),
            SseData::Json(json!({"choices": [{"text": "b", "finish_reason": "length"}]})),
        ];
        assert_eq!(streamed_text(&events), "ab");
        assert_eq!(finish_reason(&events).as_deref(), Some("length"));
    }

    #[test]
    fn an_unterminated_last_event_is_kept() {
        assert_eq!(parse("data: [DONE]"), vec![SseData::Done]);
    }
}
