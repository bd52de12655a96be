//! The CPU backend: f32 everywhere, matrix products through `gemm`, the rest spread over rayon.

mod attention;
mod matmul;

use rayon::prelude::*;

use self::attention::{AttentionShape, DENSE_MIN_TOKENS, DenseChunk, TokenView};
use super::{Backend, KvLayout, ModelDims, StepBatch, StepMode};
use crate::checkpoint::HostTensor;
use crate::{Error, Result};

/// A row-major `[rows, cols]` f32 matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl CpuTensor {
    fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }
}

/// The CPU implementation of [`Backend`]; owns the KV pool as two f32 arrays per layer.
#[derive(Debug)]
pub struct CpuBackend {
    dims: ModelDims,
    kv: KvLayout,
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    batch: StepBatch,
}

impl CpuBackend {
    /// Allocates the KV pool for `kv.n_blocks` blocks of `kv.block_size` tokens.
    pub fn new(dims: ModelDims, kv: KvLayout) -> Result<Self> {
        if kv.n_blocks == 0 || kv.block_size == 0 {
            return Err(Error::InvalidSettings(
                "the kv pool needs at least one block of at least one token".into(),
            ));
        }
        let per_layer = kv.n_blocks * kv.block_size * dims.n_kv_heads * dims.head_dim;
        Ok(Self {
            k_cache: vec![vec![0.0; per_layer]; dims.n_layers],
            v_cache: vec![vec![0.0; per_layer]; dims.n_layers],
            dims,
            kv,
            batch: StepBatch::default(),
        })
    }

    /// Bytes of KV memory per block across all layers (keys and values).
    pub fn kv_bytes_per_block(dims: &ModelDims, block_size: usize) -> usize {
        2 * dims.n_layers * block_size * dims.n_kv_heads * dims.head_dim * size_of::<f32>()
    }
}

fn rms_norm_rows(x: &CpuTensor, weight: &[f32], eps: f32) -> CpuTensor {
    let mut out = CpuTensor::zeros(x.rows, x.cols);
    out.data
        .par_chunks_mut(x.cols)
        .zip(x.data.par_chunks(x.cols))
        .for_each(|(o, row)| {
            let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
            let inv = 1.0 / (mean_sq + eps).sqrt();
            for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
                *o = v * inv * w;
            }
        });
    out
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuTensor;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn upload(&mut self, tensor: HostTensor) -> Result<CpuTensor> {
        let (rows, cols) = match tensor.shape[..] {
            [n] => (1, n),
            [r, c] => (r, c),
            _ => {
                return Err(Error::InvalidSettings(format!(
                    "the cpu backend takes vectors and matrices, not shape {:?}",
                    tensor.shape
                )));
            }
        };
        Ok(CpuTensor {
            rows,
            cols,
            data: tensor.data,
        })
    }

    fn begin_step(&mut self, batch: &StepBatch) -> Result<StepMode> {
        let capacity = (self.kv.n_blocks * self.kv.block_size) as u32;
        if let Some(&slot) = batch.slot_mapping.iter().find(|&&s| s >= capacity) {
            return Err(Error::InvalidSettings(format!(
                "kv slot {slot} is outside the pool of {capacity} slots"
            )));
        }
        self.batch = batch.clone();
        Ok(StepMode::Eager)
    }

    fn embed(&mut self, table: &CpuTensor) -> Result<CpuTensor> {
        let cols = table.cols;
        let mut out = CpuTensor::zeros(self.batch.n_tokens(), cols);
        for (row, &id) in out.data.chunks_mut(cols).zip(&self.batch.token_ids) {
            let id = id as usize;
            if id >= table.rows {
                return Err(Error::InvalidSettings(format!(
                    "token id {id} is outside the vocabulary of {}",
                    table.rows
                )));
            }
            row.copy_from_slice(&table.data[id * cols..(id + 1) * cols]);
        }
        Ok(out)
    }

    fn rms_norm(&mut self, x: &CpuTensor, weight: &CpuTensor) -> Result<CpuTensor> {
        Ok(rms_norm_rows(x, &weight.data, self.dims.rms_norm_eps))
    }

    fn add_rms_norm(
        &mut self,
        residual: &mut CpuTensor,
        delta: &CpuTensor,
        weight: &CpuTensor,
    ) -> Result<CpuTensor> {
        for (r, d) in residual.data.iter_mut().zip(&delta.data) {
            *r += d;
        }
        Ok(rms_norm_rows(
            residual,
            &weight.data,
            self.dims.rms_norm_eps,
        ))
    }

    fn linear(
        &mut self,
        x: &CpuTensor,
        weight: &CpuTensor,
        bias: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        let mut out = CpuTensor::zeros(x.rows, weight.rows);
        matmul::matmul_transposed(
            &mut out.data,
            &x.data,
            &weight.data,
            x.rows,
            x.cols,
            weight.rows,
        );
        if let Some(bias) = bias {
            for row in out.data.chunks_mut(weight.rows) {
                for (o, b) in row.iter_mut().zip(&bias.data) {
                    *o += b;
                }
            }
        }
        Ok(out)
    }

    fn rope_store_kv(
        &mut self,
        layer: usize,
        q: &mut CpuTensor,
        k: &mut CpuTensor,
        v: &CpuTensor,
    ) -> Result<()> {
        let head_dim = self.dims.head_dim;
        let half = head_dim / 2;
        let inv_freq = &self.dims.rope_inv_freq;
        let rotate = |x: &mut [f32], position: u32| {
            for head in x.chunks_mut(head_dim) {
                for (i, &freq) in inv_freq.iter().enumerate() {
                    let angle = position as f64 * freq;
                    let (sin, cos) = (angle.sin(), angle.cos());
                    let (a, b) = (head[i] as f64, head[i + half] as f64);
                    head[i] = (a * cos - b * sin) as f32;
                    head[i + half] = (b * cos + a * sin) as f32;
                }
            }
        };
        let positions = &self.batch.positions;
        q.data
            .par_chunks_mut(q.cols)
            .zip(positions.par_iter())
            .for_each(|(row, &p)| rotate(row, p));
        k.data
            .par_chunks_mut(k.cols)
            .zip(positions.par_iter())
            .for_each(|(row, &p)| rotate(row, p));
        let width = k.cols;
        let (k_cache, v_cache) = (&mut self.k_cache[layer], &mut self.v_cache[layer]);
        for (t, &slot) in self.batch.slot_mapping.iter().enumerate() {
            let at = slot as usize * width;
            k_cache[at..at + width].copy_from_slice(&k.data[t * width..(t + 1) * width]);
            v_cache[at..at + width].copy_from_slice(&v.data[t * width..(t + 1) * width]);
        }
        Ok(())
    }

    fn paged_attention(&mut self, layer: usize, q: &CpuTensor) -> Result<CpuTensor> {
        let shape = AttentionShape {
            n_heads: self.dims.n_heads,
            n_kv_heads: self.dims.n_kv_heads,
            head_dim: self.dims.head_dim,
            block_size: self.kv.block_size,
        };
        let mut tokens = Vec::with_capacity(self.batch.n_tokens());
        let mut dense = Vec::new();
        for seq in &self.batch.seqs {
            let is_dense = seq.query_len >= DENSE_MIN_TOKENS;
            if is_dense {
                dense.push(DenseChunk {
                    query_start: seq.query_start,
                    n_query: seq.query_len,
                    context_len: seq.context_len,
                    block_table: &seq.block_table,
                });
            }
            for t in seq.query_start..seq.query_start + seq.query_len {
                tokens.push(TokenView {
                    position: self.batch.positions[t] as usize,
                    block_table: &seq.block_table,
                    dense: is_dense,
                });
            }
        }
        let (k_cache, v_cache) = (&self.k_cache[layer], &self.v_cache[layer]);
        let mut out = CpuTensor::zeros(q.rows, q.cols);
        attention::paged_attention(&mut out.data, &q.data, k_cache, v_cache, &tokens, shape);
        for chunk in &dense {
            attention::dense_chunk_attention(
                &mut out.data,
                &q.data,
                k_cache,
                v_cache,
                chunk,
                shape,
            );
        }
        Ok(out)
    }

    fn silu_mul(&mut self, gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
        let mut out = CpuTensor::zeros(gate.rows, gate.cols);
        out.data
            .par_iter_mut()
            .zip(gate.data.par_iter().zip(&up.data))
            .for_each(|(o, (g, u))| *o = g / (1.0 + (-g).exp()) * u);
        Ok(out)
    }

    fn logit_rows(&mut self, x: &CpuTensor) -> Result<CpuTensor> {
        let mut data = Vec::new();
        let mut rows = 0;
        for seq in self.batch.seqs.iter().filter(|s| s.wants_logits) {
            let last = seq.query_start + seq.query_len - 1;
            data.extend_from_slice(&x.data[last * x.cols..(last + 1) * x.cols]);
            rows += 1;
        }
        Ok(CpuTensor {
            rows,
            cols: x.cols,
            data,
        })
    }

    fn to_host(&mut self, x: &CpuTensor) -> Result<Vec<Vec<f32>>> {
        Ok(x.data.chunks(x.cols.max(1)).map(<[f32]>::to_vec).collect())
    }
}
