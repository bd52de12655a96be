//! Tenancy in the cache pipeline (plan → lookup → fill): who a request is, which category a
//! client may choose, that output-affecting parameters separate semantic partitions, and that a
//! tenant at its quota evicts only its own entries.

mod common;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use cachet_gateway::cache::Cache;
use cachet_gateway::keys::Tenant;
use cachet_gateway::request::CacheRequest;
use common::{answer, cache, chat, chat_with, headers, runtime, text_of};
use serde_json::json;

const CONFIG: &str = r#"
[categories.faq]
shared = true
threshold = 0.6
guards = []
match.keywords = ["opening hours"]

[categories.pick]
selectable_by_header = true
threshold = 0.6
guards = []

[categories.general]
threshold = 0.6
guards = []
max_entries = 100
max_entries_per_tenant = 3
"#;

fn with_header(mut headers: HeaderMap, name: &'static str, value: &'static str) -> HeaderMap {
    headers.insert(name, HeaderValue::from_static(value));
    headers
}

async fn store(cache: &Cache, req: &CacheRequest, headers: &HeaderMap, text: &str) {
    let plan = cache.plan(req, headers).await;
    assert_eq!(plan.bypass, None, "{plan:?}");
    cache
        .fill(req, &plan, None, answer(text), Duration::ZERO)
        .await;
}

async fn served(cache: &Cache, req: &CacheRequest, headers: &HeaderMap) -> Option<String> {
    let plan = cache.plan(req, headers).await;
    let hit = cache.lookup(req, &plan).await.hit?;
    Some(text_of(&hit.answer.response).to_owned())
}

#[test]
fn keyless_requests_bypass_unless_the_operator_opts_in() {
    runtime().block_on(async {
        let cache = cache(CONFIG).await;
        let plan = cache.plan(&chat("hello"), &HeaderMap::new()).await;
        assert_eq!(plan.bypass, Some("anonymous"));
        assert!(!plan.lookup && !plan.store);

        let opted_in = common::cache(&format!("{CONFIG}\n[cache]\nanonymous = \"tenant\"\n")).await;
        let plan = opted_in.plan(&chat("hello"), &HeaderMap::new()).await;
        assert_eq!(plan.bypass, None);
        assert_eq!(plan.caller, Tenant::anonymous());
        assert_eq!(plan.tenant, Tenant::anonymous());
    });
}

#[test]
fn a_shared_category_is_chosen_only_by_its_rules() {
    runtime().block_on(async {
        let cache = cache(CONFIG).await;
        let naming_faq = with_header(headers(0), "x-cachet-category", "faq");
        let plan = cache.plan(&chat("what is my balance"), &naming_faq).await;
        assert_eq!(plan.category, "general", "the header may not pick faq");
        assert_eq!(plan.tenant, plan.caller);

        // A category that allows it may be picked; its tenant is still the caller's.
        let naming_pick = with_header(headers(0), "x-cachet-category", "pick");
        let plan = cache.plan(&chat("what is my balance"), &naming_pick).await;
        assert_eq!(
            (plan.category.as_str(), plan.classified_by),
            ("pick", "header")
        );

        // Chosen by its rules, faq is shared: one tenant for the entries, the caller kept.
        let plan = cache.plan(&chat("museum opening hours"), &headers(1)).await;
        assert_eq!(plan.category, "faq");
        assert_eq!(plan.tenant, Tenant::shared());
        assert_eq!(
            plan.caller,
            Tenant::from_headers(&headers(1)).expect("keyed")
        );
    });
}

#[test]
fn an_answer_stored_with_skewing_parameters_is_served_only_with_them() {
    runtime().block_on(async {
        let cache = cache(CONFIG).await;
        let question = "museum opening hours on sunday";
        // Tenant 1 stores a one-token answer and a logit-biased one in the shared category.
        for (extra, text) in [
            (json!({"max_tokens": 1}), "Mon"),
            (json!({"logit_bias": {"1234": 100}}), "biased"),
        ] {
            store(&cache, &chat_with(question, extra), &headers(1), text).await;
        }
        // Tenant 2 with default parameters, exact copy and paraphrase: nothing served.
        for asked in [question, "opening hours of the museum on sunday"] {
            assert_eq!(
                served(&cache, &chat(asked), &headers(2)).await,
                None,
                "{asked}"
            );
        }
        // With the same limit, the shared answer is served (to anyone: the category is shared).
        let same_limit = chat_with(
            "opening hours of the museum on sunday",
            json!({"max_tokens": 1}),
        );
        assert_eq!(
            served(&cache, &same_limit, &headers(2)).await.as_deref(),
            Some("Mon")
        );
        let other_limit = chat_with(question, json!({"max_tokens": 2}));
        assert_eq!(served(&cache, &other_limit, &headers(2)).await, None);
    });
}

#[test]
fn a_tenant_at_its_quota_evicts_only_its_own_entries() {
    runtime().block_on(async {
        let cache = cache(CONFIG).await;
        let kept = ["bread recipe", "river length", "sorting lists"];
        for question in kept {
            store(&cache, &chat(question), &headers(0), question).await;
        }
        // Another tenant stores ten times its quota.
        for i in 0..30 {
            let question = format!("flood question number {i}");
            store(&cache, &chat(&question), &headers(1), &question).await;
        }
        for question in kept {
            assert_eq!(
                served(&cache, &chat(question), &headers(0))
                    .await
                    .as_deref(),
                Some(question),
                "tenant 0 lost {question:?}"
            );
        }
        let general = cache
            .entries_per_category()
            .into_iter()
            .find(|(name, _, _)| name == "general")
            .expect("general");
        assert_eq!(general.1, 6, "three entries each");
        // Tenant 1 kept its three newest; its older entries left the store too.
        for (i, held) in [(0, false), (26, false), (27, true), (29, true)] {
            let req = chat(&format!("flood question number {i}"));
            let plan = cache.plan(&req, &headers(1)).await;
            let stored = cache.store().get(plan.key.entry_id(), 0).await.is_some();
            assert_eq!(stored, held, "flood question {i}");
        }
    });
}
