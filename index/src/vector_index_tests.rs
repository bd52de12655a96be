//! Unit tests of `VectorIndex`: every public behaviour on small, hand-checkable data.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::Error;

pub(super) const DIM: usize = 16;
pub(super) const NEVER: u64 = u64::MAX;

pub(super) fn params() -> IndexParams {
    IndexParams {
        dim: DIM,
        m: 8,
        ef_construction: 64,
        ef_search: 32,
    }
}

/// Tuning that forces every search path in turn, so each test runs against all of them.
pub(super) fn tunings() -> Vec<(&'static str, IndexTuning)> {
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

pub(super) fn index_with(tuning: IndexTuning, max_entries: Option<usize>) -> VectorIndex {
    let quota = Quota {
        max_entries: max_entries.and_then(NonZeroUsize::new),
        ..Quota::default()
    };
    VectorIndex::with_tuning(params(), quota, tuning).unwrap()
}

/// An entry of 100 bytes and cost 1, which the tests of eviction vary.
pub(super) fn entry(
    id: EntryId,
    partition: u64,
    vector: &[f32],
    expires_at_ms: u64,
) -> NewEntry<'_> {
    NewEntry {
        id,
        partition,
        owner: 0,
        vector,
        expires_at_ms,
        size_bytes: 100,
        cost: 1.0,
    }
}

pub(super) fn random_vector(rng: &mut StdRng) -> Vec<f32> {
    (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

pub(super) fn ids(found: &[Neighbor]) -> Vec<EntryId> {
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
