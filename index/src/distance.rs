//! Vector arithmetic: normalisation, dot products and the graph's clamped cosine distance.

use crate::error::{Error, Result};

/// Dot product written with independent accumulators so the optimiser vectorises it.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for lane in 0..LANES {
            acc[lane] += ca[lane] * cb[lane];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Checks a caller's vector and returns it scaled to unit length, so that the dot product of
/// two stored vectors is their cosine similarity whatever the caller's normalisation was.
pub(crate) fn normalized(vector: &[f32], dim: usize) -> Result<Vec<f32>> {
    if vector.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            actual: vector.len(),
        });
    }
    if let Some(position) = vector.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFiniteVector { position });
    }
    let norm = dot(vector, vector).sqrt();
    // A norm that is zero or overflowed to infinity leaves no usable direction.
    if norm == 0.0 || !norm.is_finite() {
        return Err(Error::ZeroVector);
    }
    Ok(vector.iter().map(|x| x / norm).collect())
}

/// Factor applied to unit vectors before they enter a graph, which uses `hnsw_rs`'s SIMD
/// `DistDot` (`1 - dot`, several times faster than portable code, and compiled optimised even
/// in our debug builds).
///
/// `DistDot` asserts that the dot product is at most 1.000002, and rounding can push the dot
/// product of a unit vector with itself above one. Scaling both sides by `s` makes the true
/// dot product at most `s^2 = 1 - 6 * dim * u - 1e-6` (u = 2^-24), while the rounding error of
/// normalising and summing `dim` products is at most about `3 * dim * u`: the computed value
/// stays below one, so the assertion cannot fire. Distances become `1 - s^2 cos`, an increasing
/// function of the cosine distance, so every comparison the graph makes is unchanged.
pub(crate) fn graph_scale(dim: usize) -> f32 {
    let rounding = 3.0 * dim as f64 * f64::from(f32::EPSILON);
    (1.0 - rounding - 1e-6).max(0.25).sqrt() as f32
}

/// A copy of `unit_vector` scaled by [`graph_scale`].
pub(crate) fn scaled_for_graph(unit_vector: &[f32]) -> Vec<f32> {
    let scale = graph_scale(unit_vector.len());
    unit_vector.iter().map(|x| x * scale).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum_for_all_tail_lengths() {
        for len in 0..40 {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "len {len}");
        }
    }

    #[test]
    fn normalized_has_unit_length() {
        let v = normalized(&[3.0, 4.0], 2).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn normalized_rejects_bad_vectors() {
        assert!(matches!(
            normalized(&[1.0, 2.0], 3),
            Err(Error::DimensionMismatch {
                expected: 3,
                actual: 2
            })
        ));
        assert!(matches!(
            normalized(&[1.0, f32::NAN], 2),
            Err(Error::NonFiniteVector { position: 1 })
        ));
        assert!(matches!(normalized(&[0.0, 0.0], 2), Err(Error::ZeroVector)));
        assert!(matches!(
            normalized(&[f32::MAX, f32::MAX], 2),
            Err(Error::ZeroVector)
        ));
    }

    #[test]
    fn scaled_self_similarity_stays_below_the_library_assertion() {
        use hnsw_rs::prelude::{DistDot, Distance};
        let mut seed = 7u64;
        let mut next = move || {
            // A small linear congruential generator keeps this test free of dependencies.
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for dim in [1, 3, 384, 1024, 4096] {
            for _ in 0..200 {
                let raw: Vec<f32> = (0..dim).map(|_| next()).collect();
                let Ok(unit) = normalized(&raw, dim) else {
                    continue;
                };
                let scaled = scaled_for_graph(&unit);
                // DistDot panics if the dot product exceeds 1.000002; it must not here.
                let distance = DistDot.eval(&scaled, &scaled);
                assert!(distance > 0.0 && distance < 1e-2, "dim {dim}: {distance}");
            }
        }
        assert!(graph_scale(384) > 0.9999 && graph_scale(384) < 1.0);
    }
}
