//! Conversation context: what a multi-turn request's cache entry is matched on besides its
//! last user message. The last message is classified: a confirmation ("yes please", "the
//! first one") depends on everything said before and needs an equivalent context; a
//! message that refers back (pronouns, "so ...", very short questions) needs the same
//! topic (first user message, compared by embedding) and no changed detail; a standalone
//! question needs only no changed detail. A changed detail is a number, date or name
//! replaced by another in a pair of corresponding turns (paired by shared content words),
//! so reworded history and extra small talk still match.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::guards::{Analysed, IGNORABLE, Refusal, RefusalReason, align, same_word, stem};

/// One chat message as the context logic sees it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

/// How much the last user message leans on what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalKind {
    Standalone,
    Anaphoric,
    Confirmation,
}

/// A conversation reduced to what lookups compare; stored with an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationView {
    /// The last user message: the text embedded and searched.
    pub lookup_text: String,
    pub kind: FinalKind,
    /// The first earlier user message, embedded by the caller for the topic comparison.
    pub topic_text: Option<String>,
    /// Earlier turns as `(is_user, text)`, system messages left out.
    turns: Vec<(bool, String)>,
}

/// Tunable limits of the context comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextSettings {
    /// Cosine similarity the two topic messages need when the last message refers back.
    pub topic_threshold: f32,
    /// Dice overlap of content words above which two turns are taken to correspond.
    pub turn_overlap: f32,
}

impl Default for ContextSettings {
    fn default() -> Self {
        Self {
            topic_threshold: 0.55,
            turn_overlap: 0.5,
        }
    }
}

const CONFIRM: &str = "go ahead yes please yep yeah sure ok okay do it that first second third \
    one option let lets fine great proceed confirm thanks thank then";
const WH: &str = "how what when where which who why whats";
const ANAPHORA: &str =
    "it that these those they them their he him his she her one ones then instead again else";
const OPENERS: &str = "and so also then but ok okay great right yes yeah go";

fn set(words: &'static str) -> HashSet<&'static str> {
    words.split_whitespace().collect()
}

/// Builds the view of a chat, or `None` when it has no user message.
pub fn conversation_view(messages: &[Message<'_>]) -> Option<ConversationView> {
    let last = messages.iter().rposition(|m| m.role == "user")?;
    let earlier: Vec<(bool, String)> = messages[..last]
        .iter()
        .filter(|m| m.role == "user" || m.role == "assistant")
        .map(|m| (m.role == "user", m.content.to_owned()))
        .collect();
    let lookup_text = messages[last].content.to_owned();
    let kind = final_kind(&lookup_text, !earlier.is_empty());
    let topic_text = earlier
        .iter()
        .find(|(user, _)| *user)
        .map(|(_, t)| t.clone());
    Some(ConversationView {
        lookup_text,
        kind,
        topic_text,
        turns: earlier,
    })
}

fn final_kind(text: &str, has_history: bool) -> FinalKind {
    if !has_history {
        return FinalKind::Standalone;
    }
    let t = Analysed::new(text);
    let (confirm, wh) = (set(CONFIRM), set(WH));
    if !t.tokens.iter().any(|w| wh.contains(w.as_str()))
        && t.tokens
            .iter()
            .all(|w| confirm.contains(w.as_str()) || IGNORABLE.contains(w.as_str()))
    {
        return FinalKind::Confirmation;
    }
    let (anaphora, openers) = (set(ANAPHORA), set(OPENERS));
    let refers = t.tokens.iter().any(|w| anaphora.contains(w.as_str()));
    let continues = t
        .words
        .iter()
        .any(|w| w.initial && openers.contains(w.lower.as_str()));
    let content = t
        .tokens
        .iter()
        .filter(|w| !IGNORABLE.contains(w.as_str()))
        .count();
    // A short question leans on what came before.
    if refers || continues || content < 3 {
        FinalKind::Anaphoric
    } else {
        FinalKind::Standalone
    }
}

fn refuse(detail: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        reason: RefusalReason::Context,
        detail: detail.into(),
    })
}

/// Compares the contexts of a cached conversation and a query whose last messages already
/// matched. `topic_similarity` is the cosine similarity of the two `topic_text`s.
pub fn compare_context(
    cached: &ConversationView,
    query: &ConversationView,
    topic_similarity: Option<f32>,
    settings: &ContextSettings,
) -> Result<(), Refusal> {
    // The stricter reading of the two last messages decides.
    let kind = cached.kind.max(query.kind);
    if kind == FinalKind::Confirmation {
        return same_turns(&cached.turns, &query.turns);
    }
    if kind == FinalKind::Anaphoric
        && let (Some(a), Some(b)) = (&cached.topic_text, &query.topic_text)
    {
        match topic_similarity {
            Some(s) if s >= settings.topic_threshold => {}
            Some(s) => return refuse(format!("topic differs (similarity {s:.2})")),
            None => return refuse("topic not compared"),
        }
        if let Some(detail) = detail_conflict(a, b) {
            return refuse(format!("topic detail: {detail}"));
        }
    }
    for user in [true, false] {
        let xs: Vec<&str> = role_turns(&cached.turns, user);
        let ys: Vec<&str> = role_turns(&query.turns, user);
        for (x, y) in corresponding(&xs, &ys, settings.turn_overlap) {
            if let Some(detail) = detail_conflict(x, y) {
                let who = if user { "user" } else { "assistant" };
                return refuse(format!("{who} turn detail: {detail}"));
            }
        }
    }
    Ok(())
}

fn role_turns(turns: &[(bool, String)], user: bool) -> Vec<&str> {
    turns
        .iter()
        .filter(|(u, _)| *u == user)
        .map(|(_, t)| t.as_str())
        .collect()
}

fn content_tokens(text: &str) -> Vec<String> {
    Analysed::new(text)
        .tokens
        .into_iter()
        .filter(|w| !IGNORABLE.contains(w.as_str()))
        .collect()
}

/// A confirmation answers the whole conversation: every turn must say the same, up to
/// case, punctuation, filler words and typos.
fn same_turns(a: &[(bool, String)], b: &[(bool, String)]) -> Result<(), Refusal> {
    if a.len() != b.len() {
        return refuse("a confirmation needs the same conversation (turn counts differ)");
    }
    for (i, ((ua, x), (ub, y))) in a.iter().zip(b).enumerate() {
        let (cx, cy) = (content_tokens(x), content_tokens(y));
        if ua != ub || align(&cx, &cy).len() != cx.len().max(cy.len()) {
            return refuse(format!(
                "a confirmation needs the same conversation (turn {i} differs)"
            ));
        }
    }
    Ok(())
}

fn content_stems(text: &str) -> HashSet<String> {
    content_tokens(text).iter().map(|w| stem(w)).collect()
}

/// Greedy one-to-one pairing of turns by Dice overlap of content stems, best first.
fn corresponding<'t>(xs: &[&'t str], ys: &[&'t str], floor: f32) -> Vec<(&'t str, &'t str)> {
    let sx: Vec<HashSet<String>> = xs.iter().map(|x| content_stems(x)).collect();
    let sy: Vec<HashSet<String>> = ys.iter().map(|y| content_stems(y)).collect();
    let mut candidates = Vec::new();
    for (i, a) in sx.iter().enumerate() {
        for (j, b) in sy.iter().enumerate() {
            let shared = a.intersection(b).count();
            let dice = 2.0 * shared as f32 / (a.len() + b.len()).max(1) as f32;
            if dice >= floor {
                candidates.push((dice, i, j));
            }
        }
    }
    candidates.sort_by(|p, q| q.0.total_cmp(&p.0).then((p.1, p.2).cmp(&(q.1, q.2))));
    let (mut used_x, mut used_y, mut pairs) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    for (_, i, j) in candidates {
        if !used_x.contains(&i) && !used_y.contains(&j) {
            used_x.insert(i);
            used_y.insert(j);
            pairs.push((xs[i], ys[j]));
        }
    }
    pairs
}

/// A fact of a turn replaced by another of its kind: numbers, dates or names. An
/// addition alone (extra small talk) is no conflict.
fn detail_conflict(x: &str, y: &str) -> Option<String> {
    let (a, b) = (Analysed::new(x), Analysed::new(y));
    let replaced = |p: &BTreeSet<String>, q: &BTreeSet<String>| {
        let only_p: Vec<&String> = p.difference(q).collect();
        let only_q: Vec<&String> = q.difference(p).collect();
        (!only_p.is_empty() && !only_q.is_empty()).then(|| format!("{only_p:?} vs {only_q:?}"))
    };
    let numbers = |t: &Analysed| -> BTreeSet<String> {
        crate::guards::number_values(t)
            .0
            .into_iter()
            .filter(|v| v != "1")
            .collect()
    };
    if let Some(d) = replaced(&numbers(&a), &numbers(&b)) {
        return Some(format!("numbers {d}"));
    }
    let dates = |t: &Analysed| -> BTreeSet<String> {
        crate::guards::date_stems(t).into_iter().cloned().collect()
    };
    let (da, db) = (dates(&a), dates(&b));
    if let Some(d) = replaced(&da, &db) {
        return Some(format!("dates {d}"));
    }
    let names = |t: &Analysed, other: &Analysed, dates: &BTreeSet<String>| -> BTreeSet<String> {
        crate::guards::entity_stems(t)
            .into_iter()
            .filter(|e| !dates.contains(e))
            .filter(|e| !other.stems.iter().any(|s| same_word(e, s)))
            .collect()
    };
    let (na, nb) = (names(&a, &b, &da), names(&b, &a, &db));
    (!na.is_empty() && !nb.is_empty()).then(|| format!("names {na:?} vs {nb:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(turns: &[&str]) -> ConversationView {
        let messages: Vec<Message<'_>> = turns
            .iter()
            .enumerate()
            .map(|(i, content)| Message {
                role: if i % 2 == 0 { "user" } else { "assistant" },
                content,
            })
            .collect();
        conversation_view(&messages).expect("has a user message")
    }

    /// `topic` stands in for the embedding similarity of the two first user messages.
    fn check(a: &[&str], b: &[&str], topic: f32, expected: bool) {
        let (a, b) = (chat(a), chat(b));
        let got = compare_context(&a, &b, Some(topic), &ContextSettings::default());
        assert_eq!(got.is_ok(), expected, "{a:?} vs {b:?}: {got:?}");
        let back = compare_context(&b, &a, Some(topic), &ContextSettings::default());
        assert_eq!(got.is_ok(), back.is_ok(), "not symmetric");
    }

    #[test]
    fn last_messages_are_classified() {
        let kind = |text: &str| final_kind(text, true);
        assert_eq!(kind("yes please"), FinalKind::Confirmation);
        assert_eq!(kind("the second one"), FinalKind::Confirmation);
        assert_eq!(kind("how do I send it back?"), FinalKind::Anaphoric);
        assert_eq!(kind("ok so what's the total"), FinalKind::Anaphoric);
        assert_eq!(kind("What's the deadline?"), FinalKind::Anaphoric);
        assert_eq!(
            kind("Do you do a prescription delivery service?"),
            FinalKind::Standalone
        );
        assert_eq!(final_kind("yes please", false), FinalKind::Standalone);
    }

    #[test]
    fn same_context_reworded_matches() {
        check(
            &[
                "Hi, I got a kettle from you about 10 days ago, still sealed.",
                "What would you like to do?",
                "Can I send it back?",
            ],
            &[
                "Morning. Ordered a kettle ten days back, never opened.",
                "How can I help with it?",
                "can I return it?",
            ],
            0.8,
            true,
        );
    }

    #[test]
    fn a_different_topic_refuses_a_question_that_refers_back() {
        check(
            &[
                "I ordered running trainers and they're too small.",
                "You can return them within 30 days.",
                "how do i send it back?",
            ],
            &[
                "The corner sofa I ordered is too big.",
                "Large furniture can be returned within 14 days.",
                "how do i send it back?",
            ],
            0.1,
            false,
        );
    }

    #[test]
    fn a_replaced_detail_refuses() {
        check(
            &[
                "What's the monthly price of Nimbus Fibre 150?",
                "Fibre 150 is £26 a month.",
                "and with the TV add-on?",
            ],
            &[
                "What's the monthly price of Nimbus Fibre 900?",
                "Fibre 900 is £45 a month.",
                "and with the TV add-on?",
            ],
            0.95,
            false,
        );
    }

    #[test]
    fn a_standalone_question_ignores_unrelated_history() {
        check(
            &[
                "Do you have hand sanitiser in stock?",
                "Yes, in 50ml and 500ml bottles.",
                "Do you do a prescription delivery service?",
            ],
            &[
                "Is the Harbour Street branch open on bank holidays?",
                "It opens 10am to 4pm.",
                "Do you do a prescription delivery service?",
            ],
            0.1,
            true,
        );
    }

    #[test]
    fn a_confirmation_needs_the_same_conversation() {
        let a = [
            "I can't make Friday.",
            "Shall I cancel your Friday appointment?",
            "go ahead",
        ];
        let b = [
            "Is Friday free?",
            "Shall I book you in for Friday?",
            "go ahead",
        ];
        check(&a, &b, 0.9, false);
        check(&a, &a, 1.0, true);
        let shouted = [
            "I CAN'T MAKE FRIDAY",
            "Shall I cancel your Friday appointment",
            "go ahead",
        ];
        check(&a, &shouted, 1.0, true);
    }
}
