//! The index's bookkeeping: which points are live, their partitions, vectors and expiry, and
//! how many live and dead points each graph segment holds. Pure data, no graph searches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::EntryId;
use crate::params::IndexParams;
use crate::segment::{PointNo, Segment};

/// Capacity hint for a fresh growing segment; its tables grow as needed beyond it.
const GROWING_CAPACITY_HINT: usize = 1024;

/// What the index knows about one live point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PointMeta {
    pub(crate) id: EntryId,
    pub(crate) partition: u64,
    pub(crate) expires_at_ms: u64,
    /// Position of this point's vector inside its partition's arrays.
    slot: usize,
}

/// The live points of one partition with their vectors stored contiguously, so that a small
/// partition can be scanned exactly and the graphs can be rebuilt from it.
#[derive(Debug, Default)]
pub(crate) struct Partition {
    pub(crate) points: Vec<PointNo>,
    pub(crate) expires_at_ms: Vec<u64>,
    /// `points.len() * dim` floats, one unit vector per point, in the order of `points`.
    pub(crate) vectors: Vec<f32>,
}

impl Partition {
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    pub(crate) fn vector(&self, slot: usize, dim: usize) -> &[f32] {
        &self.vectors[slot * dim..(slot + 1) * dim]
    }

    fn push(&mut self, point: PointNo, expires_at_ms: u64, unit_vector: &[f32]) -> usize {
        self.points.push(point);
        self.expires_at_ms.push(expires_at_ms);
        self.vectors.extend_from_slice(unit_vector);
        self.points.len() - 1
    }

    /// Removes `slot` by moving the last point into it; returns the moved point, if any, whose
    /// recorded slot the caller must update.
    fn swap_remove(&mut self, slot: usize, dim: usize) -> Option<PointNo> {
        let last = self.points.len() - 1;
        self.points.swap_remove(slot);
        self.expires_at_ms.swap_remove(slot);
        if slot != last {
            self.vectors
                .copy_within(last * dim..(last + 1) * dim, slot * dim);
        }
        self.vectors.truncate(last * dim);
        (slot != last).then(|| self.points[slot])
    }
}

/// A graph segment with the counts that decide when it is dropped or rebuilt.
#[derive(Debug, Clone)]
pub(crate) struct SegmentSlot {
    pub(crate) segment: Arc<Segment>,
    /// First point number of the segment's range; the range ends where the next segment starts.
    pub(crate) start: PointNo,
    /// Points assigned to this segment, live or dead.
    pub(crate) n_points: usize,
    pub(crate) n_live: usize,
}

/// Counts for monitoring, see [`crate::IndexStats`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub(crate) graph_points: usize,
    pub(crate) dead_points: usize,
    pub(crate) segments: usize,
    pub(crate) partitions: usize,
}

/// All bookkeeping of one index, guarded by one lock in [`crate::VectorIndex`].
#[derive(Debug)]
pub(crate) struct State {
    params: IndexParams,
    dim: usize,
    entries: HashMap<EntryId, PointNo>,
    points: HashMap<PointNo, PointMeta>,
    partitions: HashMap<u64, Partition>,
    /// Live points ordered by expiry (then age), for purging and quota eviction.
    expiry: BTreeSet<(u64, PointNo)>,
    /// Sorted by `start`; the last one is the growing segment that receives inserts.
    segments: Vec<SegmentSlot>,
    next_point: PointNo,
    rebuilding: bool,
}

impl State {
    pub(crate) fn new(params: IndexParams) -> Self {
        let growing = Segment::new(&params, GROWING_CAPACITY_HINT);
        Self {
            params,
            dim: params.dim,
            entries: HashMap::new(),
            points: HashMap::new(),
            partitions: HashMap::new(),
            expiry: BTreeSet::new(),
            segments: vec![SegmentSlot {
                segment: Arc::new(growing),
                start: 0,
                n_points: 0,
                n_live: 0,
            }],
            next_point: 0,
            rebuilding: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn partition(&self, partition: u64) -> Option<&Partition> {
        self.partitions.get(&partition)
    }

    pub(crate) fn point(&self, point: PointNo) -> Option<&PointMeta> {
        self.points.get(&point)
    }

    /// The unit vector of a live point.
    pub(crate) fn vector_of(&self, meta: &PointMeta) -> Option<&[f32]> {
        self.partitions
            .get(&meta.partition)
            .map(|p| p.vector(meta.slot, self.dim))
    }

    pub(crate) fn segments(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.segments.iter().map(|slot| &slot.segment)
    }

    /// Points held by all graphs, live or dead: the population a graph search samples from.
    pub(crate) fn graph_points(&self) -> usize {
        self.segments.iter().map(|s| s.n_points).sum()
    }

    pub(crate) fn counts(&self) -> Counts {
        let graph_points = self.graph_points();
        let live: usize = self.segments.iter().map(|s| s.n_live).sum();
        Counts {
            graph_points,
            dead_points: graph_points - live,
            segments: self.segments.len(),
            partitions: self.partitions.len(),
        }
    }

    pub(crate) fn is_rebuilding(&self) -> bool {
        self.rebuilding
    }

    /// Records a new live point for `id`, tombstoning the point `id` had before. Returns the
    /// point number and the growing segment the caller must insert the vector into.
    pub(crate) fn allocate(
        &mut self,
        id: EntryId,
        partition: u64,
        unit_vector: &[f32],
        expires_at_ms: u64,
    ) -> (PointNo, Arc<Segment>) {
        if let Some(&old) = self.entries.get(&id) {
            self.kill(old);
        }
        let point = self.next_point;
        self.next_point += 1;
        let slot =
            self.partitions
                .entry(partition)
                .or_default()
                .push(point, expires_at_ms, unit_vector);
        self.points.insert(
            point,
            PointMeta {
                id,
                partition,
                expires_at_ms,
                slot,
            },
        );
        self.entries.insert(id, point);
        self.expiry.insert((expires_at_ms, point));
        let growing = self.growing_mut();
        growing.n_points += 1;
        growing.n_live += 1;
        (point, Arc::clone(&growing.segment))
    }

    /// Removes the entry `id`; returns whether it was present.
    pub(crate) fn remove_entry(&mut self, id: EntryId) -> bool {
        match self.entries.get(&id) {
            Some(&point) => self.kill(point).is_some(),
            None => false,
        }
    }

    /// Removes every entry whose expiry time has come (`expires_at_ms <= now_ms`).
    pub(crate) fn purge_expired(&mut self, now_ms: u64) -> Vec<EntryId> {
        let due: Vec<PointNo> = self
            .expiry
            .range(..=(now_ms, PointNo::MAX))
            .map(|&(_, point)| point)
            .collect();
        due.into_iter()
            .filter_map(|point| self.kill(point).map(|meta| meta.id))
            .collect()
    }

    /// The entry expired at `now_ms` that expires soonest (the oldest among equals), other
    /// than `keep`: the first victim when the quota is exceeded.
    pub(crate) fn expired_victim(&self, now_ms: u64, keep: Option<EntryId>) -> Option<EntryId> {
        let keep = keep.and_then(|id| self.entries.get(&id).copied());
        self.expiry
            .range(..=(now_ms, PointNo::MAX))
            .map(|&(_, point)| point)
            .find(|&point| Some(point) != keep)
            .and_then(|point| self.points.get(&point))
            .map(|meta| meta.id)
    }

    pub(crate) fn contains(&self, id: EntryId) -> bool {
        self.entries.contains_key(&id)
    }

    /// The ids of live entries for which `keep(id, partition)` holds.
    pub(crate) fn ids_where(&self, keep: impl Fn(EntryId, u64) -> bool) -> Vec<EntryId> {
        self.points
            .values()
            .filter(|meta| keep(meta.id, meta.partition))
            .map(|meta| meta.id)
            .collect()
    }

    /// Forgets every entry; returns how many there were. The point numbers keep growing, so
    /// that a rebuild running meanwhile finds none of its points live and its graph is dropped.
    pub(crate) fn clear(&mut self) -> usize {
        let cleared = self.entries.len();
        self.entries.clear();
        self.points.clear();
        self.partitions.clear();
        self.expiry.clear();
        let fresh = Segment::new(&self.params, GROWING_CAPACITY_HINT);
        self.segments = vec![SegmentSlot {
            segment: Arc::new(fresh),
            start: self.next_point,
            n_points: 0,
            n_live: 0,
        }];
        cleared
    }

    /// Uncounts points allocated but never added to a graph because they died before their
    /// vectors were inserted (an insert batch that replaced or evicted its own entries), so
    /// that they do not count as tombstones towards a rebuild.
    pub(crate) fn forget_unbuilt(&mut self, points: impl IntoIterator<Item = PointNo>) {
        let growing = self.growing_mut();
        for point in points {
            if point >= growing.start && growing.n_points > growing.n_live {
                growing.n_points -= 1;
            }
        }
    }

    /// Turns a live point into a tombstone: forgets its metadata and vector; the graph keeps
    /// the node, which searches now skip.
    fn kill(&mut self, point: PointNo) -> Option<PointMeta> {
        let meta = self.points.remove(&point)?;
        if self.entries.get(&meta.id) == Some(&point) {
            self.entries.remove(&meta.id);
        }
        self.expiry.remove(&(meta.expires_at_ms, point));
        if let Some(partition) = self.partitions.get_mut(&meta.partition) {
            if let Some(moved) = partition.swap_remove(meta.slot, self.dim)
                && let Some(moved_meta) = self.points.get_mut(&moved)
            {
                moved_meta.slot = meta.slot;
            }
            if partition.len() == 0 {
                self.partitions.remove(&meta.partition);
            }
        }
        let index = self.segment_index(point);
        self.segments[index].n_live -= 1;
        self.drop_dead_segments();
        Some(meta)
    }

    fn growing_mut(&mut self) -> &mut SegmentSlot {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Index of the segment whose range holds `point`.
    fn segment_index(&self, point: PointNo) -> usize {
        self.segments
            .partition_point(|slot| slot.start <= point)
            .saturating_sub(1)
    }

    /// Drops sealed segments without live points and replaces a growing segment whose points
    /// all died by a fresh one: when whole batches expire together no rebuild is needed.
    fn drop_dead_segments(&mut self) {
        let last = self.segments.len() - 1;
        let mut index = 0;
        self.segments.retain(|slot| {
            let keep = index == last || slot.n_live > 0;
            index += 1;
            keep
        });
        let growing = self.growing_mut();
        if growing.n_live == 0 && growing.n_points > 0 {
            let next_point = self.next_point;
            let fresh = Segment::new(&self.params, GROWING_CAPACITY_HINT);
            *self.growing_mut() = SegmentSlot {
                segment: Arc::new(fresh),
                start: next_point,
                n_points: 0,
                n_live: 0,
            };
        }
    }

    /// Whether tombstones have piled up enough to rebuild, and no rebuild is running.
    pub(crate) fn wants_rebuild(&self, dead_ratio: f64, min_points: usize) -> bool {
        let Counts {
            graph_points,
            dead_points,
            ..
        } = self.counts();
        !self.rebuilding
            && graph_points >= min_points.max(1)
            && dead_points as f64 > dead_ratio * graph_points as f64
    }

    /// Seals the growing segment (new inserts go to a fresh one) and marks a rebuild as
    /// running. The points to rebuild are copied by [`Self::rebuild_points`] afterwards, under
    /// a read lock, so searches keep running during the copy.
    pub(crate) fn begin_rebuild(&mut self) -> Option<(PointNo, PointNo)> {
        if self.rebuilding {
            return None;
        }
        self.rebuilding = true;
        let start = self.segments[0].start;
        if self.growing_mut().n_points > 0 {
            let next_point = self.next_point;
            let fresh = Segment::new(&self.params, GROWING_CAPACITY_HINT);
            self.segments.push(SegmentSlot {
                segment: Arc::new(fresh),
                start: next_point,
                n_points: 0,
                n_live: 0,
            });
        }
        let end = self.growing_mut().start;
        Some((start, end))
    }

    /// Copies the live points numbered in `start..end` with their vectors, so that the new
    /// graph can be built without holding a lock.
    pub(crate) fn rebuild_points(&self, start: PointNo, end: PointNo) -> Vec<(PointNo, Vec<f32>)> {
        let mut points = Vec::new();
        for partition in self.partitions.values() {
            for (slot, &point) in partition.points.iter().enumerate() {
                if (start..end).contains(&point) {
                    points.push((point, partition.vector(slot, self.dim).to_vec()));
                }
            }
        }
        // Insertion order gives a reproducible graph for the same history.
        points.sort_unstable_by_key(|(point, _)| *point);
        points
    }

    /// Replaces the segments in `start..end` by `rebuilt`, which holds `n_points` points.
    /// Points that died during the build are counted as the new segment's tombstones.
    pub(crate) fn finish_rebuild(
        &mut self,
        start: PointNo,
        end: PointNo,
        rebuilt: Segment,
        n_points: usize,
    ) {
        self.rebuilding = false;
        let covered = |slot: &SegmentSlot| (start..end).contains(&slot.start);
        let n_live = self
            .segments
            .iter()
            .filter(|slot| covered(slot))
            .map(|s| s.n_live)
            .sum();
        self.segments.retain(|slot| !covered(slot));
        let at = self.segments.partition_point(|slot| slot.start < start);
        self.segments.insert(
            at,
            SegmentSlot {
                segment: Arc::new(rebuilt),
                start,
                n_points,
                n_live,
            },
        );
        self.drop_dead_segments();
    }

    /// Forgets a rebuild that could not finish, so that a later one may start.
    pub(crate) fn abort_rebuild(&mut self) {
        self.rebuilding = false;
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
