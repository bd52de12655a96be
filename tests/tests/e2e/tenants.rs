//! Tenant isolation: API keys never share cache entries unless a category says `shared`.

use cachet_tests::ChatCall;
use cachet_tests::upstream::CHAT_PATH;
use toml::Table;

use crate::support::*;

#[test]
fn two_tenants_never_see_each_others_answers() {
    let mut stack = Stack::start();
    let a = stack.chat_stored(&ChatCall::new(EVEREST).key(KEY_A));
    assert_eq!(a.cache(), Some("miss"));

    // Same question, other key: a miss answered by the upstream with B's own key.
    let b = stack.chat_stored(&ChatCall::new(EVEREST).key(KEY_B));
    assert_eq!(b.cache(), Some("miss"), "cross-tenant hit: {b:#?}");
    assert_eq!(b.text(), format!("Answer 2 to: {EVEREST}"));
    // Now both tenants have an entry; B's paraphrase must be served B's answer.
    let b_paraphrase = stack.chat(&ChatCall::new(EVEREST_PARAPHRASE).key(KEY_B));
    assert_eq!(
        b_paraphrase.cache(),
        Some("hit-semantic"),
        "{b_paraphrase:#?}"
    );
    assert_eq!(b_paraphrase.text(), b.text());

    let a_again = stack.chat(&ChatCall::new(EVEREST).key(KEY_A));
    assert_eq!(a_again.cache(), Some("hit-exact"));
    assert_eq!(a_again.text(), a.text());

    assert_eq!(
        stack.upstream.authorizations(),
        vec![
            Some(format!("Bearer {KEY_A}")),
            Some(format!("Bearer {KEY_B}"))
        ],
        "misses are forwarded with the client's own key"
    );
}

#[test]
fn a_paraphrase_from_another_tenant_misses() {
    let mut stack = Stack::start();
    stack.chat_stored(&ChatCall::new(BOILING).key(KEY_A));
    let b = stack.chat(&ChatCall::new(BOILING_PARAPHRASE).key(KEY_B));
    assert_eq!(b.cache(), Some("miss"), "cross-tenant semantic hit: {b:#?}");
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2);
}

#[test]
fn a_shared_category_serves_every_tenant() {
    let mut stack = Stack::start_with(|config| {
        let mut faq = Table::new();
        faq.insert("threshold".into(), 0.9.into());
        faq.insert("ttl".into(), "1h".into());
        faq.insert("shared".into(), true.into());
        let mut rules = Table::new();
        rules.insert("keywords".into(), vec!["opening hours"].into());
        faq.insert("match".into(), rules.into());
        let first = config.section_names()[..]
            .iter()
            .find(|name| name.starts_with("categories."))
            .map(|name| (*name).to_owned());
        config.add_section("categories.faq", faq, first.as_deref());
    });
    let question = "What are the opening hours of the museum?";
    let a = stack.chat_stored(&ChatCall::new(question).key(KEY_A));
    assert_eq!(a.header("x-cachet-category"), Some("faq"), "{a:#?}");
    assert_eq!(a.cache(), Some("miss"));
    let b = stack.chat(&ChatCall::new(question).key(KEY_B));
    assert!(
        b.cache().unwrap_or_default().starts_with("hit"),
        "a shared category must serve other tenants: {b:#?}"
    );
    assert_eq!(b.text(), a.text());
    assert_eq!(stack.upstream.calls(CHAT_PATH), 1);
}
