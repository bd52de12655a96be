//! Continuous batching: which sequences run in the next step, and how many tokens each.
//!
//! Every step has a token budget. Running decodes are scheduled first, so that a long
//! prompt never stalls them; prompts are prefilled in chunks with what is left
//! (Sarathi-Serve's chunked prefill). A newly admitted sequence first looks up its
//! prompt in the prefix cache and starts after the cached blocks. When the pool runs
//! out, the latest-admitted sequence is preempted: its blocks are released and it is
//! recomputed later (usually from the prefix cache, since its blocks stay cached).

mod sequence;

use std::collections::{HashSet, VecDeque};

pub use sequence::{SeqId, Sequence};

use crate::backend::StepBatch;
use crate::kv::{BlockHash, BlockPool};

/// Limits of one step.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Most query tokens (prefill and decode together) in one step.
    pub max_batch_tokens: usize,
    /// Most sequences running at once.
    pub max_running_seqs: usize,
    /// Reuse the KV of cached prompt prefixes. Off, every prompt is computed in full and
    /// no block is registered (for measuring what the cache saves).
    pub prefix_caching: bool,
}

/// One scheduled sequence: it computes `n_new` tokens from its current position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: SeqId,
    pub n_new: usize,
    /// The chunk reaches the end of the sequence, so a new token is sampled from it.
    pub samples: bool,
}

/// A planned step: the batch for the backend and what it means for each sequence.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub batch: StepBatch,
    pub seqs: Vec<ScheduledSeq>,
}

/// Prefix-cache counters, in tokens, since the scheduler started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub query_tokens: u64,
    pub hit_tokens: u64,
    pub preemptions: u64,
}

/// The scheduler: owns the block pool and every unfinished sequence.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    pool: BlockPool,
    waiting: VecDeque<Sequence>,
    /// In admission order; the last one is the first to be preempted.
    running: Vec<Sequence>,
    counters: CacheCounters,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, pool: BlockPool) -> Self {
        Self {
            config,
            pool,
            waiting: VecDeque::new(),
            running: Vec::new(),
            counters: CacheCounters::default(),
        }
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn counters(&self) -> CacheCounters {
        self.counters
    }

    pub fn n_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn n_running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Queues a new sequence.
    pub fn add(&mut self, seq: Sequence) {
        self.waiting.push_back(seq);
    }

    /// A running or waiting sequence.
    pub fn get(&self, id: SeqId) -> Option<&Sequence> {
        self.running
            .iter()
            .chain(self.waiting.iter())
            .find(|s| s.id == id)
    }

    /// Removes a sequence (finished or aborted) and releases its blocks.
    pub fn remove(&mut self, id: SeqId) -> Option<Sequence> {
        let mut seq = if let Some(i) = self.running.iter().position(|s| s.id == id) {
            self.running.remove(i)
        } else {
            let i = self.waiting.iter().position(|s| s.id == id)?;
            self.waiting.remove(i)?
        };
        self.pool.release(&seq.blocks);
        seq.reset_kv();
        Some(seq)
    }

    fn preempt(&mut self, index: usize) {
        let mut seq = self.running.remove(index);
        self.pool.release(&seq.blocks);
        seq.reset_kv();
        self.counters.preemptions += 1;
        self.waiting.push_front(seq);
    }

    /// Gives `running[index]` enough blocks for `n_tokens` tokens of KV.
    fn grow(&mut self, index: usize, n_tokens: usize) -> bool {
        let seq = &mut self.running[index];
        let needed = n_tokens.div_ceil(self.pool.block_size());
        if needed <= seq.blocks.len() {
            return true;
        }
        match self.pool.allocate(needed - seq.blocks.len()) {
            Some(fresh) => {
                seq.blocks.extend(fresh);
                true
            }
            None => false,
        }
    }

    /// Plans the next step; an empty step means there is nothing to run.
    pub fn schedule(&mut self) -> Step {
        let mut budget = self.config.max_batch_tokens;
        let mut planned: Vec<(usize, usize)> = Vec::new();

        // Decodes first, earliest admitted first; make room by preempting the latest.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            if self.running[i].n_uncomputed() != 1 {
                i += 1;
                continue;
            }
            let target = self.running[i].n_computed + 1;
            if self.grow(i, target) {
                planned.push((i, 1));
                budget -= 1;
                i += 1;
                continue;
            }
            let victim = self.running.len() - 1;
            self.preempt(victim);
            // If the victim was this sequence, the loop ends or moves on naturally.
        }

        // Then prompts already being prefilled, in chunks.
        for i in 0..self.running.len() {
            let remaining = self.running[i].n_uncomputed();
            if budget == 0 || remaining <= 1 {
                continue;
            }
            let n_new = remaining.min(budget);
            let target = self.running[i].n_computed + n_new;
            if self.grow(i, target) {
                planned.push((i, n_new));
                budget -= n_new;
            }
        }

        self.admit_waiting(&mut budget, &mut planned);

        if planned.is_empty() && !self.running.is_empty() {
            // Every running prefill is stuck waiting for blocks held by the others:
            // free the latest one's so the rest can go on.
            let victim = self.running.len() - 1;
            self.preempt(victim);
            return self.schedule();
        }
        self.build_step(planned)
    }

    fn admit_waiting(&mut self, budget: &mut usize, planned: &mut Vec<(usize, usize)>) {
        // Blocks that running prefills will compute: a newcomer that needs one of them
        // next waits for it to be cached rather than computing it a second time.
        let mut pending: HashSet<BlockHash> = HashSet::new();
        let caching = self.config.prefix_caching;
        if caching {
            for seq in &self.running {
                pending.extend(seq.pending_block_hashes(self.pool.block_size()));
            }
        }
        let mut index = 0;
        while *budget > 0 && index < self.waiting.len() {
            if self.running.len() >= self.config.max_running_seqs {
                break;
            }
            let block_size = self.pool.block_size();
            let seq = &mut self.waiting[index];
            seq.update_hashes(block_size);
            let mut matched = if caching {
                self.pool.lookup(&seq.salt, &seq.tokens, &seq.hashes)
            } else {
                Vec::new()
            };
            if matched.len() * block_size == seq.tokens.len() {
                // The whole sequence is cached, but the last token must run to give logits:
                // recompute the last block rather than write into a shared one.
                if let Some(last) = matched.pop() {
                    self.pool.release(&[last]);
                }
            }
            let n_cached = matched.len() * block_size;
            let next_block = seq.hashes.get(matched.len());
            if next_block.is_some_and(|h| pending.contains(h)) {
                self.pool.release(&matched);
                index += 1;
                continue;
            }
            let n_new = (seq.tokens.len() - n_cached).min(*budget);
            let needed = (n_cached + n_new).div_ceil(block_size) - matched.len();
            let Some(fresh) = self.pool.allocate(needed) else {
                self.pool.release(&matched);
                break;
            };
            let Some(mut seq) = self.waiting.remove(index) else {
                break;
            };
            if !seq.admitted_before {
                seq.n_cached_prompt = n_cached;
                self.counters.query_tokens += seq.tokens.len() as u64;
                self.counters.hit_tokens += n_cached as u64;
                seq.admitted_before = true;
            }
            seq.n_registered = matched.len();
            seq.blocks = matched;
            seq.blocks.extend(fresh);
            seq.n_computed = n_cached;
            if caching {
                pending.extend(seq.pending_block_hashes(block_size));
            }
            self.running.push(seq);
            planned.push((self.running.len() - 1, n_new));
            *budget -= n_new;
        }
    }

    fn build_step(&self, planned: Vec<(usize, usize)>) -> Step {
        let mut step = Step::default();
        for (index, n_new) in planned {
            let seq = &self.running[index];
            let start = seq.n_computed;
            let samples = start + n_new == seq.tokens.len();
            step.batch.push_seq(
                &seq.tokens[start..start + n_new],
                start,
                seq.blocks.clone(),
                self.pool.block_size(),
                samples,
            );
            step.seqs.push(ScheduledSeq {
                id: seq.id,
                n_new,
                samples,
            });
        }
        step
    }

    /// Records that `step` ran: advances each sequence, registers the blocks it filled
    /// in the prefix cache, and appends the sampled tokens (`sampled` pairs a sequence
    /// with its new token, for the sequences whose chunk samples).
    pub fn complete(&mut self, step: &Step, sampled: &[(SeqId, u32)]) {
        let block_size = self.pool.block_size();
        for scheduled in &step.seqs {
            let Some(seq) = self.running.iter_mut().find(|s| s.id == scheduled.id) else {
                continue;
            };
            seq.n_computed += scheduled.n_new;
            seq.update_hashes(block_size);
            let n_full = (seq.n_computed / block_size).min(seq.hashes.len());
            while self.config.prefix_caching && seq.n_registered < n_full && !seq.cache_chain_broken
            {
                let b = seq.n_registered;
                let parent = b.checked_sub(1).map(|p| seq.blocks[p]);
                let tokens = &seq.tokens[b * block_size..(b + 1) * block_size];
                if self
                    .pool
                    .register(seq.blocks[b], seq.hashes[b], parent, &seq.salt, tokens)
                {
                    seq.n_registered += 1;
                } else {
                    seq.cache_chain_broken = true;
                }
            }
        }
        for &(id, token) in sampled {
            if let Some(seq) = self.running.iter_mut().find(|s| s.id == id) {
                seq.tokens.push(token);
            }
        }
    }
}

#[cfg(test)]
mod tests;
