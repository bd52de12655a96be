//! [`Backend`] for [`CudaBackend`]: each op is one kernel launch or one cuBLAS product.

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

use super::memory::{CudaTensor, CudaWeight, Dtype, raw_ptr, to_bf16_bits};
use super::{CudaBackend, cuda_err, grid, per_row};
use crate::backend::{Backend, StepBatch, StepMode};
use crate::checkpoint::HostTensor;
use crate::sampling::RowSampling;
use crate::{Error, Result};

/// Threads of the per-row kernels (norms, gathers, RoPE).
const ROW_THREADS: u32 = 256;
/// Most rows a product takes through the GEMV kernels (their GEMV_MAX_M is 8; at 8
/// rows cuBLAS measured faster).
const GEMV_MAX_ROWS: usize = 4;
/// Output columns per block of `gemv_small_m` (its GEMV_WARPS).
const GEMV_WARPS: usize = 8;
/// Threads of the attention kernel: its ATTN_WARPS warps.
const ATTENTION_THREADS: u32 = 16 * 32;
/// Threads of the grouped-heads attention kernel: its GQA_WARPS warps.
const GQA_THREADS: u32 = 8 * 32;
/// Threads of the tiled prefill attention kernel (its PF_THREADS).
const PREFILL_THREADS: u32 = 128;
/// Threads of the norm kernel (its NORM_THREADS): a decode step's single row is one block.
const NORM_THREADS: u32 = 1024;
/// Most bytes of x that `gemv_small_m` stages in shared memory (the default limit).
const GEMV_MAX_X_BYTES: usize = 48 * 1024;

/// Most values of a row whose norm the GEMV kernels compute themselves: NORM_CHUNKS
/// 16-byte chunks per thread of a block.
const FUSED_NORM_MAX_COLS: usize = 2 * 8 * GEMV_WARPS * 32;

/// Whether the norm of `residual` is computed inside the products that take it: at one
/// row (batch-1 decode), where a launch of its own costs more than its work, and the
/// kernels' fused norm takes one row only. With more rows every block of a product
/// redoes more of the norm than it saves: a first version that took up to 4 rows made
/// the 8B shape's step 24% slower at 4 rows (gemv_bench.cu, H100).
fn norm_fuses(residual: &CudaTensor) -> bool {
    residual.rows == 1 && residual.cols <= FUSED_NORM_MAX_COLS
}

/// The input arguments of the GEMV kernels (their `GemvInput`): x itself, or the
/// residual stream whose RMSNorm (after adding a delta) each block computes.
#[derive(Debug, Clone, Copy)]
struct GemvInput {
    x: u64,
    delta: u64,
    norm: u64,
    residual_out: u64,
    eps: f32,
}

impl GemvInput {
    fn plain(x: &CudaTensor) -> Self {
        Self {
            x: x.ptr(),
            delta: 0,
            norm: 0,
            residual_out: 0,
            eps: 0.0,
        }
    }

    fn push<'a>(&'a self, launch: &mut cudarc::driver::LaunchArgs<'a>) {
        launch
            .arg(&self.x)
            .arg(&self.delta)
            .arg(&self.norm)
            .arg(&self.residual_out)
            .arg(&self.eps);
    }
}

impl CudaBackend {
    fn norm(
        &mut self,
        residual: u64,
        delta: u64,
        rows: usize,
        weight: &CudaWeight,
    ) -> Result<CudaTensor> {
        let cols = self.dims.hidden_size;
        let out = self.tensor(rows, cols, Dtype::Bf16)?;
        let (cols_i, eps, out_ptr) = (cols as i32, self.dims.rms_norm_eps, out.ptr());
        let mut launch = self.stream.launch_builder(&self.kernels.add_rms_norm);
        launch
            .arg(&residual)
            .arg(&delta)
            .arg(&weight.ptr)
            .arg(&out_ptr)
            .arg(&cols_i)
            .arg(&eps);
        let config = per_row(rows, NORM_THREADS, 0);
        // SAFETY: the kernel reads and writes `rows` rows of `cols` bf16 values of
        // buffers sized for at least that, and `cols` weights; `delta` is 0 or such a buffer.
        unsafe { launch.launch(config) }.map_err(cuda_err("launching add_rms_norm"))?;
        Ok(out)
    }

    /// Whether a product of `x` goes through the small-batch GEMV kernels: few rows,
    /// whole 16-byte loads, and x small enough to stage in shared memory.
    fn gemv_fits(&self, x: &CudaTensor) -> bool {
        x.rows <= GEMV_MAX_ROWS
            && x.cols.is_multiple_of(8)
            && x.rows * x.cols * 2 <= GEMV_MAX_X_BYTES
            && x.dtype == Dtype::Bf16
            && !x.logits_input
    }

    fn gemv_config(&self, x: &CudaTensor, n_blocks: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n_blocks as u32, 1, 1),
            block_dim: (GEMV_WARPS as u32 * 32, 1, 1),
            shared_mem_bytes: (x.rows * x.cols * 2) as u32,
        }
    }

    fn add_bias(&mut self, out: &CudaTensor, bias: &CudaWeight) -> Result<()> {
        let (ptr, rows, cols) = (out.ptr(), out.rows as i32, out.cols as i32);
        let mut launch = self.stream.launch_builder(&self.kernels.add_bias);
        launch.arg(&ptr).arg(&bias.ptr).arg(&rows).arg(&cols);
        // SAFETY: `out` holds rows × cols bf16 values and the bias `cols`.
        unsafe { launch.launch(grid(out.rows * out.cols)) }
            .map_err(cuda_err("launching add_bias"))?;
        Ok(())
    }

    /// Whether `linear_many` of `x` goes through one `gemv_multi` launch.
    fn gemv_many_fits(
        &self,
        x: &CudaTensor,
        weights: &[(&CudaWeight, Option<&CudaWeight>)],
    ) -> bool {
        self.gemv_fits(x)
            && (1..=3).contains(&weights.len())
            && weights.iter().all(|(w, _)| w.cols == x.cols)
    }

    /// Whether `gated_up` of `x` goes through the fused `gemv_gate_up_silu`.
    fn gated_up_fits(&self, x: &CudaTensor, gate: &CudaWeight, up: &CudaWeight) -> bool {
        self.gemv_fits(x) && gate.cols == x.cols && up.cols == x.cols && gate.rows == up.rows
    }

    /// Launches a product (`launch`: `gemv_many` or `gemv_gated_up`) that computes the
    /// norm of the residual (after adding `delta`) itself. With a delta the updated
    /// residual goes to a new buffer, which replaces the residual only once the product
    /// is launched: the product's blocks still read the old one.
    fn with_fused_norm<T>(
        &mut self,
        residual: &mut CudaTensor,
        delta: Option<&CudaTensor>,
        norm: &CudaWeight,
        launch: impl FnOnce(&mut Self, GemvInput, &CudaTensor) -> Result<T>,
    ) -> Result<T> {
        let hidden = self.dims.hidden_size;
        self.check_width(residual, hidden, "a fused norm")?;
        if let Some(delta) = delta {
            self.check_width(delta, hidden, "a fused norm")?;
            if delta.rows != residual.rows {
                return Err(Error::InvalidSettings(
                    "the residual and its delta differ in rows".into(),
                ));
            }
        }
        let next = delta
            .map(|_| self.tensor(residual.rows, hidden, Dtype::Bf16))
            .transpose()?;
        let input = GemvInput {
            x: residual.ptr(),
            delta: delta.map_or(0, CudaTensor::ptr),
            norm: norm.ptr,
            residual_out: next.as_ref().map_or(0, CudaTensor::ptr),
            eps: self.dims.rms_norm_eps,
        };
        let out = launch(self, input, residual)?;
        if let Some(next) = next {
            *residual = next;
        }
        Ok(out)
    }

    /// One `gemv_multi` launch: `x` (or its norm, see [`GemvInput`]) times each weight.
    fn gemv_many(
        &mut self,
        input: GemvInput,
        x: &CudaTensor,
        weights: &[(&CudaWeight, Option<&CudaWeight>)],
    ) -> Result<Vec<CudaTensor>> {
        let outs = weights
            .iter()
            .map(|(w, _)| self.tensor(x.rows, w.rows, Dtype::Bf16))
            .collect::<Result<Vec<_>>>()?;
        // Missing matrices are passed as width 0 (their blocks do not exist).
        let ptr = |i: usize| weights.get(i).map_or(0, |(w, _)| w.ptr);
        let out_ptr = |i: usize| outs.get(i).map_or(0, CudaTensor::ptr);
        let n = |i: usize| weights.get(i).map_or(0, |(w, _)| w.rows as i32);
        let (w, o, widths) = (
            [ptr(0), ptr(1), ptr(2)],
            [out_ptr(0), out_ptr(1), out_ptr(2)],
            [n(0), n(1), n(2)],
        );
        let (m, k) = (x.rows as i32, x.cols as i32);
        let n_blocks: usize = weights
            .iter()
            .map(|(w, _)| w.rows.div_ceil(GEMV_WARPS))
            .sum();
        let config = self.gemv_config(x, n_blocks);
        let mut launch = self.stream.launch_builder(&self.kernels.gemv_multi);
        input.push(&mut launch);
        for p in w.iter().chain(&o) {
            launch.arg(p);
        }
        for n in &widths {
            launch.arg(n);
        }
        launch.arg(&m).arg(&k);
        // SAFETY: x (the input, or the residual and delta of a fused norm) holds m rows of
        // k bf16 values (16-byte aligned, k a multiple of 8), a norm weight k values, a
        // residual output m × k; each weight n_i rows of k, each output m × n_i; the
        // blocks of an absent matrix are not launched.
        unsafe { launch.launch(config) }.map_err(cuda_err("launching gemv_multi"))?;
        for (out, (_, bias)) in outs.iter().zip(weights) {
            if let Some(bias) = bias {
                self.add_bias(out, bias)?;
            }
        }
        Ok(outs)
    }

    /// One `gemv_gate_up_silu` launch: `silu(x · gateᵀ) * (x · upᵀ)` of `x` or its norm.
    fn gemv_gated_up(
        &mut self,
        input: GemvInput,
        x: &CudaTensor,
        gate: &CudaWeight,
        up: &CudaWeight,
    ) -> Result<CudaTensor> {
        let out = self.tensor(x.rows, gate.rows, Dtype::Bf16)?;
        let out_ptr = out.ptr();
        let (m, n, k) = (x.rows as i32, gate.rows as i32, x.cols as i32);
        let config = self.gemv_config(x, gate.rows.div_ceil(GEMV_WARPS));
        let mut launch = self.stream.launch_builder(&self.kernels.gemv_gate_up_silu);
        input.push(&mut launch);
        launch
            .arg(&gate.ptr)
            .arg(&up.ptr)
            .arg(&out_ptr)
            .arg(&m)
            .arg(&n)
            .arg(&k);
        // SAFETY: x (the input, or the residual and delta of a fused norm) holds m rows of
        // k bf16 values (16-byte aligned, k a multiple of 8), a norm weight k values, a
        // residual output m × k; gate and up n rows of k each, and `out` m × n values.
        unsafe { launch.launch(config) }.map_err(cuda_err("launching gemv_gate_up_silu"))?;
        Ok(out)
    }

    /// Launches a tiled attention kernel (prefill or cascade, PREFILL_THREADS threads):
    /// `pointers`, then the model's head counts, the block size and the softmax scale,
    /// then `trailing`.
    fn launch_tiled(
        &self,
        kernel: &CudaFunction,
        pointers: &[u64],
        trailing: &[u64],
        grid: (u32, u32),
        what: &str,
    ) -> Result<()> {
        let d = &self.dims;
        let (n_heads, n_kv_heads, block_size) = (
            d.n_heads as i32,
            d.n_kv_heads as i32,
            self.kv.block_size as i32,
        );
        let scale = 1.0 / (d.head_dim as f32).sqrt();
        let mut launch = self.stream.launch_builder(kernel);
        for ptr in pointers {
            launch.arg(ptr);
        }
        launch
            .arg(&n_heads)
            .arg(&n_kv_heads)
            .arg(&block_size)
            .arg(&scale);
        for ptr in trailing {
            launch.arg(ptr);
        }
        let config = LaunchConfig {
            grid_dim: (grid.0, grid.1, 1),
            block_dim: (PREFILL_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the callers pass the kernel's parameters in its order: step-layout
        // pointers whose tiles pack built inside the step's tokens and checked block
        // tables, and buffers sized for the grid (see paged_attention, launch_cascade).
        unsafe { launch.launch(config) }.map_err(cuda_err(format!("launching {what}")))?;
        Ok(())
    }

    /// The shared-prefix part of the step's decode attention: one block per (cascade
    /// tile slot, kv head), empty slots returning at once. Every tile lies inside the
    /// step's decode tokens, whose first keys its members' block tables share; the
    /// scratch holds CASCADE_MAX_DECODES tokens' rows, and pack plans no more.
    fn launch_cascade(&self, layer: usize, q: &CudaTensor) -> Result<()> {
        let d = &self.dims;
        let o = self.step.offsets;
        let kernel = match d.head_dim {
            64 => &self.kernels.cascade_attention[0],
            128 => &self.kernels.cascade_attention[1],
            other => {
                return Err(Error::InvalidSettings(format!(
                    "no cascade attention kernel for head size {other}"
                )));
            }
        };
        let pointers = [
            q.ptr(),
            raw_ptr(&self.k_cache[layer], &self.stream),
            raw_ptr(&self.v_cache[layer], &self.stream),
            self.step_ptr(o.positions),
            self.step_ptr(o.token_seq),
            self.step_ptr(o.seq_table_offset),
            self.step_ptr(o.block_tables),
            self.step_ptr(o.cascade_tiles),
            self.step_ptr(o.token_order),
        ];
        let scratch = [
            raw_ptr(&self.cascade.acc, &self.stream),
            raw_ptr(&self.cascade.ml, &self.stream),
        ];
        let grid = (o.n_cascade_slots as u32, d.n_kv_heads as u32);
        self.launch_tiled(kernel, &pointers, &scratch, grid, "cascade_attention")
    }

    fn check_width(&self, x: &CudaTensor, cols: usize, op: &str) -> Result<()> {
        if x.cols != cols || x.dtype != Dtype::Bf16 {
            return Err(Error::InvalidSettings(format!(
                "{op} takes bf16 rows of {cols} values, got {:?} rows of {}",
                x.dtype, x.cols
            )));
        }
        Ok(())
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Weight = CudaWeight;

    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn upload(&mut self, tensor: HostTensor) -> Result<CudaWeight> {
        let (rows, cols) = match tensor.shape[..] {
            [n] => (1, n),
            [r, c] => (r, c),
            _ => {
                return Err(Error::InvalidSettings(format!(
                    "the cuda backend takes vectors and matrices, not shape {:?}",
                    tensor.shape
                )));
            }
        };
        let bits = to_bf16_bits(&tensor.data);
        let slice = self
            .stream
            .clone_htod(&bits)
            .map_err(cuda_err(format!("uploading a {rows}x{cols} weight")))?;
        Ok(CudaWeight::new(rows, cols, slice, &self.stream))
    }

    fn begin_step(&mut self, batch: &StepBatch) -> Result<StepMode> {
        self.prepare_step(batch)
    }

    fn end_capture(&mut self, logits: CudaTensor) -> Result<()> {
        self.finish_capture(logits)
    }

    fn replay(&mut self) -> Result<Vec<Vec<f32>>> {
        self.replay_graph()
    }

    fn replay_argmax(&mut self) -> Result<Vec<u32>> {
        self.replay_graph_argmax()
    }

    fn argmax_rows(&mut self, logits: &CudaTensor) -> Result<Vec<u32>> {
        if logits.dtype != Dtype::F32 {
            return Err(Error::InvalidSettings(
                "argmax_rows takes f32 logits".into(),
            ));
        }
        // Padding rows of a graph bucket's eager warm-up step are left out.
        let rows = if self.bucket.is_some() {
            self.n_real_rows.min(logits.rows)
        } else {
            logits.rows
        };
        self.greedy_ids(logits.ptr(), rows, logits.cols)
    }

    fn sample_rows(&mut self, logits: &CudaTensor, rows: &[RowSampling]) -> Result<Vec<u32>> {
        if logits.dtype != Dtype::F32 {
            return Err(Error::InvalidSettings(
                "sample_rows takes f32 logits".into(),
            ));
        }
        let n = if self.bucket.is_some() {
            self.n_real_rows.min(logits.rows)
        } else {
            logits.rows
        };
        self.sampled_ids(logits.ptr(), n, logits.cols, rows)
    }

    fn replay_sample(&mut self, rows: &[RowSampling]) -> Result<Vec<u32>> {
        self.replay_graph_sample(rows)
    }

    fn embed(&mut self, table: &CudaWeight) -> Result<CudaTensor> {
        let n = self.step.offsets.n_tokens;
        let out = self.tensor(n, table.cols, Dtype::Bf16)?;
        let (ids, out_ptr, cols) = (
            self.step_ptr(self.step.offsets.token_ids),
            out.ptr(),
            table.cols as i32,
        );
        let mut launch = self.stream.launch_builder(&self.kernels.embed_rows);
        launch.arg(&table.ptr).arg(&ids).arg(&out_ptr).arg(&cols);
        // SAFETY: the step's token ids were checked against the table's rows in begin_step.
        unsafe { launch.launch(per_row(n, ROW_THREADS, 0)) }
            .map_err(cuda_err("launching embed_rows"))?;
        Ok(out)
    }

    fn rms_norm(&mut self, x: &CudaTensor, weight: &CudaWeight) -> Result<CudaTensor> {
        self.check_width(x, self.dims.hidden_size, "rms_norm")?;
        // Without a delta the kernel only reads the residual argument.
        self.norm(x.ptr(), 0, x.rows, weight)
    }

    fn add_rms_norm(
        &mut self,
        residual: &mut CudaTensor,
        delta: &CudaTensor,
        weight: &CudaWeight,
    ) -> Result<CudaTensor> {
        self.check_width(residual, self.dims.hidden_size, "add_rms_norm")?;
        self.check_width(delta, self.dims.hidden_size, "add_rms_norm")?;
        self.norm(residual.ptr(), delta.ptr(), residual.rows, weight)
    }

    fn linear(
        &mut self,
        x: &CudaTensor,
        weight: &CudaWeight,
        bias: Option<&CudaWeight>,
    ) -> Result<CudaTensor> {
        self.check_width(x, weight.cols, "linear")?;
        let dtype = if x.logits_input {
            Dtype::F32
        } else {
            Dtype::Bf16
        };
        let out = self.tensor(x.rows, weight.rows, dtype)?;
        if x.rows == 0 {
            return Ok(out);
        }
        let x_bytes = x.rows * x.cols * 2;
        if x.rows <= GEMV_MAX_ROWS && weight.cols.is_multiple_of(8) && x_bytes <= GEMV_MAX_X_BYTES {
            // Decode-sized products stream the weight once through our own kernel.
            let (x_ptr, out_ptr) = (x.ptr(), out.ptr());
            let (m, n, k) = (x.rows as i32, weight.rows as i32, weight.cols as i32);
            let out_f32 = i32::from(dtype == Dtype::F32);
            let mut launch = self.stream.launch_builder(&self.kernels.gemv_small_m);
            launch
                .arg(&x_ptr)
                .arg(&weight.ptr)
                .arg(&out_ptr)
                .arg(&m)
                .arg(&n)
                .arg(&k)
                .arg(&out_f32);
            let config = LaunchConfig {
                grid_dim: (weight.rows.div_ceil(GEMV_WARPS) as u32, 1, 1),
                block_dim: (GEMV_WARPS as u32 * 32, 1, 1),
                shared_mem_bytes: x_bytes as u32,
            };
            // SAFETY: x holds m rows of k bf16 values and the weight n rows of k, both
            // 16-byte aligned with k a multiple of 8 (whole 16-byte loads); `out` holds
            // m × n values of the output type.
            unsafe { launch.launch(config) }.map_err(cuda_err("launching gemv_small_m"))?;
        } else {
            // SAFETY: x holds rows × cols bf16 values, the weight rows × cols, and `out`
            // was sized for x.rows × weight.rows values of its type.
            unsafe {
                self.gemm.linear(
                    x.ptr(),
                    weight.ptr,
                    out.ptr(),
                    (x.rows, weight.rows, weight.cols),
                    dtype == Dtype::F32,
                )?;
            }
        }
        if let Some(bias) = bias {
            self.add_bias(&out, bias)?;
        }
        Ok(out)
    }

    fn linear_many(
        &mut self,
        x: &CudaTensor,
        weights: &[(&CudaWeight, Option<&CudaWeight>)],
    ) -> Result<Vec<CudaTensor>> {
        if !self.gemv_many_fits(x, weights) {
            return weights
                .iter()
                .map(|&(weight, bias)| self.linear(x, weight, bias))
                .collect();
        }
        self.gemv_many(GemvInput::plain(x), x, weights)
    }

    fn norm_linear_many(
        &mut self,
        residual: &mut CudaTensor,
        delta: Option<&CudaTensor>,
        norm: &CudaWeight,
        weights: &[(&CudaWeight, Option<&CudaWeight>)],
    ) -> Result<Vec<CudaTensor>> {
        if !(self.gemv_many_fits(residual, weights) && norm_fuses(residual)) {
            let h = self.residual_norm(residual, delta, norm)?;
            return self.linear_many(&h, weights);
        }
        self.with_fused_norm(residual, delta, norm, |b, input, x| {
            b.gemv_many(input, x, weights)
        })
    }

    fn norm_gated_up(
        &mut self,
        residual: &mut CudaTensor,
        delta: Option<&CudaTensor>,
        norm: &CudaWeight,
        gate: &CudaWeight,
        up: &CudaWeight,
    ) -> Result<CudaTensor> {
        if !(self.gated_up_fits(residual, gate, up) && norm_fuses(residual)) {
            let h = self.residual_norm(residual, delta, norm)?;
            return self.gated_up(&h, gate, up);
        }
        self.with_fused_norm(residual, delta, norm, |b, input, x| {
            b.gemv_gated_up(input, x, gate, up)
        })
    }

    fn gated_up(
        &mut self,
        x: &CudaTensor,
        gate: &CudaWeight,
        up: &CudaWeight,
    ) -> Result<CudaTensor> {
        if !self.gated_up_fits(x, gate, up) {
            let gate = self.linear(x, gate, None)?;
            let up = self.linear(x, up, None)?;
            return self.silu_mul(&gate, &up);
        }
        self.gemv_gated_up(GemvInput::plain(x), x, gate, up)
    }

    fn rope_store_kv(
        &mut self,
        layer: usize,
        q: &mut CudaTensor,
        k: &mut CudaTensor,
        v: &CudaTensor,
    ) -> Result<()> {
        let d = &self.dims;
        self.check_width(q, d.n_heads * d.head_dim, "rope_store_kv")?;
        self.check_width(k, d.n_kv_heads * d.head_dim, "rope_store_kv")?;
        self.check_width(v, d.n_kv_heads * d.head_dim, "rope_store_kv")?;
        let o = self.step.offsets;
        let (positions, slots) = (self.step_ptr(o.positions), self.step_ptr(o.slot_mapping));
        let k_cache = raw_ptr(&self.k_cache[layer], &self.stream);
        let v_cache = raw_ptr(&self.v_cache[layer], &self.stream);
        let (q_ptr, k_ptr, v_ptr) = (q.ptr(), k.ptr(), v.ptr());
        let inv_freq = raw_ptr(&self.inv_freq, &self.stream);
        let (n_heads, n_kv_heads, head_dim) =
            (d.n_heads as i32, d.n_kv_heads as i32, d.head_dim as i32);
        let mut launch = self.stream.launch_builder(&self.kernels.rope_store_kv);
        launch
            .arg(&q_ptr)
            .arg(&k_ptr)
            .arg(&v_ptr)
            .arg(&positions)
            .arg(&slots)
            .arg(&inv_freq)
            .arg(&k_cache)
            .arg(&v_cache)
            .arg(&n_heads)
            .arg(&n_kv_heads)
            .arg(&head_dim);
        // A block per (token, head), a thread per rotated pair.
        let config = LaunchConfig {
            grid_dim: (o.n_tokens as u32, (d.n_heads + d.n_kv_heads) as u32, 1),
            block_dim: ((d.head_dim / 2).next_multiple_of(32).min(256) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the step's slots were checked against the pool's size in begin_step;
        // q, k and v hold one row per token of the widths checked above.
        unsafe { launch.launch(config) }.map_err(cuda_err("launching rope_store_kv"))?;
        Ok(())
    }

    fn paged_attention(&mut self, layer: usize, q: &CudaTensor) -> Result<CudaTensor> {
        let d = &self.dims;
        self.check_width(q, d.n_heads * d.head_dim, "paged_attention")?;
        let out = self.tensor(q.rows, q.cols, Dtype::Bf16)?;
        let o = self.step.offsets;
        let k_cache = raw_ptr(&self.k_cache[layer], &self.stream);
        let v_cache = raw_ptr(&self.v_cache[layer], &self.stream);
        // The leading parameters both attention kernels take, in their order.
        let leading: [u64; 8] = [
            q.ptr(),
            k_cache,
            v_cache,
            out.ptr(),
            self.step_ptr(o.positions),
            self.step_ptr(o.token_seq),
            self.step_ptr(o.seq_table_offset),
            self.step_ptr(o.block_tables),
        ];
        let (n_heads, n_kv_heads, head_dim, block_size) = (
            d.n_heads as i32,
            d.n_kv_heads as i32,
            d.head_dim as i32,
            self.kv.block_size as i32,
        );
        let scale = 1.0 / (d.head_dim as f32).sqrt();
        let tiled = match d.head_dim {
            64 if o.has_prefill => Some(&self.kernels.prefill_attention[0]),
            128 if o.has_prefill => Some(&self.kernels.prefill_attention[1]),
            _ => None,
        };
        // Prefill chunks go to the tiled kernel; decode tokens (all tokens, without it)
        // to the per-token kernel, whose warps split each token's keys among them.
        let per_token = if tiled.is_some() {
            o.n_decode_tokens
        } else {
            o.n_tokens
        };
        if let Some(kernel) = tiled {
            // Every tile lies inside one sequence's query tokens (built in pack).
            let mut pointers = leading.to_vec();
            pointers.push(self.step_ptr(o.tiles));
            let grid = (o.n_tiles as u32, d.n_heads as u32);
            self.launch_tiled(kernel, &pointers, &[], grid, "prefill_attention")?;
        }
        if per_token == 0 {
            return Ok(out);
        }
        // Grouped heads share each key and value load; the per-head kernel takes
        // head sizes over 128 and groups over 8.
        let group = d.n_heads / d.n_kv_heads;
        let size_class = match d.head_dim {
            0..=64 => 0,
            65..=128 => 1,
            _ => 2,
        };
        // The grouped kernel (head sizes 64 and 128, groups up to 8) splits each token's
        // keys over as many blocks as fill the GPU; the per-head kernel takes the other
        // shapes (and, for the parity checks, steps under gqa_min_blocks pairs).
        let pairs = per_token * d.n_kv_heads;
        let grouped_fits = super::grouped_kernel_fits(d);
        let splits = super::attention_splits(pairs, self.split.target);
        let gqa = (grouped_fits && pairs >= self.gqa_min_blocks).then(|| {
            // Unsplit launches fill the GPU with pairs: two blocks per multiprocessor.
            let builds = if splits == 1 {
                &self.kernels.gqa_attention_x2
            } else {
                &self.kernels.gqa_attention
            };
            &builds[size_class][usize::from(group > 4)]
        });
        let (kernel, heads_per_block, threads, splits) = match gqa {
            Some(kernel) => (kernel, group, GQA_THREADS, splits),
            None => (
                &self.kernels.paged_attention[size_class],
                1,
                ATTENTION_THREADS,
                1,
            ),
        };
        let token_order = self.step_ptr(o.token_order);
        let part_acc = raw_ptr(&self.split.acc, &self.stream);
        let part_ml = raw_ptr(&self.split.ml, &self.stream);
        let done = raw_ptr(&self.split.done, &self.stream);
        let prefix_acc = raw_ptr(&self.cascade.acc, &self.stream);
        let prefix_ml = raw_ptr(&self.cascade.ml, &self.stream);
        // The step's cascade tiles (planned for exactly these launches: grouped, unsplit)
        // read their shared keys first; the per-token kernel then reads the rest and
        // merges. A null key_start has it read every key. A graph being captured takes
        // the launch whatever this step's tiles, for the later steps it replays.
        let cascade = o.n_cascade_slots > 0
            && gqa.is_some()
            && splits == 1
            && (o.n_cascade_tiles > 0 || self.capturing.is_some());
        let key_start = if cascade {
            self.launch_cascade(layer, q)?;
            self.step_ptr(o.key_start)
        } else {
            0u64
        };
        let mut launch = self.stream.launch_builder(kernel);
        for ptr in &leading {
            launch.arg(ptr);
        }
        launch
            .arg(&token_order)
            .arg(&n_heads)
            .arg(&n_kv_heads)
            .arg(&head_dim)
            .arg(&block_size)
            .arg(&scale);
        if gqa.is_some() {
            launch
                .arg(&part_acc)
                .arg(&part_ml)
                .arg(&done)
                .arg(&key_start)
                .arg(&prefix_acc)
                .arg(&prefix_ml);
        }
        let config = LaunchConfig {
            grid_dim: (
                per_token as u32,
                (d.n_heads / heads_per_block) as u32,
                splits as u32,
            ),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: every position is below its sequence's context, which its block table
        // covers, and every block id is inside the pool (checked in begin_step); the
        // token order lists token indices of this step; a split launch has fewer than
        // 2 * target blocks of at most 8 heads of 128 values, as the scratch is sized.
        unsafe { launch.launch(config) }.map_err(cuda_err("launching paged_attention"))?;
        Ok(out)
    }

    fn silu_mul(&mut self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
        self.check_width(up, gate.cols, "silu_mul")?;
        let out = self.tensor(gate.rows, gate.cols, Dtype::Bf16)?;
        let n = gate.rows * gate.cols;
        let (g, u, o, n_u64) = (gate.ptr(), up.ptr(), out.ptr(), n as u64);
        let mut launch = self.stream.launch_builder(&self.kernels.silu_mul);
        launch.arg(&g).arg(&u).arg(&o).arg(&n_u64);
        // SAFETY: gate, up and out hold n bf16 values each.
        unsafe { launch.launch(grid(n)) }.map_err(cuda_err("launching silu_mul"))?;
        Ok(out)
    }

    fn logit_rows(&mut self, x: &CudaTensor) -> Result<CudaTensor> {
        let o = self.step.offsets;
        let mut out = self.tensor(o.n_logit_rows, x.cols, x.dtype)?;
        out.logits_input = true;
        if o.n_logit_rows > 0 {
            let (src, rows, dst, cols) = (
                x.ptr(),
                self.step_ptr(o.logit_rows),
                out.ptr(),
                x.cols as i32,
            );
            let mut launch = self.stream.launch_builder(&self.kernels.gather_rows);
            launch.arg(&src).arg(&rows).arg(&dst).arg(&cols);
            // SAFETY: the logit rows are token indices of this step (built in pack).
            unsafe { launch.launch(per_row(o.n_logit_rows, ROW_THREADS, 0)) }
                .map_err(cuda_err("launching gather_rows"))?;
        }
        Ok(out)
    }

    fn to_host(&mut self, x: &CudaTensor) -> Result<Vec<Vec<f32>>> {
        if x.dtype != Dtype::F32 {
            return Err(Error::InvalidSettings(
                "only f32 tensors (logits) are copied back to the host".into(),
            ));
        }
        // Padding rows of a graph bucket's eager warm-up step are not returned.
        let rows = if self.bucket.is_some() {
            self.n_real_rows.min(x.rows)
        } else {
            x.rows
        };
        self.copy_logits(x.ptr(), rows, x.cols)
    }
}
