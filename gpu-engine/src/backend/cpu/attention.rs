//! Causal attention over the paged KV pool on the CPU, one task per (token, head).

use rayon::prelude::*;

use super::matmul::dot;

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
            },
            TokenView {
                position: 1,
                block_table: &table,
            },
        ];
        let mut out = vec![0.0; 2];
        paged_attention(&mut out, &[1.0, 1.0], &k_cache, &v_cache, &tokens, shape);
        assert_eq!(out, vec![2.0, 3.0]);
    }
}
