//! The decision on one semantic candidate, shared by the gateway's lookup and `cachet eval`:
//! similarity against the category's threshold, then the category's hit guards on the two
//! questions, then the conversation context.

use crate::config::{Category, Threshold};
use crate::context::{ContextSettings, ConversationView, compare_context};

use super::{Refusal, RefusalReason, check_guards};

/// What is known about one candidate when it is judged.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub cached: &'a ConversationView,
    pub query: &'a ConversationView,
    /// Cosine similarity of the two lookup texts' embeddings.
    pub similarity: f32,
    /// Cosine similarity of the two topic texts' embeddings, when both have one.
    pub topic_similarity: Option<f32>,
}

/// `Ok` serves the candidate; a refusal names the check that failed, for the lookup trace.
/// `threshold` is the one in force: the category's own, or its relaxed one under load
/// ([`Category::effective_threshold`]).
pub fn judge(
    category: &Category,
    threshold: Threshold,
    candidate: &Candidate<'_>,
    context: &ContextSettings,
) -> Result<(), Refusal> {
    let threshold = threshold.get();
    if candidate.similarity < threshold {
        return Err(Refusal {
            reason: RefusalReason::Threshold,
            detail: format!("similarity {:.3} < {threshold:.3}", candidate.similarity),
        });
    }
    check_guards(
        &candidate.cached.lookup_text,
        &candidate.query.lookup_text,
        &category.guards,
    )?;
    compare_context(
        candidate.cached,
        candidate.query,
        candidate.topic_similarity,
        context,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Message, conversation_view};

    fn view(text: &str) -> ConversationView {
        conversation_view(&[Message {
            role: "user",
            content: text,
        }])
        .expect("one user message")
    }

    fn check(threshold: f64, similarity: f32, a: &str, b: &str, expected: Option<&str>) {
        let config = Config::from_toml(&format!(
            "[categories.general]\nthreshold = {threshold:?}\n"
        ))
        .expect("valid");
        let category = config.category("general").expect("general");
        let (a, b) = (view(a), view(b));
        let candidate = Candidate {
            cached: &a,
            query: &b,
            similarity,
            topic_similarity: None,
        };
        let got = judge(
            category,
            category.threshold,
            &candidate,
            &ContextSettings::default(),
        )
        .err();
        assert_eq!(got.as_ref().map(|r| r.reason.as_str()), expected, "{got:?}");
    }

    proptest::proptest! {
        #[test]
        fn every_hit_is_at_or_above_the_threshold(
            threshold in 0.0f64..=1.0,
            similarity in -1.0f32..=1.0,
            a in "[A-Za-z0-9 ,.?']{1,40}",
            b in "[A-Za-z0-9 ,.?']{1,40}",
        ) {
            let config =
                Config::from_toml(&format!("[categories.general]\nthreshold = {threshold:?}\n"))
                    .expect("valid");
            let category = config.category("general").expect("general");
            let (a, b) = (view(&a), view(&b));
            let candidate = Candidate { cached: &a, query: &b, similarity, topic_similarity: None };
            if judge(category, category.threshold, &candidate, &ContextSettings::default()).is_ok() {
                proptest::prop_assert!(similarity >= category.threshold.get());
            }
        }
    }

    #[test]
    fn threshold_then_guards_decide() {
        check(
            0.5,
            0.9,
            "Is the 9:15 on time?",
            "Is the 9:15 on time?",
            None,
        );
        check(
            0.5,
            0.4,
            "Is the 9:15 on time?",
            "Is the 9:15 on time?",
            Some("threshold"),
        );
        check(
            0.5,
            0.9,
            "Is the 9:15 on time?",
            "Is the 9:45 on time?",
            Some("numbers"),
        );
    }
}
