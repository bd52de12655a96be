//! Partition-aware nearest-neighbour search: exact scans for small partitions, graph searches
//! widened by the partition's rarity for large ones, and exact fallbacks when the graph falls
//! short.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::distance::dot;
use crate::params::{IndexParams, IndexTuning};
use crate::segment::{PointNo, Segment};
use crate::state::{Partition, State};
use crate::{EntryId, Neighbor};

/// One search: `k` neighbours of the unit vector `query` in `partition`, ignoring entries
/// that expire at or before `now_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) partition: u64,
    pub(crate) query: &'a [f32],
    pub(crate) k: usize,
    pub(crate) now_ms: u64,
}

/// What a search does after looking at the partition's size under the read lock.
#[derive(Debug)]
pub(crate) enum Plan {
    /// The answer is already known (empty, or computed exactly under the lock).
    Done(Vec<Neighbor>),
    /// Search these graphs with candidate list `ef`, outside the lock, then rank the hits.
    Graph {
        segments: Vec<Arc<Segment>>,
        ef: usize,
    },
}

/// Decides how to search `partition` for `k` neighbours, answering at once when it can.
///
/// An unfiltered graph search returns the nearest points of every partition; a partition that
/// holds a fraction `s` of the graph's points gets about `s * ef` of them. So the candidate
/// list is widened to `max(ef_search, k) / s`, which gives a large partition the same depth of
/// search as if it had its own graph. The wider list costs time in proportion, so when it
/// would cost more than comparing the query with each of the partition's vectors, the exact
/// scan wins on both speed and recall.
pub(crate) fn plan(
    state: &State,
    params: &IndexParams,
    tuning: &IndexTuning,
    req: &Request<'_>,
) -> Plan {
    let k = req.k;
    let Some(partition) = state.partition(req.partition) else {
        return Plan::Done(Vec::new());
    };
    let live = partition.len();
    if k == 0 || live == 0 {
        return Plan::Done(Vec::new());
    }
    let want = params.ef_search.max(k);
    let graph_points = state.graph_points().max(live);
    let ef = (want as f64 * graph_points as f64 / live as f64).ceil() as usize;
    let scan_is_cheaper = live as f64 <= ef as f64 * tuning.graph_cost_per_ef
        && live <= tuning.exact_fallback_max_points;
    if live <= tuning.exact_search_max_points || scan_is_cheaper {
        return Plan::Done(exact(state, partition, params.dim, req));
    }
    if ef > tuning.max_graph_ef {
        return Plan::Done(fallback(state, params, tuning, req));
    }
    Plan::Graph {
        segments: state.segments().cloned().collect(),
        ef,
    }
}

/// Runs the graph part of a plan; needs no lock since the graphs synchronise themselves.
pub(crate) fn graph_candidates(
    segments: &[Arc<Segment>],
    query: &[f32],
    ef: usize,
) -> Vec<PointNo> {
    segments
        .iter()
        .flat_map(|segment| segment.search(query, ef, ef))
        .collect()
}

/// Turns graph hits into the `k` best live neighbours of the partition; falls back to an
/// exact or filtered search when the graph found fewer than the partition could give.
pub(crate) fn finish(
    state: &State,
    params: &IndexParams,
    tuning: &IndexTuning,
    req: &Request<'_>,
    candidates: Vec<PointNo>,
) -> Vec<Neighbor> {
    let found = rank(state, req, candidates);
    let live = state.partition(req.partition).map_or(0, Partition::len);
    if found.len() >= req.k.min(live) {
        return found;
    }
    fallback(state, params, tuning, req)
}

/// The slow but complete paths: an exact scan while it is affordable, else the library's
/// filtered search, which only ever returns points of the partition.
fn fallback(
    state: &State,
    params: &IndexParams,
    tuning: &IndexTuning,
    req: &Request<'_>,
) -> Vec<Neighbor> {
    let Some(partition) = state.partition(req.partition) else {
        return Vec::new();
    };
    if partition.len() <= tuning.exact_fallback_max_points {
        return exact(state, partition, params.dim, req);
    }
    let want = params.ef_search.max(req.k);
    let keep = |point: PointNo| {
        state
            .point(point)
            .is_some_and(|meta| meta.partition == req.partition && meta.expires_at_ms > req.now_ms)
    };
    let candidates = state
        .segments()
        .flat_map(|segment| segment.search_filtered(req.query, want, want, &keep))
        .collect();
    rank(state, req, candidates)
}

/// Scans every live vector of the partition: exact, and fast for a few thousand vectors.
fn exact(state: &State, partition: &Partition, dim: usize, req: &Request<'_>) -> Vec<Neighbor> {
    let scored = (0..partition.len())
        .filter(|&slot| partition.expires_at_ms[slot] > req.now_ms)
        .map(|slot| (slot, dot(req.query, partition.vector(slot, dim))))
        .collect();
    best(scored, req.k)
        .into_iter()
        .filter_map(|(slot, similarity)| {
            let meta = state.point(partition.points[slot])?;
            Some(Neighbor {
                id: meta.id,
                similarity,
            })
        })
        .collect()
}

/// Keeps the candidates that are live members of the partition, scored by exact cosine.
fn rank(state: &State, req: &Request<'_>, mut candidates: Vec<PointNo>) -> Vec<Neighbor> {
    // Segments cover disjoint point ranges, so duplicates are not expected; removing them is
    // cheap insurance that no entry is reported twice.
    candidates.sort_unstable();
    candidates.dedup();
    let scored: Vec<(EntryId, f32)> = candidates
        .into_iter()
        .filter_map(|point| {
            let meta = state.point(point)?;
            if meta.partition != req.partition || meta.expires_at_ms <= req.now_ms {
                return None;
            }
            Some((meta.id, dot(req.query, state.vector_of(meta)?)))
        })
        .collect();
    best(scored, req.k)
        .into_iter()
        .map(|(id, similarity)| Neighbor { id, similarity })
        .collect()
}

/// The `k` highest-scoring items, best first; ties keep a deterministic order by key.
fn best<K: Ord + Copy>(mut scored: Vec<(K, f32)>, k: usize) -> Vec<(K, f32)> {
    let order =
        |a: &(K, f32), b: &(K, f32)| -> Ordering { b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)) };
    if k == 0 {
        return Vec::new();
    }
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_unstable_by(order);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_scans_when_cheaper_and_walks_the_graph_otherwise() {
        let params = IndexParams {
            dim: 2,
            ..IndexParams::default()
        };
        let mut state = State::new(params);
        for i in 0..1_000u64 {
            let angle = i as f32 * 0.01;
            let partition = if i % 10 == 0 { 1 } else { 0 };
            state.allocate(i, partition, &[angle.cos(), angle.sin()], u64::MAX);
        }
        let tuning = IndexTuning {
            exact_search_max_points: 0,
            graph_cost_per_ef: 1.0,
            ..IndexTuning::default()
        };
        let query = [1.0, 0.0];
        let req = |partition| Request {
            partition,
            query: &query,
            k: 5,
            now_ms: 0,
        };
        // 900 of 1000 points: the list widens from 64 to 72, cheaper than 900 comparisons.
        let big = plan(&state, &params, &tuning, &req(0));
        assert!(matches!(big, Plan::Graph { ef: 72, .. }), "{big:?}");
        // 100 of 1000: a list of 640 costs more than scanning 100 vectors.
        let small = plan(&state, &params, &tuning, &req(1));
        assert!(
            matches!(small, Plan::Done(ref found) if found.len() == 5),
            "{small:?}"
        );
        // Always scanned below the size floor, whatever the cost model says.
        let floor = IndexTuning {
            exact_search_max_points: 1_000,
            ..tuning
        };
        let floored = plan(&state, &params, &floor, &req(0));
        assert!(
            matches!(floored, Plan::Done(ref found) if found.len() == 5),
            "{floored:?}"
        );
        // Too wide for the graph and too big to scan: answered by the filtered search.
        let tight = IndexTuning {
            max_graph_ef: 10,
            exact_fallback_max_points: 0,
            ..tuning
        };
        assert!(matches!(
            plan(&state, &params, &tight, &req(0)),
            Plan::Done(_)
        ));
        let unknown = plan(&state, &params, &tuning, &req(7));
        assert!(matches!(unknown, Plan::Done(ref found) if found.is_empty()));
    }

    #[test]
    fn best_keeps_top_k_sorted() {
        let scored = vec![(1u64, 0.1), (2, 0.9), (3, 0.5), (4, 0.7), (5, 0.9)];
        assert_eq!(best(scored.clone(), 3), vec![(2, 0.9), (5, 0.9), (4, 0.7)]);
        assert_eq!(best(scored.clone(), 10).len(), 5);
        assert!(best(scored, 0).is_empty());
    }
}
