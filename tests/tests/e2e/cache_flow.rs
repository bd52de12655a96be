//! The cache's main path through the SDK: miss, exact hit, semantic hit, unrelated miss;
//! streamed and not, in every combination; the completions API.

use std::time::Duration;

use cachet_tests::upstream::{CHAT_PATH, COMPLETIONS_PATH, Gate};
use cachet_tests::{ChatCall, Reply};

use crate::support::*;

#[test]
fn question_then_same_then_paraphrase_then_unrelated() {
    let mut stack = Stack::start();

    let first = stack.chat_stored(&ChatCall::new(EVEREST));
    assert_eq!(first.text(), format!("Answer 1 to: {EVEREST}"));
    assert_eq!(first.cache(), Some("miss"), "{first:#?}");
    assert_eq!(first.header("x-cachet-category"), Some("general"));
    assert_eq!(first.header("x-cachet-similarity"), None);
    assert_eq!(stack.upstream.calls(CHAT_PATH), 1);

    let same = stack.chat(&ChatCall::new(EVEREST));
    assert_eq!(same.cache(), Some("hit-exact"), "{same:#?}");
    assert_eq!(same.text(), first.text());
    assert_eq!(same.finish_reason.as_deref(), Some("stop"));
    assert_eq!(same.header("x-cachet-category"), Some("general"));
    assert!(similarity(&same) >= 0.999, "{same:#?}");
    assert_eq!(
        stack.upstream.calls(CHAT_PATH),
        1,
        "an exact hit must not reach the upstream"
    );

    let paraphrase = stack.chat(&ChatCall::new(EVEREST_PARAPHRASE));
    assert_eq!(paraphrase.cache(), Some("hit-semantic"), "{paraphrase:#?}");
    assert_eq!(paraphrase.text(), first.text());
    let score = similarity(&paraphrase);
    assert!((0.90..1.0).contains(&score), "similarity {score}");
    assert_eq!(stack.upstream.calls(CHAT_PATH), 1);

    let unrelated = stack.chat(&ChatCall::new(SOURDOUGH));
    assert_eq!(unrelated.cache(), Some("miss"), "{unrelated:#?}");
    assert_eq!(unrelated.text(), format!("Answer 2 to: {SOURDOUGH}"));
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2);
}

#[test]
fn hits_get_a_fresh_id_and_created() {
    let mut stack = Stack::start();
    let first = stack.chat_stored(&ChatCall::new(FRANCE));
    let hit = stack.chat(&ChatCall::new(FRANCE));
    assert_eq!(hit.cache(), Some("hit-exact"), "{hit:#?}");
    let (first_id, hit_id) = (first.id.clone().unwrap(), hit.id.clone().unwrap());
    assert_ne!(
        hit_id, first_id,
        "a hit must not reuse the cached answer's id"
    );
    assert!(!hit_id.is_empty());
    assert!(hit.created.unwrap() >= first.created.unwrap());
    let again = stack.chat(&ChatCall::new(FRANCE));
    assert_ne!(again.id, hit.id, "two hits must not share an id");
}

#[test]
fn a_close_wording_with_another_meaning_misses() {
    let mut stack = Stack::start();
    stack.chat_stored(&ChatCall::new(FRANCE));
    let germany = stack.chat_stored(&ChatCall::new(GERMANY));
    assert_eq!(germany.cache(), Some("miss"), "{germany:#?}");
    assert_eq!(germany.text(), format!("Answer 2 to: {GERMANY}"));
    let paraphrase = stack.chat(&ChatCall::new(FRANCE_PARAPHRASE));
    assert_eq!(paraphrase.cache(), Some("hit-semantic"), "{paraphrase:#?}");
    assert_eq!(paraphrase.text(), format!("Answer 1 to: {FRANCE}"));
}

#[test]
fn a_streamed_miss_is_stored_and_served_to_a_plain_request() {
    let mut stack = Stack::start();
    let streamed = stack.chat_stored(&ChatCall::new(PHOTOSYNTHESIS).stream(true));
    assert_eq!(streamed.cache(), Some("miss"), "{streamed:#?}");
    assert_eq!(streamed.text(), format!("Answer 1 to: {PHOTOSYNTHESIS}"));
    assert_eq!(streamed.finish_reason.as_deref(), Some("stop"));
    assert!(
        streamed.chunks > 2,
        "the miss should stream through: {streamed:#?}"
    );

    let plain = stack.chat(&ChatCall::new(PHOTOSYNTHESIS));
    assert_eq!(plain.cache(), Some("hit-exact"), "{plain:#?}");
    assert_eq!(plain.text(), streamed.text());
    let paraphrase = stack.chat(&ChatCall::new(PHOTOSYNTHESIS_PARAPHRASE));
    assert_eq!(paraphrase.cache(), Some("hit-semantic"), "{paraphrase:#?}");
    assert_eq!(paraphrase.text(), streamed.text());
    assert_eq!(stack.upstream.calls(CHAT_PATH), 1);
}

#[test]
fn a_plain_miss_is_replayed_as_sse_to_a_streaming_request() {
    let mut stack = Stack::start();
    let plain = stack.chat_stored(&ChatCall::new(BOILING));
    assert_eq!(plain.cache(), Some("miss"));

    for (question, expected) in [(BOILING, "hit-exact"), (BOILING_PARAPHRASE, "hit-semantic")] {
        let streamed = stack.chat(&ChatCall::new(question).stream(true));
        assert_eq!(streamed.cache(), Some(expected), "{streamed:#?}");
        assert_eq!(
            streamed
                .header("content-type")
                .map(|v| v.starts_with("text/event-stream")),
            Some(true)
        );
        assert_eq!(streamed.text(), plain.text());
        assert_eq!(streamed.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            streamed.chunk_ids.len(),
            1,
            "one id across a replay: {streamed:#?}"
        );
        assert_ne!(streamed.id, plain.id);
    }
    assert_eq!(stack.upstream.calls(CHAT_PATH), 1);
}

#[test]
fn a_streamed_miss_is_replayed_to_a_streaming_request() {
    let mut stack = Stack::start();
    let call = ChatCall::new(EVEREST)
        .stream(true)
        .param("stream_options", serde_json::json!({"include_usage": true}));
    let first = stack.chat_stored(&call);
    assert_eq!(first.cache(), Some("miss"));
    let second = stack.chat(&call);
    assert_eq!(second.cache(), Some("hit-exact"), "{second:#?}");
    assert_eq!(second.text(), first.text());
    assert_eq!(stack.upstream.calls(CHAT_PATH), 1);
}

#[test]
fn the_upstream_sees_the_request_as_sent() {
    let mut stack = Stack::start();
    let call = ChatCall::new(EVEREST)
        .system("You are terse.")
        .param("max_tokens", serde_json::json!(64));
    stack.chat(&call);
    let requests = stack.upstream.requests();
    let body = requests[0].body.as_ref().unwrap();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["content"], EVEREST);
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Bearer sk-tenant-a")
    );
}

#[test]
fn another_system_prompt_or_model_is_another_context() {
    let mut stack = Stack::start();
    stack.chat_stored(&ChatCall::new(EVEREST));
    let pirate = stack.chat(&ChatCall::new(EVEREST).system("Answer like a pirate."));
    assert!(
        !pirate.cache().unwrap_or_default().starts_with("hit"),
        "a different system prompt must not be served another context's answer: {pirate:#?}"
    );
    let other_model = stack.chat(&ChatCall::new(EVEREST).model("test-model-2"));
    assert!(
        !other_model.cache().unwrap_or_default().starts_with("hit"),
        "another model must not be served this model's answer: {other_model:#?}"
    );
    assert_eq!(stack.upstream.calls(CHAT_PATH), 3);
}

#[test]
fn the_completions_api_caches_plain_and_streamed() {
    let mut stack = Stack::start();
    let first = stack.completion_stored(&ChatCall::new(FRANCE));
    assert_eq!(first.cache(), Some("miss"), "{first:#?}");
    assert_eq!(first.text(), format!("Answer 1 to: {FRANCE}"));
    let plain_hit = stack.client.completion(&ChatCall::new(FRANCE)).unwrap();
    assert_eq!(plain_hit.cache(), Some("hit-exact"), "{plain_hit:#?}");
    assert_eq!(plain_hit.text(), first.text());
    let streamed_hit = stack
        .client
        .completion(&ChatCall::new(FRANCE).stream(true))
        .unwrap();
    assert_eq!(streamed_hit.cache(), Some("hit-exact"), "{streamed_hit:#?}");
    assert_eq!(streamed_hit.text(), first.text());
    assert_eq!(streamed_hit.finish_reason.as_deref(), Some("stop"));

    // A chat with the same words is another route: it must not be served a completion.
    let chat = stack.chat(&ChatCall::new(FRANCE));
    assert!(
        !chat.cache().unwrap_or_default().starts_with("hit"),
        "{chat:#?}"
    );
    assert_eq!(stack.upstream.calls(COMPLETIONS_PATH), 1);
    assert_eq!(stack.upstream.calls(CHAT_PATH), 1);
}

#[test]
fn a_streamed_miss_is_relayed_as_it_arrives() {
    let mut stack = Stack::start();
    let gate = Gate::new();
    stack.upstream.push(Reply::Gated {
        before: "Mount Everest is ".into(),
        after: "8,849 metres tall.".into(),
        gate: gate.clone(),
    });
    let body = serde_json::json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": EVEREST}],
        "stream": true,
    });
    // The upstream holds the rest of its answer until the client has seen the first part:
    // a gateway that buffered the stream would show nothing before the gate opens.
    let (response, early) = stack.raw().post_watching(
        "/v1/chat/completions",
        KEY_A,
        body.to_string(),
        "Everest",
        Duration::from_secs(30),
        || gate.open(),
    );
    assert!(
        early,
        "the first chunks were held back until the upstream finished: {response:?}"
    );
    assert_eq!(response.header("x-cachet-cache"), Some("miss"));
    let events = cachet_tests::sse::parse(&response.body);
    assert_eq!(
        cachet_tests::sse::streamed_text(&events),
        "Mount Everest is 8,849 metres tall."
    );
    // The whole answer, not the part seen first, is what gets stored.
    stack.wait_for_fills(1.0, &response);
    let hit = stack.chat(&ChatCall::new(EVEREST));
    assert_eq!(hit.cache(), Some("hit-exact"), "{hit:#?}");
    assert_eq!(hit.text(), "Mount Everest is 8,849 metres tall.");
}
