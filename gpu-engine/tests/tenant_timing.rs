//! A timing audit of the prefix cache, in the style of *Auditing Prompt Caching in Language
//! Model APIs*: tenant B's time to first token on a prompt prefix tenant A has cached must be
//! B's time on a prefix nobody has cached (two-sample Kolmogorov–Smirnov, 200 vs 200, p > 0.01),
//! while A's own repeat is told apart from a cold prompt by the same test (the control that
//! shows the audit can see a hit). Tenants come as the gateway sends them, in x-cachet-tenant
//! to an engine that trusts it.
//!
//! What keeps it from flaking on a loaded two-core machine: B's probe and B's cold prompt do the
//! same work (the same lengths, both a full prefill of a prefix B never sent), each round sends
//! one of each (and A's repeat) in a shuffled order, so that a change of load meets all three
//! alike, and warm-up rounds come first. The model is wide enough that a 192-token prefill
//! takes several times longer than the 8 tokens a cached prefix leaves.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use cachet_engine::engine::EngineSettings;
use cachet_engine::server::TenantPolicy;
use cachet_tests::ks;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use common::server::{TestServer, start};
use common::tiny::{Shape, VOCAB, write_qwen2_shaped};

const ROUNDS: usize = 200;
const WARM_UP_ROUNDS: usize = 10;
/// Twelve full blocks of 16: what a cached prefix can cover.
const PREFIX_TOKENS: usize = 192;
const SUFFIX_TOKENS: usize = 8;

/// A prompt's time to first token (the answer is one token) and its cached prompt tokens.
async fn first_token(server: &TestServer, tenant: &str, prompt: &[u32]) -> (f64, u64) {
    let started = Instant::now();
    let response = server
        .client
        .post(format!("{}/v1/completions", server.url))
        .header("x-cachet-tenant", tenant)
        .json(&json!({"prompt": prompt, "max_tokens": 1, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let cached = body["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    (elapsed, cached)
}

fn tokens(rng: &mut StdRng, n: usize) -> Vec<u32> {
    // Ids 0 and 1 are the checkpoint's bos and eos.
    (0..n).map(|_| rng.random_range(2..VOCAB as u32)).collect()
}

#[derive(Debug, Clone, Copy)]
enum Probe {
    /// B sends the prefix A has just cached.
    OtherTenant,
    /// B sends a prefix nobody has sent.
    Cold,
    /// A sends its own prefix again.
    SameTenant,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_time_a_cached_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        hidden: 128,
        inter: 384,
        layers: 4,
        heads: 4,
        kv_heads: 2,
    };
    write_qwen2_shaped(dir.path(), 5, shape);
    let settings = EngineSettings {
        kv_blocks: 1024,
        block_size: 16,
        max_batch_tokens: 512,
        max_running_seqs: 8,
        prefix_caching: true,
    };
    let trusted = TenantPolicy {
        trust_gateway_header: true,
    };
    let server = start(dir.path(), settings, trusted).await;
    let mut rng = StdRng::seed_from_u64(15);
    let (mut other, mut cold, mut same) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARM_UP_ROUNDS + ROUNDS {
        let prefix = tokens(&mut rng, PREFIX_TOKENS);
        let with_suffix = |prefix: &[u32], rng: &mut StdRng| {
            let mut prompt = prefix.to_vec();
            prompt.extend(tokens(rng, SUFFIX_TOKENS));
            prompt
        };
        let a_first = with_suffix(&prefix, &mut rng);
        let (_, cached) = first_token(&server, "tenant-a", &a_first).await;
        assert_eq!(cached, 0, "a fresh prefix");
        let mut order = [Probe::OtherTenant, Probe::Cold, Probe::SameTenant];
        order.shuffle(&mut rng);
        for probe in order {
            let (tenant, prompt) = match probe {
                Probe::OtherTenant => ("tenant-b", with_suffix(&prefix, &mut rng)),
                Probe::Cold => {
                    let fresh = tokens(&mut rng, PREFIX_TOKENS);
                    ("tenant-b", with_suffix(&fresh, &mut rng))
                }
                Probe::SameTenant => ("tenant-a", with_suffix(&prefix, &mut rng)),
            };
            let (ms, cached) = first_token(&server, tenant, &prompt).await;
            match probe {
                Probe::OtherTenant | Probe::Cold => assert_eq!(cached, 0, "{probe:?}"),
                Probe::SameTenant => assert_eq!(cached, PREFIX_TOKENS as u64, "{probe:?}"),
            }
            if round < WARM_UP_ROUNDS {
                continue;
            }
            match probe {
                Probe::OtherTenant => other.push(ms),
                Probe::Cold => cold.push(ms),
                Probe::SameTenant => same.push(ms),
            }
        }
    }
    let leak = ks::two_sample(&other, &cold);
    let control = ks::two_sample(&same, &cold);
    let report = format!(
        "time to first token, median ms: B on A's prefix {:.2}, B cold {:.2}, A's repeat {:.2}; \
         KS B-on-A vs cold D = {:.3} p = {:.3}; KS A-repeat vs cold D = {:.3} p = {:.2e}",
        median(&other),
        median(&cold),
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
        "B's time on A's cached prefix differs from a cold prompt: {report}"
    );
}
