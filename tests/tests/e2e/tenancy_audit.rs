//! The tenancy audit: tenant B can neither read tenant A's cache (2,000 exact and reworded
//! probes, no hit; A's own probes all hit) nor tell from response times what A cached (the
//! timing audit of *Auditing Prompt Caching in Language Model APIs*: a two-sample
//! Kolmogorov–Smirnov test on 200 vs 200 times).

use std::time::{Duration, Instant};

use cachet_tests::ks;
use cachet_tests::upstream::CHAT_PATH;

use crate::support::*;

const CITIES: [&str; 80] = [
    "Lyon",
    "Marseille",
    "Nice",
    "Toulouse",
    "Bordeaux",
    "Lille",
    "Nantes",
    "Strasbourg",
    "Munich",
    "Hamburg",
    "Cologne",
    "Frankfurt",
    "Stuttgart",
    "Dresden",
    "Leipzig",
    "Milan",
    "Naples",
    "Turin",
    "Florence",
    "Venice",
    "Bologna",
    "Seville",
    "Valencia",
    "Bilbao",
    "Porto",
    "Lisbon",
    "Krakow",
    "Gdansk",
    "Prague",
    "Brno",
    "Vienna",
    "Salzburg",
    "Zurich",
    "Geneva",
    "Basel",
    "Antwerp",
    "Ghent",
    "Rotterdam",
    "Utrecht",
    "Copenhagen",
    "Aarhus",
    "Oslo",
    "Bergen",
    "Stockholm",
    "Gothenburg",
    "Helsinki",
    "Tallinn",
    "Riga",
    "Vilnius",
    "Dublin",
    "Cork",
    "Edinburgh",
    "Glasgow",
    "Manchester",
    "Liverpool",
    "Bristol",
    "Leeds",
    "Toronto",
    "Montreal",
    "Vancouver",
    "Chicago",
    "Boston",
    "Seattle",
    "Denver",
    "Austin",
    "Atlanta",
    "Miami",
    "Phoenix",
    "Sydney",
    "Melbourne",
    "Perth",
    "Auckland",
    "Osaka",
    "Kyoto",
    "Seoul",
    "Busan",
    "Mumbai",
    "Chennai",
    "Cairo",
    "Nairobi",
];

/// Five questions per city: 400 distinct questions, every one a miss until asked.
fn questions() -> Vec<String> {
    questions_about(&CITIES)
}

/// Five questions about each of `cities`, city by city.
fn questions_about(cities: &[&str]) -> Vec<String> {
    let templates: [fn(&str) -> String; 5] = [
        |c| format!("What is the population of {c}?"),
        |c| format!("When is the best time of year to visit {c}?"),
        |c| format!("What is the most famous landmark in {c}?"),
        |c| format!("Which local dish is {c} known for?"),
        |c| format!("Which airport serves {c}?"),
    ];
    cities
        .iter()
        .flat_map(|city| templates.iter().map(move |t| t(city)))
        .collect()
}

/// Ten ways to ask `question`: the exact copy and nine rewordings, each of which
/// `cachet eval` serves from a cache holding `question` alone (2,000 of 2,000 for the first
/// 200 questions, on the default config).
fn probes(question: &str) -> Vec<String> {
    let lowered = format!("{}{}", question[..1].to_lowercase(), &question[1..]);
    vec![
        question.to_owned(),
        question.trim_end_matches('?').to_lowercase(),
        format!("Quick question: {question}"),
        format!("{question} Thanks!"),
        format!("Please answer this: {question}"),
        format!("Hey, {lowered}"),
        format!("Could you tell me? {question}"),
        format!("I was wondering: {lowered}"),
        format!("Hi! {question}"),
        question.to_uppercase(),
    ]
}

fn chat(question: &str) -> String {
    serde_json::json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": question}],
    })
    .to_string()
}

/// Asks as `key`; B's probes say `no-store`, so that B's own answers never fill B's partition
/// and every probe of B does the work of a plain miss: look up, forward, answer.
fn ask(raw: &Raw, key: &str, question: &str, no_store: bool) -> (RawResponse, Duration) {
    let headers: &[(&str, &str)] = if no_store {
        &[("cache-control", "no-store")]
    } else {
        &[]
    };
    let started = Instant::now();
    let response = raw.post_with(CHAT, key, chat(question), headers);
    let elapsed = started.elapsed();
    assert_eq!(response.status, 200, "{response:#?}");
    (response, elapsed)
}

const CHAT: &str = "/v1/chat/completions";

/// The default config with `general` at threshold 0.85. The audit measures tenancy, not hit
/// quality: at the default 0.55, `cachet eval` serves 600 of 5,450 pairs of these questions
/// about one city (or one template) each other's answers ("Which airport serves Cairo?" for
/// "Which local dish is Cairo known for?", 0.64); at 0.85 none, and still all 2,000 probes.
fn audit_stack() -> Stack {
    Stack::start_with(|config| {
        config.set("categories.general.threshold", 0.85).unwrap();
    })
}

fn is_hit(response: &RawResponse) -> bool {
    response.cache().is_some_and(|c| c.starts_with("hit"))
}

#[test]
fn two_thousand_probes_from_another_tenant_get_no_hit() {
    let stack = audit_stack();
    let raw = stack.raw();
    let cached: Vec<String> = questions().into_iter().take(200).collect();
    for question in &cached {
        let (response, _) = ask(&raw, KEY_A, question, false);
        assert_eq!(response.cache(), Some("miss"), "{response:#?}");
    }
    stack.wait_for_fills(200.0, &"A's 200 answers");

    let mut b_hits = Vec::new();
    for question in &cached {
        for probe in probes(question) {
            let (response, _) = ask(&raw, KEY_B, &probe, true);
            // B gets the upstream's answer to its own probe, never A's answer.
            if is_hit(&response) || !response.content().ends_with(&format!("to: {probe}")) {
                b_hits.push((probe, response.cache().map(str::to_owned)));
            }
        }
    }
    assert!(
        b_hits.is_empty(),
        "{} of 2000 probes of tenant B were served from A's cache, e.g. {:?}",
        b_hits.len(),
        &b_hits[..b_hits.len().min(5)]
    );
    // Every probe of B reached the upstream, with B's key.
    let b_calls = stack
        .upstream
        .authorizations()
        .iter()
        .filter(|auth| auth.as_deref() == Some(&format!("Bearer {KEY_B}")))
        .count();
    assert_eq!(b_calls, 2000);

    let mut a_misses = Vec::new();
    for question in &cached {
        for probe in probes(question) {
            let (response, _) = ask(&raw, KEY_A, &probe, true);
            // A's answer to this very question, not to another city's.
            if !is_hit(&response) || !response.content().ends_with(&format!("to: {question}")) {
                a_misses.push((probe, response.cache().map(str::to_owned)));
            }
        }
    }
    assert!(
        a_misses.is_empty(),
        "{} of A's 2000 probes were not served A's answer, e.g. {:?}",
        a_misses.len(),
        &a_misses[..a_misses.len().min(5)]
    );
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2200);
}

#[derive(Debug, Clone, Copy)]
enum Timed {
    /// B asks what A has just cached.
    OtherTenant,
    /// B asks what nobody has asked.
    Uncached,
    /// A asks again (the control: an exact hit).
    SameTenant,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Rounds of the audit, and warm-up rounds before them (their times are not counted).
const ROUNDS: usize = 200;
const WARM_UP: usize = 10;

#[test]
fn response_times_do_not_tell_another_tenant_what_was_cached() {
    let stack = audit_stack();
    // One client, kept alive, so that every timed request rides an open connection.
    let raw = stack.raw();
    // Each round pairs a question A caches with an uncached one of the same template about
    // another city: the two requests of B do the same work (an embedding of the same length,
    // a search of B's empty partition, the upstream), so that most of what varies between
    // rounds varies for both alike. Warm-up rounds use a template of their own.
    let (first_half, second_half) = CITIES.split_at(CITIES.len() / 2);
    let warm_up = |cities: &[&str]| -> Vec<String> {
        cities[..WARM_UP]
            .iter()
            .map(|city| format!("What language is spoken in {city}?"))
            .collect()
    };
    let mut cached = warm_up(first_half);
    cached.extend(questions_about(first_half));
    let mut uncached = warm_up(second_half);
    uncached.extend(questions_about(second_half));
    assert!(cached.len() >= WARM_UP + ROUNDS && uncached.len() >= WARM_UP + ROUNDS);
    // A fixed shuffle of the three timed requests of each round, so that a change of load
    // meets all three alike and none always comes first.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut other, mut fresh, mut same) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARM_UP + ROUNDS {
        let (question, unasked) = (&cached[round], &uncached[round]);
        let (response, _) = ask(&raw, KEY_A, question, false);
        assert_eq!(response.cache(), Some("miss"), "{response:#?}");
        stack.wait_for_fills((round + 1) as f64, &response);
        let mut order = [Timed::OtherTenant, Timed::Uncached, Timed::SameTenant];
        for i in (1..order.len()).rev() {
            order.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        for timed in order {
            let (response, elapsed) = match timed {
                Timed::OtherTenant => ask(&raw, KEY_B, question, true),
                Timed::Uncached => ask(&raw, KEY_B, unasked, true),
                Timed::SameTenant => ask(&raw, KEY_A, question, true),
            };
            let expected = match timed {
                Timed::OtherTenant | Timed::Uncached => "miss",
                Timed::SameTenant => "hit-exact",
            };
            assert_eq!(response.cache(), Some(expected), "{timed:?}: {response:#?}");
            if round >= WARM_UP {
                let ms = elapsed.as_secs_f64() * 1000.0;
                match timed {
                    Timed::OtherTenant => other.push(ms),
                    Timed::Uncached => fresh.push(ms),
                    Timed::SameTenant => same.push(ms),
                }
            }
        }
    }
    let leak = ks::two_sample(&other, &fresh);
    let control = ks::two_sample(&same, &fresh);
    let report = format!(
        "response time, median ms: B asks what A cached {:.2}, B asks something uncached {:.2}, \
         A asks again {:.2}; KS B-cached vs B-uncached D = {:.3} p = {:.3}; KS A-again vs \
         B-uncached D = {:.3} p = {:.2e}",
        median(&other),
        median(&fresh),
        median(&same),
        leak.statistic,
        leak.p_value,
        control.statistic,
        control.p_value
    );
    eprintln!("{report}");
    assert!(
        control.p_value < 0.01,
        "the audit cannot see a hit, so it proves nothing: {report}"
    );
    assert!(
        leak.p_value > 0.01,
        "B's times on what A cached differ from B's uncached times: {report}"
    );
}
