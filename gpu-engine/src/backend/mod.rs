//! The compute `Backend` trait that the model is written over, and the step layout it consumes.
//!
//! The trait is deliberately coarse and batched: every op works on all tokens of a step
//! at once (prefill chunks and decodes mixed), and attention reads keys and values from
//! the paged KV pool through each sequence's block table. The scheduler and the block
//! pool only ever deal in block ids and [`StepBatch`]es, so a device backend (CUDA) can
//! own its KV memory, upload the step's metadata once in [`Backend::begin_step`] and run
//! the same model code without either of them changing.

pub mod cpu;
pub mod cuda;

use crate::Result;
use crate::checkpoint::HostTensor;
use crate::sampling::RowSampling;

/// The shapes a backend needs to size its buffers and run the ops.
#[derive(Debug, Clone)]
pub struct ModelDims {
    pub n_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    /// RoPE inverse frequencies, `head_dim / 2` of them, scaling already applied.
    pub rope_inv_freq: Vec<f64>,
}

/// The size of the paged KV pool: `n_blocks` blocks of `block_size` token slots, per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub n_blocks: usize,
    pub block_size: usize,
}

/// One sequence's part of a step: a run of consecutive query tokens and where its KV lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqChunk {
    /// Index of this sequence's first token in the step's flat token list.
    pub query_start: usize,
    pub query_len: usize,
    /// Tokens with KV once this step has written its own: cached prefix + earlier chunks + this chunk.
    pub context_len: usize,
    /// The KV blocks of the sequence, in order; slot `i` of the context lives in
    /// block `block_table[i / block_size]` at offset `i % block_size`.
    pub block_table: Vec<u32>,
    /// Whether the step must return logits for this sequence's last query token.
    pub wants_logits: bool,
}

/// Everything a backend needs to run one forward step over a batch of sequences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepBatch {
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// For each token, the KV slot (`block * block_size + offset`) its key and value go to.
    pub slot_mapping: Vec<u32>,
    pub seqs: Vec<SeqChunk>,
}

impl StepBatch {
    /// Number of query tokens in the step.
    pub fn n_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Appends a sequence's chunk; `tokens` start at position `first_position`.
    pub fn push_seq(
        &mut self,
        tokens: &[u32],
        first_position: usize,
        block_table: Vec<u32>,
        block_size: usize,
        wants_logits: bool,
    ) {
        let query_start = self.token_ids.len();
        for (i, &token) in tokens.iter().enumerate() {
            let position = first_position + i;
            self.token_ids.push(token);
            self.positions.push(position as u32);
            let block = block_table[position / block_size];
            self.slot_mapping
                .push(block * block_size as u32 + (position % block_size) as u32);
        }
        self.seqs.push(SeqChunk {
            query_start,
            query_len: tokens.len(),
            context_len: first_position + tokens.len(),
            block_table,
            wants_logits,
        });
    }
}

/// How the backend runs the step that [`Backend::begin_step`] prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMode {
    /// The model calls the ops, then [`Backend::to_host`] on the logits.
    Eager,
    /// As `Eager`, but the ops are recorded into a graph instead of run: the model hands
    /// the logits to [`Backend::end_capture`], then calls [`Backend::replay`].
    Capture,
    /// The backend has a graph for this step's shape: the model calls only [`Backend::replay`].
    Replay,
}

/// A compute device the model runs on.
///
/// Synchronous and `&mut self`: one worker thread owns the backend. Activations are
/// `[n_tokens, width]` matrices in the backend's own memory; only logits come back to
/// the host.
pub trait Backend: Send {
    /// Activations, `[rows, cols]`, row-major.
    type Tensor;
    /// A weight matrix or vector, resident on the device.
    type Weight: Send;

    /// A short name for logs ("cpu", "cuda:0").
    fn name(&self) -> String;

    /// Moves a host tensor to the device (linear weights are `[out, in]`).
    fn upload(&mut self, tensor: HostTensor) -> Result<Self::Weight>;

    /// Prepares a step: the backend keeps the batch layout for the ops that follow, and
    /// says whether the ops run now, are captured into a graph, or are replayed from one.
    fn begin_step(&mut self, batch: &StepBatch) -> Result<StepMode>;

    /// Ends the capture that [`StepMode::Capture`] started; `logits` is the step's result.
    fn end_capture(&mut self, logits: Self::Tensor) -> Result<()> {
        drop(logits);
        Err(crate::Error::InvalidSettings(format!(
            "backend {} captures no graphs",
            self.name()
        )))
    }

    /// Runs the graph of the current step and returns its logits, one `Vec` per row.
    fn replay(&mut self) -> Result<Vec<Vec<f32>>> {
        Err(crate::Error::InvalidSettings(format!(
            "backend {} replays no graphs",
            self.name()
        )))
    }

    /// Gathers the embedding rows of the step's tokens.
    fn embed(&mut self, table: &Self::Weight) -> Result<Self::Tensor>;

    /// RMSNorm of each row, times `weight`.
    fn rms_norm(&mut self, x: &Self::Tensor, weight: &Self::Weight) -> Result<Self::Tensor>;

    /// Adds `delta` into the residual stream and returns the RMSNorm of the result
    /// (fused, because every transformer sub-block ends this way).
    fn add_rms_norm(
        &mut self,
        residual: &mut Self::Tensor,
        delta: &Self::Tensor,
        weight: &Self::Weight,
    ) -> Result<Self::Tensor>;

    /// `x · weightᵀ (+ bias)` for `weight` of shape `[out, in]`.
    fn linear(
        &mut self,
        x: &Self::Tensor,
        weight: &Self::Weight,
        bias: Option<&Self::Weight>,
    ) -> Result<Self::Tensor>;

    /// Several products of the same input, `x · wᵀ (+ b)` for each `(w, b)` (the query,
    /// key and value projections); a device backend may run them as one launch.
    fn linear_many(
        &mut self,
        x: &Self::Tensor,
        weights: &[(&Self::Weight, Option<&Self::Weight>)],
    ) -> Result<Vec<Self::Tensor>> {
        weights
            .iter()
            .map(|&(weight, bias)| self.linear(x, weight, bias))
            .collect()
    }

    /// The RMSNorm (times `norm`) of the residual stream, after adding `delta` into it
    /// when there is one: [`Backend::add_rms_norm`] or [`Backend::rms_norm`].
    fn residual_norm(
        &mut self,
        residual: &mut Self::Tensor,
        delta: Option<&Self::Tensor>,
        norm: &Self::Weight,
    ) -> Result<Self::Tensor> {
        match delta {
            Some(delta) => self.add_rms_norm(residual, delta, norm),
            None => self.rms_norm(residual, norm),
        }
    }

    /// [`Backend::residual_norm`], then [`Backend::linear_many`] of its result: how every
    /// attention block starts. A device backend may compute the norm inside the products.
    fn norm_linear_many(
        &mut self,
        residual: &mut Self::Tensor,
        delta: Option<&Self::Tensor>,
        norm: &Self::Weight,
        weights: &[(&Self::Weight, Option<&Self::Weight>)],
    ) -> Result<Vec<Self::Tensor>> {
        let h = self.residual_norm(residual, delta, norm)?;
        self.linear_many(&h, weights)
    }

    /// [`Backend::residual_norm`], then [`Backend::gated_up`] of its result: how every
    /// MLP block starts. A device backend may compute the norm inside the products.
    fn norm_gated_up(
        &mut self,
        residual: &mut Self::Tensor,
        delta: Option<&Self::Tensor>,
        norm: &Self::Weight,
        gate: &Self::Weight,
        up: &Self::Weight,
    ) -> Result<Self::Tensor> {
        let h = self.residual_norm(residual, delta, norm)?;
        self.gated_up(&h, gate, up)
    }

    /// `silu(x · gateᵀ) * (x · upᵀ)`, the input half of the gated MLP; a device backend
    /// may fuse the two products and the activation.
    fn gated_up(
        &mut self,
        x: &Self::Tensor,
        gate: &Self::Weight,
        up: &Self::Weight,
    ) -> Result<Self::Tensor> {
        let gate = self.linear(x, gate, None)?;
        let up = self.linear(x, up, None)?;
        self.silu_mul(&gate, &up)
    }

    /// Applies RoPE to queries and keys at the step's positions and writes keys and
    /// values of `layer` into their KV slots.
    fn rope_store_kv(
        &mut self,
        layer: usize,
        q: &mut Self::Tensor,
        k: &mut Self::Tensor,
        v: &Self::Tensor,
    ) -> Result<()>;

    /// Causal attention of each query token over its sequence's paged KV (GQA).
    fn paged_attention(&mut self, layer: usize, q: &Self::Tensor) -> Result<Self::Tensor>;

    /// `silu(gate) * up`, elementwise.
    fn silu_mul(&mut self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;

    /// Keeps only the last query row of each sequence that wants logits, in batch order.
    fn logit_rows(&mut self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Copies a tensor back to the host, one `Vec` per row.
    fn to_host(&mut self, x: &Self::Tensor) -> Result<Vec<Vec<f32>>>;

    /// Greedy sampling: the index of each row's largest logit (the first on ties). A
    /// device backend computes it in place, so only the ids come back to the host.
    fn argmax_rows(&mut self, logits: &Self::Tensor) -> Result<Vec<u32>> {
        Ok(self
            .to_host(logits)?
            .iter()
            .map(|row| crate::sampling::argmax(row))
            .collect())
    }

    /// As [`Backend::replay`], but returns each row's argmax.
    fn replay_argmax(&mut self) -> Result<Vec<u32>> {
        Ok(self
            .replay()?
            .iter()
            .map(|row| crate::sampling::argmax(row))
            .collect())
    }

    /// Samples one token per row of `logits` under `rows` (one entry per row, see
    /// [`crate::sampling`]). A device backend samples in place, so only the ids come
    /// back to the host; this default copies the logits and samples on the host.
    fn sample_rows(&mut self, logits: &Self::Tensor, rows: &[RowSampling]) -> Result<Vec<u32>> {
        sample_on_host(&self.to_host(logits)?, rows)
    }

    /// As [`Backend::replay`], but samples each row under `rows`.
    fn replay_sample(&mut self, rows: &[RowSampling]) -> Result<Vec<u32>> {
        sample_on_host(&self.replay()?, rows)
    }
}

fn sample_on_host(logits: &[Vec<f32>], rows: &[RowSampling]) -> Result<Vec<u32>> {
    if logits.len() != rows.len() {
        return Err(crate::Error::InvalidSettings(format!(
            "{} rows of logits for {} sampling rows",
            logits.len(),
            rows.len()
        )));
    }
    Ok(logits
        .iter()
        .zip(rows)
        .map(|(l, r)| crate::sampling::sample_row(l, r))
        .collect())
}
