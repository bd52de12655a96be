//! Scheduler tests driven by a fake model that reads its input back from a fake KV pool.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::kv::TenantSalt;

/// Stands in for the model: stores each token in its KV slot, and "predicts" a token
/// from the tokens it reads back through the block table, so wrong or stale KV (a bad
/// prefix-cache hit, a lost block) changes the output.
struct FakeModel {
    slots: Vec<Option<u32>>,
}

fn next_token(history: &[u32]) -> u32 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &t in history {
        h = (h ^ t as u64).wrapping_mul(0x100000001b3);
    }
    (h % 50) as u32
}

impl FakeModel {
    fn new(pool: &BlockPool) -> Self {
        Self {
            slots: vec![None; pool.n_blocks() * pool.block_size()],
        }
    }

    fn run(&mut self, step: &Step, block_size: usize) -> Vec<(SeqId, u32)> {
        let b = &step.batch;
        for (t, &slot) in b.slot_mapping.iter().enumerate() {
            self.slots[slot as usize] = Some(b.token_ids[t]);
        }
        let mut out = Vec::new();
        for (chunk, scheduled) in b.seqs.iter().zip(&step.seqs) {
            assert_eq!(chunk.wants_logits, scheduled.samples);
            if !chunk.wants_logits {
                continue;
            }
            let history: Vec<u32> = (0..chunk.context_len)
                .map(|p| {
                    let slot =
                        chunk.block_table[p / block_size] as usize * block_size + p % block_size;
                    self.slots[slot].expect("kv slot was written")
                })
                .collect();
            out.push((scheduled.id, next_token(&history)));
        }
        out
    }
}

fn solo(prompt: &[u32], n_new: usize) -> Vec<u32> {
    let mut tokens = prompt.to_vec();
    for _ in 0..n_new {
        tokens.push(next_token(&tokens));
    }
    tokens[prompt.len()..].to_vec()
}

struct Harness {
    sched: Scheduler,
    model: FakeModel,
    max_new: HashMap<SeqId, usize>,
    done: HashMap<SeqId, Sequence>,
    steps: Vec<Step>,
}

impl Harness {
    fn new(n_blocks: usize, block_size: usize, budget: usize) -> Self {
        let pool = BlockPool::new(n_blocks, block_size);
        let model = FakeModel::new(&pool);
        let config = SchedulerConfig {
            max_batch_tokens: budget,
            max_running_seqs: 16,
            prefix_caching: true,
        };
        Self {
            sched: Scheduler::new(config, pool),
            model,
            max_new: HashMap::new(),
            done: HashMap::new(),
            steps: Vec::new(),
        }
    }

    fn add(&mut self, id: SeqId, tenant: u8, prompt: Vec<u32>, max_new: usize) {
        self.max_new.insert(id, max_new);
        self.sched
            .add(Sequence::new(id, TenantSalt::derive(&[tenant]), prompt));
    }

    /// Runs one step; false when there was nothing to run.
    fn step(&mut self) -> bool {
        let step = self.sched.schedule();
        if step.seqs.is_empty() {
            return false;
        }
        assert!(step.batch.n_tokens() <= self.sched.config.max_batch_tokens);
        let sampled = self.model.run(&step, self.sched.pool().block_size());
        self.sched.complete(&step, &sampled);
        for (id, _) in &sampled {
            let seq = self.sched.get(*id).unwrap();
            if seq.output().len() >= self.max_new[id] {
                let seq = self.sched.remove(*id).unwrap();
                self.done.insert(*id, seq);
            }
        }
        self.sched.pool().check_invariants().unwrap();
        self.steps.push(step);
        true
    }

    fn run_to_end(&mut self) {
        let mut n = 0;
        while self.step() {
            n += 1;
            assert!(n < 10_000, "scheduler does not make progress");
        }
        assert!(self.sched.is_idle(), "sequences left behind");
        assert_eq!(
            self.sched.pool().n_free(),
            self.sched.pool().n_blocks(),
            "blocks leaked"
        );
    }
}

#[test]
fn decodes_go_first_and_long_prompts_are_chunked() {
    let mut h = Harness::new(32, 4, 8);
    h.add(1, 0, (0..20).collect(), 5);
    for _ in 0..3 {
        h.step();
    }
    let lens: Vec<usize> = h.steps.iter().map(|s| s.seqs[0].n_new).collect();
    assert_eq!(lens, vec![8, 8, 4]);
    h.add(2, 0, (100..120).collect(), 5);
    h.step();
    let last = h.steps.last().unwrap();
    assert_eq!(
        last.seqs[0],
        ScheduledSeq {
            id: 1,
            n_new: 1,
            samples: true
        }
    );
    assert_eq!(last.seqs[1].n_new, 7);
    h.run_to_end();
    assert_eq!(h.done[&1].output(), solo(&(0..20).collect::<Vec<_>>(), 5));
    assert_eq!(
        h.done[&2].output(),
        solo(&(100..120).collect::<Vec<_>>(), 5)
    );
}

#[test]
fn prefix_hit_skips_cached_blocks_and_gives_same_output() {
    let mut h = Harness::new(64, 4, 64);
    let prompt: Vec<u32> = (0..40).map(|i| i % 7).collect();
    h.add(1, 0, prompt.clone(), 3);
    h.run_to_end();
    let mut second = prompt[..32].to_vec();
    second.extend([9, 9, 9, 9, 9, 9, 9, 9]);
    h.add(2, 0, second.clone(), 3);
    h.step();
    let first_step = h.steps.last().unwrap();
    assert_eq!(
        first_step.seqs[0].n_new, 8,
        "only the new blocks are computed"
    );
    h.run_to_end();
    assert_eq!(h.done[&2].n_cached_prompt, 32);
    assert_eq!(h.done[&2].output(), solo(&second, 3));
    // Another tenant with the same prompt gets nothing from the cache.
    h.add(3, 1, second.clone(), 3);
    h.run_to_end();
    assert_eq!(h.done[&3].n_cached_prompt, 0);
    assert_eq!(h.done[&3].output(), solo(&second, 3));
}

#[test]
fn without_prefix_caching_every_prompt_is_computed_in_full() {
    let mut h = Harness::new(64, 4, 64);
    h.sched.config.prefix_caching = false;
    let prompt: Vec<u32> = (0..40).map(|i| i % 7).collect();
    h.add(1, 0, prompt.clone(), 3);
    h.run_to_end();
    h.add(2, 0, prompt.clone(), 3);
    h.step();
    assert_eq!(h.steps.last().unwrap().seqs[0].n_new, 40);
    h.run_to_end();
    assert_eq!(h.done[&2].n_cached_prompt, 0);
    assert_eq!(h.done[&2].output(), solo(&prompt, 3));
    assert_eq!(h.sched.pool().n_cached(), 0, "nothing was registered");
}

#[test]
fn fully_cached_prompt_recomputes_only_its_last_block() {
    let mut h = Harness::new(64, 4, 64);
    let prompt: Vec<u32> = (0..16).collect();
    h.add(1, 0, prompt.clone(), 2);
    h.run_to_end();
    h.add(2, 0, prompt.clone(), 2);
    h.step();
    assert_eq!(h.steps.last().unwrap().seqs[0].n_new, 4);
    h.run_to_end();
    assert_eq!(h.done[&2].n_cached_prompt, 12);
    assert_eq!(h.done[&2].output(), solo(&prompt, 2));
}

#[test]
fn shared_uncached_prefix_is_prefilled_once() {
    let mut h = Harness::new(64, 4, 256);
    let prefix: Vec<u32> = (0..32).collect();
    let mut a = prefix.clone();
    a.extend([1, 2, 3]);
    let mut b = prefix.clone();
    b.extend([4, 5, 6]);
    h.add(1, 0, a.clone(), 2);
    h.add(2, 0, b.clone(), 2);
    h.step();
    let ids: Vec<SeqId> = h.steps[0].seqs.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![1], "the second waits for the shared blocks");
    h.step();
    let second = h.steps[1].seqs.iter().find(|s| s.id == 2).unwrap();
    assert_eq!(second.n_new, 3, "then it starts after the shared prefix");
    h.run_to_end();
    assert_eq!(h.done[&2].n_cached_prompt, 32);
    assert_eq!(h.done[&1].output(), solo(&a, 2));
    assert_eq!(h.done[&2].output(), solo(&b, 2));
}

#[test]
fn preemption_recomputes_and_leaks_nothing() {
    // Three sequences that each need 4 blocks in the end, in a pool of 8.
    let mut h = Harness::new(8, 4, 64);
    let prompts: Vec<Vec<u32>> = (0..3)
        .map(|s| (0..6).map(|i| i + 10 * s).collect())
        .collect();
    for (i, p) in prompts.iter().enumerate() {
        h.add(i as SeqId, 0, p.clone(), 10);
    }
    h.run_to_end();
    assert!(h.sched.counters().preemptions > 0);
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(h.done[&(i as SeqId)].output(), solo(p, 10));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any mix of prompts (sharing prefixes, across two tenants), budgets and pool sizes
    /// runs to the same outputs as solo runs, within budget, without leaking blocks.
    #[test]
    fn any_workload_matches_solo_runs(
        prompts in prop::collection::vec((0u8..2, 0usize..3, prop::collection::vec(0u32..4, 1..20), 1usize..6), 1..8),
        budget in 1usize..40,
        extra_blocks in 0usize..12,
    ) {
        let block_size = 4;
        let prefixes: [Vec<u32>; 3] = [vec![], (0..8).collect(), (0..13).collect()];
        let longest = prompts.iter().map(|(_, p, t, n)| prefixes[*p].len() + t.len() + n).max().unwrap();
        let mut h = Harness::new(longest.div_ceil(block_size) + extra_blocks, block_size, budget);
        let mut expected = HashMap::new();
        for (i, (tenant, prefix, tail, n_new)) in prompts.into_iter().enumerate() {
            let mut prompt = prefixes[prefix].clone();
            prompt.extend(tail);
            expected.insert(i as SeqId, solo(&prompt, n_new));
            h.add(i as SeqId, tenant, prompt, n_new);
        }
        h.run_to_end();
        for (id, output) in expected {
            prop_assert_eq!(h.done[&id].output(), &output[..]);
        }
    }
}
