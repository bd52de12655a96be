//! Requests that overlap: identical misses in flight at once reach the upstream once, streamed
//! or not, per tenant, and share the upstream's failure as well as its answer.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use cachet_tests::upstream::Gate;
use cachet_tests::{ChatCall, Gateway, OpenAiPy, Reply, ScriptedUpstream};

use crate::fleet::{ask, base_config, chat_body};
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

/// Identical cold requests sent at once by one client over many connections.
const BURST: usize = 200;
/// Longest wait for every request of a burst to join its flight, and for its answers.
const BURST_TIMEOUT: Duration = Duration::from_secs(60);

/// One answer of a burst.
#[derive(Debug)]
struct Answered {
    key: &'static str,
    status: u16,
    headers: std::collections::BTreeMap<String, String>,
    body: String,
    elapsed: Duration,
}

/// A scripted upstream and a gateway in front of it, without the Python driver.
fn gateway_and_upstream() -> (Gateway, ScriptedUpstream) {
    let upstream = ScriptedUpstream::start().unwrap();
    let gateway = Gateway::start(&base_config(&upstream)).unwrap();
    (gateway, upstream)
}

/// Followers coalesced so far (`cachet_coalesced_total`).
fn coalesced(gateway: &Gateway) -> f64 {
    gateway.metrics().unwrap().sum("cachet_coalesced_total")
}

/// Sends `requests` (tenant, question) all at once on `runtime` and returns a handle to their
/// answers, in order.
fn burst(
    runtime: &tokio::runtime::Runtime,
    gateway: &Gateway,
    requests: Vec<(&'static str, &'static str)>,
    stream: bool,
) -> tokio::task::JoinHandle<Vec<Answered>> {
    let url = format!("{}/v1/chat/completions", gateway.base_url());
    runtime.spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(BURST_TIMEOUT)
            .build()
            .unwrap();
        let sends: Vec<_> = requests
            .into_iter()
            .map(|(key, question)| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(key)
                        .header("content-type", "application/json")
                        .body(chat_body(question, stream))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let headers = response
                        .headers()
                        .iter()
                        .filter_map(|(name, value)| {
                            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                        })
                        .collect();
                    let body = response.text().await.unwrap();
                    Answered {
                        key,
                        status,
                        headers,
                        body,
                        elapsed: started.elapsed(),
                    }
                })
            })
            .collect();
        let mut answers = Vec::new();
        for send in sends {
            answers.push(send.await.unwrap());
        }
        answers
    })
}

/// Waits until `count` followers have joined flights (or the timeout passes: the test's
/// assertions then tell what went wrong).
fn wait_for_followers(gateway: &Gateway, count: f64) {
    let deadline = std::time::Instant::now() + BURST_TIMEOUT;
    while coalesced(gateway) < count && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The text of a chat answer, streamed or not.
fn answer_text(answer: &Answered) -> String {
    assert_eq!(answer.status, 200, "{answer:#?}");
    let response = RawResponse {
        status: answer.status,
        headers: Default::default(),
        body: answer.body.clone(),
        body_error: None,
    };
    response.content()
}

#[test]
fn two_hundred_identical_cold_requests_reach_the_upstream_once_streamed_or_not() {
    let (gateway, upstream) = gateway_and_upstream();
    let runtime = runtime();
    for (round, (question, stream)) in [(EVEREST, false), (FRANCE, true)].into_iter().enumerate() {
        // The upstream holds its answer until every follower has joined, so that none can
        // arrive after the answer was stored and count as a plain hit.
        let gate = Gate::new();
        upstream.push(Reply::Held(
            gate.clone(),
            Box::new(Reply::Text(format!("The one answer of round {round}."))),
        ));
        let followers_before = coalesced(&gateway);
        let answers = burst(&runtime, &gateway, vec![(KEY_A, question); BURST], stream);
        wait_for_followers(&gateway, followers_before + (BURST - 1) as f64);
        gate.open();
        let answers = runtime.block_on(answers).unwrap();
        assert_eq!(
            upstream.completion_calls(),
            round + 1,
            "{BURST} identical requests (stream={stream}) must make one upstream call"
        );
        for answer in &answers {
            assert_eq!(
                answer_text(answer),
                format!("The one answer of round {round}."),
                "stream={stream}"
            );
        }
    }
}

#[test]
fn the_same_prompt_from_two_tenants_makes_two_calls() {
    let (gateway, upstream) = gateway_and_upstream();
    let runtime = runtime();
    let gate = Gate::new();
    for n in 1..=2 {
        upstream.push(Reply::Held(
            gate.clone(),
            Box::new(Reply::Text(format!("Answer number {n}."))),
        ));
    }
    let requests: Vec<_> = (0..BURST / 2)
        .flat_map(|_| [(KEY_A, EVEREST), (KEY_B, EVEREST)])
        .collect();
    let answers = burst(&runtime, &gateway, requests, false);
    wait_for_followers(&gateway, (BURST - 2) as f64);
    gate.open();
    let answers = runtime.block_on(answers).unwrap();
    assert_eq!(
        upstream.completion_calls(),
        2,
        "one call per tenant: a tenant's flight must never serve another tenant"
    );
    let text_of = |key: &str| -> Vec<String> {
        let mut texts: Vec<_> = answers
            .iter()
            .filter(|a| a.key == key)
            .map(answer_text)
            .collect();
        texts.dedup();
        texts
    };
    let (a, b) = (text_of(KEY_A), text_of(KEY_B));
    assert_eq!(a.len(), 1, "tenant A got different answers: {a:?}");
    assert_eq!(b.len(), 1, "tenant B got different answers: {b:?}");
    assert_ne!(a, b, "the two tenants shared one answer");
    let mut keys = upstream.authorizations();
    keys.sort();
    assert_eq!(
        keys,
        [
            Some(format!("Bearer {KEY_A}")),
            Some(format!("Bearer {KEY_B}"))
        ],
        "each tenant's own key reaches the upstream"
    );
}

#[test]
fn in_a_shared_category_flights_stay_per_tenant_and_keep_caller_headers_private() {
    let upstream = ScriptedUpstream::start().unwrap();
    let mut config = base_config(&upstream);
    let mut faq = toml::Table::new();
    faq.insert("shared".into(), true.into());
    faq.insert("ttl".into(), "1h".into());
    let mut rules = toml::Table::new();
    rules.insert("keywords".into(), vec!["opening hours"].into());
    faq.insert("match".into(), rules.into());
    config.add_section("categories.faq", faq, Some("categories.live"));
    let gateway = Gateway::start(&config).unwrap();
    let runtime = runtime();
    let gate = Gate::new();
    upstream.set_fallback(Reply::WithCallerHeaders(Box::new(Reply::Held(
        gate.clone(),
        Box::new(Reply::Echo),
    ))));
    let question = "What are the opening hours of the museum?";
    let requests: Vec<_> = (0..BURST / 2)
        .flat_map(|_| [(KEY_A, question), (KEY_B, question)])
        .collect();
    let answers = burst(&runtime, &gateway, requests, false);
    wait_for_followers(&gateway, (BURST - 2) as f64);
    gate.open();
    let answers = runtime.block_on(answers).unwrap();
    assert!(
        answers
            .iter()
            .all(|a| a.headers.get("x-cachet-category").map(String::as_str) == Some("faq"))
    );
    let mut keys = upstream.authorizations();
    keys.sort();
    assert_eq!(
        keys,
        [
            Some(format!("Bearer {KEY_A}")),
            Some(format!("Bearer {KEY_B}"))
        ],
        "one call per tenant, each with its own key, although the category is shared"
    );
    let per_caller = [
        "set-cookie",
        "x-ratelimit-remaining-requests",
        "openai-organization",
    ];
    let mut leaders = 0;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer:#?}");
        let other = if answer.key == KEY_A { KEY_B } else { KEY_A };
        for (name, value) in &answer.headers {
            assert!(!value.contains(other), "{} got {name}: {value}", answer.key);
        }
        let got: Vec<&str> = per_caller
            .iter()
            .copied()
            .filter(|name| answer.headers.contains_key(*name))
            .collect();
        // The request whose call it was gets its own; a follower gets none of them.
        if !got.is_empty() {
            assert_eq!(got, per_caller, "{answer:#?}");
            leaders += 1;
        }
    }
    assert_eq!(leaders, 2, "each tenant's leader keeps its own headers");
}

#[test]
fn when_the_leaders_call_fails_every_follower_gets_the_error_promptly() {
    let (gateway, upstream) = gateway_and_upstream();
    let runtime = runtime();
    let gate = Gate::new();
    upstream.push(Reply::Held(gate.clone(), Box::new(Reply::server_error())));
    let answers = burst(&runtime, &gateway, vec![(KEY_A, EVEREST); BURST], false);
    wait_for_followers(&gateway, (BURST - 1) as f64);
    let opened = std::time::Instant::now();
    gate.open();
    let answers = runtime.block_on(answers).unwrap();
    let answered_within = opened.elapsed();
    assert_eq!(upstream.completion_calls(), 1);
    for answer in &answers {
        assert!(answer.status >= 500, "{answer:#?}");
        let response = RawResponse {
            status: answer.status,
            headers: Default::default(),
            body: answer.body.clone(),
            body_error: None,
        };
        response.assert_openai_error();
    }
    assert!(
        answered_within < Duration::from_secs(5),
        "the followers waited {answered_within:?} after the upstream failed"
    );
    let slowest = answers.iter().map(|a| a.elapsed).max().unwrap();
    eprintln!("slowest request of the burst: {slowest:?}");
    // Nothing was stored: the next request goes to the upstream again.
    let again = ask(&gateway, KEY_A, EVEREST);
    assert_eq!(again.cache(), Some("miss"), "{again:#?}");
}
