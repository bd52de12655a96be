//! Unit tests of the index bookkeeping: slots, segments, rebuild hand-over and eviction.
use super::*;

const DIM: usize = 2;

fn state() -> State {
    State::new(IndexParams {
        dim: DIM,
        ..IndexParams::default()
    })
}

fn unit(i: usize) -> Vec<f32> {
    let angle = i as f32 * 0.1;
    vec![angle.cos(), angle.sin()]
}

/// Every live point's recorded slot must hold its own vector and number.
fn check_consistent(state: &State) {
    for (&point, meta) in &state.points {
        let partition = &state.partitions[&meta.partition];
        assert_eq!(partition.points[meta.slot], point);
        assert_eq!(partition.expires_at_ms[meta.slot], meta.expires_at_ms);
        assert_eq!(state.entries[&meta.id], point);
        assert!(state.expiry.contains(&(meta.expires_at_ms, point)));
    }
    assert_eq!(state.points.len(), state.entries.len());
    assert_eq!(state.points.len(), state.expiry.len());
    let live: usize = state.segments.iter().map(|s| s.n_live).sum();
    assert_eq!(live, state.points.len());
}

#[test]
fn swap_remove_keeps_slots_and_vectors_in_step() {
    let mut state = state();
    for id in 0..10 {
        state.allocate(id, id % 2, &unit(id as usize), 100 + id);
    }
    for id in [0, 5, 2, 9] {
        assert!(state.remove_entry(id));
        check_consistent(&state);
    }
    for (&point, meta) in &state.points {
        assert_eq!(
            state.vector_of(meta).unwrap(),
            unit(meta.id as usize).as_slice()
        );
        assert_eq!(point as u64, meta.id);
    }
}

#[test]
fn empty_partitions_are_forgotten() {
    let mut state = state();
    state.allocate(1, 42, &unit(1), 100);
    assert!(state.partition(42).is_some());
    state.remove_entry(1);
    assert!(state.partition(42).is_none());
    assert_eq!(state.counts().partitions, 0);
}

#[test]
fn inserts_during_a_rebuild_stay_in_the_growing_segment() {
    let mut state = state();
    for id in 0..6 {
        state.allocate(id, 0, &unit(id as usize), 100);
    }
    state.remove_entry(0);
    let (start, end) = state.begin_rebuild().unwrap();
    assert_eq!((start, end), (0, 6));
    assert!(state.begin_rebuild().is_none(), "one rebuild at a time");
    state.allocate(6, 0, &unit(6), 100);
    let points = state.rebuild_points(start, end);
    assert_eq!(
        points.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // A removal while the new graph is built becomes one of its tombstones.
    state.remove_entry(3);
    let rebuilt = Segment::new(&state.params, 8);
    state.finish_rebuild(start, end, rebuilt, points.len());
    let slots: Vec<(PointNo, usize, usize)> = state
        .segments
        .iter()
        .map(|s| (s.start, s.n_points, s.n_live))
        .collect();
    assert_eq!(slots, vec![(0, 5, 4), (6, 1, 1)]);
    assert!(!state.is_rebuilding());
    check_consistent(&state);
    assert_eq!(state.segment_index(4), 0);
    assert_eq!(state.segment_index(6), 1);
}

#[test]
fn dead_segments_are_dropped_and_dead_growing_replaced() {
    let mut state = state();
    for id in 0..3 {
        state.allocate(id, 0, &unit(id as usize), 100);
    }
    let (start, end) = state.begin_rebuild().unwrap();
    let points = state.rebuild_points(start, end);
    state.finish_rebuild(start, end, Segment::new(&state.params, 4), points.len());
    state.allocate(3, 0, &unit(3), 500);
    assert_eq!(state.counts().segments, 2);
    assert_eq!(state.purge_expired(100).len(), 3);
    assert_eq!(
        state.counts().segments,
        1,
        "sealed segment without live points dropped"
    );
    assert_eq!(state.purge_expired(500), vec![3]);
    let counts = state.counts();
    assert_eq!((counts.segments, counts.graph_points), (1, 0));
    check_consistent(&state);
}

#[test]
fn wants_rebuild_follows_the_dead_ratio() {
    let mut state = state();
    for id in 0..8 {
        state.allocate(id, 0, &unit(id as usize), 100);
    }
    state.remove_entry(0);
    state.remove_entry(1);
    assert!(!state.wants_rebuild(0.25, 1), "2 of 8 is not more than 25%");
    state.remove_entry(2);
    assert!(state.wants_rebuild(0.25, 1));
    assert!(!state.wants_rebuild(0.25, 100), "too small to bother");
    state.begin_rebuild();
    assert!(!state.wants_rebuild(0.25, 1), "already rebuilding");
    state.abort_rebuild();
    assert!(state.wants_rebuild(0.25, 1));
}

#[test]
fn expired_victim_is_the_soonest_expired_other_than_keep() {
    let mut state = state();
    state.allocate(1, 0, &unit(1), 300);
    state.allocate(2, 0, &unit(2), 100);
    state.allocate(3, 0, &unit(3), 50);
    assert_eq!(state.expired_victim(40, None), None, "nothing expired yet");
    assert_eq!(state.expired_victim(100, None), Some(3));
    assert_eq!(state.expired_victim(100, Some(3)), Some(2));
    assert_eq!(state.expired_victim(50, Some(3)), None);
    // Equal expiry: the older entry first.
    state.allocate(4, 0, &unit(4), 100);
    state.remove_entry(3);
    assert_eq!(state.expired_victim(100, None), Some(2));
    assert_eq!(state.expired_victim(100, Some(2)), Some(4));
}

#[test]
fn clear_forgets_everything_but_keeps_numbering_points() {
    let mut state = state();
    for id in 0..4 {
        state.allocate(id, id % 2, &unit(id as usize), 100);
    }
    assert_eq!(state.clear(), 4);
    assert_eq!(state.len(), 0);
    let counts = state.counts();
    assert_eq!(
        (counts.segments, counts.graph_points, counts.partitions),
        (1, 0, 0)
    );
    let (point, _) = state.allocate(9, 0, &unit(9), 100);
    assert_eq!(point, 4, "point numbers are never reused");
    assert_eq!(state.segments[0].start, 4);
    assert_eq!(state.ids_where(|id, _| id == 9), vec![9]);
    check_consistent(&state);
}

#[test]
fn ids_where_sees_id_and_partition() {
    let mut state = state();
    for id in 0..6 {
        state.allocate(id, id % 3, &unit(id as usize), 100);
    }
    let mut found = state.ids_where(|id, partition| partition == 2 || id == 0);
    found.sort_unstable();
    assert_eq!(found, vec![0, 2, 5]);
}

#[test]
fn unbuilt_points_do_not_count_as_tombstones() {
    let mut state = state();
    let (a, _) = state.allocate(1, 0, &unit(1), 100);
    let (b, _) = state.allocate(2, 0, &unit(2), 100);
    let (c, _) = state.allocate(1, 0, &unit(3), 100);
    state.remove_entry(2);
    assert_eq!(state.counts().dead_points, 2);
    state.forget_unbuilt([a, b]);
    let counts = state.counts();
    assert_eq!((counts.graph_points, counts.dead_points), (1, 0));
    assert!(state.point(c).is_some());
    check_consistent(&state);
}
