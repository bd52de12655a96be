//! Matrix products on the CPU through the `gemm` crate (runtime-dispatched SIMD, rayon threads).

use gemm::{Parallelism, gemm};

/// `dst[m, n] = lhs[m, k] · rhsᵀ` where `rhs` is `[n, k]` (a linear layer's weight).
pub fn matmul_transposed(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(dst.len(), m * n, "matmul destination has the wrong size");
    assert_eq!(lhs.len(), m * k, "matmul left operand has the wrong size");
    assert_eq!(rhs.len(), n * k, "matmul right operand has the wrong size");
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: gemm's API takes raw pointers and strides. The asserts above check that
    // `dst` holds m×n elements and the operands m×k and n×k, and the strides below
    // address exactly those row-major buffers: dst (row stride n, column stride 1),
    // lhs (row stride k, column stride 1) and rhs read as its transpose (element (i, j)
    // of the k×n matrix at j*k + i). `dst` is borrowed mutably, so nothing aliases it.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Dot product with eight independent accumulators so the compiler can keep them in
/// vector registers (a single running sum would serialise on the add latency).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| lhs[i * k + p] * rhs[j * k + p]).sum();
            }
        }
        out
    }

    #[test]
    fn matches_naive_product_for_matrix_and_vector_shapes() {
        for (m, k, n) in [(1, 37, 130), (5, 64, 33), (17, 9, 200)] {
            let lhs: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
                .collect();
            let rhs: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
                .collect();
            let mut dst = vec![f32::NAN; m * n];
            matmul_transposed(&mut dst, &lhs, &rhs, m, k, n);
            for (a, b) in dst.iter().zip(naive(&lhs, &rhs, m, k, n)) {
                assert!((a - b).abs() < 1e-4, "{m}x{k}x{n}: {a} vs {b}");
            }
        }
    }
}
