//! The admin API: disabled without an `[admin]` section, behind its bearer token otherwise;
//! statistics per category, invalidation, and the entry id every answer carries.

use reqwest::Method;
use serde_json::{Value, json};

use crate::policy_support::*;
use crate::support::*;

const CODE_QUESTION: &str = "How do I reverse a list in python?";

/// Every admin route, with a body where it takes one.
fn admin_routes() -> [(Method, &'static str, Option<Value>); 3] {
    [
        (Method::GET, "/admin/stats", None),
        (Method::POST, "/admin/reload", None),
        (
            Method::POST,
            "/admin/invalidate",
            Some(json!({"category": "general"})),
        ),
    ]
}

#[test]
fn without_an_admin_section_the_admin_api_is_disabled() {
    let stack = PolicyStack::start(|config| {
        // The default config may carry an example; this scenario needs none.
        let _ = config.remove("admin");
    });
    assert!(
        !stack.config().section_names().contains(&"admin"),
        "the scenario needs a config without [admin]"
    );
    for (method, path, body) in admin_routes() {
        for token in [None, Some(ADMIN_TOKEN)] {
            let response = stack.admin_as(token, method.clone(), path, body.clone());
            assert_eq!(response.status, 404, "{method} {path}: {response:#?}");
            let error = response.assert_openai_error();
            assert_eq!(error["code"], "admin_disabled", "{method} {path}: {error}");
        }
    }
    // Nothing was invalidated by the refused calls.
    stack.chat_stored(EVEREST);
    assert_eq!(stack.chat(EVEREST).cache(), Some("hit-exact"));
}

#[test]
fn the_admin_api_needs_its_token_then_reports_and_invalidates() {
    let stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
    });

    // Without the token, or with another, every route is a 401 OpenAI-shaped error.
    for (method, path, body) in admin_routes() {
        for token in [None, Some("not-the-token"), Some("")] {
            let response = stack.admin_as(token, method.clone(), path, body.clone());
            assert_eq!(
                response.status, 401,
                "{method} {path} {token:?}: {response:#?}"
            );
            response.assert_openai_error();
        }
    }

    let everest = stack.chat_stored(EVEREST);
    stack.chat_stored(FRANCE);
    let code = stack.chat_stored(CODE_QUESTION);
    assert_eq!(category_of(&code), "code", "{code:#?}");

    // Every answer names its entry: 16 hex digits, the same on the miss and on the hit.
    let entry = |response: &RawResponse| {
        let id = response
            .header("x-cachet-entry")
            .unwrap_or_else(|| panic!("no x-cachet-entry: {response:#?}"))
            .to_owned();
        assert!(
            id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "x-cachet-entry is not 16 hex digits: {id:?}"
        );
        id
    };
    let everest_id = entry(&everest);
    let everest_hit = stack.chat(EVEREST);
    assert_eq!(everest_hit.cache(), Some("hit-exact"));
    assert_eq!(entry(&everest_hit), everest_id, "{everest_hit:#?}");
    let code_id = entry(&code);
    assert_ne!(code_id, everest_id);

    let stats = stack.stats();
    assert!(stats["store"].is_object(), "{stats}");
    assert_eq!(stats["load"]["state"], "normal", "{stats}");
    let general = stack.category_stats("general");
    assert_eq!(general["entries"].as_u64(), Some(2), "{general}");
    assert!(
        general["bytes"].as_u64().is_some_and(|b| b > 0),
        "{general}"
    );
    assert_close(general["threshold"].as_f64(), 0.55, &general);
    assert_close(general["ttl_seconds"].as_f64(), 86400.0, &general);
    let code_stats = stack.category_stats("code");
    assert_eq!(code_stats["entries"].as_u64(), Some(1), "{code_stats}");
    assert_close(code_stats["threshold"].as_f64(), 0.93, &code_stats);
    assert_close(
        code_stats["ttl_seconds"].as_f64(),
        7.0 * 86400.0,
        &code_stats,
    );

    // A body with no condition would delete everything by accident: refused.
    for body in [json!({}), json!({"category": null})] {
        let empty = stack.admin(Method::POST, "/admin/invalidate", Some(body.clone()));
        assert_eq!(empty.status, 400, "{body}: {empty:#?}");
        empty.assert_openai_error();
    }
    assert_eq!(stack.chat(FRANCE).cache(), Some("hit-exact"));

    // Every condition given must hold: these match nothing.
    for body in [
        json!({"api_key": KEY_B}),
        json!({"question_contains": "everest", "category": "code"}),
        json!({"question_contains": "everest", "api_key": KEY_B}),
    ] {
        let none = stack.admin(Method::POST, "/admin/invalidate", Some(body.clone()));
        assert_eq!(none.status, 200, "{body}: {none:#?}");
        assert_eq!(none.json()["deleted"], 0, "{body}: {none:#?}");
    }
    assert_eq!(stack.chat(EVEREST).cache(), Some("hit-exact"));

    let by_category = stack.admin(
        Method::POST,
        "/admin/invalidate",
        Some(json!({"category": "general"})),
    );
    assert_eq!(by_category.status, 200, "{by_category:#?}");
    assert_eq!(by_category.json()["deleted"], 2, "{by_category:#?}");
    assert_eq!(stack.category_stats("general")["entries"].as_u64(), Some(0));
    for question in [EVEREST, FRANCE_PARAPHRASE] {
        let gone = stack.chat(question);
        assert_eq!(
            gone.cache(),
            Some("miss"),
            "invalidated, still served: {gone:#?}"
        );
    }
    let kept = stack.chat(CODE_QUESTION);
    assert_eq!(
        kept.cache(),
        Some("hit-exact"),
        "another category's entry went: {kept:#?}"
    );

    let by_id = stack.admin(
        Method::POST,
        "/admin/invalidate",
        Some(json!({"id": code_id})),
    );
    assert_eq!(by_id.status, 200, "{by_id:#?}");
    assert_eq!(by_id.json()["deleted"], 1, "{by_id:#?}");
    let gone = stack.chat(CODE_QUESTION);
    assert_eq!(gone.cache(), Some("miss"), "{gone:#?}");

    // By tenant and question text together.
    stack.chat_stored(BOILING);
    let by_text = stack.admin(
        Method::POST,
        "/admin/invalidate",
        Some(json!({"api_key": KEY_A, "question_contains": "BOILING POINT"})),
    );
    assert_eq!(by_text.status, 200, "{by_text:#?}");
    assert_eq!(by_text.json()["deleted"], 1, "{by_text:#?}");
    assert_eq!(stack.chat(BOILING).cache(), Some("miss"));
}
