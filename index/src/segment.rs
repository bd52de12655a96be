//! One HNSW graph over a contiguous range of point numbers, a thin wrapper around `hnsw_rs`.

use std::fmt;

use hnsw_rs::prelude::{DistDot, FilterT, Hnsw};

use crate::distance::scaled_for_graph;
use crate::params::IndexParams;

/// The index's internal number for one inserted vector; `hnsw_rs` calls it the data id.
///
/// Numbers grow monotonically and are never reused, so a re-inserted entry gets a fresh point
/// and its old point becomes a tombstone that searches skip.
pub(crate) type PointNo = usize;

/// `hnsw_rs` caps the number of layers at 16; asking for that many lets it pick freely.
const MAX_LAYERS: usize = 16;

/// A graph that only grows: points are added, never removed (the library cannot delete).
pub(crate) struct Segment {
    graph: Hnsw<'static, f32, DistDot>,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("points", &self.graph.get_nb_point())
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// An empty graph; `capacity_hint` only pre-sizes the library's per-layer tables.
    pub(crate) fn new(params: &IndexParams, capacity_hint: usize) -> Self {
        Self {
            graph: Hnsw::new(
                params.m,
                capacity_hint.max(1),
                MAX_LAYERS,
                params.ef_construction,
                DistDot,
            ),
        }
    }

    /// Builds a graph from many unit vectors at once, using every core through rayon.
    pub(crate) fn build(params: &IndexParams, points: Vec<(PointNo, Vec<f32>)>) -> Self {
        let segment = Self::new(params, points.len());
        segment.insert_many(points);
        segment
    }

    /// Adds many unit vectors, in parallel through rayon.
    pub(crate) fn insert_many(&self, mut points: Vec<(PointNo, Vec<f32>)>) {
        for (_, vector) in &mut points {
            *vector = scaled_for_graph(vector);
        }
        let batch: Vec<(&Vec<f32>, usize)> = points.iter().map(|(no, v)| (v, *no)).collect();
        self.graph.parallel_insert(&batch);
    }

    /// Adds one unit vector. Safe to call while other threads search or insert.
    pub(crate) fn insert(&self, point: PointNo, unit_vector: &[f32]) {
        self.graph
            .insert_slice((&scaled_for_graph(unit_vector), point));
    }

    /// The approximately `n` nearest points, nearest first, with their clamped distances.
    pub(crate) fn search(&self, unit_query: &[f32], n: usize, ef: usize) -> Vec<PointNo> {
        self.graph
            .search(&scaled_for_graph(unit_query), n, ef.max(n))
            .into_iter()
            .map(|neighbour| neighbour.d_id)
            .collect()
    }

    /// Like [`Self::search`] but only returns points `keep` accepts. The library then gives up
    /// its early termination, so this is the slow path for partitions too big to scan.
    pub(crate) fn search_filtered(
        &self,
        unit_query: &[f32],
        n: usize,
        ef: usize,
        keep: &dyn Fn(PointNo) -> bool,
    ) -> Vec<PointNo> {
        let filter = PointFilter(keep);
        // With a candidate list of one, the library can drop its only (unfiltered) entry point
        // and then unwrap an empty heap; two or more always keep a candidate.
        let ef = ef.max(n).max(2);
        self.graph
            .search_filter(&scaled_for_graph(unit_query), n, ef, Some(&filter))
            .into_iter()
            .map(|neighbour| neighbour.d_id)
            .collect()
    }

    /// Points in the graph, live or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.graph.get_nb_point()
    }
}

/// Adapts a closure over point numbers to the library's filter trait.
struct PointFilter<'a>(&'a dyn Fn(PointNo) -> bool);

impl FilterT for PointFilter<'_> {
    fn hnsw_filter(&self, id: &usize) -> bool {
        (self.0)(*id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::normalized;

    fn params() -> IndexParams {
        IndexParams {
            dim: 3,
            ..IndexParams::default()
        }
    }

    fn unit(v: [f32; 3]) -> Vec<f32> {
        normalized(&v, 3).unwrap()
    }

    #[test]
    fn search_finds_nearest_first() {
        let segment = Segment::new(&params(), 4);
        segment.insert(10, &unit([1.0, 0.0, 0.0]));
        segment.insert(11, &unit([0.0, 1.0, 0.0]));
        segment.insert(12, &unit([1.0, 0.1, 0.0]));
        let found = segment.search(&unit([1.0, 0.05, 0.0]), 3, 16);
        assert_eq!(found.len(), 3);
        assert!(found[..2].contains(&10) && found[..2].contains(&12));
        assert_eq!(found[2], 11);
        assert_eq!(segment.len(), 3);
    }

    #[test]
    fn build_inserts_everything_and_filter_applies() {
        let points: Vec<(PointNo, Vec<f32>)> = (0..50)
            .map(|i| (i, unit([1.0, i as f32 * 0.1, 0.5])))
            .collect();
        let segment = Segment::build(&params(), points);
        assert_eq!(segment.len(), 50);
        let query = unit([1.0, 0.0, 0.5]);
        let odd = segment.search_filtered(&query, 5, 32, &|p| p % 2 == 1);
        assert!(!odd.is_empty());
        assert!(odd.iter().all(|p| p % 2 == 1), "{odd:?}");
    }

    #[test]
    fn empty_graph_returns_nothing() {
        let segment = Segment::new(&params(), 0);
        assert!(segment.search(&unit([1.0, 0.0, 0.0]), 5, 16).is_empty());
    }
}
