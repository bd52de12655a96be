//! Embedding prototypes: a request no header or rule claims goes to the category whose
//! example questions it is nearest to, if near enough and clearly ahead of the runner-up.
//!
//! The cosines in the comments are all-MiniLM-L6-v2 (int8) against each category's centroid
//! (the normalised mean of its normalised example vectors), measured with the reference
//! recipe of `scripts/py/minilm_reference.py`.

use std::time::Duration;

use cachet_tests::GatewayConfig;
use reqwest::Method;

use crate::policy_support::*;

/// Longest wait for the gateway to store the answers it has sent.
const FILL_TIMEOUT: Duration = Duration::from_secs(20);

const MIN_SIMILARITY: f64 = 0.3;
const MARGIN: f64 = 0.05;

/// cooking 0.471, travel 0.127.
const COOKING: &str = "What is the best way to cook rice?";
/// cooking 0.050, travel 0.384.
const TRAVEL: &str = "What documents do I need to rent a car abroad?";
/// cooking 0.178, travel 0.054: clearly nearest to cooking, but not near enough.
const FAR: &str = "How do I keep my sourdough starter alive?";
/// cooking 0.430, travel 0.412: near both, ahead by less than the margin.
const BETWEEN: &str = "How do I cook local dishes while travelling in Europe?";
/// cooking 0.364, but the `code` category's keyword rule claims it first.
const CODE_RULE: &str = "How do I grill a steak in python?";

fn prototype_category(examples: &[&str]) -> toml::Table {
    // Selectable, so that the header case below can name one.
    let mut table = section("threshold = 0.9\nttl = \"1h\"\nselectable_by_header = true");
    table.insert(
        "examples".into(),
        toml::Value::Array(examples.iter().map(|e| (*e).into()).collect()),
    );
    table
}

const COOKING_EXAMPLES: [&str; 4] = [
    "How long should I bake a loaf of bread?",
    "What temperature do I roast a chicken at?",
    "How do I make a tomato sauce for pasta?",
    "Can I substitute butter with olive oil when baking?",
];
const TRAVEL_EXAMPLES: [&str; 4] = [
    "What should I pack for a week in Japan?",
    "Do I need a visa to visit Brazil?",
    "How do I find cheap flights to Europe?",
    "Which neighbourhood is best to stay in when visiting Lisbon?",
];

fn classifier(config: &mut GatewayConfig) {
    config.replace_section(
        "classifier",
        section(&format!(
            "min_similarity = {MIN_SIMILARITY}\nmargin = {MARGIN}"
        )),
    );
}

#[test]
fn requests_no_rule_claims_go_to_the_nearest_prototype() {
    let stack = PolicyStack::start(|config| {
        classifier(config);
        for (name, examples) in [("cooking", COOKING_EXAMPLES), ("travel", TRAVEL_EXAMPLES)] {
            config.add_section(
                &format!("categories.{name}"),
                prototype_category(&examples),
                Some("categories.general"),
            );
        }
    });
    let check = |question: &str, headers: &[(&str, &str)], expected: &str, why: &str| {
        let response = stack.chat_with(question, headers);
        assert_eq!(
            category_of(&response),
            expected,
            "{question:?} {headers:?}: {why}; {response:#?}"
        );
    };
    check(COOKING, &[], "cooking", "nearest to the cooking examples");
    check(TRAVEL, &[], "travel", "nearest to the travel examples");
    check(FAR, &[], "general", "below min_similarity");
    check(BETWEEN, &[], "general", "ahead by less than the margin");
    check(
        CODE_RULE,
        &[],
        "code",
        "a keyword rule comes before prototypes",
    );
    check(
        COOKING,
        &[("x-cachet-category", "travel")],
        "travel",
        "the header comes before prototypes",
    );
    // A hit reports the category the entry was classified into.
    stack.wait_for("the six answers to be stored", FILL_TIMEOUT, || {
        stack.fills() >= 6.0
    });
    let again = stack.chat(COOKING);
    assert!(is_hit(&again), "{again:#?}");
    assert_eq!(category_of(&again), "cooking", "{again:#?}");
}

#[test]
fn examples_added_by_a_reload_are_embedded_and_used() {
    let mut stack = PolicyStack::start(|config| {
        config.admin_token(ADMIN_TOKEN);
        classifier(config);
    });
    let before = stack.chat(COOKING);
    assert_eq!(category_of(&before), "general", "{before:#?}");
    stack.rewrite_config(|config| {
        config.add_section(
            "categories.cooking",
            prototype_category(&COOKING_EXAMPLES),
            Some("categories.general"),
        );
    });
    let reloaded = stack.admin(Method::POST, "/admin/reload", None);
    assert_eq!(reloaded.status, 200, "{reloaded:#?}");
    let after = stack.chat(COOKING);
    assert_eq!(category_of(&after), "cooking", "{after:#?}");
    assert_eq!(
        after.cache(),
        Some("miss"),
        "a new category starts empty: {after:#?}"
    );
}
