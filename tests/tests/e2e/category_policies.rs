//! Per-category policy and request shape as the gateway applies them: TTL, quota, hot
//! sampling, answer size, tool calls, and the conversation a question is asked in.

use std::time::Duration;

use cachet_tests::upstream::CHAT_PATH;
use cachet_tests::{ChatCall, Reply};
use serde_json::json;

use crate::support::*;

fn is_hit(outcome: &cachet_tests::CallOutcome) -> bool {
    outcome.cache().unwrap_or_default().starts_with("hit")
}

#[test]
fn an_entry_expires_after_its_categorys_ttl() {
    let mut stack = Stack::start_with(|config| {
        config.set("categories.general.ttl", "1s").unwrap();
    });
    stack.chat_stored(&ChatCall::new(EVEREST));
    // Sleeping is the point here: expiry is about time passing, and the assertion only
    // fails if the entry is still served after its TTL, never because the machine is slow.
    std::thread::sleep(Duration::from_millis(1500));
    let later = stack.chat(&ChatCall::new(EVEREST));
    assert_eq!(
        later.cache(),
        Some("miss"),
        "expired entry served: {later:#?}"
    );
    let paraphrase = stack.chat(&ChatCall::new(EVEREST_PARAPHRASE));
    assert_ne!(
        paraphrase.text(),
        format!("Answer 1 to: {EVEREST}"),
        "expired entry served semantically"
    );
}

#[test]
fn the_oldest_entry_goes_when_a_category_is_full() {
    let mut stack = Stack::start_with(|config| {
        config.set("categories.general.max_entries", 2).unwrap();
    });
    for question in [EVEREST, FRANCE, BOILING] {
        stack.chat_stored(&ChatCall::new(question));
    }
    let oldest = stack.chat(&ChatCall::new(EVEREST));
    assert_eq!(
        oldest.cache(),
        Some("miss"),
        "quota not enforced: {oldest:#?}"
    );
    let newest = stack.chat(&ChatCall::new(BOILING));
    assert_eq!(newest.cache(), Some("hit-exact"), "{newest:#?}");
}

#[test]
fn hot_sampling_above_the_categorys_limit_bypasses_the_cache() {
    let mut stack = Stack::start_with(|config| {
        config
            .set("categories.general.max_temperature", 0.5)
            .unwrap();
    });
    let hot = ChatCall::new(EVEREST).param("temperature", json!(1.2));
    let first = stack.chat(&hot);
    assert_eq!(first.cache(), Some("bypass"), "{first:#?}");
    let second = stack.chat(&hot);
    assert_eq!(second.cache(), Some("bypass"), "{second:#?}");
    let cool = ChatCall::new(FRANCE).param("temperature", json!(0.2));
    stack.chat_stored(&cool);
    assert_eq!(stack.chat(&cool).cache(), Some("hit-exact"));
    assert_eq!(stack.upstream.calls(CHAT_PATH), 3);
}

#[test]
fn an_answer_over_the_entry_size_limit_is_passed_through_uncached() {
    let mut stack = Stack::start_with(|config| {
        config.set("cache.max_entry_bytes", 2048).unwrap();
    });
    let long = "word ".repeat(1000);
    stack.upstream.set_fallback(Reply::Text(long.clone()));
    // Each call checks that the one before it was not stored.
    for stream in [false, true, false] {
        let outcome = stack.chat(&ChatCall::new(EVEREST).stream(stream));
        assert_eq!(outcome.cache(), Some("miss"), "{outcome:#?}");
        assert_eq!(
            outcome.text(),
            long,
            "a large answer must reach the client whole"
        );
    }
    assert_eq!(stack.upstream.calls(CHAT_PATH), 3);
}

#[test]
fn requests_with_tools_are_not_cached() {
    let mut stack = Stack::start();
    let tools = json!([{
        "type": "function",
        "function": {"name": "height_of", "parameters": {"type": "object", "properties": {}}},
    }]);
    for _ in 0..2 {
        let outcome = stack.chat(&ChatCall::new(EVEREST).param("tools", tools.clone()));
        assert!(outcome.ok, "{outcome:#?}");
        assert_eq!(outcome.cache(), Some("bypass"), "{outcome:#?}");
    }
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2);
}

#[test]
fn the_same_follow_up_in_another_conversation_misses() {
    let mut stack = Stack::start();
    let about = |topic: &str| {
        ChatCall::new("How tall is it?")
            .turn("user", &format!("Tell me about {topic}."))
            .turn("assistant", &format!("{topic} is a famous landmark."))
    };
    let eiffel = stack.chat_stored(&about("the Eiffel Tower"));
    assert_eq!(eiffel.cache(), Some("miss"));
    let same_conversation = stack.chat(&about("the Eiffel Tower"));
    assert_eq!(
        same_conversation.cache(),
        Some("hit-exact"),
        "{same_conversation:#?}"
    );
    let other = stack.chat(&about("the Statue of Liberty"));
    assert!(
        !is_hit(&other),
        "a follow-up must not be answered from another conversation: {other:#?}"
    );
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2);
}

#[test]
fn a_replayed_stream_is_proper_sse_ending_in_done() {
    let mut stack = Stack::start();
    stack.chat_stored(&ChatCall::new(EVEREST));
    let body = json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": EVEREST}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = stack
        .raw()
        .post("/v1/chat/completions", KEY_A, body.to_string());
    assert_eq!(response.header("x-cachet-cache"), Some("hit-exact"));
    let events = cachet_tests::sse::parse(&response.body);
    assert_eq!(
        events.last(),
        Some(&cachet_tests::sse::SseData::Done),
        "{events:#?}"
    );
    let chunks: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            cachet_tests::sse::SseData::Json(chunk) => Some(chunk),
            _ => None,
        })
        .collect();
    assert_eq!(
        chunks.len() + 1,
        events.len(),
        "only JSON chunks and [DONE]: {events:#?}"
    );
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], chunks[0]["id"], "{chunk}");
    }
    assert_eq!(
        cachet_tests::sse::streamed_text(&events),
        format!("Answer 1 to: {EVEREST}")
    );
    assert_eq!(
        cachet_tests::sse::finish_reason(&events).as_deref(),
        Some("stop")
    );
    assert!(
        chunks
            .last()
            .is_some_and(|chunk| chunk["usage"].is_object()),
        "include_usage asks for a final usage chunk: {events:#?}"
    );
}

#[test]
fn the_same_conversation_reworded_hits() {
    let mut stack = Stack::start();
    let stored = stack.chat_stored(
        &ChatCall::new("How tall is it?")
            .turn("user", "Tell me about the Eiffel Tower.")
            .turn(
                "assistant",
                "The Eiffel Tower is a famous landmark in Paris.",
            ),
    );
    assert_eq!(stored.cache(), Some("miss"));
    let reworded = stack.chat(
        &ChatCall::new("How tall is it?")
            .turn("user", "Can you tell me about the Eiffel Tower?")
            .turn(
                "assistant",
                "Sure: the Eiffel Tower is a famous landmark in Paris.",
            ),
    );
    assert_eq!(reworded.cache(), Some("hit-semantic"), "{reworded:#?}");
    assert_eq!(reworded.text(), stored.text());
    assert_eq!(stack.upstream.calls(CHAT_PATH), 1);
}
