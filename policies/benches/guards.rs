//! Measures the hit guards and the context comparison: time per `check_guards` call on
//! 20-word questions and per `judge` of a conversation candidate. Prints percentiles.
//! Run with `cargo bench -p cachet-policies --bench guards`.

use std::hint::black_box;
use std::time::Instant;

use cachet_policies::{
    Candidate, Config, ContextSettings, GuardSet, Message, check_guards, conversation_view, judge,
};

const PAIRS: [(&str, &str); 6] = [
    (
        "How much statutory redundancy pay will I get after working here for 2 years' service in England?",
        "How much statutory redundancy pay will I get after working here for 20 years' service in England?",
    ),
    (
        "Can I cancel my table booking at the Italian place 48 hours in advance without being charged a fee?",
        "Is it possible to cancel my table reservation at the Italian restaurant two days ahead without a charge?",
    ),
    (
        "What's the deadline for submitting my self-assessment tax return online if I am self-employed this year?",
        "When is the deadline for filing my self-assessment tax return online if I'm self-employed this year?",
    ),
    (
        "Which foods and drinks should I avoid eating in the days before my surgery at the hospital next week?",
        "Which foods and drinks should I eat in the days before my surgery at the hospital next week?",
    ),
    (
        "How do I move money from my Premium Bonds into my bank account without paying any fees at all?",
        "I'd like to put some of my bank balance into Premium Bonds without fees, how do I do it?",
    ),
    (
        "um so how do i apply for a school place for my child at the primary school near our house",
        "How do I aply for a school place for my chlid at the primary school near our house?",
    ),
];

fn percentiles(mut micros: Vec<f64>) -> String {
    micros.sort_by(f64::total_cmp);
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
    format!(
        "p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs over {} calls",
        at(0.5),
        at(0.99),
        at(1.0),
        micros.len()
    )
}

fn main() {
    let guards = GuardSet::all();
    let mut times = Vec::new();
    for _ in 0..500 {
        for (a, b) in PAIRS {
            let started = Instant::now();
            let _ = black_box(check_guards(black_box(a), black_box(b), &guards));
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!("check_guards, 20-word questions: {}", percentiles(times));

    let config = Config::from_toml("[categories.general]\nthreshold = 0.5\n").expect("valid");
    let category = config.category("general").expect("general");
    let turns = [
        "Hi, I ordered a kettle from you about 10 days ago and it's still sealed in the box.",
        "Thanks for getting in touch. What would you like to do with it?",
        "I was thinking of returning it, my sister gave me one for my birthday on Saturday.",
        "That's kind of her! Unopened items can be returned within 30 days for a full refund.",
        "ok so how do I send it back?",
    ];
    let reworded = [
        "Morning. Ordered a kettle ten days back, never opened, still in the packaging.",
        "Okay, thanks. How can I help with it?",
        "I want to return it, my sister got me one for my birthday on Saturday.",
        "Lovely! Unopened items come back within 30 days for a full refund.",
        "so how do I send it back?",
    ];
    let view = |turns: &[&str]| {
        let messages: Vec<Message<'_>> = turns
            .iter()
            .enumerate()
            .map(|(i, content)| Message {
                role: if i % 2 == 0 { "user" } else { "assistant" },
                content,
            })
            .collect();
        conversation_view(&messages).expect("user message")
    };
    let mut times = Vec::new();
    for _ in 0..1000 {
        let started = Instant::now();
        let (a, b) = (view(&turns), view(&reworded));
        let candidate = Candidate {
            cached: &a,
            query: &b,
            similarity: 0.9,
            topic_similarity: Some(0.8),
        };
        let _ = black_box(judge(
            category,
            category.threshold,
            &candidate,
            &ContextSettings::default(),
        ));
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    println!("conversation view + judge, 5 turns: {}", percentiles(times));
}
