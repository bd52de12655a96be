//! Look-alike questions (same words, different answer) above the similarity threshold: the
//! hit guards refuse them, and without guards they would be served the wrong answer.

use cachet_tests::ChatCall;
use cachet_tests::upstream::CHAT_PATH;

use crate::support::*;

#[test]
fn look_alikes_are_refused_by_the_hit_guards() {
    let mut stack = Stack::start();
    for (stored, asked, guard) in LOOK_ALIKES
        .into_iter()
        .chain([(FRANCE, GERMANY, "entities")])
    {
        let first = stack.chat_stored(&ChatCall::new(stored));
        let other = stack.chat(&ChatCall::new(asked));
        assert!(
            !other.cache().unwrap_or_default().starts_with("hit"),
            "the {guard} guard should refuse {stored:?} for {asked:?}: {other:#?}"
        );
        assert_ne!(other.text(), first.text());
        assert_eq!(
            other.text(),
            format!("Answer {} to: {asked}", stack.upstream.calls(CHAT_PATH))
        );
    }
}

#[test]
fn without_guards_a_look_alike_is_served_the_wrong_answer() {
    let mut stack = Stack::start_with(|config| {
        config
            .set("categories.general.guards", Vec::<String>::new())
            .unwrap();
    });
    let (stored, asked, _) = LOOK_ALIKES[0];
    let first = stack.chat_stored(&ChatCall::new(stored));
    let wrong = stack.chat(&ChatCall::new(asked));
    assert_eq!(
        wrong.cache(),
        Some("hit-semantic"),
        "with guards off, the similarity alone decides: {wrong:#?}"
    );
    assert_eq!(wrong.text(), first.text());
}
