//! Properties of the cache pipeline (plan → lookup → fill) under random questions, tenants and
//! categories, with a deterministic bag-of-words embedding in place of the ONNX model: every
//! semantic hit clears its category's threshold, no tenant ever hits another's entry, and every
//! stored entry expires exactly one category TTL after it was stored.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cachet_gateway::cache::{Cache, HitKind};
use cachet_gateway::policy::Policy;
use cachet_gateway::request::CacheRequest;
use cachet_policies::Config;
use common::{answer, headers, runtime};
use proptest::prelude::*;

const CONFIG: &str = r#"
[categories.code]
threshold = 0.8
ttl = "2h"
guards = []
match.keywords = ["python"]

[categories.general]
threshold = 0.6
ttl = "1d"
guards = []
"#;

const WORDS: [&str; 12] = [
    "python", "capital", "france", "bread", "bake", "river", "longest", "sort", "list", "how",
    "what", "is",
];

fn question() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS.to_vec()), 2..6).prop_map(|w| w.join(" "))
}

fn request(text: &str) -> CacheRequest {
    common::chat(text)
}

async fn cache() -> Cache {
    common::cache(CONFIG).await
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hits_clear_the_threshold_and_stay_within_their_tenant(
        stored in prop::collection::vec((question(), 0u8..3), 1..12),
        queries in prop::collection::vec((question(), 0u8..3), 1..12),
    ) {
        runtime().block_on(async {
            let cache = cache().await;
            for (text, tenant) in &stored {
                let req = request(text);
                let plan = cache.plan(&req, &headers(*tenant)).await;
                cache.fill(&req, &plan, None, answer(&format!("{tenant}:{text}")), Duration::ZERO).await;
            }
            for (text, tenant) in &queries {
                let req = request(text);
                let plan = cache.plan(&req, &headers(*tenant)).await;
                let Some(hit) = cache.lookup(&req, &plan).await.hit else { continue };
                let served = hit.answer.response["choices"][0]["message"]["content"].as_str().unwrap_or("").to_owned();
                let (owner, question) = served.split_once(':').expect("answer names its tenant");
                prop_assert_eq!(owner, tenant.to_string(), "served another tenant's answer");
                let threshold = cache.config().category(&plan.category).expect("category").threshold.get();
                prop_assert!(hit.similarity >= threshold, "similarity {} < {}", hit.similarity, threshold);
                if hit.kind == HitKind::Exact {
                    prop_assert_eq!(question, text.as_str());
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn every_entry_expires_one_category_ttl_after_it_is_stored(
        stored in prop::collection::vec((question(), 0u8..3), 1..12),
    ) {
        runtime().block_on(async {
            let cache = cache().await;
            for (text, tenant) in &stored {
                let req = request(text);
                let plan = cache.plan(&req, &headers(*tenant)).await;
                cache.fill(&req, &plan, None, answer(text), Duration::ZERO).await;
                let entry = cache.store().get(plan.key.entry_id(), 0).await.expect("stored");
                let entry = &entry.meta;
                let ttl = cache.config().category(&plan.category).expect("category").ttl;
                prop_assert_eq!(entry.category.as_str(), plan.category.as_str());
                prop_assert_eq!(u128::from(entry.expires_at_ms - entry.created_at_ms), ttl.as_millis());
            }
            Ok(())
        })?;
    }
}

/// A reload whose new category cannot get an index (a graph parameter the index refuses) is
/// refused whole: the categories in force keep their indexes and entries.
#[test]
fn a_policy_that_cannot_be_applied_changes_nothing() {
    runtime().block_on(async {
        let cache = cache().await;
        let req = request("how do I sort a list in python");
        let plan = cache.plan(&req, &headers(0)).await;
        cache
            .fill(&req, &plan, None, answer("sorted"), Duration::ZERO)
            .await;
        let before = cache.entries_per_category();

        let text = format!("{CONFIG}\n[index]\nm = 1\n\n[categories.extra]\nthreshold = 0.9\n");
        let config = Arc::new(Config::from_toml(&text).expect("the file itself is valid"));
        let policy = Policy::build(config, cache.embedder())
            .await
            .expect("policy");
        assert!(cache.apply(policy).await.is_err(), "m = 1 has no graph");

        assert_eq!(cache.entries_per_category(), before);
        let hit = cache.lookup(&req, &plan).await.hit.expect("still cached");
        assert_eq!(hit.kind, HitKind::Exact);
        let paraphrase = request("how do I sort a python list");
        let plan = cache.plan(&paraphrase, &headers(0)).await;
        assert!(
            cache.lookup(&paraphrase, &plan).await.hit.is_some(),
            "the index still serves semantic hits"
        );
    });
}
