//! Table-driven tests of the hit guards, and proptests of their invariants.

use proptest::prelude::*;

use super::*;

/// `expected` is `None` for a pass, or the name of the guard that refuses.
fn check(cached: &str, query: &str, expected: Option<&str>) {
    let got = check_guards(cached, query, &GuardSet::all()).err();
    assert_eq!(
        got.as_ref().map(|r| r.reason.as_str()),
        expected,
        "{cached:?} vs {query:?}: {got:?}"
    );
}

#[test]
fn paraphrases_and_noise_pass() {
    check(
        "How do I cancel a table reservation?",
        "How can I cancel my table reservation?",
        None,
    );
    check(
        "Is there a luggage storage service at the hotel?",
        "At the hotel, is there a luggage storage service?",
        None,
    );
    check(
        "How do I apply for a school place for my child?",
        "How do I aply for a school place for my chlid?",
        None,
    );
    check(
        "What are your delivery options to Northern Ireland?",
        "WHAT ARE YOUR DELIVERY OPTIONS TO NORTHERN IRELAND?",
        None,
    );
    check(
        "When does the autumn term start?",
        "When does the autumn term begin?",
        None,
    );
    check(
        "What's 15% of 200?",
        "Calculate fifteen percent of 200",
        None,
    );
    check(
        "I can't log in to my online banking",
        "I cannot log in to my online banking",
        None,
    );
    check(
        "Who won the World Cup in 2014?",
        "Which country won the 2014 World Cup?",
        None,
    );
    check(
        "What is the Wi-Fi password for guests?",
        "What's the guest Wi-Fi password?",
        None,
    );
}

#[test]
fn numbers_and_dates_refuse() {
    check(
        "Is the 9:15 train on time?",
        "Is the 9:45 train on time?",
        Some("numbers"),
    );
    check(
        "How much is a call-out at 2pm?",
        "How much is a call-out at 2am?",
        Some("numbers"),
    );
    check(
        "How many calories are in one egg?",
        "How many calories are in three eggs?",
        Some("numbers"),
    );
    check(
        "What was my bill in January?",
        "What was my bill in June?",
        Some("dates"),
    );
    check(
        "How many calories are in one egg?",
        "What's the calorie count of an egg?",
        None,
    );
}

#[test]
fn negation_refuses() {
    check(
        "What's included in the price?",
        "What's not included in the price?",
        Some("negation"),
    );
    check(
        "Is the deposit refundable?",
        "Is the deposit non-refundable?",
        Some("negation"),
    );
    check(
        "How do I mute notifications?",
        "How do I unmute notifications?",
        Some("negation"),
    );
}

#[test]
fn names_refuse() {
    check(
        "What's Mary's phone number?",
        "What's Mark's phone number?",
        Some("entities"),
    );
    check(
        "How do I export my data from Salesforce?",
        "How do I export my data from HubSpot?",
        Some("entities"),
    );
    check(
        "How do I convert a Word document to PDF?",
        "How do I convert a PDF to a Word document?",
        Some("entities"),
    );
}

#[test]
fn direction_opposites_scope_and_slots_refuse() {
    check(
        "How do I move money from my savings into my current account?",
        "How do I put money into my savings from my current account?",
        Some("roles"),
    );
    check(
        "Which appliances use the most electricity?",
        "Which appliances use the least electricity?",
        Some("antonyms"),
    );
    check(
        "What's the paracetamol dose for adults?",
        "What's the paracetamol dose for children?",
        Some("contrast"),
    );
    check(
        "Does the hotel have a pool?",
        "Does the hotel have a gym?",
        Some("minimal"),
    );
    check(
        "What are the symptoms of flu?",
        "What are the symptoms of flu in babies?",
        Some("minimal"),
    );
    check(
        "What's the excess on my contents insurance?",
        "What is the excess on my contents insurance policy?",
        None,
    );
}

#[test]
fn units_acronyms_and_time_words_are_understood() {
    check(
        "Can I return it after 14 days?",
        "Can I still send it back after two weeks?",
        None,
    );
    check(
        "Can I return it after 14 days?",
        "Can I return it after 3 weeks?",
        Some("numbers"),
    );
    check(
        "How do I turn on two-factor authentication?",
        "How can I turn on 2FA?",
        None,
    );
    check(
        "Is there a table at 7pm?",
        "Is there a table at seven this evening?",
        None,
    );
}

#[test]
fn harm_on_one_side_refuses() {
    check(
        "What foods should I eat while taking warfarin?",
        "Which foods could interfere with warfarin?",
        Some("antonyms"),
    );
}

#[test]
fn an_empty_guard_set_passes_everything() {
    let none = GuardSet::none();
    assert!(check_guards("Is it 9:15?", "Is it 9:45?", &none).is_ok());
}

#[test]
fn each_guard_can_be_turned_off() {
    let without_numbers: GuardSet = Guard::ALL
        .into_iter()
        .filter(|g| *g != Guard::Numbers && *g != Guard::Minimal)
        .collect();
    assert!(
        check_guards(
            "Is the 9:15 on time?",
            "Is the 9:45 on time?",
            &without_numbers
        )
        .is_ok()
    );
    for guard in Guard::ALL {
        assert_eq!(Guard::from_name(guard.name()), Some(guard));
    }
}

proptest! {
    #[test]
    fn a_text_always_passes_against_itself(text in "[A-Za-z0-9 ,.?'%:-]{0,80}") {
        prop_assert!(check_guards(&text, &text, &GuardSet::all()).is_ok());
    }

    #[test]
    fn guards_are_symmetric(a in "[A-Za-z0-9 ,.?']{0,60}", b in "[A-Za-z0-9 ,.?']{0,60}") {
        let ab = check_guards(&a, &b, &GuardSet::all()).is_ok();
        let ba = check_guards(&b, &a, &GuardSet::all()).is_ok();
        prop_assert_eq!(ab, ba);
    }

    #[test]
    fn word_swaps_from_a_vocabulary_are_symmetric(
        a in proptest::collection::vec(0usize..12, 1..8),
        b in proptest::collection::vec(0usize..12, 1..8),
    ) {
        const VOCAB: [&str; 12] = [
            "How", "do", "I", "cancel", "my", "Premium", "plan", "not", "2", "two", "from", "to",
        ];
        let a: Vec<&str> = a.into_iter().map(|i| VOCAB[i]).collect();
        let b: Vec<&str> = b.into_iter().map(|i| VOCAB[i]).collect();
        let (a, b) = (a.join(" "), b.join(" "));
        prop_assert_eq!(
            check_guards(&a, &b, &GuardSet::all()).is_ok(),
            check_guards(&b, &a, &GuardSet::all()).is_ok()
        );
    }
}

#[test]
fn categories_name_their_guards_and_unknown_names_are_reported() {
    let config = crate::Config::from_toml(
        "[categories.general]\nguards = [\"numbers\", \"negation\"]\n[categories.code]\n",
    )
    .expect("valid");
    let general = config.category("general").expect("general");
    assert!(general.guards.contains(Guard::Numbers));
    assert!(!general.guards.contains(Guard::Minimal));
    let code = config.category("code").expect("code");
    assert_eq!(code.guards, GuardSet::all());

    let err = crate::Config::from_toml("[categories.general]\nguards = [\"numbers\", \"vibes\"]\n")
        .expect_err("unknown guard");
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["categories.general.guards[1]"]);
}

#[test]
fn categories_set_their_context_matching() {
    let config = crate::Config::from_toml(
        "[categories.general]\ncontext_topic_threshold = 0.7\ncontext_turn_overlap = 0.4\n",
    )
    .expect("valid");
    let general = config.category("general").expect("general");
    assert_eq!(general.context.topic_threshold, 0.7);
    assert_eq!(general.context.turn_overlap, 0.4);
    let err = crate::Config::from_toml("[categories.general]\ncontext_topic_threshold = 1.5\n")
        .expect_err("out of range");
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["categories.general.context_topic_threshold"]);
}
