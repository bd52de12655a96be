//! Recall of the graph search against brute force on clustered 384-d unit vectors.

#[path = "support/clustered.rs"]
mod clustered;

use cachet_index::{IndexParams, NewEntry, Quota, VectorIndex};
use clustered::{Clustered, brute_force_top_k};

const K: usize = 10;
const NEVER: u64 = u64::MAX;

/// Builds an index of `n` points around `n_centroids` clusters (one partition, so the graph
/// path is taken) and returns recall@10 over `n_queries` new noisy points.
fn recall(n: usize, n_centroids: usize, n_queries: usize) -> f64 {
    let params = IndexParams::default();
    let mut source = Clustered::new(42, n_centroids, params.dim, 0.03);
    let data = source.points(n);
    let queries = source.points(n_queries);
    let index = VectorIndex::try_new(params, Quota::default()).expect("valid params");
    let batch: Vec<NewEntry<'_>> = data
        .iter()
        .enumerate()
        .map(|(i, v)| NewEntry {
            id: i as u64,
            partition: 0,
            owner: 0,
            vector: v,
            expires_at_ms: NEVER,
            size_bytes: 0,
            cost: 0.0,
        })
        .collect();
    index.insert_batch(&batch).expect("valid vectors");
    let mut hits = 0;
    for query in &queries {
        let truth = brute_force_top_k(&data, query, K);
        let found = index.search(0, query, K, 0).expect("valid query");
        hits += found
            .iter()
            .filter(|n| truth.contains(&(n.id as usize)))
            .count();
    }
    hits as f64 / (K * queries.len()) as f64
}

/// Sized to stay fast in debug builds, where the graph code is compiled without optimisation
/// (it is generic over our distance, so it is instantiated in this crate); the full 50k run
/// is `recall_at_10_on_50k` below.
#[test]
fn recall_at_10_on_3k_clustered_vectors() {
    let recall = recall(3_000, 60, 100);
    println!("recall@10 on 3k: {recall:.4}");
    assert!(recall >= 0.95, "recall@10 {recall}");
}

/// The acceptance figure: recall@10 against brute force on 50k clustered vectors. The index
/// crate builds optimised in the dev profile (root Cargo.toml), which keeps this in the suite.
#[test]
fn recall_at_10_on_50k() {
    let recall = recall(50_000, 500, 500);
    println!("recall@10 on 50k: {recall:.4}");
    assert!(recall >= 0.95, "recall@10 {recall}");
}
