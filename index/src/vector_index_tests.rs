//! Unit tests of `VectorIndex`: every public behaviour on small, hand-checkable data.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::{Error, EvictionPolicy};

const DIM: usize = 16;
const NEVER: u64 = u64::MAX;

fn params() -> IndexParams {
    IndexParams {
        dim: DIM,
        m: 8,
        ef_construction: 64,
        ef_search: 32,
    }
}

/// Tuning that forces every search path in turn, so each test runs against all of them.
fn tunings() -> Vec<(&'static str, IndexTuning)> {
    let base = IndexTuning {
        background_rebuild: false,
        ..IndexTuning::default()
    };
    vec![
        ("exact", base),
        (
            "graph",
            IndexTuning {
                exact_search_max_points: 0,
                graph_cost_per_ef: 0.0,
                max_graph_ef: usize::MAX,
                ..base
            },
        ),
        (
            "filtered",
            IndexTuning {
                exact_search_max_points: 0,
                graph_cost_per_ef: 0.0,
                max_graph_ef: 0,
                exact_fallback_max_points: 0,
                ..base
            },
        ),
    ]
}

fn index_with(tuning: IndexTuning, max_entries: Option<usize>) -> VectorIndex {
    let quota = Quota {
        max_entries: max_entries.and_then(NonZeroUsize::new),
        ..Quota::default()
    };
    VectorIndex::with_tuning(params(), quota, tuning).unwrap()
}

/// An entry of 100 bytes and cost 1, which the tests of eviction vary.
fn entry(id: EntryId, partition: u64, vector: &[f32], expires_at_ms: u64) -> NewEntry<'_> {
    NewEntry {
        id,
        partition,
        vector,
        expires_at_ms,
        size_bytes: 100,
        cost: 1.0,
    }
}

fn random_vector(rng: &mut StdRng) -> Vec<f32> {
    (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn ids(found: &[Neighbor]) -> Vec<EntryId> {
    found.iter().map(|n| n.id).collect()
}

#[test]
fn finds_inserted_entry_with_its_cosine() {
    for (name, tuning) in tunings() {
        let index = index_with(tuning, None);
        let mut rng = StdRng::seed_from_u64(1);
        let vectors: Vec<Vec<f32>> = (0..50).map(|_| random_vector(&mut rng)).collect();
        for (id, v) in vectors.iter().enumerate() {
            index.insert(entry(id as EntryId, 1, v, NEVER)).unwrap();
        }
        assert_eq!(index.len(), 50);
        let found = index.search(1, &vectors[7], 3, 0).unwrap();
        assert_eq!(found[0].id, 7, "{name}");
        assert!((found[0].similarity - 1.0).abs() < 1e-5, "{name}");
        for n in &found {
            let expected = cosine(&vectors[7], &vectors[n.id as usize]);
            assert!((n.similarity - expected).abs() < 1e-4, "{name}");
        }
    }
}

#[test]
fn partitions_are_isolated_for_big_and_tiny_partitions() {
    for (name, tuning) in tunings() {
        let index = index_with(tuning, None);
        let mut rng = StdRng::seed_from_u64(2);
        let mut tiny = Vec::new();
        for id in 0..2_000u64 {
            let partition = if id % 400 == 0 { 9 } else { 1 };
            let v = random_vector(&mut rng);
            if partition == 9 {
                tiny.push((id, v.clone()));
            }
            index.insert(entry(id, partition, &v, NEVER)).unwrap();
        }
        for (id, v) in &tiny {
            let found = index.search(9, v, 10, 0).unwrap();
            assert_eq!(found.len(), tiny.len(), "{name}: all of the tiny partition");
            assert_eq!(found[0].id, *id, "{name}");
            assert!(found.iter().all(|n| n.id % 400 == 0), "{name}: {found:?}");
        }
        let query = random_vector(&mut rng);
        let found = index.search(1, &query, 10, 0).unwrap();
        assert_eq!(found.len(), 10, "{name}");
        assert!(found.iter().all(|n| n.id % 400 != 0), "{name}: {found:?}");
        assert!(index.search(5, &query, 10, 0).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn expired_entries_are_skipped_then_purged() {
    for (name, tuning) in tunings() {
        let index = index_with(tuning, None);
        let v = [1.0; DIM];
        index.insert(entry(1, 0, &v, 1_000)).unwrap();
        index.insert(entry(2, 0, &v, 2_000)).unwrap();
        assert_eq!(
            ids(&index.search(0, &v, 5, 999).unwrap()).len(),
            2,
            "{name}"
        );
        assert_eq!(
            ids(&index.search(0, &v, 5, 1_000).unwrap()),
            vec![2],
            "{name}"
        );
        assert!(index.search(0, &v, 5, 2_000).unwrap().is_empty(), "{name}");
        assert_eq!(index.len(), 2, "{name}: expired entries count until purged");
        assert_eq!(index.purge_expired(1_500), vec![1], "{name}");
        assert_eq!(index.len(), 1, "{name}");
        assert!(index.purge_expired(1_500).is_empty(), "{name}");
    }
}

#[test]
fn removed_entries_are_never_returned() {
    for (name, tuning) in tunings() {
        let index = index_with(tuning, None);
        let mut rng = StdRng::seed_from_u64(3);
        let vectors: Vec<Vec<f32>> = (0..30).map(|_| random_vector(&mut rng)).collect();
        for (id, v) in vectors.iter().enumerate() {
            index.insert(entry(id as EntryId, 0, v, NEVER)).unwrap();
        }
        assert!(index.remove(4), "{name}");
        assert!(!index.remove(4), "{name}: second removal finds nothing");
        assert!(!index.remove(999), "{name}");
        let found = index.search(0, &vectors[4], 30, 0).unwrap();
        assert_eq!(found.len(), 29, "{name}");
        assert!(!ids(&found).contains(&4), "{name}");
        assert_eq!(index.len(), 29, "{name}");
    }
}

#[test]
fn reinserting_an_id_replaces_it() {
    for (name, tuning) in tunings() {
        let index = index_with(tuning, None);
        let mut rng = StdRng::seed_from_u64(4);
        let (old, new) = (random_vector(&mut rng), random_vector(&mut rng));
        index.insert(entry(1, 10, &old, NEVER)).unwrap();
        index.insert(entry(2, 10, &old, NEVER)).unwrap();
        index.insert(entry(1, 20, &new, NEVER)).unwrap();
        assert_eq!(index.len(), 2, "{name}");
        assert_eq!(
            ids(&index.search(10, &old, 5, 0).unwrap()),
            vec![2],
            "{name}"
        );
        index.remove(2);
        assert!(index.search(10, &old, 5, 0).unwrap().is_empty(), "{name}");
        let found = index.search(20, &old, 5, 0).unwrap();
        assert_eq!(ids(&found), vec![1], "{name}");
        assert!(
            (found[0].similarity - cosine(&old, &new)).abs() < 1e-4,
            "{name}"
        );
        let stats = index.stats();
        assert_eq!((stats.graph_points, stats.dead_points), (3, 2), "{name}");
    }
}

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
fn dimension_mismatch_is_a_typed_error() {
    let index = index_with(tunings()[0].1, None);
    let short = [1.0; DIM - 1];
    assert!(matches!(
        index.insert(entry(1, 0, &short, NEVER)),
        Err(Error::DimensionMismatch {
            expected: DIM,
            actual
        }) if actual == DIM - 1
    ));
    assert!(matches!(
        index.search(0, &short, 1, 0),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(
        index.insert(entry(1, 0, &[0.0; DIM], NEVER)),
        Err(Error::ZeroVector)
    ));
    assert!(index.is_empty());
}

#[test]
fn invalid_params_are_rejected_or_clamped() {
    let bad = IndexParams { m: 300, ..params() };
    assert!(matches!(
        VectorIndex::try_new(bad, Quota::default()),
        Err(Error::InvalidParams { name: "m", .. })
    ));
    // The infallible constructor must not let the graph library exit the process.
    let index = VectorIndex::new(bad, Quota::default());
    assert_eq!(index.params().m, crate::MAX_M);
    index.insert(entry(1, 0, &[1.0; DIM], NEVER)).unwrap();
    assert_eq!(index.search(0, &[1.0; DIM], 1, 0).unwrap().len(), 1);
}

#[test]
fn k_zero_returns_nothing() {
    let index = index_with(tunings()[0].1, None);
    index.insert(entry(1, 0, &[1.0; DIM], NEVER)).unwrap();
    assert!(index.search(0, &[1.0; DIM], 0, 0).unwrap().is_empty());
}

/// Inserts `n` random entries, removes most, and checks that searches before and after the
/// rebuild agree with an exact scan.
fn check_rebuild(index: &VectorIndex, rebuild: impl Fn(&VectorIndex)) {
    let mut rng = StdRng::seed_from_u64(5);
    let vectors: Vec<Vec<f32>> = (0..1_500).map(|_| random_vector(&mut rng)).collect();
    for (id, v) in vectors.iter().enumerate() {
        index.insert(entry(id as EntryId, 0, v, NEVER)).unwrap();
    }
    for id in (0..1_500u64).filter(|id| id % 3 != 0) {
        index.remove(id);
    }
    rebuild(index);
    let stats = index.stats();
    assert!(stats.rebuilds_completed >= 1, "{stats:?}");
    assert!(!stats.rebuilding);
    assert_eq!(stats.entries, 500);
    assert!(stats.dead_points * 4 <= stats.graph_points, "{stats:?}");
    let mut hits = 0;
    for (qid, query) in vectors.iter().enumerate().step_by(7) {
        let found = index.search(0, query, 5, 0).unwrap();
        assert!(found.iter().all(|n| n.id % 3 == 0));
        let mut exact: Vec<(u64, f32)> = (0..1_500u64)
            .filter(|id| id % 3 == 0)
            .map(|id| (id, cosine(query, &vectors[id as usize])))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        if qid % 3 == 0 {
            assert_eq!(found[0].id, qid as u64);
        }
        hits += found
            .iter()
            .filter(|n| exact[..5].iter().any(|e| e.0 == n.id))
            .count();
    }
    let queries = vectors.len().div_ceil(7);
    assert!(
        hits as f64 >= 0.9 * (queries * 5) as f64,
        "recall {hits}/{}",
        queries * 5
    );
}

#[test]
fn explicit_compaction_keeps_results_right() {
    let tuning = IndexTuning {
        exact_search_max_points: 0,
        graph_cost_per_ef: 0.0,
        background_rebuild: false,
        rebuild_min_points: 100,
        ..IndexTuning::default()
    };
    let index = index_with(tuning, None);
    check_rebuild(&index, |index| {
        let before = index.stats();
        assert!(before.dead_points > before.graph_points / 2, "{before:?}");
        assert!(index.compact());
        let after = index.stats();
        assert_eq!(
            (after.graph_points, after.dead_points),
            (500, 0),
            "{after:?}"
        );
        // The rebuilt graph plus the fresh, still empty, growing segment.
        assert_eq!(after.segments, 2);
    });
}

#[test]
fn background_rebuild_starts_when_tombstones_pile_up() {
    let tuning = IndexTuning {
        exact_search_max_points: 0,
        graph_cost_per_ef: 0.0,
        background_rebuild: true,
        rebuild_min_points: 100,
        ..IndexTuning::default()
    };
    let index = index_with(tuning, None);
    check_rebuild(&index, |index| index.wait_for_rebuild());
}

#[test]
fn a_graph_whose_points_all_expired_is_dropped_without_rebuild() {
    let index = index_with(tunings()[0].1, None);
    let mut rng = StdRng::seed_from_u64(6);
    for id in 0..200 {
        index
            .insert(entry(id, 0, &random_vector(&mut rng), 1_000))
            .unwrap();
    }
    assert_eq!(index.purge_expired(1_000).len(), 200);
    let stats = index.stats();
    assert_eq!(
        (stats.entries, stats.graph_points, stats.partitions),
        (0, 0, 0)
    );
    assert_eq!(stats.rebuilds_completed, 0);
    index
        .insert(entry(7, 0, &random_vector(&mut rng), NEVER))
        .unwrap();
    assert_eq!(index.search(0, &[1.0; DIM], 5, 0).unwrap().len(), 1);
}

#[test]
fn concurrent_inserts_searches_and_removals_stay_consistent() {
    let tuning = IndexTuning {
        exact_search_max_points: 0,
        graph_cost_per_ef: 0.0,
        rebuild_min_points: 200,
        ..IndexTuning::default()
    };
    let index = Arc::new(index_with(tuning, None));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + t);
                for i in 0..400u64 {
                    let id = t * 10_000 + i;
                    let v = random_vector(&mut rng);
                    index.insert(entry(id, t % 2, &v, NEVER)).unwrap();
                    let found = index.search(t % 2, &v, 5, 0).unwrap();
                    assert!(found.iter().all(|n| (n.id / 10_000) % 2 == t % 2));
                    if i % 2 == 0 {
                        assert!(index.remove(id));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    index.wait_for_rebuild();
    assert_eq!(index.len(), 800);
    let live: HashSet<EntryId> = (0..4u64)
        .flat_map(|t| {
            (0..400u64)
                .filter(|i| i % 2 == 1)
                .map(move |i| t * 10_000 + i)
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(7);
    let found = index.search(0, &random_vector(&mut rng), 50, 0).unwrap();
    assert_eq!(found.len(), 50);
    assert!(found.iter().all(|n| live.contains(&n.id)));
}

#[test]
fn batch_insert_is_all_or_nothing_and_searchable() {
    for (name, tuning) in tunings() {
        let index = index_with(tuning, Some(150));
        let mut rng = StdRng::seed_from_u64(8);
        let vectors: Vec<Vec<f32>> = (0..200).map(|_| random_vector(&mut rng)).collect();
        let mut batch: Vec<NewEntry<'_>> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| entry(i as EntryId, (i % 2) as u64, v, 1_000 + i as u64))
            .collect();
        let short = [1.0; 3];
        batch.push(entry(999, 0, &short, NEVER));
        assert!(index.insert_batch(&batch).is_err(), "{name}");
        assert!(
            index.is_empty(),
            "{name}: a bad vector rejects the whole batch"
        );
        batch.pop();
        let evicted = index.insert_batch(&batch).unwrap();
        assert_eq!(
            evicted,
            (0..50).collect::<Vec<EntryId>>(),
            "{name}: expired by the clock, soonest expiring first"
        );
        assert_eq!(index.len(), 150, "{name}");
        for i in [51usize, 120, 199] {
            let found = index.search((i % 2) as u64, &vectors[i], 3, 0).unwrap();
            assert_eq!(found[0].id, i as EntryId, "{name}");
            assert!(found.iter().all(|n| n.id % 2 == (i % 2) as u64), "{name}");
        }
    }
}

#[test]
fn filtered_search_with_the_narrowest_candidate_list_does_not_panic() {
    let narrow = IndexParams {
        ef_search: 1,
        ..params()
    };
    let index = VectorIndex::with_tuning(narrow, Quota::default(), tunings()[2].1).unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    for id in 0..300u64 {
        index
            .insert(entry(id, id % 30, &random_vector(&mut rng), NEVER))
            .unwrap();
    }
    for partition in 0..30 {
        let found = index
            .search(partition, &random_vector(&mut rng), 1, 0)
            .unwrap();
        assert!(found.iter().all(|n| n.id % 30 == partition));
    }
}
