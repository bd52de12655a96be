//! Config hot reload: a changed file applies without a restart (polled, and on
//! `POST /admin/reload`); a file that does not validate is refused with every problem, and the
//! running policy stays in force.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::policy_support::*;
use crate::support::*;

/// The watcher polls every second; several gateways share two cores during a run.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A question only the `astronomy` category's keyword rule claims.
const TELESCOPE: &str = "Which telescope should a beginner buy?";
const TELESCOPE_LATER: &str = "Is a telescope with a larger aperture always better?";

/// The `astronomy` category the scenarios add, routed by a keyword.
fn astronomy() -> toml::Table {
    section(
        r#"
threshold = 0.9
ttl = "1h"
match.keywords = ["telescope"]
"#,
    )
}

#[test]
fn a_changed_file_applies_without_a_restart() {
    let mut stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
    });
    stack.chat_stored(EVEREST);
    stack.chat_stored(FRANCE);
    // Under the starting policy (general at 0.55) a paraphrase is a semantic hit.
    let before = stack.chat(FRANCE_PARAPHRASE);
    assert_eq!(before.cache(), Some("hit-semantic"), "{before:#?}");
    let unrouted = stack.chat(TELESCOPE);
    assert_eq!(category_of(&unrouted), "general", "{unrouted:#?}");

    // Only the file changes: the watcher must notice on its own.
    stack.rewrite_config(|config| {
        config.set("categories.general.threshold", 1.0).unwrap();
        config.add_section(
            "categories.astronomy",
            astronomy(),
            Some("categories.general"),
        );
    });
    stack.wait_for("the new threshold to apply", APPLY_TIMEOUT, || {
        stack.category_stats("general")["threshold"]
            .as_f64()
            .is_some_and(|t| t > 0.999)
    });

    let paraphrase = stack.chat(EVEREST_PARAPHRASE);
    assert_eq!(
        paraphrase.cache(),
        Some("miss"),
        "threshold 1.0 must stop a paraphrase hit: {paraphrase:#?}"
    );
    let exact = stack.chat(EVEREST);
    assert_eq!(
        exact.cache(),
        Some("hit-exact"),
        "entries survive a reload: {exact:#?}"
    );
    let routed = stack.chat(TELESCOPE_LATER);
    assert_eq!(
        category_of(&routed),
        "astronomy",
        "a category added by reload must take its keyword's requests: {routed:#?}"
    );
    let astronomy_stats = stack.category_stats("astronomy");
    assert_close(astronomy_stats["threshold"].as_f64(), 0.9, &astronomy_stats);
    assert_close(
        astronomy_stats["ttl_seconds"].as_f64(),
        3600.0,
        &astronomy_stats,
    );

    // A section that only a restart can apply is applied as far as it can be, and named.
    stack.rewrite_config(|config| {
        config.set("server.request_timeout", "9m").unwrap();
        config.set("categories.general.threshold", 0.55).unwrap();
    });
    let reloaded = stack.admin(Method::POST, "/admin/reload", None);
    assert_eq!(reloaded.status, 200, "{reloaded:#?}");
    let body = reloaded.json();
    assert_eq!(body["reloaded"], true, "{body}");
    let restart: Vec<&str> = body["restart_required"]
        .as_array()
        .unwrap_or_else(|| panic!("no restart_required list: {body}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // The watcher may have read the file between its write and this call; then it applied
    // the change and named the section in its log, and this reload found nothing new.
    if restart.is_empty() {
        let log = stack.gateway.log_tail();
        assert!(
            log.lines()
                .any(|line| line.contains("restart") && line.contains("server")),
            "no section named as needing a restart, in the answer ({body}) or the log:\n{log}"
        );
    } else {
        assert_eq!(restart, ["server"], "{body}");
    }
    assert_close(
        stack.category_stats("general")["threshold"].as_f64(),
        0.55,
        &"the reload answered before it applied",
    );
    let photosynthesis = stack.chat_stored(PHOTOSYNTHESIS);
    assert_eq!(category_of(&photosynthesis), "general");
    let hit = stack.chat(PHOTOSYNTHESIS_PARAPHRASE);
    assert_eq!(hit.cache(), Some("hit-semantic"), "{hit:#?}");
}

#[test]
fn a_refused_file_lists_every_problem_and_keeps_the_running_policy() {
    let mut stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
    });
    stack.chat_stored(EVEREST);
    stack.chat_stored(FRANCE);

    // Changes that would show (a threshold no paraphrase clears, a new keyword category),
    // plus four mistakes in four sections.
    let mut bad = stack.config().clone();
    bad.set("categories.general.threshold", 1.0).unwrap();
    bad.add_section(
        "categories.astronomy",
        astronomy(),
        Some("categories.general"),
    );
    bad.set("categories.general.ttl", "5x").unwrap();
    bad.set("categories.code.threshold", 1.5).unwrap();
    bad.set("store.kind", "floppy").unwrap();
    bad.set("cache.colour", "blue").unwrap();
    stack.write_raw_config(&bad.to_toml());

    // The watcher refuses it on its own, and says so in the log.
    stack.wait_for("the log to report the refused file", APPLY_TIMEOUT, || {
        let log = stack.gateway.log_tail();
        log.contains("refused") && log.contains("categories.general.ttl")
    });
    let refused = stack.admin(Method::POST, "/admin/reload", None);
    assert_eq!(refused.status, 400, "{refused:#?}");
    let body = refused.json();
    let error = &body["error"];
    assert_eq!(error["code"], "invalid_config", "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let problems = error["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list: {body}"));
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p["path"].as_str().unwrap_or_default())
        .collect();
    for expected in [
        "categories.general.ttl",
        "categories.code.threshold",
        "store.kind",
    ] {
        assert!(
            paths.contains(&expected),
            "problem {expected} not reported: {body}"
        );
    }
    assert!(
        problems.iter().any(|p| {
            let text = format!("{} {}", p["path"], p["message"]);
            text.contains("colour")
        }),
        "the unknown key cache.colour not reported: {body}"
    );
    assert!(
        problems
            .iter()
            .all(|p| p["message"].as_str().is_some_and(|m| !m.is_empty())),
        "every problem needs a message: {body}"
    );
    assert!(problems.len() >= 4, "{body}");

    // The running policy stays: the old threshold and the old categories.
    let paraphrase = stack.chat(EVEREST_PARAPHRASE);
    assert_eq!(
        paraphrase.cache(),
        Some("hit-semantic"),
        "a refused file must not change the threshold: {paraphrase:#?}"
    );
    let telescope = stack.chat(TELESCOPE);
    assert_eq!(
        category_of(&telescope),
        "general",
        "a refused file must not add categories: {telescope:#?}"
    );
    let general = stack.category_stats("general");
    assert_close(general["threshold"].as_f64(), 0.55, &general);
    assert_close(general["ttl_seconds"].as_f64(), 86400.0, &general);

    // Fixing the file applies it.
    stack.rewrite_config(|config| {
        config.set("categories.general.threshold", 1.0).unwrap();
        config.add_section(
            "categories.astronomy",
            astronomy(),
            Some("categories.general"),
        );
    });
    let applied = stack.admin(Method::POST, "/admin/reload", None);
    assert_eq!(applied.status, 200, "{applied:#?}");
    assert_eq!(applied.json()["reloaded"], true, "{applied:#?}");
    let restart = &applied.json()["restart_required"];
    assert_eq!(restart.as_array().map(Vec::len), Some(0), "{applied:#?}");
    let miss = stack.chat(FRANCE_PARAPHRASE);
    assert_eq!(miss.cache(), Some("miss"), "{miss:#?}");
    assert_eq!(category_of(&stack.chat(TELESCOPE_LATER)), "astronomy");
}
