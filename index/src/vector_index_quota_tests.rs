//! Unit tests of `VectorIndex`'s quotas: eviction through the public API, byte limits,
//! quota reloads, clearing, and batches that evict their own entries.

use std::num::NonZeroUsize;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::tests::{DIM, NEVER, entry, ids, index_with, params, random_vector, tunings};
use super::*;
use crate::EvictionPolicy;

#[test]
fn quota_evicts_expired_entries_soonest_first_but_never_the_new_entry() {
    let index = index_with(tunings()[0].1, Some(3));
    let v = [1.0; DIM];
    // Times in 1970 are long expired by the system clock that inserts evict by.
    assert!(index.insert(entry(1, 0, &v, 5_000)).unwrap().is_empty());
    assert!(index.insert(entry(2, 0, &v, 1_000)).unwrap().is_empty());
    assert!(index.insert(entry(3, 0, &v, 3_000)).unwrap().is_empty());
    assert_eq!(index.insert(entry(4, 0, &v, NEVER)).unwrap(), vec![2]);
    // The new entry expires soonest of all, yet the next-soonest goes.
    assert_eq!(index.insert(entry(5, 0, &v, 10)).unwrap(), vec![3]);
    assert_eq!(index.len(), 3);
    let mut left = index.ids_where(|_, _| true);
    left.sort_unstable();
    assert_eq!(left, vec![1, 4, 5]);
    // Replacing an entry does not count against the quota.
    assert!(index.insert(entry(5, 0, &v, 10)).unwrap().is_empty());
}

#[test]
fn lru_quota_keeps_the_touched_entry() {
    let index = index_with(tunings()[0].1, Some(2));
    let v = [1.0; DIM];
    index.insert(entry(1, 0, &v, NEVER)).unwrap();
    index.insert(entry(2, 0, &v, NEVER)).unwrap();
    index.touch(1, 0);
    // Unknown ids and hits on expired entries change nothing.
    index.touch(99, 0);
    assert_eq!(index.insert(entry(3, 0, &v, NEVER)).unwrap(), vec![2]);
    index.touch(1, NEVER);
    assert_eq!(index.insert(entry(4, 0, &v, NEVER)).unwrap(), vec![1]);
}

#[test]
fn byte_quota_counts_sizes_and_refuses_what_cannot_fit() {
    let quota = Quota {
        max_bytes: NonZeroUsize::new(250),
        ..Quota::default()
    };
    let index = VectorIndex::with_tuning(params(), quota, tunings()[0].1).unwrap();
    let v = [1.0; DIM];
    index.insert(entry(1, 0, &v, NEVER)).unwrap();
    index.insert(entry(2, 0, &v, NEVER)).unwrap();
    assert_eq!(index.size_bytes(), 200);
    assert_eq!(index.insert(entry(3, 0, &v, NEVER)).unwrap(), vec![1]);
    assert_eq!(index.stats().size_bytes, 200);
    // Too big on its own: not admitted, and the old entry with its id goes too.
    let huge = NewEntry {
        size_bytes: 251,
        ..entry(2, 0, &v, NEVER)
    };
    assert_eq!(index.insert(huge).unwrap(), vec![2]);
    assert_eq!(index.ids_where(|_, _| true), vec![3]);
    assert_eq!(index.size_bytes(), 100);
    assert!(index.search(0, &v, 5, 0).unwrap().iter().all(|n| n.id == 3));
}

#[test]
fn set_quota_applies_at_once_and_switches_policy() {
    let index = index_with(tunings()[0].1, None);
    let v = [1.0; DIM];
    for id in 1..=4 {
        index.insert(entry(id, 0, &v, NEVER)).unwrap();
    }
    index.touch(1, 0);
    index.touch(1, 0);
    index.touch(2, 0);
    index.touch(3, 0);
    let lfu = Quota {
        max_entries: NonZeroUsize::new(2),
        eviction: EvictionPolicy::Lfu,
        ..Quota::default()
    };
    // LRU would evict 4 then 1; LFU evicts the least used: 4 (one use), then 2 (two, older).
    assert_eq!(index.set_quota(lfu), vec![4, 2]);
    assert_eq!(index.quota(), lfu);
    assert_eq!(index.len(), 2);
    assert!(index.set_quota(Quota::default()).is_empty());
}

#[test]
fn clear_and_ids_where() {
    for (name, tuning) in tunings() {
        let index = index_with(tuning, Some(50));
        let mut rng = StdRng::seed_from_u64(10);
        for id in 0..40u64 {
            index
                .insert(entry(id, id % 4, &random_vector(&mut rng), NEVER))
                .unwrap();
        }
        let mut odd = index.ids_where(|id, partition| partition == 1 && id % 2 == 1);
        odd.sort_unstable();
        assert_eq!(odd, vec![1, 5, 9, 13, 17, 21, 25, 29, 33, 37], "{name}");
        assert_eq!(index.clear(), 40, "{name}");
        assert_eq!((index.len(), index.size_bytes()), (0, 0), "{name}");
        assert!(
            index
                .search(1, &random_vector(&mut rng), 5, 0)
                .unwrap()
                .is_empty()
        );
        let v = random_vector(&mut rng);
        index.insert(entry(7, 1, &v, NEVER)).unwrap();
        assert_eq!(ids(&index.search(1, &v, 5, 0).unwrap()), vec![7], "{name}");
        assert_eq!(index.quota().max_entries, NonZeroUsize::new(50));
    }
}

#[test]
fn clear_during_a_rebuild_drops_the_rebuilt_graph() {
    let index = index_with(tunings()[1].1, None);
    let mut rng = StdRng::seed_from_u64(11);
    for id in 0..300u64 {
        index
            .insert(entry(id, 0, &random_vector(&mut rng), NEVER))
            .unwrap();
    }
    // Interleave by hand what a background rebuild does around a clear.
    let (start, end) = index.shared.state.write().begin_rebuild().unwrap();
    let points = index.shared.state.read().rebuild_points(start, end);
    index.clear();
    let v = random_vector(&mut rng);
    index.insert(entry(1_000, 0, &v, NEVER)).unwrap();
    let n_points = points.len();
    let rebuilt = crate::segment::Segment::build(&params(), points);
    index
        .shared
        .state
        .write()
        .finish_rebuild(start, end, rebuilt, n_points);
    let stats = index.stats();
    assert_eq!(
        (stats.entries, stats.graph_points, stats.dead_points),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(ids(&index.search(0, &v, 5, 0).unwrap()), vec![1_000]);
}

#[test]
fn batch_evicts_as_single_inserts_would_and_skips_dead_points() {
    let index = index_with(tunings()[1].1, Some(3));
    let mut rng = StdRng::seed_from_u64(12);
    let vectors: Vec<Vec<f32>> = (0..6).map(|_| random_vector(&mut rng)).collect();
    let big = NewEntry {
        size_bytes: usize::MAX,
        ..entry(9, 0, &vectors[0], NEVER)
    };
    let quota = Quota {
        max_bytes: NonZeroUsize::new(1_000),
        ..index.quota()
    };
    index.set_quota(quota);
    let batch = [
        entry(1, 0, &vectors[0], NEVER),
        entry(2, 0, &vectors[1], NEVER),
        big,
        entry(3, 0, &vectors[2], NEVER),
        entry(4, 0, &vectors[3], NEVER),
        entry(1, 0, &vectors[4], NEVER),
        entry(5, 0, &vectors[5], NEVER),
    ];
    // 4 evicts 1, the second 1 evicts 2, 5 evicts 3; 9 is refused; 1 came back.
    assert_eq!(index.insert_batch(&batch).unwrap(), vec![9, 2, 3]);
    let mut left = index.ids_where(|_, _| true);
    left.sort_unstable();
    assert_eq!(left, vec![1, 4, 5]);
    let stats = index.stats();
    assert_eq!((stats.graph_points, stats.dead_points), (3, 0), "{stats:?}");
    for (id, v) in [(1, 4), (4, 3), (5, 5)] {
        assert_eq!(index.search(0, &vectors[v], 1, 0).unwrap()[0].id, id);
    }
}

#[test]
fn ef_search_changes_on_a_running_index() {
    let index = VectorIndex::try_new(
        IndexParams {
            dim: 4,
            m: 8,
            ef_construction: 32,
            ef_search: 16,
        },
        Quota::default(),
    )
    .unwrap();
    assert_eq!(index.ef_search(), 16);
    index.set_ef_search(128);
    assert_eq!(index.ef_search(), 128);
    assert_eq!(
        index.params().ef_search,
        16,
        "the built parameters are kept"
    );
    index.set_ef_search(0);
    assert_eq!(index.ef_search(), 1);
}

#[test]
fn an_owner_at_its_quota_evicts_only_its_own_entries() {
    let quota = Quota {
        max_entries: NonZeroUsize::new(100),
        max_entries_per_owner: NonZeroUsize::new(3),
        ..Quota::default()
    };
    let index = VectorIndex::with_tuning(params(), quota, tunings()[0].1).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let owned = |id: u64, owner: u64, v: &[f32]| -> Vec<u64> {
        let new = NewEntry {
            owner,
            ..entry(id, owner, v, NEVER)
        };
        index.insert(new).unwrap()
    };
    for id in [1, 2, 3] {
        assert!(owned(id, 7, &random_vector(&mut rng)).is_empty());
    }
    // The other owner floods the category: it only ever gives up its own oldest entries.
    let mut flood_evicted = Vec::new();
    for id in 100..130 {
        flood_evicted.extend(owned(id, 8, &random_vector(&mut rng)));
    }
    assert_eq!(flood_evicted, (100..127).collect::<Vec<u64>>());
    let mut held = index.ids_where(|_, _| true);
    held.sort_unstable();
    assert_eq!(held, vec![1, 2, 3, 127, 128, 129]);
    // A hit keeps an owner's entry, as LRU does for the whole category.
    index.touch(1, 0);
    assert_eq!(owned(4, 7, &random_vector(&mut rng)), vec![2]);
    // A smaller per-owner quota evicts at once from every owner above it.
    let evicted = index.set_quota(Quota {
        max_entries_per_owner: NonZeroUsize::new(1),
        ..quota
    });
    assert_eq!(evicted, vec![3, 1, 127, 128]);
}
