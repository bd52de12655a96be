//! Unit tests of the eviction order: one hand-worked example per policy, expiry first, byte
//! limits, policy switches, and the bookkeeping staying in step with the index state.
use std::num::NonZeroUsize;

use super::*;
use crate::params::IndexParams;

const NEVER: u64 = u64::MAX;
/// The "now" these tests evict at; entries expiring at or before it are expired.
const NOW: u64 = 1_000;

fn quota(max_entries: usize, max_bytes: usize, eviction: EvictionPolicy) -> Quota {
    Quota {
        max_entries: NonZeroUsize::new(max_entries),
        max_bytes: NonZeroUsize::new(max_bytes),
        max_entries_per_owner: None,
        eviction,
    }
}

/// Index bookkeeping and eviction order side by side, as `VectorIndex` holds them.
struct Held {
    state: State,
    order: EvictionOrder,
}

impl Held {
    fn new(quota: Quota) -> Self {
        Self {
            state: State::new(IndexParams {
                dim: 2,
                ..IndexParams::default()
            }),
            order: EvictionOrder::new(quota),
        }
    }

    /// Inserts `id` and returns what the quota evicted.
    fn insert(
        &mut self,
        id: EntryId,
        size_bytes: usize,
        cost: f32,
        expires_at_ms: u64,
    ) -> Vec<EntryId> {
        let angle = id as f32;
        let vector = [angle.cos(), angle.sin()];
        self.state.allocate(id, 0, &vector, expires_at_ms);
        let entry = NewEntry {
            id,
            partition: 0,
            owner: 0,
            vector: &vector,
            expires_at_ms,
            size_bytes,
            cost,
        };
        let evicted = admit(&mut self.state, &mut self.order, NOW, &entry);
        self.check();
        evicted
    }

    fn touch(&mut self, id: EntryId, times: usize) {
        for _ in 0..times {
            assert!(self.order.touch(id, NOW), "touch {id}");
        }
    }

    fn check(&self) {
        assert_eq!(self.state.len(), self.order.len());
        assert_eq!(self.order.ranked.len(), self.order.records.len());
        let bytes: usize = self.order.records.values().map(|r| r.size_bytes).sum();
        assert_eq!(bytes, self.order.total_bytes);
        for (&id, record) in &self.order.records {
            assert!(
                self.state.contains(id),
                "{id} in the order but not the state"
            );
            assert!(self.order.ranked.contains(&(record.rank, id)));
        }
    }
}

#[test]
fn lru_keeps_the_touched_entry() {
    let mut held = Held::new(quota(3, 0, EvictionPolicy::Lru));
    for id in 1..=3 {
        assert!(held.insert(id, 10, 1.0, NEVER).is_empty());
    }
    // 1 is the oldest insert, but a hit makes it the most recently used.
    held.touch(1, 1);
    assert_eq!(held.insert(4, 10, 1.0, NEVER), vec![2]);
    assert_eq!(held.insert(5, 10, 1.0, NEVER), vec![3]);
    assert_eq!(held.insert(6, 10, 1.0, NEVER), vec![1]);
}

#[test]
fn lfu_keeps_the_frequent_entry_and_breaks_ties_by_recency() {
    let mut held = Held::new(quota(3, 0, EvictionPolicy::Lfu));
    for id in 1..=3 {
        held.insert(id, 10, 1.0, NEVER);
    }
    held.touch(1, 3);
    held.touch(2, 1);
    held.touch(3, 1);
    // 2 and 3 both have two uses; 2 was used less recently.
    assert_eq!(held.insert(4, 10, 1.0, NEVER), vec![2]);
    // The newcomer 4 (one use) is spared while it is the entry just inserted, then goes first.
    assert_eq!(held.insert(5, 10, 1.0, NEVER), vec![4]);
    assert_eq!(held.insert(6, 10, 1.0, NEVER), vec![5]);
    assert!(held.order.records.contains_key(&1));
}

#[test]
fn gdsf_keeps_a_small_expensive_entry_over_a_big_cheap_one() {
    let mut held = Held::new(quota(2, 0, EvictionPolicy::Gdsf));
    // H(small) = 0 + 1 × 50 / 100 = 0.5; H(big) = 0 + 1 × 5 / 1000 = 0.005.
    held.insert(1, 100, 50.0, NEVER);
    held.insert(2, 1_000, 5.0, NEVER);
    // Even though the big one is the more recent, its priority is lower.
    assert_eq!(held.insert(3, 100, 50.0, NEVER), vec![2]);
    assert_eq!(held.order.clock, 0.005, "L rises to the evicted priority");
}

#[test]
fn gdsf_ages_out_an_old_popular_entry() {
    let mut held = Held::new(quota(2, 0, EvictionPolicy::Gdsf));
    // Entry 1 is popular: four uses of cost 1 per byte give H = 4.
    held.insert(1, 1, 1.0, NEVER);
    held.touch(1, 3);
    assert_eq!(held.order.records[&1].gdsf, 4.0);
    // Then the workload moves on: each newcomer (H = L + 1) pushes out the previous one, and
    // each eviction raises L by about one, until newcomers outrank the old favourite.
    held.insert(2, 1, 1.0, NEVER); // H = 1
    assert_eq!(held.insert(3, 1, 1.0, NEVER), vec![2]); // L = 1, H(3) = 2
    assert_eq!(held.insert(4, 1, 1.0, NEVER), vec![3]); // L = 2, H(4) = 3
    assert_eq!(held.insert(5, 1, 1.0, NEVER), vec![4]); // L = 3, H(5) = 4
    // H(5) = 4 ties with entry 1, which was used less recently.
    assert_eq!(held.insert(6, 1, 1.0, NEVER), vec![1]);
    assert_eq!(held.order.clock, 4.0);
    // Without aging, plain LFU would have kept entry 1 throughout.
    let mut lfu = Held::new(quota(2, 0, EvictionPolicy::Lfu));
    lfu.insert(1, 1, 1.0, NEVER);
    lfu.touch(1, 3);
    for id in 2..=6 {
        lfu.insert(id, 1, 1.0, NEVER);
    }
    assert!(lfu.order.records.contains_key(&1));
}

#[test]
fn expired_entries_go_first_whatever_the_policy() {
    for policy in [
        EvictionPolicy::Lru,
        EvictionPolicy::Lfu,
        EvictionPolicy::Gdsf,
    ] {
        let mut held = Held::new(quota(3, 0, policy));
        held.insert(1, 10, 1.0, NEVER);
        held.insert(2, 10, 9.0, NOW + 1);
        held.insert(3, 10, 9.0, NOW);
        held.touch(2, 5);
        // 3 expired at NOW; a touch at NOW of an expired entry does not count.
        assert!(!held.order.touch(3, NOW));
        assert_eq!(held.insert(4, 10, 1.0, NEVER), vec![3], "{policy:?}");
        assert_eq!(
            held.order.clock, 0.0,
            "{policy:?}: an expired victim leaves L alone"
        );
    }
}

#[test]
fn byte_limit_evicts_until_both_limits_hold() {
    let mut held = Held::new(quota(10, 100, EvictionPolicy::Lru));
    held.insert(1, 40, 1.0, NEVER);
    held.insert(2, 40, 1.0, NEVER);
    held.insert(3, 10, 1.0, NEVER);
    assert_eq!(held.order.total_bytes(), 90);
    // 70 more bytes: 160 > 100, so the two oldest go (120, then 80).
    assert_eq!(held.insert(4, 70, 1.0, NEVER), vec![1, 2]);
    assert_eq!(held.order.total_bytes(), 80);
    // A replacement changes the byte count by the difference only.
    assert!(held.insert(4, 80, 1.0, NEVER).is_empty());
    assert_eq!(held.order.total_bytes(), 90);
    assert!(!held.order.quota().admits(101));
    assert!(held.order.quota().admits(100));
}

#[test]
fn switching_policy_reranks_and_shrinking_evicts() {
    let mut held = Held::new(quota(4, 0, EvictionPolicy::Lru));
    for id in 1..=4 {
        held.insert(id, 10, 1.0, NEVER);
    }
    held.touch(1, 2);
    held.touch(2, 1);
    // Under LRU the order is 3, 4, 1, 2; under LFU 3, 4 (one use), 2 (two), 1 (three).
    held.order.set_quota(quota(2, 0, EvictionPolicy::Lfu));
    let evicted = evict_over_quota(&mut held.state, &mut held.order, NOW);
    assert_eq!(evicted, vec![3, 4]);
    held.check();
    held.order.set_quota(quota(1, 0, EvictionPolicy::Lfu));
    let evicted = evict_over_quota(&mut held.state, &mut held.order, NOW);
    assert_eq!(evicted, vec![2]);
    held.check();
}

#[test]
fn costs_and_sizes_that_would_break_priorities_are_sanitised() {
    let mut held = Held::new(quota(2, 0, EvictionPolicy::Gdsf));
    held.insert(1, 0, f32::NAN, NEVER);
    held.insert(2, 0, -5.0, NEVER);
    held.insert(3, 0, f32::INFINITY, NEVER);
    for record in held.order.records.values() {
        assert_eq!(record.gdsf, 0.0);
    }
    // All priorities equal: recency decides, as in LRU.
    assert_eq!(held.order.ranked.first().map(|&(_, id)| id), Some(2));
    // An empty entry is counted as one byte, so its priority stays finite.
    held.insert(4, 0, 2.0, NEVER);
    assert_eq!(held.order.records[&4].gdsf, 2.0);
}

#[test]
fn removal_and_clear_keep_the_books() {
    let mut held = Held::new(quota(0, 0, EvictionPolicy::Lru));
    held.insert(1, 5, 1.0, NEVER);
    held.insert(2, 7, 1.0, NEVER);
    assert!(held.order.remove(1));
    assert!(!held.order.remove(1));
    assert!(!held.order.touch(1, NOW));
    assert_eq!(held.order.total_bytes(), 7);
    held.order.clear();
    assert_eq!((held.order.len(), held.order.total_bytes()), (0, 0));
    assert_eq!(held.order.quota(), quota(0, 0, EvictionPolicy::Lru));
}
