//! Vector arithmetic: normalisation, dot products and the graph's clamped cosine distance.

use hnsw_rs::prelude::Distance;

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

/// Cosine distance of unit vectors, `1 - dot`, clamped at zero.
///
/// Rounding can push the dot product of a vector with itself slightly above one; `hnsw_rs`
/// asserts that distances are non-negative, and its own `DistDot` asserts on exactly that, so
/// the clamp keeps a rounding error from panicking a search. `f32::max` also maps NaN to zero.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClampedCosine;

impl Distance<f32> for ClampedCosine {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
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
    fn clamped_cosine_never_goes_negative() {
        let v = normalized(&[1.0, 1.0, 1.0], 3).unwrap();
        let scaled: Vec<f32> = v.iter().map(|x| x * 1.001).collect();
        assert_eq!(ClampedCosine.eval(&v, &scaled), 0.0);
        assert_eq!(ClampedCosine.eval(&[f32::NAN], &[1.0]), 0.0);
        let w = normalized(&[1.0, 0.0, 0.0], 3).unwrap();
        let expected = 1.0 - 1.0 / 3.0f32.sqrt();
        assert!((ClampedCosine.eval(&v, &w) - expected).abs() < 1e-6);
    }
}
