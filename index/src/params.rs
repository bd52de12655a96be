//! Parameters of one category's index: graph shape and search/compaction tuning.

use crate::error::{Error, Result};

/// The largest `m` accepted: `hnsw_rs` stores it in a `u8` and exits the process above 256.
pub const MAX_M: usize = 255;

/// Shape of the HNSW graph and the default search width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    /// Dimension of every vector (the embedder's output size).
    pub dim: usize,
    /// Links per node and layer (twice that in the bottom layer).
    pub m: usize,
    /// Candidate list size while inserting; larger builds slower and finds better links.
    pub ef_construction: usize,
    /// Candidate list size while searching; larger searches slower with better recall.
    pub ef_search: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            dim: 384,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

impl IndexParams {
    /// Checks every field against what the graph library accepts.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::InvalidParams {
                name: "dim",
                reason: "must be at least 1",
            });
        }
        if !(2..=MAX_M).contains(&self.m) {
            return Err(Error::InvalidParams {
                name: "m",
                reason: "must be between 2 and 255",
            });
        }
        if self.ef_construction == 0 {
            return Err(Error::InvalidParams {
                name: "ef_construction",
                reason: "must be at least 1",
            });
        }
        if self.ef_search == 0 {
            return Err(Error::InvalidParams {
                name: "ef_search",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }

    /// Returns a copy with every field moved into its valid range, for the infallible constructor.
    pub(crate) fn clamped(self) -> Self {
        Self {
            dim: self.dim.max(1),
            m: self.m.clamp(2, MAX_M),
            ef_construction: self.ef_construction.max(1),
            ef_search: self.ef_search.max(1),
        }
    }
}

/// Knobs that trade search latency against exactness and memory against rebuild work.
///
/// The defaults suit 384-d vectors on a few cores; the benchmark `index_bench` measures them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexTuning {
    /// Partitions with at most this many entries are always searched exactly by scanning their
    /// vectors, which beats a graph search that would mostly visit other partitions' points.
    pub exact_search_max_points: usize,
    /// Cost of one unit of a graph search's candidate list, counted in exact vector
    /// comparisons. A search for a partition holding a fraction `s` of the graph widens its
    /// list to `ef_search / s`; when that costs more than scanning the partition's vectors,
    /// the partition is scanned instead (up to `exact_fallback_max_points`). `index_bench`
    /// measured about 120 at 100k entries (9 µs per unit of ef against 0.075 µs per 384-d
    /// comparison).
    pub graph_cost_per_ef: f64,
    /// Widest candidate list for an unfiltered graph search; partitions too rare in the graph
    /// for it, and too big to scan, use the library's filtered search instead.
    pub max_graph_ef: usize,
    /// When a graph search still finds fewer than `k` live neighbours, partitions up to this
    /// size are scanned exactly; larger ones use the library's filtered graph search.
    pub exact_fallback_max_points: usize,
    /// Rebuild the graphs once this fraction of their points are tombstones.
    pub rebuild_dead_ratio: f64,
    /// Graphs with fewer points than this are never rebuilt for tombstones (searches filter
    /// them cheaply, and a graph whose points all die is dropped without a rebuild).
    pub rebuild_min_points: usize,
    /// Start rebuilds on a background thread by themselves; when false, the owner calls
    /// [`crate::VectorIndex::compact`] (for example from a blocking task).
    pub background_rebuild: bool,
}

impl Default for IndexTuning {
    fn default() -> Self {
        Self {
            exact_search_max_points: 4096,
            graph_cost_per_ef: 128.0,
            max_graph_ef: 1024,
            exact_fallback_max_points: 65_536,
            rebuild_dead_ratio: 0.25,
            rebuild_min_points: 1024,
            background_rebuild: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(params: IndexParams, bad_field: Option<&str>) {
        match (params.validate(), bad_field) {
            (Ok(()), None) => {}
            (Err(Error::InvalidParams { name, .. }), Some(field)) => assert_eq!(name, field),
            (got, want) => panic!("validate({params:?}) = {got:?}, expected problem in {want:?}"),
        }
    }

    #[test]
    fn validation_names_the_bad_field() {
        let ok = IndexParams::default();
        check(ok, None);
        check(IndexParams { dim: 0, ..ok }, Some("dim"));
        check(IndexParams { m: 1, ..ok }, Some("m"));
        check(IndexParams { m: 256, ..ok }, Some("m"));
        check(IndexParams { m: 255, ..ok }, None);
        check(
            IndexParams {
                ef_construction: 0,
                ..ok
            },
            Some("ef_construction"),
        );
        check(IndexParams { ef_search: 0, ..ok }, Some("ef_search"));
    }

    #[test]
    fn clamped_params_always_validate() {
        let wild = IndexParams {
            dim: 0,
            m: 10_000,
            ef_construction: 0,
            ef_search: 0,
        };
        assert!(wild.clamped().validate().is_ok());
        assert_eq!(IndexParams::default().clamped(), IndexParams::default());
    }
}
