//! Error budgets and shadow checks: a category with `max_wrong_rate` serves at the threshold its
//! calibration data allows; shadow checks send its semantic hits upstream again, and when the
//! fresh answers stop agreeing with the cached ones the category tightens itself. A category
//! that is not cached is never shadow-checked.

use std::io::Write as _;
use std::time::Duration;

use cachet_tests::Reply;
use cachet_tests::upstream::CHAT_PATH;
use reqwest::Method;

use crate::policy_support::*;
use crate::support::*;

/// Longest wait for the background shadow checks to reach the upstream and be counted.
const SHADOW_TIMEOUT: Duration = Duration::from_secs(30);

/// Calibration data shaped so that the budget of 0.2 allows threshold 0.93 and the halved
/// budget of 0.1 only 0.99 (the upper bound of 8 traps served of 108 is about 0.13):
/// 50 should-hits at 0.93 and 50 at 0.99, 100 traps at 0.5 and 8 at 0.97.
fn calibration_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut text = String::from("similarity\tpassed\ttrap\tgroup\n");
    for (similarity, trap, n) in [(0.93, 0, 50), (0.99, 0, 50), (0.5, 1, 100), (0.97, 1, 8)] {
        for _ in 0..n {
            text.push_str(&format!("{similarity}\t1\t{trap}\tsynthetic\n"));
        }
    }
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn threshold(stack: &PolicyStack) -> f64 {
    stack.category_stats("general")["threshold"]
        .as_f64()
        .unwrap()
}

#[test]
fn a_category_tightens_itself_when_shadow_checks_find_its_answers_changed() {
    let calibration = calibration_file();
    let path = calibration.path().display().to_string();
    let stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
        let _ = config.remove("categories.general.threshold");
        config
            .set("categories.general.max_wrong_rate", 0.2)
            .unwrap();
        config.set("categories.general.shadow_rate", 1.0).unwrap();
        config.replace_section("calibration", section(&format!("file = {path:?}")));
        config.replace_section(
            "shadow",
            section("min_samples = 4\nwindow = 50\nagreement = 0.6"),
        );
    });
    // The calibrated point, and what the calibration data says of it.
    let general = stack.category_stats("general");
    assert!((threshold(&stack) - 0.93).abs() < 1e-6, "{general}");
    assert_eq!(general["calibration"]["traps"], 108, "{general}");
    assert!(
        general["calibration"]["wrong_upper_bound"]
            .as_f64()
            .unwrap()
            <= 0.2
    );

    // The paraphrase (cosine 0.954) hits; while the upstream answers alike, every shadow
    // check agrees and nothing changes.
    stack.chat_stored(FRANCE);
    for i in 0..4 {
        let hit = stack.chat(FRANCE_PARAPHRASE);
        assert_eq!(hit.cache(), Some("hit-semantic"), "{hit:#?}");
        assert_eq!(
            stack
                .upstream
                .wait_for_calls(CHAT_PATH, 2 + i, SHADOW_TIMEOUT),
            2 + i,
            "the shadow check of hit {i} reaches the upstream"
        );
    }
    stack.wait_for("four agreeing shadow checks", SHADOW_TIMEOUT, || {
        stack.category_stats("general")["shadow"]["samples"] == 4
    });
    let general = stack.category_stats("general");
    assert_eq!(general["shadow"]["disagreed"], 0, "{general}");
    assert_eq!(general["tightened"], 0, "{general}");

    // The upstream's answers change: the shadow checks disagree until the lower bound of the
    // wrong rate passes the budget (5 of 9 at 95%: 0.25 > 0.2), and the category halves its
    // budget (threshold 0.99), so the paraphrase misses.
    stack.upstream.set_fallback(Reply::Text(
        "Tram tickets in Lisbon cost three euros and the museums open at nine.".to_owned(),
    ));
    for hits in 1..=5 {
        let calls = stack.upstream.calls(CHAT_PATH);
        let hit = stack.chat(FRANCE_PARAPHRASE);
        assert_eq!(hit.cache(), Some("hit-semantic"), "hit {hits}: {hit:#?}");
        stack
            .upstream
            .wait_for_calls(CHAT_PATH, calls + 1, SHADOW_TIMEOUT);
        stack.wait_for("the shadow check to be counted", SHADOW_TIMEOUT, || {
            stack.category_stats("general")["shadow"]["total_checks"] == 4 + hits
        });
        if hits == 4 {
            // 4 of 8: the lower bound (0.19) is still within the budget.
            let general = stack.category_stats("general");
            assert_eq!(general["tightened"], 0, "{general}");
        }
    }
    stack.wait_for("the category to tighten", SHADOW_TIMEOUT, || {
        stack.category_stats("general")["tightened"] == 1
    });
    assert!((threshold(&stack) - 0.99).abs() < 1e-6);
    let missed = stack.chat(FRANCE_PARAPHRASE);
    assert_eq!(missed.cache(), Some("miss"), "{missed:#?}");
    let metrics = stack.metrics();
    assert_eq!(metrics.get("cachet_shadow_tightenings_total"), Some(1.0));
    assert!(metrics.sum("cachet_estimated_wrong_rate_lower_bound") > 0.2);
}

#[test]
fn a_category_that_is_not_cached_is_never_shadow_checked() {
    let stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
        config.set("categories.general.shadow_rate", 1.0).unwrap();
    });
    // `live` (weather, today, ...) is cacheable = false in the default config.
    let question = "What's the weather forecast for Leeds today?";
    for _ in 0..3 {
        let response = stack.chat(question);
        assert_eq!(response.cache(), Some("bypass"), "{response:#?}");
    }
    // One upstream call per request: no background call was added.
    assert_eq!(stack.upstream.calls(CHAT_PATH), 3);
    let stats = stack.admin(Method::GET, "/admin/stats", None).json();
    let live = stats["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "live")
        .unwrap()
        .clone();
    assert_eq!(live["shadow_rate"], 0.0, "{live}");
    assert!(live["shadow"].is_null(), "{live}");
    assert_eq!(
        stack.metrics().get("cachet_shadow_checks_started_total"),
        None
    );
}
