//! Property tests of the vector index against a plain model of its contents: whatever the
//! sequence of inserts, removals, purges and searches, a search returns only live entries
//! of its own partition, best first, with their true cosine similarity.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use cachet_index::{EntryId, IndexParams, IndexTuning, Neighbor, NewEntry, Quota, VectorIndex};
use proptest::prelude::*;

const DIM: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Insert {
        id: EntryId,
        partition: u64,
        vector: Vec<f32>,
        expires_at_ms: u64,
    },
    Remove {
        id: EntryId,
    },
    Purge {
        now_ms: u64,
    },
    Search {
        partition: u64,
        vector: Vec<f32>,
        k: usize,
        now_ms: u64,
    },
}

fn vector() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-8i8..=8, DIM)
        .prop_filter("needs a direction", |v| v.iter().any(|&x| x != 0))
        .prop_map(|v| v.into_iter().map(f32::from).collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..40u64, 0..3u64, vector(), 0..1_000u64).prop_map(
            |(id, partition, vector, expires_at_ms)| Op::Insert { id, partition, vector, expires_at_ms }
        ),
        1 => (0..40u64).prop_map(|id| Op::Remove { id }),
        1 => (0..1_000u64).prop_map(|now_ms| Op::Purge { now_ms }),
        3 => (0..3u64, vector(), 1..12usize, 0..1_000u64).prop_map(
            |(partition, vector, k, now_ms)| Op::Search { partition, vector, k, now_ms }
        ),
    ]
}

/// 0: exact scans; 1: graph searches with exact fallback; 2: filtered graph searches.
fn tuning(path: u8, background_rebuild: bool) -> IndexTuning {
    let base = IndexTuning {
        rebuild_min_points: 8,
        background_rebuild,
        ..IndexTuning::default()
    };
    match path {
        0 => base,
        1 => IndexTuning {
            exact_search_max_points: 0,
            graph_cost_per_ef: 0.0,
            max_graph_ef: usize::MAX,
            ..base
        },
        _ => IndexTuning {
            exact_search_max_points: 0,
            graph_cost_per_ef: 0.0,
            max_graph_ef: 0,
            exact_fallback_max_points: 0,
            ..base
        },
    }
}

struct Model {
    entries: HashMap<EntryId, (u64, Vec<f32>, u64)>,
}

impl Model {
    /// Similarities of the best `k` live entries of the partition, best first.
    fn best_similarities(&self, partition: u64, query: &[f32], k: usize, now_ms: u64) -> Vec<f32> {
        let mut sims: Vec<f32> = self
            .entries
            .values()
            .filter(|(p, _, expires)| *p == partition && *expires > now_ms)
            .map(|(_, v, _)| cosine(query, v))
            .collect();
        sims.sort_by(|a, b| b.total_cmp(a));
        sims.truncate(k);
        sims
    }
}

/// An entry of unit size and cost: eviction policies have their own property test.
fn entry(id: EntryId, partition: u64, vector: &[f32], expires_at_ms: u64) -> NewEntry<'_> {
    NewEntry {
        id,
        partition,
        owner: 0,
        vector,
        expires_at_ms,
        size_bytes: 1,
        cost: 1.0,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn check_search(
    model: &Model,
    path: u8,
    found: &[Neighbor],
    partition: u64,
    query: &[f32],
    k: usize,
    now_ms: u64,
) -> Result<(), TestCaseError> {
    prop_assert!(found.len() <= k);
    let mut seen = std::collections::HashSet::new();
    for pair in found.windows(2) {
        prop_assert!(
            pair[0].similarity >= pair[1].similarity,
            "not sorted: {found:?}"
        );
    }
    for n in found {
        prop_assert!(seen.insert(n.id), "duplicate id {}", n.id);
        let entry = model.entries.get(&n.id);
        prop_assert!(entry.is_some(), "removed id {} returned", n.id);
        let Some((p, v, expires)) = entry else {
            unreachable!()
        };
        prop_assert_eq!(*p, partition, "id {} from another partition", n.id);
        prop_assert!(*expires > now_ms, "expired id {} returned", n.id);
        prop_assert!(
            (n.similarity - cosine(query, v)).abs() < 1e-4,
            "similarity of {}",
            n.id
        );
    }
    let best = model.best_similarities(partition, query, k, now_ms);
    if path < 2 {
        // A graph search that finds fewer than the partition holds falls back to a scan.
        prop_assert_eq!(found.len(), best.len());
    }
    if path == 0 {
        // Exact scans find the true best k.
        for (n, want) in found.iter().zip(&best) {
            prop_assert!((n.similarity - want).abs() < 1e-4, "{found:?} vs {best:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn searches_agree_with_the_model(
        ops in prop::collection::vec(op(), 1..120),
        path in 0..3u8,
        background_rebuild: bool,
        quota in prop::option::of(5..30usize),
    ) {
        let params = IndexParams { dim: DIM, m: 8, ef_construction: 32, ef_search: 32 };
        let max_entries = quota.and_then(NonZeroUsize::new);
        let quota = Quota { max_entries, ..Quota::default() };
        let index = VectorIndex::with_tuning(params, quota, tuning(path, background_rebuild))
            .expect("valid params");
        let mut model = Model { entries: HashMap::new() };
        for op in ops {
            match op {
                Op::Insert { id, partition, vector, expires_at_ms } => {
                    let evicted = index
                        .insert(entry(id, partition, &vector, expires_at_ms))
                        .expect("valid vector");
                    model.entries.insert(id, (partition, vector, expires_at_ms));
                    for gone in evicted {
                        prop_assert!(gone != id, "evicted the entry just inserted");
                        prop_assert!(model.entries.remove(&gone).is_some());
                    }
                }
                Op::Remove { id } => {
                    prop_assert_eq!(index.remove(id), model.entries.remove(&id).is_some());
                }
                Op::Purge { now_ms } => {
                    let mut purged = index.purge_expired(now_ms);
                    purged.sort_unstable();
                    let mut expected: Vec<EntryId> = model
                        .entries
                        .iter()
                        .filter(|(_, (_, _, expires))| *expires <= now_ms)
                        .map(|(id, _)| *id)
                        .collect();
                    expected.sort_unstable();
                    prop_assert_eq!(&purged, &expected);
                    model.entries.retain(|_, (_, _, expires)| *expires > now_ms);
                }
                Op::Search { partition, vector, k, now_ms } => {
                    let found = index.search(partition, &vector, k, now_ms).expect("valid query");
                    check_search(&model, path, &found, partition, &vector, k, now_ms)?;
                }
            }
            prop_assert_eq!(index.len(), model.entries.len());
            if let Some(max) = max_entries {
                prop_assert!(index.len() <= max.get());
            }
        }
    }
}
