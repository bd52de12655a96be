//! Requests that overlap: identical misses in flight at once reach the upstream once.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use cachet_tests::{ChatCall, OpenAiPy, Reply};

use crate::support::*;

#[test]
fn identical_concurrent_misses_reach_the_upstream_once() {
    let stack = Stack::start();
    // The first answer takes long enough for the second request to arrive meanwhile. Should
    // it arrive later anyway, it is an exact hit and the assertions hold all the same.
    stack.upstream.push(Reply::Delayed(
        Duration::from_secs(3),
        Box::new(Reply::Echo),
    ));
    let barrier = Arc::new(Barrier::new(2));
    let mut clients: Vec<_> = (0..2).map(|_| OpenAiPy::spawn().unwrap()).collect();
    for client in &mut clients {
        client.set_base_url(&stack.gateway.api_url());
        client.wait_ready().unwrap();
    }
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                client.chat(&ChatCall::new(EVEREST)).unwrap()
            })
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for outcome in &outcomes {
        assert_eq!(
            outcome.text(),
            format!("Answer 1 to: {EVEREST}"),
            "{outcome:#?}"
        );
    }
    assert_eq!(
        stack.upstream.completion_calls(),
        1,
        "identical misses in flight must be coalesced: {outcomes:#?}"
    );
}
