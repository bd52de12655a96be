//! `VectorIndex`: one category's vectors, searchable per partition, with expiry, quotas and
//! background compaction.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

use crate::EntryId;
use crate::compaction;
use crate::distance::normalized;
use crate::error::Result;
use crate::params::{IndexParams, IndexTuning};
use crate::search::{self, Plan, Request};
use crate::state::State;

/// A search hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub id: EntryId,
    /// Cosine similarity between the query and the entry's vector, in `-1.0..=1.0`.
    pub similarity: f32,
}

/// One entry of [`VectorIndex::insert_batch`], with the meaning of `insert`'s arguments.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub id: EntryId,
    pub partition: u64,
    pub vector: &'a [f32],
    pub expires_at_ms: u64,
}

/// A snapshot of the index's size, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    /// Entries held, including expired ones not purged yet.
    pub entries: usize,
    pub partitions: usize,
    /// Nodes in the HNSW graphs, live or tombstoned.
    pub graph_points: usize,
    /// Tombstoned graph nodes, which a rebuild reclaims.
    pub dead_points: usize,
    /// Graphs a search visits: usually one, two while inserts accumulate after a rebuild.
    pub segments: usize,
    pub rebuilding: bool,
    pub rebuilds_completed: u64,
}

/// One category's vectors.
///
/// Every method takes `&self` and may be called from many threads at once. Searches hold a
/// read lock to plan, to scan small partitions exactly and to rank results, but not during
/// the graph walk of a large partition; an insert holds the write lock for bookkeeping only
/// and adds its vector to the graph after releasing it. An insert walks the graph (about a
/// millisecond at 100k entries), so async callers should run it on a blocking thread.
///
/// Entries removed, replaced, evicted or expired become tombstones in the graph. Once more
/// than [`IndexTuning::rebuild_dead_ratio`] of the graph's nodes are tombstones, the graph is
/// rebuilt from the live vectors on a background thread while searches continue on the old
/// one and inserts go to a fresh graph. This costs a full rebuild per such churn (about 7 s
/// on 16 cores for 68k live entries, proportionally more on two) in exchange for one or two
/// graphs to search; a graph whose points all expire is dropped without a rebuild.
pub struct VectorIndex {
    shared: Arc<Shared>,
}

/// The state shared with the background rebuild thread.
pub(crate) struct Shared {
    pub(crate) params: IndexParams,
    pub(crate) tuning: IndexTuning,
    pub(crate) max_entries: Option<NonZeroUsize>,
    pub(crate) state: RwLock<State>,
    pub(crate) rebuilds_completed: AtomicU64,
    rebuild_thread: Mutex<RebuildThread>,
}

/// Lets a later write start a new rebuild thread if this one panics.
struct MarkStoppedOnPanic<'a>(&'a Shared);

impl Drop for MarkStoppedOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.rebuild_thread.lock().running = false;
        }
    }
}

/// The background rebuild thread, if one was started.
#[derive(Default)]
struct RebuildThread {
    /// True from spawning until the thread, holding this mutex, found nothing left to do.
    running: bool,
    handle: Option<JoinHandle<()>>,
}

impl Shared {
    fn wants_rebuild(&self) -> bool {
        let tuning = &self.tuning;
        self.state
            .read()
            .wants_rebuild(tuning.rebuild_dead_ratio, tuning.rebuild_min_points)
    }
}

impl fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorIndex")
            .field("params", &self.shared.params)
            .field("max_entries", &self.shared.max_entries)
            .field("stats", &self.stats())
            .finish()
    }
}

impl VectorIndex {
    /// An empty index. Parameters outside the graph library's range are moved into it (with a
    /// warning), because the library would otherwise exit the process; use
    /// [`Self::try_new`] to reject them instead.
    pub fn new(params: IndexParams, max_entries: Option<NonZeroUsize>) -> Self {
        if let Err(error) = params.validate() {
            tracing::warn!(%error, "clamping invalid vector index parameters");
        }
        Self::build(params.clamped(), max_entries, IndexTuning::default())
    }

    /// An empty index, or an error when a parameter is out of range.
    pub fn try_new(params: IndexParams, max_entries: Option<NonZeroUsize>) -> Result<Self> {
        Self::with_tuning(params, max_entries, IndexTuning::default())
    }

    /// An empty index with non-default search and compaction tuning.
    pub fn with_tuning(
        params: IndexParams,
        max_entries: Option<NonZeroUsize>,
        tuning: IndexTuning,
    ) -> Result<Self> {
        params.validate()?;
        Ok(Self::build(params, max_entries, tuning))
    }

    fn build(params: IndexParams, max_entries: Option<NonZeroUsize>, tuning: IndexTuning) -> Self {
        Self {
            shared: Arc::new(Shared {
                params,
                tuning,
                max_entries,
                state: RwLock::new(State::new(params)),
                rebuilds_completed: AtomicU64::new(0),
                rebuild_thread: Mutex::new(RebuildThread::default()),
            }),
        }
    }

    pub fn params(&self) -> &IndexParams {
        &self.shared.params
    }

    pub fn tuning(&self) -> &IndexTuning {
        &self.shared.tuning
    }

    /// Adds `vector` as entry `id` of `partition`, expiring at `expires_at_ms` (unix millis).
    /// The vector is normalised to unit length. Re-inserting an id replaces its old vector.
    ///
    /// Returns the ids evicted to stay within `max_entries`: the entries that expire soonest
    /// (with one TTL per category, the oldest), never the entry just inserted. The caller
    /// removes them from its entry store.
    pub fn insert(
        &self,
        id: EntryId,
        partition: u64,
        vector: &[f32],
        expires_at_ms: u64,
    ) -> Result<Vec<EntryId>> {
        let unit = normalized(vector, self.shared.params.dim)?;
        let (point, growing, evicted) = {
            let mut state = self.shared.state.write();
            let (point, growing) = state.allocate(id, partition, &unit, expires_at_ms);
            let evicted = match self.shared.max_entries {
                Some(max) => state.evict_over_quota(max.get(), point),
                None => Vec::new(),
            };
            (point, growing, evicted)
        };
        // The graph synchronises itself, so the slow part runs without the index lock; the
        // entry is already searchable by exact scan, and by graph once this returns.
        growing.insert(point, &unit);
        self.maybe_rebuild();
        Ok(evicted)
    }

    /// Inserts many entries at once, building their graph links on all cores; meant for
    /// filling the index at start-up (for example from Redis). Either every vector is valid
    /// and all are inserted, or nothing changes. Later entries replace earlier ones with the
    /// same id. Returns the ids evicted to stay within `max_entries`, which may include
    /// entries of the batch when the batch alone exceeds it (never its last entry).
    pub fn insert_batch(&self, batch: &[NewEntry<'_>]) -> Result<Vec<EntryId>> {
        let dim = self.shared.params.dim;
        let units = batch
            .iter()
            .map(|entry| normalized(entry.vector, dim))
            .collect::<Result<Vec<_>>>()?;
        let (points, growing, evicted) = {
            let mut state = self.shared.state.write();
            let mut points = Vec::with_capacity(batch.len());
            let mut growing = None;
            for (entry, unit) in batch.iter().zip(units) {
                let (point, segment) =
                    state.allocate(entry.id, entry.partition, &unit, entry.expires_at_ms);
                points.push((point, unit));
                growing = Some(segment);
            }
            let evicted = match (self.shared.max_entries, points.last()) {
                (Some(max), Some(&(last, _))) => state.evict_over_quota(max.get(), last),
                _ => Vec::new(),
            };
            (points, growing, evicted)
        };
        // All allocations happened under one lock hold, so they share one growing segment.
        if let Some(growing) = growing {
            growing.insert_many(points);
        }
        self.maybe_rebuild();
        Ok(evicted)
    }

    /// The `k` entries of `partition` most similar to `vector`, best first, leaving out
    /// entries expired at `now_ms` (those with `expires_at_ms <= now_ms`) and removed ones.
    pub fn search(
        &self,
        partition: u64,
        vector: &[f32],
        k: usize,
        now_ms: u64,
    ) -> Result<Vec<Neighbor>> {
        let query = normalized(vector, self.shared.params.dim)?;
        let req = Request {
            partition,
            query: &query,
            k,
            now_ms,
        };
        let (params, tuning) = (&self.shared.params, &self.shared.tuning);
        let plan = search::plan(&self.shared.state.read(), params, tuning, &req);
        match plan {
            Plan::Done(found) => Ok(found),
            Plan::Graph { segments, ef } => {
                let candidates = search::graph_candidates(&segments, &query, ef);
                let state = self.shared.state.read();
                Ok(search::finish(&state, params, tuning, &req, candidates))
            }
        }
    }

    /// Removes entry `id`; returns whether it was present.
    pub fn remove(&self, id: EntryId) -> bool {
        let removed = self.shared.state.write().remove_entry(id);
        if removed {
            self.maybe_rebuild();
        }
        removed
    }

    /// Removes every entry expired at `now_ms` and returns their ids.
    pub fn purge_expired(&self, now_ms: u64) -> Vec<EntryId> {
        let purged = self.shared.state.write().purge_expired(now_ms);
        if !purged.is_empty() {
            self.maybe_rebuild();
        }
        purged
    }

    /// Entries held: inserted and neither removed, evicted nor purged (expired entries count
    /// until [`Self::purge_expired`] runs, although searches already skip them).
    pub fn len(&self) -> usize {
        self.shared.state.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> IndexStats {
        let state = self.shared.state.read();
        let counts = state.counts();
        IndexStats {
            entries: state.len(),
            partitions: counts.partitions,
            graph_points: counts.graph_points,
            dead_points: counts.dead_points,
            segments: counts.segments,
            rebuilding: state.is_rebuilding(),
            rebuilds_completed: self.shared.rebuilds_completed.load(Ordering::Relaxed),
        }
    }

    /// Rebuilds the graphs from the live vectors now, on the calling thread (it can take
    /// minutes for large indexes: call it from a blocking thread). Returns false when a
    /// rebuild was already running.
    pub fn compact(&self) -> bool {
        compaction::rebuild(&self.shared)
    }

    /// Blocks until the background rebuild started last, if any, has finished.
    pub fn wait_for_rebuild(&self) {
        let handle = self.shared.rebuild_thread.lock().handle.take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("vector index rebuild thread panicked");
        }
    }

    /// Starts a background rebuild when tombstones have piled up and none is running.
    fn maybe_rebuild(&self) {
        if !self.shared.tuning.background_rebuild || !self.shared.wants_rebuild() {
            return;
        }
        let mut thread = self.shared.rebuild_thread.lock();
        if thread.running {
            // The running thread checks again, under this mutex, before it exits.
            return;
        }
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("cachet-index-rebuild".to_owned())
            .spawn(move || {
                let _unwinding = MarkStoppedOnPanic(&shared);
                loop {
                    compaction::rebuild(&shared);
                    // Entries that died during the rebuild are tombstones in the new graph; if
                    // they are already too many, go again. Deciding under the mutex means a
                    // writer either sees this thread running or sees it gone and starts one.
                    let mut thread = shared.rebuild_thread.lock();
                    if !shared.wants_rebuild() {
                        thread.running = false;
                        break;
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                thread.running = true;
                // A previous handle belongs to a thread that has finished its work.
                thread.handle = Some(handle);
            }
            Err(error) => tracing::warn!(%error, "failed to start vector index rebuild thread"),
        }
    }
}

#[cfg(test)]
#[path = "vector_index_tests.rs"]
mod tests;
