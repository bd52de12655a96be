//! Rebuilding the graphs from the live vectors once tombstones pile up, off to the side so
//! that searches and inserts keep working while the new graph is built.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::segment::Segment;
use crate::vector_index::Shared;

/// Rebuilds every sealed segment into one graph of the live points. Returns false when
/// another rebuild was already running.
///
/// Steps: seal the growing segment under the write lock (new inserts go to a fresh segment);
/// copy the live vectors under a read lock (searches continue); build the new graph with no
/// lock held; swap it in under the write lock. Points removed during the build are already
/// tombstones in the bookkeeping, so searches keep skipping them in the new graph.
pub(crate) fn rebuild(shared: &Shared) -> bool {
    let Some((start, end)) = shared.state.write().begin_rebuild() else {
        return false;
    };
    let guard = AbortOnUnwind { shared };
    let started = Instant::now();
    let points = shared.state.read().rebuild_points(start, end);
    let n_points = points.len();
    let segment = Segment::build(&shared.params, points);
    shared
        .state
        .write()
        .finish_rebuild(start, end, segment, n_points);
    std::mem::forget(guard);
    shared.rebuilds_completed.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        n_points,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuilt vector index graph"
    );
    true
}

/// Clears the rebuilding flag if the build panics, so that a later rebuild can start.
struct AbortOnUnwind<'a> {
    shared: &'a Shared,
}

impl Drop for AbortOnUnwind<'_> {
    fn drop(&mut self) {
        self.shared.state.write().abort_rebuild();
    }
}
