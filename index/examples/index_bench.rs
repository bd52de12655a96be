//! Benchmark of the vector index on clustered 384-d unit vectors: insert rate, search latency
//! and recall for big and small partitions, memory per entry, and the cost of eviction
//! (inserts into a full index, hits, quota changes) under each policy.
//!
//! Run: `cargo run -p cachet-index --release --example index_bench -- [n_points] [n_queries]`
//! (defaults 100000 and 1000). Add `rebuild` as a third argument to time a full compaction.

#[path = "../tests/support/clustered.rs"]
mod clustered;

use std::time::{Duration, Instant};

use std::num::NonZeroUsize;

use cachet_index::{EvictionPolicy, IndexParams, IndexTuning, NewEntry, Quota, VectorIndex};
use clustered::{Clustered, brute_force_top_k};

const K: usize = 10;
const NEVER: u64 = u64::MAX;

/// Partition sizes as fractions of all points: a dominant tenant, a mid-size one searched
/// through the graph with a widened candidate list, a small one scanned exactly, a tiny one.
const PARTITIONS: [(u64, f64); 4] = [(0, 0.899), (1, 0.09), (2, 0.01), (3, 0.001)];

fn partition_of(i: usize, n: usize) -> u64 {
    // Interleave partitions over the sequence so that each spans every cluster.
    let position = (i * 7919 % n) as f64 / n as f64;
    let mut edge = 0.0;
    for (partition, share) in PARTITIONS {
        edge += share;
        if position < edge {
            return partition;
        }
    }
    0
}

/// Entries of varied size and cost, so that GDSF has a real order to keep.
fn entry(id: u64, partition: u64, vector: &[f32], expires_at_ms: u64) -> NewEntry<'_> {
    NewEntry {
        id,
        partition,
        owner: 0,
        vector,
        expires_at_ms,
        size_bytes: 1_000 + (id * 7_919 % 4_000) as usize,
        cost: 1.0 + (id * 104_729 % 100) as f32,
    }
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let n_queries: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000);
    let time_rebuild = args.get(3).is_some_and(|s| s == "rebuild");
    let params = IndexParams::default();
    println!(
        "n={n} dim={} m={} ef_construction={} ef_search={}",
        params.dim, params.m, params.ef_construction, params.ef_search
    );

    let mut source = Clustered::new(42, 500, params.dim, 0.03);
    let data = source.points(n);
    let queries = source.points(n_queries);
    let partitions: Vec<u64> = (0..n).map(|i| partition_of(i, n)).collect();

    // Rebuilds run only when asked, so that they do not disturb the latency figures.
    let tuning = IndexTuning {
        background_rebuild: false,
        ..IndexTuning::default()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Memory is measured on an index filled by concurrent single inserts, as the gateway
    // fills it: a batch insert's freed temporaries would stay in the resident set.
    let rss_before = resident_bytes();
    let index = VectorIndex::with_tuning(params, Quota::default(), tuning).expect("valid params");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (index, data, partitions) = (&index, &data, &partitions);
            scope.spawn(move || {
                for i in (t..n).step_by(threads) {
                    index
                        .insert(entry(i as u64, partitions[i], &data[i], NEVER))
                        .expect("valid vector");
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = resident_bytes();
    println!(
        "concurrent insert ({threads} threads): {n} in {elapsed:.1} s = {:.0} inserts/s",
        n as f64 / elapsed
    );
    let raw_bytes = params.dim * 4;
    let per_entry = rss_after.saturating_sub(rss_before) as f64 / n as f64;
    println!(
        "memory: {per_entry:.0} bytes/entry resident ({:.2}x the {raw_bytes} raw vector bytes; graph + the index's own vector copy)",
        per_entry / raw_bytes as f64
    );

    let batch: Vec<NewEntry<'_>> = data
        .iter()
        .enumerate()
        .map(|(i, v)| entry(i as u64, partitions[i], v, NEVER))
        .collect();
    let batch_index =
        VectorIndex::with_tuning(params, Quota::default(), tuning).expect("valid params");
    let started = Instant::now();
    batch_index.insert_batch(&batch).expect("valid vectors");
    let elapsed = started.elapsed().as_secs_f64();
    drop(batch_index);
    println!(
        "insert_batch: {n} in {elapsed:.1} s = {:.0} inserts/s",
        n as f64 / elapsed
    );

    let extra: Vec<Vec<f32>> = source.points(1_000);
    let started = Instant::now();
    for (i, v) in extra.iter().enumerate() {
        index
            .insert(entry((n + i) as u64, 0, v, NEVER))
            .expect("valid vector");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "single insert: {} in {elapsed:.2} s = {:.0} inserts/s ({:.2} ms each)",
        extra.len(),
        extra.len() as f64 / elapsed,
        elapsed * 1e3 / extra.len() as f64
    );
    let mut all = data.clone();
    all.extend(extra);
    let mut all_partitions = partitions.clone();
    all_partitions.extend(std::iter::repeat_n(0, all.len() - n));

    for (partition, _) in PARTITIONS {
        let members: Vec<usize> = (0..all.len())
            .filter(|&i| all_partitions[i] == partition)
            .collect();
        let member_vectors: Vec<Vec<f32>> = members.iter().map(|&i| all[i].clone()).collect();
        let mut latencies = Vec::with_capacity(queries.len());
        let mut hits = 0;
        for query in &queries {
            let started = Instant::now();
            let found = index.search(partition, query, K, 0).expect("valid query");
            latencies.push(started.elapsed());
            let truth: Vec<u64> = brute_force_top_k(&member_vectors, query, K)
                .into_iter()
                .map(|j| members[j] as u64)
                .collect();
            hits += found.iter().filter(|nb| truth.contains(&nb.id)).count();
        }
        latencies.sort_unstable();
        let expected = K.min(members.len()) * queries.len();
        println!(
            "search partition {partition} ({} entries, {:.1}% of the graph): p50 {:.3} ms, p99 {:.3} ms, recall@{K} {:.4}",
            members.len(),
            100.0 * members.len() as f64 / all.len() as f64,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            hits as f64 / expected as f64
        );
    }

    // A third of the entries removed: searches filter tombstones until the rebuild.
    for id in (0..n as u64).filter(|id| id % 3 == 0) {
        index.remove(id);
    }
    let mut latencies: Vec<Duration> = queries
        .iter()
        .map(|query| {
            let started = Instant::now();
            index.search(0, query, K, 0).expect("valid query");
            started.elapsed()
        })
        .collect();
    latencies.sort_unstable();
    println!(
        "search partition 0 with a third tombstoned: p50 {:.3} ms, p99 {:.3} ms ({:?})",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        index.stats()
    );
    if time_rebuild {
        let started = Instant::now();
        index.compact();
        println!(
            "compact: {:.1} s for {} live entries",
            started.elapsed().as_secs_f64(),
            index.len()
        );
    }
    drop(index);
    bench_eviction(params, tuning, &batch, &mut source);
}

/// Inserts into a full index (each evicting one entry), hits and quota changes, per policy,
/// on an index of the same entries as above.
fn bench_eviction(
    params: IndexParams,
    tuning: IndexTuning,
    batch: &[NewEntry<'_>],
    source: &mut Clustered,
) {
    let index = VectorIndex::with_tuning(params, Quota::default(), tuning).expect("valid params");
    index.insert_batch(batch).expect("valid vectors");
    let n = index.len();
    let mut next_id = 10 * n as u64;
    let mut insert_ms = |index: &VectorIndex| {
        let fresh = source.points(1_000);
        let mut evicted = 0;
        let started = Instant::now();
        for v in &fresh {
            let entry = entry(next_id, next_id % 4, v, NEVER);
            evicted += index.insert(entry).expect("valid vector").len();
            next_id += 1;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / fresh.len() as f64;
        (ms, evicted)
    };
    let (ms, _) = insert_ms(&index);
    println!("eviction baseline: insert without quota at {n} entries: {ms:.3} ms each");

    // Hits on a tenth of the entries, some several times, so that LFU and GDSF have
    // frequencies to rank by.
    let hot: Vec<u64> = (0..n as u64).step_by(10).collect();
    let started = Instant::now();
    let mut touches = 0usize;
    for round in 0..3 {
        for &id in hot.iter().step_by(round + 1) {
            index.touch(id, 0);
            touches += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "touch: {touches} hits in {:.1} ms = {:.2} µs each",
        elapsed * 1e3,
        elapsed * 1e6 / touches as f64
    );

    let held = index.len();
    for policy in [
        EvictionPolicy::Lru,
        EvictionPolicy::Lfu,
        EvictionPolicy::Gdsf,
    ] {
        let full = Quota {
            max_entries: NonZeroUsize::new(held),
            max_bytes: None,
            max_entries_per_owner: None,
            eviction: policy,
        };
        let started = Instant::now();
        index.set_quota(full);
        let rerank_ms = started.elapsed().as_secs_f64() * 1e3;
        let (ms, evicted) = insert_ms(&index);
        println!(
            "eviction {policy:?}: insert at the {held}-entry quota {ms:.3} ms each ({evicted} evicted by 1000 inserts); set_quota re-rank {rerank_ms:.1} ms"
        );
    }
    // Evictions alone, without graph work: shrink the quota by a tenth.
    let shrunk = Quota {
        max_entries: NonZeroUsize::new(held * 9 / 10),
        max_bytes: None,
        max_entries_per_owner: None,
        eviction: EvictionPolicy::Gdsf,
    };
    let started = Instant::now();
    let dropped = index.set_quota(shrunk).len();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "set_quota evicting {dropped} entries (GDSF): {:.1} ms = {:.2} µs each",
        elapsed * 1e3,
        elapsed * 1e6 / dropped.max(1) as f64
    );
}
