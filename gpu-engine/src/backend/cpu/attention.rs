//! Causal attention over the paged KV pool on the CPU.
//!
//! Decode tokens (and short chunks) run one task per (token, head) straight from the
//! paged pool. Long prefill chunks gather each KV head's keys and values into
//! contiguous buffers once and use matrix products, which is an order of magnitude
//! faster than per-token dot products for a 1,000-token prompt.

use rayon::prelude::*;

use super::matmul::{dot, matmul_transposed};

/// Chunks of at least this many query tokens take the matrix-product path.
pub const DENSE_MIN_TOKENS: usize = 16;

/// Head counts and sizes that attention needs.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
}

/// Per-token view of the step: its position and its sequence's block table.
pub struct TokenView<'a> {
    pub position: usize,
    pub block_table: &'a [u32],
    /// Computed by [`dense_chunk_attention`] instead; the per-token pass skips it.
    pub dense: bool,
}

/// Writes into `out` (`[n_tokens, n_heads * head_dim]`) the attention of each query
/// token over positions `0..=position` of its sequence. `k_cache` and `v_cache` are one
/// layer's pool, laid out `[slot, n_kv_heads, head_dim]`.
pub fn paged_attention(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    tokens: &[TokenView<'_>],
    shape: AttentionShape,
) {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
        block_size,
    } = shape;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    out.par_chunks_mut(head_dim)
        .enumerate()
        .for_each(|(index, out_head)| {
            let (token, head) = (index / n_heads, index % n_heads);
            let view = &tokens[token];
            if view.dense {
                return;
            }
            let kv_head = head / group;
            let q_head = &q[index * head_dim..(index + 1) * head_dim];
            let kv_offset = |pos: usize| {
                let slot =
                    view.block_table[pos / block_size] as usize * block_size + pos % block_size;
                (slot * n_kv_heads + kv_head) * head_dim
            };
            let n_keys = view.position + 1;
            let mut scores: Vec<f32> = (0..n_keys)
                .map(|pos| {
                    let at = kv_offset(pos);
                    dot(q_head, &k_cache[at..at + head_dim]) * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            out_head.fill(0.0);
            for (pos, weight) in scores.iter().enumerate() {
                let at = kv_offset(pos);
                let w = weight / sum;
                for (o, v) in out_head.iter_mut().zip(&v_cache[at..at + head_dim]) {
                    *o += w * v;
                }
            }
        });
}

/// A long chunk of one sequence: `n_query` consecutive tokens ending at `context_len`.
pub struct DenseChunk<'a> {
    pub query_start: usize,
    pub n_query: usize,
    pub context_len: usize,
    pub block_table: &'a [u32],
}

/// Attention of one long chunk through matrix products, written into its rows of `out`.
pub fn dense_chunk_attention(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    chunk: &DenseChunk<'_>,
    shape: AttentionShape,
) {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
        block_size,
    } = shape;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let ctx = chunk.context_len;
    let first_position = ctx - chunk.n_query;
    let rows = chunk.n_query * group;
    let width = n_heads * head_dim;
    let mut keys = vec![0.0f32; ctx * head_dim];
    let mut values_t = vec![0.0f32; head_dim * ctx];
    let mut queries = vec![0.0f32; rows * head_dim];
    let mut scores = vec![0.0f32; rows * ctx];
    let mut result = vec![0.0f32; rows * head_dim];
    for kv_head in 0..n_kv_heads {
        for pos in 0..ctx {
            let slot = chunk.block_table[pos / block_size] as usize * block_size + pos % block_size;
            let at = (slot * n_kv_heads + kv_head) * head_dim;
            keys[pos * head_dim..(pos + 1) * head_dim].copy_from_slice(&k_cache[at..at + head_dim]);
            for (d, &v) in v_cache[at..at + head_dim].iter().enumerate() {
                values_t[d * ctx + pos] = v;
            }
        }
        // Row t * group + j is query token t of head kv_head * group + j.
        for t in 0..chunk.n_query {
            for j in 0..group {
                let head = kv_head * group + j;
                let src = (chunk.query_start + t) * width + head * head_dim;
                let dst = (t * group + j) * head_dim;
                queries[dst..dst + head_dim].copy_from_slice(&q[src..src + head_dim]);
            }
        }
        matmul_transposed(&mut scores, &queries, &keys, rows, head_dim, ctx);
        scores.par_chunks_mut(ctx).enumerate().for_each(|(row, s)| {
            let n_keys = first_position + row / group + 1;
            let (visible, future) = s.split_at_mut(n_keys);
            let max = visible
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
            let mut sum = 0.0f32;
            for x in visible.iter_mut() {
                *x = (*x * scale - max).exp();
                sum += *x;
            }
            for x in visible.iter_mut() {
                *x /= sum;
            }
            future.fill(0.0);
        });
        matmul_transposed(&mut result, &scores, &values_t, rows, ctx, head_dim);
        for t in 0..chunk.n_query {
            for j in 0..group {
                let head = kv_head * group + j;
                let dst = (chunk.query_start + t) * width + head * head_dim;
                let src = (t * group + j) * head_dim;
                out[dst..dst + head_dim].copy_from_slice(&result[src..src + head_dim]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_returns_its_value_and_reads_through_block_table() {
        // Two blocks of size 2; the sequence's only token lives in block 1, slot 0.
        let shape = AttentionShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
            block_size: 2,
        };
        let mut k_cache = vec![0.0; 4 * 2];
        let mut v_cache = vec![9.0; 4 * 2];
        k_cache[4..6].copy_from_slice(&[1.0, 0.0]);
        v_cache[4..6].copy_from_slice(&[3.0, -1.0]);
        let table = [1u32];
        let tokens = [TokenView {
            position: 0,
            block_table: &table,
            dense: false,
        }];
        let q = [1.0, 2.0, -1.0, 0.5];
        let mut out = vec![0.0; 4];
        paged_attention(&mut out, &q, &k_cache, &v_cache, &tokens, shape);
        assert_eq!(out, vec![3.0, -1.0, 3.0, -1.0]);
    }

    #[test]
    fn equal_scores_average_values_causally() {
        let shape = AttentionShape {
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 1,
            block_size: 4,
        };
        let k_cache = vec![0.0; 4];
        let v_cache = vec![2.0, 4.0, 9.0, 9.0];
        let table = [0u32];
        let tokens = [
            TokenView {
                position: 0,
                block_table: &table,
                dense: false,
            },
            TokenView {
                position: 1,
                block_table: &table,
                dense: false,
            },
        ];
        let mut out = vec![0.0; 2];
        paged_attention(&mut out, &[1.0, 1.0], &k_cache, &v_cache, &tokens, shape);
        assert_eq!(out, vec![2.0, 3.0]);
    }

    #[test]
    fn dense_path_matches_per_token_path() {
        let shape = AttentionShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            block_size: 4,
        };
        let n_slots = 12 * 4;
        let kv_width = 2 * 8;
        let noise = |i: usize, m: usize| ((i * m % 97) as f32 / 97.0) - 0.5;
        let k_cache: Vec<f32> = (0..n_slots * kv_width).map(|i| noise(i, 31)).collect();
        let v_cache: Vec<f32> = (0..n_slots * kv_width).map(|i| noise(i, 17)).collect();
        // A sequence of 37 tokens spread over shuffled blocks; the last 20 are the chunk.
        let table = [7u32, 2, 9, 0, 11, 4, 5, 1, 3, 6];
        let (ctx, n_query) = (37, 20);
        let q: Vec<f32> = (0..n_query * 4 * 8).map(|i| noise(i, 13) * 3.0).collect();
        let tokens: Vec<TokenView> = (0..n_query)
            .map(|t| TokenView {
                position: ctx - n_query + t,
                block_table: &table,
                dense: false,
            })
            .collect();
        let mut expected = vec![0.0; q.len()];
        paged_attention(&mut expected, &q, &k_cache, &v_cache, &tokens, shape);
        let mut dense = vec![0.0; q.len()];
        let chunk = DenseChunk {
            query_start: 0,
            n_query,
            context_len: ctx,
            block_table: &table,
        };
        dense_chunk_attention(&mut dense, &q, &k_cache, &v_cache, &chunk, shape);
        for (a, b) in dense.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
