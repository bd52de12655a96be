//! The load-adaptive policy: an overloaded or slow upstream switches categories to their
//! relaxed threshold and TTL within seconds, and they return only after load stayed low for
//! `hold`.

use std::time::{Duration, Instant};

use cachet_tests::Reply;
use cachet_tests::upstream::{CHAT_PATH, Gate};

use crate::policy_support::*;
use crate::support::*;

/// The general category's thresholds: the test's paraphrases (cosine 0.96 to 0.98) miss at
/// the normal one and hit at the relaxed one.
const NORMAL_THRESHOLD: f64 = 0.99;
const RELAXED_THRESHOLD: f64 = 0.9;
const NORMAL_TTL_S: f64 = 86400.0;
const RELAXED_TTL_S: f64 = 2.0 * 86400.0;

/// Load is sampled every second; allow for two shared cores.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(6);

/// `[adaptive]` with levels that only the signal under test can cross.
fn adaptive(signal_levels: &str, hold: &str) -> toml::Table {
    let mut table = section(&format!(
        r#"
enabled = true
high_in_flight = 1000
low_in_flight = 500
high_latency = "30s"
low_latency = "20s"
high_error_rate = 0.99
low_error_rate = 0.98
hold = "{hold}"
"#
    ));
    table.extend(section(signal_levels));
    table
}

fn relaxed_general(config: &mut cachet_tests::GatewayConfig) {
    config
        .set("categories.general.threshold", NORMAL_THRESHOLD)
        .unwrap();
    config
        .set("categories.general.relaxed_threshold", RELAXED_THRESHOLD)
        .unwrap();
    config.set("categories.general.relaxed_ttl", "2d").unwrap();
}

/// Waits for the first load sample (taken a second after start), then asserts the policy
/// starts normal.
fn assert_starts_normal(stack: &PolicyStack) {
    stack.wait_for("cachet_load_relaxed in /metrics", SWITCH_TIMEOUT, || {
        stack.metrics().get("cachet_load_relaxed").is_some()
    });
    assert!(!is_relaxed(stack), "relaxed before any load");
}

fn is_relaxed(stack: &PolicyStack) -> bool {
    let metrics = stack.metrics();
    match metrics.get("cachet_load_relaxed") {
        Some(value) => value == 1.0,
        None => panic!("no cachet_load_relaxed in /metrics: {metrics:?}"),
    }
}

/// The effective threshold and TTL of `general` as `/metrics` and `/admin/stats` show them.
fn assert_general_policy(stack: &PolicyStack, threshold: f64, ttl_s: f64, state: &str) {
    let metrics = stack.metrics();
    let label = "category=\"general\"";
    assert_close(
        labelled(&metrics, "cachet_effective_threshold", label),
        threshold,
        &format!("{metrics:?}"),
    );
    assert_close(
        labelled(&metrics, "cachet_effective_ttl_seconds", label),
        ttl_s,
        &format!("{metrics:?}"),
    );
    let stats = stack.stats();
    assert_eq!(stats["load"]["state"], state, "{stats}");
    let general = stack.category_stats("general");
    assert_close(general["threshold"].as_f64(), threshold, &general);
    assert_close(general["ttl_seconds"].as_f64(), ttl_s, &general);
}

#[test]
fn rate_limits_relax_the_threshold_until_load_stays_low_for_hold() {
    let hold = Duration::from_secs(3);
    let stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
        relaxed_general(config);
        config.replace_section(
            "adaptive",
            adaptive("high_error_rate = 0.3\nlow_error_rate = 0.05", "3s"),
        );
    });
    let everest = stack.chat_stored(EVEREST);
    stack.chat_stored(FRANCE);
    stack.chat_stored(PHOTOSYNTHESIS);
    let normal = stack.chat(FRANCE_PARAPHRASE);
    assert_eq!(
        normal.cache(),
        Some("miss"),
        "the normal threshold must refuse this paraphrase: {normal:#?}"
    );
    assert_starts_normal(&stack);
    assert_general_policy(&stack, NORMAL_THRESHOLD, NORMAL_TTL_S, "normal");

    // A burst of 429s, all of them another tenant's: the relaxed state is fleet-wide, so B's
    // rate limits relax the threshold A's paraphrase is held to (SECURITY.md says so).
    stack.upstream.set_fallback(Reply::rate_limited());
    let calls = stack.upstream.calls(CHAT_PATH);
    for i in 0..10 {
        let question = format!("Burst question {i}: what is {i} squared?");
        let response = stack.post_chat_as(KEY_B, &question, &[]);
        assert_eq!(response.status, 429, "{response:#?}");
    }
    assert_eq!(stack.upstream.calls(CHAT_PATH), calls + 10);
    stack.upstream.set_fallback(Reply::Echo);
    stack.wait_for("the relaxed state", SWITCH_TIMEOUT, || is_relaxed(&stack));
    let rate = stack.metrics().sum("cachet_upstream_overload_rate");
    assert!(rate > 0.0, "relaxed without a recorded overload: {rate}");
    assert_general_policy(&stack, RELAXED_THRESHOLD, RELAXED_TTL_S, "relaxed");

    let relaxed = stack.chat(EVEREST_PARAPHRASE);
    let refusals: Vec<_> = stack
        .metrics()
        .0
        .into_iter()
        .filter(|(series, _)| series.starts_with("cachet_guard_refusals_total"))
        .collect();
    assert_eq!(
        relaxed.cache(),
        Some("hit-semantic"),
        "the relaxed threshold must serve this paraphrase (refusals so far: {refusals:?}): \
         {relaxed:#?}"
    );
    assert_eq!(relaxed.content(), everest.content());

    // Healthy traffic: the overload rate falls below its low level, and the state stays
    // relaxed for `hold` after that before it returns. A reading of the rate still above
    // the low level at time t was sampled before t, so load went low at a later sample and
    // the return comes `hold` after that: the first normal reading is more than `hold` after
    // the last high one, however late the polls are.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_high = None;
    let mut healthy = 0;
    let returned = loop {
        assert!(
            Instant::now() < deadline,
            "still relaxed 20 s after the burst; log:\n{}",
            stack.gateway.log_tail()
        );
        let metrics = stack.metrics();
        let now = Instant::now();
        if metrics.get("cachet_load_relaxed") != Some(1.0) {
            break now;
        }
        if metrics.sum("cachet_upstream_overload_rate") > 0.05 {
            last_high = Some(now);
        }
        if healthy < 20 {
            stack.chat(&format!(
                "Healthy question {healthy}: what is {healthy} cubed?"
            ));
            healthy += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let last_high = last_high.unwrap_or_else(|| {
        panic!("the overload rate was never seen above its low level while relaxed")
    });
    let stayed = returned - last_high;
    assert!(
        stayed >= hold - Duration::from_millis(200),
        "back to normal {stayed:?} after the overload rate was last seen high, before hold \
         ({hold:?})"
    );
    assert_general_policy(&stack, NORMAL_THRESHOLD, NORMAL_TTL_S, "normal");
    let normal_again = stack.chat(PHOTOSYNTHESIS_PARAPHRASE);
    assert_eq!(
        normal_again.cache(),
        Some("miss"),
        "the normal threshold must apply again: {normal_again:#?}"
    );
}

#[test]
fn a_slow_upstream_relaxes_the_policy_and_answers_stored_meanwhile_keep_the_relaxed_ttl() {
    let stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
        relaxed_general(config);
        config.set("categories.general.ttl", "1s").unwrap();
        config.set("categories.general.relaxed_ttl", "1h").unwrap();
        config.replace_section(
            "adaptive",
            adaptive("high_latency = \"400ms\"\nlow_latency = \"150ms\"", "1s"),
        );
    });
    assert_starts_normal(&stack);
    assert_general_policy(&stack, NORMAL_THRESHOLD, 1.0, "normal");
    // The first answer's latency starts the average (a fast one first would hold it down).
    for i in 0..2 {
        stack.upstream.push(Reply::Delayed(
            Duration::from_millis(900),
            Box::new(Reply::Echo),
        ));
        let slow = stack.chat(&format!("Slow question {i}: what is {i} halved?"));
        assert_eq!(slow.cache(), Some("miss"));
    }
    let mut latency_seen = 0.0_f64;
    stack.wait_for("the relaxed state", SWITCH_TIMEOUT, || {
        let metrics = stack.metrics();
        latency_seen = latency_seen.max(metrics.sum("cachet_upstream_latency_ewma_seconds"));
        metrics.get("cachet_load_relaxed") == Some(1.0)
    });
    assert!(
        latency_seen >= 0.4,
        "relaxed, but the latency EWMA shown was at most {latency_seen} s"
    );
    assert_general_policy(&stack, RELAXED_THRESHOLD, 3600.0, "relaxed");
    // Stored while relaxed: it keeps the relaxed TTL after the policy returns to normal.
    stack.chat_stored(BOILING);
    // Fast answers (and idle seconds) bring the average down again.
    stack.wait_for("the normal state", Duration::from_secs(15), || {
        !is_relaxed(&stack)
    });
    assert_general_policy(&stack, NORMAL_THRESHOLD, 1.0, "normal");
    // At least a second has passed since it was stored: the EWMA had to halve twice, then
    // stay low for `hold`.
    let kept = stack.chat(BOILING);
    assert_eq!(
        kept.cache(),
        Some("hit-exact"),
        "an answer stored while relaxed must keep relaxed_ttl: {kept:#?}"
    );
    // The control: under the normal policy an answer lives one second.
    stack.chat_stored(SOURDOUGH);
    std::thread::sleep(Duration::from_millis(1300));
    let expired = stack.chat(SOURDOUGH);
    assert_eq!(
        expired.cache(),
        Some("miss"),
        "an answer stored under the normal 1 s TTL must expire: {expired:#?}"
    );
    assert_eq!(stack.chat(BOILING).cache(), Some("hit-exact"));
}

#[test]
fn requests_waiting_on_the_upstream_relax_the_policy() {
    let stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
        relaxed_general(config);
        config.replace_section(
            "adaptive",
            adaptive("high_in_flight = 3\nlow_in_flight = 0", "1s"),
        );
    });
    assert_starts_normal(&stack);
    let gate = Gate::new();
    for _ in 0..4 {
        stack.upstream.push(Reply::Gated {
            before: "Held ".into(),
            after: "answer".into(),
            gate: gate.clone(),
        });
    }
    std::thread::scope(|scope| {
        let waiting: Vec<_> = (0..4)
            .map(|i| {
                let stack = &stack;
                scope.spawn(move || {
                    stack.post_chat(&format!("Held question {i}: what is {i} plus {i}?"), &[])
                })
            })
            .collect();
        let relaxed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            stack.wait_for("the relaxed state", SWITCH_TIMEOUT, || is_relaxed(&stack));
            assert_general_policy(&stack, RELAXED_THRESHOLD, RELAXED_TTL_S, "relaxed");
        }));
        // The held requests must end whatever happened, or the scope would never close.
        gate.open();
        for handle in waiting {
            let response = handle.join().unwrap();
            assert_eq!(response.status, 200, "{response:#?}");
            assert_eq!(response.content(), "Held answer");
        }
        if let Err(panic) = relaxed {
            std::panic::resume_unwind(panic);
        }
    });
    stack.wait_for("the normal state", Duration::from_secs(10), || {
        !is_relaxed(&stack)
    });
    assert_general_policy(&stack, NORMAL_THRESHOLD, NORMAL_TTL_S, "normal");
}
