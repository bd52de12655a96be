//! Per-category quotas and eviction policies, through HTTP: a full category drops the entry
//! its policy ranks lowest (LFU: the least used; LRU: the least recently used), and a byte
//! quota holds.

use std::time::Duration;

use cachet_tests::Reply;
use reqwest::Method;

use crate::policy_support::*;
use crate::support::*;

/// Three unrelated questions (cosine ≤ 0.40), so only exact hits happen.
const A: &str = EVEREST;
const B: &str = FRANCE;
const C: &str = PHOTOSYNTHESIS;

const BYTE_QUOTA: usize = 6000;
/// Three answers this long cannot fit the byte quota; one fits with room to spare.
const LONG_ANSWER_BYTES: usize = 2100;

/// A category reached only through the `x-cachet-category` header (it has no rules).
fn boxed(quota: &str) -> toml::Table {
    section(&format!(
        "threshold = 0.9\nttl = \"1h\"\nselectable_by_header = true\n{quota}"
    ))
}

/// GDSF's cost of an answer is the upstream's latency; this one is expensive.
const SLOW_UPSTREAM: Duration = Duration::from_millis(300);

fn start() -> PolicyStack {
    PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
        for (name, quota) in [
            ("lfu_box", "max_entries = 2\neviction = \"lfu\"".to_owned()),
            ("lru_box", "max_entries = 2\neviction = \"lru\"".to_owned()),
            (
                "gdsf_box",
                "max_entries = 2\neviction = \"gdsf\"".to_owned(),
            ),
            (
                "bytes_box",
                format!("max_bytes = {BYTE_QUOTA}\neviction = \"lru\""),
            ),
        ] {
            config.add_section(&format!("categories.{name}"), boxed(&quota), None);
        }
    })
}

fn assert_cache(stack: &PolicyStack, category: &str, question: &str, expected: &str, why: &str) {
    let response = stack.chat_in(category, question);
    assert_eq!(
        response.cache(),
        Some(expected),
        "{category} {question:?}: {why}; log:\n{}\n{response:#?}",
        stack.gateway.log_tail()
    );
}

/// Stores A and B, uses A twice and then B once, and stores C into a two-entry category.
fn fill_past_the_quota(stack: &PolicyStack, category: &str) {
    stack.chat_in_stored(category, A);
    stack.chat_in_stored(category, B);
    for question in [A, A, B] {
        assert_cache(stack, category, question, "hit-exact", "stored just now");
    }
    stack.chat_in_stored(category, C);
    stack.wait_for("the quota to hold", Duration::from_secs(5), || {
        stack.category_stats(category)["entries"].as_u64() == Some(2)
    });
}

#[test]
fn lfu_keeps_the_most_used_entry_and_lru_the_most_recent() {
    let stack = start();

    fill_past_the_quota(&stack, "lfu_box");
    // Survivors first: a miss would store its question again and evict another entry.
    assert_cache(
        &stack,
        "lfu_box",
        A,
        "hit-exact",
        "used twice, LFU keeps it",
    );
    assert_cache(&stack, "lfu_box", C, "hit-exact", "the newest entry stays");
    assert_cache(&stack, "lfu_box", B, "miss", "used once, LFU evicts it");

    fill_past_the_quota(&stack, "lru_box");
    assert_cache(&stack, "lru_box", B, "hit-exact", "used last, LRU keeps it");
    assert_cache(&stack, "lru_box", C, "hit-exact", "the newest entry stays");
    assert_cache(
        &stack,
        "lru_box",
        A,
        "miss",
        "least recently used, LRU evicts it",
    );
}

#[test]
fn a_byte_quota_holds() {
    let stack = start();
    stack
        .upstream
        .set_fallback(Reply::Text("x".repeat(LONG_ANSWER_BYTES)));
    for question in [A, B, C] {
        stack.chat_in_stored("bytes_box", question);
    }
    let stats = stack.category_stats("bytes_box");
    let entries = stats["entries"].as_u64().unwrap_or(u64::MAX);
    let bytes = stats["bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (1..3).contains(&entries),
        "three long answers cannot all fit: {stats}"
    );
    assert!(
        bytes >= LONG_ANSWER_BYTES as u64 && bytes <= BYTE_QUOTA as u64,
        "bytes over quota, or not counting the answer: {stats}"
    );
    assert_cache(
        &stack,
        "bytes_box",
        C,
        "hit-exact",
        "the newest entry stays",
    );
    assert_cache(
        &stack,
        "bytes_box",
        A,
        "miss",
        "the oldest entry goes first",
    );
}

#[test]
fn gdsf_gives_up_a_large_cheap_answer_before_a_small_expensive_one() {
    let stack = start();
    // A: small and slow to get; B: large and instant; then C. LRU or LFU would evict A, the
    // oldest; GreedyDual-Size-Frequency ranks by cost per byte and evicts B.
    stack.upstream.push(Reply::Delayed(
        SLOW_UPSTREAM,
        Box::new(Reply::Text("Small answer.".into())),
    ));
    stack.chat_in_stored("gdsf_box", A);
    stack
        .upstream
        .push(Reply::Text("y".repeat(LONG_ANSWER_BYTES)));
    stack.chat_in_stored("gdsf_box", B);
    stack.chat_in_stored("gdsf_box", C);
    stack.wait_for("the quota to hold", Duration::from_secs(5), || {
        stack.category_stats("gdsf_box")["entries"].as_u64() == Some(2)
    });
    assert_cache(
        &stack,
        "gdsf_box",
        A,
        "hit-exact",
        "small and expensive, GDSF keeps it",
    );
    assert_cache(&stack, "gdsf_box", C, "hit-exact", "the newest entry stays");
    assert_cache(
        &stack,
        "gdsf_box",
        B,
        "miss",
        "large and cheap, GDSF evicts it",
    );
}

#[test]
fn a_reload_that_lowers_a_quota_evicts_at_once() {
    let mut stack = start();
    stack.chat_in_stored("lru_box", A);
    stack.chat_in_stored("lru_box", B);
    assert_cache(&stack, "lru_box", A, "hit-exact", "stored just now");
    stack.rewrite_config(|config| {
        config.set("categories.lru_box.max_entries", 1).unwrap();
    });
    let reloaded = stack.admin(Method::POST, "/admin/reload", None);
    assert_eq!(reloaded.status, 200, "{reloaded:#?}");
    // The watcher may have applied the file first; either way it is applied by now.
    assert_eq!(
        stack.category_stats("lru_box")["entries"].as_u64(),
        Some(1),
        "a lowered quota must evict without waiting for the next insert"
    );
    assert_cache(&stack, "lru_box", A, "hit-exact", "used last, LRU keeps it");
    assert_cache(
        &stack,
        "lru_box",
        B,
        "miss",
        "least recently used, evicted by the reload",
    );
}
