//! Property test of quotas and eviction against a plain model that finds each victim by
//! scanning every entry: whatever the sequence of inserts, batches, hits, removals, purges
//! and quota changes, the index evicts exactly the model's victims in the same order, stays
//! within its limits (the per-owner one too), and loses no entry except by eviction, expiry or
//! removal.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use cachet_index::{EntryId, EvictionPolicy, IndexParams, NewEntry, Quota, VectorIndex};
use proptest::prelude::*;

const DIM: usize = 4;
const NEVER: u64 = u64::MAX;
/// The time hits are counted at. Inserts evict by the system clock, at which every expiry
/// time below but `NEVER` has passed; `LATER` has not passed yet at `TOUCH_NOW`, so such an
/// entry takes hits and is still the first victim.
const TOUCH_NOW: u64 = 1_000;
const LATER: u64 = 5_000;

#[derive(Debug, Clone, Copy)]
struct Insert {
    id: EntryId,
    size_bytes: usize,
    cost: f32,
    expires_at_ms: u64,
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Insert),
    Batch(Vec<Insert>),
    Touch { id: EntryId, now_ms: u64 },
    Remove { id: EntryId },
    Purge { now_ms: u64 },
    SetQuota(Quota),
}

fn insert() -> impl Strategy<Value = Insert> {
    let cost = prop_oneof![Just(0.0f32), Just(0.5), Just(1.0), Just(3.0), Just(-1.0)];
    let expiry = prop_oneof![1 => Just(1u64), 1 => Just(2u64), 1 => Just(LATER), 5 => Just(NEVER)];
    (0..24u64, 0..80usize, cost, expiry).prop_map(|(id, size_bytes, cost, expires_at_ms)| Insert {
        id,
        size_bytes,
        cost,
        expires_at_ms,
    })
}

fn policy() -> impl Strategy<Value = EvictionPolicy> {
    prop_oneof![
        Just(EvictionPolicy::Lru),
        Just(EvictionPolicy::Lfu),
        Just(EvictionPolicy::Gdsf)
    ]
}

fn quota() -> impl Strategy<Value = Quota> {
    (
        prop::option::of(1..12usize),
        prop::option::of(1..400usize),
        prop::option::of(1..7usize),
        policy(),
    )
        .prop_map(|(max_entries, max_bytes, per_owner, eviction)| Quota {
            max_entries: max_entries.and_then(NonZeroUsize::new),
            max_bytes: max_bytes.and_then(NonZeroUsize::new),
            max_entries_per_owner: per_owner.and_then(NonZeroUsize::new),
            eviction,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => insert().prop_map(Op::Insert),
        1 => prop::collection::vec(insert(), 1..8).prop_map(Op::Batch),
        6 => (0..24u64, prop_oneof![Just(TOUCH_NOW), Just(NEVER)])
            .prop_map(|(id, now_ms)| Op::Touch { id, now_ms }),
        1 => (0..24u64).prop_map(|id| Op::Remove { id }),
        1 => prop_oneof![Just(0u64), Just(1), Just(2), Just(LATER)]
            .prop_map(|now_ms| Op::Purge { now_ms }),
        1 => quota().prop_map(Op::SetQuota),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size_bytes: usize,
    cost: f64,
    frequency: u64,
    last_used: u64,
    /// Order of allocation, which breaks ties between equal expiry times.
    allocated: u64,
    expires_at_ms: u64,
    gdsf: f64,
}

/// Entries belong to two owners by id, across the three partitions.
fn owner_of(id: EntryId) -> u64 {
    id % 2
}

/// The quota's rules written as plainly as possible: every victim by a full scan.
#[derive(Debug, Default)]
struct Model {
    quota: Quota,
    entries: HashMap<EntryId, Entry>,
    clock: f64,
    next_use: u64,
    next_allocation: u64,
}

impl Model {
    fn bytes(&self) -> usize {
        self.entries.values().map(|e| e.size_bytes).sum()
    }

    fn over(&self, incoming: Option<usize>) -> bool {
        let (n, bytes) = match incoming {
            Some(size) => (self.entries.len() + 1, self.bytes() + size),
            None => (self.entries.len(), self.bytes()),
        };
        self.quota.max_entries.is_some_and(|m| n > m.get())
            || self.quota.max_bytes.is_some_and(|m| bytes > m.get())
    }

    fn gdsf(&self, entry: &Entry) -> f64 {
        self.clock + entry.frequency as f64 * entry.cost / entry.size_bytes.max(1) as f64
    }

    fn rank(&self, entry: &Entry) -> (f64, u64) {
        match self.quota.eviction {
            EvictionPolicy::Lru => (0.0, entry.last_used),
            EvictionPolicy::Lfu => (entry.frequency as f64, entry.last_used),
            EvictionPolicy::Gdsf => (entry.gdsf, entry.last_used),
        }
    }

    fn owned(&self, owner: u64) -> usize {
        self.entries
            .keys()
            .filter(|id| owner_of(**id) == owner)
            .count()
    }

    /// Evicts `owner`'s lowest-ranked entries (never `keep`) until it holds at most `room`
    /// fewer than its quota; the GDSF clock stays.
    fn make_owner_room(&mut self, owner: u64, keep: Option<EntryId>, room: usize) -> Vec<EntryId> {
        let mut evicted = Vec::new();
        let Some(max) = self.quota.max_entries_per_owner else {
            return evicted;
        };
        while self.owned(owner) + room > max.get() {
            let victim = self
                .entries
                .iter()
                .filter(|(id, _)| owner_of(**id) == owner && Some(**id) != keep)
                .min_by(|a, b| {
                    let (ra, rb) = (self.rank(a.1), self.rank(b.1));
                    ra.0.total_cmp(&rb.0).then(ra.1.cmp(&rb.1))
                })
                .map(|(&id, _)| id);
            let Some(victim) = victim else { break };
            self.entries.remove(&victim);
            evicted.push(victim);
        }
        evicted
    }

    /// What a quota change evicts: each owner over its quota, in owner order, then the rest.
    fn set_quota(&mut self, quota: Quota) -> Vec<EntryId> {
        self.quota = quota;
        let mut evicted = self.make_owner_room(0, None, 0);
        evicted.extend(self.make_owner_room(1, None, 0));
        evicted.extend(self.make_room(None, None));
        evicted
    }

    fn make_room(&mut self, keep: Option<EntryId>, incoming: Option<usize>) -> Vec<EntryId> {
        let mut evicted = Vec::new();
        while self.over(incoming) {
            let candidates = self.entries.iter().filter(|(id, _)| Some(**id) != keep);
            let expired = candidates
                .clone()
                .filter(|(_, e)| e.expires_at_ms != NEVER)
                .min_by_key(|(_, e)| (e.expires_at_ms, e.allocated));
            let victim = match expired {
                Some((&id, _)) => id,
                None => {
                    let by_rank = candidates.min_by(|a, b| {
                        let (ra, rb) = (self.rank(a.1), self.rank(b.1));
                        ra.0.total_cmp(&rb.0).then(ra.1.cmp(&rb.1))
                    });
                    let Some((&id, entry)) = by_rank else { break };
                    if self.quota.eviction == EvictionPolicy::Gdsf {
                        self.clock = self.clock.max(entry.gdsf);
                    }
                    id
                }
            };
            self.entries.remove(&victim);
            evicted.push(victim);
        }
        evicted
    }

    fn insert(&mut self, new: Insert) -> Vec<EntryId> {
        self.entries.remove(&new.id);
        if self
            .quota
            .max_bytes
            .is_some_and(|m| new.size_bytes > m.get())
        {
            return vec![new.id];
        }
        let mut evicted = self.make_owner_room(owner_of(new.id), Some(new.id), 1);
        evicted.extend(self.make_room(Some(new.id), Some(new.size_bytes)));
        let cost = if new.cost.is_finite() && new.cost > 0.0 {
            f64::from(new.cost)
        } else {
            0.0
        };
        let mut entry = Entry {
            size_bytes: new.size_bytes,
            cost,
            frequency: 1,
            last_used: self.next_use,
            allocated: self.next_allocation,
            expires_at_ms: new.expires_at_ms,
            gdsf: 0.0,
        };
        entry.gdsf = self.gdsf(&entry);
        self.next_use += 1;
        self.next_allocation += 1;
        self.entries.insert(new.id, entry);
        evicted
    }

    fn touch(&mut self, id: EntryId, now_ms: u64) {
        let Some(mut entry) = self.entries.get(&id).copied() else {
            return;
        };
        if entry.expires_at_ms <= now_ms {
            return;
        }
        entry.frequency += 1;
        entry.last_used = self.next_use;
        entry.gdsf = self.gdsf(&entry);
        self.next_use += 1;
        self.entries.insert(id, entry);
    }
}

fn new_entry<'a>(insert: &Insert, vector: &'a [f32]) -> NewEntry<'a> {
    NewEntry {
        id: insert.id,
        partition: insert.id % 3,
        owner: owner_of(insert.id),
        vector,
        expires_at_ms: insert.expires_at_ms,
        size_bytes: insert.size_bytes,
        cost: insert.cost,
    }
}

fn vector_of(id: EntryId) -> [f32; DIM] {
    [1.0, id as f32, (id % 5) as f32, 0.5]
}

fn check_books(index: &VectorIndex, model: &Model) -> Result<(), TestCaseError> {
    let mut held = index.ids_where(|_, _| true);
    held.sort_unstable();
    let mut expected: Vec<EntryId> = model.entries.keys().copied().collect();
    expected.sort_unstable();
    prop_assert_eq!(held, expected, "no entry lost or kept beyond the model");
    prop_assert_eq!(index.len(), model.entries.len());
    prop_assert_eq!(index.size_bytes(), model.bytes());
    let quota = index.quota();
    if let Some(max) = quota.max_entries {
        prop_assert!(index.len() <= max.get());
    }
    if let Some(max) = quota.max_bytes {
        prop_assert!(index.size_bytes() <= max.get());
    }
    if let Some(max) = quota.max_entries_per_owner {
        prop_assert!(model.owned(0) <= max.get() && model.owned(1) <= max.get());
    }
    Ok(())
}

/// Ids evicted by a batch: each once, leaving out those a later entry brought back.
fn batch_outcome(evicted: Vec<EntryId>, model: &Model) -> Vec<EntryId> {
    let mut seen = HashSet::new();
    evicted
        .into_iter()
        .filter(|id| !model.entries.contains_key(id) && seen.insert(*id))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn eviction_agrees_with_the_model(
        start in quota(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let params = IndexParams { dim: DIM, m: 8, ef_construction: 16, ef_search: 16 };
        let index = VectorIndex::try_new(params, start).expect("valid params");
        let mut model = Model { quota: start, ..Model::default() };
        for op in ops {
            match op {
                Op::Insert(new) => {
                    let vector = vector_of(new.id);
                    let got = index.insert(new_entry(&new, &vector)).expect("valid vector");
                    prop_assert_eq!(got, model.insert(new), "insert {:?}", new);
                }
                Op::Batch(batch) => {
                    let vectors: Vec<[f32; DIM]> = batch.iter().map(|new| vector_of(new.id)).collect();
                    let entries: Vec<NewEntry<'_>> =
                        batch.iter().zip(&vectors).map(|(new, v)| new_entry(new, v)).collect();
                    let got = index.insert_batch(&entries).expect("valid vectors");
                    let mut evicted = Vec::new();
                    for new in &batch {
                        evicted.extend(model.insert(*new));
                    }
                    prop_assert_eq!(got, batch_outcome(evicted, &model), "batch {:?}", batch);
                }
                Op::Touch { id, now_ms } => {
                    index.touch(id, now_ms);
                    model.touch(id, now_ms);
                }
                Op::Remove { id } => {
                    prop_assert_eq!(index.remove(id), model.entries.remove(&id).is_some());
                }
                Op::Purge { now_ms } => {
                    let mut got = index.purge_expired(now_ms);
                    got.sort_unstable();
                    let mut expected: Vec<EntryId> = model
                        .entries
                        .iter()
                        .filter(|(_, e)| e.expires_at_ms <= now_ms)
                        .map(|(id, _)| *id)
                        .collect();
                    expected.sort_unstable();
                    model.entries.retain(|_, e| e.expires_at_ms > now_ms);
                    prop_assert_eq!(got, expected);
                }
                Op::SetQuota(quota) => {
                    let got = index.set_quota(quota);
                    prop_assert_eq!(got, model.set_quota(quota), "set_quota {:?}", quota);
                }
            }
            check_books(&index, &model)?;
        }
    }
}
