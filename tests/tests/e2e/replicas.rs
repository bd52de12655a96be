//! Several gateways on one Redis: what one stores the others serve, exactly and by meaning,
//! what one invalidates the others stop serving, and a gateway started later serves what is
//! already there.

use serde_json::json;

use crate::fleet::*;
use crate::support::*;

const CODE_QUESTION: &str = "How do I reverse a list in Python?";

#[test]
fn answers_stored_through_one_replica_are_hits_on_the_others() {
    let fleet = Fleet::start();
    let mut gateways = fleet.gateways(2);
    let (a, b) = (&gateways[0], &gateways[1]);

    let first = ask_stored(a, KEY_A, EVEREST);
    let (exact, took) = peek_until(b, KEY_A, EVEREST, "hit-exact", PROPAGATION);
    assert_eq!(exact.content(), first.content());
    assert_eq!(
        exact.header("x-cachet-entry"),
        first.header("x-cachet-entry")
    );
    eprintln!("exact hit on the other replica after {took:?}");
    let (semantic, took) = peek_until(b, KEY_A, EVEREST_PARAPHRASE, "hit-semantic", PROPAGATION);
    assert_eq!(semantic.content(), first.content());
    eprintln!("semantic hit on the other replica after {took:?}");

    // The other way round, streamed this time.
    let second = ask_stored(b, KEY_A, FRANCE);
    peek_until(a, KEY_A, FRANCE, "hit-exact", PROPAGATION);
    let (semantic, _) = peek_until(a, KEY_A, FRANCE_PARAPHRASE, "hit-semantic", PROPAGATION);
    assert_eq!(semantic.content(), second.content());
    // Another tenant sees none of it.
    assert_eq!(peek(a, KEY_B, FRANCE).cache(), Some("miss"));
    let calls = fleet.upstream.completion_calls();

    // A gateway started now indexes what Redis holds before it serves.
    gateways.extend(fleet.gateways(1));
    let c = &gateways[2];
    for (question, expected, answer) in [
        (EVEREST, "hit-exact", &first),
        (EVEREST_PARAPHRASE, "hit-semantic", &first),
        (FRANCE, "hit-exact", &second),
        (FRANCE_PARAPHRASE, "hit-semantic", &second),
    ] {
        let response = peek(c, KEY_A, question);
        assert_eq!(
            response.cache(),
            Some(expected),
            "{question}: {response:#?}"
        );
        assert_eq!(response.content(), answer.content());
    }
    assert_eq!(
        fleet.upstream.completion_calls(),
        calls,
        "hits must not reach the upstream"
    );
    for gateway in &mut gateways {
        assert!(gateway.is_running(), "{}", gateway.log_tail());
    }
}

#[test]
fn an_invalidation_through_one_replica_is_a_miss_on_the_others() {
    let fleet = Fleet::start();
    let mut gateways = fleet.gateways(2);
    let (a, b) = (&gateways[0], &gateways[1]);
    let cached = [
        (KEY_A, EVEREST),
        (KEY_A, FRANCE),
        (KEY_B, FRANCE),
        (KEY_A, CODE_QUESTION),
        (KEY_A, PHOTOSYNTHESIS),
        (KEY_A, BOILING),
    ];
    let mut everest = None;
    for (key, question) in cached {
        let response = ask_stored(a, key, question);
        if question == EVEREST {
            everest = Some(response);
        }
    }
    let everest_id = entry_id(&everest.unwrap());
    for (key, question) in cached {
        peek_until(b, key, question, "hit-exact", PROPAGATION);
    }
    wait_for_indexed(b, cached.len() as u64, PROPAGATION);
    let code = peek(b, KEY_A, CODE_QUESTION);
    assert_eq!(code.header("x-cachet-category"), Some("code"), "{code:#?}");
    let mut gone = Vec::new();
    let check = |gone: &[(&str, &str)]| {
        for &(key, question) in &cached {
            if gone.contains(&(key, question)) {
                peek_until(b, key, question, "miss", PROPAGATION);
            } else {
                let response = peek(b, key, question);
                assert_eq!(response.cache(), Some("hit-exact"), "{response:#?}");
            }
        }
    };

    // By id: the entry goes, and a paraphrase finds nothing in its place.
    assert_eq!(invalidate(a, json!({"id": everest_id})), 1);
    gone.push((KEY_A, EVEREST));
    check(&gone);
    peek_until(b, KEY_A, EVEREST_PARAPHRASE, "miss", PROPAGATION);

    assert_eq!(invalidate(a, json!({"category": "code"})), 1);
    gone.push((KEY_A, CODE_QUESTION));
    check(&gone);

    // By API key: only that tenant's entries.
    assert_eq!(invalidate(a, json!({"api_key": KEY_B})), 1);
    gone.push((KEY_B, FRANCE));
    check(&gone);

    // Every condition given must hold: tenant B has no such question any more.
    let both = json!({"api_key": KEY_B, "question_contains": "photosynthesis"});
    assert_eq!(invalidate(a, both), 0);
    check(&gone);
    assert_eq!(
        invalidate(a, json!({"question_contains": "photosynthesis"})),
        1
    );
    gone.push((KEY_A, PHOTOSYNTHESIS));
    check(&gone);

    // The admin API wants the token.
    let body = json!({"category": "general"});
    let no_token = admin_post(a, "/admin/invalidate", "", body.clone());
    assert!(matches!(no_token.status, 401 | 403), "{no_token:#?}");
    let wrong = admin_post(a, "/admin/invalidate", "not-the-token", body);
    assert!(matches!(wrong.status, 401 | 403), "{wrong:#?}");
    check(&gone);
    // The deletions reached the other replica's indexes too, not only the store.
    let left = (cached.len() - gone.len()) as u64;
    wait_for_indexed(a, left, PROPAGATION);
    wait_for_indexed(b, left, PROPAGATION);
    for gateway in &mut gateways {
        assert!(gateway.is_running(), "{}", gateway.log_tail());
    }
}
