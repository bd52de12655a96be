//! Per-category quotas and the eviction order that enforces them: LRU, LFU or
//! GreedyDual-Size-Frequency, kept in an ordered set so that the next victim is found in
//! O(log n) and a hit re-ranks its entry in O(log n).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;

use crate::state::State;
use crate::{EntryId, NewEntry};

/// Which entry a full category gives up first, once its expired entries are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EvictionPolicy {
    /// Least recently inserted or touched.
    #[default]
    Lru,
    /// Fewest touches; among equals, least recently inserted or touched.
    Lfu,
    /// GreedyDual-Size-Frequency: lowest `H = L + frequency × cost / size_bytes`, where `L`
    /// is the category's clock, raised to each evicted entry's `H`. Small entries that were
    /// expensive to produce and are often hit stay; entries popular long ago age out because
    /// newer entries start from a higher `L`.
    Gdsf,
}

/// How much one category may hold and what it gives up when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// Most entries held; `None` for no limit.
    pub max_entries: Option<NonZeroUsize>,
    /// Most bytes held, summing the entries' `size_bytes`; `None` for no limit. An entry
    /// larger than this on its own is never admitted: `insert` returns its id as evicted.
    pub max_bytes: Option<NonZeroUsize>,
    /// Most entries one owner (the entries' [`NewEntry::owner`], a tenant) may hold; `None` for
    /// no limit. An owner at its limit gives up its own lowest-ranked entry for a new one, so
    /// that it never evicts another owner's entries while the category as a whole has room.
    pub max_entries_per_owner: Option<NonZeroUsize>,
    pub eviction: EvictionPolicy,
}

impl Quota {
    /// Whether an entry of `size_bytes` can be held at all.
    pub(crate) fn admits(&self, size_bytes: usize) -> bool {
        self.max_bytes.is_none_or(|max| size_bytes <= max.get())
    }

    fn owner_exceeded_by(&self, entries: usize) -> bool {
        self.max_entries_per_owner
            .is_some_and(|max| entries > max.get())
    }

    fn exceeded_by(&self, entries: usize, bytes: usize) -> bool {
        self.max_entries.is_some_and(|max| entries > max.get())
            || self.max_bytes.is_some_and(|max| bytes > max.get())
    }
}

/// A position in the eviction order: lowest first. `recency` is unique per entry (a logical
/// clock ticked by every insert and touch), so two entries never compare equal.
#[derive(Debug, Clone, Copy)]
struct Rank {
    primary: f64,
    recency: u64,
}

impl PartialEq for Rank {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Rank {}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.primary
            .total_cmp(&other.primary)
            .then(self.recency.cmp(&other.recency))
    }
}

/// What the eviction order knows about one entry.
#[derive(Debug, Clone, Copy)]
struct Record {
    size_bytes: usize,
    /// Sanitised cost: finite and not negative.
    cost: f64,
    /// One for the insert plus one per touch.
    frequency: u64,
    /// Logical time of the last insert or touch.
    last_used: u64,
    expires_at_ms: u64,
    /// Who the entry counts against for `max_entries_per_owner`.
    owner: u64,
    /// GDSF priority as of the last insert or touch; kept under every policy so that a
    /// switch to GDSF needs no history.
    gdsf: f64,
    rank: Rank,
}

/// One category's entries in eviction order, with its quota and byte count.
///
/// Guarded by its own mutex in [`crate::VectorIndex`], separate from the index's state, so
/// that a hit (`touch`) never waits for searches. Writers take the state lock first.
#[derive(Debug, Default)]
pub(crate) struct EvictionOrder {
    quota: Quota,
    records: HashMap<EntryId, Record>,
    ranked: BTreeSet<(Rank, EntryId)>,
    /// The same order split by owner, for an owner's own next victim in O(log n).
    by_owner: HashMap<u64, BTreeSet<(Rank, EntryId)>>,
    total_bytes: usize,
    /// The GDSF clock `L`: the priority of the last entry evicted by policy.
    clock: f64,
    next_use: u64,
}

impl EvictionOrder {
    pub(crate) fn new(quota: Quota) -> Self {
        Self {
            quota,
            ..Self::default()
        }
    }

    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Replaces the quota. A new policy re-ranks every entry (O(n log n)); the caller then
    /// evicts whatever the new limits no longer allow.
    pub(crate) fn set_quota(&mut self, quota: Quota) {
        let policy_changed = quota.eviction != self.quota.eviction;
        self.quota = quota;
        if policy_changed {
            self.ranked.clear();
            self.by_owner.clear();
            for (&id, record) in &mut self.records {
                record.rank = rank(quota.eviction, record);
                self.ranked.insert((record.rank, id));
                self.by_owner
                    .entry(record.owner)
                    .or_default()
                    .insert((record.rank, id));
            }
        }
    }

    /// Whether the quota would be exceeded with one more entry of `incoming_bytes`, if any.
    fn over_quota(&self, incoming_bytes: Option<usize>) -> bool {
        let (entries, bytes) = match incoming_bytes {
            Some(size) => (
                self.records.len() + 1,
                self.total_bytes.saturating_add(size),
            ),
            None => (self.records.len(), self.total_bytes),
        };
        self.quota.exceeded_by(entries, bytes)
    }

    /// Records a new entry, replacing any earlier one with the same id (a replacement starts
    /// afresh: its answer is new, so are its hits). Its GDSF priority starts from the current
    /// clock, so room is made first (see [`admit`]).
    fn insert(
        &mut self,
        id: EntryId,
        owner: u64,
        size_bytes: usize,
        cost: f32,
        expires_at_ms: u64,
    ) {
        self.remove(id);
        let cost = if cost.is_finite() && cost > 0.0 {
            f64::from(cost)
        } else {
            0.0
        };
        let mut record = Record {
            size_bytes,
            cost,
            frequency: 1,
            last_used: self.tick(),
            expires_at_ms,
            owner,
            gdsf: 0.0,
            rank: Rank {
                primary: 0.0,
                recency: 0,
            },
        };
        self.rerank(&mut record);
        // Sizes are the caller's figures; saturating keeps absurd ones from overflowing.
        self.total_bytes = self.total_bytes.saturating_add(size_bytes);
        self.ranked.insert((record.rank, id));
        self.by_owner
            .entry(owner)
            .or_default()
            .insert((record.rank, id));
        self.records.insert(id, record);
    }

    /// Counts a hit on `id` at `now_ms`; returns false for an unknown or expired entry.
    pub(crate) fn touch(&mut self, id: EntryId, now_ms: u64) -> bool {
        let use_no = self.next_use;
        let (clock, policy) = (self.clock, self.quota.eviction);
        let Some(record) = self.records.get_mut(&id) else {
            return false;
        };
        if record.expires_at_ms <= now_ms {
            return false;
        }
        self.ranked.remove(&(record.rank, id));
        let owned = self.by_owner.entry(record.owner).or_default();
        owned.remove(&(record.rank, id));
        record.frequency = record.frequency.saturating_add(1);
        record.last_used = use_no;
        record.gdsf = gdsf(clock, record);
        record.rank = rank(policy, record);
        self.ranked.insert((record.rank, id));
        owned.insert((record.rank, id));
        self.next_use += 1;
        true
    }

    /// Forgets `id` (removed, replaced, expired or evicted); returns whether it was known.
    pub(crate) fn remove(&mut self, id: EntryId) -> bool {
        let Some(record) = self.records.remove(&id) else {
            return false;
        };
        self.ranked.remove(&(record.rank, id));
        if let Some(owned) = self.by_owner.get_mut(&record.owner) {
            owned.remove(&(record.rank, id));
            if owned.is_empty() {
                self.by_owner.remove(&record.owner);
            }
        }
        self.total_bytes = self.total_bytes.saturating_sub(record.size_bytes);
        true
    }

    /// Entries `owner` holds.
    fn owned(&self, owner: u64) -> usize {
        self.by_owner.get(&owner).map_or(0, BTreeSet::len)
    }

    /// The entry of `owner` the policy gives up first, other than `keep`.
    fn owner_victim(&self, owner: u64, keep: Option<EntryId>) -> Option<EntryId> {
        self.by_owner
            .get(&owner)?
            .iter()
            .map(|&(_, id)| id)
            .find(|&id| Some(id) != keep)
    }

    /// Owners holding more than the per-owner quota allows, in order (so that evictions come
    /// in a reproducible order).
    fn owners_over_quota(&self) -> Vec<u64> {
        let mut owners: Vec<u64> = self
            .by_owner
            .iter()
            .filter(|(_, owned)| self.quota.owner_exceeded_by(owned.len()))
            .map(|(&owner, _)| owner)
            .collect();
        owners.sort_unstable();
        owners
    }

    /// Forgets every entry; the quota stays and the GDSF clock starts over.
    pub(crate) fn clear(&mut self) {
        *self = Self::new(self.quota);
    }

    /// The entry the policy gives up next, other than `keep`.
    fn policy_victim(&self, keep: Option<EntryId>) -> Option<EntryId> {
        self.ranked
            .iter()
            .map(|&(_, id)| id)
            .find(|&id| Some(id) != keep)
    }

    /// Evicts `id` by policy: under GDSF the clock rises to its priority, which is what makes
    /// entries that were popular long ago lose to fresh ones.
    fn evict(&mut self, id: EntryId) {
        if let Some(record) = self.records.get(&id)
            && self.quota.eviction == EvictionPolicy::Gdsf
        {
            self.clock = self.clock.max(record.gdsf);
        }
        self.remove(id);
    }

    fn tick(&mut self) -> u64 {
        self.next_use += 1;
        self.next_use - 1
    }

    fn rerank(&self, record: &mut Record) {
        record.gdsf = gdsf(self.clock, record);
        record.rank = rank(self.quota.eviction, record);
    }
}

/// `H = L + frequency × cost / size`, with empty entries counted as one byte.
fn gdsf(clock: f64, record: &Record) -> f64 {
    clock + record.frequency as f64 * record.cost / record.size_bytes.max(1) as f64
}

fn rank(policy: EvictionPolicy, record: &Record) -> Rank {
    let primary = match policy {
        EvictionPolicy::Lru => 0.0,
        EvictionPolicy::Lfu => record.frequency as f64,
        EvictionPolicy::Gdsf => record.gdsf,
    };
    Rank {
        primary,
        recency: record.last_used,
    }
}

/// Records `entry`, already allocated in `state`, in the eviction order, evicting first
/// what the quota needs to make room for it (as GreedyDual does, so that its priority starts
/// from the clock its victims raised). Returns the evicted ids in eviction order; never
/// `entry` itself, which the caller has checked [`Quota::admits`].
pub(crate) fn admit(
    state: &mut State,
    order: &mut EvictionOrder,
    now_ms: u64,
    entry: &NewEntry<'_>,
) -> Vec<EntryId> {
    // A replaced entry's bytes and rank go before room is measured.
    order.remove(entry.id);
    let mut evicted = make_room_for_owner(state, order, entry.owner, entry.id);
    evicted.extend(make_room(
        state,
        order,
        now_ms,
        Some((entry.id, entry.size_bytes)),
    ));
    order.insert(
        entry.id,
        entry.owner,
        entry.size_bytes,
        entry.cost,
        entry.expires_at_ms,
    );
    evicted
}

/// Evicts entries until the quota holds (after a quota change); returns them in order.
pub(crate) fn evict_over_quota(
    state: &mut State,
    order: &mut EvictionOrder,
    now_ms: u64,
) -> Vec<EntryId> {
    let mut evicted = Vec::new();
    for owner in order.owners_over_quota() {
        while order.quota.owner_exceeded_by(order.owned(owner)) {
            let Some(id) = order.owner_victim(owner, None) else {
                break;
            };
            order.remove(id);
            state.remove_entry(id);
            evicted.push(id);
        }
    }
    evicted.extend(make_room(state, order, now_ms, None));
    evicted
}

/// Evicts `owner`'s own lowest-ranked entries until one more fits its per-owner quota.
/// These evictions leave the GDSF clock alone: one owner filling its share must not age
/// everyone else's entries.
fn make_room_for_owner(
    state: &mut State,
    order: &mut EvictionOrder,
    owner: u64,
    incoming: EntryId,
) -> Vec<EntryId> {
    let mut evicted = Vec::new();
    while order.quota.owner_exceeded_by(order.owned(owner) + 1) {
        let Some(id) = order.owner_victim(owner, Some(incoming)) else {
            break;
        };
        order.remove(id);
        state.remove_entry(id);
        evicted.push(id);
    }
    evicted
}

/// Evicts until the quota holds with `incoming` (an entry's id and size, already in `state`
/// but not yet in `order`) added: first entries expired at `now_ms`, soonest expiry first,
/// then the policy's lowest. Only policy evictions advance the GDSF clock, so an expired
/// entry's high priority does not inflate it.
fn make_room(
    state: &mut State,
    order: &mut EvictionOrder,
    now_ms: u64,
    incoming: Option<(EntryId, usize)>,
) -> Vec<EntryId> {
    let keep = incoming.map(|(id, _)| id);
    let mut evicted = Vec::new();
    while order.over_quota(incoming.map(|(_, size)| size)) {
        if let Some(id) = state.expired_victim(now_ms, keep) {
            order.remove(id);
            state.remove_entry(id);
            evicted.push(id);
            continue;
        }
        let Some(id) = order.policy_victim(keep) else {
            break;
        };
        order.evict(id);
        state.remove_entry(id);
        evicted.push(id);
    }
    evicted
}

#[cfg(test)]
#[path = "eviction_tests.rs"]
mod tests;
