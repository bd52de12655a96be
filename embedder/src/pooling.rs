//! Sentence vectors from token vectors: mean pooling over the attention mask, then L2 normalisation.

/// Averages each sequence's token vectors where `mask` is non-zero and scales the result to unit length.
///
/// `hidden` is `[batch, seq, dim]` row-major and `mask` is `[batch, seq]`. A sequence with no
/// unmasked token gets the zero vector rather than NaNs (the tokenizer always adds `[CLS]` and
/// `[SEP]`, so this does not happen with real input).
pub fn mean_pool_normalized(
    hidden: &[f32],
    mask: &[i64],
    batch: usize,
    seq: usize,
    dim: usize,
) -> Vec<Vec<f32>> {
    debug_assert_eq!(hidden.len(), batch * seq * dim);
    debug_assert_eq!(mask.len(), batch * seq);
    (0..batch)
        .map(|row| {
            let mut sum = vec![0.0_f32; dim];
            let mut n_tokens = 0_usize;
            for position in 0..seq {
                if mask[row * seq + position] == 0 {
                    continue;
                }
                n_tokens += 1;
                let start = (row * seq + position) * dim;
                for (acc, value) in sum.iter_mut().zip(&hidden[start..start + dim]) {
                    *acc += value;
                }
            }
            // Dividing by the token count before normalising does not change the direction,
            // but keeps the arithmetic identical to sentence-transformers' for parity.
            let count = n_tokens.max(1) as f32;
            sum.iter_mut().for_each(|value| *value /= count);
            l2_normalize(&mut sum);
            sum
        })
        .collect()
}

/// Scales `vector` to unit length; a zero vector stays zero (the same floor as torch's `normalize`).
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    let divisor = norm.max(1e-12);
    vector.iter_mut().for_each(|value| *value /= divisor);
}

/// Cosine similarity of two vectors of equal length; 0 when either is zero.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm_a = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let norm_b = b.iter().map(|y| y * y).sum::<f32>().sqrt();
    if norm_a == 0.0 || norm_b == 0.0 {
        0.0
    } else {
        dot / (norm_a * norm_b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn pools_only_unmasked_tokens() {
        // Two sequences of three tokens, dim 2; the second has its last token masked out.
        let hidden = [
            1.0, 0.0, 3.0, 0.0, 5.0, 0.0, // row 0
            0.0, 2.0, 0.0, 4.0, 100.0, 100.0, // row 1: the padding token must not count
        ];
        let mask = [1, 1, 1, 1, 1, 0];
        let pooled = mean_pool_normalized(&hidden, &mask, 2, 3, 2);
        assert!(close(&pooled[0], &[1.0, 0.0]), "{pooled:?}");
        assert!(close(&pooled[1], &[0.0, 1.0]), "{pooled:?}");
    }

    #[test]
    fn mean_then_normalize_matches_hand_computation() {
        let hidden = [3.0, 0.0, 1.0, 4.0];
        let pooled = mean_pool_normalized(&hidden, &[1, 1], 1, 2, 2);
        // mean = (2, 2) -> unit = (1/sqrt2, 1/sqrt2)
        let half_sqrt2 = std::f32::consts::FRAC_1_SQRT_2;
        assert!(close(&pooled[0], &[half_sqrt2, half_sqrt2]), "{pooled:?}");
    }

    #[test]
    fn fully_masked_row_is_zero_not_nan() {
        let pooled = mean_pool_normalized(&[1.0, 2.0], &[0], 1, 1, 2);
        assert_eq!(pooled[0], vec![0.0, 0.0]);
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut vector = vec![3.0, 4.0];
        l2_normalize(&mut vector);
        assert!(close(&vector, &[0.6, 0.8]));
    }

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine_similarity(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine_similarity(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert!((cosine_similarity(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
