//! What the client and the categories say about caching: `Cache-Control: no-cache` and
//! `no-store`, uncacheable categories and requests.

use cachet_tests::ChatCall;
use cachet_tests::upstream::CHAT_PATH;
use serde_json::json;

use crate::support::*;

fn is_hit(outcome: &cachet_tests::CallOutcome) -> bool {
    outcome.cache().unwrap_or_default().starts_with("hit")
}

#[test]
fn no_cache_skips_the_lookup_but_stores_the_answer() {
    let mut stack = Stack::start();
    let first = stack.chat_stored(&ChatCall::new(EVEREST));
    let fresh = stack.chat_stored(&ChatCall::new(EVEREST).header("Cache-Control", "no-cache"));
    assert_eq!(fresh.cache(), Some("bypass"), "{fresh:#?}");
    assert_eq!(fresh.text(), format!("Answer 2 to: {EVEREST}"));
    assert_ne!(fresh.text(), first.text());
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2);

    // An answer fetched with no-cache is stored: a later plain request hits it.
    let question = SOURDOUGH;
    let bypassed = stack.chat_stored(&ChatCall::new(question).header("Cache-Control", "no-cache"));
    assert_eq!(bypassed.cache(), Some("bypass"), "{bypassed:#?}");
    let later = stack.chat(&ChatCall::new(question));
    assert_eq!(later.cache(), Some("hit-exact"), "{later:#?}");
    assert_eq!(later.text(), bypassed.text());
    assert_eq!(stack.upstream.calls(CHAT_PATH), 3);
}

#[test]
fn no_store_answers_are_not_stored() {
    let mut stack = Stack::start();
    for stream in [false, true] {
        let question = if stream { BOILING } else { FRANCE };
        let first = stack.chat(
            &ChatCall::new(question)
                .stream(stream)
                .header("Cache-Control", "no-store"),
        );
        assert!(first.ok, "{first:#?}");
        assert!(!is_hit(&first), "{first:#?}");
        let second = stack.chat(&ChatCall::new(question).stream(stream));
        assert_eq!(
            second.cache(),
            Some("miss"),
            "no-store answer was stored: {second:#?}"
        );
    }
    assert_eq!(stack.upstream.calls(CHAT_PATH), 4);
}

#[test]
fn the_live_category_is_never_cached() {
    let mut stack = Stack::start();
    let question = "What is the weather in Paris today?";
    for n in 1..=2 {
        let outcome = stack.chat(&ChatCall::new(question));
        assert_eq!(
            outcome.header("x-cachet-category"),
            Some("live"),
            "{outcome:#?}"
        );
        assert!(!is_hit(&outcome), "{outcome:#?}");
        assert_eq!(outcome.text(), format!("Answer {n} to: {question}"));
    }
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2);
}

#[test]
fn code_questions_fall_into_the_code_category() {
    let mut stack = Stack::start();
    let question = "How do I reverse a list in Python?";
    let first = stack.chat_stored(&ChatCall::new(question));
    assert_eq!(
        first.header("x-cachet-category"),
        Some("code"),
        "{first:#?}"
    );
    let again = stack.chat(&ChatCall::new(question));
    assert_eq!(again.cache(), Some("hit-exact"), "{again:#?}");
}

#[test]
fn the_category_header_picks_a_category_that_allows_it() {
    let mut stack = Stack::start_with(|config| {
        config
            .set("categories.code.selectable_by_header", true)
            .unwrap();
    });
    let named = |stack: &mut Stack, category: &str| {
        let outcome = stack.chat(&ChatCall::new(EVEREST).header("x-cachet-category", category));
        outcome
            .header("x-cachet-category")
            .unwrap_or_else(|| panic!("no x-cachet-category: {outcome:#?}"))
            .to_owned()
    };
    assert_eq!(named(&mut stack, "code"), "code");
    // `live` does not allow it (the default): ignored, and the response names `general`.
    assert_eq!(named(&mut stack, "live"), "general");
}

#[test]
fn several_choices_are_not_cached() {
    let mut stack = Stack::start();
    for _ in 0..2 {
        let outcome = stack.chat(&ChatCall::new(EVEREST).param("n", json!(2)));
        assert!(outcome.ok, "{outcome:#?}");
        assert!(
            !is_hit(&outcome),
            "n=2 must not be served from the cache: {outcome:#?}"
        );
    }
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2);
}

#[test]
fn output_affecting_parameters_are_part_of_the_key() {
    let mut stack = Stack::start();
    stack.chat_stored(&ChatCall::new(EVEREST).param("max_tokens", json!(16)));
    let longer = stack.chat(&ChatCall::new(EVEREST).param("max_tokens", json!(512)));
    // Not a semantic hit either: the answer cut at 16 tokens is not the answer to 512.
    assert_eq!(
        longer.cache(),
        Some("miss"),
        "max_tokens is part of the exact key and the partition: {longer:#?}"
    );
    let paraphrase = stack.chat(&ChatCall::new(EVEREST_PARAPHRASE).param("max_tokens", json!(16)));
    assert_eq!(paraphrase.cache(), Some("hit-semantic"), "{paraphrase:#?}");
}
